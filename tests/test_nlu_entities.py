"""Rule-based entities: values normalised, offsets into the ORIGINAL text, EN and ZH.

The clock is frozen on Monday 2026-06-15 10:00 in Asia/Shanghai.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.nlu.entities import EntityExtractor, cn_number, extract_entities, stage_value
from bot.nlu.types import Entity, ParseContext

NOW = datetime(2026, 6, 15, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
CONTEXT = ParseContext(now=NOW, timezone="Asia/Shanghai")


def found(text: str, context: ParseContext = CONTEXT) -> list[tuple[str, str, int, int]]:
    entities = extract_entities(text, context)
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text  # offsets always index the original text
    return [(e.entity, e.value, e.start, e.end) for e in entities]


def one(text: str, kind: str) -> tuple[str, int, int] | None:
    hits = [(value, start, end) for entity, value, start, end in found(text) if entity == kind]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


# --- serial numbers, ids, parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my washing machine WM2023-00917 is leaking", ("WM2023-00917", 19, 31)),
        ("is AB12345 still under warranty?", ("AB12345", 3, 10)),
        ("DW500-00001 won't drain", ("DW500-00001", 0, 11)),
        ("is ab12345 covered", ("AB12345", 3, 10)),
        ("我的洗衣机WM2023-00917漏水", ("WM2023-00917", 5, 17)),
        ("序列号：123456789", ("123456789", 4, 13)),
        ("error E13 on my dishwasher", None),
        ("code F05 again", None),
        ("part P-100 replaced", None),
        ("SR-12345 status", None),
        ("RO12345 done", None),
        ("bought in 2026", None),
        ("h264 and mp3 and iPhone 15", None),
    ],
)
def test_serial_number(text: str, expected: tuple[str, int, int] | None) -> None:
    assert one(text, "serial_number") == expected


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("status of SR-12", "ticket_id", ("SR-12", 10, 15)),
        ("sr 12 please", "ticket_id", ("SR-12", 0, 5)),
        ("any news on my ticket #12?", "ticket_id", ("SR-12", 15, 25)),
        ("request #7 is still open", "ticket_id", ("SR-7", 0, 10)),
        ("what about #12", "ticket_id", None),
        ("12号工单进度", "ticket_id", ("SR-12", 0, 5)),
        ("十二号工单怎么样了", "ticket_id", ("SR-12", 0, 5)),
        ("工单号12", "ticket_id", ("SR-12", 0, 5)),
        ("ＳＲ－１２怎么样了", "ticket_id", ("SR-12", 0, 5)),
        ("RO-45 done", "job_id", ("RO-45", 0, 5)),
        ("accept job 45", "job_id", ("RO-45", 7, 13)),
        ("ro 311 finished", "job_id", ("RO-311", 0, 6)),
        ("45号单完成了", "job_id", ("RO-45", 0, 4)),
        ("RO-311 done, replaced pump, part P-100", "part", ("P-100", 33, 38)),
        ("用了配件P-120", "part", ("P-120", 4, 9)),
        ("part p110", "part", ("P-110", 5, 9)),
    ],
)
def test_ids_and_parts(text: str, kind: str, expected: tuple[str, int, int] | None) -> None:
    assert one(text, kind) == expected


def test_ticket_and_job_in_one_message() -> None:
    assert found("ticket 5 and RO 7") == [("ticket_id", "SR-5", 0, 8), ("job_id", "RO-7", 13, 17)]


# --- amounts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("move the Acme renewal to negotiation, 50k", ("50000.00", 38, 41)),
        ("budget is $12,000", ("12000.00", 10, 17)),
        ("a 1.2m deal", ("1200000.00", 2, 6)),
        ("金额5万", ("50000.00", 2, 4)),
        ("12万块", ("120000.00", 0, 4)),
        ("报价30000元", ("30000.00", 2, 8)),
        ("50,000 rmb", ("50000.00", 0, 10)),
        ("一万五", ("15000.00", 0, 3)),
        ("¥8,800", ("8800.00", 0, 6)),
        ("price 8000", ("8000.00", 6, 10)),
        ("千万不要", None),
        ("2026年", None),
        ("call 13812345678", None),
        ("wait 5 min", None),
    ],
)
def test_amount(text: str, expected: tuple[str, int, int] | None) -> None:
    assert one(text, "amount") == expected


# --- ratings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'd give it 4/5", ("4", 12, 15)),
        ("4 out of 5", ("4", 0, 10)),
        ("five stars!", ("5", 0, 10)),
        ("5 stars", ("5", 0, 7)),
        ("rating: 3", ("3", 0, 9)),
        ("给五星好评", ("5", 1, 3)),
        ("打4分", ("4", 1, 3)),
        ("★★★★☆", ("4", 0, 5)),
        ("7/5", None),
        ("10/10", None),
        ("等了五分钟", None),
        ("三分之一的零件", None),
        ("我的三星冰箱坏了", None),
    ],
)
def test_rating(text: str, expected: tuple[str, int, int] | None) -> None:
    assert one(text, "rating") == expected


# --- stages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("move it to negotiation", ("negotiation", 11, 22)),
        ("set stage to closed-won", ("closed_won", 13, 23)),
        ("we lost the Globex deal", ("closed_lost", 3, 7)),
        ("back to needs analysis", ("needs_analysis", 8, 22)),
        ("进入商务谈判", ("negotiation", 2, 6)),
        ("华为赢单了", ("closed_won", 2, 4)),
        ("改成方案阶段", ("proposal", 2, 6)),
        # Confirming there is a need comes before analysing it, as the training data says.
        ("北京四中项目需求确认完了", ("qualification", 6, 10)),
        ("washing machine won't drain", None),
    ],
)
def test_stage(text: str, expected: tuple[str, int, int] | None) -> None:
    assert one(text, "stage") == expected


def test_stage_value_is_the_one_vocabulary() -> None:
    assert [stage_value(term) for term in ("需求确认", "Needs Analysis", "closed_won", "谈判", "banana")] == [
        "qualification", "needs_analysis", "closed_won", "negotiation", None]
    extractor = EntityExtractor(lexicon={"stage": {"没戏了": "closed_lost"}})
    assert (extractor.stage_value("没戏了"), extractor.stage_value("赢单")) == ("closed_lost", "closed_won")


def test_stage_synonyms_from_training_data() -> None:
    extractor = EntityExtractor(lexicon={"stage": {"没戏了": "closed_lost", "in the bag": "closed_won"}})
    entities = extractor.extract("this one is in the bag", CONTEXT)
    assert [(e.entity, e.value, e.start, e.end) for e in entities] == [("stage", "closed_won", 12, 22)]
    assert [(e.value, e.text) for e in extractor.extract("这个单子没戏了", CONTEXT)] == [
        ("closed_lost", "没戏了")
    ]


def test_lexicon_and_regex_entities_of_other_data_sets() -> None:
    extractor = EntityExtractor(
        lexicon={"city": {"shanghai": "Shanghai", "北京": "北京"}}, regexes={"account": [r"\b\d{10}\b"]}
    )
    entities = extractor.extract("move account 1234567890 to Shanghai office", CONTEXT)
    assert [(e.entity, e.value, e.start, e.end) for e in entities] == [
        ("account", "1234567890", 13, 23),
        ("city", "Shanghai", 27, 35),
    ]


# --- dates and times --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value", "span"),
    [
        ("next Friday", "date", "2026-06-19", (0, 11)),
        ("send quote by Friday", "date", "2026-06-19", (14, 20)),
        ("Friday", "date", "2026-06-19", (0, 6)),
        ("Friday next week", "date", "2026-06-26", (0, 16)),
        ("last Friday", "date", "2026-06-12", (0, 11)),
        ("today", "date", "2026-06-15", (0, 5)),
        ("tomorrow 2pm", "time", "2026-06-16T14:00:00+08:00", (0, 12)),
        ("tomorrow at 3", "time", "2026-06-16T15:00:00+08:00", (0, 13)),
        ("2pm on Friday", "time", "2026-06-19T14:00:00+08:00", (0, 13)),
        ("Friday afternoon", "time", "2026-06-19T14:00:00+08:00", (0, 16)),
        ("at 9:30am", "time", "2026-06-16T09:30:00+08:00", (3, 9)),
        ("end of month", "date", "2026-06-30", (0, 12)),
        ("by the end of next month", "date", "2026-07-31", (3, 24)),
        ("in 3 days", "date", "2026-06-18", (0, 9)),
        ("next week", "date", "2026-06-22", (0, 9)),
        ("June 20", "date", "2026-06-20", (0, 7)),
        ("June 15", "date", "2026-06-15", (0, 7)),
        ("on May 5", "date", "2027-05-05", (3, 8)),
        ("20th of June 2026", "date", "2026-06-20", (0, 17)),
        ("2026-06-20", "date", "2026-06-20", (0, 10)),
        ("20/06/2026", "date", "2026-06-20", (0, 10)),
        ("明天下午", "time", "2026-06-16T14:00:00+08:00", (0, 4)),
        ("明天下午3点", "time", "2026-06-16T15:00:00+08:00", (0, 6)),
        ("后天上午10点", "time", "2026-06-17T10:00:00+08:00", (0, 7)),
        ("下周五", "date", "2026-06-26", (0, 3)),
        ("周五", "date", "2026-06-19", (0, 2)),
        ("这周五之前", "date", "2026-06-19", (0, 3)),
        ("月底", "date", "2026-06-30", (0, 2)),
        ("下个月底", "date", "2026-07-31", (0, 4)),
        ("6月20日", "date", "2026-06-20", (0, 5)),
        ("2026年6月20日", "date", "2026-06-20", (0, 10)),
        ("三天后", "date", "2026-06-18", (0, 3)),
        ("20号上门", "date", "2026-06-20", (0, 3)),
        ("今晚8点", "time", "2026-06-15T20:00:00+08:00", (0, 4)),
        ("我想约明天下午三点", "time", "2026-06-16T15:00:00+08:00", (3, 9)),
        ("下午3:30", "time", "2026-06-15T15:30:00+08:00", (0, 6)),
    ],
)
def test_date_and_time(text: str, kind: str, value: str, span: tuple[int, int]) -> None:
    hits = [(e, v, s, t) for e, v, s, t in found(text) if e in ("date", "time")]
    assert hits == [(kind, value, *span)]


def test_weekday_is_never_in_the_past() -> None:
    friday = ParseContext(now=datetime(2026, 6, 19, 18, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    saturday = ParseContext(now=datetime(2026, 6, 20, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    assert [e.value for e in extract_entities("by Friday", friday)] == ["2026-06-19"]
    assert [e.value for e in extract_entities("next Friday", friday)] == ["2026-06-26"]
    assert [e.value for e in extract_entities("by Friday", saturday)] == ["2026-06-26"]
    assert [e.value for e in extract_entities("周五", saturday)] == ["2026-06-26"]


def test_a_weekday_at_an_hour_already_past_today_means_next_week() -> None:
    friday_afternoon = ParseContext(now=datetime(2026, 6, 19, 15, 12, tzinfo=ZoneInfo("Asia/Shanghai")))
    friday_morning = ParseContext(now=datetime(2026, 6, 19, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    later = "2026-06-26T14:00:00+08:00"
    assert [e.value for e in extract_entities("reschedule to Friday 2pm", friday_afternoon)] == [later]
    assert [e.value for e in extract_entities("改到周五下午两点", friday_afternoon)] == [later]
    assert [e.value for e in extract_entities("Friday 2pm", friday_morning)] == ["2026-06-19T14:00:00+08:00"]
    # Said outright, this week's Friday stays this week's (and the handler says it is past).
    this_week = extract_entities("本周五下午两点", friday_afternoon)
    assert [e.value for e in this_week] == ["2026-06-19T14:00:00+08:00"]


def test_time_already_passed_today_means_tomorrow() -> None:
    assert [e.value for e in extract_entities("at 9am", CONTEXT)] == ["2026-06-16T09:00:00+08:00"]
    assert [e.value for e in extract_entities("3pm", CONTEXT)] == ["2026-06-15T15:00:00+08:00"]


def test_now_in_utc_is_resolved_in_the_context_timezone() -> None:
    # 2026-06-15 20:00 UTC is already Tuesday 04:00 in Shanghai.
    late = ParseContext(now=datetime(2026, 6, 15, 20, 0, tzinfo=UTC), timezone="Asia/Shanghai")
    assert [e.value for e in extract_entities("tomorrow", late)] == ["2026-06-17"]
    ny = ParseContext(now=datetime(2026, 6, 15, 20, 0, tzinfo=UTC), timezone="America/New_York")
    assert [e.value for e in extract_entities("tomorrow 2pm", ny)] == ["2026-06-16T14:00:00-04:00"]


def test_words_that_look_like_dates_are_not() -> None:
    assert found("good morning") == []
    assert found("早上好") == []
    assert found("I sat down") == []
    assert found("you may 5 times") == []


# --- contacts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("email me at John.Doe@Example.COM", "email", ("John.Doe@example.com", 12, 32)),
        ("邮箱li.lei@acme.cn谢谢", "email", ("li.lei@acme.cn", 2, 16)),
        ("call 13812345678", "phone", ("13812345678", 5, 16)),
        ("电话：+86 138 1234 5678", "phone", ("+8613812345678", 3, 20)),
        ("0086 13812345678", "phone", ("+8613812345678", 0, 16)),
        ("reach me on +1 415 555 0100", "phone", ("+14155550100", 12, 27)),
        ("office 010-12345678", "phone", ("01012345678", 7, 19)),
    ],
)
def test_email_and_phone(text: str, kind: str, expected: tuple[str, int, int]) -> None:
    assert one(text, kind) == expected


# --- names from the CRM -----------------------------------------------------------------------------

KNOWN = ParseContext(
    now=NOW,
    known={
        "customer": ("Acme Corporation", "Globex Ltd", "北京华为技术有限公司", "Li Ning"),
        "product": ("WM-2023 washing machine", "DW-500 dishwasher"),
    },
)


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("visited Acme today with Li", "customer", ("Acme Corporation", 8, 12)),
        ("visited Acmee Corporation", "customer", ("Acme Corporation", 8, 25)),
        ("move the globex deal", "customer", ("Globex Ltd", 9, 15)),
        ("今天拜访了华为", "customer", ("北京华为技术有限公司", 5, 7)),
        ("北京华为技术有限公司的商机", "customer", ("北京华为技术有限公司", 0, 10)),
        ("my dishwasher is broken", "product", ("DW-500 dishwasher", 3, 13)),
        ("nothing known here", "customer", None),
    ],
)
def test_known_names_fuzzy(text: str, kind: str, expected: tuple[str, int, int] | None) -> None:
    hits = [(e.value, e.start, e.end) for e in extract_entities(text, KNOWN) if e.entity == kind]
    assert hits == ([expected] if expected else [])


def test_short_names_need_a_whole_word() -> None:
    context = ParseContext(now=NOW, known={"customer": ("Li",)})
    assert [e.value for e in extract_entities("met Li today", context)] == ["Li", "2026-06-15"]
    assert [e.entity for e in extract_entities("lithium batteries", context)] == []


def test_fuzzy_names_have_a_confidence_below_one() -> None:
    entity = next(e for e in extract_entities("visited Acmee Corporation", KNOWN) if e.entity == "customer")
    assert isinstance(entity, Entity)
    assert 0.8 <= entity.confidence < 1.0 and entity.extractor == "crmbot.fuzzy"


# --- the whole sentence, and odd input --------------------------------------------------------------


def test_sales_visit_sentence() -> None:
    assert found("visited Acme today with Li, discussed renewal, next step send quote by Friday", KNOWN) == [
        ("customer", "Acme Corporation", 8, 12),
        ("date", "2026-06-15", 13, 18),
        ("date", "2026-06-19", 71, 77),
    ]


def test_job_completion_sentence() -> None:
    assert found("RO-311 done, replaced pump, part P-100") == [
        ("job_id", "RO-311", 0, 6),
        ("part", "P-100", 33, 38),
    ]


def test_full_width_offsets_map_back_to_the_original() -> None:
    text = "工单ＳＲ－１２，金额５万"
    entities = extract_entities(text, CONTEXT)
    assert [(e.entity, e.value, e.text) for e in entities] == [
        ("ticket_id", "SR-12", "工单ＳＲ－１２"),
        ("amount", "50000.00", "５万"),
    ]


@pytest.mark.parametrize("text", ["", "   ", "😀😀", "\x00\x01\x02", "a" * 10_000, "[](){}" * 500, "\ud800"])
def test_odd_input_never_raises(text: str) -> None:
    extract_entities(text, CONTEXT)


def test_chinese_numbers() -> None:
    assert [cn_number(text) for text in ("十二", "两", "一百零五", "三千五", "二〇二六", "45", "二十")] == [
        12,
        2,
        105,
        3500,
        2026,
        45,
        20,
    ]


# --- forms seen in the training data ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("warranty lookup HX-3300412", "serial_number", ("HX-3300412", 16, 26)),
        ("帮我查DW-2019-4410保不保", "serial_number", ("DW-2019-4410", 3, 15)),
        ("warranty for 2301RF0045", "serial_number", ("2301RF0045", 13, 23)),
        ("the WM-2023 model", "serial_number", None),
        ("call me at 555-0134 after 5pm", "phone", ("5550134", 11, 19)),
        ("call me back at 0755 8888 1234", "phone", ("075588881234", 16, 30)),
        ("#12 status pls", "ticket_id", ("SR-12", 0, 3)),
        ("finished job 45, cleaned filter", "job_id", ("RO-45", 9, 15)),
        ("add an opportunity for Umbrella, 35,000, proposal", "amount", ("35000.00", 33, 39)),
        ("把Acme续约推进到谈判阶段，5万", "amount", ("50000.00", 15, 17)),
        ("OP-23 金额 10w", "amount", ("100000.00", 9, 12)),
        ("a 10w bulb", "amount", None),
        ("更新一下Initech的金额，8万5", "amount", ("85000.00", 15, 18)),
        ("Acme的续约卡在谈判，金额先按45000", "amount", ("45000.00", 16, 21)),
        ("洗衣机修好了，换了轴承，收费200", "amount", ("200.00", 14, 17)),
        ("moev acme to negotiaton", "stage", ("negotiation", 13, 23)),
        ("acme renewl to propsal 50k", "stage", ("proposal", 15, 22)),
        ("the quality was poor", "stage", None),
        ("Globex那单输给美的了", "stage", ("closed_lost", 8, 10)),
        ("4", "rating", ("4", 0, 1)),
        ("awesome, 5", "rating", ("5", 9, 10)),
        ("2, the engineer was late", "rating", ("2", 0, 1)),
        ("i'd give it a 3, took a while but fixed", "rating", ("3", 4, 15)),
        ("my score for the visit is 2", "rating", ("2", 26, 27)),
        ("here's my feedback: fast, friendly, fixed. five", "rating", ("5", 43, 47)),
        ("rate the service for SR-12: 5", "rating", ("5", 28, 29)),
        ("师傅很耐心，给满分", "rating", ("5", 7, 9)),
        ("i have been waiting for the technician since monday and still nothing at 3", "rating", None),
    ],
)
def test_training_data_forms(text: str, kind: str, expected: tuple[str, int, int] | None) -> None:
    assert one(text, kind) == expected


@pytest.mark.parametrize(
    ("text", "value", "span"),
    [
        ("send a revised offer by the 15th", "2026-06-15", (24, 32)),
        ("site survey on the 20th", "2026-06-20", (15, 23)),
        ("revisit in January", "2027-01-01", (8, 18)),
        ("close date end of May", "2027-05-31", (11, 21)),
        ("bought the washer in march 2022", "2022-03-01", (18, 31)),
        ("send quote fri", "2026-06-19", (11, 14)),
        ("mtg w globex re demo nxt wk", "2026-06-22", (21, 27)),
        ("postpone to next quarter", "2026-07-01", (12, 24)),
        ("预计9月签", "2026-09-01", (2, 4)),
        ("9月底之前", "2026-09-30", (0, 3)),
        ("去年3月买的空调", "2025-03-01", (0, 4)),
        ("推迟到下个季度", "2026-07-01", (3, 7)),
        ("暂时挂起，推迟到明年", "2027-01-01", (8, 10)),
    ],
)
def test_more_dates(text: str, value: str, span: tuple[int, int]) -> None:
    assert [(v, s, t) for e, v, s, t in found(text) if e == "date"] == [(value, *span)]


def test_half_an_hour_later() -> None:
    assert found("接单，半小时后到") == [("time", "2026-06-15T10:30:00+08:00", 3, 7)]


def test_job_intents_read_work_orders_as_repair_orders() -> None:
    from bot.nlu.entities import contextualise

    entities = extract_entities("45号工单我接了", CONTEXT)
    assert [(e.entity, e.value) for e in entities] == [("ticket_id", "SR-45")]
    assert [(e.entity, e.value, e.start, e.end) for e in contextualise(entities, "accept_job")] == [
        ("job_id", "RO-45", 0, 5)
    ]
    assert contextualise(entities, "check_request_status") == entities
    explicit = extract_entities("SR-45 is done", CONTEXT)
    assert contextualise(explicit, "complete_job") == explicit


def test_known_part_names() -> None:
    context = ParseContext(now=NOW, known={"part": ("P-110 Door seal", "P-120 Heating element")})
    assert [(e.entity, e.value, e.text) for e in extract_entities("the door seal is torn", context)] == [
        ("part", "P-110 Door seal", "door seal")
    ]
