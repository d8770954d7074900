"""The one HTTP app: health, the admin and integration API, and (as they land) the chat channels."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from bot.assistant import Assistant
from bot.channels.rest import rest_router
from bot.channels.web import WebChatHub, install_webchat
from bot.nlu.types import NluEngine
from core.container import Core
from crmbot.api import api_router
from crmbot.api.deps import current_actor
from crmbot.api.errors import install_error_handlers
from crmbot.api.health import router as health_router
from crmbot.survey_page import survey_router
from crmbot.visit_page import visit_router

DESCRIPTION = (
    "Admin and integration API of crmbot. Every /api/v1 endpoint needs `Authorization: Bearer <token>`: "
    "the admin token (CRMBOT_API_TOKEN) or a personal API token, which acts with its user's permissions. "
    'Errors are JSON: `{"error": {"code", "message", "field"?, "details"?}}`.'
)


def create_app(
    core: Core,
    api_token: str,
    *,
    assistant: Assistant | None = None,
    nlu: NluEngine | None = None,
    webchat: WebChatHub | None = None,
) -> FastAPI:
    """Build the app around an already wired Core (and, when given, the chat assistant and NLU);
    nothing is served without a token."""
    if not api_token or not api_token.strip():
        raise ValueError("create_app needs an API token: the API is never open without one.")
    app = FastAPI(
        title="crmbot",
        version="0.1.0",
        description=DESCRIPTION,
        # Nothing but /healthz, the web chat page and the platform webhooks is open, so the
        # OpenAPI document is served below behind the bearer token, and there is no token-less /docs page.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.core = core
    app.state.api_token = api_token.strip()
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(api_router())
    app.include_router(survey_router())
    app.include_router(visit_router())
    if nlu is not None:
        from crmbot.nlu_http import parse_router

        app.state.nlu = nlu
        app.include_router(parse_router())
    if assistant is not None:
        app.state.assistant = assistant
        app.include_router(rest_router())
        # The web chat page, its WebSocket and uploads; its sender pushes to open browser tabs.
        web_sender = install_webchat(app, webchat or WebChatHub())
        app.state.webchat_sender = web_sender
        app.state.senders = {**getattr(app.state, "senders", {}), "web": web_sender}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(current_actor)])
    async def openapi_document() -> dict[str, Any]:
        return app.openapi()

    # Further channels (web chat, Telegram, Slack) are added here with app.include_router(...).
    return app
