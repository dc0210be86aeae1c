"""Preemption: SIGTERM or SIGINT during training stops it at the end of the current step, with a checkpoint.

Cloud schedulers (Kubernetes, SLURM, spot and preemptible VMs) send SIGTERM some seconds before they
kill a job; Ctrl-C sends SIGINT. While the training loop runs (`StopSignals` is installed around it,
in the main thread only, and the handlers that were there before come back after), the first such
signal is only noted. At the next optimizer-step boundary, after the evaluation and checkpoint due
at that step, the loop writes a checkpoint and raises `Stopped`: the CLI prints how to resume and
exits with 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), so a scheduler sees a job that
did not finish. A second signal stops at once: a second SIGTERM ends the process by the signal's
default action, a second SIGINT is Python's KeyboardInterrupt (in a notebook the kernel survives it);
the run folder stays consistent either way, since every file in it is written atomically. A second
signal within SAME_REQUEST_SECONDS of the first counts as the same request: torchrun passes a
terminal's Ctrl-C on as SIGTERM to processes that got the SIGINT themselves a moment before.

Several processes: each gets the signal (torchrun forwards SIGTERM to every process, a terminal's
Ctrl-C reaches them all), but not at the same instant, so at each step boundary they agree: the
largest signal number noted anywhere is all-reduced over a gloo group, on the CPU, so the loop never
waits for the GPU for it. Every process then stops at the same step, and the checkpoint gathers every
process's RNG state as usual.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SAME_REQUEST_SECONDS = 1.0
_GLOO: dict[str, Any] = {}  # the CPU process group the agreement uses, made once per process


class StopSignals:
    """`with StopSignals(processes) as signals:` ... `signals.agreed()` at each step boundary: the signal to stop
    on (the same in every process), or None to go on."""

    def __init__(self, processes: int = 1, speak: bool = True):
        self.processes, self.speak = processes, speak
        self.noted: int | None = None
        self.noted_at = 0.0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self.previous[number] = signal.signal(number, self._note)
        if self.processes > 1:
            _agreement_group()  # every process makes it here, together
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()

    def agreed(self) -> int | None:
        """The signal every process stops on at this step boundary, or None."""
        if self.processes == 1:
            return self.noted
        flag = torch.tensor([self.noted or 0], dtype=torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, group=_agreement_group())
        return int(flag.item()) or None

    def _note(self, number: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.noted is None:
            self.noted, self.noted_at = number, now
            if self.speak:
                name = signal.Signals(number).name
                os.write(2, f"\ntunewise: {name} received; stopping at the end of this step, after writing a "
                         "checkpoint (send it again to stop at once)\n".encode())  # fmt: skip
            return
        if now - self.noted_at < SAME_REQUEST_SECONDS:
            return
        if number == signal.SIGINT:  # the second Ctrl-C: Python's own interrupt (a notebook's kernel survives it)
            raise KeyboardInterrupt
        signal.signal(number, signal.SIG_DFL)  # the second SIGTERM: end now, as if tunewise had no handler
        os.kill(os.getpid(), number)


def _agreement_group() -> Any:
    """A gloo group over every process (the default group when it is gloo already), so the agreement is a CPU
    all-reduce even when the training's collectives run on NCCL."""
    if "group" not in _GLOO:
        default = torch.distributed.get_backend()
        _GLOO["group"] = None if default == "gloo" else torch.distributed.new_group(backend="gloo")
    return _GLOO["group"]
