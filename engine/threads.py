"""How many threads the engine's CPU kernels (torch, ONNX Runtime) use: one rule for both."""

from __future__ import annotations

import os


def compute_threads() -> int:
    """Every core this process may use but one, which is left to the app, the clients and the system.

    Measured on 2 cores shared with other work, the 270M model generated 4-5x faster on 1 thread than on
    2: OpenMP threads wait for each other at every operation, so one descheduled thread stalls them all
    (on a quiet machine 2 threads were 1.3x faster: the loss under load is far larger than the gain)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)
