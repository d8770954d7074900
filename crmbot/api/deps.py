"""What every API route gets injected: the Core, the Actor behind the bearer token, paging."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.auth import SYSTEM, Actor
from core.container import Core

# Tokens are "crm_" + 43 characters; anything far longer is not worth a database look-up.
MAX_TOKEN_LENGTH = 256
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="BearerToken",
    description="The admin token (CRMBOT_API_TOKEN) or a personal API token (`crmbot users token USERNAME`).",
)


def get_core(request: Request) -> Core:
    """The Core the app was built with."""
    core: Core = request.app.state.core
    return core


def _unauthorized(message: str, *, invalid: bool = False) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": challenge})


async def current_actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> Actor:
    """The admin token acts as the system; a personal token as its user, with that user's permissions."""
    if credentials is None:
        raise _unauthorized("This endpoint needs 'Authorization: Bearer <token>'.")
    token = credentials.credentials.strip()
    admin_token: str = request.app.state.api_token
    if hmac.compare_digest(token.encode("utf-8"), admin_token.encode("utf-8")):
        return SYSTEM
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise _unauthorized("The bearer token is not valid.", invalid=True)
    actor = await get_core(request).org.actor_for_token(token)
    if actor is None:
        raise _unauthorized("The bearer token is not valid.", invalid=True)
    return actor


@dataclass(frozen=True, slots=True)
class Paging:
    """Which slice of a list to return."""

    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=200, description="Page size (1–200).")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")] = 0,
) -> Paging:
    """`limit` and `offset` query parameters."""
    return Paging(limit=limit, offset=offset)


CoreDep = Annotated[Core, Depends(get_core)]
ActorDep = Annotated[Actor, Depends(current_actor)]
PagingDep = Annotated[Paging, Depends(paging)]
CodePath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=CODE_PATTERN, description="A code or serial number.")
]
RefPath = Annotated[str, Path(min_length=1, max_length=32, description="A reference like SR-12, or just 12.")]
UsernamePath = Annotated[str, Path(min_length=1, max_length=64)]
