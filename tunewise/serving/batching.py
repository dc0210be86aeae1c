"""Requests from many clients batched into one model call: by a token budget and a short wait.

On a GPU a model answers 16 texts in one call in little more than the time of one; on a CPU a shared
call saves each request's fixed costs, and requests that arrive while the model works go together
instead of queuing one behind the other (bench/serving.py: 1.8x a per-request pipeline at 16 clients).
Requests wait in a queue; one worker takes the oldest, then keeps adding requests while the batch
stays within `max_batch_tokens` and `max_batch_inputs` (text-embeddings-inference's token-budget
batching), waiting up to `max_wait_ms` after the first arrived when the queue runs dry. The model
runs in one thread of its own, so the event loop keeps accepting requests while it works, and each
request gets back exactly its own predictions, in its own order.

A request is never split: one larger than the budget runs alone. When a batch of several requests
fails, each runs again alone, so only the request the model failed on gets the error.

Each request carries a key, the settings of its model call beyond its inputs (whether and how to explain,
`predictor.ExplainSettings`, or None): one call has one key, so requests of different keys never share a
batch. The worker takes the oldest request and then, in arrival order, those of its key that fit; the
others keep their places for the next batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tunewise.errors import TunewiseError

# (the frames of the requests in a batch, the key they share) -> each request's predictions, in its rows' order
PredictFrames = Callable[[list[pd.DataFrame], Hashable], list[list[dict[str, Any]]]]
# observes each model call: (inputs, tokens, seconds)
BatchObserver = Callable[[int, int, float], None]


class QueueFull(TunewiseError):
    """More inputs are waiting than the queue holds: answered 429, the client retries later."""


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int = 16_384  # tokens in one model call (a request larger than this runs alone)
    max_batch_inputs: int = 128  # inputs in one model call
    max_wait_ms: float = 0.0  # how long the first request waits for others (0: those queued while the model ran)
    max_queue_inputs: int = 1_024  # inputs waiting; beyond it requests are refused (429)


@dataclass(eq=False)  # each request is itself: the queue removes it by identity
class _Pending:
    frame: pd.DataFrame
    tokens: int
    answer: asyncio.Future
    key: Hashable = None  # the call's settings: only requests of one key share a batch
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def inputs(self) -> int:
        return len(self.frame)


class Batcher:
    """The queue and its one worker. `start()` inside the running event loop, `submit()` per request."""

    def __init__(self, predict: PredictFrames, limits: BatchLimits, observe: BatchObserver | None = None):
        self.predict = predict
        self.limits = limits
        self.observe = observe
        self._queue: deque[_Pending] = deque()
        self._waiting_inputs = 0
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunewise-model")

    @property
    def queued_inputs(self) -> int:
        """Inputs admitted and not yet answered (being prepared, waiting, or in the batch the model runs)."""
        return self._waiting_inputs

    async def in_model_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` in the model's thread, between batches (loading the model)."""
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, function, *args)

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._model_thread.shutdown(wait=True, cancel_futures=True)

    @contextmanager
    def admission(self, inputs: int) -> Iterator[None]:
        """Hold `inputs` places in the queue while a request is prepared, batched and answered; QueueFull when
        the queue cannot take them, so a burst is refused at the door instead of piling up unseen."""
        if self._waiting_inputs + inputs > self.limits.max_queue_inputs:
            raise QueueFull(
                f"{self._waiting_inputs} inputs are waiting and the queue holds {self.limits.max_queue_inputs}; "
                "retry shortly."
            )
        self._waiting_inputs += inputs
        try:
            yield
        finally:
            self._waiting_inputs -= inputs

    async def submit(self, frame: pd.DataFrame, tokens: int, key: Hashable = None) -> list[dict[str, Any]]:
        """The predictions for one admitted request's rows, once a batch of its key has run."""
        assert self._arrived is not None, "Batcher.start() runs first"
        pending = _Pending(frame, tokens, asyncio.get_running_loop().create_future(), key)
        self._queue.append(pending)
        self._arrived.set()
        return await pending.answer

    async def _work(self) -> None:
        assert self._arrived is not None
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._gather()
            await self._answer(batch)

    async def _gather(self) -> list[_Pending]:
        """The oldest request, and those after it of its key that fit the budget, waiting at most max_wait_ms."""
        batch = [self._queue.popleft()]
        key, tokens, inputs = batch[0].key, batch[0].tokens, batch[0].inputs
        deadline = batch[0].queued_at + self.limits.max_wait_ms / 1000
        assert self._arrived is not None
        while True:
            for after in [pending for pending in self._queue if pending.key == key]:
                if (
                    tokens + after.tokens > self.limits.max_batch_tokens
                    or inputs + after.inputs > self.limits.max_batch_inputs
                ):
                    return batch
                self._queue.remove(after)
                batch.append(after)
                tokens += after.tokens
                inputs += after.inputs
            left = deadline - time.perf_counter()
            if left <= 0:
                return batch
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=left)
            except TimeoutError:
                return batch

    async def _answer(self, batch: list[_Pending]) -> None:
        live = [pending for pending in batch if not pending.answer.done()]  # a client may have gone
        if not live:
            return
        try:
            results = await self._run(live)
        except Exception as error:
            if len(live) == 1:
                _settle(live[0], error=error)
                return
            for pending in live:  # again one by one: only the request the model fails on gets the error
                await self._answer([pending])
            return
        for pending, result in zip(live, results, strict=True):
            _settle(pending, result=result)

    async def _run(self, batch: list[_Pending]) -> list[list[dict[str, Any]]]:
        started = time.perf_counter()
        frames = [pending.frame for pending in batch]
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._model_thread, self.predict, frames, batch[0].key)
        if self.observe is not None:
            self.observe(sum(p.inputs for p in batch), sum(p.tokens for p in batch), time.perf_counter() - started)
        return results


def _settle(pending: _Pending, result: Any = None, error: BaseException | None = None) -> None:
    if pending.answer.done():
        return
    if error is not None:
        pending.answer.set_exception(error)
    else:
        pending.answer.set_result(result)
