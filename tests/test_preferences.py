"""Notification preferences from chat, EN and ZH: understood by the real NLU, confirmed before anything
changes, refused clearly when impossible — and then honoured by the notifier."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any, cast

import pytest
from sqlalchemy import select, update

from bot.assistant import Assistant, RateLimit
from bot.dialogue import State, Turn
from bot.intents.preferences import read_request
from bot.messages import IncomingMessage, Reply
from bot.nlu.embedded import EmbeddedNlu
from bot.nlu.types import Entity, ParseResult
from core.auth import SYSTEM, Actor
from core.container import Core
from core.db.models import Department, Notification, NotificationPreference, User
from core.domain.enums import Role
from core.errors import PermissionDenied, ValidationFailed
from core.schemas import ServiceRequestIn, TransitionIn
from core.services.preferences import MUTABLE_KINDS, ChannelNotLinked, UnknownChannel, UnknownKind
from notifier.dispatcher import Notifier
from notifier.types import Outgoing
from tests.chat import nlu_for
from tests.world import World

# The shipped training data of the intents these conversations use (a smaller model trains in a second).
INTENTS = frozenset(
    {
        "notification_settings",
        "affirm",
        "deny",
        "cancel",
        "greet",
        "out_of_scope",
        "rate_service",
        "human_handoff",
    }
)


@pytest.fixture(scope="module")
def nlu() -> EmbeddedNlu:
    return nlu_for(INTENTS)


class Person:
    """Someone talking to the real assistant on the REST channel."""

    def __init__(self, core: Core, nlu: EmbeddedNlu, sender: str) -> None:
        self.assistant = Assistant(core, nlu, rate_limit=RateLimit(burst=1000, per_second=1000))
        self.sender = sender

    async def say(self, text: str) -> Reply:
        replies = await self.assistant.handle(
            IncomingMessage(channel="rest", sender_id=self.sender, text=text)
        )
        assert replies, text
        return replies[-1]


async def preference(core: Core, username: str) -> NotificationPreference:
    async with core.uow() as uow:
        session = uow.session
        user_id = (await session.execute(select(User.id).where(User.username == username))).scalar_one()
        row = await session.get(NotificationPreference, user_id)
        assert row is not None  # every user has one from the start
        return row


async def untouched(core: Core, username: str) -> bool:
    row = await preference(core, username)
    return (row.muted_kinds, row.channel_order, row.quiet_from, row.quiet_to) == ([], [], None, None)


def choices(reply: Reply) -> list[tuple[str, str]]:
    return [(button.title, button.payload) for button in reply.buttons]


YES_NO = [("Yes", "/affirm"), ("No", "/deny")]


async def test_muting_in_english_is_confirmed_first_and_undone_by_unmute(
    core: Core, world: World, nlu: EmbeddedNlu
) -> None:
    buyer = Person(core, nlu, "acme-buyer")
    reply = await buyer.say("stop warranty reminders")
    assert reply.text == "Stop sending you warranty reminders?" and choices(reply) == YES_NO
    assert await untouched(core, "acme.buyer")  # nothing changes before the answer
    reply = await buyer.say("yes")
    assert reply.text.startswith("Done: no more warranty reminders.")
    row = await preference(core, "acme.buyer")
    assert row.muted_kinds == ["warranty_expiring"]

    reply = await buyer.say("don't send me surveys")
    assert reply.text == "Stop sending you satisfaction surveys?"
    assert (await buyer.say("no")).text == "OK, I haven't done it. Nothing was changed."
    row = await preference(core, "acme.buyer")
    assert row.muted_kinds == ["warranty_expiring"]

    assert (await buyer.say("stop warranty reminders")).text == (
        "You don't get warranty reminders already: they're muted."
    )
    # "reminders" are a customer's warranty and maintenance reminders; only the muted one comes back.
    reply = await buyer.say("unmute reminders")
    assert reply.text == "Send you warranty reminders again?"
    assert (await buyer.say("yes")).text == "Done: you'll get warranty reminders again."
    row = await preference(core, "acme.buyer")
    assert row.muted_kinds == []

    reply = await buyer.say("what notifications do I get?")
    assert reply.buttons == ()
    assert reply.text.splitlines() == [
        "Here's how I keep you posted:",
        "• Channels, in this order: email",
        "• Quiet hours: 21:00–08:00 (the company default), your local time: messages that can wait are held "
        "back until then",
        "• You get: status updates on your requests, satisfaction surveys, warranty reminders and "
        "maintenance reminders",
        "To change it, say for example “stop surveys”, “email me instead” or “no messages after 10pm”.",
    ]


async def test_a_kind_to_mute_is_asked_with_buttons_and_codes_cannot_be_muted(
    core: Core, world: World, nlu: EmbeddedNlu
) -> None:
    manager = Person(core, nlu, "north.manager")
    reply = await manager.say("mute notifications")
    assert reply.text == "Which messages should I stop?"
    assert [title for title, _payload in choices(reply)] == [
        "Follow-up reminders",
        "Alerts",
        "Morning digest",
    ]
    digest_button = choices(reply)[2][1]
    reply = await manager.say(digest_button)
    assert reply.text == "Stop sending you the morning digest?"
    await manager.say("yes")
    row = await preference(core, "north.manager")
    assert row.muted_kinds == ["digest"]
    reply = await manager.say('/notification_settings{"notification_kind":"link_code","op":"mute"}')
    assert reply.text == "One-time codes are always sent at once: they can't be muted."
    row = await preference(core, "north.manager")
    assert row.muted_kinds == ["digest"]


async def test_a_channel_must_reach_the_person_and_then_comes_first(
    core: Core, world: World, nlu: EmbeddedNlu
) -> None:
    rep = Person(core, nlu, "rep.north")
    reply = await rep.say("send me alerts on Slack")
    assert reply.text.startswith(
        "I can't reach you on Slack: no account or address is linked for it. I can reach you on email."
    )
    assert reply.buttons == () and await untouched(core, "rep.north")

    await core.org.link_identity(SYSTEM, "rep.north", "slack:U0REP")
    reply = await rep.say("send me alerts on Slack")
    assert reply.text.splitlines() == [
        "From now on, reach you on Slack first? Your other channels stay as a fallback.",
        "(I can't choose a channel for one kind of message only: this applies to all your messages.)",
    ]
    assert choices(reply) == YES_NO
    assert (await rep.say("yes")).text == "Done: I'll reach you on Slack first."
    row = await preference(core, "rep.north")
    assert row.channel_order == ["slack", "email"]

    assert (await rep.say("email me instead")).text.startswith("From now on, reach you on email first?")
    await rep.say("yes")
    row = await preference(core, "rep.north")
    assert row.channel_order == ["email", "slack"]
    reply = await rep.say("stop emailing me")
    assert reply.text == "From now on, reach you on Slack first, and on email only if that fails?"
    await rep.say("yes")
    row = await preference(core, "rep.north")
    assert row.channel_order == ["slack", "email"]
    reply = await rep.say('/notification_settings{"channel":"fax"}')
    assert reply.text.startswith("I can't reach you on fax")


async def test_quiet_hours_from_a_time_or_a_window(core: Core, world: World, nlu: EmbeddedNlu) -> None:
    rep = Person(core, nlu, "rep.north")
    reply = await rep.say("no messages after 10pm")
    assert reply.text == (
        "Hold back messages that can wait from 22:00 to 08:00 every day, your local time?\n"
        "One-time codes still come at once."
    )
    assert await untouched(core, "rep.north")
    assert (await rep.say("yes")).text.startswith("Done: from 22:00 to 08:00 (Asia/Shanghai)")
    row = await preference(core, "rep.north")
    assert (row.quiet_from, row.quiet_to) == (time(22), time(8))
    reply = await rep.say("don't message me between 11pm and 6:30am")
    assert reply.text.startswith("Hold back messages that can wait from 23:00 to 06:30")
    await rep.say("yes")
    row = await preference(core, "rep.north")
    assert (row.quiet_from, row.quiet_to) == (time(23), time(6, 30))


async def test_the_same_in_chinese(core: Core, world: World, nlu: EmbeddedNlu) -> None:
    buyer = Person(core, nlu, "acme-buyer")
    reply = await buyer.say("不要再发保修提醒")
    assert reply.text == "确定以后不再给您发送保修到期提醒吗？"
    assert choices(reply) == [("好的", "/affirm"), ("不用了", "/deny")]
    assert await untouched(core, "acme.buyer")
    assert (await buyer.say("好的")).text.startswith("好的，以后不再给您发送保修到期提醒。")
    row = await preference(core, "acme.buyer")
    assert row.muted_kinds == ["warranty_expiring"]

    reply = await buyer.say("提醒发到邮箱")
    assert reply.text.splitlines() == [
        "以后优先通过邮件联系您，可以吗？其他渠道仍作为备用。",
        "（目前无法只为某一类消息单独指定渠道，这项设置对您的所有消息都生效。）",
    ]
    await buyer.say("好的")
    row = await preference(core, "acme.buyer")
    assert row.channel_order == ["email"]

    reply = await buyer.say("晚上10点后别打扰我")
    assert reply.text.startswith("以后每天22:00到08:00（您的当地时间）暂缓发送不紧急的消息，可以吗？")
    assert (await buyer.say("不用了")).text == "好的，没有执行，也没有做任何修改。"
    row = await preference(core, "acme.buyer")
    assert row.quiet_from is None
    await buyer.say("晚上10点后别打扰我")
    await buyer.say("好的")
    row = await preference(core, "acme.buyer")
    assert (row.quiet_from, row.quiet_to) == (time(22), time(8))

    # No phone on file: SMS is never used anyway, and email already comes first.
    assert (await buyer.say("不要发短信给我了")).text == "现在已经是优先通过邮件联系您了。"
    summary = (await buyer.say("我现在会收到哪些通知")).text
    assert "• 已屏蔽：保修到期提醒" in summary and "22:00–08:00" in summary


async def test_the_notifier_honours_what_was_set_in_chat(core: Core, world: World, nlu: EmbeddedNlu) -> None:
    sent: dict[str, list[Outgoing]] = {"email": [], "telegram": []}

    class Recorder:
        def __init__(self, channel: str) -> None:
            self.channel = channel

        async def send(self, message: Outgoing) -> str:
            sent[self.channel].append(message)
            return f"{self.channel}-{len(sent[self.channel])}"

        async def close(self) -> None:
            pass

    notifier = Notifier(core, {name: Recorder(name) for name in sent})
    await core.org.link_identity(SYSTEM, "acme.buyer", "telegram:5001")
    ticket = (
        await core.service_desk.open_request(
            world.acme_customer, ServiceRequestIn(subject="Leaking", serial_number=world.acme_serial)
        )
    ).ref
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="assign", assignee="agent"))
    await notifier.run_once()
    statuses = await notifications(core, "request_status")
    assert [(row.channel, row.status) for row in statuses] == [("telegram", "sent")]  # chat comes first

    buyer = Person(core, nlu, "acme-buyer")
    await buyer.say("email me instead")
    await buyer.say("yes")
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="start"))
    await notifier.run_once()
    statuses = await notifications(core, "request_status")
    assert [(row.channel, row.status) for row in statuses][-1] == ("email", "sent")

    await buyer.say("turn off status updates")
    await buyer.say("yes")
    await core.service_desk.transition(world.agent, ticket, TransitionIn(action="hold"))
    await notifier.run_once()
    last = (await notifications(core, "request_status"))[-1]
    assert (last.status, last.channel, last.last_error) == ("skipped", "", "muted by the recipient")


async def notifications(core: Core, kind: str) -> list[Notification]:
    async with core.uow() as uow:
        rows = await uow.session.execute(
            select(Notification).where(Notification.kind == kind).order_by(Notification.id)
        )
        return list(rows.scalars())


async def test_the_service_validates_kinds_channels_and_hours(core: Core, world: World) -> None:
    service = core.preferences
    with pytest.raises(UnknownKind, match="always sent"):
        await service.mute(world.acme_customer, ["link_code"])
    with pytest.raises(UnknownKind, match="'newsletter'"):
        await service.mute(world.acme_customer, ["survey", "newsletter"])
    with pytest.raises(ValidationFailed):
        await service.unmute(world.acme_customer, [])
    with pytest.raises(UnknownChannel):
        await service.set_channel_order(world.acme_customer, ["pigeon"])
    with pytest.raises(ChannelNotLinked) as refused:
        await service.set_channel_order(world.acme_customer, ["email", "sms"])
    assert refused.value.channels == ["sms"] and refused.value.reachable == ["email"]
    with pytest.raises(ValidationFailed, match="22:00"):
        await service.set_quiet_hours(world.acme_customer, "25:00", "07:00")
    with pytest.raises(ValidationFailed, match="start and an end"):
        await service.set_quiet_hours(world.acme_customer, "22:00", None)
    with pytest.raises(PermissionDenied):
        await service.get(SYSTEM)
    assert await untouched(core, "acme.buyer")  # nothing half-written
    view = await service.mute(world.acme_customer, [*MUTABLE_KINDS])
    assert set(view.muted) == set(MUTABLE_KINDS) and view.receiving == ()
    view = await service.set_quiet_hours(world.acme_customer, "00:00", "00:00")
    assert (view.quiet_hours, view.quiet_default) == ("", False)  # the same time twice: never quiet
    view = await service.set_quiet_hours(world.acme_customer, None, None)
    assert (view.quiet_hours, view.quiet_default, view.timezone) == ("21:00-08:00", True, "Asia/Shanghai")
    # Quiet hours count in the person's timezone: their own, else their department's.
    async with core.uow() as uow:
        await uow.session.execute(
            update(Department).where(Department.code == "NORTH").values(timezone="Europe/Berlin")
        )
        await uow.commit()
    assert (await service.get(world.rep_north)).timezone == "Europe/Berlin"


def test_reading_requests_without_the_model() -> None:
    """The words around the entities decide what is asked (the model only finds the intent and entities)."""

    def plan(text: str, *entities: tuple[str, str, str]) -> dict[str, Any]:
        found = tuple(
            Entity(name, value, text.index(surface), text.index(surface) + len(surface))
            for name, value, surface in entities
        )
        parse = ParseResult(text=text, intent="notification_settings", confidence=1.0, entities=found)
        actor = Actor(user_id=1, username="x", role=Role.CUSTOMER)
        # Reading needs no database: no core behind this turn.
        turn = Turn(cast(Core, None), actor, "en", parse, text, State(), datetime.now(UTC), "rest")
        return read_request(turn)

    kind = "notification_kind"
    assert plan("stop warranty reminders", (kind, "warranty_expiring", "warranty reminders")) == {
        "op": "mute",
        "kinds": ["warranty_expiring"],
    }
    assert plan("send me surveys again", (kind, "survey", "surveys"))["op"] == "unmute"
    assert plan("do I get surveys?", (kind, "survey", "surveys"))["op"] == "show"
    assert plan("text me instead of email", ("channel", "sms", "text me"), ("channel", "email", "email")) == {
        "op": "channel",
        "channels": ["sms"],
        "avoided": ["email"],
    }
    assert plan("用邮件联系我，不要用短信", ("channel", "email", "邮件"), ("channel", "sms", "短信")) == {
        "op": "channel",
        "channels": ["email"],
        "avoided": ["sms"],
    }
    assert plan("nothing before 8am", ("time", "2026-06-16T08:00:00+08:00", "8am")) == {
        "op": "quiet",
        "start": None,
        "end": "08:00",
    }
    assert plan("早上7点前不要发消息", ("time", "2026-06-16T07:00:00+08:00", "早上7点")) == {
        "op": "quiet",
        "start": None,
        "end": "07:00",
    }
    assert plan("quiet hours 22:30-06:45") == {"op": "quiet", "start": "22:30", "end": "06:45"}
    assert plan("mute everything")["op"] == "mute" and plan("mute everything")["all"] is True
    assert plan("notification settings") == {"op": "show"}
