"""Customers and their contacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from core.domain.enums import CustomerType, ValueTier
from core.schemas import (
    ContactIn,
    ContactOut,
    CustomerIn,
    CustomerOut,
    CustomerPatch,
    InstalledProductOut,
    Page,
)
from crmbot.api.deps import ActorDep, CodePath, CoreDep, PagingDep

router = APIRouter(tags=["customers"])

# Sub-resources are declared before `/customers/{code}` so a code can never swallow "/contacts".


@router.get("/customers/{code:path}/contacts")
async def list_contacts(code: CodePath, actor: ActorDep, core: CoreDep) -> list[ContactOut]:
    """Contacts of a customer."""
    return await core.customers.contacts(actor, code)


@router.post("/customers/{code:path}/contacts", status_code=201)
async def add_contact(code: CodePath, body: ContactIn, actor: ActorDep, core: CoreDep) -> ContactOut:
    """Add a contact to a customer."""
    return await core.customers.add_contact(actor, code, body)


@router.get("/customers/{code:path}/installed-products")
async def customer_installed_products(
    code: CodePath, actor: ActorDep, core: CoreDep, paging: PagingDep
) -> Page[InstalledProductOut]:
    """Units a customer owns (404 for a customer the caller may not see, not an empty page)."""
    customer = await core.customers.get(actor, code)
    return await core.installed.list(
        actor, customer_code=customer.code, limit=paging.limit, offset=paging.offset
    )


@router.get("/customers")
async def list_customers(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    q: Annotated[str | None, Query(max_length=100, description="Part of the name or code.")] = None,
    customer_type: Annotated[CustomerType | None, Query(alias="type")] = None,
    tier: ValueTier | None = None,
    owner: Annotated[str | None, Query(max_length=64, description="Owner's username.")] = None,
) -> Page[CustomerOut]:
    """Customers the caller may see, by name."""
    return await core.customers.list(
        actor, query=q, type=customer_type.value if customer_type else None,
        tier=tier.value if tier else None, owner=owner, limit=paging.limit, offset=paging.offset,
    )


@router.post("/customers", status_code=201)
async def create_customer(body: CustomerIn, actor: ActorDep, core: CoreDep) -> CustomerOut:
    """Create a customer."""
    return await core.customers.create(actor, body)


@router.get("/customers/{code:path}")
async def get_customer(code: CodePath, actor: ActorDep, core: CoreDep) -> CustomerOut:
    """One customer."""
    return await core.customers.get(actor, code)


@router.patch("/customers/{code:path}")
async def update_customer(code: CodePath, body: CustomerPatch, actor: ActorDep, core: CoreDep) -> CustomerOut:
    """Change a customer's fields (only those sent)."""
    return await core.customers.update(actor, code, body)
