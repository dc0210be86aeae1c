"""How the processes of one `tunewise tune` agree: the main process decides, the others follow.

Under torchrun every rank runs the same command, and each trial's training needs all of them. Only
the main process talks to the study (the storage, the lock, the files); it samples each trial and
tells the others its values, and at each validation whether the trial is pruned, so all stop
together. With one process every call below returns its argument and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch.distributed as dist

from tunewise.errors import TunewiseError
from tunewise.prepare import process_state

T = TypeVar("T")


class TrialChannel:
    def __init__(self, main: bool, shared: bool):
        self.main = main  # this process talks to the study
        self.shared = shared  # other processes listen

    @classmethod
    def open(cls) -> TrialChannel:
        """The channel of this process. Accelerate's process state joins the processes under torchrun (as
        preparation does), so the first trial's values can be sent before any training starts."""
        state = process_state()
        shared = state.num_processes > 1 and dist.is_available() and dist.is_initialized()
        return cls(state.is_main_process, shared)

    def share(self, value: T) -> T:
        """The main process's `value`, on every process."""
        if not self.shared:
            return value
        box: list[object] = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def on_main(self, work: Callable[[], T]) -> T | None:
        """`work()` on the main process (None on the others); a TunewiseError it raises is raised on every
        process, so none waits for a trial that will never come."""
        result, error = None, None
        if self.main:
            try:
                result = work()
            except TunewiseError as raised:
                error = raised
        error = self.share(error)
        if error is not None:
            raise error
        return result
