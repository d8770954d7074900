"""Conversation state and inbound de-duplication for the chat layer (stored, so restarts lose nothing)."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, actor_for_identity
from core.db.models import ButtonPayload, Conversation, InboundMessage
from core.services.base import Service
from core.services.marks import insert_or_update

MAX_STATE_BYTES = 64_000


class ConversationStore(Service):
    """Load and save one JSON state per (channel, chat, user)."""

    async def load(self, channel: str, chat_id: str, user_key: str) -> dict[str, Any]:
        """The saved state, or an empty one."""
        async with self._uow() as uow:
            return await self._state(uow.session, channel, chat_id, user_key)

    @staticmethod
    async def _state(session: AsyncSession, channel: str, chat_id: str, user_key: str) -> dict[str, Any]:
        row = (
            await session.execute(
                select(Conversation.state).where(
                    Conversation.channel == channel,
                    Conversation.chat_id == chat_id[:128],
                    Conversation.user_key == user_key[:128],
                )
            )
        ).scalar_one_or_none()
        return dict(row) if row else {}

    async def open_turn(
        self, channel: str, sender_id: str, chat_id: str, user_key: str
    ) -> tuple[Actor | None, dict[str, Any]]:
        """Who a channel account is, and the state of their conversation: read together, since every
        turn needs both (None and an empty state for an account nobody linked)."""
        async with self._uow() as uow:
            actor = await actor_for_identity(uow.session, channel, sender_id)
            if actor is None:
                return None, {}
            return actor, await self._state(uow.session, channel, chat_id, user_key)

    async def save(self, channel: str, chat_id: str, user_key: str, state: dict[str, Any]) -> None:
        """Replace the state (an empty state deletes the row)."""
        key = {"channel": channel, "chat_id": chat_id[:128], "user_key": user_key[:128]}
        async with self._uow() as uow:
            if state:
                # One statement on every turn that changes the state: no read of the row first.
                row = {**key, "state": state, "updated_at": self._clock.now()}
                await insert_or_update(uow.session, Conversation, row, list(key))
            else:
                await uow.session.execute(
                    delete(Conversation).where(
                        *(getattr(Conversation, column) == value for column, value in key.items())
                    )
                )
            await uow.commit()

    async def first_delivery(self, channel: str, message_id: str) -> bool:
        """Record a platform message id; False when it was seen before (a redelivery)."""
        async with self._uow() as uow:
            uow.session.add(
                InboundMessage(channel=channel, message_id=message_id[:128], received_at=self._clock.now())
            )
            try:
                await uow.commit()
            except IntegrityError:
                return False
        return True

    async def payload_token(self, payload: str) -> str:
        """A short token standing for a long button payload (the same payload gets the same token)."""
        token = hashlib.blake2b(payload.encode("utf-8"), digest_size=9).hexdigest()
        async with self._uow() as uow:
            exists = (
                await uow.session.execute(select(ButtonPayload.id).where(ButtonPayload.token == token))
            ).first()
            if exists is None:
                uow.session.add(
                    ButtonPayload(token=token, payload=payload[:4000], created_at=self._clock.now())
                )
                # The same payload may be stored at the same moment by another worker: theirs is as good.
                with contextlib.suppress(IntegrityError):
                    await uow.commit()
        return token

    async def payload_for(self, token: str) -> str | None:
        """The payload a token stands for, or None when unknown (an old or forged button)."""
        async with self._uow() as uow:
            return (
                await uow.session.execute(
                    select(ButtonPayload.payload).where(ButtonPayload.token == token[:32])
                )
            ).scalar_one_or_none()

    async def forget_inbound_before(self, age: timedelta) -> int:
        """Drop de-duplication records older than `age` (platforms stop redelivering after a day)."""
        async with self._uow() as uow:
            result = await uow.session.execute(
                delete(InboundMessage).where(InboundMessage.received_at < self._clock.now() - age)
            )
            await uow.commit()
            return int(getattr(result, "rowcount", 0) or 0)
