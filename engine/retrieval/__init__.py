"""Finding the chunks a query needs: the embedder (ONNX Runtime) and its one-time ONNX export, the vector
index (hnswlib), keyword search (SQLite FTS5), their fusion (reciprocal rank fusion), and the retriever
that ties them together."""
