"""`POST /model/parse`: Rasa's parse endpoint over the app's NLU engine (bearer token required)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.nlu.rasa import parse_result_to_rasa
from bot.nlu.types import NluEngine, ParseContext
from crmbot.api.deps import current_actor
from crmbot.api.errors import error_response

logger = logging.getLogger("crmbot.api")
MAX_TEXT_LENGTH = 10_000


class ParseRequest(BaseModel):
    """Rasa's request body (`message_id` is accepted and ignored, as Rasa does for NLU-only parsing)."""

    model_config = ConfigDict(extra="ignore")

    text: str = Field(max_length=MAX_TEXT_LENGTH, description="The message to parse.")
    message_id: str | None = None


class IntentOut(BaseModel):
    """The winning intent."""

    name: str
    confidence: float


class EntityOut(BaseModel):
    """One entity, Rasa-style, with crmbot's normalised value."""

    entity: str
    value: str
    start: int
    end: int
    text: str
    confidence_entity: float
    extractor: str


class ParseResponse(BaseModel):
    """Rasa's parse shape (plus the detected language)."""

    text: str
    intent: IntentOut
    entities: list[EntityOut]
    intent_ranking: list[IntentOut]
    lang: str


def _context(request: Request) -> ParseContext:
    core = getattr(request.app.state, "core", None)
    settings = getattr(core, "settings", None)
    clock = getattr(core, "clock", None)
    now = clock.now() if clock is not None else datetime.now(UTC)
    timezone = getattr(settings, "timezone", None) or "Asia/Shanghai"
    return ParseContext(now=now, timezone=timezone)


def parse_router() -> APIRouter:
    """The router; the app must set `app.state.nlu` to an NluEngine."""
    router = APIRouter(tags=["nlu"], dependencies=[Depends(current_actor)])

    @router.post(
        "/model/parse",
        response_model=ParseResponse,
        responses={503: {"description": "No NLU engine is loaded."}},
        summary="Parse a message (Rasa-compatible)",
    )
    async def model_parse(body: ParseRequest, request: Request) -> Any:
        """Intent, ranking and entities of `text`, in Rasa's `/model/parse` shape."""
        engine: NluEngine | None = getattr(request.app.state, "nlu", None)
        if engine is None:
            return error_response(503, "nlu_unavailable", "The NLU engine is not loaded yet.")
        result = await engine.parse(body.text, _context(request))
        return JSONResponse(parse_result_to_rasa(result))

    return router
