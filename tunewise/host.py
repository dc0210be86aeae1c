"""Process settings that must be in place before PyTorch allocates its first tensor.

PyTorch's CPU allocator asks Linux for transparent huge pages for buffers of 2 MB and more when
THP_MEM_ALLOC_ENABLE=1, and reads that variable once, at the first allocation. Without it, every
large buffer a training step frees and allocates again (activations, the gradient of an embedding
table) comes back from the kernel as fresh 4 KB pages, each faulted in on first touch: measured on 2
CPU cores, zeroing MiniLM's 47 MB word-embedding gradient took 42-60 ms a step in 4 KB pages and
15 ms in huge pages (bench/README.md, "The CPU loop"). `tunewise/__init__.py` imports this module
before anything imports torch, so the CLI always gets it; a program that made tensors before
importing tunewise keeps the allocator it started with. An explicit THP_MEM_ALLOC_ENABLE=0 wins.
"""

from __future__ import annotations

import os


def prefer_huge_pages() -> None:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
