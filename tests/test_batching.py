"""The in-process model: BentoML's dispatcher merges concurrent calls, each caller gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from skinserve.serve.model import LocalModel, unpack_logits
from skinserve.serve.settings import ServiceSettings

from .servers import shared_tiny_export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return Path(shared_tiny_export(tmp_path_factory)["BENTOML_HOME"]).parent / "export"


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


async def concurrently(model: LocalModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return list(await asyncio.gather(*(model.predict(x) for x in inputs)))


@pytest.mark.slow
def test_concurrent_calls_share_model_calls_and_get_their_own_rows(export_dir):
    observed: list[int] = []
    model = LocalModel(export_dir, ServiceSettings(max_batch_size=16, ort_threads=1), lambda n, cpu: observed.append(n))
    inputs = [images(1, seed) for seed in range(48)] + [images(3, 99)]  # the first ~20 train its latency model
    try:
        outputs = asyncio.run(concurrently(model, inputs))
    finally:
        model.shutdown()
    assert [len(o) for o in outputs] == [len(x) for x in inputs]
    assert max(observed) > 1 and sum(observed) == 51  # merged, and every image run exactly once
    for x, packed in zip(inputs, outputs, strict=True):
        alone = model.served.model.predict(x)
        conditions, severity, batch_sizes = unpack_logits(packed)
        np.testing.assert_allclose(conditions, alone[0], atol=1e-4)
        np.testing.assert_allclose(severity, alone[1], atol=1e-4)
        assert (batch_sizes >= len(x)).all()


@pytest.mark.slow
def test_with_batching_off_each_call_runs_alone(export_dir):
    observed: list[int] = []
    model = LocalModel(export_dir, ServiceSettings(max_batch_size=1, ort_threads=1), lambda n, cpu: observed.append(n))
    outputs = asyncio.run(concurrently(model, [images(1, seed) for seed in range(6)]))
    assert observed == [1] * 6
    assert all(unpack_logits(o)[2].tolist() == [1] for o in outputs)


@pytest.mark.parametrize("max_batch_size", [1, 16])
@pytest.mark.slow
def test_a_worker_runs_as_many_model_calls_at_once_as_it_has_copies(export_dir, max_batch_size):
    spans: list[tuple[float, float]] = []
    cpu: list[float] = []
    lock = threading.Lock()

    def observe(size: int, cpu_s: float) -> None:  # called while the call holds its copy
        start = time.perf_counter()
        time.sleep(0.05)  # long enough for the calls behind it to start beside it, if they may
        with lock:
            spans.append((start, time.perf_counter()))
            cpu.append(cpu_s)

    settings = ServiceSettings(max_batch_size=max_batch_size, ort_threads=1, model_copies=2)
    model = LocalModel(export_dir, settings, observe)
    inputs = [images(1, seed) for seed in range(12)]

    async def staggered() -> list[np.ndarray]:  # calls arriving while earlier ones run, as under load
        async def call(i: int, x: np.ndarray) -> np.ndarray:
            await asyncio.sleep(0.01 * i)
            return await model.predict(x)

        return list(await asyncio.gather(*(call(i, x) for i, x in enumerate(inputs))))

    try:
        outputs = asyncio.run(staggered())
    finally:
        model.shutdown()
    assert len({id(copy.model) for copy in model.copies}) == 2
    overlap = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert overlap == 2  # both copies busy at once, never a third call beside them
    assert all(0 < seconds < 0.05 for seconds in cpu)  # the model's CPU time, not the wall time spent beside it
    for x, packed in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(unpack_logits(packed)[0], model.served.model.predict(x)[0], atol=1e-4)


def test_model_copies_must_be_positive():
    with pytest.raises(ValueError, match="SKINSERVE_MODEL_COPIES"):
        ServiceSettings.from_env({"SKINSERVE_MODEL_COPIES": "0"})
