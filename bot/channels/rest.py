"""REST channel in Rasa's format: POST /webhooks/rest/webhook {"sender","message"} → replies."""

from __future__ import annotations

import base64
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from bot.assistant import Assistant
from bot.messages import IncomingMessage, Reply

CHANNEL = "rest"
_bearer = HTTPBearer(auto_error=False, scheme_name="BearerToken")


class RestMessage(BaseModel):
    """Rasa's REST channel request body."""

    model_config = ConfigDict(extra="ignore")

    sender: str = Field(min_length=1, max_length=128)
    message: str = Field(max_length=100_000)
    metadata: dict[str, Any] | None = None
    message_id: str | None = Field(default=None, max_length=128)


def require_channel_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Only the integration token may speak for arbitrary senders; personal tokens may not."""
    expected: str = request.app.state.api_token
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="The REST channel needs 'Authorization: Bearer <API token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def reply_json(recipient: str, reply: Reply) -> dict[str, Any]:
    """One reply in Rasa's REST output shape (an image travels as a data: URL)."""
    body: dict[str, Any] = {"recipient_id": recipient, "text": reply.text}
    if reply.buttons:
        body["buttons"] = [{"title": button.title, "payload": button.payload} for button in reply.buttons]
    if reply.image is not None:
        body["image"] = "data:image/png;base64," + base64.b64encode(reply.image).decode("ascii")
    return body


def rest_router() -> APIRouter:
    """The REST channel's route; the Assistant comes from app.state.assistant."""
    router = APIRouter(tags=["channels"])

    @router.post("/webhooks/rest/webhook", dependencies=[Depends(require_channel_token)])
    async def webhook(body: RestMessage, request: Request) -> list[dict[str, Any]]:
        """Handle one message from `rest:<sender>` and return the replies."""
        assistant: Assistant = request.app.state.assistant
        message = IncomingMessage(
            channel=CHANNEL, sender_id=body.sender, text=body.message, message_id=body.message_id
        )
        replies = await assistant.handle(message)
        return [reply_json(body.sender, reply) for reply in replies]

    return router
