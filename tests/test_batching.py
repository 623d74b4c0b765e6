"""The in-process model: BentoML's dispatcher merges concurrent calls, each caller gets its own rows back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from skinserve.batching import LocalModel
from skinserve.service_config import ServiceSettings
from skinserve.serving import unpack_logits

from .servers import shared_tiny_export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return Path(shared_tiny_export(tmp_path_factory)["BENTOML_HOME"]).parent / "export"


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


async def concurrently(model: LocalModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return list(await asyncio.gather(*(model.predict(x) for x in inputs)))


def test_concurrent_calls_share_model_calls_and_get_their_own_rows(export_dir):
    observed: list[int] = []
    model = LocalModel(export_dir, ServiceSettings(max_batch_size=16, ort_threads=1), observed.append)
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


def test_with_batching_off_each_call_runs_alone(export_dir):
    observed: list[int] = []
    model = LocalModel(export_dir, ServiceSettings(max_batch_size=1, ort_threads=1), observed.append)
    outputs = asyncio.run(concurrently(model, [images(1, seed) for seed in range(6)]))
    assert observed == [1] * 6
    assert all(unpack_logits(o)[2].tolist() == [1] for o in outputs)
