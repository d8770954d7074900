"""Users and their personal API tokens (admins only; the core enforces it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, StringConstraints

from core.schemas import In, UserIn, UserOut
from crmbot.api.deps import ActorDep, CoreDep, UsernamePath

router = APIRouter(tags=["users"])


class TokenIn(In):
    """What the token is for (optional)."""

    label: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] = ""


class TokenOut(BaseModel):
    """A new personal API token: shown this once, stored only as a hash."""

    token: str
    username: str
    label: str


@router.get("/users")
async def list_users(actor: ActorDep, core: CoreDep) -> list[UserOut]:
    """Every user."""
    return await core.org.list_users(actor)


@router.post("/users", status_code=201)
async def add_user(body: UserIn, actor: ActorDep, core: CoreDep) -> UserOut:
    """Create a user with their channel identities."""
    return await core.org.add_user(actor, body)


@router.post("/users/{username}/tokens", status_code=201)
async def issue_token(
    username: UsernamePath, actor: ActorDep, core: CoreDep, body: Annotated[TokenIn | None, Body()] = None
) -> TokenOut:
    """Issue a personal API token that acts as this user, with their permissions."""
    label = body.label if body else ""
    token = await core.org.issue_api_token(actor, username, label)
    return TokenOut(token=token, username=username, label=label)
