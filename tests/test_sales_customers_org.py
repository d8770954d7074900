"""Sales, customers and organisation services on the real database."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import Customer, Opportunity, OutboxEvent, Survey
from core.domain.enums import CustomerType, OpportunityStage, Role
from core.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from core.schemas import (
    CustomerIn,
    OpportunityIn,
    OpportunityPatch,
    ServiceRequestIn,
    TransitionIn,
    UserIn,
    VisitIn,
)
from tests.world import World


async def test_deal_changes_are_all_in_history(core: Core, world: World, clock: FrozenClock) -> None:
    deal = await core.sales.create_opportunity(
        world.rep_north,
        OpportunityIn(
            customer_code="ACME",
            name="Acme renewal",
            amount=Decimal("30000"),
            expected_close=date(2026, 6, 30),
        ),
    )
    assert (deal.stage, deal.probability) == ("qualification", 10)
    clock.advance(timedelta(hours=1))
    updated = await core.sales.update_opportunity(
        world.rep_north,
        deal.ref,
        OpportunityPatch(stage=OpportunityStage.NEGOTIATION, amount=Decimal("50000")),
    )
    assert (updated.stage, updated.amount, updated.probability) == ("negotiation", Decimal("50000.00"), 75)
    changes = [(change.field, change.old_value, change.new_value) for change in updated.history]
    assert changes == [
        ("created", None, "qualification 30000.00"),
        ("stage", "qualification", "negotiation"),
        ("amount", "30000.00", "50000.00"),
        ("probability", "10", "75"),
    ]
    assert all(change.actor == "rep.north" for change in updated.history)
    async with core.uow() as uow:
        names = (
            (await uow.session.execute(select(OutboxEvent.event_type).order_by(OutboxEvent.id)))
            .scalars()
            .all()
        )
    assert names[-2:] == ["OpportunityStageChanged", "OpportunityAmountChanged"]


async def test_lost_needs_a_reason_and_closed_deals_stay_closed(core: Core, world: World) -> None:
    deal = await core.sales.create_opportunity(
        world.rep_north, OpportunityIn(customer_code="ACME", name="Pumps", amount=Decimal("1000"))
    )
    with pytest.raises(ValidationFailed, match="reason"):
        await core.sales.update_opportunity(
            world.rep_north, deal.ref, OpportunityPatch(stage=OpportunityStage.CLOSED_LOST)
        )
    lost = await core.sales.update_opportunity(
        world.rep_north,
        deal.ref,
        OpportunityPatch(stage=OpportunityStage.CLOSED_LOST, lost_reason="price", competitor="Midea"),
    )
    assert (lost.stage, lost.probability, lost.lost_reason, lost.competitor) == (
        "closed_lost",
        0,
        "price",
        "Midea",
    )
    with pytest.raises(InvalidTransition):
        await core.sales.update_opportunity(world.rep_north, deal.ref, OpportunityPatch(amount=Decimal("5")))
    async with core.uow() as uow:
        row = await uow.session.get(Opportunity, deal.id)
        assert row is not None and row.closed_at is not None and row.amount == Decimal("1000.00")


async def test_visit_with_next_step_creates_a_follow_up_task(
    core: Core, world: World, clock: FrozenClock
) -> None:
    due = clock.now() + timedelta(days=4)
    visit = await core.sales.log_visit(
        world.rep_north,
        VisitIn(
            customer_code="ACME",
            visited_on=date(2026, 6, 15),
            contacts_met=["Li"],
            summary="discussed renewal",
            next_step="send quote",
            next_step_due=due,
        ),
    )
    assert visit.follow_up_task_id is not None
    tasks = await core.sales.tasks(world.rep_north)
    assert [(task.title, task.due_at, task.customer_code) for task in tasks] == [("send quote", due, "ACME")]
    assert [task.id for task in await core.sales.tasks(world.north_manager)] == [visit.follow_up_task_id]
    assert await core.sales.tasks(world.rep_south) == []
    with pytest.raises(ValidationFailed, match="future"):
        await core.sales.log_visit(
            world.rep_north, VisitIn(customer_code="ACME", visited_on=date(2026, 6, 20))
        )
    with pytest.raises(ValidationFailed, match="past"):
        await core.sales.log_visit(
            world.rep_north,
            VisitIn(
                customer_code="ACME",
                visited_on=date(2026, 6, 15),
                next_step="call",
                next_step_due=clock.now() - timedelta(days=1),
            ),
        )
    done = await core.sales.complete_task(world.rep_north, visit.follow_up_task_id)
    assert done.status == "done"
    with pytest.raises(InvalidTransition):
        await core.sales.complete_task(world.rep_north, visit.follow_up_task_id)


async def test_customer_codes_are_unique_and_owners_are_sales_people(core: Core, world: World) -> None:
    with pytest.raises(Conflict):
        await core.customers.create(SYSTEM, CustomerIn(code="ACME", name="Again", type=CustomerType.END))
    with pytest.raises(ValidationFailed, match="not a sales rep"):
        await core.customers.create(
            SYSTEM, CustomerIn(code="NEW", name="New", type=CustomerType.END, owner="tech.north")
        )
    with pytest.raises(NotFound):
        await core.customers.create(
            SYSTEM, CustomerIn(code="NEW", name="New", type=CustomerType.END, owner="ghost")
        )
    mine = await core.customers.create(
        world.rep_south, CustomerIn(code="NEW", name="New Co", type=CustomerType.PUBLIC)
    )
    assert mine.owner == "rep.south"


async def test_value_model_recompute_tiers_and_emits_moves(core: Core, world: World) -> None:
    for index in range(10):
        await core.customers.create(
            SYSTEM,
            CustomerIn(code=f"C{index}", name=f"Customer {index}", type=CustomerType.END, owner="rep.north"),
        )
    deal = await core.sales.create_opportunity(
        world.rep_north, OpportunityIn(customer_code="C9", name="Big", amount=Decimal("900000"))
    )
    await core.sales.update_opportunity(
        world.rep_north, deal.ref, OpportunityPatch(stage=OpportunityStage.CLOSED_WON)
    )
    counts = await core.customers.recompute_values(SYSTEM)
    assert sum(counts.values()) == 12
    top = await core.customers.get(SYSTEM, "C9")
    assert top.tier == "key" and top.value_score > 50
    async with core.uow() as uow:
        moves = (
            (
                await uow.session.execute(
                    select(OutboxEvent.payload).where(OutboxEvent.event_type == "CustomerTierChanged")
                )
            )
            .scalars()
            .all()
        )
        assert any(move["new_tier"] == "key" for move in moves)
        assert (
            await uow.session.execute(select(Customer.tier).where(Customer.code == "C9"))
        ).scalar_one() == "key"
    with pytest.raises(PermissionDenied):
        await core.customers.recompute_values(world.rep_north)


async def test_identities_tokens_and_users(core: Core, world: World) -> None:
    with pytest.raises(Conflict):
        await core.org.add_user(SYSTEM, UserIn(username="dup", role=Role.REP, identities=["rest:acme-buyer"]))
    assert await core.org.actor_for_identity("rest", "dup") is None
    with pytest.raises(ValidationFailed, match="CHANNEL:ID"):
        await core.org.add_user(SYSTEM, UserIn(username="bad", role=Role.REP, identities=["nochannel"]))
    with pytest.raises(ValidationFailed, match="needs --customer"):
        await core.org.add_user(SYSTEM, UserIn(username="cust", role=Role.CUSTOMER))
    buyer = await core.org.actor_for_identity("rest", "acme-buyer")
    assert (
        buyer is not None
        and buyer.username == "acme.buyer"
        and buyer.customer_id == world.acme_customer.customer_id
    )
    token = await core.org.issue_api_token(SYSTEM, "rep.north")
    actor = await core.org.actor_for_token(token)
    assert actor is not None and actor.username == "rep.north"
    assert await core.org.actor_for_token(token + "x") is None
    with pytest.raises(PermissionDenied):
        await core.org.issue_api_token(world.rep_north, "admin")
    await core.org.link_identity(SYSTEM, "rep.north", "telegram:777")
    with pytest.raises(Conflict):
        await core.org.link_identity(SYSTEM, "rep.south", "telegram:777")


async def test_survey_once_per_case_and_rating_range(core: Core, world: World) -> None:
    request = await core.service_desk.open_request(world.acme_customer, ServiceRequestIn(subject="Fix"))
    with pytest.raises(InvalidTransition):
        await core.surveys.create_for_request(SYSTEM, request.ref)
    await core.service_desk.transition(
        world.agent, request.ref, TransitionIn(action="assign", assignee="agent")
    )
    await core.service_desk.transition(
        world.agent, request.ref, TransitionIn(action="resolve", resolution="done")
    )
    first = await core.surveys.create_for_request(SYSTEM, request.ref)
    again = await core.surveys.create_for_request(SYSTEM, request.ref)
    assert first.id == again.id
    with pytest.raises(ValidationFailed):
        await core.surveys.answer(world.acme_customer, request.ref, 7)
    with pytest.raises(NotFound):
        await core.surveys.answer(world.globex_customer, request.ref, 5)
    answered = await core.surveys.answer(world.acme_customer, request.ref, 4, "quick")
    assert (answered.status, answered.score, answered.comment) == ("answered", 4, "quick")
    with pytest.raises(Conflict):
        await core.surveys.answer(world.acme_customer, request.ref, 1)
    async with core.uow() as uow:
        assert (await uow.session.execute(select(Survey.score))).scalars().all() == [4]


async def test_a_follow_up_on_its_own_is_scoped_dated_and_only_for_sales(core: Core, world: World) -> None:
    due = core.clock.now() + timedelta(days=3)
    task = await core.sales.add_follow_up(world.rep_north, "ACME", "Visit Acme about the renewal", due)
    assert (task.kind, task.status, task.assignee, task.customer_code, task.due_at) == (
        "follow_up", "open", world.rep_north.username, "ACME", due)
    assert task.id in [item.id for item in await core.sales.tasks(world.rep_north)]
    with pytest.raises(NotFound):  # another rep's customer: as if it did not exist
        await core.sales.add_follow_up(world.rep_north, "GLOBEX", "Visit Globex", due)
    with pytest.raises(PermissionDenied):
        await core.sales.add_follow_up(world.acme_customer, "ACME", "Visit", due)
    with pytest.raises(ValidationFailed):
        await core.sales.add_follow_up(world.rep_north, "ACME", "Visit", core.clock.now() - timedelta(days=1))
    with pytest.raises(ValidationFailed):
        await core.sales.add_follow_up(world.rep_north, "ACME", "   ", due)
