"""Identity linking: the unlinked chat dialogue, the code service and the outbox file delivery."""

from __future__ import annotations

import asyncio
import email
import re
from datetime import timedelta
from email import policy
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.i18n import keys, t
from bot.linking import RESEND, LinkingFlow, find_address, find_code
from bot.messages import IncomingMessage, Reply
from core.auth import SYSTEM
from core.clock import FrozenClock
from core.container import Core
from core.db.models import ChannelIdentity, LinkCode, Notification, OutboxEvent, User
from core.domain.enums import Role
from core.errors import Conflict, ValidationFailed
from core.schemas import UserIn
from core.services import linking as linking_module
from core.services.linking import (
    LinkingService,
    LinkRateLimited,
    hash_code,
    normalise_address,
    normalise_code,
)
from core.settings import Settings
from tests.notify import deliver_to_files as deliver_link_codes
from tests.world import World

ACME = "acme.buyer@example.com"
UNKNOWN = "nobody.here@example.com"
_ids = count(1)


def service(core: Core) -> LinkingService:
    return LinkingService(core.uow, core.clock, core.settings.timezone)


class Person:
    """An unlinked chat account talking to the linking flow."""

    def __init__(self, core: Core, channel: str = "telegram", sender: str | None = None) -> None:
        self.flow = LinkingFlow(core)
        self.channel = channel
        self.sender = sender or f"9{next(_ids):05d}"

    async def say(self, text: str) -> list[Reply]:
        return await self.flow.handle(IncomingMessage(channel=self.channel, sender_id=self.sender, text=text))

    async def text(self, text: str) -> str:
        replies = await self.say(text)
        assert len(replies) == 1
        return replies[0].text


async def link_events(core: Core) -> list[OutboxEvent]:
    async with core.uow() as uow:
        return list(
            (
                await uow.session.execute(
                    select(OutboxEvent)
                    .where(OutboxEvent.event_type == "LinkCodeRequested")
                    .order_by(OutboxEvent.id)
                )
            )
            .scalars()
            .all()
        )


async def last_code(core: Core) -> str:
    events = await link_events(core)
    assert events, "no LinkCodeRequested event in the outbox"
    code = events[-1].payload["code"]
    assert isinstance(code, str)
    return code


async def link_rows(core: Core) -> list[LinkCode]:
    async with core.uow() as uow:
        return list((await uow.session.execute(select(LinkCode).order_by(LinkCode.id))).scalars().all())


def files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*")) if directory.exists() else []


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


# --- the whole journey --------------------------------------------------------------------------


async def test_full_flow_links_a_telegram_account_by_email(
    core: Core, world: World, settings: Settings
) -> None:
    person = Person(core, sender="777001")
    greeting = await person.text("hi")
    assert greeting == t("en", "linking.greet") and "email address or phone number" in greeting
    assert await core.org.actor_for_identity("telegram", "777001") is None

    sent = await person.text(ACME)
    assert sent == (
        "If this address belongs to a customer or colleague we know, a 6-digit code is on its way. "
        "Enter it here."
    )
    [event] = await link_events(core)
    assert event.aggregate == "link_code" and event.processed_at is None
    assert event.payload["destination"] == ACME and event.payload["channel"] == "telegram"
    assert event.payload["lang"] == "en"
    [row] = await link_rows(core)
    assert event.aggregate_id == row.id and row.user_id == world.acme_customer.user_id
    # Only the hash is stored, salted with the identity.
    assert row.code_hash == hash_code("telegram", "777001", event.payload["code"])

    assert await deliver_link_codes(core) == 1
    [eml] = files(settings.mail_directory)
    assert eml.suffix == ".eml"
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["To"] == ACME and message["From"] == settings.mail_from
    assert message["Subject"] == "Your crmbot code"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    codes = re.findall(r"\b\d{6}\b", body.get_content())
    assert codes == [event.payload["code"]]
    assert files(settings.sms_directory) == []
    # Idempotent: the row is processed, a second run writes nothing.
    assert await deliver_link_codes(core) == 0
    assert len(files(settings.mail_directory)) == 1
    [delivered] = await link_events(core)
    assert delivered.processed_at is not None and delivered.last_error is None
    assert delivered.payload["code"] == "******"  # the handled row keeps no usable code

    linked = await person.text(codes[0])
    assert linked == "Linked! You're signed in as Acme Buyer. How can I help?"
    actor = await core.org.actor_for_identity("telegram", "777001")
    assert actor is not None and actor.username == "acme.buyer"
    [row] = await link_rows(core)
    assert row.used_at is not None and row.attempts == 1
    # The linking conversation is gone; the code cannot be used a second time.
    assert await core.conversations.load("telegram", "777001", "unlinked:777001") == {}
    assert await service(core).verify("telegram", "777001", codes[0]) is None


async def test_unknown_address_gets_the_same_answers_and_nothing_is_sent(
    core: Core, world: World, settings: Settings
) -> None:
    known, unknown = Person(core), Person(core)
    assert await known.text("hello") == await unknown.text("hello")
    known_reply = await known.say(ACME)
    unknown_reply = await unknown.say(UNKNOWN)
    assert known_reply == unknown_reply
    assert len(await link_events(core)) == 1  # only the known address
    code = await last_code(core)
    rows = await link_rows(core)
    assert [row.destination for row in rows] == [ACME, UNKNOWN]
    assert rows[1].user_id is None and rows[1].code_hash and rows[1].expires_at == rows[0].expires_at
    assert await deliver_link_codes(core) == 1
    assert len(files(settings.mail_directory)) == 1
    # Whatever the unknown address's person types, the answer matches a wrong code for a known one.
    assert await known.say(wrong(code)) == await unknown.say(wrong(code))


async def test_a_code_for_an_address_nobody_owns_never_verifies(
    core: Core, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linking_module, "new_code", lambda: "424242")
    await service(core).request_code("telegram", "5001", UNKNOWN, "en")
    assert await service(core).verify("telegram", "5001", "424242") is None
    assert await core.org.actor_for_identity("telegram", "5001") is None
    [row] = await link_rows(core)
    assert row.attempts == 1 and row.used_at is None


async def test_shared_or_inactive_addresses_are_treated_as_unknown(core: Core, world: World) -> None:
    await core.org.add_user(
        SYSTEM,
        UserIn(username="acme.twin", role=Role.CUSTOMER, customer_code="ACME", email="shared@example.com"),
    )
    await core.org.add_user(
        SYSTEM,
        UserIn(username="acme.twin2", role=Role.CUSTOMER, customer_code="ACME", email="Shared@Example.com"),
    )
    async with core.uow() as uow:
        await uow.session.execute(update(User).where(User.username == "globex.buyer").values(active=False))
        await uow.commit()
    await service(core).request_code("telegram", "5002", "shared@example.com", "en")
    await service(core).request_code("telegram", "5003", "globex.buyer@example.com", "en")
    assert await link_events(core) == []
    assert all(row.user_id is None for row in await link_rows(core))


async def test_email_is_matched_case_insensitively_and_inside_a_sentence(core: Core, world: World) -> None:
    # Addresses stored before add_user lower-cased them (or written by other tools) still match.
    async with core.uow() as uow:
        await uow.session.execute(
            update(User).where(User.username == "acme.buyer").values(email="Acme.Buyer@EXAMPLE.com")
        )
        await uow.commit()
    person = Person(core)
    await person.say("my email is ACME.Buyer@Example.COM.")
    [event] = await link_events(core)
    assert event.payload["destination"] == ACME
    linked = await person.text(f"the code is {await last_code(core)}")
    assert "Acme Buyer" in linked


# --- attempts, expiry, rate limits --------------------------------------------------------------


async def test_five_wrong_codes_kill_the_code(core: Core, world: World) -> None:
    person = Person(core)
    await person.say(ACME)
    code = await last_code(core)
    for _ in range(5):
        replies = await person.say(wrong(code))
        assert replies[0].text == "That code isn't right or has expired."
        assert [button.payload for button in replies[0].buttons] == [RESEND]
        assert replies[0].buttons[0].title == "Send a new code"
    assert await person.text(code) == "That code isn't right or has expired."
    assert await core.org.actor_for_identity("telegram", person.sender) is None
    [row] = await link_rows(core)
    assert row.attempts == 5 and row.used_at is None


async def test_four_wrong_codes_then_the_right_one_links(core: Core, world: World) -> None:
    person = Person(core)
    await person.say(ACME)
    code = await last_code(core)
    for _ in range(4):
        await person.say(wrong(code))
    assert (await person.text(code)).startswith("Linked!")


async def test_send_a_new_code_button_sends_a_fresh_code_and_kills_the_old_one(
    core: Core, world: World, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = iter(["111111", "222222", "333333"])
    monkeypatch.setattr(linking_module, "new_code", lambda: next(issued))
    person = Person(core)
    await person.say(ACME)
    for _ in range(5):
        await person.say("999999")
    assert await person.text("111111") == t("en", "linking.bad_code")  # dead
    assert await person.text(RESEND) == t("en", "linking.code_sent")
    events = await link_events(core)
    assert [event.payload["code"] for event in events] == ["111111", "222222"]
    assert events[1].payload["destination"] == ACME
    clock.advance(timedelta(minutes=1))
    assert await person.text(RESEND) == t("en", "linking.code_sent")
    rows = await link_rows(core)
    # Only the newest code is live: issuing one ends the earlier ones.
    assert [row.expires_at > clock.now() for row in rows] == [False, False, True]
    assert await person.text("222222") == t("en", "linking.bad_code")
    assert (await person.text("333333")).startswith("Linked!")


async def test_code_expires_after_ten_minutes(core: Core, world: World, clock: FrozenClock) -> None:
    late, in_time = Person(core), Person(core)
    await late.say(ACME)
    late_code = await last_code(core)
    await in_time.say(ACME)
    in_time_code = await last_code(core)
    clock.advance(timedelta(minutes=9, seconds=59))
    assert (await in_time.text(in_time_code)).startswith("Linked!")
    clock.advance(timedelta(seconds=1))
    assert await late.text(late_code) == "That code isn't right or has expired."
    assert await core.org.actor_for_identity("telegram", late.sender) is None


async def test_identity_rate_limit(core: Core, world: World, clock: FrozenClock) -> None:
    person = Person(core)
    for address in (ACME, UNKNOWN, "other@example.com"):
        assert await person.text(address) == t("en", "linking.code_sent")
    wait = await person.text(ACME)
    assert wait == t("en", "linking.wait") and "wait a while" in wait
    assert await person.text("someone.else@example.com") == wait  # same answer for an unknown address
    assert len(await link_rows(core)) == 3
    clock.advance(timedelta(minutes=59))
    assert await person.text(ACME) == wait
    clock.advance(timedelta(minutes=1, seconds=1))
    assert await person.text(ACME) == t("en", "linking.code_sent")
    with pytest.raises(LinkRateLimited, match="wait a while"):
        for _ in range(3):
            await service(core).request_code("telegram", person.sender, ACME, "en")


@pytest.mark.parametrize("address", [ACME, UNKNOWN])
async def test_destination_rate_limit_is_the_same_for_known_and_unknown(
    core: Core, world: World, address: str
) -> None:
    answers = [await Person(core).text(address) for _ in range(6)]
    assert answers[:5] == [t("en", "linking.code_sent")] * 5
    assert answers[5] == t("en", "linking.wait")
    assert len(await link_rows(core)) == 5
    # Another address from a new account is not affected.
    assert await Person(core).text("third@example.com") == t("en", "linking.code_sent")


async def test_concurrent_requests_cannot_overrun_the_limits(core: Core, world: World) -> None:
    linking = service(core)
    results = await asyncio.gather(
        *(linking.request_code("telegram", f"70{n}", ACME, "en") for n in range(8)),
        *(linking.request_code("web", "same-person", f"p{n}@example.com", "en") for n in range(6)),
        return_exceptions=True,
    )
    assert sum(isinstance(result, LinkRateLimited) for result in results[:8]) == 3
    assert sum(isinstance(result, LinkRateLimited) for result in results[8:]) == 3
    assert all(result is None or isinstance(result, LinkRateLimited) for result in results)
    assert len(await link_rows(core)) == 5 + 3


# --- phone, other identities, already linked ---------------------------------------------------


async def test_phone_destination_writes_an_sms_file(core: Core, world: World, settings: Settings) -> None:
    await core.org.add_user(
        SYSTEM,
        UserIn(
            username="li.wei",
            role=Role.CUSTOMER,
            customer_code="ACME",
            name="Li Wei",
            phone="+86 138-0013-8000",
        ),
    )
    person = Person(core, channel="web", sender="visitor-1")
    assert await person.text("我的手机号是 +86 138 0013 8000") == t("zh", "linking.code_sent")
    [event] = await link_events(core)
    assert event.payload["destination"] == "+8613800138000" and event.payload["lang"] == "zh"
    assert await deliver_link_codes(core) == 1
    assert files(settings.mail_directory) == []
    [sms] = files(settings.sms_directory)
    content = sms.read_text(encoding="utf-8")
    assert sms.suffix == ".txt" and "To: +8613800138000" in content
    assert re.findall(r"\d{6}(?!\d)", content.split("\n\n", 1)[1]) == [event.payload["code"]]
    assert "验证码" in content
    assert await person.text(event.payload["code"]) == "关联成功！您现在的身份是 Li Wei。有什么可以帮您？"
    actor = await core.org.actor_for_identity("web", "visitor-1")
    assert actor is not None and actor.username == "li.wei"


async def test_chinese_email_is_written_in_chinese(core: Core, world: World, settings: Settings) -> None:
    person = Person(core)
    assert await person.text("你好") == t("zh", "linking.greet")
    # An address alone keeps the conversation's language.
    assert await person.text(ACME) == t("zh", "linking.code_sent")
    await deliver_link_codes(core)
    [eml] = files(settings.mail_directory)
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["Subject"] == "您的 crmbot 验证码"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "验证码" in body.get_content()


async def test_a_code_only_works_for_the_account_it_was_issued_to(
    core: Core, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = iter(["111111", "222222"])
    monkeypatch.setattr(linking_module, "new_code", lambda: next(issued))
    owner = Person(core, sender="1001")
    await owner.say(ACME)
    code = "111111"
    thief = Person(core, sender="1002")
    assert await thief.text(code) == t("en", "linking.bad_code")
    same_id_other_channel = Person(core, channel="web", sender="1001")
    assert await same_id_other_channel.text(code) == t("en", "linking.bad_code")
    # The thief asking for a code of their own (222222) does not make the owner's code theirs.
    await thief.say(UNKNOWN)
    assert await thief.text(code) == t("en", "linking.bad_code")
    assert await core.org.actor_for_identity("telegram", "1002") is None
    assert await core.org.actor_for_identity("web", "1001") is None
    assert (await owner.text(code)).startswith("Linked!")


async def test_already_linked_identity_is_not_taken_over(core: Core, world: World) -> None:
    await core.org.link_identity(SYSTEM, "rep.north", "telegram:4242")
    linking = service(core)
    await linking.request_code("telegram", "4242", ACME, "en")
    with pytest.raises(Conflict):
        await linking.verify("telegram", "4242", await last_code(core))
    actor = await core.org.actor_for_identity("telegram", "4242")
    assert actor is not None and actor.username == "rep.north"
    [row] = await link_rows(core)
    assert row.used_at is not None  # the code is spent
    # Through the flow the person is told, not shown a "wrong code".
    await core.org.link_identity(SYSTEM, "rep.south", "telegram:4343")
    person = Person(core, sender="4343")
    await person.say(ACME)
    assert await person.text(await last_code(core)) == t("en", "linking.already_linked")


async def test_relinking_the_same_user_is_harmless(core: Core, world: World) -> None:
    await core.org.link_identity(SYSTEM, "acme.buyer", "telegram:4444")
    linking = service(core)
    await linking.request_code("telegram", "4444", ACME, "en")
    actor = await linking.verify("telegram", "4444", await last_code(core))
    assert actor is not None and actor.username == "acme.buyer"
    async with core.uow() as uow:
        rows = (
            await uow.session.execute(select(ChannelIdentity).where(ChannelIdentity.external_id == "4444"))
        ).all()
    assert len(rows) == 1


async def test_rest_accounts_cannot_link_themselves(core: Core, world: World) -> None:
    with pytest.raises(ValidationFailed):
        await service(core).request_code("rest", "intruder", ACME, "en")
    with pytest.raises(ValidationFailed):
        await service(core).verify("rest", "intruder", "123456")
    assert await link_rows(core) == []
    # Even if the flow were reached from REST, it answers only "not linked".
    replies = await Person(core, channel="rest", sender="intruder").say(ACME)
    assert [reply.text for reply in replies] == [t("en", "identity.not_linked")]
    assert await link_rows(core) == []
    assert await core.conversations.load("rest", "intruder", "unlinked:intruder") == {}


# --- what an unlinked person can see -----------------------------------------------------------


async def test_the_flow_never_shows_crm_data(core: Core, world: World) -> None:
    allowed = {
        t(lang, f"linking.{key}")
        for lang in ("en", "zh")
        for key in ("greet", "ask_address", "ask_code", "help", "invalid_address", "code_sent")
    }
    person = Person(core)
    probes = [
        "is AB12345 still under warranty?",
        "show me Acme",
        "my jobs today",
        "status of SR-1",
        "pipeline this quarter",
        '/check_warranty{"serial_number": "AB12345"}',
        '/customer_overview{"customer": "ACME"}',
        "AB12345还在保修吗",
        "help",
        "帮助",
        "WM2023-00917 is leaking",
        "'; DROP TABLE users; --",
        "",
        "\x00\x01",
        "x" * 10_000,
    ]
    for probe in probes:
        for reply in await person.say(probe):
            assert reply.text in allowed, (probe, reply.text)
            for secret in ("AB12345", "Acme", "ACME", "Globex", "WM2023", "rep.north", "SR-1", "@"):
                assert secret not in reply.text
    assert await link_rows(core) == []


async def test_help_and_reasking(core: Core, world: World) -> None:
    person = Person(core)
    assert "6-digit code" in await person.text("help")
    assert await person.text("what?!") == t("en", "linking.ask_address")
    assert await person.text("foo@") == t("en", "linking.invalid_address")
    await person.say(UNKNOWN)
    assert await person.text("what now") == t("en", "linking.ask_code")
    assert await person.text(RESEND) == t("en", "linking.code_sent")
    fresh = Person(core)
    await fresh.say("hi")
    assert await fresh.text(RESEND) == t("en", "linking.ask_address")


# --- delivery edge cases and helpers ------------------------------------------------------------


async def test_a_code_expired_before_delivery_is_not_written(
    core: Core, world: World, clock: FrozenClock, settings: Settings
) -> None:
    await service(core).request_code("telegram", "6001", ACME, "en")
    clock.advance(timedelta(minutes=11))
    assert await deliver_link_codes(core) == 0
    assert files(settings.mail_directory) == []
    [event] = await link_events(core)
    assert event.processed_at is not None and event.payload["code"] == "******"
    async with core.uow() as uow:
        [notification] = (await uow.session.execute(select(Notification))).scalars().all()
    assert notification.status == "dead" and notification.last_error == "expired before it could be delivered"
    assert notification.context["code"] == "******"


async def test_a_failed_write_is_retried(
    core: Core, world: World, clock: FrozenClock, settings: Settings
) -> None:
    await service(core).request_code("telegram", "6002", ACME, "en")
    blocker = settings.mail_directory
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")  # the mail folder cannot be created
    assert await deliver_link_codes(core) == 0
    async with core.uow() as uow:
        [notification] = (await uow.session.execute(select(Notification))).scalars().all()
    assert notification.status == "pending" and notification.attempts == 1 and notification.last_error
    assert notification.context["code"] != "******"  # still needed for the next attempt
    blocker.unlink()
    clock.advance(timedelta(minutes=1))
    assert await deliver_link_codes(core) == 1
    assert len(files(settings.mail_directory)) == 1


async def test_events_without_a_message_are_marked_handled_and_send_nothing(
    core: Core, world: World, settings: Settings
) -> None:
    async with core.uow() as uow:
        before = (
            await uow.session.execute(select(OutboxEvent.id).where(OutboxEvent.processed_at.is_(None)))
        ).all()
    assert before  # the world raised events of its own (customers, products, …)
    assert await deliver_link_codes(core) == 0
    async with core.uow() as uow:
        after = (
            await uow.session.execute(select(OutboxEvent.id).where(OutboxEvent.processed_at.is_(None)))
        ).all()
        notifications = (await uow.session.execute(select(Notification))).scalars().all()
    assert after == [] and notifications == []
    assert files(settings.mail_directory) == [] and files(settings.sms_directory) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Acme.Buyer@Example.com", ("email", "acme.buyer@example.com")),
        ("  a＠b.cn ", ("email", "a@b.cn")),
        ("+86 (138) 0013-8000", ("phone", "+8613800138000")),
        ("１３８００１３８０００", ("phone", "13800138000")),
        ("foo@", None),
        ("foo@bar", None),
        ("12 34", None),
        ("hello", None),
        ("a@b.com, c@d.com", None),
    ],
)
def test_normalise_address(raw: str, expected: Any) -> None:
    assert normalise_address(raw) == expected


def test_codes_in_text() -> None:
    assert hash_code("telegram", "1", "123456") != hash_code("web", "1", "123456")
    assert hash_code("telegram", "1", "123456") != hash_code("telegram", "2", "123456")
    assert normalise_code("123 456") == "123456"
    assert normalise_code("１２３４５６") == "123456"
    assert normalise_code("12345") is None and normalise_code("1234567") is None
    assert find_code("my code is 123-456") == "123456"
    assert find_address("123456") is None  # six digits are a code, not a phone number
    assert find_address("call me on 138 0013 8000 please") == "138 0013 8000"
    assert find_address("is AB12345 still under warranty?") is None


def test_catalogs_have_the_same_linking_keys() -> None:
    english = {key for key in keys("en") if key.startswith("linking.")}
    assert len(english) >= 10
    assert english == {key for key in keys("zh") if key.startswith("linking.")}
