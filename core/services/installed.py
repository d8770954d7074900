"""Product catalogue, installed base and warranty look-ups."""

from __future__ import annotations

import time
from collections import OrderedDict

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, customer_scope, require_role
from core.clock import Clock
from core.db.models import Customer, InstalledProduct, Product
from core.domain.enums import Role
from core.domain.events import InstalledProductRegistered
from core.domain.warranty import WarrantyStatus, next_maintenance, warranty_end
from core.errors import Conflict, NotFound
from core.schemas import InstalledProductIn, InstalledProductOut, Page, ProductIn, ProductOut, WarrantyOut
from core.services.base import Service, UowFactory, customer_by_code, fetch_page


def normalise_serial(serial: str) -> str:
    """Serials are matched case-insensitively and without surrounding blanks."""
    return serial.strip().upper()


# The catalogue is public and changes rarely, yet the chat reads it on most customer messages (the words
# for kinds of appliance): kept this long per process, and dropped at once by this service's own writes.
CATALOGUE_CACHE_SECONDS = 60.0
# A customer's own units are read by the chat on most of their messages (to know which appliance they
# mean). Kept this long per process, dropped at once by this service's writes; a unit written by another
# process or an import shows within this time, and the chat reads afresh before it calls a unit unknown.
OWN_UNITS_CACHE_SECONDS = 30.0
OWN_UNITS_CACHED_CUSTOMERS = 10_000
# Enough for any household or shop; a chain with thousands of units names them by serial (looked up).
OWN_UNITS_KEPT = 200


class InstalledBaseService(Service):
    """Catalogue models and the units customers own."""

    _catalogue: tuple[float, list[ProductOut]] | None = None

    def __init__(self, uow: UowFactory, clock: Clock, timezone: str = "UTC") -> None:
        super().__init__(uow, clock, timezone)
        self._own_units: OrderedDict[int, tuple[float, list[InstalledProductOut]]] = OrderedDict()

    def invalidate(self) -> None:
        """Forget the cached catalogue and units (after an import wrote to them in this process)."""
        self._catalogue = None
        self._own_units.clear()

    async def upsert_product(self, actor: Actor, data: ProductIn) -> ProductOut:
        """Create or update a catalogue model by code."""
        require_role(actor, Role.MANAGER, doing="change the product catalogue")
        async with self._uow() as uow:
            product = (
                await uow.session.execute(select(Product).where(Product.code == data.code))
            ).scalar_one_or_none()
            if product is None:
                product = Product(code=data.code)
                uow.session.add(product)
            product.name, product.category = data.name, data.category
            product.default_warranty_months = data.default_warranty_months
            product.maintenance_interval_months = data.maintenance_interval_months
            await uow.session.flush()
            await uow.commit()
            self._catalogue = None
            return ProductOut.model_validate(product)

    async def products(self, actor: Actor) -> list[ProductOut]:
        """The whole catalogue (public information; read at most once a minute)."""
        cached = self._catalogue
        if cached is not None and time.monotonic() - cached[0] < CATALOGUE_CACHE_SECONDS:
            return list(cached[1])
        async with self._uow() as uow:
            rows = (await uow.session.execute(select(Product).order_by(Product.code))).scalars()
            catalogue = [ProductOut.model_validate(product) for product in rows]
        self._catalogue = (time.monotonic(), catalogue)
        return list(catalogue)

    async def register(self, actor: Actor, data: InstalledProductIn) -> InstalledProductOut:
        """Record a delivered unit (the ERP posts here); an unknown product code is added to the catalogue
        when a name is given. The serial must be new."""
        require_role(actor, Role.MANAGER, Role.AGENT, doing="register installed products")
        serial = normalise_serial(data.serial_number)
        async with self._uow() as uow:
            session = uow.session
            if (
                await session.execute(
                    select(InstalledProduct.id).where(InstalledProduct.serial_number == serial)
                )
            ).first():
                raise Conflict(f"Serial number {serial} is already registered.", field="serial_number")
            customer = await customer_by_code(session, data.customer_code)
            product = (
                await session.execute(select(Product).where(Product.code == data.product_code))
            ).scalar_one_or_none()
            if product is None:
                if not data.product_name:
                    raise NotFound(
                        f"No product with code '{data.product_code}'; give product_name to add it.",
                        field="product_code",
                    )
                product = Product(
                    code=data.product_code, name=data.product_name, category="", default_warranty_months=12
                )
                session.add(product)
                await session.flush()
            months = (
                data.warranty_months if data.warranty_months is not None else product.default_warranty_months
            )
            unit = InstalledProduct(
                serial_number=serial,
                product_id=product.id,
                customer_id=customer.id,
                sold_on=data.sold_on,
                warranty_months=months,
                warranty_type=data.warranty_type.value,
                warranty_ends_on=warranty_end(data.sold_on, months),
                maintenance_interval_months=product.maintenance_interval_months,
                created_at=self._clock.now(),
            )
            session.add(unit)
            await session.flush()
            uow.emit(
                InstalledProductRegistered(
                    aggregate_id=unit.id,
                    actor_id=actor.user_id,
                    serial_number=serial,
                    customer_id=customer.id,
                    warranty_ends_on=unit.warranty_ends_on,
                )
            )
            await uow.commit()
            self._catalogue = None  # the unit may have added its model to the catalogue
            self._own_units.pop(customer.id, None)
            return self._out(unit, product, customer)

    async def get(self, actor: Actor, serial: str) -> InstalledProductOut:
        """One unit: customers only their own; staff any (the service desk looks up every serial)."""
        async with self._uow() as uow:
            unit, product, customer = await self.find(uow.session, actor, serial)
            return self._out(unit, product, customer)

    async def warranty(self, actor: Actor, serial: str) -> WarrantyOut:
        """Warranty status of a unit, in the contract shape."""
        async with self._uow() as uow:
            unit, product, customer = await self.find(uow.session, actor, serial)
            status = WarrantyStatus.on(unit.sold_on, unit.warranty_months, self.today())
            return WarrantyOut(
                serial_number=unit.serial_number,
                product=product.name,
                customer=customer.name,
                warranty_type=unit.warranty_type,
                starts_on=status.starts_on,
                ends_on=status.ends_on,
                in_warranty=status.in_warranty,
                days_left=status.days_left,
            )

    async def list(
        self, actor: Actor, *, customer_code: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[InstalledProductOut]:
        """Units of customers in scope."""
        conditions: list[ColumnElement[bool]] = [customer_scope(actor)]
        async with self._uow() as uow:
            session = uow.session
            if customer_code:
                conditions.append(Customer.code == customer_code)
            base = (
                select(InstalledProduct, Product, Customer)
                .join(Product, Product.id == InstalledProduct.product_id)
                .join(Customer, Customer.id == InstalledProduct.customer_id)
                .where(*conditions)
            )
            total, rows = await fetch_page(
                session, base.order_by(InstalledProduct.serial_number), limit=limit, offset=offset
            )
            return Page[InstalledProductOut](
                items=[self._out(unit, product, customer) for unit, product, customer in rows],
                total=total,
                limit=limit,
                offset=offset,
            )

    async def own_units(self, actor: Actor, *, fresh: bool = False) -> list[InstalledProductOut]:
        """A customer's own units by serial, the first OWN_UNITS_KEPT of them (staff own none); read at
        most every OWN_UNITS_CACHE_SECONDS unless `fresh`."""
        if not actor.is_customer or actor.customer_id is None:
            return []
        customer_id = actor.customer_id
        cached = self._own_units.get(customer_id)
        if not fresh and cached is not None and time.monotonic() - cached[0] < OWN_UNITS_CACHE_SECONDS:
            self._own_units.move_to_end(customer_id)
            return list(cached[1])
        async with self._uow() as uow:
            rows = (
                await uow.session.execute(
                    select(InstalledProduct, Product, Customer)
                    .join(Product, Product.id == InstalledProduct.product_id)
                    .join(Customer, Customer.id == InstalledProduct.customer_id)
                    .where(customer_scope(actor))
                    .order_by(InstalledProduct.serial_number)
                    .limit(OWN_UNITS_KEPT)
                )
            ).tuples()
            units = [self._out(unit, product, customer) for unit, product, customer in rows]
        self._own_units[customer_id] = (time.monotonic(), units)
        self._own_units.move_to_end(customer_id)
        if len(self._own_units) > OWN_UNITS_CACHED_CUSTOMERS:
            self._own_units.popitem(last=False)
        return list(units)

    async def find(
        self, session: AsyncSession, actor: Actor, serial: str
    ) -> tuple[InstalledProduct, Product, Customer]:
        """Load a unit the actor may see; another customer's serial looks exactly like an unknown one."""
        query = (
            select(InstalledProduct, Product, Customer)
            .join(Product, Product.id == InstalledProduct.product_id)
            .join(Customer, Customer.id == InstalledProduct.customer_id)
            .where(InstalledProduct.serial_number == normalise_serial(serial))
        )
        if not actor.is_staff:
            query = query.where(customer_scope(actor))
        row = (await session.execute(query)).tuples().first()
        if row is None:
            raise NotFound(
                f"No product with serial number '{serial.strip()[:64]}' found.", field="serial_number"
            )
        return row

    def _out(self, unit: InstalledProduct, product: Product, customer: Customer) -> InstalledProductOut:
        status = WarrantyStatus.on(unit.sold_on, unit.warranty_months, self.today())
        return InstalledProductOut(
            id=unit.id,
            serial_number=unit.serial_number,
            product_code=product.code,
            product_name=product.name,
            customer_code=customer.code,
            customer_name=customer.name,
            sold_on=unit.sold_on,
            warranty_months=unit.warranty_months,
            warranty_type=unit.warranty_type,
            warranty_ends_on=unit.warranty_ends_on,
            in_warranty=status.in_warranty,
            days_left=status.days_left,
            next_maintenance_on=next_maintenance(
                unit.sold_on, unit.last_maintenance_on, unit.maintenance_interval_months
            ),
        )
