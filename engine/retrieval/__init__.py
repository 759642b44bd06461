"""Finding the chunks a query needs: the embedder (ONNX Runtime), the vector index (hnswlib), keyword
search (SQLite FTS5) and their fusion (reciprocal rank fusion)."""
