"""The `.m3bank` file: one portable file of sections (documents, chunks, memories, vectors) and a manifest.

`layout` holds the fixed structure and caps, `manifest` and `records` the schemas, `writer` and `reader`
stream a file out and back in, validating everything on the way. docs/bank-format.md is the contract.
"""
