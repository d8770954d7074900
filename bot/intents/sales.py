"""Sales staff intents: log a visit, update a deal; the helpers every staff intent shares."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rapidfuzz import fuzz, process, utils

from bot.dialogue import Handler, Slot, SlotInvalid, Turn
from bot.messages import Button, Reply
from core.domain.enums import DEFAULT_STAGE_PROBABILITY, OpportunityStage, Role
from core.errors import NotFound, ValidationFailed
from core.schemas import OpportunityIn, OpportunityOut, OpportunityPatch, VisitIn, VisitOut

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
    # Words of asking for something, not names.
    "want", "need", "like", "pls", "plz", "opportunity", "opportunities", "create", "open", "add", "list",
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
WEEKDAY_EN = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
WEEKDAY_ZH = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}
DUE_HOUR = 9


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
            turn.slots.pop("contacts_said", None)
        outcome = outcome_of(text)
        if outcome:
            turn.slots["outcome"] = outcome
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
PERCENT = re.compile(
    r"(?P<num>-?\d{1,5}(?:\.\d+)?)\s*(?:%|％|percent\b|pct\b)|百分之(?P<zh>[零一二两三四五六七八九十百\d]+)",
    re.IGNORECASE)
PROBABILITY_NUMBER = re.compile(
    r"(?:\b(?:probability|prob|chances?|likelihood|odds|win\s*rate|win\s*chance|confidence)\b|概率|赢率|胜率|把握|可能性"
    r"|成功率|成单率)\D{0,25}?(?P<num>-?\d{1,5}(?:\.\d+)?)", re.IGNORECASE)
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


STAGE_NAMED = re.compile(
    r"\bstage\s+(?:to\s+)?[\"“']?([A-Za-z][\w-]{1,30})|\b(?:to|into)\s+(?:the\s+)?[\"“']?([A-Za-z][\w-]{1,30})[\"”']?"
    r"\s+(?:stage|phase)\b|(?:推进到|推到|移到|改到|进入)([\u4e00-\u9fffA-Za-z]{1,8}?)阶段|阶段(?:改成|改为|设为|调到)"
    r"([\u4e00-\u9fffA-Za-z]{1,8})", re.IGNORECASE)


def read_probability(text: str) -> tuple[int | None, str | None]:
    """A win probability said in a message: (value, None); (None, what was said) when it is not 0–100;
    (None, None) when none is said."""
    match = PERCENT.search(text) or PROBABILITY_NUMBER.search(text)
    if match is None:
        return None, None
    raw = match.group(0).strip()
    number = match.group("num")
    if number is None:
        from bot.nlu.entities import cn_number  # the NLU's reading of Chinese numerals

        value = cn_number(match.group("zh"))
        number = str(value) if value is not None else ""
    try:
        amount = Decimal(number)
    except InvalidOperation:
        return None, raw
    if amount != amount.to_integral_value() or not 0 <= amount <= 100:
        return None, raw
    return int(amount), None


def parse_probability(raw: str) -> int | None:
    """An answer to 'what probability?': '80', '80%', '百分之八十' → 80; else (or outside 0–100) None."""
    value, _unclear = read_probability(raw)
    if value is not None:
        return value
    text = raw.strip().rstrip("%％ ")
    if re.fullmatch(r"\d{1,3}", text) and 0 <= int(text) <= 100:
        return int(text)
    return None


def without_percentages(text: str) -> str:
    """The message with its probabilities blanked out, so '100%' is never read as an amount of 100."""
    return PROBABILITY_NUMBER.sub(" ", PERCENT.sub(" ", text))


def creating_deal(text: str) -> bool:
    """Whether a message opens a new deal rather than changing one."""
    return bool(text) and NEW_DEAL.search(text) is not None and OP_REF.search(text) is None


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


def percent_reading(text: str, raw_amount: str) -> bool:
    """Whether an amount the NLU found is really a probability ('80%' read as 80)."""
    if "%" in raw_amount or "％" in raw_amount:
        return True
    amount = parse_amount(raw_amount)
    numbers = {Decimal(match.group("num")) for match in PERCENT.finditer(text) if match.group("num")}
    numbers |= {Decimal(match.group("num")) for match in PROBABILITY_NUMBER.finditer(text)}
    return amount is not None and amount in numbers


def read_probability_into(turn: Turn, text: str) -> None:
    """A probability in the message fills the slot; one outside 0–100 is noted and asked again."""
    if not text:
        return
    value, unclear = read_probability(text)
    if value is not None:
        turn.slots["probability"] = value
    elif unclear is not None:
        turn.slots["_probability_unclear"] = unclear
        StaffHandler.note(turn, turn.t("deal.bad_probability", given=short(unclear, 40)))


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


def close_into(turn: Turn, when: date | datetime, *, open_deal: bool) -> None:
    """A close date said in the message; a past one for a deal that stays open is refused and asked again."""
    day = when if not isinstance(when, datetime) else when.astimezone(zone(turn)).date()
    if open_deal and day < local_today(turn):
        turn.slots["_close_past"] = day.isoformat()
        turn.slots.pop("close", None)
        StaffHandler.note(turn, turn.t("deal.close_in_past", day=day_label(turn, day)))
        return
    turn.slots["close"] = day.isoformat()
    turn.slots.pop("_close_past", None)


def close_answer(turn: Turn, raw: str, *, open_deal: bool, optional: bool = False) -> str:
    """An answer to the close-date question: a day (not in the past for an open deal); '' for none when
    the date is optional."""
    if optional and raw.strip().casefold() in NO_ANSWER:
        turn.slots.pop("_close_past", None)
        return ""
    found = whens(turn) or [when for when in [parse_when(raw, zone(turn))] if when is not None]
    if not found:
        raise SlotInvalid(turn.t("deal.bad_close", given=short(raw, 40)))
    when = found[0]
    day = when if not isinstance(when, datetime) else when.astimezone(zone(turn)).date()
    if open_deal and day < local_today(turn):
        raise SlotInvalid(turn.t("deal.close_in_past", day=day_label(turn, day)))
    turn.slots.pop("_close_past", None)
    return day.isoformat()


def deal_snapshot(deal: OpportunityOut) -> dict[str, Any]:
    """What the card needs of a deal, JSON-safe."""
    return {
        "ref": deal.ref, "name": deal.name, "customer": deal.customer_name, "stage": deal.stage,
        "amount": str(deal.amount), "close": deal.expected_close.isoformat() if deal.expected_close else None,
        "lost_reason": deal.lost_reason or "", "probability": deal.probability,
    }


class UpdateDeal(StaffHandler):
    """J6: 'move the Acme renewal to negotiation, 50k'."""

    intent = "update_deal"
    roles = SALES_ROLES
    # Opening a deal is this intent too ("new deal with Acme …"): see NewDeal for why. Its slots are listed
    # here so the dialogue finds them while a new deal is being filled in.
    slots = (
        Slot("deal", "deal.ask_deal", entity="deal"),
        Slot("stage", "deal.ask_stage", entity="stage", required=False),
        Slot("amount", "deal.ask_amount", entity="amount", required=False),
        Slot("probability", "deal.ask_probability", required=False),
        Slot("close", "deal.ask_close", entity="date", required=False),
        Slot("changes", "deal.ask_changes", required=False),
        Slot("lost_reason", "deal.ask_lost_reason", free_text=True, required=False),
        Slot("competitor", "deal.ask_competitor", required=False),
        Slot("customer", "deal.ask_customer", entity="customer", required=False),
        Slot("name", "deal.ask_name", free_text=True, required=False),
    )
    needs_confirmation = True

    def __init__(self) -> None:
        self._new = NewDeal()

    async def prefill(self, turn: Turn) -> None:
        """Which deal, and the new stage, amount and close date, from the first message (or a new deal)."""
        text = spoken(turn)
        if creating_deal(text):
            turn.slots["_new"] = True
            await self._new.prefill(turn)
            return
        await self._find_deal(turn, text)
        self._read_changes(turn, text)

    def next_slot(self, turn: Turn) -> Slot | None:
        """Deal, then anything unclear, then something to change, then why it was lost."""
        if turn.slots.get("_new"):
            return self._new.next_slot(turn)
        slots, by_name = turn.slots, {slot.name: slot for slot in self.slots}
        if "deal" not in slots:
            return by_name["deal"]
        if slots.get("_stage_unclear"):
            return by_name["stage"]
        if slots.get("_amount_unclear"):
            return by_name["amount"]
        if slots.get("_probability_unclear"):
            return by_name["probability"]
        if slots.get("_close_past"):
            return by_name["close"]
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
        if slots.get("_new"):
            return await self._new.validate(turn, slot, raw)
        if slot.name == "probability":
            return probability_answer(turn, raw)
        if slot.name == "close":
            return close_answer(turn, raw, open_deal=self._stays_open(turn))
        if slot.name == "deal":
            return await self._deal_answer(turn, raw)
        if slot.name == "stage":
            stage = normalise_stage(raw) or stage_in_text(raw)
            if stage is None:
                raise SlotInvalid(turn.t("deal.bad_stage", given=short(raw, 40)))
            slots.pop("_stage_unclear", None)
            return stage
        if slot.name == "amount":
            return amount_answer(turn, raw)
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
        if turn.slots.get("_new"):
            return await self._new.question(turn, slot)
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
        if turn.slots.get("_new"):
            return await self._new.confirmation(turn)
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
        if turn.slots.get("_new"):
            return await self._new.execute(turn)
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
            return money(value)
        if field_name == "probability":
            return f"{value}%"
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
        elif text and (named := STAGE_NAMED.search(text)) is not None:
            # "move Acme to stage banana": a stage was asked for, just not one that exists.
            given = next(group for group in named.groups() if group)
            if normalise_stage(given) is None:
                slots["_stage_unclear"] = given
                self.note(turn, turn.t("deal.bad_stage", given=short(given, 40)))
        raw_amount = turn.entity("amount")
        if raw_amount is not None and text and percent_reading(text, raw_amount):
            raw_amount = None
        if raw_amount is not None:
            amount = parse_amount(raw_amount)
            if amount is None:
                slots["_amount_unclear"] = raw_amount
                self.note(turn, turn.t("deal.bad_amount", given=short(raw_amount, 40)))
            else:
                slots["amount"] = str(amount)
        elif text:
            amount = amount_in_text(without_percentages(OP_REF.sub(" ", text)))
            if amount is not None:
                slots["amount"] = str(amount)
            elif (vague := APPROXIMATE.search(text)) is not None:
                slots["_amount_unclear"] = vague.group(0)
                self.note(turn, turn.t("deal.bad_amount", given=vague.group(0)))
        read_probability_into(turn, text)
        for when in whens(turn):
            close_into(turn, when, open_deal=self._stays_open(turn))
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


# --- a new deal (update_deal with "new deal …") -----------------------------------------------------------


class NewDeal(CustomerHandler):
    """'new deal with Acme: 80 dishwashers, 120k, closing end of March' → a confirmed new opportunity.

    Not an intent of its own: creating and changing a deal say the same things (customer, amount, stage,
    close date) and differ by one word ("new", "新建"), which a rule reads exactly while a classifier
    would have to learn it from a few examples; the confirmation card shows "New deal" before anything
    is written, so a misread costs one "no". UpdateDeal hands its turns here when the word is there.
    """

    intent = "update_deal"
    roles = SALES_ROLES
    slots = tuple(slot for slot in UpdateDeal.slots
                  if slot.name in ("customer", "amount", "stage", "probability", "close", "name"))
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """Customer, name, amount, stage, probability and close date from the first message."""
        text, slots = spoken(turn), turn.slots
        await self.take_customer(turn, turn.entity("customer"), NEW_DEAL.sub(" ", text))
        raw_stage = turn.entity("stage")
        stage = normalise_stage(raw_stage) if raw_stage else None
        if raw_stage and stage is None:
            slots["_stage_unclear"] = raw_stage
            self.note(turn, turn.t("deal.bad_stage", given=short(raw_stage, 40)))
        # "3月底成交" says when it closes, not that it is won: a new deal starts in an open stage.
        stage = stage if stage in OPEN_STAGES else stage_in_text(text) if text else None
        if stage in OPEN_STAGES:
            slots["stage"] = stage
        raw_amount = turn.entity("amount")
        if raw_amount is not None and text and percent_reading(text, raw_amount):
            raw_amount = None
        amount = parse_amount(raw_amount) if raw_amount else amount_in_text(without_percentages(text))
        vague = APPROXIMATE.search(text) if text else None
        if amount is not None:
            slots["amount"] = str(amount)
        elif raw_amount or vague:
            given = raw_amount or (vague.group(0) if vague else "")
            slots["_amount_unclear"] = given
            self.note(turn, turn.t("deal.bad_amount", given=short(given, 40)))
        read_probability_into(turn, text)
        for when in whens(turn):
            close_into(turn, when, open_deal=True)
            break
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
        if "close" not in slots or slots.get("_close_past"):
            return by_name["close"]
        if not slots.get("name"):
            return by_name["name"]
        return None

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """Each answer checked like an update's; a name is a few words."""
        slots = turn.slots
        if slot.name == "customer":
            return await self.customer_answer(turn, raw)
        if slot.name == "stage":
            stage = normalise_stage(raw) or stage_in_text(raw)
            if stage not in OPEN_STAGES:
                raise SlotInvalid(turn.t("deal.bad_new_stage", given=short(raw, 40)))
            slots.pop("_stage_unclear", None)
            return stage
        if slot.name == "amount":
            return amount_answer(turn, raw)
        if slot.name == "probability":
            return probability_answer(turn, raw)
        if slot.name == "close":
            return close_answer(turn, raw, open_deal=True, optional=True)
        name = " ".join(raw.split())
        if len(name) < 2:
            raise SlotInvalid(turn.t("deal.bad_name"))
        return name[:200]

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """Which customer (buttons when several match), open stages as buttons, 'no date yet'."""
        if slot.name == "customer":
            return [self.customer_question(turn, slot.prompt)]
        if slot.name == "stage":
            return [Reply(text=turn.t("deal.ask_stage"), buttons=tuple(
                Button(title=turn.t(f"deal.stages.{stage}"), payload=payload(self.intent, stage=stage))
                for stage in OPEN_STAGES))]
        if slot.name == "close":
            return [Reply(text=turn.t("deal.ask_close"),
                          buttons=(Button(title=turn.t("deal.no_close"), payload="none"),))]
        return [turn.say(slot.prompt)]

    async def confirmation(self, turn: Turn) -> Reply:
        """The deal as it will be opened."""
        slots = turn.slots
        stage = slots.get("stage") or OpportunityStage.QUALIFICATION.value
        lines = [
            turn.t("deal.new_card_title"),
            turn.t("deal.new_card_customer", name=slots["customer_name"], code=slots["customer"]),
            turn.t("deal.new_card_name", name=slots["name"]),
            turn.t("deal.new_card_amount", amount=money(slots["amount"])),
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
                      stage=turn.t(f"deal.stages.{created.stage}"), amount=money(created.amount),
                      probability=created.probability)
        if created.expected_close:
            text += " " + turn.t("deal.closes", day=day_label(turn, created.expected_close))
        return [Reply(text=text, buttons=(
            turn.button("deal.update_button", payload("update_deal", deal=created.ref), ref=created.ref),))]

    @staticmethod
    def _probability(turn: Turn, stage: str) -> int:
        given = turn.slots.get("probability")
        return int(given) if given is not None else DEFAULT_STAGE_PROBABILITY[OpportunityStage(stage)]


# --- lists: my visits, my deals --------------------------------------------------------------------------

TEAM = re.compile(
    r"\bteam'?s?\b|\bmy\s+(?:reps|people|staff|sales\s*people|guys)\b|\beveryone'?s?\b|\ball\s+reps\b"
    r"|\bsubordinates\b|团队|我们组|组里|下属|手下|部门|全组|大家的|各位|每个销售", re.IGNORECASE)
MONTH_EN = {name: number for number, names in enumerate((
    ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
    ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
    ("dec", "december")), start=1) for name in names}
MONTH_EN_IN_TEXT = re.compile(
    r"\b(?:in|for|during|of|closing|closes|close|by|since|from)\s+(?P<month>" + "|".join(
        sorted(MONTH_EN, key=len, reverse=True)) + r")\b(?:\s+(?P<year>20\d\d))?", re.IGNORECASE)
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
        number = MONTH_EN.get(raw.casefold()) or (int(raw) if raw.isdigit() else zh_number(raw))
        if number and 1 <= number <= 12:
            year = int(found.group("year")) if found.group("year") else today.year
            if not found.group("year"):
                if future and number < today.month:
                    year += 1
                elif not future and number > today.month:
                    year -= 1
            return named(date(year, number, 1))
    return None


def zh_number(text: str) -> int | None:
    """一 … 十二."""
    digits = "一二三四五六七八九"
    if text == "十":
        return 10
    if text.startswith("十"):
        return 10 + digits.index(text[1]) + 1 if len(text) == 2 and text[1] in digits else None
    return digits.index(text) + 1 if len(text) == 1 and text in digits else None


def month_end(day: date) -> date:
    """The last day of the month holding `day`."""
    following = day.replace(day=28) + timedelta(days=4)
    return following - timedelta(days=following.day)


def quarter_bounds(day: date) -> tuple[date, date]:
    """First and last day of the quarter holding `day`."""
    first = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return first, month_end(date(first.year, first.month + 2, 1))


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
        stage = normalise_stage(raw_stage) if raw_stage else stage_in_text(text) if text else None
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
        page = await turn.core.sales.list_opportunities(
            turn.actor, owner=None if team else turn.actor.username, stage=stage,
            open_only=stage is None, min_amount=minimum,
            closing_from=period.start if period else None,
            closing_before=period.end + timedelta(days=1) if period else None, limit=MAX_LISTED)
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
    return [LogVisit(), UpdateDeal(), ListVisits(), ListDeals()]
