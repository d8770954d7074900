"""Liveness with a database check, for load balancers and orchestrators (no token needed)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from crmbot.api.deps import CoreDep

router = APIRouter(tags=["health"])
logger = logging.getLogger("crmbot.api")
DATABASE_TIMEOUT_SECONDS = 5.0


@router.get(
    "/healthz",
    responses={503: {"description": "The database is not reachable."}},
)
async def healthz(core: CoreDep) -> JSONResponse:
    """200 when the app and its database answer; 503 otherwise."""
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS), core.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not healthy"; the reason goes to the log only
        logger.warning("Health check: database unavailable (%s)", type(exc).__name__, exc_info=exc)
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "unavailable",
                "error": {"code": "database_unavailable", "message": "The database is not reachable."},
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": "ok"})
