"""Delivery status of notifications, and retrying dead letters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from core.schemas import NotificationOut, NotificationStats, Page
from crmbot.api.deps import ActorDep, CoreDep, PagingDep

router = APIRouter()
IdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="The notification's id.")]


@router.get("/notifications", tags=["notifications"])
async def list_notifications(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    status: Annotated[
        str | None, Query(max_length=20, description="pending, sending, sent, failed, dead or skipped.")
    ] = None,
    username: Annotated[str | None, Query(max_length=64, description="The recipient.")] = None,
    kind: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[NotificationOut]:
    """Newest first; admins see every message, other users their own."""
    return await core.notifications.list(
        actor, status=status, username=username, kind=kind, limit=paging.limit, offset=paging.offset
    )


@router.get("/notifications/stats", tags=["notifications"])
async def notification_stats(actor: ActorDep, core: CoreDep) -> NotificationStats:
    """Counts by status, the oldest message still waiting, the newest dead letters (admins)."""
    return await core.notifications.stats(actor)


@router.get("/notifications/{notification_id}", tags=["notifications"])
async def get_notification(notification_id: IdPath, actor: ActorDep, core: CoreDep) -> NotificationOut:
    """One message's delivery status."""
    return await core.notifications.get(actor, notification_id)


@router.post("/notifications/{notification_id}/retry", tags=["notifications"])
async def retry_notification(notification_id: IdPath, actor: ActorDep, core: CoreDep) -> NotificationOut:
    """Put a dead letter back in the queue (admins)."""
    return await core.notifications.retry(actor, notification_id)
