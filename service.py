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

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import bentoml
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from skinserve.catalog.routes import MAX_BODY_BYTES, CatalogRoutes
from skinserve.catalog.schemas import IngredientAnalysis, Recommendations
from skinserve.db.engine import create_registry_engine
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.manifest import load_manifest
from skinserve.predictions import decode
from skinserve.runtime import OUTPUT_NAMES
from skinserve.serve.analysis import NoMaps, UnknownCondition, heatmap_png, regions_answer, skin_type_answer
from skinserve.serve.http import (
    authorized_client,
    current_service,
    error_response,
    install_error_handlers,
    responses_for,
)
from skinserve.serve.model import (
    LocalModel,
    OutputLayout,
    ServedModel,
    load_served_model,
    packed_prediction,
    retried_once,
)
from skinserve.serve.offload import offloaded_prediction
from skinserve.serve.predlog import PredictionLogWriter, PredictionRow, WriterMetrics
from skinserve.serve.quality import FaceStage, QualitySettings
from skinserve.serve.queueing import ModelQueue
from skinserve.serve.ratelimit import RateLimiter, client_address, parse_networks
from skinserve.serve.schemas import (
    Analysis,
    BatchAnalysis,
    Batching,
    ModelInfo,
    ModelRef,
    ShineAnswer,
    Timings,
    UploadInfo,
)
from skinserve.serve.settings import ServiceSettings
from skinserve.serve.shine import shine_answer
from skinserve.serve.uploads import PreparedUpload, discard_body, prepare_upload, read_body, uploaded_images
from skinserve.storage import content_key, open_storage

SETTINGS = ServiceSettings.from_env()
QUALITY = QualitySettings.from_env()
app = FastAPI(title="skinserve", description="Skin-condition analysis of face photos.", version="1")
app.dependency_overrides[bentoml.get_current_service] = current_service
install_error_handlers(app)

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
    documentation="CPU seconds by stage: decode (uploads to model input), quality (the face and quality stage), "
    "model (model calls); the rest of a worker's CPU is HTTP and framework",
    labelnames=["stage"],
)
rejections_counter = bentoml.metrics.Counter(
    name="skinserve_rejected_requests_total",
    documentation="Requests answered 4xx/503, by status and error code",
    labelnames=["status", "code"],
)
shed_counter = bentoml.metrics.Counter(
    name="skinserve_shed_requests",
    documentation="Requests refused (503 overloaded) because their expected wait was past the latency budget",
)
queue_gauge = bentoml.metrics.Gauge(
    name="skinserve_queue_images",
    documentation="Images admitted and not yet answered (waiting for or in a model call), summed over workers: "
    "the number an autoscaler scales on",
    multiprocess_mode="livesum",
)


def on_shed(expected_wait_s: float) -> None:
    shed_counter.inc()


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
        # The API workers admit or refuse each request by its own expected wait (serve.queueing); BentoML's
        # dispatcher, which cancels the oldest queued call on a wall-clock fit, only backs that up at the timeout.
        max_latency_ms=SETTINGS.timeout_s * 1000,
    )
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Normalised NCHW float32 in; one packed row per image out (serve.model.OutputLayout): every output."""
        return packed_prediction(self.served.model, images, observe_model_call, self.served.layout)

    @bentoml.api(
        batchable=SETTINGS.batching,
        max_batch_size=max(2, SETTINGS.max_batch_size),
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def predict_jpeg(self, blobs: list[bytes]) -> np.ndarray:
        """Plain JPEG bytes in, decoded here; rows as `predict`'s, the batch size NOT_DECODED where it could not."""
        from skinserve.modeling.gpu_decode import packed_jpeg_prediction

        return packed_jpeg_prediction(self.served.model, self.decoder, blobs, self.served.layout, observe_model_call)

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
        self.layout = OutputLayout.of(self.manifest)
        self.model_ref = ModelRef(name=self.manifest.model.name, version=self.manifest.model.version)
        self.faces = FaceStage.create(QUALITY, SETTINGS.crop_margin(self.preprocessing.face_crop_margin))
        self.storage = open_storage(SETTINGS.storage_url) if SETTINGS.store_images else None
        self.writer = PredictionLogWriter(
            SETTINGS.database_url, SETTINGS.spool_dir, metrics=WriterMetrics.create(bentoml.metrics)
        )
        self.writer.start()
        if SETTINGS.model_in_process:
            self.local = LocalModel(self.stored.path, SETTINGS, observe_model_call, on_shed, queue_gauge.set)
            self.queue = self.local.queue
        else:  # the model service batches for every API worker; here, only the admission rule
            self.local = None
            budget_s = SETTINGS.max_latency_ms / 1000
            self.queue = ModelQueue(
                self._remote_logits, None, SETTINGS.max_batch_size, budget_s, on_shed, queue_gauge.set
            )
        self.runtime: str | None = self.local.runtime if self.local else None
        self.jpeg_decode: str | None = None  # where the model service decodes JPEGs (describe), if it does
        self.limiter = RateLimiter(SETTINGS.rate_limit, SETTINGS.rate_limit_storage) if SETTINGS.rate_limit else None
        self.proxies = parse_networks(SETTINGS.trusted_proxies)
        self.catalog = CatalogRoutes(create_registry_engine(SETTINGS.catalog_url))

    async def __is_ready__(self) -> bool:
        """BentoML's /readyz: the model is loaded and warm (the instance exists only then), and, when
        SKINSERVE_UNREADY_WHEN_OVERLOADED is set, the queue has not been past the budget for unready_after_s."""
        if SETTINGS.unready_when_overloaded:
            return self.queue.overloaded_for_s() < SETTINGS.unready_after_s
        return True

    @bentoml.on_shutdown
    def flush_log(self) -> None:
        if self.local is not None:
            self.local.shutdown()
        self.writer.stop(timeout_s=10)

    @app.post("/analyze", responses=responses_for(Analysis))
    async def analyze(self, request: Request, regions: bool = False) -> JSONResponse:
        """Analyse one image: multipart (`image` field), a raw image/* body, or JSON {"image_base64": "..."};
        `?regions=true` adds scores per facial region."""
        return await self._single(request, "analyze", regions)

    @app.post("/api/v1/ml/analyze-condition", responses=responses_for(Analysis))
    async def analyze_condition(self, request: Request, regions: bool = False) -> JSONResponse:
        """The same contract as /analyze, at the route the product's API names."""
        return await self._single(request, "analyze-condition", regions)

    @app.post("/analyze_batch", responses=responses_for(BatchAnalysis))
    async def analyze_batch(self, request: Request, regions: bool = False) -> JSONResponse:
        """Analyse up to SKINSERVE_MAX_BATCH_IMAGES images sent as multipart files in the `images` field."""
        request_id = str(uuid.uuid4())
        try:
            client = await self._admitted_client(request)
            blobs = await uploaded_images(request, SETTINGS.limits.max_bytes, SETTINGS.max_batch_images)
            scored = await self._analyse(blobs, request_id, client, "analyze_batch", regions)
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON answer; none kills the worker
            return await self._rejected(err, request, request_id)
        return JSONResponse(BatchAnalysis(results=[s.analysis for s in scored]).model_dump(mode="json"))

    @app.post("/infer", responses=responses_for(ShineAnswer))
    async def infer(self, request: Request, regions: bool = True) -> JSONResponse:
        """The Shine app's contract: concerns for the 7 conditions, region concerns, metadata and recommendations."""
        request_id = str(uuid.uuid4())
        try:
            client = await self._admitted_client(request)
            blobs = await uploaded_images(request, SETTINGS.limits.max_bytes, 1)
            (scored,) = await self._analyse(blobs, request_id, client, "infer", regions and self.has_maps)
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON answer; none kills the worker
            return await self._rejected(err, request, request_id)
        answer = scored.analysis
        skin = answer.skin_type.label if answer.skin_type else None
        # From the product catalog when one is loaded; without one the analysis is answered as it is.
        products = await anyio.to_thread.run_sync(self.catalog.shine_recommendations, answer, skin) or []
        conditions = answer.model_dump(mode="json")["conditions"]
        recommendations = [p.model_dump(mode="json") for p in products]
        shine = shine_answer(conditions, answer.quality, skin, answer.regions, recommendations)
        return JSONResponse(shine.model_dump(mode="json"))

    @app.post("/api/v1/ingredients/analyze", responses=responses_for(IngredientAnalysis))
    async def analyze_ingredients(self, request: Request) -> JSONResponse:
        """An ingredient list (INCI text, as on a label) matched to COSING: functions, restrictions, what each
        targets. JSON {"ingredients": "Aqua, Niacinamide, ..."}."""
        return await self._catalog_call(request, self.catalog.analyze_ingredients)

    @app.post("/api/v1/ml/recommend", responses=responses_for(Recommendations))
    async def recommend(self, request: Request) -> JSONResponse:
        """Products whose ingredients target the conditions of an analysis (as /analyze answers it) or of a list of
        conditions with severities; 503 `no_catalog` when no catalog is loaded."""
        return await self._catalog_call(request, self.catalog.recommend)

    @app.post(
        "/api/v1/ml/explain",
        responses=responses_for(None) | {200: {"content": {"image/png": {}}, "description": "a PNG overlay"}},
        response_class=Response,
    )
    async def explain(self, request: Request, condition: str | None = None) -> Response:
        """A PNG of the image with one condition's class activation map over it (`?condition=`, default: the
        primary concern, else the most likely condition), the face box and its regions outlined."""
        request_id = str(uuid.uuid4())
        try:
            if condition is not None and condition not in CONDITIONS:
                raise UnknownCondition(f"unknown condition {condition!r}: one of {', '.join(CONDITIONS)}")
            if not self.has_maps:
                raise NoMaps("this model was exported without class activation maps; re-export it for heatmaps")
            client = await self._admitted_client(request)
            blobs = await uploaded_images(request, SETTINGS.limits.max_bytes, 1)
            (scored,) = await self._analyse(blobs, request_id, client, "explain", keep_image=True)
            shown = (
                condition
                or scored.analysis.primary_concern
                or max(CONDITIONS, key=lambda c: scored.analysis.conditions[c].probability)
            )
            png = await anyio.to_thread.run_sync(heatmap_png, scored.outputs, 0, scored.upload, shown)
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON answer; none kills the worker
            return await self._rejected(err, request, request_id)
        return Response(png, media_type="image/png", headers={"X-Condition": shown, "X-Request-Id": request_id})

    @app.get("/model", responses=responses_for(ModelInfo))
    async def model_info(self) -> JSONResponse:
        """The model in service: name, version, labels, thresholds, preprocessing, metrics, runtime in use."""
        await self._resolve_runtime()
        info = ModelInfo(
            name=self.model_ref.name,
            version=self.model_ref.version,
            runtime=self.runtime,
            conditions=list(CONDITIONS),
            severities=list(SEVERITY_LABELS),
            skin_types=self.skin_types,
            regions=self.has_maps,
            face_check=QUALITY.check.value,
            face_crop_margin=self.faces.crop_margin if self.faces else None,
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

    @property
    def has_maps(self) -> bool:
        return self.manifest.cam.available

    @property
    def skin_types(self) -> list[str]:
        return list(self.manifest.skin_type.labels) if self.manifest.skin_type.available else []

    async def _single(self, request: Request, route: str, regions: bool) -> JSONResponse:
        request_id = str(uuid.uuid4())
        try:
            client = await self._admitted_client(request)
            blobs = await uploaded_images(request, SETTINGS.limits.max_bytes, 1)
            (scored,) = await self._analyse(blobs, request_id, client, route, regions)
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON answer; none kills the worker
            return await self._rejected(err, request, request_id)
        return JSONResponse(scored.analysis.model_dump(mode="json"))

    async def _catalog_call(self, request: Request, call) -> JSONResponse:
        request_id = str(uuid.uuid4())
        try:
            await self._admitted_client(request)
            body = await read_body(request, MAX_BODY_BYTES)
            answer = await anyio.to_thread.run_sync(call, body)  # a database query: never on the event loop
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON answer; none kills the worker
            return await self._rejected(err, request, request_id)
        return JSONResponse(answer.model_dump(mode="json"))

    async def _admitted_client(self, request: Request) -> str | None:
        """The client's id (its key's fingerprint) once its token and its rate limit let it in."""
        client = authorized_client(request, SETTINGS.api_keys)
        if self.limiter is not None:
            await self.limiter.check(client or client_address(request, self.proxies))
        return client

    async def _analyse(
        self,
        blobs: list[bytes],
        request_id: str,
        client: str | None,
        route: str,
        regions: bool = False,
        keep_image: bool = False,
    ) -> list[Scored]:
        """decode_request (in threads, a batch's images in parallel), predict (the model queue), encode_response."""
        await self._resolve_runtime()
        if regions and not self.has_maps:
            raise NoMaps("this model was exported without class activation maps; it cannot answer regions")
        started = time.perf_counter()
        # Separate placement with JPEG decode in the model worker: plain JPEGs travel as bytes. Only when nothing
        # here needs the decoded pixels: the face stage, regions and heatmaps do.
        if self.jpeg_decode and self.faces is None and not regions and not keep_image:
            jpeg = functools.partial(retried_once, self.model.to_async.predict_jpeg)
            prepare = functools.partial(self._prepared, keep_image=False)
            offloaded = await offloaded_prediction(blobs, SETTINGS.limits, prepare, jpeg, self.queue.submit)
            uploads, packed = offloaded.uploads, offloaded.packed
            decoded, inferred = started + offloaded.checked_s, time.perf_counter()
        else:
            with self.queue.admitted(len(blobs)) as ticket:  # refused now, if at all, before its decode costs CPU
                uploads = await asyncio.gather(
                    *(anyio.to_thread.run_sync(self._prepared, blob, keep_image) for blob in blobs)
                )
                decoded = time.perf_counter()
                packed = await self.queue.submit(np.stack([u.array for u in uploads]), ticket)
            inferred = time.perf_counter()
        outputs, batch_sizes = self.layout.unpack(np.asarray(packed))
        scores = decode(
            outputs[OUTPUT_NAMES[0]], outputs[OUTPUT_NAMES[1]], self.manifest.thresholds, self.manifest.temperatures
        )
        results = []
        for i, (upload, score) in enumerate(zip(uploads, scores, strict=True)):
            analysis = Analysis(
                request_id=request_id if len(uploads) == 1 else str(uuid.uuid4()),
                model=self.model_ref,
                **score,
                skin_type=skin_type_answer(outputs, i, self.skin_types),
                face=check.face if (check := getattr(upload, "check", None)) else None,
                quality=check.quality if check else None,
                regions=regions_answer(outputs, i, upload, self.manifest.thresholds, self.manifest.temperatures)
                if regions
                else None,
                batch_size=int(batch_sizes[i]),
                image=UploadInfo(sha256=upload.sha256, width=upload.width, height=upload.height, bytes=upload.nbytes),
                timings=Timings(
                    decode_ms=round((decoded - started) * 1e3, 3),
                    inference_ms=round((inferred - decoded) * 1e3, 3),
                    total_ms=round((time.perf_counter() - started) * 1e3, 3),
                ),
            )
            results.append(Scored(analysis, outputs, i, upload))
            self._log(analysis, upload, client, route)
        if self.storage is not None:  # a blocking disk or GCS write: on a thread, never on the event loop
            await asyncio.gather(*(anyio.to_thread.run_sync(self._store, upload) for upload in uploads))
        predictions_counter.labels(route=route).inc(len(results))
        return results

    def _prepared(self, blob: bytes, keep_image: bool) -> PreparedUpload:
        started = time.thread_time()  # this worker thread's CPU: decode's own cost, whatever else runs beside it
        quality_s = 0.0
        try:
            upload = prepare_upload(blob, self.preprocessing, SETTINGS.limits, self.faces, keep_image)
            quality_s = upload.quality_cpu_s
            return upload
        finally:
            stage_cpu_counter.labels(stage="decode").inc(time.thread_time() - started - quality_s)
            stage_cpu_counter.labels(stage="quality").inc(quality_s)

    async def _remote_logits(self, images: np.ndarray) -> np.ndarray:
        return await retried_once(self.model.to_async.predict, images)

    def _store(self, upload: PreparedUpload) -> None:
        self.storage.put(content_key("uploads", upload.sha256, upload.suffix), upload.data)

    async def _resolve_runtime(self) -> None:
        if self.runtime is None:  # the model service's runtime, asked once
            described = await self.model.to_async.describe()
            self.runtime, self.jpeg_decode = described["runtime"], described.get("jpeg_decode")

    def _log(self, result: Analysis, upload: PreparedUpload, client: str | None, route: str) -> None:
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
                outputs=result.model_dump(
                    mode="json", include={"conditions", "primary_concern", "healthy", "skin_type"}
                )
                | {
                    "route": route,
                    "face": result.face.box if result.face else None,
                    "warnings": result.quality.warnings if result.quality else [],
                },
                latency_ms=result.timings.total_ms,
                batch_size=result.batch_size,
                client_id=client,
            )
        )

    async def _rejected(self, err: Exception, request: Request, request_id: str) -> JSONResponse:
        response = error_response(err, request_id)
        code = getattr(err, "code", "internal" if response.status_code >= 500 else "bad_request")
        rejections_counter.labels(status=str(response.status_code), code=code).inc()
        # Read what is left of the body first (bounded), so a client still writing it receives this answer.
        if not await discard_body(request, SETTINGS.linger_bytes, SETTINGS.linger_s):
            response.headers["Connection"] = "close"
        return response


@dataclass(frozen=True)
class Scored:
    """One image's answer, with what the other answer forms are built from: its model outputs and its upload."""

    analysis: Analysis
    outputs: dict[str, np.ndarray]
    index: int
    upload: PreparedUpload
