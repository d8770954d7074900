"""Sales staff intents: log a visit, change or open a deal, list visits and deals (the helpers every staff
intent shares live in bot/intents/staff.py, what is read from messages in bot/parsing.py, who and which
deal in bot/grounding_sales.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from rapidfuzz import fuzz, utils

from bot.dialogue import CONFIRM, Handler, Slot, SlotInvalid, Turn
from bot.grounding import Found, Grounded
from bot.grounding_sales import (
    CJK,
    LATIN_WORD,
    STOP_WORDS,
    WORD_MATCH,
    Candidate,
    deal_by_ref,
    deal_refs,
    find_customers,
    ground_deal,
    pick,
    reference,
)
from bot.intents.staff import (
    SALES_ROLES,
    StaffHandler,
    confirm_card,
    currency,
    day_label,
    local_now,
    local_today,
    moment_label,
    money,
    payload,
    short,
    spoken,
    whens,
    zone,
)
from bot.messages import Button, Reply
from bot.nlu.entities import MONTH_NAME_RE, extract_entities
from bot.nlu.types import ParseContext
from bot.parsing import (
    APPROXIMATE,
    OPEN_STAGES,
    STAGES,
    amount_in_text,
    closing_spans,
    entities_of,
    month_end,
    month_number,
    ordinal_choice,
    parse_amount,
    parse_probability,
    parse_when,
    percent_reading,
    quarter_bounds,
    read_probability,
    stage_in_text,
    stage_of,
    without_percentages,
)
from core.domain.enums import DEFAULT_STAGE_PROBABILITY, OpportunityStage, Role
from core.errors import NotFound, ValidationFailed
from core.schemas import OpportunityIn, OpportunityOut, OpportunityPatch, VisitIn, VisitOut

# --- finding customers by what people call them (bot/grounding_sales.py) ----------------------------------


COMMAND_WORDS = frozenset((
    "log", "record", "add", "new", "a", "an", "the", "visit", "visited", "visiting", "to", "at", "for",
    "with", "please", "i", "my", "today", "yesterday", "customer", "meeting", "call", "just",
))
COMMAND_ZH = re.compile("记录|登记|一次|一下|拜访|今天|昨天|客户|帮我|请|了")


class CustomerHandler(StaffHandler):
    """A handler whose `customer` slot is filled by matching names in the actor's scope."""

    async def take_customer(self, turn: Turn, query: str | None, text: str, *,
                            people: Sequence[str] = ()) -> None:
        """Fill the customer slot from an entity or the words of the message (or note why not). The names of
        `people` met are no customer: 'with Tom Baker' does not make Green Leaf Bakery a candidate."""
        names = await turn.core.customers.names_in_scope(turn.actor)
        found = pick(find_customers(names, query, whole=True)) if query else []
        named = bool(found)
        if not found and text and people:
            pattern = "|".join(re.escape(person) for person in sorted(people, key=len, reverse=True))
            found = pick(find_customers(names, re.sub(pattern, " ", text), whole=False))
        if not found and text:
            found = pick(find_customers(names, text, whole=False))
        if len(found) == 1:
            self._chosen(turn, found[0])
        elif found:
            turn.slots["_choices"] = [[item.code, item.name] for item in found]
            self.note(turn, turn.t("staff.customer_ambiguous", query=short(query, 40))
                      if query and named else turn.t("staff.customer_ambiguous_plain"))
        elif query:
            self.note(turn, turn.t("staff.customer_unknown", query=short(query, 40)))
        elif text and self._names_something(text):
            self.note(turn, turn.t("staff.customer_not_recognised"))

    @staticmethod
    def _names_something(text: str) -> bool:
        """Whether a message has words beyond the command itself (so a customer was probably named)."""
        words = [word for word in LATIN_WORD.findall(text) if word.casefold() not in STOP_WORDS]
        return bool(words) or len(CJK.findall(COMMAND_ZH.sub("", text))) >= 2

    async def customer_answer(self, turn: Turn, raw: str) -> str:
        """The customer an answer names: among the offered choices first, then the whole scope."""
        choices: list[list[str]] = turn.slots.get("_choices") or []
        found: list[Candidate] = []
        if choices:
            found = pick(find_customers(choices, raw, whole=True)) or pick(
                find_customers(choices, raw, whole=False))
        if len(found) != 1:
            names = await turn.core.customers.names_in_scope(turn.actor)
            found = pick(find_customers(names, raw, whole=True)) or pick(
                find_customers(names, raw, whole=False))
        if len(found) == 1:
            self._chosen(turn, found[0])
            return found[0].code
        if found:
            turn.slots["_choices"] = [[item.code, item.name] for item in found]
            raise SlotInvalid(turn.t("staff.customer_ambiguous", query=short(raw, 40)))
        raise SlotInvalid(turn.t("staff.customer_unknown", query=short(raw, 40)))

    async def validate_customer(self, turn: Turn, raw: str) -> str:
        """A customer of the person's, by name or code (typos forgiven; several → buttons)."""
        return await self.customer_answer(turn, raw)

    async def ask_customer(self, turn: Turn) -> list[Reply]:
        """Which customer (the form's own question), with the close matches as buttons."""
        prompt = next(slot.prompt for slot in self.slots if slot.name == "customer")
        return [self.customer_question(turn, prompt)]

    def customer_question(self, turn: Turn, prompt: str) -> Reply:
        """Ask which customer; offer the close matches as buttons carrying the customer code.

        The payload names this intent (`/log_visit{"customer":"CUS-1"}`) rather than being the bare code:
        a bare code goes through the NLU, which may take it for another intent and switch tasks, and an
        identifier alone would flip the reply language to English.
        """
        choices: list[list[str]] = turn.slots.get("_choices") or []
        if choices:
            return Reply(text=turn.t("staff.pick_customer"), buttons=tuple(
                Button(title=short(name, 60), payload=payload(self.intent, customer=code))
                for code, name in choices))
        return turn.say(prompt)

    @staticmethod
    def _chosen(turn: Turn, found: Candidate) -> None:
        turn.slots["customer"] = found.code
        turn.slots["customer_name"] = found.name
        turn.slots.pop("_choices", None)


# --- log_visit -----------------------------------------------------------------------------------------

NEXT_STEP_EN = re.compile(
    r"\b(?:next\s*steps?|action\s+items?)\b\s*(?:is|are|will\s+be|would\s+be)?\s*[:：,\-–—]?\s*"
    r"(?:to\s+)?(?P<step>[^.;!?\n]+)", re.IGNORECASE)
NEXT_STEP_ZH = re.compile(
    r"(?:下一步|下步|后续(?:安排|计划)?[:：])(?:是|要|计划|需要)?[:：，,]?\s*(?P<step>[^。；;！!？?\n]+)")
# The words that tie a date to the action ("send quote by Friday", "下周三前发报价"); the date itself is
# found by the NLU's date rules, so the step and its due date are read one way.
DUE_LINK_EN = re.compile(
    r"[\s,]*\b(?:by|before|until|till|due(?:\s+(?:on|by))?|no\s+later\s+than|on|at|in|for|around|the)\s*$",
    re.IGNORECASE)
DUE_LINK_ZH = re.compile(r"^(?:之前|以前|以内|前|内|左右)")
WITH_EN = re.compile(
    r"\bwith\s+(?P<who>.+?)(?=\s*(?:[,.;:!?\n]|\b(?:discuss\w*|talk\w*|about|regarding|re|to|for|on|at|"
    r"today|yesterday|this|next|and\s+(?:discuss\w*|talk\w*|agreed|went|reviewed|agreed))\b|$))",
    re.IGNORECASE)
WITH_ZH = re.compile(
    r"(?:和|与|跟|同(?!意|时|样|事|学|期|比|步))(?P<who>[\u4e00-\u9fffA-Za-z·、\s]{1,30}?)"
    r"(?=一起|一同|聊|讨论|谈|沟通|见面|开会|会面|交流|商量|商讨|确认|拜访|见了|吃饭|，|,|。|；|;|$)")
MET_EN = re.compile(
    r"\b(?:met|meeting|spoke\s+to|talked\s+to)\s+(?P<who>(?:(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)?[A-Z][\w'’-]*"
    r"(?:\s+[A-Z][\w'’-]*)?)(?=\s*(?:,|\band\b|[.;:!?\n]|\b(?:about|to|for|re|regarding|today|yesterday)\b|$))")
MET_ZH = re.compile(
    r"(?:见了|见到了?|会见了?|约见了?|拜见了?)(?P<who>[\u4e00-\u9fffA-Za-z·、\s]{1,30}?)"
    r"(?=一起|聊|讨论|谈|沟通|确认|交流|商量|，|,|。|；|;|$)")
MORE_NAMES_EN = re.compile(
    r"\s*(?:,\s*(?:and\s+)?|\s+and\s+)(?P<name>(?:(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)?[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)?)"
    r"(?=\s*(?:,|\band\b|[.;:!?\n]|\b(?:about|to|for|re|regarding|today|yesterday)\b|$))")
NAME_SPLIT = re.compile(r"\s*(?:,|，|、|&|/|\band\b|和|及|以及)\s*", re.IGNORECASE)
DUE_HOUR = 9
# Who was met, said again at the card: "见的是王经理，不是李娜", "是和王经理谈的" (English "met …" is MET_EN).
MET_AGAIN_ZH = re.compile(
    r"(?:见的是|见到的是|见的人是|是和|是跟|是与)(?P<who>[\u4e00-\u9fffA-Za-z·\s]{1,20}?)"
    r"(?=一起|聊|谈|[，,。；;]|不是|而不是|$)")
# The person a correction takes back: "not Li Na", "不是李娜".
NOT_MET_EN = re.compile(
    r"\bnot\s+(?P<who>(?:(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)?[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)?)")
NOT_MET_ZH = re.compile(r"(?:而不是|不是)(?P<who>[\u4e00-\u9fffA-Za-z·]{1,20}?)(?=[，,。；;]|$)")
# "change it to next friday": a change said with "next", to the day the card already shows.
NEXT_AGAIN = re.compile(r"\b(?:change|move|push|make)\b.*\bnext\b|(?:改|推|挪|换).{0,3}下", re.IGNORECASE)
# "also met Mr Wang", "还见了王经理": one more person, not a replacement.
ALSO_MET = re.compile(r"\b(?:also|too|as\s+well)\b|还|也", re.IGNORECASE)


def contacts_met(text: str) -> list[str]:
    """People met, in the order said: the names after 'with …', 'met …', '和…', '见了…' ('with Li, Chen and
    Ms Zhang' names three)."""
    names: list[tuple[int, str]] = []
    for pattern in (WITH_EN, MET_EN, WITH_ZH, MET_ZH):
        for match in pattern.finditer(text):
            said = match.group("who")
            if pattern is MET_ZH and "的" in said:
                said = said.rsplit("的", 1)[1]  # "见了浦东家电连锁的采购": the buyer, not the company
            if pattern in (WITH_EN, MET_EN):
                # More capitalised names may follow the first, separated by commas or "and".
                rest = text[match.end():]
                while (more := MORE_NAMES_EN.match(rest)) is not None:
                    said += ", " + more.group("name")
                    rest = rest[more.end():]
            for name in NAME_SPLIT.split(said):
                cleaned = name.strip(" .·")
                if cleaned and cleaned.casefold() not in ("the", "them", "him", "her", "us", "me"):
                    names.append((text.find(cleaned, match.start()), cleaned[:200]))
    names.sort(key=lambda item: item[0])
    return list(dict.fromkeys(name for _at, name in names))[:20]


def next_step(text: str) -> tuple[str, str]:
    """The action after 'next step …' / '下一步…' without its date words, and the words as said."""
    match = NEXT_STEP_EN.search(text) or NEXT_STEP_ZH.search(text)
    if match is None:
        return "", ""
    said = match.group("step").strip()
    spans = sorted((item.start, item.end) for item in entities_of(said, "date", "time"))
    pieces, at = [], 0
    for start, end in spans:
        pieces.append(said[at:start])
        at = max(at, end)
    pieces.append(said[at:])
    kept: list[str] = []
    for index, piece in enumerate(pieces):
        if index:
            piece = DUE_LINK_ZH.sub("", piece.lstrip())
        if index < len(pieces) - 1:
            for _ in range(3):
                piece = DUE_LINK_EN.sub("", piece)
        kept.append(piece.strip(" ,-–—，"))
    step = " ".join(piece for piece in kept if piece)
    if CJK.search(step):
        step = re.sub(r"(?<=[\u4e00-\u9fff]) (?=[\u4e00-\u9fff])", "", step)  # Chinese has no spaces
        step = re.sub(r"^(?:在|于|要|请|需要)+", "", step)
    return step.strip(" ，,")[:300], said


OUTCOME_EN = re.compile(
    r"\b(?:outcome|result|results|conclusion)\b\s*(?:is|was|:|：|-|–|—)\s*[:：]?\s*(?P<out>[^.;!?\n]+)",
    re.IGNORECASE)
OUTCOME_ZH = re.compile(r"(?:结果|结论|成果)(?:是)?\s*[:：，,]?\s*(?P<out>[^。；;！!？?\n]+)")
HONORIFIC_ZH = re.compile(r"(?:总|经理|总监|主任|老师|先生|女士|小姐|工|老板|董)$")
TITLE_EN = re.compile(r"^(?:mr|mrs|ms|miss|dr|prof)\.?\s+", re.IGNORECASE)


def outcome_of(text: str) -> str:
    """What came of the visit: the words after 'outcome:' / '结果：', up to the next step if it follows."""
    match = OUTCOME_EN.search(text) or OUTCOME_ZH.search(text)
    if match is None:
        return ""
    said = match.group("out")
    for pattern in (NEXT_STEP_EN, NEXT_STEP_ZH):
        step = pattern.search(said)
        if step is not None:
            said = said[: step.start()]
    return said.strip(" ,，、-–—")[:2000]


def match_contact(said: str, known: Sequence[str]) -> str:
    """The contact a name as said refers to ('Li' → 'Li Wei', '李总' → '李明'), else the name as said.

    Only an unambiguous match counts: two contacts called Li leave 'Li' as written.
    """
    if not known:
        return said
    exact = [name for name in known if name.casefold() == said.casefold()]
    if exact:
        return exact[0]
    if CJK.search(said):
        surname = HONORIFIC_ZH.sub("", said)
        found = [name for name in known if surname and name.startswith(surname)]
        return found[0] if len(found) == 1 else said
    core_name = TITLE_EN.sub("", said).strip()
    words = utils.default_process(core_name).split()
    if not words:
        return said
    found = [
        name for name in known
        if all(any(fuzz.ratio(word, part) >= WORD_MATCH for part in utils.default_process(name).split())
               for word in words)
    ]
    return found[0] if len(found) == 1 else said


def step_due(turn: Turn, said: str) -> date | datetime | None:
    """The due day the next step's own words name ('send quote by Friday', '下周三前发报价'), read by the
    NLU's date rules: a date elsewhere in the message (the visit's day, '明年' in the notes) is not its."""
    context = ParseContext(now=turn.now, timezone=str(zone(turn)))
    tz = zone(turn)
    for entity in extract_entities(said, context):
        if entity.entity in ("date", "time") and (when := parse_when(entity.value, tz)) is not None:
            return when
    return None


# "I will visit Acme on 20 December", "plan a visit to Acme next Tuesday", "下周二去拜访Acme": visits to come.
PLAN_EN = re.compile(
    r"(?:will|going\s+to|gonna|plan(?:ning)?(?:\s+to)?|intend\s+to|want\s+to|have\s+to|need\s+to)\s+"
    r"(?:visit|see|meet|go\s+to)\b|\bplan(?:ned|ning)?\s+(?:a\s+|the\s+|another\s+)?(?:visit|meeting|trip)\b"
    r"|\b(?:schedule|book|arrange)\s+(?:a\s+|the\s+)?(?:visit|meeting)\b|\bvisit\s+plan\b", re.IGNORECASE)
PLAN_ZH = re.compile(
    r"(?:去|要|将|会|准备|计划|打算|预计|约了?|安排)(?:去)?(?:拜访|见|走访)|拜访计划|计划.{0,8}拜访")
DONE_VISIT = re.compile(
    r"\b(?:visited|met|saw|went\s+to|spoke\s+(?:to|with)|talked\s+(?:to|with)|had\s+a\s+(?:visit|meeting))\b"
    r"|拜访了|见了|去了|走访了|聊了|谈了", re.IGNORECASE)


# "remind me to call Li Na at Acme next Tuesday", "提醒我下周二给Acme的李娜打电话": a call to make, no visit.
CALL_EN = re.compile(
    r"\b(?:[Cc]all|[Pp]hone|[Rr]ing)\b(?:\s+up)?(?:\s+(?P<who>(?:(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)?[A-Z][\w'’-]*"
    r"(?:\s+[A-Z][\w'’-]*)?))?")
CALL_ZH = re.compile(
    r"(?:给|跟|和)(?P<who>[^，,。；;\s]{1,20}?)打(?:个|一个|一下)?电话|打电话给(?P<to>[\u4e00-\u9fff]{1,4})|致电")
REMIND = re.compile(r"\bremind\s+me\b|提醒我|提醒一下", re.IGNORECASE)


def call_to_make(text: str) -> str | None:
    """Who a call still to be made is to ('' when nobody is named); None when the message plans no call."""
    match = CALL_EN.search(text) or CALL_ZH.search(text)
    if match is None or (DONE_VISIT.search(text) and not REMIND.search(text)):
        return None
    who = next((group for group in match.groups() if group), "") or ""
    return who.rsplit("的", 1)[-1].strip()


def plans_a_visit(text: str) -> bool:
    """Whether a message tells of a visit to come rather than one that happened."""
    planned = PLAN_EN.search(text) or PLAN_ZH.search(text)
    return bool(text) and planned is not None and not DONE_VISIT.search(text)


def substantive(text: str, customer_name: str = "") -> bool:
    """Enough said to be a visit summary rather than just 'log a visit to Acme'."""
    name_words = {word.casefold() for word in LATIN_WORD.findall(customer_name)}
    words = [word for word in LATIN_WORD.findall(text)
             if word.casefold() not in COMMAND_WORDS and word.casefold() not in name_words]
    chinese = CJK.findall(COMMAND_ZH.sub("", text.replace(customer_name, "") if customer_name else text))
    return len(words) >= 3 or len(chinese) >= 6


async def open_follow_up(turn: Turn, customer_code: str, title: str, due: datetime | None) -> None:
    """A follow-up task for the speaker on one of their customers (the core checks scope and date)."""
    await turn.core.sales.add_follow_up(turn.actor, customer_code, title, due)


class LogVisit(CustomerHandler):
    """J5: 'visited Acme today with Li, discussed renewal, next step send quote by Friday'."""

    intent = "log_visit"
    roles = SALES_ROLES
    slots = (
        Slot("customer", "visit.ask_customer", entity="customer"),
        Slot("summary", "visit.ask_summary", free_text=True),
    )
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """Customer, dates, people, summary and next step from the first message; a visit still to come
        becomes the offer of a follow-up task on its day (visit plans are not recorded yet)."""
        text = spoken(turn)
        await self.take_customer(turn, turn.entity("customer"), text, people=contacts_met(text))
        turn.slots["visited_on"] = local_today(turn).isoformat()
        self._dates(turn, text)
        call = call_to_make(text) if text else None
        if plans_a_visit(text) or "_planned_for" in turn.slots or call is not None:
            turn.slots["_plan"] = {"due": turn.slots.pop("_planned_for", None)}
            if call is not None:
                turn.slots["_plan"]["call"] = call
            return
        if text and substantive(text, turn.slots.get("customer_name", "")):
            self._digest(turn, text)

    def next_slot(self, turn: Turn) -> Slot | None:
        """The customer, then (for a visit that happened) what was discussed."""
        if "_plan" in turn.slots:
            return self.slots[0] if "customer" not in turn.slots else None
        return super().next_slot(turn)

    # One method per question (docs/dialogue.md); the customer's are CustomerHandler's.

    async def correct(self, turn: Turn) -> list[str]:
        """At the card, also who was met ("actually I met Mr Wang, not Li Na") and the follow-up's due day
        ("改成下周五", "follow-up due next Monday"): no slot the NLU fills, yet both are on the card."""
        changed = await super().correct(turn)
        if turn.state.awaiting != CONFIRM or "_plan" in turn.slots or "summary" not in turn.slots:
            return changed
        text = spoken(turn)
        if text and self._correct_met(turn, text):
            changed.append("contacts")
        if text and self._correct_dates(turn):
            changed.append("due")
        return changed

    def _correct_met(self, turn: Turn, text: str) -> bool:
        """New names of people met replace the old ones (or the one taken back with "not …"/"不是…")."""
        said = [*contacts_met(text), *(match.group("who").strip() for match in MET_AGAIN_ZH.finditer(text))]
        taken_back = [match.group("who").strip()
                      for pattern in (NOT_MET_EN, NOT_MET_ZH) for match in pattern.finditer(text)]
        said = [name for name in said if name and name not in taken_back]
        if not said:
            return False
        before: list[str] = turn.slots.get("contacts_said") or turn.slots.get("contacts") or []
        shown: list[str] = turn.slots.get("contacts") or []
        if taken_back or ALSO_MET.search(text):
            gone = {name.casefold() for name in taken_back}
            kept = [name for index, name in enumerate(before)
                    if name.casefold() not in gone
                    and (index >= len(shown) or shown[index].casefold() not in gone)]
        else:
            kept = []
        after = list(dict.fromkeys([*kept, *said]))
        if after == before:
            return False
        turn.slots["contacts"] = after
        turn.slots["contacts_said"] = after
        return True

    def _correct_dates(self, turn: Turn) -> bool:
        """A day to come moves the follow-up (when there is one); a day gone by is the visit's own day."""
        tz, today = zone(turn), local_today(turn)
        before = (turn.slots.get("due"), turn.slots.get("visited_on"))
        for when in whens(turn):
            day = when.astimezone(tz).date() if isinstance(when, datetime) else when
            if day <= today and not (isinstance(when, datetime) and when > turn.now):
                turn.slots["visited_on"] = day.isoformat()
            elif turn.slots.get("next_step"):
                due = when if isinstance(when, datetime) else self._due_at(turn, day)
                if due.isoformat() == before[0] and NEXT_AGAIN.search(spoken(turn)):
                    # "change it to next friday" when the card already says this Friday: a change to the
                    # day shown would be no change, so the Friday after it is meant.
                    due += timedelta(days=7)
                turn.slots["due"] = due.isoformat()
        return (turn.slots.get("due"), turn.slots.get("visited_on")) != before

    async def validate_summary(self, turn: Turn, raw: str) -> str:
        """What was discussed (from which the dates, people and next step are read too)."""
        text = raw.strip()
        if len(text) < 3:
            raise SlotInvalid(turn.t("visit.summary_too_short"))
        self._dates(turn, text)
        self._digest(turn, text)
        summary: str = turn.slots["summary"]
        return summary

    async def confirmation(self, turn: Turn) -> Reply:
        """The visit as it will be logged (or, for a visit to come, the follow-up task offered instead)."""
        slots = turn.slots
        if "_plan" in slots:
            return self._plan_card(turn)
        lines = [
            turn.t("visit.card_title"),
            turn.t("visit.card_customer", name=slots["customer_name"], code=slots["customer"]),
            turn.t("visit.card_date", day=day_label(turn, date.fromisoformat(slots["visited_on"]))),
        ]
        await self._match_contacts(turn)
        if slots.get("contacts"):
            lines.append(turn.t("visit.card_contacts", names=", ".join(slots["contacts"])))
        lines.append(turn.t("visit.card_summary", summary=short(slots["summary"], 300)))
        if slots.get("outcome"):
            lines.append(turn.t("visit.card_outcome", outcome=short(slots["outcome"], 200)))
        if slots.get("next_step"):
            lines.append(turn.t("visit.card_next_step", step=slots["next_step"], due=self._due_text(turn)))
        return confirm_card(turn, "\n".join(lines))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Log the visit (and its follow-up task) through the sales service."""
        slots = turn.slots
        if "_plan" in slots:
            return await self._add_plan_task(turn)
        step = slots.get("next_step", "")
        due = datetime.fromisoformat(slots["due"]) if slots.get("due") and step else None
        visit = await turn.core.sales.log_visit(turn.actor, VisitIn(
            customer_code=slots["customer"],
            visited_on=date.fromisoformat(slots["visited_on"]),
            contacts_met=slots.get("contacts", []),
            summary=slots["summary"][:10_000],
            outcome=slots.get("outcome", ""),
            next_step=step,
            next_step_due=due,
        ))
        turn.state.context["customer"] = visit.customer_code
        text = turn.t("visit.logged", name=visit.customer_name, day=day_label(turn, visit.visited_on))
        if visit.follow_up_task_id is not None:
            text += "\n" + (turn.t("visit.follow_up", step=step, due=self._due_text(turn)) if due
                            else turn.t("visit.follow_up_undated", step=step))
        return [Reply(text=text)]

    async def _match_contacts(self, turn: Turn) -> None:
        """Names of people met, as the customer's contacts are recorded (unknown names stay as written)."""
        slots = turn.slots
        said: list[str] = slots.get("contacts_said") or slots.get("contacts") or []
        if not said or "customer" not in slots:
            return
        slots["contacts_said"] = said
        try:
            found = await turn.core.customers.contacts(turn.actor, slots["customer"])
            known = [contact.name for contact in found]
        except (NotFound, ValidationFailed):
            known = []
        slots["contacts"] = list(dict.fromkeys(match_contact(name, known) for name in said))

    def _due_text(self, turn: Turn) -> str:
        raw = turn.slots.get("due")
        if not raw:
            return turn.t("visit.no_due")
        due = datetime.fromisoformat(raw).astimezone(zone(turn))
        return day_label(turn, due.date()) if due.time() == time(DUE_HOUR) else moment_label(turn, due)

    def _dates(self, turn: Turn, text: str) -> None:
        """Past or today → the visit day. A future date belongs to the next step when its words say it (read
        there, in _digest); otherwise it may be the day of a visit still to come."""
        tz, today = zone(turn), local_today(turn)
        _step, said = next_step(text)
        own = step_due(turn, said) if said else None
        for when in whens(turn):
            day = when.astimezone(tz).date() if isinstance(when, datetime) else when
            if day <= today:
                turn.slots["visited_on"] = day.isoformat()
            elif when != own and "_planned_for" not in turn.slots and (
                    plans_a_visit(text) or not DONE_VISIT.search(text)):
                # "visit Acme next Tuesday" is a visit to come as much as "I will visit Acme on Tuesday".
                turn.slots["_planned_for"] = day.isoformat()

    def _digest(self, turn: Turn, text: str) -> None:
        """Summary, people met and the next step from free text."""
        turn.slots["summary"] = text.strip()[:10_000]
        customer_name = turn.slots.get("customer_name", "")
        people = [
            name for name in contacts_met(text)
            if not customer_name or fuzz.WRatio(name, customer_name, processor=utils.default_process) < 85
        ]
        if people:
            turn.slots["contacts"] = people
            turn.slots.pop("contacts_said", None)
        outcome = outcome_of(text)
        if outcome:
            turn.slots["outcome"] = outcome
        step, said = next_step(text)
        if step:
            turn.slots["next_step"] = step
            # The step's own words say when it is due; a date elsewhere ('明年' in the notes) never does.
            when = step_due(turn, said)
            if isinstance(when, datetime) and when > turn.now:
                turn.slots["due"] = when.isoformat()
            elif isinstance(when, date) and not isinstance(when, datetime) and when >= local_today(turn):
                turn.slots["due"] = self._due_at(turn, when).isoformat()
            else:
                turn.slots.pop("due", None)

    def _plan_card(self, turn: Turn) -> Reply:
        """Visit plans cannot be recorded yet: offer a follow-up task on the planned day instead."""
        slots, due = turn.slots, turn.slots["_plan"].get("due")
        call = "call" in slots["_plan"]
        lines = [
            # A call to make was never a visit: nothing to explain about visit plans.
            *([] if call else [turn.t("sales.plan.not_yet")]),
            turn.t("sales.plan.call_task" if call else "sales.plan.task", title=self._plan_title(turn)),
            turn.t("sales.plan.due", day=day_label(turn, date.fromisoformat(due))) if due
            else turn.t("sales.plan.no_due"),
            turn.t("sales.plan.question", name=slots["customer_name"]),
        ]
        return Reply(text="\n".join(lines), buttons=(
            turn.button("sales.plan.add_button", "/affirm"), turn.button("staff.no", "/deny")))

    def _plan_title(self, turn: Turn) -> str:
        plan, name = turn.slots["_plan"], turn.slots["customer_name"]
        if "call" not in plan:
            return turn.t("sales.plan.title", name=name)
        if plan["call"]:
            return turn.t("sales.plan.call_title", who=plan["call"], name=name)
        return turn.t("sales.plan.call_title_customer", name=name)

    async def _add_plan_task(self, turn: Turn) -> list[Reply]:
        """The follow-up task for a visit to come, due 09:00 on its day, reminded like any follow-up."""
        raw = turn.slots["_plan"].get("due")
        due = self._due_at(turn, date.fromisoformat(raw)) if raw else None
        title = self._plan_title(turn)
        await open_follow_up(turn, turn.slots["customer"], title, due)
        turn.state.context["customer"] = turn.slots["customer"]
        if due is None:
            return [turn.say("sales.plan.added_undated", title=title)]
        day = day_label(turn, due.astimezone(zone(turn)).date())
        return [turn.say("sales.plan.added", title=title, day=day)]

    def _due_at(self, turn: Turn, day: date) -> datetime:
        """A due day becomes 09:00 on that day in the person's timezone (later today if 09:00 has passed)."""
        tz = zone(turn)
        due = datetime.combine(day, time(DUE_HOUR), tzinfo=tz)
        if due <= turn.now:
            later = (local_now(turn) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
            due = later if later.date() == day else datetime.combine(day, time(23, 59), tzinfo=tz)
        return due


# --- update_deal: change a deal, or open one ("new deal …") ----------------------------------------------

REASON_EN = re.compile(
    r"\b(?:because(?:\s+of)?|since|due\s+to|reason(?:\s+is|\s+was)?\s*[:：]?)\s+(?P<why>[^.;!?\n]+)",
    re.IGNORECASE)
COMPETITOR_EN = re.compile(r"\b(?:[Ll]ost\b[^.;!?]*?\bto|went\s+with|chose|picked|signed\s+with)\s+"
                           r"(?P<who>[A-Z0-9][\w&.\-]*(?:\s+[A-Z0-9][\w&.\-]*){0,3})")
REASON_ZH = re.compile(r"(?:因为|原因是?|由于)[:：]?(?P<why>[^。；;！!\n]+)")
COMPETITOR_ZH = re.compile(r"(?:输给了?|被|选择了|选了|签了)(?P<who>[\u4e00-\u9fffA-Za-z0-9]{1,20}?)"
                           r"(?=抢走|拿走|截胡|了|[，,。；;]|$)")
NO_ANSWER = frozenset({
    "no", "none", "nobody", "n/a", "na", "-", "unknown", "don't know", "dont know", "no one", "/deny",
    "无", "没有", "不知道", "不清楚", "没", "否",
})
# "go on without the date", "keep the date", "日期不改": the close date stays as it is.
KEEP_CLOSE = re.compile(
    r"^\s*(?:no|none|skip|keep|leave|without|go\s+on|continue|never\s*mind)\b.*$|^\s*-\s*$"
    r"|不改|不用改|不变|保持|跳过|先不|没有日期|不要日期|无$|否$|算了", re.IGNORECASE)
MAX_DEAL_CHOICES = 8
# "new deal with Acme …", "create an opportunity …", "给华联新建一个商机": opening a deal, not changing one.
NEW_DEAL = re.compile(
    r"\b(?:create|creating|register|add)\s+(?:a\s+|an\s+|one\s+)?(?:new\s+)?(?:deal|opportunity|oppty|oppo|opp)\b"
    r"|\b(?:open|opening|start|log|enter)\s+(?:a|an|one)\s+(?:new\s+)?(?:deal|opportunity|oppty|oppo|opp)\b"
    # "new deal …", but not "move the new deal to proposal": that one exists.
    r"|(?<!\bthe\s)(?<!\bmy\s)(?<!\bour\s)(?<!\bthis\s)(?<!\bthat\s)\bnew\s+(?:deal|opportunity|oppty|opp)\b"
    r"|新建|新增|创建|新开|录入|^新商机|(?:建|开|加|添加|登记)(?:一)?(?:个|条)?(?:新)?商机", re.IGNORECASE)
CLOSE_WORDS = re.compile(
    r"\b(?:clos\w*|expected|due|sign\w*|by|until|end\s+of|eom|eoq)\b|成交|签约|签单|截止|底|之前|以前|前|结单|落地",
    re.IGNORECASE)
# Where a close date is said ("close date last month", "closes in March", "成交日期改到上个月"), so that
# words there which are no usable date are refused out loud instead of dropped.
CLOSE_SAID = re.compile(
    r"\b(?:(?:expected\s+)?clos(?:e|ing)\s+date|expected\s+close|clos(?:es|ing)\s+(?:on|by|in|at))\b"
    r"\s*(?:is|to|on|by|at|in|of|:|=)?\s*(?:to|on|by|in)?\s*(?P<said>[^,;.!?\n]*)"
    r"|(?:预计)?(?:成交日期|成交时间|结单日期|截止日期|预计成交)\s*(?:改成|改为|改到|调到|设为|为|是|在|:|：)?\s*"
    r"(?P<zh>[^，,；;。！!？?\n]*)", re.IGNORECASE)
STAGE_NAMED = re.compile(
    r"\bstage\s+(?:to\s+)?[\"“']?([A-Za-z][\w-]{1,30})|\b(?:to|into)\s+(?:the\s+)?[\"“']?([A-Za-z][\w-]{1,30})[\"”']?"
    r"\s+(?:stage|phase)\b|(?:推进到|推到|移到|改到|进入)([\u4e00-\u9fffA-Za-z]{1,8}?)阶段|阶段(?:改成|改为|设为|调到)"
    r"([\u4e00-\u9fffA-Za-z]{1,8})", re.IGNORECASE)
FREE_TEXT_SLOTS = frozenset({"lost_reason", "competitor", "name"})
# A question about the deal's probability at the card ("what's the probability now?", "赢率现在多少？").
PROBABILITY_ASKED = re.compile(
    r"\b(?:probability|likelihood|chances?|win\s+rate)\b.*(?:\?|$)|(?:what|how).*\b(?:probability|likely)\b"
    r"|(?:赢率|概率|把握|可能性|成交率).*(?:多少|几|吗|[?？])", re.IGNORECASE)


def creating_deal(text: str) -> bool:
    """Whether a message opens a new deal rather than changing one."""
    return bool(text) and NEW_DEAL.search(text) is not None and not deal_refs(text)


def deal_name_from(text: str, customer_name: str) -> str:
    """The deal's name from the clauses of a 'new deal' message that are not the command, the amount, the
    probability, the stage or the close date: 'new deal with Acme: 80 dishwashers, 120k' → '80 dishwashers'.
    """
    kept: list[str] = []
    for clause in re.split(r"[,;:!?，。；：！？\n]+", text):
        piece = clause.strip(" .-–—")
        if not piece or NEW_DEAL.search(piece) or CLOSE_WORDS.search(piece):
            continue
        if read_probability(piece) != (None, None):
            continue
        if amount_in_text(piece) is not None or APPROXIMATE.search(piece) or stage_in_text(piece):
            continue
        if customer_name and fuzz.WRatio(piece, customer_name, processor=utils.default_process) >= 90:
            continue
        kept.append(piece)
    return short(", ".join(kept), 200) if kept else ""


def close_said(text: str) -> str | None:
    """The words said as the close date ('close date last month' → 'last month'), or None."""
    match = CLOSE_SAID.search(text)
    if match is None:
        return None
    return (match.group("said") or match.group("zh") or "").strip()


def fill_or_note(turn: Turn, name: str, value: str | int | None, *, said: str) -> None:
    """A deal field read from a message: its value fills the slot `name`; None (what was `said` is no
    `name`) is noted and marks the field unclear, so the form asks for it again."""
    slots = turn.slots
    if value is None:
        slots[f"_{name}_unclear"] = said
        Handler.note(turn, turn.t(f"deal.bad_{name}", given=short(said, 40)))
    else:
        slots[name] = value
        slots.pop(f"_{name}_unclear", None)


def read_probability_into(turn: Turn, text: str) -> None:
    """A probability in the message fills the slot; one outside 0–100 is noted and asked again."""
    if not text:
        return
    value, unclear = read_probability(text)
    if value is not None or unclear is not None:
        fill_or_note(turn, "probability", value, said=unclear or "")


def read_stage_into(turn: Turn, text: str) -> None:
    """The stage this message names (its entity, else its words); one that is no stage is noted and asked."""
    said = turn.parse.entity("stage")
    if said is not None and any(start < said.end and said.start < end for start, end in closing_spans(text)):
        said = None  # "成交日期改到…": the close date, not the stage "won"
    if said is not None:
        fill_or_note(turn, "stage", stage_of(said.value), said=said.value)
    elif text and (stage := stage_in_text(text)) is not None:
        fill_or_note(turn, "stage", stage, said=text)
    elif text and (named := STAGE_NAMED.search(text)) is not None:
        # "move Acme to stage banana": a stage was asked for, just not one that exists.
        given = next(group for group in named.groups() if group)
        if stage_of(given) is None:
            fill_or_note(turn, "stage", None, said=given)


def read_amount_into(turn: Turn, text: str) -> None:
    """The amount this message states (its entity, else its words); a vague one is noted and asked."""
    slots = turn.slots
    raw_amount = turn.entity("amount")
    if raw_amount is not None and text and percent_reading(text, raw_amount):
        raw_amount = None
    if raw_amount is not None:
        amount = parse_amount(raw_amount)
        fill_or_note(turn, "amount", str(amount) if amount is not None else None, said=raw_amount)
    elif text:
        amount = amount_in_text(without_percentages(re.sub(r"(?i)\bOP\s*[-#]?\s*\d+", " ", text)))
        if amount is not None:
            fill_or_note(turn, "amount", str(amount), said=text)
        elif (vague := APPROXIMATE.search(text)) is not None:
            # Said as typed (not cut short): the words that made the amount vague.
            slots["_amount_unclear"] = vague.group(0)
            Handler.note(turn, turn.t("deal.bad_amount", given=vague.group(0)))


def said_close_day(turn: Turn) -> date | None:
    """The first day this message names, as a close date: a span said ('下个月', 'next quarter', 'in March')
    closes at its end, not on its first day."""
    found = sorted((item for item in turn.parse.entities if item.entity in ("date", "time")),
                   key=lambda item: item.start)
    for item in found:
        when = parse_when(item.value, zone(turn))
        if when is None:
            continue
        span = asked_period(turn, item.text, future=True) if item.text else None
        if span is not None and span.start != span.end:
            return span.end
        return when if not isinstance(when, datetime) else when.astimezone(zone(turn)).date()
    return None


def read_close_into(turn: Turn, text: str, *, open_deal: bool) -> None:
    """The close date this message says. One in the past for a deal that stays open, or words that are no
    date ('close date soon'), are refused and remembered so the card and the question say so."""
    day = said_close_day(turn)
    said = close_said(text) if text else None
    if day is not None:
        shown = day_label(turn, day)
    elif said:
        period = asked_period(turn, said, future=True)
        if period is None:
            refuse_close(turn, turn.t("sales.close_unreadable", given=short(said, 40)))
            return
        day, shown = period.end, said
    else:
        return
    if open_deal and day < local_today(turn):
        refuse_close(turn, turn.t("sales.close_past", given=short(shown, 40)))
        return
    turn.slots["close"] = day.isoformat()
    turn.slots.pop("_close_refused", None)


def says_a_change(turn: Turn, text: str) -> bool:
    """Whether a message names a stage, an amount or a probability (an answer that changes other things)."""
    if turn.entity("stage") or turn.entity("amount") or stage_in_text(text):
        return True
    return read_probability(text) != (None, None) or amount_in_text(without_percentages(text)) is not None


def refuse_close(turn: Turn, why: str) -> None:
    """Remember why the close date said was not taken (the value asked for stays unset)."""
    turn.slots["_close_refused"] = why
    turn.slots.pop("close", None)


def amount_answer(turn: Turn, raw: str) -> str:
    """An answer to the amount question: an exact amount ('50k', '5万'), never 'fifty-ish'."""
    amount = parse_amount(raw) or amount_in_text(raw)
    if amount is None:
        raise SlotInvalid(turn.t("deal.bad_amount", given=short(raw, 40)))
    turn.slots.pop("_amount_unclear", None)
    return str(amount)


def probability_answer(turn: Turn, raw: str) -> int:
    """An answer to the probability question, 0–100."""
    value = parse_probability(raw)
    if value is None:
        raise SlotInvalid(turn.t("deal.bad_probability", given=short(raw, 40)))
    turn.slots.pop("_probability_unclear", None)
    return value


def stage_answer(turn: Turn, raw: str, *, allowed: Sequence[str] = STAGES) -> str:
    """An answer to the stage question: a stage of `allowed`, by its entity or its words."""
    entity = turn.entity("stage")
    stage = stage_of(entity) if entity else None
    stage = stage or stage_of(raw)
    if stage is None or stage not in allowed:
        key = "deal.bad_stage" if allowed == STAGES else "deal.bad_new_stage"
        raise SlotInvalid(turn.t(key, given=short(raw, 40)))
    turn.slots.pop("_stage_unclear", None)
    return stage


def close_answer(turn: Turn, raw: str, *, open_deal: bool, keep: str | None) -> str | None:
    """An answer to the close-date question: a day (not in the past for an open deal); `keep` (the value
    before, or None for none) when the person goes on without a date."""
    day = said_close_day(turn)
    if day is None and (when := parse_when(raw, zone(turn))) is not None:
        day = when if not isinstance(when, datetime) else when.astimezone(zone(turn)).date()
    if day is None:
        if KEEP_CLOSE.search(raw.strip()) or raw.strip().casefold() in NO_ANSWER:
            turn.slots.pop("_close_refused", None)
            return keep
        period = asked_period(turn, raw, future=True)
        if period is None:
            raise SlotInvalid(turn.t("deal.bad_close", given=short(raw, 40)))
        day = period.end
    if open_deal and day < local_today(turn):
        raise SlotInvalid(turn.t("deal.close_in_past", day=day_label(turn, day)))
    turn.slots.pop("_close_refused", None)
    return day.isoformat()


def deal_snapshot(deal: OpportunityOut) -> dict[str, Any]:
    """What the card needs of a deal, JSON-safe."""
    return {
        "ref": deal.ref, "name": deal.name, "customer": deal.customer_name, "stage": deal.stage,
        "amount": str(deal.amount), "close": deal.expected_close.isoformat() if deal.expected_close else None,
        "lost_reason": deal.lost_reason or "", "probability": deal.probability, "currency": deal.currency,
    }


def deal_title(deal: OpportunityOut) -> str:
    """'OP-3 Acme service contract · Acme Corp', for a button."""
    return short(f"{deal.ref} {deal.name} · {deal.customer_name}", 70)


DEAL_SLOT = Slot("deal", "deal.ask_deal", entity="deal")
CUSTOMER_SLOT = Slot("customer", "deal.ask_customer", entity="customer", required=False)
NAME_SLOT = Slot("name", "deal.ask_name", free_text=True, required=False)
STAGE_SLOT = Slot("stage", "deal.ask_stage", entity="stage", required=False)
AMOUNT_SLOT = Slot("amount", "deal.ask_amount", entity="amount", required=False)
PROBABILITY_SLOT = Slot("probability", "deal.ask_probability", required=False)
CLOSE_SLOT = Slot("close", "deal.ask_close", entity="date", required=False)
CHANGES_SLOT = Slot("changes", "deal.ask_changes", required=False)
LOST_REASON_SLOT = Slot("lost_reason", "deal.ask_lost_reason", free_text=True, required=False)
COMPETITOR_SLOT = Slot("competitor", "deal.ask_competitor", required=False)


class DealChange(StaffHandler):
    """J6: 'move the Acme renewal to negotiation, 50k' — the deal grounded in the speaker's own deals, every
    change shown old → new on a card first; a part that cannot be taken is said, never dropped."""

    intent = "update_deal"
    roles = SALES_ROLES
    slots = (DEAL_SLOT, STAGE_SLOT, AMOUNT_SLOT, PROBABILITY_SLOT, CLOSE_SLOT, CHANGES_SLOT, LOST_REASON_SLOT,
             COMPETITOR_SLOT)
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """Which deal, and the new stage, amount, probability and close date, from the first message."""
        text = spoken(turn)
        await self._find_deal(turn, text or turn.entity("deal") or "", first=True)
        self._read_changes(turn, text)

    def next_slot(self, turn: Turn) -> Slot | None:
        """Deal, then anything unclear, then something to change, then why it was lost."""
        slots = turn.slots
        if "deal" not in slots:
            return DEAL_SLOT
        if slots.get("_stage_unclear"):
            return STAGE_SLOT
        if slots.get("_amount_unclear"):
            return AMOUNT_SLOT
        if slots.get("_probability_unclear"):
            return PROBABILITY_SLOT
        if not self._diff(turn):
            return CLOSE_SLOT if slots.get("_close_refused") else CHANGES_SLOT
        if slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            if not slots.get("lost_reason"):
                return LOST_REASON_SLOT
            if "competitor" not in slots:
                return COMPETITOR_SLOT
        return None

    async def correct(self, turn: Turn) -> list[str]:
        """What this message says for the form, whatever was asked: said now beats said before — another
        deal named replaces the one in the form; a new stage, amount, probability or date replaces the old."""
        before = {name: turn.slots.get(name) for name in ("deal", "stage", "amount", "probability", "close",
                                                         "_close_refused")}
        text, awaiting = spoken(turn), turn.state.awaiting
        await self._retarget(turn, text, words=awaiting not in FREE_TEXT_SLOTS)
        if awaiting not in FREE_TEXT_SLOTS:
            # The value asked for is the answer's to give (checked there, with its hint).
            self._read_changes(turn, text, skip=awaiting or "")
        changed = [name for name, value in before.items()
                   if turn.slots.get(name) not in (value, None) and not name.startswith("_")]
        if before["deal"] and "deal" not in turn.slots and awaiting == CONFIRM:
            # "no, OP-5" at the card, for a deal not found: the card is gone; which deal is asked, with why.
            changed.append("deal")
        # Elsewhere a deal named but not found is no new value: the answer's check asks which deal next.
        return changed

    # One method per question (docs/dialogue.md): the dialogue calls validate_<slot> and ask_<slot>. An
    # unclear answer gets a hint and the question again.

    async def validate_deal(self, turn: Turn, raw: str) -> str:
        """Which deal an answer names: among the deals just offered first, then all of the person's."""
        text = spoken(turn) or turn.entity("deal") or raw
        choices = [ref for ref, _title in turn.slots.get("_choices") or []]
        place = ordinal_choice(text) if choices else None
        if place is not None and place <= len(choices):
            # "the second one" / "第二个": the deal offered in that place.
            text = choices[place - 1]
        found = await ground_deal(turn.core, turn.actor, text, among=choices)
        if found.one is not None:
            self._chosen(turn, found.one)
            return found.one.ref
        if found.matches:
            offered = found.matches[:MAX_DEAL_CHOICES]
            turn.slots["_choices"] = [[deal.ref, deal_title(deal)] for deal in offered]
            raise SlotInvalid(turn.t("sales.deal_several", query=short(found.said or raw, 40)))
        if (ref := reference(found)) is not None:
            raise SlotInvalid(turn.t("deal.not_found", ref=ref))
        raise SlotInvalid(turn.t("deal.unknown", query=short(found.said or raw, 40)))

    async def ask_deal(self, turn: Turn) -> list[Reply]:
        """The deals offered, else the person's open ones, as buttons (none open: the task ends)."""
        choices: list[list[str]] = turn.slots.get("_choices") or []
        if not choices:
            deals = (await turn.core.sales.list_opportunities(turn.actor, open_only=True,
                                                              limit=MAX_DEAL_CHOICES)).items
            if not deals:
                turn.state.finish()
                return [turn.say("deal.none_open")]
            choices = [[deal.ref, deal_title(deal)] for deal in deals]
        return [Reply(text=turn.t("deal.ask_deal"),
                      buttons=tuple(Button(title=title, payload=payload(self.intent, deal=ref))
                                    for ref, title in choices))]

    async def validate_stage(self, turn: Turn, raw: str) -> str:
        """A stage, by its entity or its words."""
        await self._follow_deal(turn)
        return stage_answer(turn, raw)

    async def ask_stage(self, turn: Turn) -> list[Reply]:
        """The stages as buttons."""
        return [Reply(text=turn.t("deal.ask_stage"), buttons=tuple(
            Button(title=turn.t(f"deal.stages.{stage}"), payload=payload("update_deal", stage=stage))
            for stage in STAGES))]

    async def validate_amount(self, turn: Turn, raw: str) -> str:
        """An exact amount ('50k', '5万'), never 'fifty-ish'."""
        await self._follow_deal(turn)
        return amount_answer(turn, raw)

    async def validate_probability(self, turn: Turn, raw: str) -> int:
        """0–100."""
        await self._follow_deal(turn)
        return probability_answer(turn, raw)

    async def validate_close(self, turn: Turn, raw: str) -> str | None:
        """A new close date; or, when this answer changes other things instead ('set OP-1 to proposal,
        probability 40%'), those are taken and the close date stays as it is."""
        await self._follow_deal(turn)
        deal = turn.slots.get("deal_info") or {}
        try:
            return close_answer(turn, raw, open_deal=self._stays_open(turn), keep=deal.get("close"))
        except SlotInvalid:
            text = spoken(turn) or raw
            self._read_changes(turn, text, skip="close")
            if not self._diff(turn) or not says_a_change(turn, text):
                raise
            turn.slots.pop("_close_refused", None)
            self.note(turn, turn.t("sales.close_kept"))
            kept: str | None = deal.get("close")
            return kept

    async def ask_close(self, turn: Turn) -> list[Reply]:
        """The close date again (saying why the one said was not taken), with [Keep the date]."""
        lines = [turn.slots["_close_refused"]] if turn.slots.get("_close_refused") else []
        # "/deny", not a word: a button's payload must not say which language the person writes in.
        return [Reply(text="\n".join([*lines, turn.t("sales.ask_close_again")]),
                      buttons=(turn.button("sales.keep_close", "/deny"),))]

    async def validate_changes(self, turn: Turn, raw: str) -> bool:
        """What to change, in words; the same values again, or nothing understood, is asked again."""
        await self._follow_deal(turn)
        slots = turn.slots
        before = self._diff(turn)
        self._read_changes(turn, spoken(turn) or raw)
        if "deal" not in slots:
            return True  # another deal was named and must be found first: its question comes next
        if slots.get("_stage_unclear") or slots.get("_amount_unclear") or slots.get("_close_refused"):
            return True
        if not self._diff(turn):
            raise SlotInvalid(turn.t("deal.same_values" if before else "deal.no_change_understood"))
        return True

    async def ask_changes(self, turn: Turn) -> list[Reply]:
        """What to change, with the deal as it stands."""
        deal = turn.slots["deal_info"]
        return [turn.say("deal.ask_changes", ref=deal["ref"], name=deal["name"],
                         stage=turn.t(f"deal.stages.{deal['stage']}"),
                         amount=money(deal["amount"], deal.get("currency")))]

    async def validate_competitor(self, turn: Turn, raw: str) -> str:
        """Who won the deal; 'no' / '没有' says nobody."""
        return "" if raw.strip().casefold() in NO_ANSWER else raw.strip()[:200]

    async def ask_competitor(self, turn: Turn) -> list[Reply]:
        """Who won it, with [No competitor]."""
        return [Reply(text=turn.t("deal.ask_competitor"),
                      buttons=(Button(title=turn.t("deal.no_competitor"), payload="none"),))]

    async def _follow_deal(self, turn: Turn) -> None:
        """Said now beats said before: "mark OP-6 as lost" is about OP-6, whatever was asked."""
        await self._retarget(turn, spoken(turn), words=False)

    async def confirmation(self, turn: Turn) -> Reply:
        """Old → new for every field that changes, and what was said but cannot be taken."""
        deal = turn.slots["deal_info"]
        lines = self.notes(turn)
        lines.append(turn.t("deal.card_title", ref=deal["ref"], name=deal["name"], customer=deal["customer"]))
        for field_name, old, new in self._diff(turn):
            lines.append(turn.t(f"deal.card_{field_name}", old=self._shown(turn, field_name, old),
                                new=self._shown(turn, field_name, new)))
        if turn.slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            lines.append(turn.t("deal.card_lost_reason", reason=turn.slots.get("lost_reason", "")))
            if turn.slots.get("competitor"):
                lines.append(turn.t("deal.card_competitor", competitor=turn.slots["competitor"]))
        refused = turn.slots.get("_close_refused")
        if refused:
            # A part that cannot be taken is said on the card, not applied nor dropped in silence.
            lines += [refused, turn.t("sales.close_refused_hint")]
            return Reply(text="\n".join(lines), buttons=(
                turn.button("sales.yes_without_close", "/affirm"), turn.button("staff.no", "/deny")))
        return confirm_card(turn, "\n".join(lines))

    async def card_question(self, turn: Turn) -> list[Reply]:
        """'what's the probability now?' at the card: the deal's probability, and what this change makes it
        (a new stage brings its default probability unless one was said, as the sales service does)."""
        deal = turn.slots.get("deal_info")
        if not deal or not PROBABILITY_ASKED.search(spoken(turn)) or deal.get("probability") is None:
            return []
        old = int(deal["probability"])
        new = turn.slots.get("probability")
        stage = turn.slots.get("stage")
        if new is None and stage and stage != deal["stage"]:
            new = DEFAULT_STAGE_PROBABILITY[OpportunityStage(stage)]
        new = old if new is None else int(new)
        if new == old:
            return [turn.say("deal.probability_answer_same", old=old)]
        return [turn.say("deal.probability_answer", old=old, new=new)]

    async def execute(self, turn: Turn) -> list[Reply]:
        """Change the deal through the sales service (which records the history)."""
        slots, deal = turn.slots, turn.slots["deal_info"]
        changes: dict[str, Any] = {}
        for field_name, _old, new in self._diff(turn):
            if field_name == "stage":
                changes["stage"] = OpportunityStage(new)
            elif field_name == "amount":
                changes["amount"] = Decimal(new)
            elif field_name == "probability":
                changes["probability"] = int(new)
            else:
                changes["expected_close"] = date.fromisoformat(new)
        if slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            changes["lost_reason"] = slots.get("lost_reason") or None
            changes["competitor"] = slots.get("competitor") or None
        patch = OpportunityPatch(**changes)
        updated = await turn.core.sales.update_opportunity(turn.actor, deal["ref"], patch)
        turn.state.context["deal"] = updated.ref
        text = turn.t("deal.updated", ref=updated.ref, name=updated.name,
                      stage=turn.t(f"deal.stages.{updated.stage}"),
                      amount=money(updated.amount, updated.currency))
        if updated.expected_close:
            text += " " + turn.t("deal.closes", day=day_label(turn, updated.expected_close))
        return [Reply(text=text)]

    # --- helpers ---

    def _diff(self, turn: Turn) -> list[tuple[str, str | None, str]]:
        """(field, old, new) for each value that differs from the deal's current one."""
        slots, deal = turn.slots, turn.slots.get("deal_info")
        if not deal:
            return []
        changed: list[tuple[str, str | None, str]] = []
        if slots.get("stage") and slots["stage"] != deal["stage"]:
            changed.append(("stage", deal["stage"], slots["stage"]))
        if slots.get("amount") and Decimal(slots["amount"]) != Decimal(deal["amount"]):
            changed.append(("amount", deal["amount"], slots["amount"]))
        if slots.get("close") and slots["close"] != deal["close"]:
            changed.append(("close", deal["close"], slots["close"]))
        if slots.get("probability") is not None and int(slots["probability"]) != deal.get("probability"):
            old = deal.get("probability")
            changed.append(("probability", None if old is None else str(old), str(slots["probability"])))
        return changed

    def _stays_open(self, turn: Turn) -> bool:
        """Whether the deal is open after this change (only a closed deal can close in the past)."""
        deal = turn.slots.get("deal_info") or {}
        return (turn.slots.get("stage") or deal.get("stage")) in OPEN_STAGES

    def _shown(self, turn: Turn, field_name: str, value: str | None) -> str:
        if value is None:
            return "—"
        if field_name == "stage":
            return turn.t(f"deal.stages.{value}")
        if field_name == "amount":
            return money(value, (turn.slots.get("deal_info") or {}).get("currency"))
        if field_name == "probability":
            return f"{value}%"
        return day_label(turn, date.fromisoformat(value))

    def _read_changes(self, turn: Turn, text: str, *, skip: str = "") -> None:
        """Stage, amount, probability and close date from this message's entities, else its words (all but
        the `skip` one)."""
        slots = turn.slots
        if skip != "stage":
            read_stage_into(turn, text)
        if skip != "amount":
            read_amount_into(turn, text)
        if skip != "probability":
            read_probability_into(turn, text)
        if skip != "close":
            read_close_into(turn, text, open_deal=self._stays_open(turn))
        if text and slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            reason = REASON_EN.search(text) or REASON_ZH.search(text)
            if reason and not slots.get("lost_reason"):
                slots["lost_reason"] = reason.group("why").strip()[:2000]
            rival = COMPETITOR_EN.search(text) or COMPETITOR_ZH.search(text)
            if rival and not slots.get("competitor"):
                slots["competitor"] = rival.group("who").strip()[:200]

    async def _find_deal(self, turn: Turn, text: str, *, first: bool = False) -> None:
        """By OP-n, else by the words of the deal's or its customer's name; a first message that names no
        deal at all means the deal talked about just before."""
        found = await ground_deal(turn.core, turn.actor, text)
        if found.found is not Found.UNSAID or not first:
            self._take(turn, found)
            return
        remembered = turn.state.context.get("deal")
        if remembered and deal_refs(remembered):
            deal = await deal_by_ref(turn.core, turn.actor, remembered)
            if deal is not None:
                self._chosen(turn, deal)

    async def _retarget(self, turn: Turn, text: str, *, words: bool) -> bool:
        """Another deal named in this message (by OP-n; with `words`, by name when exactly one fits) takes
        the place of the one in the form."""
        if not text:
            return False
        refs = deal_refs(text)
        if refs:
            if refs[0] in (turn.slots.get("deal"), turn.slots.get("_ref_looked_up")):
                return False
            self._take(turn, await ground_deal(turn.core, turn.actor, text))
            return True
        if not words:
            return False
        found = await ground_deal(turn.core, turn.actor, text)
        if found.one is None or found.one.ref == turn.slots.get("deal"):
            return False
        self._chosen(turn, found.one)
        return True

    def _take(self, turn: Turn, found: Grounded[OpportunityOut]) -> None:
        """The deal found, or the choice between several, or the note that what was said matched none."""
        slots = turn.slots
        if found.one is not None:
            self._chosen(turn, found.one)
            return
        for name in ("deal", "deal_info"):
            slots.pop(name, None)
        if found.matches:
            slots["_choices"] = [[deal.ref, deal_title(deal)] for deal in found.matches[:MAX_DEAL_CHOICES]]
            self.note(turn, turn.t("deal.several"))
        elif (ref := reference(found)) is not None:
            slots.pop("_choices", None)
            slots["_ref_looked_up"] = ref  # looked up once per message, and said once
            self.note(turn, turn.t("deal.not_found", ref=ref))
        elif found.found is Found.NONE:
            slots.pop("_choices", None)
            self.note(turn, turn.t("deal.unknown", query=short(found.said, 40)))

    @staticmethod
    def _chosen(turn: Turn, deal: OpportunityOut) -> None:
        turn.slots["deal"] = deal.ref
        turn.slots["deal_info"] = deal_snapshot(deal)
        turn.slots.pop("_choices", None)


class NewDeal(CustomerHandler):
    """'new deal with Acme: 80 dishwashers, 120k, closing end of March' → a confirmed new opportunity.

    Its own form (customer, name, amount, close date, stage, probability), reached through the update_deal
    intent: creating and changing a deal say the same things and differ by one word ("new", "新建"), which a
    rule reads exactly while a classifier would have to learn it from a few examples; the card shows
    "Create this new deal?" before anything is written, so a misread costs one "no".
    """

    intent = "update_deal"
    roles = SALES_ROLES
    slots = (Slot("customer", "deal.ask_customer", entity="customer"), NAME_SLOT, AMOUNT_SLOT, CLOSE_SLOT,
             STAGE_SLOT, PROBABILITY_SLOT)
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """Customer, name, amount, stage, probability and close date from the first message."""
        text, slots = spoken(turn), turn.slots
        await self.take_customer(turn, turn.entity("customer"), NEW_DEAL.sub(" ", text))
        self._read_values(turn, text)
        name = deal_name_from(text, slots.get("customer_name", ""))
        if name:
            slots["name"] = name

    def next_slot(self, turn: Turn) -> Slot | None:
        """Customer, then anything unclear or missing: stage, amount, probability, close date, name."""
        slots, by_name = turn.slots, {slot.name: slot for slot in self.slots}
        if "customer" not in slots:
            return by_name["customer"]
        if slots.get("_stage_unclear"):
            return by_name["stage"]
        if "amount" not in slots or slots.get("_amount_unclear"):
            return by_name["amount"]
        if slots.get("_probability_unclear"):
            return by_name["probability"]
        if "close" not in slots or slots.get("_close_refused"):
            return by_name["close"]
        if not slots.get("name"):
            return by_name["name"]
        return None

    async def correct(self, turn: Turn) -> list[str]:
        """A new value for any field, at any step ('make it 60k', '改成谈判阶段', 'close end of April')."""
        if turn.state.awaiting in FREE_TEXT_SLOTS:
            return []
        names = ("amount", "stage", "probability", "close")
        before = {name: turn.slots.get(name) for name in names}
        self._read_values(turn, spoken(turn), skip=turn.state.awaiting or "")
        return [name for name in names if turn.slots.get(name) != before[name]]

    # One method per question (docs/dialogue.md): the dialogue calls validate_<slot> and ask_<slot> (the
    # customer's are CustomerHandler's).

    async def validate_name(self, turn: Turn, raw: str) -> str:
        """A name of a few words."""
        name = " ".join(raw.split())
        if len(name) < 2:
            raise SlotInvalid(turn.t("deal.bad_name"))
        return name[:200]

    async def validate_amount(self, turn: Turn, raw: str) -> str:
        """An exact amount ('50k', '5万'), never 'fifty-ish'."""
        return amount_answer(turn, raw)

    async def validate_close(self, turn: Turn, raw: str) -> str | None:
        """A day from today on, or none yet."""
        return close_answer(turn, raw, open_deal=True, keep=None)

    async def ask_close(self, turn: Turn) -> list[Reply]:
        """When it closes (saying why a date said was not taken), with [No date yet]."""
        lines = [turn.slots["_close_refused"]] if turn.slots.get("_close_refused") else []
        return [Reply(text="\n".join([*lines, turn.t("deal.ask_close")]),
                      buttons=(Button(title=turn.t("deal.no_close"), payload="/deny"),))]

    async def validate_stage(self, turn: Turn, raw: str) -> str:
        """An open stage: a new deal is not won or lost yet."""
        return stage_answer(turn, raw, allowed=OPEN_STAGES)

    async def ask_stage(self, turn: Turn) -> list[Reply]:
        """The open stages as buttons."""
        return [Reply(text=turn.t("deal.ask_stage"), buttons=tuple(
            Button(title=turn.t(f"deal.stages.{stage}"), payload=payload(self.intent, stage=stage))
            for stage in OPEN_STAGES))]

    async def validate_probability(self, turn: Turn, raw: str) -> int:
        """0–100."""
        return probability_answer(turn, raw)

    async def confirmation(self, turn: Turn) -> Reply:
        """The deal as it will be opened."""
        slots = turn.slots
        stage = slots.get("stage") or OpportunityStage.QUALIFICATION.value
        lines = [
            *self.notes(turn),
            turn.t("deal.new_card_title"),
            turn.t("deal.new_card_customer", name=slots["customer_name"], code=slots["customer"]),
            turn.t("deal.new_card_name", name=slots["name"]),
            turn.t("deal.new_card_amount", amount=money(slots["amount"], currency(turn))),
            turn.t("deal.new_card_stage", stage=turn.t(f"deal.stages.{stage}"),
                   probability=self._probability(turn, stage)),
            turn.t("deal.new_card_close", day=day_label(turn, date.fromisoformat(slots["close"])))
            if slots.get("close") else turn.t("deal.new_card_no_close"),
        ]
        return confirm_card(turn, "\n".join(lines))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Open the deal through the sales service (which records its creation in the history)."""
        slots = turn.slots
        stage = OpportunityStage(slots.get("stage") or OpportunityStage.QUALIFICATION.value)
        created = await turn.core.sales.create_opportunity(turn.actor, OpportunityIn(
            customer_code=slots["customer"],
            name=slots["name"],
            stage=stage,
            amount=Decimal(slots["amount"]),
            probability=slots.get("probability"),
            expected_close=date.fromisoformat(slots["close"]) if slots.get("close") else None,
        ))
        turn.state.context["deal"] = created.ref
        turn.state.context["customer"] = created.customer_code
        text = turn.t("deal.created", ref=created.ref, name=created.name, customer=created.customer_name,
                      stage=turn.t(f"deal.stages.{created.stage}"),
                      amount=money(created.amount, created.currency), probability=created.probability)
        if created.expected_close:
            text += " " + turn.t("deal.closes", day=day_label(turn, created.expected_close))
        return [Reply(text=text, buttons=(
            turn.button("deal.update_button", payload("update_deal", deal=created.ref), ref=created.ref),))]

    def _read_values(self, turn: Turn, text: str, *, skip: str = "") -> None:
        """Stage (an open one: '3月底成交' says when it closes, not that it is won), amount, probability and
        close date from a message (all but the `skip` one)."""
        slots = turn.slots
        if skip != "stage":
            had_stage = slots.get("stage")
            read_stage_into(turn, text)
            if slots.get("stage") not in OPEN_STAGES:
                if had_stage:
                    slots["stage"] = had_stage
                else:
                    slots.pop("stage", None)
        if skip != "amount":
            read_amount_into(turn, text)
        if skip != "probability":
            read_probability_into(turn, text)
        if skip != "close":
            read_close_into(turn, text, open_deal=True)

    @staticmethod
    def _probability(turn: Turn, stage: str) -> int:
        given = turn.slots.get("probability")
        return int(given) if given is not None else DEFAULT_STAGE_PROBABILITY[OpportunityStage(stage)]


def _union(*groups: tuple[Slot, ...]) -> tuple[Slot, ...]:
    seen: dict[str, Slot] = {}
    for group in groups:
        for slot in group:
            seen.setdefault(slot.name, slot)
    return tuple(seen.values())


class UpdateDeal(StaffHandler):
    """The update_deal intent: a new deal when the message says so ("new deal …", "新建商机"), else a change
    to an existing one; each is its own form, and this handler passes every step to the one in progress."""

    intent = "update_deal"
    roles = SALES_ROLES
    # The dialogue looks slots up on the intent's handler, so it declares both forms' slots.
    slots = _union(DealChange.slots, NewDeal.slots)
    needs_confirmation = True

    def __init__(self) -> None:
        self._change = DealChange()
        self._new = NewDeal()

    def form(self, turn: Turn) -> DealChange | NewDeal:
        """The form this conversation is filling in."""
        return self._new if turn.slots.get("_new") else self._change

    async def prefill(self, turn: Turn) -> None:
        """Open a deal when the message says 'new', else change one."""
        if creating_deal(spoken(turn)):
            turn.slots["_new"] = True
        await self.form(turn).prefill(turn)

    def next_slot(self, turn: Turn) -> Slot | None:
        """The form's next question."""
        return self.form(turn).next_slot(turn)

    async def correct(self, turn: Turn) -> list[str]:
        """The form's reading of a correction."""
        return await self.form(turn).correct(turn)

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """The form's check of an answer."""
        return await self.form(turn).validate(turn, slot, raw)

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """The form's question."""
        return await self.form(turn).question(turn, slot)

    async def confirmation(self, turn: Turn) -> Reply:
        """The form's card."""
        return await self.form(turn).confirmation(turn)

    async def card_question(self, turn: Turn) -> list[Reply]:
        """The form's answer to a question about its card."""
        return await self.form(turn).card_question(turn)

    async def execute(self, turn: Turn) -> list[Reply]:
        """The form's action."""
        return await self.form(turn).execute(turn)


# --- lists: my visits, my deals --------------------------------------------------------------------------

TEAM = re.compile(
    r"\bteam'?s?\b|\bmy\s+(?:reps|people|staff|sales\s*people|guys)\b|\beveryone'?s?\b|\ball\s+reps\b"
    r"|\bsubordinates\b|团队|我们组|组里|下属|手下|部门|全组|大家的|各位|每个销售", re.IGNORECASE)
MONTH_EN_IN_TEXT = re.compile(
    rf"\b(?:in|for|during|of|closing|closes|close|by|since|from)\s+(?P<month>{MONTH_NAME_RE})\b"
    r"(?:\s+(?P<year>20\d\d))?", re.IGNORECASE)
MONTH_ZH_IN_TEXT = re.compile(
    r"(?:(?P<year>20\d\d)年)?(?<![\d个])(?P<month>1[0-2]|0?[1-9]|十[一二]?|[一二三四五六七八九])月"
    r"(?![\d一二三四五六七八九十]{1,3}[日号])")
OVER = re.compile(r"\b(?:over|above|more\s+than|greater\s+than|bigger\s+than|at\s+least|exceeding)\b|>"
                  r"|超过|大于|高于|以上|至少|不低于|不少于", re.IGNORECASE)
CLOSING_ZH = re.compile("成交|签约|签单")
WON_ZH = re.compile("赢单|赢了|拿下|已成交|成交了|已签约|签了")
MAX_LISTED = 20
MAX_UPDATE_BUTTONS = 3
DEFAULT_WATCH_DAYS = 30


@dataclass(frozen=True, slots=True)
class Period:
    """A span of days the person asked about, and how to say it."""

    start: date
    end: date
    name: str

    def label(self, turn: Turn) -> str:
        """'this week (Mon 15 Jun – Sun 21 Jun)'"""
        if self.start == self.end:
            return turn.t("sales.period_day", name=self.name, day=day_label(turn, self.start))
        return turn.t("sales.period_span", name=self.name, start=day_label(turn, self.start),
                      end=day_label(turn, self.end))


def asked_period(turn: Turn, text: str, *, future: bool) -> Period | None:
    """The days a message asks about ('this week', 'last month', 'in March', '本周', '3月'), or None.

    `future`: a month named without a year is the next one to come (deals closing) rather than the last
    one gone (visits).
    """
    today, folded = local_today(turn), text.casefold()
    monday = today - timedelta(days=today.weekday())

    def month(first: date, name: str) -> Period:
        return Period(first, month_end(first), name)

    def named(first: date) -> Period:
        return month(first, turn.t("sales.month_name", month=turn.t("staff.months").split()[first.month - 1],
                                   year=first.year))

    rules: tuple[tuple[str, Callable[[], Period]], ...] = (
        (r"\btoday\b|今天|今日", lambda: Period(today, today, turn.t("sales.today"))),
        (r"\byesterday\b|昨天|昨日", lambda: Period(today - timedelta(days=1), today - timedelta(days=1),
                                                  turn.t("sales.yesterday"))),
        (r"\b(?:last|previous|past)\s+week\b|上(?:个)?(?:周|星期|礼拜)",
         lambda: Period(monday - timedelta(days=7), monday - timedelta(days=1), turn.t("sales.last_week"))),
        (r"\bnext\s+week\b|下(?:个)?(?:周|星期|礼拜)",
         lambda: Period(monday + timedelta(days=7), monday + timedelta(days=13), turn.t("sales.next_week"))),
        (r"\bthis\s+week\b|\bthe\s+week\b|本周|这周|这个?星期|这个?礼拜|本星期",
         lambda: Period(monday, monday + timedelta(days=6), turn.t("sales.this_week"))),
        (r"\b(?:last|previous|past)\s+month\b|上(?:个)?月",
         lambda: month((today.replace(day=1) - timedelta(days=1)).replace(day=1),
                       turn.t("sales.last_month"))),
        (r"\bnext\s+month\b|下(?:个)?月",
         lambda: month(month_end(today) + timedelta(days=1), turn.t("sales.next_month"))),
        (r"\bthis\s+month\b|本月|这个月|当月",
         lambda: month(today.replace(day=1), turn.t("sales.this_month"))),
        (r"\bthis\s+quarter\b|本季度?|这个?季度",
         lambda: Period(*quarter_bounds(today), turn.t("sales.this_quarter"))),
        (r"\bnext\s+quarter\b|下(?:个|一)?季度",
         lambda: Period(*quarter_bounds(quarter_bounds(today)[1] + timedelta(days=1)),
                        turn.t("sales.next_quarter"))),
        (r"\b(?:last|previous)\s+quarter\b|上(?:个|一)?季度",
         lambda: Period(*quarter_bounds(quarter_bounds(today)[0] - timedelta(days=1)),
                        turn.t("sales.last_quarter"))),
        (r"\bthis\s+year\b|今年|本年",
         lambda: Period(date(today.year, 1, 1), date(today.year, 12, 31), turn.t("sales.this_year"))),
    )
    for pattern, build in rules:
        if re.search(pattern, folded):
            return build()
    found = MONTH_EN_IN_TEXT.search(text) or MONTH_ZH_IN_TEXT.search(text)
    if found is not None:
        raw = found.group("month")
        number = month_number(raw)
        if number is not None:
            year = int(found.group("year")) if found.group("year") else today.year
            if not found.group("year"):
                if future and number < today.month:
                    year += 1
                elif not future and number > today.month:
                    year -= 1
            return named(date(year, number, 1))
    return None


# "my deals", "我的商机", "mine": the speaker's own, even for a manager with a team.
OWN = re.compile(r"\b(?:my|mine|myself|i\s+own)\b|我的|我自己", re.IGNORECASE)


def wants_team(turn: Turn, text: str) -> bool:
    """Whether the person asks about their team rather than themselves."""
    return bool(text) and TEAM.search(text) is not None


def sees_team(turn: Turn) -> bool:
    """Managers (and admins) see their team's records; a rep only their own."""
    return turn.actor.is_admin or turn.actor.role is Role.MANAGER


def watch_days(turn: Turn) -> int:
    """After how many days the alert rules call a key customer unvisited, so the list and the alert agree.

    The rules file belongs to the notifier; it is only read here (the smallest window, as the sweep checks
    each), and a file that cannot be read leaves the built-in 30 days.
    """
    # Imported here, read-only: the rules are the notifier's, and the chat only shows what its sweep raises.
    from notifier.alerts import RulesError, active_rules

    try:
        thresholds = active_rules(turn.core.settings).thresholds("KeyCustomerNotVisited")
    except (RulesError, OSError):  # a broken rules file is the notifier's to report (it refuses to start)
        return DEFAULT_WATCH_DAYS
    return min(thresholds) if thresholds else DEFAULT_WATCH_DAYS


class ListVisits(StaffHandler):
    """'my visits this week', 'visits in March'; a manager's 'visits of my team this week', by rep."""

    intent = "list_visits"
    roles = SALES_ROLES

    async def execute(self, turn: Turn) -> list[Reply]:
        """The visits of the period (this week unless said), newest first; for a manager's team, by rep,
        with the key customers nobody has visited for the watch window."""
        text = spoken(turn)
        period = asked_period(turn, text, future=False) or asked_period(turn, "this week", future=False)
        assert period is not None
        team_asked = wants_team(turn, text)
        team = team_asked and sees_team(turn)
        page = await turn.core.sales.visits(
            turn.actor, rep=None if team else turn.actor.username, since=period.start, until=period.end,
            limit=MAX_LISTED * 3 if team else MAX_LISTED)
        lines: list[str] = []
        if team_asked and not team:
            lines.append(turn.t("sales.team_for_managers"))
        if not page.items:
            lines.append(turn.t("sales.no_team_visits" if team else "sales.no_visits",
                                period=period.label(turn)))
        else:
            lines.append(turn.t("sales.team_visits_title" if team else "sales.visits_title",
                                period=period.label(turn), count=page.total))
            if team:
                by_rep: dict[str, list[VisitOut]] = {}
                for visit in page.items:
                    by_rep.setdefault(visit.rep, []).append(visit)
                for rep, visits in sorted(by_rep.items()):
                    lines.append(turn.t("sales.rep_heading", rep=rep, count=len(visits)))
                    lines.extend(self._line(turn, visit) for visit in visits)
            else:
                lines.extend(self._line(turn, visit) for visit in page.items)
            if page.total > len(page.items):
                lines.append(turn.t("sales.more", count=page.total - len(page.items)))
        if team:
            days = watch_days(turn)
            missing = await turn.core.sales.unvisited_key_customers(turn.actor, days=days)
            if missing:
                lines.append(turn.t("sales.unvisited_title", days=days))
                for item in missing[:MAX_LISTED]:
                    seen = (turn.t("sales.last_visit", day=day_label(turn, item.last_visited_on))
                            if item.last_visited_on else turn.t("sales.never_visited"))
                    lines.append(turn.t("sales.unvisited_line", name=item.customer_name,
                                        owner=item.owner or "—", seen=seen))
        return [Reply(text="\n".join(lines))]

    @staticmethod
    def _line(turn: Turn, visit: VisitOut) -> str:
        """• Mon 15 Jun · Acme Corp — met Li — discussed renewal → next: send quote"""
        parts = [turn.t("sales.visit_line", day=day_label(turn, visit.visited_on),
                        customer=visit.customer_name)]
        if visit.contacts_met:
            parts.append(turn.t("sales.visit_met", names=", ".join(visit.contacts_met)))
        if visit.summary:
            parts.append(short(visit.summary, 80))
        if visit.outcome:
            parts.append(turn.t("sales.visit_outcome", outcome=short(visit.outcome, 60)))
        line = " — ".join(parts)
        if visit.next_step:
            line += " " + turn.t("sales.visit_next", step=short(visit.next_step, 60))
        return line


class ListFollowUps(StaffHandler):
    """'my follow-ups', '我的待办': the speaker's open follow-up tasks, soonest due first.

    No NLU intent of its own: the dialogue reads a sales person's "my jobs"/"我的待办" and a visit list that
    asks for follow-ups or tasks as this (`role_reading`)."""

    intent = "list_follow_ups"
    roles = SALES_ROLES

    async def execute(self, turn: Turn) -> list[Reply]:
        """The open tasks assigned to the speaker, through the sales service."""
        tasks = [task for task in await turn.core.sales.tasks(turn.actor, status="open")
                 if task.assignee == turn.actor.username]
        if not tasks:
            return [turn.say("sales.no_follow_ups")]
        names = dict(await turn.core.customers.names_in_scope(turn.actor))
        now = turn.now
        lines = [turn.t("sales.follow_ups_title", count=len(tasks))]
        for task in tasks[:MAX_LISTED]:
            due = turn.t("sales.follow_up_undated")
            if task.due_at:
                day = task.due_at.astimezone(zone(turn)).date()
                due = turn.t("sales.follow_up_due", day=day_label(turn, day))
            customer = names.get(task.customer_code or "", task.customer_code or "")
            line = turn.t("sales.follow_up_line", title=short(task.title, 60), due=due)
            if customer:
                line += " · " + customer
            if task.due_at and task.due_at < now:
                line += " " + turn.t("sales.overdue")
            lines.append(line)
        if len(tasks) > MAX_LISTED:
            lines.append(turn.t("sales.more", count=len(tasks) - MAX_LISTED))
        return [Reply(text="\n".join(lines))]


class ListDeals(StaffHandler):
    """'my deals', 'deals closing this month', 'my deals in negotiation', 'deals over 100k', a manager's
    'my team's deals' → by close date, overdue ones flagged, buttons to update the first few."""

    intent = "list_deals"
    roles = SALES_ROLES

    async def execute(self, turn: Turn) -> list[Reply]:
        """The deals asked for, through the sales service (which scopes them)."""
        text = spoken(turn)
        team_asked = wants_team(turn, text)
        team = team_asked and sees_team(turn)
        raw_stage = turn.entity("stage")
        stage = stage_of(raw_stage) if raw_stage else stage_in_text(text) if text else None
        if stage == OpportunityStage.CLOSED_WON.value and CLOSING_ZH.search(text) and not WON_ZH.search(text):
            # "本月成交的商机" asks what closes this month, not what was won.
            stage, raw_stage = None, None
        lines: list[str] = []
        if team_asked and not team:
            lines.append(turn.t("sales.team_for_managers"))
        if raw_stage and stage is None:
            return [Reply(text=turn.t("deal.bad_stage", given=short(raw_stage, 40)), buttons=tuple(
                Button(title=turn.t(f"deal.stages.{item}"), payload=payload(self.intent, stage=item))
                for item in STAGES))]
        minimum = self._minimum(turn, text)
        period = asked_period(turn, text, future=True)

        async def listed(whole_team: bool) -> Any:
            return await turn.core.sales.list_opportunities(
                turn.actor, owner=None if whole_team else turn.actor.username, stage=stage,
                open_only=stage is None, min_amount=minimum,
                closing_from=period.start if period else None,
                closing_before=period.end + timedelta(days=1) if period else None, limit=MAX_LISTED)

        page = await listed(team)
        if not page.items and not team and sees_team(turn) and not OWN.search(text):
            # A director asking "deals at risk this month" owns few deals herself: "none" would read as
            # "nothing at risk" while her team's are; unless she said "my", the team's are the answer.
            team_page = await listed(True)
            if team_page.items:
                page, team = team_page, True
        filters = [turn.t("sales.filter_stage", stage=turn.t(f"deal.stages.{stage}")) if stage
                   else turn.t("sales.filter_open")]
        if minimum is not None:
            filters.append(turn.t("sales.filter_over", amount=money(minimum)))
        if period is not None:
            filters.append(turn.t("sales.filter_closing", period=period.label(turn)))
        whose = turn.t("sales.team_deals" if team else "sales.my_deals")
        said = turn.t("sales.filter_join").join(filters)
        if not page.items:
            lines.append(turn.t("sales.no_deals", whose=whose, filters=said))
            return [Reply(text="\n".join(lines))]
        lines.append(turn.t("sales.deals_title", whose=whose, filters=said, count=page.total))
        today = local_today(turn)
        for deal in page.items:
            lines.append(self._line(turn, deal, today, team))
        if page.total > len(page.items):
            lines.append(turn.t("sales.more", count=page.total - len(page.items)))
        buttons = tuple(
            turn.button("deal.update_button", payload("update_deal", deal=deal.ref), ref=deal.ref)
            for deal in [item for item in page.items if item.stage in OPEN_STAGES][:MAX_UPDATE_BUTTONS])
        return [Reply(text="\n".join(lines), buttons=buttons)]

    @staticmethod
    def _minimum(turn: Turn, text: str) -> Decimal | None:
        """'over 100k', '10万以上': the smallest amount asked for."""
        raw = turn.entity("amount")
        amount = parse_amount(raw) if raw else amount_in_text(without_percentages(text)) if text else None
        return amount if amount is not None and (OVER.search(text) or raw) else None

    @staticmethod
    def _line(turn: Turn, deal: OpportunityOut, today: date, team: bool) -> str:
        """• OP-3 Acme service contract · Acme Corp — Negotiation, ¥100,000.00, 75%, closes Wed 20 May ⚠"""
        close = (turn.t("sales.deal_closes", day=day_label(turn, deal.expected_close)) if deal.expected_close
                 else turn.t("sales.deal_no_close"))
        line = turn.t("sales.deal_line", ref=deal.ref, name=short(deal.name, 50), customer=deal.customer_name,
                      stage=turn.t(f"deal.stages.{deal.stage}"), amount=money(deal.amount),
                      probability=deal.probability, close=close)
        if team:
            line += " " + turn.t("sales.deal_owner", owner=deal.owner)
        if deal.stage in OPEN_STAGES and deal.expected_close and deal.expected_close < today:
            line += " " + turn.t("sales.overdue")
        return line


def handlers() -> list[Handler]:
    """One instance of every sales handler."""
    return [LogVisit(), UpdateDeal(), ListVisits(), ListFollowUps(), ListDeals()]
