"""skinserve's BentoML service: face photo in, condition and severity analysis out.

A request's stages, each in `skinserve.serve`: decode_request (auth, the upload parsed and decoded off the event loop:
`serve.uploads`), predict (the batched model: `serve.model`), encode_response (the answer built from the pydantic
models of `serve.schemas`), then a log row handed to the background writer (`serve.predlog`). Refusals are answered
by `serve.http` with a status and a stable `code`. Where the model runs is SKINSERVE_MODEL_PLACEMENT:
- inprocess (the default without GPUs): each API worker holds the model behind BentoML's batching dispatcher; no
  second HTTP exchange per request, which on a CPU costs as much as the model.
- separate (the default with SKINSERVE_GPUS): `ModelService`, a service of its own with one batchable `predict`
  API, shared by all API workers and called as a dependency (`bentoml.depends`): BentoML's dispatcher merges only
  calls that reach it through its endpoint. Many API workers decode for one GPU.
Settings come from `SKINSERVE_*` variables (`serve.settings`).
"""

from __future__ import annotations

import functools
import time
import uuid
from datetime import UTC, datetime

import anyio
import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.manifest import load_manifest
from skinserve.predictions import decode
from skinserve.serve.http import authorized_client, current_service, error_response, responses_for
from skinserve.serve.model import (
    LocalModel,
    ServedModel,
    load_served_model,
    packed_prediction,
    retried_once,
    unpack_logits,
)
from skinserve.serve.offload import offloaded_prediction
from skinserve.serve.predlog import PredictionLogWriter, PredictionRow, WriterMetrics
from skinserve.serve.schemas import Analysis, BatchAnalysis, Batching, ModelInfo, ModelRef, Timings, UploadInfo
from skinserve.serve.settings import ServiceSettings
from skinserve.serve.uploads import PreparedUpload, prepare_upload, uploaded_images
from skinserve.storage import content_key, open_storage

SETTINGS = ServiceSettings.from_env()
app = FastAPI(title="skinserve", description="Skin-condition analysis of face photos.", version="1")
app.dependency_overrides[bentoml.get_current_service] = current_service

batch_size_histogram = bentoml.metrics.Histogram(
    name="skinserve_model_batch_size",
    documentation="Images per model call, as formed by the adaptive batching dispatcher",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
predictions_counter = bentoml.metrics.Counter(
    name="skinserve_predictions_total", documentation="Analysed images by route", labelnames=["route"]
)
stage_cpu_counter = bentoml.metrics.Counter(
    name="skinserve_stage_cpu_seconds",
    documentation="CPU seconds spent decoding uploads and in model calls; the rest of a worker's CPU is HTTP and "
    "framework",
    labelnames=["stage"],
)
rejections_counter = bentoml.metrics.Counter(
    name="skinserve_rejected_requests_total",
    documentation="Requests answered 4xx/503, by status",
    labelnames=["status"],
)


def observe_model_call(size: int, cpu_s: float) -> None:
    batch_size_histogram.observe(size)
    stage_cpu_counter.labels(stage="model").inc(cpu_s)


@bentoml.service(
    name="skin_model",
    workers=SETTINGS.model_workers,
    resources={"gpu": SETTINGS.gpus} if SETTINGS.gpus else {"cpu": "1"},
    traffic={"timeout": SETTINGS.timeout_s, "max_concurrency": SETTINGS.max_concurrency},
    # BentoML's client to a dependency otherwise closes its session every 100 calls, cutting calls in flight.
    runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9},
)
class ModelService:
    stored = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        self.served: ServedModel = load_served_model(self.stored.path, SETTINGS)  # checks hashes, warms up
        self.decoder = None  # JPEGs decoded here in batches (nvJPEG), when SKINSERVE_GPU_DECODE allows
        if SETTINGS.model_decodes_jpeg:
            from skinserve.modeling.gpu_decode import jpeg_decoder  # torch: the model worker's, never an API worker's

            self.decoder = jpeg_decoder(self.served.model.manifest.preprocess, SETTINGS.gpu_decode)

    @bentoml.api(
        batchable=SETTINGS.batching,
        max_batch_size=max(2, SETTINGS.max_batch_size),
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Normalised NCHW float32 in; [N, 7 + 28 + 1] out: condition logits, severity logits, batch size."""
        return packed_prediction(self.served.model, images, observe_model_call)

    @bentoml.api(
        batchable=SETTINGS.batching,
        max_batch_size=max(2, SETTINGS.max_batch_size),
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def predict_jpeg(self, blobs: list[bytes]) -> np.ndarray:
        """Plain JPEG bytes in, decoded here; rows as `predict`'s, the batch size NOT_DECODED where it could not."""
        from skinserve.modeling.gpu_decode import packed_jpeg_prediction

        return packed_jpeg_prediction(self.served.model, self.decoder, blobs, observe_model_call)

    @bentoml.api
    def describe(self) -> dict:
        return {
            "runtime": self.served.model.runtime,
            "artifact": self.served.model.artifact,
            "warmed_batch_sizes": list(self.served.warmed),
            "jpeg_decode": None if self.decoder is None else str(self.decoder.device),
        }


@bentoml.service(
    name="skinserve",
    workers=SETTINGS.api_workers,
    traffic={"timeout": SETTINGS.timeout_s, "max_concurrency": SETTINGS.max_concurrency},
)
@bentoml.asgi_app(app, path="/")
class SkinService:
    if not SETTINGS.model_in_process:  # only a declared dependency makes `bentoml serve` start ModelService's workers
        model = bentoml.depends(ModelService)
    stored = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        self.manifest = load_manifest(self.stored.path)
        self.preprocessing = self.manifest.preprocess
        self.model_ref = ModelRef(name=self.manifest.model.name, version=self.manifest.model.version)
        self.storage = open_storage(SETTINGS.storage_url) if SETTINGS.store_images else None
        self.writer = PredictionLogWriter(
            SETTINGS.database_url, SETTINGS.spool_dir, metrics=WriterMetrics.create(bentoml.metrics)
        )
        self.writer.start()
        self.local = LocalModel(self.stored.path, SETTINGS, observe_model_call) if SETTINGS.model_in_process else None
        self.runtime: str | None = self.local.runtime if self.local else None
        self.jpeg_decode: str | None = None  # where the model service decodes JPEGs (describe), if it does

    @bentoml.on_shutdown
    def flush_log(self) -> None:
        if self.local is not None:
            self.local.shutdown()
        self.writer.stop(timeout_s=10)

    @app.post("/analyze", responses=responses_for("Analysis"))
    async def analyze(self, request: Request) -> JSONResponse:
        """Analyse one image: a multipart file in the `image` field, or the raw image with an image/* type."""
        return await self._single(request, "analyze")

    @app.post("/api/v1/ml/analyze-condition", responses=responses_for("Analysis"))
    async def analyze_condition(self, request: Request) -> JSONResponse:
        """The same contract as /analyze, at the route the product's API names."""
        return await self._single(request, "analyze-condition")

    @app.post("/analyze_batch", responses=responses_for("BatchAnalysis"))
    async def analyze_batch(self, request: Request) -> JSONResponse:
        """Analyse up to SKINSERVE_MAX_BATCH_IMAGES images sent as multipart files in the `images` field."""
        request_id = str(uuid.uuid4())
        try:
            client = authorized_client(request, SETTINGS.api_keys)
            blobs = await uploaded_images(request, SETTINGS.limits.max_bytes, SETTINGS.max_batch_images)
            results = await self._analyse(blobs, request_id, client, "analyze_batch")
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON answer; none kills the worker
            return self._rejected(err, request_id)
        return JSONResponse(BatchAnalysis(results=results).model_dump(mode="json"))

    @app.get("/model", responses=responses_for("ModelInfo"))
    async def model_info(self) -> JSONResponse:
        """The model in service: name, version, labels, thresholds, preprocessing, metrics, runtime in use."""
        await self._resolve_runtime()
        info = ModelInfo(
            name=self.model_ref.name,
            version=self.model_ref.version,
            runtime=self.runtime,
            conditions=list(CONDITIONS),
            severities=list(SEVERITY_LABELS),
            thresholds=self.manifest.thresholds,
            input_size=self.preprocessing.input_size,
            preprocessing=self.preprocessing.as_dict(),
            metrics=self.manifest.source.get("metrics", {}),
            batching=Batching(
                enabled=SETTINGS.batching,
                model_placement="inprocess" if self.local else "separate",
                model_copies=len(self.local.copies) if self.local else None,
                max_batch_size=SETTINGS.max_batch_size,
                max_latency_ms=SETTINGS.max_latency_ms,
                jpeg_decode=self.jpeg_decode,
            ),
        )
        return JSONResponse(info.model_dump(mode="json"))

    async def _single(self, request: Request, route: str) -> JSONResponse:
        request_id = str(uuid.uuid4())
        try:
            client = authorized_client(request, SETTINGS.api_keys)
            blobs = await uploaded_images(request, SETTINGS.limits.max_bytes, 1)
            (result,) = await self._analyse(blobs, request_id, client, route)
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON answer; none kills the worker
            return self._rejected(err, request_id)
        return JSONResponse(result.model_dump(mode="json"))

    async def _analyse(self, blobs: list[bytes], request_id: str, client: str | None, route: str) -> list[Analysis]:
        await self._resolve_runtime()
        started = time.perf_counter()
        if self.jpeg_decode:  # separate placement: plain JPEGs travel as bytes, decoded by the model service
            jpeg = functools.partial(retried_once, self.model.to_async.predict_jpeg)
            offloaded = await offloaded_prediction(blobs, SETTINGS.limits, self._prepared, jpeg, self._logits)
            uploads, packed = offloaded.uploads, offloaded.packed
            decoded, inferred = started + offloaded.checked_s, time.perf_counter()
        else:
            uploads = [await anyio.to_thread.run_sync(self._prepared, blob) for blob in blobs]
            decoded = time.perf_counter()
            packed = await self._logits(np.stack([u.array for u in uploads]))
            inferred = time.perf_counter()
        conditions, severity, batch_sizes = unpack_logits(np.asarray(packed))
        results = []
        scored = decode(conditions, severity, self.manifest.thresholds)
        for i, (upload, scores) in enumerate(zip(uploads, scored, strict=True)):
            result = Analysis(
                request_id=request_id if len(uploads) == 1 else str(uuid.uuid4()),
                model=self.model_ref,
                **scores,
                batch_size=int(batch_sizes[i]),
                image=UploadInfo(sha256=upload.sha256, width=upload.width, height=upload.height, bytes=upload.nbytes),
                timings=Timings(
                    decode_ms=round((decoded - started) * 1e3, 3),
                    inference_ms=round((inferred - decoded) * 1e3, 3),
                    total_ms=round((time.perf_counter() - started) * 1e3, 3),
                ),
            )
            results.append(result)
            self._log(result, upload, client, route)
        predictions_counter.labels(route=route).inc(len(results))
        return results

    def _prepared(self, blob: bytes) -> PreparedUpload:
        started = time.thread_time()  # this worker thread's CPU: decode's own cost, whatever else runs beside it
        try:
            return prepare_upload(blob, self.preprocessing, SETTINGS.limits)
        finally:
            stage_cpu_counter.labels(stage="decode").inc(time.thread_time() - started)

    async def _logits(self, images: np.ndarray) -> np.ndarray:
        if self.local is not None:
            return await self.local.predict(images)
        return await retried_once(self.model.to_async.predict, images)

    async def _resolve_runtime(self) -> None:
        if self.runtime is None:  # the model service's runtime, asked once
            described = await self.model.to_async.describe()
            self.runtime, self.jpeg_decode = described["runtime"], described.get("jpeg_decode")

    def _log(self, result: Analysis, upload: PreparedUpload, client: str | None, route: str) -> None:
        if self.storage is not None:
            self.storage.put(content_key("uploads", upload.sha256, upload.suffix), upload.data)
        self.writer.submit(
            PredictionRow(
                request_id=result.request_id,
                created_at=datetime.now(UTC),
                model_name=self.model_ref.name,
                model_version=self.model_ref.version,
                runtime=self.runtime or SETTINGS.runtime,
                image_sha256=upload.sha256,
                width=upload.width,
                height=upload.height,
                bytes=upload.nbytes,
                outputs={
                    "conditions": result.model_dump(mode="json", include={"conditions"})["conditions"],
                    "primary_concern": result.primary_concern,
                    "healthy": result.healthy,
                    "route": route,
                },
                latency_ms=result.timings.total_ms,
                batch_size=result.batch_size,
                client_id=client,
            )
        )

    def _rejected(self, err: Exception, request_id: str) -> JSONResponse:
        response = error_response(err, request_id)
        rejections_counter.labels(status=str(response.status_code)).inc()
        return response
