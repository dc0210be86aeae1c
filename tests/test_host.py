"""tunewise.host: importing tunewise keeps freed memory in the process and asks for huge pages, before
anything imports torch; the user's own allocator variables win."""

from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import tunewise
from tunewise import host

# host.py loaded on its own (no torch: quick), then a 20 MB buffer allocated, touched and freed ten times:
# with freed memory kept, its pages are faulted in once; handed back to the kernel each time, its ~5,000
# 4 KB pages are faulted in again on every round
PROBE = """
import importlib.util, json, os, resource, sys
spec = importlib.util.spec_from_file_location("host", sys.argv[1])
host = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host)
host.configure_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
bytearray(20 * 2**20)
before = faults()
for _ in range(10):
    buffer = bytearray(20 * 2**20)  # zero-filled: every page touched
    del buffer
print(json.dumps({"faults_per_round": (faults() - before) / 10, "thp": os.environ.get("THP_MEM_ALLOC_ENABLE")}))
"""


def probe(**environment: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "THP_MEM"))}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, host.__file__], env={**env, **environment}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_memory_stays_in_the_process_unless_the_user_says_otherwise() -> None:
    kept = probe()
    assert kept["faults_per_round"] < 500, kept
    assert kept["thp"] == "1"
    returned = probe(MALLOC_MMAP_THRESHOLD_="131072", THP_MEM_ALLOC_ENABLE="0")  # the user's choice: mmap each
    assert returned["faults_per_round"] > 4000, returned
    assert returned["thp"] == "0"


def test_the_package_configures_memory_before_importing_anything_that_imports_torch() -> None:
    """PyTorch reads THP_MEM_ALLOC_ENABLE at its first allocation: the call must come first."""
    statements = ast.parse(Path(tunewise.__file__).read_text(encoding="utf-8")).body
    code = [node for node in statements if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    first, second = code[0], code[1]
    assert isinstance(first, ast.ImportFrom) and first.module == "tunewise.host"
    assert isinstance(second, ast.Expr) and isinstance(second.value, ast.Call)
    assert getattr(second.value.func, "id", None) == "configure_memory"
