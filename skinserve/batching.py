"""The model inside the API process, behind BentoML's adaptive batching dispatcher, with no hop to a model service.

BentoML forms batches only for calls that reach a batchable API over HTTP, so a model service costs every request
a second HTTP exchange and a pickled float array. On a CPU box that exchange costs as much CPU as the model, and
the cores it burns are the ones the model needs. Here each API worker holds its own copy of the model and feeds it
through `CorkDispatcher`, the object BentoML's server builds for each batchable API: the same batching, minus the
hop. BentoML has no public entry point for it, hence the pinned `bentoml<1.5` in pyproject.toml.

A worker holds `model_copies` copies and runs up to that many model calls (batches) at once: the operating system
hands a burst of new connections to whichever worker accepts first, so one worker often holds all of a client's
keep-alive connections while another idles, and with one copy the busy worker could use one core only.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import numpy as np

from skinserve.service_config import ServiceSettings
from skinserve.serving import ServedModel, load_served_model, packed_prediction


def _overloaded() -> np.ndarray:
    from bentoml.exceptions import ServiceUnavailable

    # The dispatcher gives up on a call it cannot fit in max_latency_ms: a 503 the client may retry.
    raise ServiceUnavailable("the model is at capacity")


class LocalModel:
    """`predict(images)` -> packed logits, like the model service's API, from this process's own model copies."""

    def __init__(
        self,
        export_dir: Path | str,
        settings: ServiceSettings,
        observe_call: Callable[[int, float], None] = lambda size, cpu_s: None,
    ) -> None:
        """`observe_call(batch size, CPU seconds)` after each model call, while the call still holds its copy."""
        self.copies = tuple(load_served_model(export_dir, settings) for _ in range(settings.model_copies))
        self._idle: queue.SimpleQueue[ServedModel] = queue.SimpleQueue()
        for copy in self.copies:
            self._idle.put(copy)
        self._observe_call = observe_call
        # As many model calls at once as there are copies; further calls wait their turn, off the event loop.
        self._limiter = anyio.CapacityLimiter(len(self.copies))
        self._dispatcher = None
        if settings.batching:
            from bentoml._internal.marshal.dispatcher import CorkDispatcher, NonBlockSema

            self._dispatcher = CorkDispatcher(
                max_latency_in_ms=settings.max_latency_ms,
                max_batch_size=settings.max_batch_size,
                fallback=_overloaded,
                get_batch_size=len,
                batch_dim=(0, 0),
                shared_sema=NonBlockSema(len(self.copies)),  # batches in flight at once; BentoML's default is one
            )
            self._batched = self._dispatcher(self._infer_parts)

    @property
    def served(self) -> ServedModel:
        return self.copies[0]

    @property
    def runtime(self) -> str:
        return self.served.model.runtime

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """[N, 7 + 28 + 1] packed logits for N normalised images; concurrent calls share model calls when batching."""
        if self._dispatcher is None:
            return await self._infer(images)
        return await self._batched(images)

    def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.shutdown()

    async def _infer_parts(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        packed = await self._infer(np.concatenate(parts) if len(parts) > 1 else parts[0])
        return np.split(packed, np.cumsum([len(p) for p in parts])[:-1])

    async def _infer(self, batch: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(self._call, batch, limiter=self._limiter)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        served = self._idle.get_nowait()  # the limiter lets no more calls in than there are copies
        try:
            return packed_prediction(served.model, batch, self._observe_call)
        finally:
            self._idle.put(served)
