"""Grounding mentions in the asker's own installed base (bot/grounding.py) through core, on tests/world.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.grounding import Found, Grounded, Mention, build_vocabulary, find_terms, installed_units, serial_key
from core.auth import SYSTEM, Actor
from core.clock import FrozenClock
from core.container import Core, build_core
from core.schemas import InstalledProductIn, InstalledProductOut, ProductIn
from core.settings import Settings
from tests.world import World


@dataclass
class Asker:
    """What a dialogue turn gives a resolver: the core and who is asking."""

    core: Core
    actor: Actor


async def ground(
    core: Core, actor: Actor, text: str, said: str | None = None, context: str | None = None
) -> Grounded[InstalledProductOut]:
    return await installed_units(Asker(core, actor), text, said_serial=said, context_serial=context)


def serials(grounded: Grounded[InstalledProductOut]) -> list[str]:
    return [unit.serial_number for unit in grounded.matches]


async def register(core: Core, serial: str, product: str, customer: str) -> None:
    await core.installed.register(SYSTEM, InstalledProductIn(
        serial_number=serial, product_code=product, customer_code=customer, sold_on=date(2026, 3, 1)))


# --- serials of any shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "is WM2023-00917 still under warranty?",
    "is wm2023-00917 still under warranty?",
    "is WM2023 00917 covered",
    "我的洗衣机WM2023-00917漏水了",
    "ＷＭ２０２３－００９１７",  # typed with a Chinese input method's full-width characters
])
async def test_an_own_serial_in_any_case_spacing_or_width(core: Core, world: World, text: str) -> None:
    found = await ground(core, world.acme_customer, text)
    assert (found.found, found.by, serials(found)) == (Found.ONE, Mention.SERIAL, ["WM2023-00917"])


async def test_an_odd_shaped_serial_the_nlu_does_not_extract(core: Core, world: World) -> None:
    await register(core, "SN-7731-QA", "WM-2023", "ACME")
    for text in ("is SN-7731-QA still under warranty?", "is sn-7731-qa ok", "sn 7731 qa is leaking"):
        found = await ground(core, world.acme_customer, text)
        assert (found.found, serials(found)) == (Found.ONE, ["SN-7731-QA"]), text
    # The NLU's partial guess ("7731") does not get in the way of the whole serial.
    found = await ground(core, world.acme_customer, "is sn 7731 qa covered?", said="7731")
    assert serials(found) == ["SN-7731-QA"]


@pytest.mark.parametrize(("typed", "meant"), [
    ("WM2023-0917", "WM2023-00917"),  # a digit missing
    ("WM2023-00971", "WM2023-00917"),  # two digits swapped
    ("DW500-00002", "DW500-00001"),  # one digit wrong
])
async def test_a_near_serial_is_suggested_never_taken(
    core: Core, world: World, typed: str, meant: str
) -> None:
    found = await ground(core, world.acme_customer, f"is {typed} under warranty?", said=typed)
    assert (found.found, found.said, serials(found)) == (Found.SUGGESTED, typed, [meant])
    assert found.one is None


async def test_another_customers_serial_is_none_and_reveals_nothing(core: Core, world: World) -> None:
    found = await ground(core, world.acme_customer, "is AB12345 still under warranty?", said="AB12345")
    assert (found.found, found.by, found.said, found.matches) == (Found.NONE, Mention.SERIAL, "AB12345", ())
    unknown = await ground(core, world.acme_customer, "is QQ77777 still under warranty?", said="QQ77777")
    assert (unknown.found, unknown.by) == (Found.NONE, Mention.SERIAL)


async def test_an_unknown_serial_beats_a_kind_and_the_context(core: Core, world: World) -> None:
    found = await ground(core, world.acme_customer, "my dishwasher ZZ99999 is broken", said="ZZ99999",
                         context="WM2023-00917")
    assert (found.found, found.said) == (Found.NONE, "ZZ99999")


@pytest.mark.parametrize("text", [
    "status of SR-12345", "job RO-4411 done", "part P-100 used", "it spins at 1400rpm", "8kg load",
    "mail me at wang.fang2024@example.com", "error E13 again", "visit at 10:30am",
])
async def test_ids_parts_quantities_and_mails_are_not_serials(core: Core, world: World, text: str) -> None:
    assert (await ground(core, world.acme_customer, text)).found is Found.UNSAID


async def test_a_serial_is_not_found_inside_a_longer_code(core: Core, world: World) -> None:
    found = await ground(core, world.acme_customer, "is WM2023-00917X mine?")
    assert (found.found, found.said) == (Found.SUGGESTED, "WM2023-00917X")


# --- kinds, models, product names --------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "my dishwasher is broken", "the dish washer leaks", "my dishwsher is brokn", "洗碗机显示E13",
    "DW-500 won't start", "is my dw500 covered",
])
async def test_kinds_and_models_in_english_and_chinese(core: Core, world: World, text: str) -> None:
    found = await ground(core, world.acme_customer, text)
    assert (found.found, serials(found)) == (Found.ONE, ["DW500-00001"]), text
    assert found.said_now


async def test_a_kind_not_owned_is_none_naming_what_was_said(core: Core, world: World) -> None:
    cases = (("is my fridge covered?", "fridge"), ("冰箱坏了", "冰箱"), ("my oven is broken", "oven"))
    for text, said in cases:
        found = await ground(core, world.acme_customer, text, context="WM2023-00917")
        assert (found.found, found.by, found.said) == (Found.NONE, Mention.KIND, said), text


async def test_two_of_a_kind_are_several_unless_one_was_just_talked_about(core: Core, world: World) -> None:
    await register(core, "SN-7731-QA", "WM-2023", "ACME")
    several = await ground(core, world.acme_customer, "我的洗衣机还在保修期吗？")
    assert (several.found, several.said) == (Found.SEVERAL, "洗衣机")
    assert serials(several) == ["SN-7731-QA", "WM2023-00917"]
    narrowed = await ground(core, world.acme_customer, "my washing machine is leaking", context="SN-7731-QA")
    assert (narrowed.found, serials(narrowed)) == (Found.ONE, ["SN-7731-QA"])


async def test_said_now_beats_remembered_and_remembered_fills_the_gap(core: Core, world: World) -> None:
    said = await ground(core, world.acme_customer, "我的洗衣机还在保修期吗？", context="DW500-00001")
    assert (said.by, serials(said)) == (Mention.KIND, ["WM2023-00917"])
    remembered = await ground(core, world.acme_customer, "and its warranty?", context="DW500-00001")
    assert (remembered.found, remembered.by) == (Found.ONE, Mention.CONTEXT)
    assert serials(remembered) == ["DW500-00001"]
    assert not remembered.said_now
    # A remembered serial that is not theirs (another person's conversation, an old mistake) is nothing.
    foreign = await ground(core, world.acme_customer, "and its warranty?", context="AB12345")
    assert foreign.found is Found.UNSAID


@pytest.mark.parametrize("text", [
    "不是洗衣机，是洗碗机", "是洗碗机，不是洗衣机", "actually not the washing machine, the dishwasher",
    "it's the dishwasher, not the washing machine", "not the washer but the dishwasher",
])
async def test_a_correction_means_what_it_names_not_what_it_denies(
    core: Core, world: World, text: str
) -> None:
    found = await ground(core, world.acme_customer, text)
    assert (found.found, serials(found)) == (Found.ONE, ["DW500-00001"]), text


async def test_a_question_form_is_no_denial(core: Core, world: World) -> None:
    found = await ground(core, world.acme_customer, "是不是洗衣机的问题")
    assert serials(found) == ["WM2023-00917"]


async def test_the_vocabulary_grows_with_the_catalogue(core: Core, world: World) -> None:
    await core.installed.upsert_product(SYSTEM, ProductIn(
        code="PW-100", name="PW-100 water purifier / 净水器", category="water_purifier"))
    await register(core, "PW0000123", "PW-100", "ACME")
    for text in ("my water purifier leaks", "净水器不出水了", "the water purifer is noisy", "PW-100 beeps"):
        found = await ground(core, world.acme_customer, text)
        assert serials(found) == ["PW0000123"], text


def test_a_product_name_shared_by_a_kind_names_the_kind() -> None:
    vocabulary = build_vocabulary((
        ("WM-2023", "Washing machine WM-2023", "washing_machine"),
        ("WM-3000", "WM-3000 washer-dryer 10 kg / 洗烘一体机", "washing_machine"),
    ))
    products = {term.words or term.cjk: term.product for term in vocabulary.terms}
    assert products[("washing", "machine")] is None
    assert products[("washer", "dryer")] == products["洗烘一体机"] == "WM-3000"
    assert vocabulary.kind_of("WM-3000") == "washing_machine"


def test_real_words_near_an_appliance_word_are_not_typos() -> None:
    vocabulary = build_vocabulary((("WH-800", "WH-800 water heater 80 L / 电热水器", "water_heater"),))

    assert find_terms(vocabulary, "the water is not heated and the store is closed") == []
    assert [said.term.kind for said in find_terms(vocabulary, "my heatr is off")] == ["water_heater"]


def test_serial_keys() -> None:
    assert serial_key(" sn 7731-qa ") == serial_key("SN-7731-QA") == "SN7731QA"


# --- the units core keeps for the chat --------------------------------------------------------------


async def test_a_unit_another_process_registered_is_found_at_once(
    core: Core, world: World, engine: AsyncEngine, settings: Settings, clock: FrozenClock
) -> None:
    """Core keeps a customer's units for a while; before the chat calls a serial or a kind unknown it
    looks again, so a unit written elsewhere a moment ago is never denied."""
    fridge = ProductIn(code="FR-500", name="Fridge FR-500", category="fridge")
    await core.installed.upsert_product(SYSTEM, fridge)
    before = await ground(core, world.acme_customer, "my fridge is noisy")
    assert before.found is Found.NONE  # ACME has no fridge yet, and that answer is now cached
    other_process = build_core(settings, clock=clock, engine=engine)
    await register(other_process, "FR-5550001", "FR-500", "ACME")

    by_serial = await ground(core, world.acme_customer, "is FR-5550001 under warranty?")
    by_kind = await ground(core, world.acme_customer, "my fridge is noisy")
    assert serials(by_serial) == serials(by_kind) == ["FR-5550001"]


async def test_this_process_writes_are_seen_by_the_next_question(core: Core, world: World) -> None:
    assert serials(await ground(core, world.acme_customer, "my washing machine")) == ["WM2023-00917"]
    await register(core, "WM2023-00999", "WM-2023", "ACME")
    found = await ground(core, world.acme_customer, "my washing machine")
    assert (found.found, sorted(serials(found))) == (Found.SEVERAL, ["WM2023-00917", "WM2023-00999"])


async def test_staff_and_other_customers_never_get_a_customers_units(core: Core, world: World) -> None:
    acme = await core.installed.own_units(world.acme_customer)
    globex = await core.installed.own_units(world.globex_customer)
    assert {unit.customer_code for unit in acme} == {"ACME"}
    assert {unit.customer_code for unit in globex} == {"GLOBEX"}
    assert await core.installed.own_units(world.agent) == []


# --- staff -------------------------------------------------------------------------------------------


async def test_staff_look_up_any_serial_of_any_shape(core: Core, world: World) -> None:
    await register(core, "SN-7731-QA", "WM-2023", "GLOBEX")
    found = await ground(core, world.agent, "is AB12345 still under warranty?", said="AB12345")
    assert (found.found, serials(found), found.matches[0].customer_code) == (Found.ONE, ["AB12345"], "GLOBEX")
    odd = await ground(core, world.agent, "warranty of sn-7731-qa")
    assert serials(odd) == ["SN-7731-QA"]
    unknown = await ground(core, world.agent, "is ZZ99999 covered", said="ZZ99999")
    assert (unknown.found, unknown.said) == (Found.NONE, "ZZ99999")


async def test_staff_own_no_appliances_so_kinds_ask(core: Core, world: World) -> None:
    assert (await ground(core, world.agent, "is the washing machine covered?")).found is Found.UNSAID
    remembered = await ground(core, world.agent, "and its warranty?", context="AB12345")
    assert (remembered.found, serials(remembered)) == (Found.ONE, ["AB12345"])
