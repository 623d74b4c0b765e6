"""The model as the service uses it: loading and warm-up, packing logits for the batching dispatcher, and the model
inside the API process behind BentoML's adaptive batching dispatcher, with no hop to a model service.

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

import logging
import queue
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.runtime import ExportedModel, load_exported_model
from skinserve.serve.settings import ServiceSettings

logger = logging.getLogger("skinserve.service")
_CONDITIONS, _LEVELS = len(CONDITIONS), len(SEVERITY_LABELS)


@dataclass(frozen=True)
class ServedModel:
    model: ExportedModel
    warmed: tuple[int, ...]


def warm_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to the largest batch the dispatcher may form: each shape's first call pays its setup."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return (*sizes, max(1, max_batch_size))


def load_served_model(export_dir: Path | str, settings: ServiceSettings) -> ServedModel:
    """Open the export (hashes checked), then run every warm-up batch size once before reporting ready."""
    model = load_exported_model(
        Path(export_dir), settings.runtime, fmt=settings.artifact_format, threads=settings.ort_threads
    )
    size = model.manifest.preprocess.input_size
    rng = np.random.default_rng(0)
    warmed = warm_batch_sizes(settings.max_batch_size)
    for batch in warmed:
        model.predict(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    logger.info("model %s ready on %s; warmed batch sizes %s", model.artifact, model.runtime, warmed)
    return ServedModel(model, warmed)


def packed_prediction(
    model: ExportedModel, batch: np.ndarray, observe_call: Callable[[int, float], None] = lambda size, cpu_s: None
) -> np.ndarray:
    """The model's logits for `batch` as one [N, 7 + 28 + 1] array (conditions, severity, the batch size), so the
    batching dispatcher can split the batch's answer back by rows. Then `observe_call(N, CPU seconds)`: the model
    call's CPU on this thread, whatever else runs beside it."""
    started = time.thread_time()
    conditions, severity = model.predict(batch)
    observe_call(len(batch), time.thread_time() - started)
    n = len(conditions)
    sizes = np.full((n, 1), n, dtype=np.float32)
    return np.concatenate([conditions.reshape(n, -1), severity.reshape(n, -1), sizes], axis=1).astype(np.float32)


def unpack_logits(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    conditions = packed[:, :_CONDITIONS]
    severity = packed[:, _CONDITIONS : _CONDITIONS * (1 + _LEVELS)].reshape(-1, _CONDITIONS, _LEVELS)
    return conditions, severity, packed[:, -1].astype(int)


async def retried_once(call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """`call(*args)`, once more if the connection to the model service broke: inference has no side effects.

    The API worker keeps connections to the model worker alive; one the model side has already closed fails on
    its first write (aiohttp's ClientConnectionResetError / ServerDisconnectedError), which answered clients with a
    500 under load; one closed while its answer was being read raises aiohttp's RuntimeError("Connection closed.").
    A second attempt opens a fresh connection.
    """
    import aiohttp

    try:
        return await call(*args)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and str(err) != "Connection closed.":
            raise
        logger.warning("model service connection broke (%s: %s); retrying once", type(err).__name__, err)
        return await call(*args)


def _overloaded() -> np.ndarray:
    from skinserve.serve.http import Overloaded

    # The dispatcher gives up on a call it cannot fit in max_latency_ms: a 503 the client may retry.
    raise Overloaded("the model is at capacity; retry shortly")


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
