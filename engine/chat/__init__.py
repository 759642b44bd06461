"""Answering from the documents: the sources (retrieved chunks and their memories), the prompt, chunkwise
generation with memories, citations, the chat."""
