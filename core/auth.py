"""Who is acting, and what they may see: every core service asks this module, never the caller."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core.db.models import ChannelIdentity, Customer, Department, RepairOrder, ServiceRequest, User
from core.domain.enums import STAFF_ROLES, Role
from core.errors import PermissionDenied


@dataclass(frozen=True, slots=True)
class Actor:
    """The person (or system) a core call is made for, with the scope precomputed."""

    user_id: int | None
    username: str
    role: Role
    name: str = ""
    lang: str = "en"
    timezone: str | None = None
    customer_id: int | None = None
    # Users whose customers, deals and visits this actor may see: self plus everyone below them.
    team_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        """Admins and the system see everything."""
        return self.role is Role.ADMIN

    @property
    def is_staff(self) -> bool:
        """Anyone working for the company."""
        return self.role in STAFF_ROLES

    @property
    def is_customer(self) -> bool:
        """A customer's person, limited to their own company's records."""
        return self.role is Role.CUSTOMER


SYSTEM = Actor(user_id=None, username="system", role=Role.ADMIN, name="crmbot")


def require_role(actor: Actor, *roles: Role, doing: str) -> None:
    """Refuse unless the actor has one of `roles` (admins always pass)."""
    if actor.is_admin or actor.role in roles:
        return
    raise PermissionDenied(f"Your role ({actor.role.value}) cannot {doing}.")


def require_staff(actor: Actor, *, doing: str) -> None:
    """Refuse customers."""
    if not actor.is_staff:
        raise PermissionDenied(f"Only staff can {doing}.")


# --- SQL filters: list queries are scoped in the database, not filtered after loading ----------


def customer_scope(actor: Actor) -> ColumnElement[bool]:
    """Customers the actor may see."""
    if actor.is_admin or actor.role in (Role.AGENT, Role.TECHNICIAN):
        # The service desk and the field need any customer's profile to do their job.
        return true()
    if actor.is_customer:
        return Customer.id == actor.customer_id if actor.customer_id is not None else false()
    return Customer.owner_id.in_(actor.team_ids) if actor.team_ids else false()


def sales_scope_owner(actor: Actor, owner_column: InstrumentedAttribute[int]) -> ColumnElement[bool]:
    """Sales records (deals, visits) the actor may see: their own and their team's."""
    if actor.is_admin:
        return true()
    if actor.role in (Role.REP, Role.MANAGER) and actor.team_ids:
        return owner_column.in_(actor.team_ids)
    return false()


def service_request_scope(actor: Actor) -> ColumnElement[bool]:
    """Service requests the actor may see."""
    if actor.is_admin or actor.role is Role.AGENT:
        return true()
    if actor.is_customer:
        return ServiceRequest.customer_id == actor.customer_id if actor.customer_id is not None else false()
    if actor.role is Role.TECHNICIAN:
        assigned_job = select(RepairOrder.service_request_id).where(
            RepairOrder.technician_id == actor.user_id
        )
        return or_(ServiceRequest.assignee_id == actor.user_id, ServiceRequest.id.in_(assigned_job))
    if not actor.team_ids:
        return false()
    owned_customers = select(Customer.id).where(Customer.owner_id.in_(actor.team_ids))
    return or_(
        ServiceRequest.assignee_id.in_(actor.team_ids), ServiceRequest.customer_id.in_(owned_customers)
    )


def repair_order_scope(actor: Actor) -> ColumnElement[bool]:
    """Repair orders the actor may see."""
    if actor.is_admin or actor.role is Role.AGENT:
        return true()
    if actor.role is Role.TECHNICIAN:
        return RepairOrder.technician_id == actor.user_id
    visible_requests = select(ServiceRequest.id).where(service_request_scope(actor))
    return RepairOrder.service_request_id.in_(visible_requests)


# --- building an actor --------------------------------------------------------------------------


async def load_actor(session: AsyncSession, user: User) -> Actor:
    """Build an Actor for `user`, with their team: reports down the manager chain and the
    members of every department they head, down the department tree."""
    team: set[int] = {user.id}
    if user.role in (Role.MANAGER, Role.ADMIN):
        team |= await _subordinates(session, user.id)
    return Actor(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        name=user.name,
        lang=user.lang,
        timezone=user.timezone,
        customer_id=user.customer_id,
        team_ids=frozenset(team),
    )


async def actor_for_identity(session: AsyncSession, channel: str, external_id: str) -> Actor | None:
    """The Actor behind a channel account, or None when it is not linked (or the user is inactive)."""
    user = (
        await session.execute(
            select(User)
            .join(ChannelIdentity, ChannelIdentity.user_id == User.id)
            .where(ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id)
        )
    ).scalar_one_or_none()
    if user is None or not user.active:
        return None
    return await load_actor(session, user)


async def _subordinates(session: AsyncSession, manager_id: int) -> set[int]:
    """Everyone below a manager, by manager chain and by departments headed (cycle-safe)."""
    rows = (await session.execute(select(User.id, User.manager_id, User.department_id))).all()
    departments = (
        await session.execute(select(Department.id, Department.parent_id, Department.head_id))
    ).all()
    reports: dict[int, list[int]] = {}
    for user_id, boss_id, _department in rows:
        if boss_id is not None:
            reports.setdefault(boss_id, []).append(user_id)
    children: dict[int, list[int]] = {}
    for department_id, parent_id, _head in departments:
        if parent_id is not None:
            children.setdefault(parent_id, []).append(department_id)
    headed = [department_id for department_id, _parent, head_id in departments if head_id == manager_id]
    department_ids: set[int] = set()
    stack = list(headed)
    while stack:
        department_id = stack.pop()
        if department_id in department_ids:
            continue
        department_ids.add(department_id)
        stack.extend(children.get(department_id, []))
    found: set[int] = {user_id for user_id, _boss, department in rows if department in department_ids}
    stack = [manager_id, *found]
    while stack:
        current = stack.pop()
        for report in reports.get(current, []):
            if report not in found:
                found.add(report)
                stack.append(report)
    found.discard(manager_id)
    return found
