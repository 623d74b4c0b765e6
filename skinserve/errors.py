"""One root for every error skinserve raises on purpose, and the client errors with their HTTP status and code.

A caller catches `SkinserveError` (or one branch of it) instead of enumerating unrelated classes. An error a client
can see is a `ClientError`: its `status` is the HTTP status of the answer and its `code` a stable, machine-readable
word that goes into the JSON error body beside the human message. `ERROR_CODES` lists every code with its status and
meaning; the OpenAPI spec and the README are written from it, so a new code is documented where it is declared.
"""

from __future__ import annotations

from typing import NamedTuple


class SkinserveError(Exception):
    """The root: a failure skinserve recognised and can explain (which file, which field, what was expected)."""


class ErrorCode(NamedTuple):
    status: int
    meaning: str


# code -> (HTTP status, what it means for a client). Codes are stable API: add, never rename.
ERROR_CODES: dict[str, ErrorCode] = {
    "bad_request": ErrorCode(400, "malformed request (form, JSON body or query parameter)"),
    "undecodable": ErrorCode(400, "the bytes claim an image type but do not decode"),
    "empty_upload": ErrorCode(400, "the upload holds no bytes"),
    "unauthorized": ErrorCode(401, "missing or invalid bearer token (when SKINSERVE_API_KEYS is set)"),
    "too_large": ErrorCode(413, "upload over the byte or pixel limit"),
    "unsupported_type": ErrorCode(415, "not an accepted image type or content type"),
    "invalid_input": ErrorCode(422, "the request is well formed but a value is not acceptable"),
    "rate_limited": ErrorCode(429, "over this client's rate limit; retry after Retry-After seconds"),
    "overloaded": ErrorCode(503, "the model's queue is past the latency budget; retry after Retry-After seconds"),
    "not_ready": ErrorCode(503, "the service is starting; retry shortly"),
    "internal": ErrorCode(500, "an unexpected failure; the server log has the request id"),
}


def register_code(code: str, status: int, meaning: str) -> str:
    """Declare a code next to the error class that raises it (a later stage adds its own, e.g. `no_face`)."""
    known = ERROR_CODES.get(code)
    if known is not None and known.status != status:
        raise ValueError(f"error code {code!r} is already registered with status {known.status}")
    ERROR_CODES[code] = ErrorCode(status, meaning)
    return code


class ClientError(SkinserveError):
    """Bad input or a refusal a client can act on: answered with `status` and `code` in the JSON body.

    A subclass names its usual code; `code=` overrides it for one instance (an upload error that is an empty body).
    """

    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}: declare it with register_code first")
            self.code = code

    @property
    def status(self) -> int:
        return ERROR_CODES[self.code].status

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries (Retry-After, WWW-Authenticate); none by default."""
        return {}
