"""The pieces service.py is made of: model loading and warm-up, upload preparation, auth, errors, packing."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse
from starlette.requests import Request

from skinserve.images import UploadError, UploadLimits, decode_upload, suffix_for
from skinserve.labels import CONDITIONS, SEVERITY_LABELS
from skinserve.preprocess import Preprocessing, normalized_array, resize_and_crop
from skinserve.runtime import ExportedModel, load_exported_model
from skinserve.service_config import ServiceSettings

logger = logging.getLogger("skinserve.service")
_CONDITIONS, _LEVELS = len(CONDITIONS), len(SEVERITY_LABELS)


class UnauthorizedError(Exception):
    pass


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
    model = load_exported_model(Path(export_dir), settings.runtime, threads=settings.ort_threads)
    size = int(model.manifest["preprocessing"]["input_size"])
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


@dataclass(frozen=True)
class PreparedUpload:
    array: np.ndarray  # normalised CHW float32, ready for the model
    data: bytes
    sha256: str
    width: int
    height: int
    nbytes: int
    format: str

    @property
    def suffix(self) -> str:
        return suffix_for(self.format)


def prepare_upload(data: bytes, pre: Preprocessing, limits: UploadLimits) -> PreparedUpload:
    """Validate, decode (JPEG at reduced scale when it can), resize, crop and normalise one upload."""
    upload = decode_upload(data, limits, min_side=pre.resize_size)
    array = normalized_array(resize_and_crop(upload.image, pre), pre)
    return PreparedUpload(array, data, upload.sha256, upload.width, upload.height, upload.nbytes, upload.format)


async def current_service() -> Any:
    """BentoML's `get_current_service()`, as a coroutine.

    BentoML gives a FastAPI class view its `self` through `Depends(get_current_service)`, a plain function, and
    FastAPI runs plain-function dependencies in its thread pool: a thread hop per request for a global lookup.
    Installed as the override of that dependency (`app.dependency_overrides`), the lookup runs on the event loop.
    """
    import bentoml

    return bentoml.get_current_service()


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


def authorized_client(request: Request, api_keys: tuple[str, ...]) -> str | None:
    """The client id (a key's short fingerprint) when keys are configured; raises UnauthorizedError otherwise."""
    if not api_keys:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError("a bearer token is required")
    presented = token.strip().encode()
    # Compare against every key, always, so the time taken says nothing about which key came close.
    matches = [hmac.compare_digest(presented, key.encode()) for key in api_keys]
    if not any(matches):
        raise UnauthorizedError("invalid token")
    import hashlib

    return "key-" + hashlib.sha256(presented).hexdigest()[:12]


def error_response(err: Exception, request_id: str) -> JSONResponse:
    """Every failure as a JSON answer with a status a client can act on; only the unexpected is a 500."""
    from starlette.exceptions import HTTPException

    body = {"error": str(err), "request_id": request_id}
    if isinstance(err, UnauthorizedError):
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(err, UploadError):
        return JSONResponse(body, status_code=err.status)
    if isinstance(err, HTTPException):  # starlette's multipart parser refusing a malformed form
        return JSONResponse(
            {"error": f"malformed request: {err.detail}", "request_id": request_id},
            status_code=400 if err.status_code >= 500 else err.status_code,
        )
    status = _bentoml_status(err)
    if status == 503:
        return JSONResponse(
            {"error": "the model is at capacity; retry shortly", "request_id": request_id},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    logger.exception("request %s failed", request_id)
    return JSONResponse({"error": "internal error; see the server log", "request_id": request_id}, status_code=500)


def _bentoml_status(err: Exception) -> int | None:
    code = getattr(err, "error_code", None)
    return int(getattr(code, "value", code)) if code is not None else None


def responses_for(schema: str) -> dict:
    """OpenAPI documentation of a route's answers, from the pydantic models in skinserve.schemas."""
    from skinserve import schemas

    ok = getattr(schemas, schema)
    error = {"model": schemas.ErrorBody}
    return {
        200: {"model": ok, "description": "the analysis"},
        400: error | {"description": "undecodable image or malformed form"},
        401: error | {"description": "missing or invalid bearer token (when SKINSERVE_API_KEYS is set)"},
        413: error | {"description": "upload over the byte or pixel limit"},
        415: error | {"description": "not an accepted image type"},
        503: error | {"description": "at capacity; retry after the Retry-After seconds"},
    }
