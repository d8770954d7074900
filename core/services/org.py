"""Organisation: departments, users, channel identities, personal API tokens."""

from __future__ import annotations

import builtins
import hashlib
import secrets
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.auth import Actor, load_actor, require_role
from core.auth import actor_for_identity as identity_actor
from core.db.models import ApiToken, ChannelIdentity, Customer, Department, NotificationPreference, User
from core.domain.enums import STAFF_ROLES, Channel, DepartmentKind, Role
from core.errors import Conflict, NotFound, ValidationFailed
from core.schemas import UserIn, UserOut
from core.services.base import Service, customer_by_code, user_by_username

IDENTITY_CHANNELS = frozenset({Channel.TELEGRAM, Channel.SLACK, Channel.WEB, Channel.REST, Channel.TERMINAL})


def parse_identity(value: str) -> tuple[str, str]:
    """'telegram:12345' → ('telegram', '12345'), checked."""
    channel, sep, external_id = value.strip().partition(":")
    channel = channel.lower()
    if not sep or not external_id.strip():
        raise ValidationFailed(f"Identity '{value[:80]}' must look like CHANNEL:ID, e.g. telegram:12345.")
    if channel not in IDENTITY_CHANNELS:
        raise ValidationFailed(
            f"Unknown channel '{channel[:20]}' in identity; "
            f"use one of {', '.join(sorted(IDENTITY_CHANNELS))}."
        )
    if len(external_id) > 128:
        raise ValidationFailed("Identity id is longer than 128 characters.")
    return channel, external_id.strip()


def hash_token(token: str) -> str:
    """Tokens are stored only as their SHA-256, so a database leak leaks no credentials."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class OrgService(Service):
    """Departments, users and who they are on each channel."""

    async def add_department(
        self,
        actor: Actor,
        *,
        code: str,
        name: str,
        kind: DepartmentKind,
        parent_code: str | None = None,
        head_username: str | None = None,
    ) -> int:
        """Create a department under `parent_code` (or update it if the code exists)."""
        require_role(actor, doing="change the organisation")
        async with self._uow() as uow:
            session = uow.session
            parent_id = None
            if parent_code:
                parent = (
                    await session.execute(select(Department).where(Department.code == parent_code))
                ).scalar_one_or_none()
                if parent is None:
                    raise NotFound(f"No department with code '{parent_code}'.", field="parent")
                parent_id = parent.id
            head_id = (await user_by_username(session, head_username)).id if head_username else None
            department = (
                await session.execute(select(Department).where(Department.code == code))
            ).scalar_one_or_none()
            if department is None:
                department = Department(
                    code=code, name=name, kind=kind.value, parent_id=parent_id, head_id=head_id
                )
                session.add(department)
            else:
                department.name, department.kind, department.parent_id = name, kind.value, parent_id
                department.head_id = head_id
            await session.flush()
            await uow.commit()
            return department.id

    async def add_user(self, actor: Actor, data: UserIn) -> UserOut:
        """Create a user with their identities; a customer user must name their customer."""
        require_role(actor, doing="add users")
        if data.role is Role.CUSTOMER and not data.customer_code:
            raise ValidationFailed(
                "A customer user needs --customer CODE (the company they belong to).", field="customer"
            )
        if data.role is not Role.CUSTOMER and data.customer_code:
            raise ValidationFailed("Only customer users belong to a customer.", field="customer")
        if data.timezone:
            try:
                ZoneInfo(data.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValidationFailed(f"Unknown timezone '{data.timezone[:64]}'.", field="timezone") from exc
        identities = [parse_identity(value) for value in data.identities]
        async with self._uow() as uow:
            session = uow.session
            if (await session.execute(select(User.id).where(User.username == data.username))).first():
                raise Conflict(f"User '{data.username}' already exists.", field="username")
            customer = await customer_by_code(session, data.customer_code) if data.customer_code else None
            manager = await user_by_username(session, data.manager) if data.manager else None
            department_id = None
            if data.department:
                department = (
                    await session.execute(select(Department).where(Department.code == data.department))
                ).scalar_one_or_none()
                if department is None:
                    raise NotFound(f"No department with code '{data.department}'.", field="department")
                department_id = department.id
            now = self._clock.now()
            user = User(
                username=data.username,
                name=data.name or data.username,
                role=data.role.value,
                email=str(data.email).lower() if data.email else None,
                phone=data.phone,
                lang=data.lang,
                timezone=data.timezone,
                customer_id=customer.id if customer else None,
                manager_id=manager.id if manager else None,
                department_id=department_id,
                skills=[],
                active=True,
                created_at=now,
            )
            session.add(user)
            await session.flush()
            for channel, external_id in identities:
                session.add(
                    ChannelIdentity(user_id=user.id, channel=channel, external_id=external_id, linked_at=now)
                )
            session.add(NotificationPreference(user_id=user.id, channel_order=[], muted_kinds=[]))
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict(
                    "One of those identities is already linked to another user.", field="identity"
                ) from exc
            await uow.commit()
            return UserOut(
                id=user.id,
                username=user.username,
                name=user.name,
                role=user.role,
                email=user.email,
                phone=user.phone,
                lang=user.lang,
                timezone=user.timezone,
                customer_code=customer.code if customer else None,
                manager=manager.username if manager else None,
                identities=[f"{channel}:{external_id}" for channel, external_id in identities],
            )

    async def link_identity(self, actor: Actor, username: str, identity: str) -> None:
        """Link a channel account to a user (admins directly; the linking flow calls this as SYSTEM)."""
        require_role(actor, doing="link channel identities")
        channel, external_id = parse_identity(identity)
        async with self._uow() as uow:
            user = await user_by_username(uow.session, username)
            existing = (
                await uow.session.execute(
                    select(ChannelIdentity).where(
                        ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
                    )
                )
            ).scalar_one_or_none()
            if existing is not None and existing.user_id != user.id:
                raise Conflict("That channel account is already linked to another user.", field="identity")
            if existing is None:
                uow.session.add(
                    ChannelIdentity(
                        user_id=user.id, channel=channel, external_id=external_id, linked_at=self._clock.now()
                    )
                )
            await uow.commit()

    async def actor_for_username(self, username: str) -> Actor:
        """The Actor of an active user (for the terminal chat and tests)."""
        async with self._uow() as uow:
            user = await user_by_username(uow.session, username)
            if not user.active:
                raise NotFound(f"User '{username}' is deactivated.")
            return await load_actor(uow.session, user)

    async def actor_for_identity(self, channel: str, external_id: str) -> Actor | None:
        """The Actor behind a channel account, or None when it is not linked."""
        async with self._uow() as uow:
            return await identity_actor(uow.session, channel, external_id)

    async def issue_api_token(self, actor: Actor, username: str, label: str = "") -> str:
        """Create a personal API token for a user; the token is shown once and stored hashed."""
        require_role(actor, doing="issue API tokens")
        token = "crm_" + secrets.token_urlsafe(32)
        async with self._uow() as uow:
            user = await user_by_username(uow.session, username)
            uow.session.add(
                ApiToken(
                    user_id=user.id,
                    token_hash=hash_token(token),
                    label=label[:100],
                    created_at=self._clock.now(),
                )
            )
            await uow.commit()
        return token

    async def actor_for_token(self, token: str) -> Actor | None:
        """The Actor behind a personal API token, or None if unknown or revoked."""
        async with self._uow() as uow:
            row = (
                await uow.session.execute(
                    select(ApiToken, User)
                    .join(User, User.id == ApiToken.user_id)
                    .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked.is_(False))
                )
            ).first()
            if row is None:
                return None
            api_token, user = row
            if not user.active:
                return None
            api_token.last_used_at = self._clock.now()
            actor = await load_actor(uow.session, user)
            await uow.commit()
            return actor

    async def identities_of(self, user_id: int, channel: str) -> builtins.list[str]:
        """A user's account ids on one channel, newest link first (how proactive messages find them)."""
        async with self._uow() as uow:
            rows = await uow.session.execute(
                select(ChannelIdentity.external_id)
                .join(User, User.id == ChannelIdentity.user_id)
                .where(
                    ChannelIdentity.user_id == user_id,
                    ChannelIdentity.channel == channel,
                    User.active.is_(True),
                )
                .order_by(ChannelIdentity.linked_at.desc(), ChannelIdentity.id.desc())
            )
            return list(rows.scalars())

    async def active_staff_usernames_by_email(self, email: str) -> builtins.list[str]:
        """Usernames of active staff with this email (case-insensitive), for matching a Slack profile."""
        wanted = email.strip().lower()
        if not wanted:
            return []
        async with self._uow() as uow:
            rows = await uow.session.execute(
                select(User.username).where(
                    func.lower(User.email) == wanted,
                    User.active.is_(True),
                    User.role.in_([role.value for role in STAFF_ROLES]),
                )
            )
            return list(rows.scalars())

    async def list_users(self, actor: Actor) -> list[UserOut]:
        """All users, for admins."""
        require_role(actor, doing="list users")
        async with self._uow() as uow:
            users = (await uow.session.execute(select(User).order_by(User.username))).scalars().all()
            customers = dict((await uow.session.execute(select(Customer.id, Customer.code))).tuples().all())
            names = {user.id: user.username for user in users}
            identities: dict[int, list[str]] = {}
            for identity in (await uow.session.execute(select(ChannelIdentity))).scalars():
                identities.setdefault(identity.user_id, []).append(
                    f"{identity.channel}:{identity.external_id}"
                )
            return [
                UserOut(
                    id=user.id,
                    username=user.username,
                    name=user.name,
                    role=user.role,
                    email=user.email,
                    phone=user.phone,
                    lang=user.lang,
                    timezone=user.timezone,
                    customer_code=customers.get(user.customer_id) if user.customer_id else None,
                    manager=names.get(user.manager_id) if user.manager_id else None,
                    identities=identities.get(user.id, []),
                )
                for user in users
            ]
