"""The model as the service uses it: loading and warm-up, packing logits into one row per image, and the model
inside the API process behind the model queue (`serve.queueing`), with no hop to a model service.

BentoML forms batches only for calls that reach a batchable API over HTTP, so a model service costs every request
a second HTTP exchange and a pickled float array. On a CPU box that exchange costs as much CPU as the model, and
the cores it burns are the ones the model needs. Here each API worker holds its own copies of the model and feeds
them through `ModelQueue`: batches form while the copies are busy, minus the hop.

A worker holds `model_copies` copies and runs up to that many model calls (batches) at once: the operating system
hands a burst of new connections to whichever worker accepts first, so one worker often holds all of a client's
keep-alive connections while another idles, and with one copy the busy worker could use one core only.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.manifest import ExportManifest
from skinserve.runtime import ExportedModel, load_exported_model, output_names, output_shape
from skinserve.serve.queueing import ModelQueue
from skinserve.serve.settings import ServiceSettings

logger = logging.getLogger("skinserve.service")
_CONDITIONS, _LEVELS = len(CONDITIONS), len(SEVERITY_LABELS)


@dataclass(frozen=True)
class ServedModel:
    model: ExportedModel
    warmed: tuple[int, ...]

    @functools.cached_property
    def layout(self) -> OutputLayout:
        return OutputLayout.of(self.model.manifest)


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


@dataclass(frozen=True)
class OutputLayout:
    """Where each of a model's outputs sits in a packed row: the batching queue and BentoML's batchable API split a
    batch's answer back to its callers by rows of one array, so every output of an image travels as one row of
    [sum of the outputs' sizes + 1] floats, the last column the size of the model call that served it."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # without the batch axis

    @classmethod
    def of(cls, manifest: ExportManifest) -> OutputLayout:
        names = output_names(manifest)
        return cls(names, tuple(output_shape(manifest, name) for name in names))

    @property
    def width(self) -> int:
        """Floats in a packed row: every output's, and the batch size."""
        return sum(math.prod(shape) for shape in self.shapes) + 1

    def pack(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(outputs[self.names[0]])
        columns = [np.asarray(outputs[name], np.float32).reshape(n, -1) for name in self.names]
        return np.concatenate([*columns, np.full((n, 1), n, dtype=np.float32)], axis=1)

    def unpack(self, packed: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(outputs by name, each [N, *shape]; the batch size that served each row)."""
        outputs, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = math.prod(shape)
            outputs[name] = packed[:, start : start + size].reshape(-1, *shape)
            start += size
        return outputs, packed[:, -1].astype(int)


def packed_prediction(
    model: ExportedModel,
    batch: np.ndarray,
    observe_call: Callable[[int, float], None] = lambda size, cpu_s: None,
    layout: OutputLayout | None = None,
) -> np.ndarray:
    """Every output of the model for `batch`, packed by `OutputLayout` (condition logits, severity logits, then what
    the export has of skin type and class activation maps; the batch size last). Then `observe_call(N, CPU
    seconds)`: the model call's CPU on this thread, whatever else runs beside it."""
    started = time.thread_time()
    outputs = model.predict_outputs(batch)
    observe_call(len(batch), time.thread_time() - started)
    return (layout or OutputLayout.of(model.manifest)).pack(outputs)


def unpack_logits(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Condition and severity logits and the batch sizes: the leading and the last columns of any packed layout."""
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


class LocalModel:
    """`predict(images)` -> packed logits, like the model service's API, from this process's own model copies."""

    def __init__(
        self,
        export_dir: Path | str,
        settings: ServiceSettings,
        observe_call: Callable[[int, float], None] = lambda size, cpu_s: None,
        on_shed: Callable[[float], None] = lambda expected_s: None,
        on_backlog: Callable[[int], None] = lambda images: None,
    ) -> None:
        """`observe_call(batch size, CPU seconds)` after each model call, while the call still holds its copy;
        `on_shed` and `on_backlog` as `ModelQueue` takes them."""
        self.copies = tuple(load_served_model(export_dir, settings) for _ in range(settings.model_copies))
        self._idle: queue.SimpleQueue[ServedModel] = queue.SimpleQueue()
        for copy in self.copies:
            self._idle.put(copy)
        self._observe_call = observe_call
        # As many model calls at once as there are copies, on threads of their own (decode's threads use anyio's
        # default limiter, so a burst of uploads never keeps a free copy from its thread).
        self._limiter = anyio.CapacityLimiter(len(self.copies))
        self.queue = ModelQueue(
            self._infer,
            copies=len(self.copies),
            max_batch_size=settings.max_batch_size,
            budget_s=settings.max_latency_ms / 1000,
            on_shed=on_shed,
            on_backlog=on_backlog,
        )

    @property
    def served(self) -> ServedModel:
        return self.copies[0]

    @property
    def runtime(self) -> str:
        return self.served.model.runtime

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """[N, 7 + 28 + 1] packed logits for N normalised images; concurrent calls share model calls when batching."""
        return await self.queue.submit(images)

    def shutdown(self) -> None:
        self.queue.shutdown()

    async def _infer(self, batch: np.ndarray) -> np.ndarray:
        return await anyio.to_thread.run_sync(self._call, batch, limiter=self._limiter)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        served = self._idle.get_nowait()  # the queue lets no more calls in than there are copies
        try:
            return packed_prediction(served.model, batch, self._observe_call, served.layout)
        finally:
            self._idle.put(served)
