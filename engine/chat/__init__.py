"""Answering from the documents: the prompt, chunkwise generation with memories, citations, the chat."""
