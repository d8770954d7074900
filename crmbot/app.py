"""The one HTTP app: health, the admin and integration API, and (as they land) the chat channels."""

from __future__ import annotations

from fastapi import FastAPI

from core.container import Core
from crmbot.api import api_router
from crmbot.api.errors import install_error_handlers
from crmbot.api.health import router as health_router

DESCRIPTION = (
    "Admin and integration API of crmbot. Every /api/v1 endpoint needs `Authorization: Bearer <token>`: "
    "the admin token (CRMBOT_API_TOKEN) or a personal API token, which acts with its user's permissions. "
    'Errors are JSON: `{"error": {"code", "message", "field"?, "details"?}}`.'
)


def create_app(core: Core, api_token: str) -> FastAPI:
    """Build the app around an already wired Core; nothing is served without a token."""
    if not api_token or not api_token.strip():
        raise ValueError("create_app needs an API token: the API is never open without one.")
    app = FastAPI(
        title="crmbot",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.core = core
    app.state.api_token = api_token.strip()
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(api_router())
    # Channels (REST webhook, web chat, Telegram, Slack) are added here with app.include_router(...).
    return app
