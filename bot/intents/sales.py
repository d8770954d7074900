"""Sales staff intents: log a visit, update a deal; the helpers every staff intent shares."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rapidfuzz import fuzz, process, utils

from bot.dialogue import Handler, Slot, SlotInvalid, Turn
from bot.messages import Button, Reply
from core.domain.enums import OpportunityStage, Role
from core.errors import NotFound, ValidationFailed
from core.schemas import OpportunityOut, OpportunityPatch, VisitIn

SALES_ROLES = frozenset({Role.REP, Role.MANAGER})
STAFF_ROLES = frozenset({Role.REP, Role.MANAGER, Role.AGENT, Role.TECHNICIAN})
STAGES: tuple[str, ...] = tuple(stage.value for stage in OpportunityStage)
OPEN_STAGES: tuple[str, ...] = STAGES[:4]
CENT = Decimal("0.01")

# --- small shared helpers (field.py uses them too) ---------------------------------------------------


def zone(turn: Turn) -> ZoneInfo:
    """The person's timezone, else the company's."""
    for name in (turn.actor.timezone, turn.core.settings.timezone):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_now(turn: Turn) -> datetime:
    """Now on the person's wall clock."""
    return turn.now.astimezone(zone(turn))


def local_today(turn: Turn) -> date:
    """Today where the person is."""
    return local_now(turn).date()


def day_label(turn: Turn, day: date) -> str:
    """'Fri 19 Jun' / '6月19日（周五）' (with the year when it is not this year)."""
    weekday = turn.t("staff.weekdays").split()[day.weekday()]
    month = turn.t("staff.months").split()[day.month - 1]
    key = "staff.day" if day.year == local_today(turn).year else "staff.day_year"
    return turn.t(key, weekday=weekday, day=day.day, month=month, year=day.year)


def moment_label(turn: Turn, moment: datetime) -> str:
    """Day and wall-clock time in the person's timezone."""
    local = moment.astimezone(zone(turn))
    return f"{day_label(turn, local.date())} {local:%H:%M}"


def money(value: Decimal | float | int | str) -> str:
    """¥12,345.50"""
    return f"¥{Decimal(str(value)):,.2f}"


def spoken(turn: Turn) -> str:
    """What the person typed; a button payload says nothing beyond its entities."""
    return "" if turn.text.startswith("/") else turn.text


def confirm_card(turn: Turn, text: str) -> Reply:
    """A summary with [Yes] [No]."""
    buttons = (turn.button("staff.yes", "/affirm"), turn.button("staff.no", "/deny"))
    return Reply(text=text, buttons=buttons)


def payload(intent: str, **entities: str) -> str:
    """A compact button payload (Telegram allows 64 bytes of callback data)."""
    return f"/{intent}{json.dumps(entities, ensure_ascii=False, separators=(',', ':'))}"


def label(turn: Turn, prefix: str, value: str) -> str:
    """A catalog label for a stored value, or the value itself when the catalog has none."""
    try:
        return turn.t(f"{prefix}.{value}")
    except KeyError:
        return value.replace("_", " ")


def short(text: str, limit: int = 60) -> str:
    """One line, cut with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def parse_when(value: str, tz: ZoneInfo) -> date | datetime | None:
    """An NLU date ('2026-06-19') or time ('2026-06-19T15:00:00+08:00'); local midnight counts as a date."""
    raw = value.strip()
    try:
        if len(raw) == 10:
            return date.fromisoformat(raw)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=tz)
    local = moment.astimezone(tz)
    return local.date() if local.time() == time(0) else moment


def whens(turn: Turn) -> list[date | datetime]:
    """Every date and time this message mentions, in text order."""
    tz = zone(turn)
    found = [item for item in turn.parse.entities if item.entity in ("date", "time")]
    found.sort(key=lambda item: item.start)
    values = [parse_when(item.value, tz) for item in found]
    return [value for value in values if value is not None]


class StaffHandler(Handler):
    """A handler that can explain why it asks (notes shown with the next question) or stop with a message."""

    STOP: ClassVar[Slot] = Slot("_stop", "staff.stopped", required=False)

    @staticmethod
    def note(turn: Turn, text: str) -> None:
        """Say this together with the next question."""
        turn.slots.setdefault("_notes", []).append(text)

    @staticmethod
    def stop(turn: Turn, text: str, *buttons: Button) -> None:
        """End the task with this message instead of asking anything."""
        turn.slots["_stop"] = {"text": text, "buttons": [[item.title, item.payload] for item in buttons]}

    def missing(self, turn: Turn) -> Slot | None:
        """A pending stop first, then the handler's own rule."""
        if "_stop" in turn.slots:
            return self.STOP
        return self.next_slot(turn)

    def next_slot(self, turn: Turn) -> Slot | None:
        """The next slot to ask for (default: the first required one without a value)."""
        return super().missing(turn)

    async def ask(self, turn: Turn, slot: Slot) -> list[Reply]:
        """The question, preceded by any notes; or the stop message, which ends the task."""
        stop = turn.slots.get("_stop")
        if stop is not None:
            turn.state.finish()
            buttons = tuple(Button(title, data) for title, data in stop["buttons"])
            return [Reply(text=stop["text"], buttons=buttons)]
        notes: list[str] = turn.slots.pop("_notes", [])
        replies = await self.question(turn, slot)
        if notes and replies:
            first = replies[0]
            replies[0] = Reply(text="\n".join([*notes, first.text]), buttons=first.buttons, image=first.image,
                               image_alt=first.image_alt)
        return replies

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """The plain question for a slot."""
        return [turn.say(slot.prompt)]


# --- finding customers by what people call them -----------------------------------------------------

CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CJK_RUN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
LATIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9&'’.\-]*")
CODE_LIKE = re.compile(r"(?<![A-Za-z0-9-])([A-Za-z]{1,12}-?\d{1,12}(?:-[A-Za-z0-9]{1,12})*)(?![A-Za-z0-9-])")
CLAUSE = re.compile(r"[,.;:!?，。；：！？、\n()（）\"“”‘’\[\]]+")
# Scores are rapidfuzz WRatio (0–100). A name typed on its own may be rougher than one inside a sentence,
# where every word is a candidate and chance similarities must not count.
WHOLE_CUTOFF = 75.0
MESSAGE_CUTOFF = 80.0
WORD_MATCH = 85.0
PAIR_BUDGET = 400_000
CLEAR_MARGIN = 10.0
MAX_CHOICES = 5
MAX_FRAGMENTS = 300
STOP_WORDS = frozenset((
    "a", "an", "the", "and", "or", "but", "with", "without", "to", "of", "for", "on", "at", "in", "by",
    "from", "about", "into", "via", "per", "as", "is", "are", "was", "were", "be", "been", "i", "we",
    "he", "she", "they", "it", "me", "my", "our", "your", "his", "her", "their", "them", "us", "you",
    "this", "that", "these", "those", "there", "here", "today", "yesterday", "tomorrow", "tonight",
    "morning", "afternoon", "evening", "week", "month", "quarter", "year", "day", "next", "last",
    "visit", "visited", "visiting", "met", "meet", "meeting", "call", "called", "phone", "phoned",
    "emailed", "saw", "see", "show", "tell", "give", "discuss", "discussed", "talked", "talk", "spoke",
    "about", "regarding", "re", "renewal", "deal", "deals", "order", "orders", "quote", "quotation",
    "send", "sent", "step", "steps", "follow", "up", "followup", "log", "logged", "please", "pipeline",
    "overview", "customer", "customers", "client", "move", "moved", "update", "set", "mark", "change",
    "stage", "amount", "close", "closing", "date", "won", "lost", "negotiation", "proposal", "corp",
    "corporation", "co", "company", "ltd", "limited", "inc", "group", "llc", "plc", "gmbh", "mr", "mrs",
    "ms", "dr", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "monday", "tuesday", "wednesday",
    "thursday", "friday", "saturday", "sunday",
    # Trade words many customer names share: alone they say nothing about which customer.
    "appliance", "appliances", "home", "kitchen", "kitchens", "electric", "electrical", "electronics",
    "supply", "supplies", "store", "stores", "shop", "online", "retail", "retailer", "distribution",
    "distributor", "distributors", "wholesale", "trading", "market", "mall", "center", "centre", "plaza",
    "team", "service", "services", "new", "line", "product", "products", "showroom", "promotion",
    "promotions", "price", "pricing", "contract", "washing", "machine", "machines", "dishwasher", "fridge",
    "hotel", "restaurant", "district", "city",
))
FILLER_WORDS = frozenset(("a", "an", "the", "and", "of", "for", "to", "at", "in", "on", "with"))
CJK_STOP = frozenset((
    "公司", "有限", "有限公司", "集团", "股份", "责任", "今天", "昨天", "明天", "后天", "拜访", "拜访了",
    "客户", "下一步", "续约", "报价", "聊了", "讨论", "一下", "看看", "概况", "销售", "商机", "工单",
    "谈判", "阶段", "推进", "金额", "本季度", "我们", "他们", "一起", "见了", "发报价", "周一", "周二",
    "周三", "周四", "周五", "周六", "周日",
    "家电", "电器", "商行", "连锁", "超市", "商城", "广场", "批发", "卖场", "专卖", "专卖店", "门店",
    "商场", "厨电", "家居", "采购", "促销", "返利", "年度", "合同", "订单", "价格", "样品", "展厅",
))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A customer (or anything with a code and a name) and how well it matched."""

    code: str
    name: str
    score: float


def fragments(text: str, limit: int = MAX_FRAGMENTS) -> list[str]:
    """Pieces of a message that could be a name: runs of 1–4 words, and 2–8 characters of Chinese
    (shortest first, so a long message loses its least likely pieces when cut to `limit`)."""
    found: list[str] = []
    for clause in CLAUSE.split(text):
        for run in CJK_RUN.findall(clause):
            for size in range(2, min(8, len(run)) + 1):
                for start in range(len(run) - size + 1):
                    piece = run[start : start + size]
                    if piece not in CJK_STOP:
                        found.append(piece)
        for chunk in CJK_RUN.split(clause):
            words = LATIN_WORD.findall(chunk)
            for size in range(1, 5):
                for start in range(len(words) - size + 1):
                    group = words[start : start + size]
                    if all(word.casefold().strip(".'’") in STOP_WORDS for word in group):
                        continue
                    piece = " ".join(group)
                    if sum(char.isalnum() for char in piece) >= 3:
                        found.append(piece)
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda piece: len(piece.split()) if not CJK.search(piece) else (len(piece) + 1) // 2)
    return unique[:limit]


def whole_words_match(piece: str, name: str) -> bool:
    """Every distinctive word of a Latin fragment is (nearly) a whole word of the name: WRatio alone would
    find 'line' inside 'Online'."""
    if CJK.search(piece):
        return True
    words = [word for word in utils.default_process(name).split() if word]
    wanted = [word for word in utils.default_process(piece).split() if word not in STOP_WORDS]
    return all(any(fuzz.ratio(word, other) >= WORD_MATCH for other in words) for word in wanted)


def find_customers(names: Sequence[tuple[str, str]] | Sequence[list[str]], query: str, *,
                   whole: bool) -> list[Candidate]:
    """Customers matching `query`, best first.

    `whole`: the query is itself a name or code (an entity, an answer); otherwise it is a message in
    which a name may appear. A code is decisive (exactly as stored when typed alone, or a code-like
    token such as CUS-0012 anywhere); names are matched with rapidfuzz's WRatio, per character for
    Chinese (which has no spaces to split words on).
    """
    by_code = {code: name for code, name in names}
    text = query.strip()
    if not text or not by_code:
        return []
    if text in by_code:
        return [Candidate(text, by_code[text], 100.0)]
    folded = {code.casefold(): code for code in by_code}
    coded = [folded[token.casefold()] for token in CODE_LIKE.findall(text) if token.casefold() in folded]
    # A code typed in capitals inside a sentence ("visited ACME today") is meant as the code.
    coded += [token for token in LATIN_WORD.findall(text) if token.isupper() and token in by_code]
    if coded:
        return [Candidate(code, by_code[code], 100.0) for code in dict.fromkeys(coded)]
    best: dict[str, float] = {}
    cutoff = WHOLE_CUTOFF if whole else MESSAGE_CUTOFF
    # A bounded amount of work per message, however many customers the actor sees.
    pieces = [text] if whole else fragments(text, max(20, min(MAX_FRAGMENTS, PAIR_BUDGET // len(by_code))))
    covered: dict[str, set[str]] = {}
    for piece in pieces:
        for name, score, code in process.extract(
            piece, by_code, scorer=fuzz.WRatio, processor=utils.default_process, limit=MAX_CHOICES * 2,
            score_cutoff=cutoff,
        ):
            if whole or whole_words_match(piece, name):
                best[code] = max(best.get(code, 0.0), float(score))
                covered.setdefault(code, set()).update(name_parts_covered(piece, name))
    # More of a name said is more likely that name: "Acme Kitchen" is Acme Kitchen Supplies, not Acme Corp.
    scored = {code: score + coverage_bonus(covered.get(code, set())) for code, score in best.items()}
    return sorted((Candidate(code, by_code[code], score) for code, score in scored.items()),
                  key=lambda item: (-item.score, item.name))


def name_parts_covered(piece: str, name: str) -> set[str]:
    """Words (or, for Chinese, character positions) of `name` that `piece` says."""
    if CJK.search(piece):
        start = name.find(piece)
        return {f"#{index}" for index in range(start, start + len(piece))} if start >= 0 else set()
    words = [word for word in utils.default_process(name).split() if word not in FILLER_WORDS]
    said = utils.default_process(piece).split()
    return {word for word in words if any(fuzz.ratio(word, other) >= WORD_MATCH for other in said)}


def coverage_bonus(parts: set[str]) -> float:
    """Up to 20 points for saying more than one word (or two characters) of a name."""
    chars = sum(part.startswith("#") for part in parts)
    words = len(parts) - chars
    return float(min(20, 10 * max(0, words - 1) + 5 * max(0, chars - 2)))


def pick(candidates: list[Candidate]) -> list[Candidate]:
    """One clear winner, or the close contenders (empty when nothing matched)."""
    if len(candidates) <= 1:
        return candidates
    top, second = candidates[0], candidates[1]
    if top.score - second.score >= CLEAR_MARGIN or (top.score >= 100.0 > second.score):
        return [top]
    return [item for item in candidates if top.score - item.score < CLEAR_MARGIN][:MAX_CHOICES]


COMMAND_WORDS = frozenset((
    "log", "record", "add", "new", "a", "an", "the", "visit", "visited", "visiting", "to", "at", "for",
    "with", "please", "i", "my", "today", "yesterday", "customer", "meeting", "call", "just",
))
COMMAND_ZH = re.compile("记录|登记|一次|一下|拜访|今天|昨天|客户|帮我|请|了")


class CustomerHandler(StaffHandler):
    """A handler whose `customer` slot is filled by matching names in the actor's scope."""

    async def take_customer(self, turn: Turn, query: str | None, text: str) -> None:
        """Fill the customer slot from an entity or the words of the message (or note why not)."""
        names = await turn.core.customers.names_in_scope(turn.actor)
        found = pick(find_customers(names, query, whole=True)) if query else []
        named = bool(found)
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
_EN_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|\d|the\s+\d)"
EN_DUE_TAIL = re.compile(
    r"[\s,]*\b(?:by|before|until|till|due(?:\s+(?:on|by))?|no\s+later\s+than)\b[^,]*$"
    rf"|[\s,]*\bon\s+{_EN_DAY}[^,]*$|[\s,]*\bat\s+\d[^,]*$"
    r"|[\s,]*\b(?:today|tomorrow|tonight|this\s+\w+|next\s+\w+|(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|sun)"
    r"(?:day)?)\b\s*$",
    re.IGNORECASE)
ZH_WHEN = re.compile(
    r"(?:(?:本|这|下)(?:个)?)?(?:周|星期|礼拜)[一二三四五六日天]|今天|明天|后天|今晚|明早|下周|月底|周末"
    r"|\d{1,2}月\d{1,2}[日号]|\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[日号]"
    r"|(?:上午|下午|晚上|中午)?\d{1,2}[点:：]\d{0,2}分?")
ZH_WHEN_TAIL = re.compile(r"^(?:之前|以前|前|内|左右)")
WITH_EN = re.compile(
    r"\bwith\s+(?P<who>.+?)(?=\s*(?:[,.;:!?\n]|\b(?:discuss\w*|talk\w*|about|regarding|re|to|for|on|at|"
    r"today|yesterday|this|next|and\s+(?:discuss\w*|talk\w*|agreed|went|reviewed|agreed))\b|$))",
    re.IGNORECASE)
WITH_ZH = re.compile(
    r"(?:和|与|跟|同)(?P<who>[\u4e00-\u9fffA-Za-z·、\s]{1,30}?)"
    r"(?=一起|一同|聊|讨论|谈|沟通|见面|开会|会面|交流|商量|商讨|确认|拜访|见了|吃饭|，|,|。|；|;|$)")
NAME_SPLIT = re.compile(r"\s*(?:,|，|、|&|/|\band\b|和|及|以及)\s*", re.IGNORECASE)
WEEKDAY_EN = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
WEEKDAY_ZH = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}
DUE_HOUR = 9


def contacts_met(text: str) -> list[str]:
    """People met: the names after 'with …' / '和…'."""
    names: list[str] = []
    for pattern in (WITH_EN, WITH_ZH):
        for match in pattern.finditer(text):
            for name in NAME_SPLIT.split(match.group("who")):
                cleaned = name.strip(" .·")
                if cleaned and cleaned.casefold() not in ("the", "them", "him", "her", "us", "me"):
                    names.append(cleaned[:200])
    return list(dict.fromkeys(names))[:20]


def next_step(text: str) -> tuple[str, str]:
    """The action after 'next step …' / '下一步…' without its date words, and the words as said."""
    match = NEXT_STEP_EN.search(text)
    if match:
        said = step = match.group("step").strip()
        for _ in range(3):
            step = EN_DUE_TAIL.sub("", step).strip(" ,-–—")
        return step[:300], said
    match = NEXT_STEP_ZH.search(text)
    if match:
        said = match.group("step").strip()
        step = ZH_WHEN.sub(" ", said)
        step = " ".join(ZH_WHEN_TAIL.sub("", piece) for piece in step.split())
        step = re.sub(r"^(?:在|于|要|请|需要)+", "", step.replace(" ", "")).strip(" ，,")
        return step[:300], said
    return "", ""


def weekday_due(step_text: str, today: date) -> date | None:
    """A due day named in the next-step words when the NLU gave none ('by Friday', '周五前', 'tomorrow')."""
    lowered = step_text.casefold()
    if re.search(r"\btomorrow\b|明天", lowered):
        return today + timedelta(days=1)
    if re.search(r"后天", lowered):
        return today + timedelta(days=2)
    found = re.search(r"\b(mon|tue|wed|thu|fri|sat|sun)[a-z]*\b", lowered)
    weekday = WEEKDAY_EN.get(found.group(1)) if found else None
    if weekday is None:
        zh = re.search(r"(下(?:个)?)?(?:周|星期|礼拜)([一二三四五六日天])", step_text)
        if zh is None:
            return None
        weekday = WEEKDAY_ZH[zh.group(2)]
        if zh.group(1):
            return today - timedelta(days=today.weekday()) + timedelta(days=7 + weekday)
    ahead = (weekday - today.weekday()) % 7 or 7
    return today + timedelta(days=ahead)


def substantive(text: str, customer_name: str = "") -> bool:
    """Enough said to be a visit summary rather than just 'log a visit to Acme'."""
    name_words = {word.casefold() for word in LATIN_WORD.findall(customer_name)}
    words = [word for word in LATIN_WORD.findall(text)
             if word.casefold() not in COMMAND_WORDS and word.casefold() not in name_words]
    chinese = CJK.findall(COMMAND_ZH.sub("", text.replace(customer_name, "") if customer_name else text))
    return len(words) >= 3 or len(chinese) >= 6


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
        """Customer, dates, people, summary and next step from the first message."""
        text = spoken(turn)
        await self.take_customer(turn, turn.entity("customer"), text)
        turn.slots["visited_on"] = local_today(turn).isoformat()
        self._dates(turn, text)
        if text and substantive(text, turn.slots.get("customer_name", "")):
            self._digest(turn, text)

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """A customer by name or code; a summary (from which people and the next step are read too)."""
        if slot.name == "customer":
            return await self.customer_answer(turn, raw)
        text = raw.strip()
        if len(text) < 3:
            raise SlotInvalid(turn.t("visit.summary_too_short"))
        self._dates(turn, text)
        self._digest(turn, text)
        return turn.slots["summary"]

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """Which customer (with buttons when several match), or what was discussed."""
        if slot.name == "customer":
            return [self.customer_question(turn, slot.prompt)]
        return [turn.say(slot.prompt)]

    async def confirmation(self, turn: Turn) -> Reply:
        """The visit as it will be logged."""
        slots = turn.slots
        lines = [
            turn.t("visit.card_title"),
            turn.t("visit.card_customer", name=slots["customer_name"], code=slots["customer"]),
            turn.t("visit.card_date", day=day_label(turn, date.fromisoformat(slots["visited_on"]))),
        ]
        if slots.get("contacts"):
            lines.append(turn.t("visit.card_contacts", names=", ".join(slots["contacts"])))
        lines.append(turn.t("visit.card_summary", summary=short(slots["summary"], 300)))
        if slots.get("next_step"):
            lines.append(turn.t("visit.card_next_step", step=slots["next_step"], due=self._due_text(turn)))
        return confirm_card(turn, "\n".join(lines))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Log the visit (and its follow-up task) through the sales service."""
        slots = turn.slots
        step = slots.get("next_step", "")
        due = datetime.fromisoformat(slots["due"]) if slots.get("due") and step else None
        visit = await turn.core.sales.log_visit(turn.actor, VisitIn(
            customer_code=slots["customer"],
            visited_on=date.fromisoformat(slots["visited_on"]),
            contacts_met=slots.get("contacts", []),
            summary=slots["summary"][:10_000],
            next_step=step,
            next_step_due=due,
        ))
        turn.state.context["customer"] = visit.customer_code
        text = turn.t("visit.logged", name=visit.customer_name, day=day_label(turn, visit.visited_on))
        if visit.follow_up_task_id is not None:
            text += "\n" + (turn.t("visit.follow_up", step=step, due=self._due_text(turn)) if due
                            else turn.t("visit.follow_up_undated", step=step))
        return [Reply(text=text)]

    def _due_text(self, turn: Turn) -> str:
        raw = turn.slots.get("due")
        if not raw:
            return turn.t("visit.no_due")
        due = datetime.fromisoformat(raw).astimezone(zone(turn))
        return day_label(turn, due.date()) if due.time() == time(DUE_HOUR) else moment_label(turn, due)

    def _dates(self, turn: Turn, text: str) -> None:
        """Past or today → the visit day (a future one is taken as today); future → the next step's due."""
        tz, today, now = zone(turn), local_today(turn), turn.now
        for when in whens(turn):
            if isinstance(when, datetime):
                if when > now:
                    turn.slots.setdefault("due", when.isoformat())
                elif when.astimezone(tz).date() <= today:
                    turn.slots["visited_on"] = when.astimezone(tz).date().isoformat()
            elif when > today:
                turn.slots.setdefault("due", self._due_at(turn, when).isoformat())
            else:
                turn.slots["visited_on"] = when.isoformat()

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
        step, said = next_step(text)
        if step:
            turn.slots["next_step"] = step
            if not turn.slots.get("due"):
                day = weekday_due(said, local_today(turn))
                if day is not None:
                    turn.slots["due"] = self._due_at(turn, day).isoformat()

    def _due_at(self, turn: Turn, day: date) -> datetime:
        """A due day becomes 09:00 on that day in the person's timezone (later today if 09:00 has passed)."""
        tz = zone(turn)
        due = datetime.combine(day, time(DUE_HOUR), tzinfo=tz)
        if due <= turn.now:
            later = (local_now(turn) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
            due = later if later.date() == day else datetime.combine(day, time(23, 59), tzinfo=tz)
        return due


# --- update_deal ---------------------------------------------------------------------------------------

OP_REF = re.compile(r"(?<![A-Za-z0-9])OP\s*[-#]?\s*(\d{1,9})(?![0-9])", re.IGNORECASE)
STAGE_WORDS: dict[str, str] = {
    "qualification": "qualification", "qualify": "qualification", "qualifying": "qualification",
    "needs analysis": "needs_analysis", "need analysis": "needs_analysis", "discovery": "needs_analysis",
    "proposal": "proposal", "quote": "proposal", "quotation": "proposal",
    "negotiation": "negotiation", "negotiating": "negotiation", "negotiate": "negotiation",
    "won": "closed_won", "win": "closed_won", "closed won": "closed_won", "signed": "closed_won",
    "lost": "closed_lost", "lose": "closed_lost", "closed lost": "closed_lost",
    "资格审查": "qualification", "资格确认": "qualification", "初步接洽": "qualification",
    "需求分析": "needs_analysis", "需求确认": "needs_analysis",
    "方案": "proposal", "提案": "proposal", "报价阶段": "proposal",
    "谈判": "negotiation", "商务谈判": "negotiation", "议价": "negotiation", "洽谈": "negotiation",
    "赢单": "closed_won", "成交": "closed_won", "签约": "closed_won", "签单": "closed_won",
    "拿下": "closed_won",
    "输单": "closed_lost", "丢单": "closed_lost", "失单": "closed_lost", "丢了": "closed_lost",
    "输了": "closed_lost",
}
STAGE_IN_TEXT_EN = re.compile(
    r"\b(needs?\s+analysis|qualification|proposal|negotiation|negotiating|closed[\s_-]?won|closed[\s_-]?lost|won|lost)\b",
    re.IGNORECASE)
STAGE_IN_TEXT_ZH = re.compile("|".join(sorted((word for word in STAGE_WORDS if CJK.search(word)), key=len,
                                              reverse=True)))
MULTIPLIERS = {"": 1, "k": 1_000, "thousand": 1_000, "千": 1_000, "m": 1_000_000, "mn": 1_000_000,
               "million": 1_000_000, "w": 10_000, "万": 10_000, "百万": 1_000_000, "亿": 100_000_000}
AMOUNT_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9.\-_/:])(?P<cur>[¥￥$])?\s?(?P<num>\d[\d,]*(?:\.\d+)?)\s*"
    r"(?P<mul>k|mn|m|w|万|千|百万|亿|thousand|million)?\s*(?P<unit>元|块|rmb|cny|yuan)?"
    r"(?![A-Za-z0-9\-/:年月日号点])", re.IGNORECASE)
APPROXIMATE = re.compile(r"\b\w+-ish\b|\bish\b|\bsomething\s+like\b|左右|大概|差不多|大约|估计",
                         re.IGNORECASE)
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
DEAL_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'’-]{2,}")
DEAL_STOP = frozenset((
    "the", "and", "with", "for", "at", "in", "of", "on", "to", "a", "an", "it", "its", "as", "is", "was",
    "we", "our", "this", "that", "now", "please", "deal", "deals", "opportunity", "move", "moved",
    "update", "updated", "set", "mark", "marked", "change", "changed", "stage", "amount", "close",
    "closing", "date", "push", "qualification", "needs", "analysis", "proposal", "negotiation",
    "negotiating", "closed", "won", "lost", "next", "this", "last", "quarter", "month", "week", "today",
    "tomorrow", "ish", "about", "around",
))
DEAL_CJK_STOP = frozenset((
    "推进", "进到", "阶段", "金额", "商机", "谈判", "到谈", "判阶", "改成", "更新", "一下", "这个",
    "那个", "把它",
))
CJK_PAIR = 2
MAX_DEAL_CHOICES = 8


def parse_amount(raw: str) -> Decimal | None:
    """'50000.00', '50k', '¥50,000', '5万', '1.2m' → Decimal; anything vaguer → None."""
    text = raw.strip().casefold().replace(",", "").replace("，", "").replace(" ", "")
    text = re.sub(r"^(?:¥|￥|\$|rmb|cny)", "", text)
    text = re.sub(r"(?:元|块|rmb|cny|yuan)$", "", text)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(k|mn|m|w|万|千|百万|亿|thousand|million)?", text)
    if match is None:
        return None
    try:
        value = Decimal(match.group(1)) * MULTIPLIERS[match.group(2) or ""]
    except InvalidOperation:
        return None
    if value < 0 or value > Decimal("1e12"):
        return None
    return value.quantize(CENT)


def amount_in_text(text: str) -> Decimal | None:
    """An amount written in the message ('50k', '¥50,000', '5万', or a bare number of 3+ digits)."""
    for match in AMOUNT_IN_TEXT.finditer(text):
        digits = match.group("num").replace(",", "")
        if match.group("cur") or match.group("mul") or match.group("unit") or len(digits.split(".")[0]) >= 3:
            value = parse_amount(f"{digits}{match.group('mul') or ''}")
            if value is not None:
                return value
    return None


def normalise_stage(raw: str) -> str | None:
    """A stage value from an entity or an answer ('negotiation', 'Closed won', '谈判'), else None."""
    text = raw.strip()
    key = re.sub(r"[\s_-]+", "_", text.casefold())
    if key in STAGES:
        return key
    return STAGE_WORDS.get(key.replace("_", " ")) or STAGE_WORDS.get(text)


def stage_in_text(text: str) -> str | None:
    """The one stage a message names by keyword (None when none or several)."""
    found = {normalise_stage(match.group(0)) for match in STAGE_IN_TEXT_EN.finditer(text)}
    found |= {STAGE_WORDS[match.group(0)] for match in STAGE_IN_TEXT_ZH.finditer(text)}
    found.discard(None)
    return found.pop() if len(found) == 1 else None


def deal_words(text: str, exclude: Iterable[str] = ()) -> set[str]:
    """Distinctive words of a text (Latin words and Chinese character pairs) for matching deal names."""
    skip = {word.casefold() for word in exclude}
    words = {word.casefold() for word in DEAL_WORD.findall(text)}
    words = {word for word in words if word not in DEAL_STOP and word not in skip}
    for run in CJK_RUN.findall(text):
        words |= {run[index : index + CJK_PAIR] for index in range(len(run) - CJK_PAIR + 1)}
    return {word for word in words if word not in DEAL_CJK_STOP and word not in skip}


def deal_snapshot(deal: OpportunityOut) -> dict[str, Any]:
    """What the card needs of a deal, JSON-safe."""
    return {
        "ref": deal.ref, "name": deal.name, "customer": deal.customer_name, "stage": deal.stage,
        "amount": str(deal.amount), "close": deal.expected_close.isoformat() if deal.expected_close else None,
        "lost_reason": deal.lost_reason or "",
    }


class UpdateDeal(StaffHandler):
    """J6: 'move the Acme renewal to negotiation, 50k'."""

    intent = "update_deal"
    roles = SALES_ROLES
    slots = (
        Slot("deal", "deal.ask_deal", entity="deal"),
        Slot("stage", "deal.ask_stage", entity="stage", required=False),
        Slot("amount", "deal.ask_amount", entity="amount", required=False),
        Slot("changes", "deal.ask_changes", required=False),
        Slot("lost_reason", "deal.ask_lost_reason", free_text=True, required=False),
        Slot("competitor", "deal.ask_competitor", required=False),
    )
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """Which deal, and the new stage, amount and close date, from the first message."""
        text = spoken(turn)
        await self._find_deal(turn, text)
        self._read_changes(turn, text)

    def next_slot(self, turn: Turn) -> Slot | None:
        """Deal, then anything unclear, then something to change, then why it was lost."""
        slots, by_name = turn.slots, {slot.name: slot for slot in self.slots}
        if "deal" not in slots:
            return by_name["deal"]
        if slots.get("_stage_unclear"):
            return by_name["stage"]
        if slots.get("_amount_unclear"):
            return by_name["amount"]
        if not self._diff(turn):
            return by_name["changes"]
        if slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            if not slots.get("lost_reason"):
                return by_name["lost_reason"]
            if "competitor" not in slots:
                return by_name["competitor"]
        return None

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """Check each kind of answer; an unclear one gets a hint and the question again."""
        slots = turn.slots
        if slot.name == "deal":
            return await self._deal_answer(turn, raw)
        if slot.name == "stage":
            stage = normalise_stage(raw) or stage_in_text(raw)
            if stage is None:
                raise SlotInvalid(turn.t("deal.bad_stage", given=short(raw, 40)))
            slots.pop("_stage_unclear", None)
            return stage
        if slot.name == "amount":
            amount = parse_amount(raw) or amount_in_text(raw)
            if amount is None:
                raise SlotInvalid(turn.t("deal.bad_amount", given=short(raw, 40)))
            slots.pop("_amount_unclear", None)
            return str(amount)
        if slot.name == "changes":
            before = self._diff(turn)
            self._read_changes(turn, spoken(turn) or raw)
            if slots.get("_stage_unclear") or slots.get("_amount_unclear"):
                return True
            if not self._diff(turn):
                raise SlotInvalid(turn.t("deal.same_values" if before else "deal.no_change_understood"))
            return True
        if slot.name == "competitor":
            return "" if raw.strip().casefold() in NO_ANSWER else raw.strip()[:200]
        return raw.strip()[:2000]

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """Questions with buttons: deals, stages, 'no competitor'."""
        if slot.name == "deal":
            return [await self._deal_question(turn)]
        if slot.name == "stage":
            return [Reply(text=turn.t("deal.ask_stage"), buttons=tuple(
                Button(title=turn.t(f"deal.stages.{stage}"), payload=payload("update_deal", stage=stage))
                for stage in STAGES))]
        if slot.name == "changes":
            deal = turn.slots["deal_info"]
            return [turn.say("deal.ask_changes", ref=deal["ref"], name=deal["name"],
                             stage=turn.t(f"deal.stages.{deal['stage']}"), amount=money(deal["amount"]))]
        if slot.name == "competitor":
            return [Reply(text=turn.t("deal.ask_competitor"),
                          buttons=(Button(title=turn.t("deal.no_competitor"), payload="none"),))]
        return [turn.say(slot.prompt)]

    async def confirmation(self, turn: Turn) -> Reply:
        """Old → new for every field that changes."""
        deal = turn.slots["deal_info"]
        lines = [turn.t("deal.card_title", ref=deal["ref"], name=deal["name"], customer=deal["customer"])]
        for field_name, old, new in self._diff(turn):
            lines.append(turn.t(f"deal.card_{field_name}", old=self._shown(turn, field_name, old),
                                new=self._shown(turn, field_name, new)))
        if turn.slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            lines.append(turn.t("deal.card_lost_reason", reason=turn.slots.get("lost_reason", "")))
            if turn.slots.get("competitor"):
                lines.append(turn.t("deal.card_competitor", competitor=turn.slots["competitor"]))
        return confirm_card(turn, "\n".join(lines))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Change the deal through the sales service (which records the history)."""
        slots, deal = turn.slots, turn.slots["deal_info"]
        changes: dict[str, Any] = {}
        for field_name, _old, new in self._diff(turn):
            if field_name == "stage":
                changes["stage"] = OpportunityStage(new)
            elif field_name == "amount":
                changes["amount"] = Decimal(new)
            else:
                changes["expected_close"] = date.fromisoformat(new)
        if slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            changes["lost_reason"] = slots.get("lost_reason") or None
            changes["competitor"] = slots.get("competitor") or None
        patch = OpportunityPatch(**changes)
        updated = await turn.core.sales.update_opportunity(turn.actor, deal["ref"], patch)
        turn.state.context["deal"] = updated.ref
        text = turn.t("deal.updated", ref=updated.ref, name=updated.name,
                      stage=turn.t(f"deal.stages.{updated.stage}"), amount=money(updated.amount))
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
        return changed

    def _shown(self, turn: Turn, field_name: str, value: str | None) -> str:
        if value is None:
            return "—"
        if field_name == "stage":
            return turn.t(f"deal.stages.{value}")
        if field_name == "amount":
            return money(value)
        return day_label(turn, date.fromisoformat(value))

    def _read_changes(self, turn: Turn, text: str) -> None:
        """Stage, amount and close date from this message's entities, else its words."""
        slots = turn.slots
        raw_stage = turn.entity("stage")
        if raw_stage is not None:
            stage = normalise_stage(raw_stage)
            if stage is None:
                slots["_stage_unclear"] = raw_stage
                self.note(turn, turn.t("deal.bad_stage", given=short(raw_stage, 40)))
            else:
                slots["stage"] = stage
        elif text and (stage := stage_in_text(text)) is not None:
            slots["stage"] = stage
        raw_amount = turn.entity("amount")
        if raw_amount is not None:
            amount = parse_amount(raw_amount)
            if amount is None:
                slots["_amount_unclear"] = raw_amount
                self.note(turn, turn.t("deal.bad_amount", given=short(raw_amount, 40)))
            else:
                slots["amount"] = str(amount)
        elif text:
            amount = amount_in_text(OP_REF.sub(" ", text))
            if amount is not None:
                slots["amount"] = str(amount)
            elif (vague := APPROXIMATE.search(text)) is not None:
                slots["_amount_unclear"] = vague.group(0)
                self.note(turn, turn.t("deal.bad_amount", given=vague.group(0)))
        for when in whens(turn):
            slots["close"] = (when if isinstance(when, date) and not isinstance(when, datetime)
                              else when.astimezone(zone(turn)).date()).isoformat()
            break
        if text and slots.get("stage") == OpportunityStage.CLOSED_LOST.value:
            reason = REASON_EN.search(text) or REASON_ZH.search(text)
            if reason and not slots.get("lost_reason"):
                slots["lost_reason"] = reason.group("why").strip()[:2000]
            rival = COMPETITOR_EN.search(text) or COMPETITOR_ZH.search(text)
            if rival and not slots.get("competitor"):
                slots["competitor"] = rival.group("who").strip()[:200]

    async def _find_deal(self, turn: Turn, text: str) -> None:
        """By OP-n; else by customer name and words of the deal's name; else the deal talked about before."""
        raw = turn.entity("deal")
        reference = OP_REF.search(raw or "") or OP_REF.search(text)
        if reference:
            await self._take_ref(turn, f"OP-{int(reference.group(1))}")
            return
        found = await self._match(turn, turn.entity("customer"), " ".join(filter(None, [raw, text])))
        if len(found) == 1:
            self._chosen(turn, found[0])
        elif found:
            turn.slots["_choices"] = [[deal.ref, self._title(deal)] for deal in found[:MAX_DEAL_CHOICES]]
            self.note(turn, turn.t("deal.several"))
        elif (remembered := turn.state.context.get("deal")) and OP_REF.fullmatch(remembered):
            await self._take_ref(turn, remembered, quiet=True)

    async def _take_ref(self, turn: Turn, reference: str, *, quiet: bool = False) -> bool:
        try:
            deal = await turn.core.sales.get_opportunity(turn.actor, reference)
        except (NotFound, ValidationFailed):
            if not quiet:
                self.note(turn, turn.t("deal.not_found", ref=reference))
            return False
        self._chosen(turn, deal)
        return True

    @staticmethod
    def _chosen(turn: Turn, deal: OpportunityOut) -> None:
        turn.slots["deal"] = deal.ref
        turn.slots["deal_info"] = deal_snapshot(deal)
        turn.slots.pop("_choices", None)

    @staticmethod
    def _title(deal: OpportunityOut) -> str:
        return short(f"{deal.ref} {deal.name} · {deal.customer_name}", 70)

    async def _match(self, turn: Turn, customer: str | None, text: str) -> list[OpportunityOut]:
        """Open deals matching the customer named and the words of the deal's name."""
        deals = (await turn.core.sales.list_opportunities(turn.actor, open_only=True, limit=200)).items
        if not deals or not (customer or text):
            return []
        names = sorted({(deal.customer_code, deal.customer_name) for deal in deals})
        found = pick(find_customers(names, customer, whole=True)) if customer else []
        if not found and text:
            found = pick(find_customers(names, text, whole=False))
        codes = {item.code for item in found}
        pool = [deal for deal in deals if deal.customer_code in codes] if codes else list(deals)
        customer_words = {word for item in found for word in DEAL_WORD.findall(item.name)}
        customer_words |= {
            run[index : index + CJK_PAIR]
            for item in found
            for run in CJK_RUN.findall(item.name)
            for index in range(len(run) - CJK_PAIR + 1)
        }
        said = deal_words(text, customer_words)
        scores = {deal.ref: self._overlap(said, deal_words(deal.name, customer_words)) for deal in pool}
        best = max(scores.values(), default=0)
        if best > 0:
            return [deal for deal in pool if scores[deal.ref] == best]
        return pool if codes else []

    @staticmethod
    def _overlap(said: set[str], name_words: set[str]) -> int:
        """How many words of a deal's name the message mentions (typos forgiven)."""
        count = 0
        for word in name_words:
            latin = not CJK.search(word)
            if word in said or (latin and any(fuzz.ratio(word, other) >= 85 for other in said)):
                count += 1
        return count

    async def _deal_answer(self, turn: Turn, raw: str) -> str:
        reference = OP_REF.search(raw)
        if reference:
            if await self._take_ref(turn, f"OP-{int(reference.group(1))}", quiet=True):
                return str(turn.slots["deal"])
            raise SlotInvalid(turn.t("deal.not_found", ref=f"OP-{int(reference.group(1))}"))
        found = await self._match(turn, turn.entity("customer"), raw)
        choices = {ref for ref, _title in turn.slots.get("_choices") or []}
        if choices and len(found) > 1:
            found = [deal for deal in found if deal.ref in choices] or found
        if len(found) == 1:
            self._chosen(turn, found[0])
            return found[0].ref
        if found:
            turn.slots["_choices"] = [[deal.ref, self._title(deal)] for deal in found[:MAX_DEAL_CHOICES]]
            raise SlotInvalid(turn.t("deal.several"))
        raise SlotInvalid(turn.t("deal.unknown", query=short(raw, 40)))

    async def _deal_question(self, turn: Turn) -> Reply:
        choices: list[list[str]] = turn.slots.get("_choices") or []
        if not choices:
            deals = (await turn.core.sales.list_opportunities(turn.actor, open_only=True,
                                                              limit=MAX_DEAL_CHOICES)).items
            if not deals:
                turn.state.finish()
                return turn.say("deal.none_open")
            choices = [[deal.ref, self._title(deal)] for deal in deals]
        return Reply(text=turn.t("deal.ask_deal"),
                     buttons=tuple(Button(title=title, payload=payload(self.intent, deal=ref))
                                   for ref, title in choices))


def handlers() -> list[Handler]:
    """One instance of every sales handler."""
    return [LogVisit(), UpdateDeal()]
