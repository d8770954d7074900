"""Deal grounding (bot/grounding_sales.py): deals named by OP-n, by words of their or their customer's name
in English or Chinese, with typos; several → a choice, none → said with the words as typed, never another
deal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest

from bot.grounding import Found
from bot.grounding_sales import deal_refs, ground_deal, mentions, rank_deals, reference
from core.auth import SYSTEM
from core.container import Core
from core.domain.enums import CustomerType, OpportunityStage
from core.schemas import CustomerIn, OpportunityIn
from tests.world import World


@dataclass(frozen=True)
class Deal:
    ref: str
    name: str
    customer_name: str


DEALS = (
    Deal("OP-1", "Acme Appliances renewal 2026", "Acme Appliances Ltd"),
    Deal("OP-9", "上海市第六中学 病房空调AC-350", "上海市第六中学"),
    Deal("OP-19", "上海市第六中学 食堂洗碗机DW-700", "上海市第六中学"),
    Deal("OP-20", "Green Leaf Bakery AC-350 replacement", "Green Leaf Bakery"),
    Deal("OP-24", "上海家电城 夏季空调备货", "上海家电城"),
    Deal("OP-31", "朝阳区人民医院 AC-900教室空调改造", "朝阳区人民医院"),
    Deal("OP-32", "仁济医院 年度维保合同", "仁济医院"),
    Deal("OP-15", "Northern Star Appliances summer AC stock", "Northern Star Appliances"),
)
REPS = tuple(deal for deal in DEALS if deal.ref in ("OP-1", "OP-9", "OP-19", "OP-20", "OP-24"))


def refs(found: list[Deal]) -> list[str]:
    return [deal.ref for deal in found]


@pytest.mark.parametrize(
    ("text", "expected", "said"),
    [
        # English words find Chinese names through the concepts they share, and the other way round.
        ("mark the hospital deal as won", ["OP-31", "OP-32"], "hospital"),
        ("医院那个商机赢了", ["OP-31", "OP-32"], "医院"),
        ("把仁济医院那单标成赢单", ["OP-32"], "仁济医院"),
        ("move the Acme renewal to negotiation, 50k", ["OP-1"], "Acme renewal"),
        ("update the Acmee renewl", ["OP-1"], "Acmee renewl"),  # typos
        ("the dishwasher deal", ["OP-19"], "dishwasher"),
        ("洗碗机那单", ["OP-19"], "洗碗机"),
        ("上海家电城的商机改到谈判阶段", ["OP-24"], "上海家电城"),
        ("the Green Leaf deal is lost", ["OP-20"], "Green Leaf"),
        # A trade word alone ('appliances') names no deal: Northern Star is not Acme Appliances.
        ("Northern Star Appliances", ["OP-15"], "Northern Star Appliances"),
    ],
)
def test_deals_are_found_by_the_words_of_their_names(text: str, expected: list[str], said: str) -> None:
    found, words, named = rank_deals(DEALS, text)
    assert (refs(found), words, named) == (expected, said, True)


def test_a_mention_that_matches_none_of_the_askers_deals_is_reported_not_replaced() -> None:
    assert rank_deals(REPS, "mark the hospital deal as won") == ([], "hospital", True)
    assert rank_deals(REPS, "show me Northern Star Appliances") == ([], "Northern Star Appliances", True)
    # Nothing that names a deal: the deal talked about before may be meant.
    assert rank_deals(REPS, "mark it as won") == ([], "", False)
    assert rank_deals(REPS, "move to negotiation, they agreed") == ([], "", False)


def test_mentions_leave_out_references_stages_amounts_dates_and_probabilities() -> None:
    [mention] = mentions("update OP-41 to proposal probability 40% close end of April 120k hospital")
    assert (mention.latin, mention.cjk) == (("hospital",), ())
    assert [item.said for item in mentions("把仁济医院那单改成谈判阶段，5万")] == ["仁济医院"]
    assert deal_refs("OP-6 and op 7, OP#6") == ["OP-6", "OP-7"]


async def test_ground_deal_in_the_askers_scope(core: Core, world: World) -> None:
    await core.customers.create(SYSTEM, CustomerIn(
        code="RENJI", name="仁济医院", type=CustomerType.PUBLIC, owner="rep.north"))
    for customer, name, owner in (("RENJI", "年度维保合同", world.rep_north),
                                  ("ACME", "Acme renewal", world.rep_north),
                                  ("GLOBEX", "Globex hotel laundry", world.rep_south)):
        await core.sales.create_opportunity(owner, OpportunityIn(
            customer_code=customer, name=name, stage=OpportunityStage.PROPOSAL, amount=Decimal("1000"),
            expected_close=date(2026, 7, 1)))
    found = await ground_deal(core, world.rep_north, "mark the hospital deal as won")
    assert [deal.ref for deal in found.matches] == ["OP-1"] and found.one is not None
    # Another rep's deal is not found, by reference or by name, exactly like one that does not exist.
    other = await ground_deal(core, world.rep_north, "mark OP-3 as won")
    assert (other.found, other.matches, reference(other)) == (Found.NONE, (), "OP-3")
    by_name = await ground_deal(core, world.rep_north, "the Globex laundry deal")
    assert (by_name.found, by_name.said, reference(by_name)) == (Found.NONE, "Globex laundry", None)
    assert (await ground_deal(core, world.rep_north, "mark it as won")).found is Found.UNSAID
    # The director sees everyone's.
    assert (await ground_deal(core, world.director, "the Globex laundry deal")).one is not None
