"""How this process gets memory from Linux, set when tunewise is imported, before training allocates.

A training step frees and allocates again the same large buffers every step (activations, gradients).
By default both allocators underneath PyTorch hand that memory back to the kernel and get it again as
fresh pages, each faulted in and zeroed on first touch:

- glibc's malloc trims the top of its heap and unmaps large chunks as soon as they are freed.
  `keep_freed_memory` keeps them (mallopt: no trimming below 2 GiB, chunks up to 32 MiB from the
  heap). Measured on 2 CPU cores, MiniLM, bf16 (bench/README.md, "The CPU loop"): 1,200-1,800 page
  faults a step fell to 140-200, and the step from 0.18-0.20 s to 0.16-0.18 s. The price: memory a
  run freed stays in the process (its peak resident size is unchanged).
- PyTorch's CPU allocator asks for transparent huge pages for buffers of 2 MB and more when
  THP_MEM_ALLOC_ENABLE=1, which it reads once, at its first allocation: zeroing MiniLM's 47 MB
  word-embedding gradient took 42-60 ms a step in 4 KB pages and 15 ms in huge pages.
  `tunewise/__init__.py` calls this before anything imports torch, so the CLI always gets it; a
  program that made tensors before importing tunewise keeps the allocator it started with.

A variable the user set (THP_MEM_ALLOC_ENABLE, MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_) wins.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of freed heap
HEAP_CHUNKS_UP_TO = 32 * 2**20  # glibc's largest mmap threshold on 64-bit


def configure_memory() -> None:
    """Both settings; `tunewise/__init__.py` calls this first."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    keep_freed_memory()


def keep_freed_memory() -> None:
    """glibc only (Linux with musl, macOS and Windows keep their allocators' defaults)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, HEAP_CHUNKS_UP_TO)
    libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
