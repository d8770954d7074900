"""The demo dataset: complete, bilingual, relative to the clock, idempotent and safe after a crash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import (
    Base,
    Contact,
    Customer,
    DemoMarker,
    InstalledProduct,
    KbArticle,
    Opportunity,
    OutboxEvent,
    Part,
    PartStock,
    RepairOrder,
    RepairPart,
    ServiceRequest,
    ServiceStation,
    Survey,
    Task,
    User,
    Visit,
)
from core.demo import _STOCK, load_demo
from core.domain.enums import OpportunityStage, RequestKind, RequestStatus, Severity
from core.domain.warranty import WarrantyStatus
from core.errors import NotFound
from core.kb_index import extract_error_codes
from core.services.installed import InstalledBaseService
from core.services.sales import SalesService
from tests.conftest import wipe

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def table_counts(core: Core) -> dict[str, int]:
    """Rows in every table of the schema."""
    async with core.uow() as uow:
        return {
            table.name: (await uow.session.execute(select(func.count()).select_from(table))).scalar_one()
            for table in Base.metadata.sorted_tables
        }


async def fingerprint(core: Core) -> dict[str, list[tuple[Any, ...]]]:
    """The dataset by natural keys and values (no surrogate ids), to compare two loads."""
    async with core.uow() as uow:
        session = uow.session

        async def rows(query: Any) -> list[tuple[Any, ...]]:
            return sorted((tuple(row) for row in (await session.execute(query)).all()), key=repr)

        return {
            "customers": await rows(select(Customer.code, Customer.name, Customer.type,
                                           Customer.lifecycle_stage, Customer.tier, User.username)
                                    .join(User, User.id == Customer.owner_id)),
            "contacts": await rows(select(Customer.code, Contact.name, Contact.email, Contact.lang)
                                   .join(Customer, Customer.id == Contact.customer_id)),
            "users": await rows(select(User.username, User.role, User.email, User.lang)),
            "units": await rows(select(InstalledProduct.serial_number, InstalledProduct.sold_on,
                                       InstalledProduct.warranty_months, InstalledProduct.warranty_type,
                                       InstalledProduct.last_maintenance_on, InstalledProduct.created_at)),
            "requests": await rows(select(Customer.code, ServiceRequest.subject, ServiceRequest.status,
                                          ServiceRequest.created_at, ServiceRequest.updated_at)
                                   .join(Customer, Customer.id == ServiceRequest.customer_id)),
            "repairs": await rows(select(ServiceRequest.subject, RepairOrder.status, RepairOrder.total_charge,
                                         RepairOrder.scheduled_at)
                                  .join(ServiceRequest, ServiceRequest.id == RepairOrder.service_request_id)),
            "deals": await rows(select(Customer.code, Opportunity.name, Opportunity.stage, Opportunity.amount,
                                       Opportunity.expected_close, Opportunity.closed_at)
                                .join(Customer, Customer.id == Opportunity.customer_id)),
            "visits": await rows(select(Customer.code, Visit.visited_on, Visit.summary)
                                 .join(Customer, Customer.id == Visit.customer_id)),
            "tasks": await rows(select(Task.title, Task.status, Task.due_at)),
            "surveys": await rows(select(Survey.status, Survey.score, Survey.answered_at)),
            "stock": await rows(select(ServiceStation.code, Part.code, PartStock.quantity,
                                       PartStock.min_quantity)
                                .join(ServiceStation, ServiceStation.id == PartStock.station_id)
                                .join(Part, Part.id == PartStock.part_id)),
            "kb": await rows(select(KbArticle.code, KbArticle.lang, KbArticle.title)),
        }


async def scalars(session: AsyncSession, query: Any) -> list[Any]:
    """All first-column values of a query."""
    return list((await session.execute(query)).scalars().all())


async def test_demo_contents(core: Core, clock: FrozenClock) -> None:
    report = await load_demo(core)
    assert report.already_loaded is False
    assert report.seconds > 0  # reported to the person; its speed is no test's business (machines differ)
    counts = await table_counts(core)
    assert report.counts["customers"] == counts["customers"] == 72
    assert report.counts["kb_articles"] == counts["kb_articles"] == 44
    assert report.counts["service_requests"] == counts["service_requests"] == 41
    assert report.counts["opportunities"] == counts["opportunities"] == 40
    assert report.counts["visits"] == counts["visits"] == 40
    assert report.counts["installed_products"] == counts["installed_products"] == 148
    assert report.counts["contacts"] == counts["contacts"]
    assert report.counts["staff"] == 18 and report.counts["customer_users"] == 13
    today = clock.now().astimezone(SHANGHAI).date()

    async with core.uow() as uow:
        session = uow.session
        by_type = dict((await session.execute(
            select(Customer.type, func.count()).group_by(Customer.type))).tuples().all())
        assert by_type == {"end": 24, "intermediate": 24, "public": 24}
        names = set(await scalars(session, select(Customer.name)))
        assert {"王芳", "Oliver Smith", "Acme Appliances Ltd", "上海家电城", "Beijing No. 4 Middle School",
                "仁济医院"} <= names
        emails = [*await scalars(session, select(Customer.email)),
                  *await scalars(session, select(Contact.email)),
                  *await scalars(session, select(User.email))]
        assert all(e.endswith(("example.com", "example.cn")) for e in emails if e)
        assert set(await scalars(session, select(Contact.lang))) == {"en", "zh"}
        per_customer = list((await session.execute(
            select(func.count()).select_from(Contact).group_by(Contact.customer_id))).scalars())
        assert len(per_customer) == 72 and min(per_customer) >= 1 and max(per_customer) <= 3
        owners = set(await scalars(session, select(User.username)
                                   .join(Customer, Customer.owner_id == User.id)))
        assert {"li.lei", "wu.hao", "emily.chen", "xu.ming", "gao.yan", "james.wood"} <= owners

        # staff: Shanghai time, some Chinese-speaking, technicians at stations
        staff = (await session.execute(select(User).where(User.role != "customer"))).scalars().all()
        assert {user.timezone for user in staff} == {"Asia/Shanghai"}
        assert {user.lang for user in staff} == {"en", "zh"}
        roles = sorted(user.role for user in staff)
        assert roles.count("technician") == 4 and roles.count("rep") == 6 and roles.count("agent") == 2
        assert all(user.station_id is not None for user in staff if user.role == "technician")

        # service: every status, both kinds, every severity; repairs priced by warranty; surveys answered
        statuses = dict((await session.execute(
            select(ServiceRequest.status, func.count()).group_by(ServiceRequest.status))).tuples().all())
        assert set(statuses) == {status.value for status in RequestStatus}
        assert statuses == {"new": 5, "assigned": 6, "in_progress": 6, "on_hold": 4, "escalated": 4,
                            "resolved": 6, "closed": 10}
        pairs = set((await session.execute(
            select(ServiceRequest.kind, ServiceRequest.severity))).tuples().all())
        assert pairs == {(kind.value, severity.value) for kind in RequestKind for severity in Severity}
        created = await scalars(session, select(ServiceRequest.created_at))
        assert min(created) >= clock.now() - timedelta(days=90) and max(created) < clock.now()
        assert max(created) - min(created) > timedelta(days=60)
        repair_statuses = set(await scalars(session, select(RepairOrder.status)))
        assert repair_statuses == {"dispatched", "accepted", "in_progress", "completed", "settled",
                                   "cancelled", "open"}
        completed = (await session.execute(
            select(RepairOrder).where(RepairOrder.completed_at.is_not(None)))).scalars().all()
        assert any(order.in_warranty for order in completed)
        assert all(order.total_charge == 0 for order in completed if order.in_warranty)
        charged = [order for order in completed if not order.in_warranty]
        assert charged
        assert all(order.total_charge == order.parts_charge + order.labour_charge > 0 for order in charged)
        assert any(order.parts_charge > 0 for order in charged)
        scores = sorted(await scalars(session, select(Survey.score).where(Survey.status == "answered")))
        assert scores == [1, 2, 3, 4, 4, 5, 5]
        assert len(await scalars(session, select(Survey.id).where(Survey.status == "pending"))) == 3
        below_minimum = (await session.execute(
            select(ServiceStation.code, Part.code).join(PartStock, PartStock.station_id == ServiceStation.id)
            .join(Part, Part.id == PartStock.part_id).where(PartStock.quantity < PartStock.min_quantity)
        )).tuples().all()
        assert below_minimum == [("ST-BJ", "P-170")]
        # Parts used on jobs came out of their station's stock: counted level minus what was used.
        used: dict[tuple[str, str], int] = {}
        for station, part, quantity in (await session.execute(
            select(ServiceStation.code, Part.code, RepairPart.quantity)
            .join(RepairOrder, RepairOrder.id == RepairPart.repair_order_id)
            .join(ServiceStation, ServiceStation.id == RepairOrder.station_id)
            .join(Part, Part.id == RepairPart.part_id)
        )).tuples():
            used[(station, part)] = used.get((station, part), 0) + quantity
        assert sum(used.values()) >= 4
        levels = (await session.execute(
            select(ServiceStation.code, Part.code, PartStock.quantity)
            .join(ServiceStation, ServiceStation.id == PartStock.station_id)
            .join(Part, Part.id == PartStock.part_id)
        )).tuples().all()
        assert len(levels) == 20
        for station, part, quantity in levels:
            assert quantity == _STOCK[station][part][0] - used.get((station, part), 0), (station, part)

        # sales: every stage, lost deals explain themselves, CNY, close dates this or next quarter
        stages = dict((await session.execute(
            select(Opportunity.stage, func.count()).group_by(Opportunity.stage))).tuples().all())
        assert set(stages) == {stage.value for stage in OpportunityStage}
        lost = (await session.execute(
            select(Opportunity).where(Opportunity.stage == "closed_lost"))).scalars().all()
        assert lost and all(deal.lost_reason and deal.competitor for deal in lost)
        deals = (await session.execute(select(Opportunity))).scalars().all()
        assert {deal.currency for deal in deals} == {"CNY"}
        quarter_start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        open_closes = [deal.expected_close for deal in deals if not deal.stage.startswith("closed")]
        assert all(close is not None and today < close <= quarter_start + timedelta(days=190)
                   for close in open_closes)
        visited = await scalars(session, select(Visit.visited_on))
        assert min(visited) >= today - timedelta(days=60) and max(visited) <= today

        # only what happens "now" (the fresh job for zhang.wei) waits for the notifier
        pending = (await session.execute(
            select(OutboxEvent.event_type, OutboxEvent.occurred_at).where(OutboxEvent.processed_at.is_(None))
        )).tuples().all()
        assert sorted(pending) == [("RepairDispatched", clock.now()), ("ServiceRequestAssigned", clock.now())]
        assert (await session.get(DemoMarker, "demo")) is not None

    # installed base relative to the clock
    units = (await core.installed.list(SYSTEM, limit=500)).items
    assert len(units) == 148
    ending = [unit.days_left for unit in units if unit.in_warranty]
    assert any(days <= 7 for days in ending)
    assert any(7 < days <= 30 for days in ending)
    assert any(days > 30 for days in ending)
    assert sum(not unit.in_warranty for unit in units) >= 20
    assert {unit.warranty_type for unit in units} == {"standard", "extended"}
    assert any(unit.serial_number.startswith("WM2023-") for unit in units)

    # the personas and the README's serials
    fang = await core.org.actor_for_username("wang.fang")
    assert (await core.org.actor_for_identity("rest", "demo-customer")) == fang
    assert (await core.org.actor_for_identity("web", "demo-customer")) == fang
    assert (await core.org.actor_for_identity("terminal", "demo-customer")) == fang
    washer = await core.installed.warranty(fang, "WM2023-00917")
    assert (washer.customer, washer.in_warranty) == ("王芳", True)
    assert washer.product.startswith("WM-2023") and washer.days_left > 30
    dishwasher = await core.installed.warranty(fang, "AB12345")
    assert (dishwasher.customer, dishwasher.in_warranty, dishwasher.days_left) == ("王芳", False, 0)
    assert dishwasher.ends_on < today
    mine = {unit.serial_number for unit in (await core.installed.list(fang)).items}
    assert {"WM2023-00917", "AB12345"} <= mine
    oliver = await core.org.actor_for_username("oliver.smith")
    assert oliver.lang == "en" and fang.lang == "zh"
    with pytest.raises(NotFound):
        await core.installed.warranty(oliver, "WM2023-00917")
    persona_roles = {username: role for username, role, _hint in report.personas}
    assert persona_roles == {"wang.fang": "customer", "oliver.smith": "customer", "li.lei": "rep",
                     "zhang.wei": "technician", "chen.jing": "manager", "sun.li": "manager",
                     "liu.yang": "agent", "admin": "admin"}
    for username, role in persona_roles.items():
        assert (await core.org.actor_for_username(username)).role.value == role

    # wang.fang's history: AB12345 repaired out of warranty, settled and rated
    history = (await core.service_desk.list_requests(fang)).items
    assert [(r.serial_number, r.status) for r in history] == [("AB12345", "closed")]
    detail = await core.service_desk.get_request(fang, history[0].ref)
    assert [step.action for step in detail.history] == ["open", "assign", "start", "resolve", "close"]
    order = await core.service_desk.get_repair_order(SYSTEM, detail.repair_orders[0])
    assert (order.status, order.in_warranty, order.total_charge) == ("settled", False, Decimal("410.00"))

    # J7: zhang.wei has a job waiting for accept, one accepted for today and one under way
    tech = await core.org.actor_for_username("zhang.wei")
    jobs = (await core.service_desk.list_repair_orders(tech, active_only=True)).items
    assert "dispatched" in {job.status for job in jobs}
    assert any(job.status == "accepted" and job.scheduled_at is not None
               and job.scheduled_at.astimezone(SHANGHAI).date() == today for job in jobs)
    assert any(job.status == "in_progress" for job in jobs)

    # J5/J6: li.lei owns Acme with its renewal at proposal, a follow-up due today and one overdue
    rep = await core.org.actor_for_username("li.lei")
    renewal = (await core.sales.list_opportunities(rep, customer_code="CUS-0025")).items
    assert [(deal.name, deal.stage, deal.amount) for deal in renewal if "renewal" in deal.name] == [
        ("Acme Appliances renewal 2026", "proposal", Decimal("42000.00"))]
    tasks = await core.sales.tasks(rep)
    end_of_today = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=SHANGHAI)
    assert any(t.title == "Send the renewal quote to Acme" and t.due_at is not None
               and clock.now() <= t.due_at < end_of_today for t in tasks)
    assert any(t.due_at is not None and t.due_at < clock.now() for t in tasks)

    # J8: the sales director sees every rep's pipeline
    director = await core.org.actor_for_username("chen.jing")
    assert (await core.sales.list_opportunities(director, limit=100)).total == 40


async def test_second_load_changes_nothing(core: Core) -> None:
    first = await load_demo(core)
    before = await table_counts(core)
    snapshot = await fingerprint(core)
    second = await load_demo(core)
    assert first.already_loaded is False and second.already_loaded is True
    assert second.counts == first.counts
    assert await table_counts(core) == before
    assert await fingerprint(core) == snapshot
    assert second.personas == first.personas


async def test_kb_is_bilingual_and_searchable(core: Core) -> None:
    await load_demo(core)
    articles = (await core.knowledge.list(SYSTEM, limit=100)).items
    by_lang = {lang: [a for a in articles if a.lang == lang] for lang in ("en", "zh")}
    assert len(by_lang["en"]) == 26 and len(by_lang["zh"]) == 18
    for lang, group in by_lang.items():
        with_codes = [a for a in group if extract_error_codes(f"{a.title} {a.symptoms}")]
        assert len(with_codes) >= 8, lang
    categories = {a.category for a in articles}
    assert categories >= {"washing_machine/leaks", "dishwasher/errors", "air_conditioner/cooling"}
    assert all(a.symptoms and a.solution for a in articles)

    hits = await core.knowledge.search(SYSTEM, "error E13 dishwasher")
    assert hits[0].code == "KB-DW-E13" and hits[0].lang == "en"
    hits = await core.knowledge.search(SYSTEM, "洗衣机漏水")
    top3 = hits[:3]
    assert any(hit.lang == "zh" for hit in top3)
    assert top3[0].code == "KB-WM-LEAK-ZH"
    hits = await core.knowledge.search(SYSTEM, "washing machine shows E21")
    assert hits[0].code == "KB-WM-E21"


async def test_dates_follow_the_clock(core: Core, clock: FrozenClock) -> None:
    """Loaded at another moment, "near warranty end" is still near and history is still recent."""
    clock.set(datetime(2029, 11, 30, 23, 40, tzinfo=SHANGHAI))
    await load_demo(core)
    today = clock.now().astimezone(SHANGHAI).date()
    fang = await core.org.actor_for_username("wang.fang")
    assert (await core.installed.warranty(fang, "WM2023-00917")).days_left == 483
    assert (await core.installed.warranty(fang, "RF24317")).days_left == 6
    assert (await core.installed.warranty(fang, "AC23088")).days_left == 22
    assert (await core.installed.warranty(fang, "AB12345")).ends_on == today - timedelta(days=120)
    async with core.uow() as uow:
        session = uow.session
        created = await scalars(session, select(ServiceRequest.created_at))
        assert clock.now() - timedelta(days=90) <= min(created) and max(created) < clock.now()
        sold = await scalars(session, select(InstalledProduct))
        statuses = [WarrantyStatus.on(unit.sold_on, unit.warranty_months, today) for unit in sold]
        assert sum(s.in_warranty and s.days_left <= 7 for s in statuses) >= 3
        assert sum(not s.in_warranty for s in statuses) >= 20
        due = await scalars(session, select(Task.due_at).where(Task.status == "open"))
        local_days = {moment.astimezone(SHANGHAI).date() for moment in due}
        assert today in local_days
        assert any(day < today for day in local_days)


async def test_recovers_from_partial_runs(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load that died half-way is finished by the next one, ending exactly like a clean load."""
    await load_demo(core)
    clean_counts, clean = await table_counts(core), await fingerprint(core)
    await wipe(core.engine)

    def fail_after(calls: int, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        seen = 0

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            nonlocal seen
            seen += 1
            if seen > calls:
                raise RuntimeError("simulated crash")
            return await original(*args, **kwargs)

        return flaky

    # First crash while registering the installed base, second while logging visits.
    monkeypatch.setattr(InstalledBaseService, "register", fail_after(60, InstalledBaseService.register))
    with pytest.raises(RuntimeError, match="simulated crash"):
        await load_demo(core)
    monkeypatch.undo()
    monkeypatch.setattr(SalesService, "log_visit", fail_after(12, SalesService.log_visit))
    with pytest.raises(RuntimeError, match="simulated crash"):
        await load_demo(core)
    monkeypatch.undo()
    async with core.uow() as uow:
        assert (await uow.session.get(DemoMarker, "demo")) is None
        assert (await uow.session.execute(select(func.count()).select_from(Visit))).scalar_one() == 12
        # the crashed attempts' history is not yet settled: the finishing run must do it
        assert (await uow.session.execute(select(func.count()).select_from(OutboxEvent)
                                          .where(OutboxEvent.processed_at.is_(None)))).scalar_one() > 2

    report = await load_demo(core)
    assert report.already_loaded is False
    assert await table_counts(core) == clean_counts
    assert await fingerprint(core) == clean
    async with core.uow() as uow:
        pending = (await uow.session.execute(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.processed_at.is_(None)))).scalar_one()
    assert pending == 2
    assert (await load_demo(core)).already_loaded is True


def test_report_is_frozen() -> None:
    from dataclasses import FrozenInstanceError

    from core.demo import DemoReport

    report = DemoReport(already_loaded=True)
    with pytest.raises(FrozenInstanceError):
        report.already_loaded = False  # type: ignore[misc]
