"""The admin and integration API under /api/v1: one router per business area, all behind a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from crmbot.api import admin, customers, installed, knowledge, notifications, sales, service
from crmbot.api.deps import current_actor

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    """Every /api/v1 route; the token check is on the router so no endpoint can be left open."""
    router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(current_actor)])
    for area in (customers, installed, service, sales, knowledge, notifications, admin):
        router.include_router(area.router)
    return router


__all__ = ["API_PREFIX", "api_router"]
