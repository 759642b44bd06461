"""Explicit memories: profiles, writing (a forward pass per reference), quantization, the on-disk codec
and bank, the cache of dequantized memories, and their placement in attention."""
