"""Product catalogue, installed base (the ERP posts deliveries here) and warranty look-ups."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from core.schemas import InstalledProductIn, InstalledProductOut, Page, ProductIn, ProductOut, WarrantyOut
from crmbot.api.deps import ActorDep, CodePath, CoreDep, PagingDep

router = APIRouter()


@router.get("/products", tags=["products"])
async def list_products(actor: ActorDep, core: CoreDep) -> list[ProductOut]:
    """The product catalogue."""
    return await core.installed.products(actor)


@router.post("/products", tags=["products"])
async def upsert_product(body: ProductIn, actor: ActorDep, core: CoreDep) -> ProductOut:
    """Create or update a catalogue model by code."""
    return await core.installed.upsert_product(actor, body)


@router.get("/installed-products", tags=["installed products"])
async def list_installed_products(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    customer: Annotated[str | None, Query(max_length=64, description="Customer code.")] = None,
) -> Page[InstalledProductOut]:
    """Units at customers the caller may see, by serial number."""
    return await core.installed.list(actor, customer_code=customer, limit=paging.limit, offset=paging.offset)


@router.post("/installed-products", status_code=201, tags=["installed products"])
async def register_installed_product(
    body: InstalledProductIn, actor: ActorDep, core: CoreDep
) -> InstalledProductOut:
    """Record a delivery: this serial is now at this customer (a serial already registered is a 409)."""
    return await core.installed.register(actor, body)


@router.get("/installed-products/{serial:path}", tags=["installed products"])
async def get_installed_product(serial: CodePath, actor: ActorDep, core: CoreDep) -> InstalledProductOut:
    """One unit with its warranty."""
    return await core.installed.get(actor, serial)


@router.get("/warranty/{serial:path}", tags=["installed products"])
async def warranty(serial: CodePath, actor: ActorDep, core: CoreDep) -> WarrantyOut:
    """Whether a unit is covered today, and until when."""
    return await core.installed.warranty(actor, serial)
