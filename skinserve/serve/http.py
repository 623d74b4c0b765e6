"""What a client sees besides the analysis: bearer-token auth, error answers with their status and code, and the
OpenAPI documentation of every route's answers."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request

from skinserve.errors import ERROR_CODES, ClientError

logger = logging.getLogger("skinserve.service")


class UnauthorizedError(ClientError):
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


async def current_service() -> Any:
    """BentoML's `get_current_service()`, as a coroutine.

    BentoML gives a FastAPI class view its `self` through `Depends(get_current_service)`, a plain function, and
    FastAPI runs plain-function dependencies in its thread pool: a thread hop per request for a global lookup.
    Installed as the override of that dependency (`app.dependency_overrides`), the lookup runs on the event loop.
    """
    import bentoml

    return bentoml.get_current_service()


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
    return "key-" + hashlib.sha256(presented).hexdigest()[:12]


def error_body(message: str, code: str, request_id: str | None) -> dict[str, Any]:
    from skinserve.serve.schemas import ErrorBody

    return ErrorBody(error=message, code=code, request_id=request_id).model_dump()


def error_response(err: Exception, request_id: str) -> JSONResponse:
    """Every failure as a JSON answer with a status and code a client can act on; only the unexpected is a 500."""
    from starlette.exceptions import HTTPException

    if _bentoml_status(err) == 503:  # the model service's own dispatcher shedding a call
        from skinserve.serve.queueing import Overloaded

        err = Overloaded("the model is at capacity; retry shortly")
    if isinstance(err, ClientError):
        return JSONResponse(error_body(str(err), err.code, request_id), status_code=err.status, headers=err.headers)
    if isinstance(err, HTTPException):  # starlette's multipart parser refusing a malformed form
        return JSONResponse(
            error_body(f"malformed request: {err.detail}", "bad_request", request_id),
            status_code=400 if err.status_code >= 500 else err.status_code,
        )
    logger.exception("request %s failed", request_id)
    return JSONResponse(error_body("internal error; see the server log", "internal", request_id), status_code=500)


def _bentoml_status(err: Exception) -> int | None:
    code = getattr(err, "error_code", None)
    return int(getattr(code, "value", code)) if code is not None else None


def responses_for(answer: type | None) -> dict:
    """OpenAPI documentation of a route's answers: the pydantic model on 200 (when given), and per error status the
    codes that come with it (from skinserve.errors.ERROR_CODES)."""
    from skinserve.serve import schemas

    answers: dict[int | str, dict[str, Any]] = {200: {"model": answer, "description": "the answer"}} if answer else {}
    by_status: dict[int, list[str]] = {}
    for code, (status, meaning) in ERROR_CODES.items():
        by_status.setdefault(status, []).append(f"`{code}`: {meaning}")
    for status, lines in sorted(by_status.items()):
        answers[status] = {"model": schemas.ErrorBody, "description": "; ".join(lines)}
    return answers


def install_error_handlers(app: Any) -> None:
    """FastAPI's own refusals (a query parameter of the wrong type) answered like every other: JSON `error` and
    `code`, not FastAPI's `detail` list."""
    from fastapi.exceptions import RequestValidationError

    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        return JSONResponse(error_body(f"invalid request: {problems}", "invalid_input", None), status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)
