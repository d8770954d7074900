"""One error shape for the whole HTTP app: `{"error": {"code", "message", ...}}`, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import (
    Conflict,
    DomainError,
    InsufficientStock,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)

logger = logging.getLogger("crmbot.api")

INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; it has been logged."

# Most specific first: the first class an error is an instance of decides its status.
DOMAIN_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (PermissionDenied, 403),
    (ValidationFailed, 422),
    (InvalidTransition, 409),
    (Conflict, 409),
    (InsufficientStock, 409),
)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
}

_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


Detail = dict[str, str | None]


def error_body(
    code: str, message: str, *, field: str | None = None, details: Sequence[Detail] | None = None
) -> dict[str, Any]:
    """The JSON every error response carries."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    if details is not None:
        error["details"] = list(details)
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    details: Sequence[Detail] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error as a JSON response."""
    body = error_body(code, message, field=field, details=details)
    return JSONResponse(body, status_code=status, headers=headers)


def status_for(error: DomainError) -> int:
    """HTTP status of a domain error (400 for kinds without a better one)."""
    for kind, status in DOMAIN_STATUS:
        if isinstance(error, kind):
            return status
    return 400


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = status_for(exc)
    details = [{"field": exc.field, "message": exc.message}] if status == 422 else None
    return error_response(status, exc.code, exc.message, field=exc.field, details=details)


def _field_name(loc: Sequence[int | str]) -> str | None:
    """('body', 'parts', 0, 'quantity') → 'parts.0.quantity'; the location kind is not part of the name."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or None


def _describe(error: dict[str, Any]) -> tuple[str | None, str]:
    """One pydantic error → (field, sentence a person can act on)."""
    kind = error.get("type", "")
    loc = tuple(error.get("loc", ()))
    if kind == "json_invalid":
        return None, "The request body is not valid JSON."
    field = _field_name(loc)
    message = str(error.get("msg", "is invalid"))
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if kind == "missing":
        if field is None:
            return None, "A JSON request body is required."
        return field, f"{field} is required."
    if kind == "extra_forbidden":
        return field, f"Unknown field '{field}'."
    if field is None:
        return None, message
    return field, f"{field}: {message}"


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    """A 422 naming every offending field."""
    described = [_describe(dict(error)) for error in errors] or [(None, "The request is invalid.")]
    details: list[Detail] = [{"field": field, "message": message} for field, message in described]
    json_broken = any(dict(error).get("type") == "json_invalid" for error in errors)
    code = "invalid_json" if json_broken else "validation_failed"
    message = "; ".join(message for _field, message in described)
    if len(message) > 1000:
        message = message[:997] + "..."
    return error_response(422, code, message, field=described[0][0], details=details)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc.errors())


async def _pydantic_validation(request: Request, exc: Exception) -> JSONResponse:
    # A model built inside a route from request data (not a response: FastAPI reports those separately).
    assert isinstance(exc, ValidationError)
    return validation_response(exc.errors())


def _default_message(status: int, request: Request) -> str:
    if status == 404:
        return (
            f"There is nothing at {request.method} {request.url.path}. The API is described at /openapi.json."
        )
    if status == 405:
        return f"{request.method} is not allowed on {request.url.path}."
    try:
        return HTTPStatus(status).phrase + "."
    except ValueError:
        return "The request failed."


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else None
    try:
        default_phrase = HTTPStatus(status).phrase
    except ValueError:
        default_phrase = ""
    message = detail if detail and detail != default_phrase else _default_message(status, request)
    code = HTTP_CODES.get(status, "internal_error" if status >= 500 else "http_error")
    return error_response(status, code, message, headers=dict(exc.headers) if exc.headers else None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error_response()


def internal_error_response() -> JSONResponse:
    """The 500 every unexpected failure turns into; the details stay in the server log."""
    return error_response(500, "internal_error", INTERNAL_ERROR_MESSAGE)


class CatchAllMiddleware:
    """Turn any exception a route lets escape into the JSON 500, logged with its traceback.

    Starlette's own last-resort handler answers but then re-raises, which servers and test clients
    report a second time; this one answers and stops there (unless the response had already begun).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; answer 500 if it blows up before the response starts."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("Unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await internal_error_response()(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler on the app, so no route can answer with HTML or a stack trace."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _pydantic_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(CatchAllMiddleware)
