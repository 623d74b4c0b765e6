"""The model's queue: requests wait their turn, batches form while the model is busy, and a request is refused only
when its own expected wait is past the latency budget.

Written by hand because BentoML 1.4's `CorkDispatcher` cannot be configured into this policy. Every millisecond it
compares `w0 + o_a * n + o_b` with `max_latency` (w0: the age of the oldest queued call; n: queued calls, not images;
o_a, o_b: a least-squares fit of wall-clock call times) and cancels the oldest call when the sum reaches the budget.
It ignores that several model copies run at once, a batch request inflates o_a, and a moment of CPU contention
inflates the fit and condemns the whole queue: in CI it answered 151 requests 503 at 70% of measured capacity
(upstream: bentoml/BentoML#3200, #4265, PR #3646). Its policy lives in `controller()`, a loop with no hook.

The policy here:
- A request is admitted unless `(images decoding + waiting + in the model + its own) / service rate` exceeds the
  budget. It is admitted before its upload is decoded, so a request refused anyway costs no decode, and is counted
  while it decodes, so under load the requests decoding ahead of a new one are in its estimate.
  The service rate is images answered per second of busy time (time with at least one call in flight), measured
  across all model copies and decayed over `RATE_WINDOW_S`: what this worker has actually been serving, whatever
  the batch sizes, copies or CPU contention. Before any call has been measured nothing is refused.
- An idle copy takes every queued call that fits in `max_batch_size` images, at once: no corking. On a CPU a larger
  batch costs more per image, so waiting to fill one only adds latency; under load the queue fills by itself while
  the copies are busy, which is when batches pay. With `copies=None` (the model in a service of its own, which
  batches for all API workers) admitted calls go out at once and only the admission rule applies here.
- Refusals are counted, and logged with the estimate that caused them; `images_waiting` is the queue an autoscaler
  scales on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from skinserve.errors import ClientError

log = logging.getLogger("skinserve.queue")

RATE_WINDOW_S = 10.0  # the service rate forgets with this time constant: a few seconds of history, no more
SHED_GAP_S = 1.0  # refusals this close together are one spell of overload (what /readyz may act on)
BatchCall = Callable[[np.ndarray], Awaitable[np.ndarray]]  # images in, one packed row per image out


class Overloaded(ClientError):
    """The model cannot answer this request within the latency budget: 503 with Retry-After."""

    code = "overloaded"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


@dataclass
class Ticket:
    """A request admitted before its decode (`ModelQueue.admitted`), counted in the backlog until it is submitted."""

    images: int
    submitted: bool = False


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


class ServiceRate:
    """Images answered per second of busy time, exponentially decayed: the rate at which a queue drains."""

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._images = 0.0
        self._busy_s = 0.0
        self._in_flight = 0
        self._since = clock()

    def started(self) -> None:
        self._advance()
        self._in_flight += 1

    def finished(self, images: int) -> None:
        self._advance()
        self._in_flight -= 1
        self._images += images

    @property
    def images_per_s(self) -> float | None:
        self._advance()
        return self._images / self._busy_s if self._busy_s > 1e-6 and self._images > 0 else None

    def _advance(self) -> None:
        now = self._clock()
        elapsed, self._since = now - self._since, now
        decay = math.exp(-elapsed / self.window_s)
        self._images *= decay
        self._busy_s = self._busy_s * decay + (elapsed if self._in_flight else 0.0)


class ModelQueue:
    """`await submit(images)` -> the call's rows, or Overloaded when its expected wait is past `budget_s`."""

    def __init__(
        self,
        call: BatchCall,
        copies: int | None,
        max_batch_size: int,
        budget_s: float,
        on_shed: Callable[[float], None] = lambda expected_s: None,
        on_backlog: Callable[[int], None] = lambda images: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_shed(expected wait)` at each refusal; `on_backlog(images admitted, not yet answered)` at each change
        (a gauge: what an autoscaler scales on)."""
        self._call = call
        self._copies = copies
        self._max_batch = max(1, max_batch_size)
        self._budget_s = budget_s
        self._on_shed = on_shed
        self._on_backlog = on_backlog
        self._jobs: deque[_Job] = deque()
        self._idle = copies
        self._tasks: set[asyncio.Task] = set()
        self._clock = clock
        self.rate = ServiceRate(clock=clock)
        self.images_decoding = 0  # admitted, still being decoded: they reach the queue shortly
        self.images_waiting = 0  # queued here, not yet in a model call
        self.images_in_model = 0
        self.shed = 0
        self._shedding_since: float | None = None  # the start of the current run of refusals
        self._last_shed = -math.inf

    def expected_wait_s(self, images: int) -> float:
        """How long `images` more would take to be answered at the measured rate; 0 before any measurement."""
        rate = self.rate.images_per_s
        if rate is None:
            return 0.0
        return (self.backlog + images) / rate

    def overloaded_for_s(self) -> float:
        """For how long requests have been refused without a pause of `SHED_GAP_S`; 0 when none was lately."""
        now = self._clock()
        if self._shedding_since is None or now - self._last_shed > SHED_GAP_S:
            return 0.0
        return now - self._shedding_since

    @contextlib.contextmanager
    def admitted(self, images: int) -> Iterator[Ticket]:
        """Admit a request of `images` before its upload is decoded (refusing it, Overloaded, when its expected wait
        is past the budget) and count it in the backlog while it decodes, so the requests after it see it ahead of
        them. A request refused anyway then costs no decode: under overload the CPU goes to the admitted ones.
        Pass the ticket to `submit`; leaving the block without submitting (a bad upload) takes the count back."""
        self.admit(images)
        ticket = Ticket(images)
        self.images_decoding += images
        try:
            yield ticket
        finally:
            if not ticket.submitted:
                self.images_decoding -= images

    def admit(self, images: int) -> None:
        """Refuse (Overloaded) a request of `images` whose expected wait here is past the budget."""
        expected = self.expected_wait_s(images)
        if expected > self._budget_s and self.backlog:
            self._note_shed()
            self._on_shed(expected)
            log.warning(
                "shed a request of %d image(s): expected wait %.0f ms > budget %.0f ms (%d decoding, %d waiting, %d "
                "in the model, %.1f images/s)",
                images,
                expected * 1e3,
                self._budget_s * 1e3,
                self.images_decoding,
                self.images_waiting,
                self.images_in_model,
                self.rate.images_per_s or 0.0,
            )
            raise Overloaded(f"the model is at capacity (expected wait {expected:.1f} s); retry shortly")

    async def submit(self, images: np.ndarray, ticket: Ticket | None = None) -> np.ndarray:
        """The rows of `images`, once a model call has run them; admitted here, unless `admitted` gave a ticket."""
        if ticket is None:
            self.admit(len(images))
        else:
            ticket.submitted = True
            self.images_decoding -= ticket.images
        job = _Job(images, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self.images_waiting += len(images)
        self._on_backlog(self.backlog)
        self._dispatch()
        return await job.future

    @property
    def backlog(self) -> int:
        """Images admitted and not yet answered: being decoded, waiting here, or in a model call."""
        return self.images_decoding + self.images_waiting + self.images_in_model

    def shutdown(self) -> None:
        for job in self._jobs:
            job.future.cancel()
        self._jobs.clear()
        self.images_waiting = 0
        for task in self._tasks:
            task.cancel()

    def _note_shed(self) -> None:
        now = self._clock()
        if self._shedding_since is None or now - self._last_shed > SHED_GAP_S:
            self._shedding_since = now
        self._last_shed = now
        self.shed += 1

    def _dispatch(self) -> None:
        """Start a call on every idle copy that has work; with copies=None, a call per queued job."""
        while self._jobs and (self._idle is None or self._idle > 0):
            batch = self._take()
            if not batch:
                break
            if self._idle is not None:
                self._idle -= 1
            images = sum(len(job.images) for job in batch)
            self.images_in_model += images  # counted here, not when the task starts: the backlog never dips
            self.rate.started()
            task = asyncio.get_running_loop().create_task(self._run(batch, images))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Job]:
        """Queued jobs, oldest first, up to max_batch_size images (a larger job alone); cancelled ones dropped."""
        batch: list[_Job] = []
        size = 0
        while self._jobs:
            job = self._jobs[0]
            if job.future.done():  # its client went away while it waited
                self._jobs.popleft()
                self.images_waiting -= len(job.images)
                continue
            if batch and (size + len(job.images) > self._max_batch or self._idle is None):
                break
            self._jobs.popleft()
            self.images_waiting -= len(job.images)
            batch.append(job)
            size += len(job.images)
        return batch

    async def _run(self, batch: Sequence[_Job], images: int) -> None:
        answered = 0
        try:
            inputs = np.concatenate([job.images for job in batch]) if len(batch) > 1 else batch[0].images
            packed = await self._call(inputs)
            answered = images
        except Exception as err:  # the model call failed: every caller in the batch gets the error
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(err)
        else:
            bounds = np.cumsum([len(job.images) for job in batch])[:-1]
            for job, rows in zip(batch, np.split(packed, bounds), strict=True):
                if not job.future.done():
                    job.future.set_result(rows)
        finally:
            for job in batch:  # cancelled (shutdown) before the call ended
                if not job.future.done():
                    job.future.cancel()
            self.rate.finished(answered)
            self.images_in_model -= images
            self._on_backlog(self.backlog)
            if self._idle is not None:
                self._idle += 1
            if self._jobs:
                self._dispatch()
