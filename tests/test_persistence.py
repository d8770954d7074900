"""Persistence on the real backend: migrations match the models, the unit of work is atomic,
types round-trip exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.container import Core
from core.db.migrate import current_revision, head_revision
from core.db.models import Base, Customer, OutboxEvent, Part, PartStock, ServiceStation
from core.domain.events import CustomerCreated
from core.errors import ValidationFailed


def _schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_build_exactly_the_models_schema(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()
    async with engine.connect() as connection:
        assert await connection.run_sync(_schema_diff) == []


def _customer(code: str, now: datetime) -> Customer:
    return Customer(
        code=code,
        name=code,
        type="end",
        segment="",
        lifecycle_stage="new",
        address="",
        value_score=0.0,
        tier="regular",
        created_at=now,
        updated_at=now,
    )


async def test_commit_writes_the_change_and_its_events_together(core: Core) -> None:
    now = core.clock.now()
    async with core.uow() as uow:
        customer = _customer("C1", now)
        uow.session.add(customer)
        await uow.session.flush()
        uow.emit(CustomerCreated(aggregate_id=customer.id, code="C1"))
        await uow.commit()
    async with core.uow() as uow:
        event = (await uow.session.execute(select(OutboxEvent))).scalar_one()
        assert (event.event_type, event.aggregate, event.payload["code"]) == (
            "CustomerCreated",
            "customer",
            "C1",
        )
        assert event.processed_at is None and event.occurred_at == now


async def test_leaving_without_commit_or_on_error_writes_nothing(core: Core) -> None:
    now = core.clock.now()
    async with core.uow() as uow:
        uow.session.add(_customer("C2", now))
        await uow.session.flush()
        uow.emit(CustomerCreated(aggregate_id=1, code="C2"))
    with pytest.raises(ValidationFailed):
        async with core.uow() as uow:
            uow.session.add(_customer("C3", now))
            await uow.session.flush()
            uow.emit(CustomerCreated(aggregate_id=2, code="C3"))
            raise ValidationFailed("boom")
    async with core.uow() as uow:
        assert (await uow.session.execute(select(func.count()).select_from(Customer))).scalar_one() == 0
        assert (await uow.session.execute(select(func.count()).select_from(OutboxEvent))).scalar_one() == 0


async def test_a_failed_constraint_rolls_back_the_whole_unit(core: Core) -> None:
    now = core.clock.now()
    with pytest.raises(IntegrityError):
        async with core.uow() as uow:
            uow.session.add(_customer("DUP", now))
            uow.session.add(_customer("DUP", now))
            await uow.commit()
    async with core.uow() as uow:
        station = ServiceStation(code="S", name="S", address="")
        part = Part(code="P", name="P", unit_price=Decimal("1"))
        uow.session.add_all([station, part])
        await uow.session.flush()
        uow.session.add(PartStock(station_id=station.id, part_id=part.id, quantity=-1, min_quantity=0))
        with pytest.raises(IntegrityError):  # stock can never go negative, whatever the code does
            await uow.commit()
    async with core.uow() as uow:
        assert (await uow.session.execute(select(func.count()).select_from(Customer))).scalar_one() == 0


async def test_nested_units_of_work_fail_fast(core: Core) -> None:
    async with core.uow():
        with pytest.raises(RuntimeError, match="inside another"):
            async with core.uow():
                pass


async def test_datetimes_come_back_aware_utc_and_money_exact(core: Core) -> None:
    shanghai = timezone(timedelta(hours=8))
    local = datetime(2026, 3, 1, 9, 30, tzinfo=shanghai)
    async with core.uow() as uow:
        customer = _customer("T", local)
        part = Part(code="P1", name="P", unit_price=Decimal("0.1") + Decimal("0.2"))
        uow.session.add_all([customer, part])
        await uow.commit()
    async with core.uow() as uow:
        stored = (await uow.session.execute(select(Customer).where(Customer.code == "T"))).scalar_one()
        assert stored.created_at == local and stored.created_at.tzinfo is not None
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.created_at == datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
        price = (await uow.session.execute(select(Part.unit_price).where(Part.code == "P1"))).scalar_one()
        assert price == Decimal("0.30")
        with pytest.raises(Exception, match="naive"):
            uow.session.add(_customer("N", datetime(2026, 1, 1)))
            await uow.session.flush()


async def test_dates_are_plain_dates(core: Core) -> None:
    from core.db.models import InstalledProduct, Product

    async with core.uow() as uow:
        product = Product(code="X", name="X", category="", default_warranty_months=12)
        customer = _customer("D", core.clock.now())
        uow.session.add_all([product, customer])
        await uow.session.flush()
        uow.session.add(
            InstalledProduct(
                serial_number="S1",
                product_id=product.id,
                customer_id=customer.id,
                sold_on=date(2024, 2, 29),
                warranty_months=12,
                warranty_type="standard",
                warranty_ends_on=date(2025, 2, 28),
                created_at=core.clock.now(),
            )
        )
        await uow.commit()
    async with core.uow() as uow:
        sold_on = (await uow.session.execute(select(InstalledProduct.sold_on))).scalar_one()
        assert sold_on == date(2024, 2, 29)
