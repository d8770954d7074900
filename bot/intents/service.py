"""Customer service: repair requests, complaints, status, warranty, knowledge base, ratings, hand-off."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.dialogue import SWITCH_CONFIDENCE, Handler, Slot, SlotInvalid, Turn, cue
from bot.grounding import Found, Grounded, Mention, installed_units, vocabulary
from bot.intents.smalltalk import not_a_person_request
from bot.messages import Button, Reply
from core.domain.enums import Channel, RepairStatus, RequestKind, RequestStatus, Role, Severity, SurveyStatus
from core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from core.kb_index import extract_error_codes
from core.schemas import (
    InstalledProductOut,
    RepairOrderOut,
    ServiceRequestDetail,
    ServiceRequestIn,
    ServiceRequestOut,
)

# KB scores are 0..100. Observed on real articles: the matching article for a plain symptom scores 70-95
# ("my washer is leaking" 91, with the serial left in 73, "dishwasher not heating" 83), a matching
# error code 100; loosely related articles land at 30-57. Below 30 it is noise.
KB_STRONG_SCORE = 70.0
KB_SHOW_SCORE = 30.0
KB_TOP = 3
MAX_PRODUCT_BUTTONS = 8
MAX_LISTED = 5
MAX_TEXT = 2000
ASAP = "asap"
# When someone names only a day, the visit is asked for at the start of the working day.
DEFAULT_VISIT_TIME = time(9, 0)
MAX_VISIT_AHEAD = timedelta(days=365)
# The appliances to offer (and what to say) when a mention needs the person to choose: kept in the slots.
UNIT_QUESTION = "_unit_question"
# What a repair request keeps about a knowledge-base article (found for, or tried on, one appliance).
_ARTICLE_SLOTS = ("kb_hit", "kb_checked", "kb_choice", "kb_article_code", "kb_title", "kb_product")
# Open requests listed at once ("status of my requests"); the rest are counted.
MAX_OPEN_LISTED = 20

_CHANNELS = {
    c.value: c for c in (Channel.REST, Channel.WEB, Channel.TELEGRAM, Channel.SLACK, Channel.TERMINAL)
}
_TICKET = re.compile(r"^\s*(?:SR)?\s*[-#]?\s*(\d{1,9})\s*$", re.IGNORECASE)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ASAP_TEXT = re.compile(
    r"\b(asap|as soon as possible|soonest|any ?time|whenever)\b|尽快|越快越好|马上|随时", re.I
)
_IDENTIFIER = re.compile(r"[A-Za-z]*\d[\w-]*|[A-Za-z]+[-_]\d[\w-]*")
_WORD = re.compile(r"[A-Za-z]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _word_set(text: str) -> frozenset[str]:
    """A whitespace-separated vocabulary as a set (keeps long lists readable)."""
    return frozenset(text.split())


# Words that ask for a repair without saying what is wrong ("I need a repair for my washer").
_REQUEST_WORDS = _word_set(
    """i id im me my mine we our us a an the to for of on in at with and or please pls plz can could would
    will you someone somebody need needs want wants like get have has is it its this that open create make
    book schedule arrange request requests ticket repair repairs repairing fix fixing fixed service servicing
    technician engineer visit appointment help new send come over home house serial number product appliance
    machine washing washer dishwasher fridge refrigerator freezer oven dryer heater conditioner aircon tv
    microwave hood stove cooker report problem issue there some one unit model device call out hi hello hey
    thanks thank do does about regarding sr another again more second also too same other"""
)
_REQUEST_PHRASES_ZH = (
    "我需要", "我要", "我想", "需要", "帮我", "麻烦", "报修", "维修", "修理", "修一下", "上门",
    "预约", "申请", "师傅", "一下", "我的", "家里的", "家里", "我家", "洗衣机", "洗碗机", "冰箱",
    "空调", "热水器", "烘干机", "电视", "产品", "机器", "序列号", "工单", "一个", "你好", "您好",
    "服务", "请", "的", "个", "吗", "呢", "要", "想", "修", "开",
)
_COMPLAINT_WORDS = _word_set(
    """i id im me my we our a an the to want would like make file lodge raise register submit complaint
    complaints complain complaining about please have has service your you with is it there this hi hello
    formal against can could need help open new"""
)
_COMPLAINT_PHRASES_ZH = (
    "我要", "我想", "投诉", "一下", "你们的", "你们", "提交", "服务", "帮我", "一个", "请", "我",
    "要", "想", "的",
)

# A complaint is high severity when it shows anger or rudeness, a repeated failure, or a safety risk.
_SAFETY_EN = cue(
    r"fire|flames?|smoke|smoking|smoky|burning|burnt|burned|sparks?|sparking|shock(ed|s)?|electrocut\w*|"
    r"explod\w*|explosion|gas leak|melt(ed|ing)?"
)
_SAFETY_ZH = ("起火", "着火", "冒烟", "漏电", "触电", "烧焦", "爆炸", "火花", "煤气泄漏", "燃气泄漏", "冒火")
_ANGER_EN = cue(
    r"rude\w*|unacceptable|disgust\w*|terrible|horrible|awful|worst|furious|angry|outrage\w*|ridiculous|"
    r"useless|incompetent|scam\w*|insult\w*|shout\w*|yell\w*|swore|swearing|lawyers?|sue|never again|"
    r"fed up|sick of|again|still (not|broken)|(second|third|fourth|fifth) time|\d+ times|"
    r"(two|three|four|five|several|many) times|repeated\w*|keeps? (breaking|failing|happening)|"
    r"same (problem|issue|fault)",
    "!{2,}",
)
_ANGER_ZH = (
    "态度差", "态度很差", "态度恶劣", "粗鲁", "骂", "太差", "垃圾", "愤怒", "气死", "太过分", "无法接受",
    "不可接受", "骗子", "欺骗", "再也不", "差劲", "恶劣", "又坏", "又出", "又是", "第二次", "第三次", "多次",
    "反复", "屡次", "一再", "还是没修好", "还是坏", "还没修好",
)

# Typed answers to "add to SR-n, or open a new request?" (the buttons say it exactly).
_ADD_WORDS = cue("add|append|attach|same|existing|that one|the open one", "补充|追加|加到|加进|合并|同一个")
_NEW_WORDS = cue("new|another|separate|second|anyway", "新建|新开|新的|另开|另外|单独|重新")

# "Where is my technician?" asks about the person's own jobs, not the request last mentioned.
_TECHNICIAN = cue(
    r"technicians?|engineers?|repair ?m[ae]n|repairers?|service ?m[ae]n|fitters?|installers?|plumbers?|"
    r"electricians?|who(?:'s| is) coming|(?:someone|somebody|anyone|anybody) (?:coming|come)",
    "师傅|技师|维修员|维修工|维修人员|工程师|上门|派人|有人来|谁来",
)
# A question about a request is no description of a problem.
_QUESTION = re.compile(
    r"[?？]|^\s*(?:any|when|where|what|how|is|are|has|have|did|does|do|can|will)\b"
    r"|吗|呢|什么|怎么|多久|几时|何时|有没有|是否|进度",
    re.I,
)
# "status of my requests" asks for all of them, not the one just talked about.
# What staff ask to see across the desk ("any complaints this week?", "escalated requests", "这周有投诉吗").
_COMPLAINTS = cue("complaints?", "投诉")
_ESCALATED = cue(r"escalat\w*", "升级|上报")
_THIS_WEEK = cue("this week", "本周|这周|这个星期|这星期")
_ALL_REQUESTS = cue(
    "requests|tickets|cases|repairs|complaints|all|every|list|open ones", "所有|全部|哪些|几个|都|列表|们"
)

_STAR_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
}


# --- small helpers -------------------------------------------------------------------------------


def _tz(turn: Turn) -> ZoneInfo:
    """The person's timezone (their own, else the company's)."""
    try:
        return ZoneInfo(turn.actor.timezone or turn.core.settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(turn.core.settings.timezone)


def _when(turn: Turn, moment: datetime) -> str:
    """A moment as the person's wall-clock time."""
    return moment.astimezone(_tz(turn)).strftime("%Y-%m-%d %H:%M")


def _button_payload(intent: str, **entities: str) -> str:
    """`/intent{"entity": "value"}` as the assistant parses it."""
    return f"/{intent}{json.dumps(entities, ensure_ascii=False)}" if entities else f"/{intent}"


def _channel(turn: Turn) -> Channel:
    """The case's channel from the chat channel (anything else counts as the API)."""
    return _CHANNELS.get(turn.channel, Channel.API)


def _is_payload(text: str) -> bool:
    return text.startswith("/")


def _ticket_ref(raw: str) -> str | None:
    """'SR-12', 'sr 12', '#12', '12' → 'SR-12'."""
    match = _TICKET.match(raw.replace("#", ""))
    return f"SR-{int(match.group(1))}" if match else None


def _describes(text: str, words: frozenset[str], phrases: tuple[str, ...]) -> bool:
    """Whether a first message says what is wrong, not just that something is wanted."""
    if not text.strip() or _is_payload(text):
        return False
    if extract_error_codes(text):
        return True
    rest = _IDENTIFIER.sub(" ", text)
    lowered = (word.lower() for word in _WORD.findall(rest))
    if any(word not in words and len(word) >= 3 for word in lowered):
        return True
    chinese = "".join(_CJK.findall(rest))
    for phrase in phrases:
        chinese = chinese.replace(phrase, "")
    return len(chinese) >= 2


def _without_entities(turn: Turn) -> str:
    """The message minus what the NLU picked out (serials, customer names, dates): what is left describes."""
    text = turn.text
    for found in turn.parse.entities:
        for piece in {found.text, found.value}:
            if len(piece) >= 2:
                text = re.sub(re.escape(piece), " ", text, flags=re.I)
    return text


def _severity(text: str) -> tuple[Severity, bool]:
    """Complaint severity from its words, and whether it reports a safety risk."""
    safety = bool(_SAFETY_EN.search(text)) or any(word in text for word in _SAFETY_ZH)
    angry = bool(_ANGER_EN.search(text)) or any(word in text for word in _ANGER_ZH)
    shouting = sum(1 for word in _WORD.findall(text) if len(word) >= 4 and word.isupper()) >= 2
    return (Severity.HIGH if safety or angry or shouting else Severity.MEDIUM), safety


def _has_safety_risk(text: str) -> bool:
    return _severity(text)[1]


def _stars(raw: str) -> int:
    """A 1-5 rating from '5', '4/5', '⭐⭐⭐', 'five', '五星'; anything else is 0."""
    text = raw.strip().lower()
    if text.count("⭐") and not re.search(r"\d", text):
        return text.count("⭐")
    out_of_five = re.fullmatch(r"(\d+)\s*/\s*5", text)
    if out_of_five:
        return int(out_of_five.group(1))
    digits = re.findall(r"\d+", text)
    if digits:
        return int(digits[0]) if len(digits) == 1 else 0
    for word, value in _STAR_WORDS.items():
        # A Chinese numeral counts only as the whole answer or before 星/分 ("一般" is not one star).
        pattern = rf"\b{word}\b" if word.isascii() else rf"^{word}$|{word}(颗)?[星分]"
        if re.search(pattern, text):
            return value
    return 0


def _in_sentence(name: str, lang: str) -> str:
    """'Washing machine WM-2023' inside an English sentence reads 'washing machine WM-2023'."""
    if lang == "en" and len(name) > 1 and name[0].isupper() and name[1].islower():
        return name[0].lower() + name[1:]
    return name


def _unit_info(unit: InstalledProductOut) -> dict[str, Any]:
    """What the conversation keeps about a product (JSON-safe)."""
    return {
        "serial": unit.serial_number, "name": unit.product_name, "code": unit.product_code,
        "customer": unit.customer_code, "customer_name": unit.customer_name, "in_warranty": unit.in_warranty,
        "ends_on": unit.warranty_ends_on.isoformat(), "type": unit.warranty_type,
    }


def _product_label(unit: InstalledProductOut) -> str:
    return f"{unit.product_name} · {unit.serial_number}"


async def _ground(
    turn: Turn, text: str | None = None, *, remembered: bool = True
) -> Grounded[InstalledProductOut]:
    """The asker's appliance(s) this message (or `text`, an answer) means; the remembered one if none."""
    return await installed_units(
        turn,
        turn.text if text is None else text,
        said_serial=turn.entity("serial_number"),
        context_serial=turn.state.context.get("serial_number") if remembered else None,
    )


async def _other_kind(turn: Turn, unit: InstalledProductOut, product_code: str | None) -> bool:
    """Whether a knowledge article's product is another kind of appliance than this unit."""
    if not product_code or product_code == unit.product_code:
        return False
    words = await vocabulary(turn)
    return words.kind_of(product_code) != words.kind_of(unit.product_code)


def _unit_question(turn: Turn, grounded: Grounded[InstalledProductOut], not_found_key: str) -> dict[str, Any]:
    """What to say, and which appliances to offer, when words did not point at exactly one (JSON)."""
    serials = [unit.serial_number for unit in grounded.matches]
    if grounded.found is Found.SEVERAL:
        hint = turn.t("grounding.several", count=len(serials), said=grounded.said[:64])
        return {"hint": hint, "serials": serials}
    if grounded.found is Found.SUGGESTED:
        joined = f" {turn.t('grounding.or_word')} ".join(serials)
        return {"question": turn.t("grounding.did_you_mean", said=grounded.said[:64], serials=joined),
                "serials": serials}
    if grounded.by is Mention.SERIAL:
        return {"hint": turn.t(not_found_key, serial=grounded.said[:64])}
    # An appliance they named but have not registered: say so, and let them go on without one.
    return {"hint": turn.t("grounding.kind_not_owned", said=grounded.said[:64]), "other": True}


def _unit_hint(turn: Turn, question: dict[str, Any]) -> str:
    """What an answer that did not point at one appliance is told; the buttons follow with the question."""
    said = question.pop("hint", None) or question.pop("question", None)
    return str(said) if said else turn.t("service_request.which_unit")


async def _own_units(turn: Turn) -> list[InstalledProductOut]:
    """A customer's installed products (staff get none: buttons over every customer's units make no sense)."""
    return await turn.core.installed.own_units(turn.actor)


def _warranty_type(turn: Turn, value: str) -> str:
    return turn.t(f"warranty.types.{value}") if value in ("standard", "extended", "none") else value


def _topic(turn: Turn, text: str) -> None:
    """Remember what the person is dealing with, so a hand-off can tell a colleague."""
    turn.state.context["topic"] = " ".join(text.split())[:200]


class ServiceHandler(Handler):
    """Shared behaviour: a value given in this very message that does not fit is explained, not dropped."""

    async def prefill(self, turn: Turn) -> None:
        """Fill slots from this message and context; explain an invalid value from this message."""
        for slot in self.slots:
            if slot.name in turn.slots or not slot.entity:
                continue
            now = turn.entity(slot.entity)
            raw = now or (turn.state.context.get(slot.entity) if slot.remember else None)
            if raw is None:
                continue
            try:
                turn.slots[slot.name] = await self.validate(turn, slot, raw)
            except SlotInvalid as invalid:
                if now is not None:
                    self.note(turn, invalid.hint)


# --- J1: open a repair request -------------------------------------------------------------------


class OpenServiceRequest(ServiceHandler):
    """Product, problem, (a knowledge-base fix first), warranty, visit time, confirm, open SR-n."""

    intent = "open_service_request"
    roles: ClassVar[frozenset[Role] | None] = frozenset({Role.CUSTOMER, Role.AGENT, Role.MANAGER, Role.REP})
    slots: ClassVar[tuple[Slot, ...]] = (
        Slot("product", "service_request.ask_product", entity="serial_number", remember=True),
        # Asked only when the appliance already has an open request: add to it, or open another.
        Slot("duplicate", "service_request.duplicate", entity="duplicate", required=False),
        Slot("description", "service_request.ask_description", free_text=True),
        Slot("kb_choice", "service_request.kb_offer", entity="kb_article_code", required=False),
        Slot("preferred_time", "service_request.ask_time", entity="time"),
    )
    needs_confirmation = True

    # The open-request and article questions are asked only when there is one to ask about; adding to an
    # open request needs just the description.

    def needs_duplicate(self, turn: Turn) -> bool:
        """Asked only when the appliance already has an open request."""
        return "duplicate_of" in turn.slots

    def needs_kb_choice(self, turn: Turn) -> bool:
        """Asked only when an article was found, and not when adding to an open request."""
        return "kb_hit" in turn.slots and not self._adding(turn)

    def needs_preferred_time(self, turn: Turn) -> bool:
        """Not asked when adding to an open request: its visit is already arranged."""
        return not self._adding(turn)

    @staticmethod
    def _adding(turn: Turn) -> bool:
        return turn.slots.get("duplicate") == "add"

    async def prefill(self, turn: Turn) -> None:
        """Take the article (from a search button), product, problem and visit time from this message."""
        s = turn.slots
        code = turn.entity("kb_article_code")
        if code:
            await self._take_article(turn, code)
        await self._prefill_product(turn)
        carried = turn.entity("description")
        if carried and carried.strip():
            # A "Request a repair for it" button carries what the person had already said.
            s["description"] = carried.strip()[:MAX_TEXT]
        elif _describes(_without_entities(turn), _REQUEST_WORDS, _REQUEST_PHRASES_ZH):
            s["description"] = turn.text.strip()[:MAX_TEXT]
        elif s.get("kb_article_code") and turn.state.context.get("kb_query"):
            # Came from "Open a repair request" under a search result: the search was the description.
            s["description"] = turn.state.context["kb_query"][:MAX_TEXT]
        if turn.entity("time") or turn.entity("date"):
            # A past date in the first message says when the trouble began ("leaking since yesterday"),
            # not when to visit: only a future one is taken, anything else is simply asked for later.
            with contextlib.suppress(SlotInvalid):
                s["preferred_time"] = self._visit_time(turn)
        await self._check_kb(turn)

    async def correct(self, turn: Turn) -> list[str]:
        """New slot values; an appliance named later ("actually it's the dishwasher") replaces the one."""
        # Kinds, models and names carry no entity, so the dialogue's own corrections cannot see them.
        changed = await super().correct(turn)
        s = turn.slots
        if "preferred_time" in changed and turn.state.awaiting == "kb_choice" and "kb_hit" in s:
            # A visit time said under the tip ("明天上午10点") answers it: they still want the visit.
            s.update(kb_choice="repair", kb_article_code=s["kb_hit"]["code"], kb_title=s["kb_hit"]["title"])
        if "product" in changed or turn.state.awaiting == "product" or "product" not in s:
            return changed
        if not turn.actor.is_customer or _is_payload(turn.text) or turn.entity("serial_number"):
            return changed
        unit = (await _ground(turn, remembered=False)).one
        if unit is not None and unit.serial_number != s["product"]:
            await self._take_unit(turn, unit)
            await self._check_kb(turn)
            changed.append("product")
        return changed

    async def _take_article(self, turn: Turn, code: str) -> None:
        try:
            article = await turn.core.knowledge.get(turn.actor, code)
        except NotFound:
            return
        turn.slots.update(kb_article_code=article.code, kb_title=article.title, kb_checked=True,
                          kb_product=article.product_code or "")

    async def _prefill_product(self, turn: Turn) -> None:
        """The appliance named (said now beats remembered); several, a near miss or none is asked about."""
        s = turn.slots
        grounded = await _ground(turn)
        unit = grounded.one
        wanted = s.get("kb_product")
        # A remembered appliance is no match for an article about another kind ("Open a repair request"
        # under a dishwasher article, right after talking about the washing machine).
        remembered = grounded.by is Mention.CONTEXT
        if unit is not None and not (remembered and await _other_kind(turn, unit, wanted)):
            await self._take_unit(turn, unit)
            return
        if not turn.actor.is_customer:
            if grounded.found is Found.NONE:
                self.note(turn, turn.t("service_request.unknown_serial_staff", serial=grounded.said[:64]))
            name = turn.remembered("customer")
            code = await self._match_customer(turn, name) if name else None
            if code:
                s["product"], s["customer_code"] = "", code
            return
        units = await _own_units(turn)
        if not units:
            # Nothing registered for this customer: the request goes to their account without a product.
            if grounded.found is Found.NONE and grounded.by is Mention.SERIAL:
                self.note(turn, turn.t("service_request.unknown_serial", serial=grounded.said[:64]))
            s["product"] = ""
            return
        if grounded.found in (Found.SEVERAL, Found.SUGGESTED, Found.NONE):
            question = _unit_question(turn, grounded, "service_request.unknown_serial")
            if "hint" in question:
                self.note(turn, question.pop("hint"))
            s[UNIT_QUESTION] = question
            return
        # Came from a knowledge-base article: the customer's only unit of that model is the one.
        matching = [unit for unit in units if wanted and unit.product_code == wanted]
        if len(matching) == 1:
            await self._take_unit(turn, matching[0])

    async def _take_unit(self, turn: Turn, unit: InstalledProductOut) -> None:
        """Use this appliance; an open request for it is pointed out before a second one is opened."""
        s = turn.slots
        previous = s.get("product")
        if previous != unit.serial_number:
            for stale in ("duplicate", "duplicate_of", "warranty_said"):
                s.pop(stale, None)
            if previous:
                # Another appliance than the one chosen: the article found or tried was about that one.
                for stale in _ARTICLE_SLOTS:
                    s.pop(stale, None)
        s["product"] = unit.serial_number
        s["unit"] = _unit_info(unit)
        s.pop(UNIT_QUESTION, None)
        turn.state.context["serial_number"] = unit.serial_number
        if "duplicate" in s:
            return
        page = await turn.core.service_desk.list_requests(
            turn.actor, open_only=True, kind=RequestKind.REQUEST.value, customer_code=unit.customer_code,
            limit=50,
        )
        same = [item for item in page.items if item.serial_number == unit.serial_number]
        if same:
            newest = same[0]
            s["duplicate_of"] = {"ref": newest.ref, "subject": newest.subject, "status": newest.status}

    async def _match_customer(self, turn: Turn, name: str) -> str | None:
        """A customer code from a code or a (part of a) name the actor may see."""
        needle = name.strip().casefold()
        if not needle:
            return None
        names = await turn.core.customers.names_in_scope(turn.actor)
        exact = [code for code, label in names if needle in (code.casefold(), label.casefold())]
        if exact:
            return exact[0]
        partial = [code for code, label in names if needle in label.casefold()]
        return partial[0] if len(partial) == 1 else None

    async def fill_from_answer(self, turn: Turn, slot: Slot) -> Any:
        """Any answer (`extract_<slot>`); once product and problem are known, look in the knowledge base."""
        # Kept at once, not only by the dialogue afterwards: the knowledge-base look-up reads it.
        turn.slots[slot.name] = value = await super().fill_from_answer(turn, slot)
        await self._check_kb(turn)
        return value

    async def extract_product(self, turn: Turn) -> str:
        """An answer to "which appliance?" (button, serial, model, kind; staff: a customer), afresh."""
        if turn.entity("appliance") == "other":
            # "Another appliance": one they have not registered; the request goes to their account.
            turn.slots.pop(UNIT_QUESTION, None)
            return ""
        raw = turn.entity("serial_number") or turn.text.strip()
        if not raw or _is_payload(raw):
            raise SlotInvalid(turn.t("warranty.bad_serial"))
        grounded = await _ground(turn, raw, remembered=False)
        if grounded.one is not None:
            await self._take_unit(turn, grounded.one)
            return grounded.one.serial_number
        if turn.actor.is_customer:
            if grounded.found is Found.UNSAID:
                raise SlotInvalid(turn.t("service_request.which_unit"))
            question = _unit_question(turn, grounded, "service_request.unknown_serial")
            turn.slots[UNIT_QUESTION] = question
            raise SlotInvalid(_unit_hint(turn, question))
        if grounded.found is Found.NONE:
            raise SlotInvalid(turn.t("service_request.unknown_serial_staff", serial=grounded.said[:64]))
        code = await self._match_customer(turn, turn.entity("customer") or raw)
        if code is None:
            raise SlotInvalid(turn.t("service_request.unknown_target_staff", text=raw[:64]))
        turn.slots["customer_code"] = code
        return ""

    async def extract_duplicate(self, turn: Turn) -> str:
        """[Add to SR-n] / [Open a new one anyway], pressed or typed."""
        if "duplicate_of" not in turn.slots:
            # A button of an earlier question, pressed after the appliance changed: nothing to choose.
            raise SlotInvalid(turn.t("service_request.ask_description"))
        ref = turn.slots["duplicate_of"]["ref"]
        choice = turn.entity("duplicate")
        if choice is None and not _is_payload(turn.text):
            text = turn.text.strip()
            if _ADD_WORDS.search(text) or ref.lower() in text.lower():
                choice = "add"
            elif _NEW_WORDS.search(text):
                choice = "new"
        if choice not in ("add", "new"):
            raise SlotInvalid(turn.t("service_request.duplicate_hint", ref=ref))
        return choice

    async def extract_description(self, turn: Turn) -> str:
        """What is wrong, in the person's words."""
        text = turn.text.strip()
        if _is_payload(text) or len(text) < 3:
            raise SlotInvalid(turn.t("service_request.description_short"))
        return text[:MAX_TEXT]

    async def extract_kb_choice(self, turn: Turn) -> str:
        """"Still need a repair" (the button, or a no) under the article offered; a visit time said here is
        taken by `correct`."""
        s = turn.slots
        hit = s["kb_hit"]
        if turn.entity("kb_article_code") != hit["code"] and turn.parse.intent not in ("deny", self.intent):
            raise SlotInvalid(turn.t("service_request.kb_hint"))
        s.update(kb_article_code=hit["code"], kb_title=hit["title"])
        return "repair"

    async def extract_preferred_time(self, turn: Turn) -> str:
        """A visit time in the future (or as soon as possible)."""
        return self._visit_time(turn)

    async def _check_kb(self, turn: Turn) -> None:
        """Once product and problem are known, a strong knowledge-base match is offered before a visit."""
        s = turn.slots
        if s.get("kb_checked") or "description" not in s or "product" not in s or s.get("duplicate") == "add":
            return
        s["kb_checked"] = True
        _topic(turn, s["description"])
        query = s["description"]
        if s["product"]:
            # The serial only dilutes the match.
            query = re.sub(re.escape(s["product"]), " ", query, flags=re.I)
        unit = s.get("unit") or {}
        product_code = unit.get("code")
        hits = await turn.core.knowledge.search(turn.actor, query, limit=KB_TOP, product_code=product_code)
        if not hits:
            return
        top = hits[0]
        if product_code and top.product_code and top.product_code != product_code:
            return
        codes = set(extract_error_codes(query))
        code_match = bool(codes & set(extract_error_codes(f"{top.code} {top.title}")))
        if top.score >= KB_STRONG_SCORE or code_match:
            s["kb_hit"] = {"code": top.code, "title": top.title, "solution": top.solution}

    def _visit_time(self, turn: Turn) -> str:
        """An ISO visit time in the future from the time/date entities (or 'asap')."""
        raw_time, raw_date = turn.entity("time"), turn.entity("date")
        said_nothing = not raw_time and not raw_date
        if (raw_time or "").lower() == ASAP or (said_nothing and _ASAP_TEXT.search(turn.text)):
            return ASAP
        tz = _tz(turn)
        moment = _combine(raw_date, raw_time, tz, turn.now)
        if moment is None and not raw_time and not raw_date and not _is_payload(turn.text):
            moment = _combine(None, turn.text.strip(), tz, turn.now)
        if moment is None:
            raise SlotInvalid(turn.t("service_request.time_hint"))
        if moment <= turn.now:
            raise SlotInvalid(turn.t("service_request.time_past", when=_when(turn, moment)))
        if moment > turn.now + MAX_VISIT_AHEAD:
            raise SlotInvalid(turn.t("service_request.time_far"))
        return moment.isoformat()

    async def ask_kb_choice(self, turn: Turn) -> list[Reply]:
        """The article found, with [This solved it] [I still need a repair]."""
        hit = turn.slots["kb_hit"]
        return [turn.say(
            "service_request.kb_offer",
            turn.button("kb.solved_button", _button_payload("kb_solved", code=hit["code"])),
            turn.button("service_request.kb_still_button",
                        _button_payload(self.intent, kb_article_code=hit["code"])),
            title=hit["title"], code=hit["code"], solution=hit["solution"],
        )]

    async def ask_preferred_time(self, turn: Turn) -> list[Reply]:
        """The visit time, after the warranty statement (once)."""
        s = turn.slots
        replies = []
        if not s.get("warranty_said") and s.get("unit"):
            s["warranty_said"] = True
            replies.append(Reply(text=self._warranty_line(turn)))
        asap = turn.button("service_request.asap_button", _button_payload(self.intent, time=ASAP))
        replies.append(turn.say("service_request.ask_time", asap))
        return replies

    async def ask_product(self, turn: Turn) -> list[Reply]:
        """The customer's appliances as buttons (only those that fit what was said, when it was said)."""
        if not turn.actor.is_customer:
            return [turn.say("service_request.ask_product_staff")]
        units = await _own_units(turn)
        if not units:
            return [turn.say("service_request.ask_product_typed")]
        question = turn.slots.pop(UNIT_QUESTION, None) or {}
        offered = [unit for unit in units if unit.serial_number in question.get("serials", ())] or units
        buttons = [Button(title=_product_label(unit), payload=unit.serial_number)
                   for unit in offered[:MAX_PRODUCT_BUTTONS]]
        if question.get("other"):
            buttons.append(turn.button("grounding.other_appliance_button",
                                       _button_payload(self.intent, appliance="other")))
        if question.get("question"):
            return [Reply(text=question["question"], buttons=tuple(buttons))]
        key = "ask_product" if len(offered) <= MAX_PRODUCT_BUTTONS else "ask_product_more"
        return [turn.say(f"service_request.{key}", *buttons)]

    async def ask_duplicate(self, turn: Turn) -> list[Reply]:
        """"You already have SR-n open for this appliance": add to it, open another anyway, or look at it."""
        s = turn.slots
        open_one, unit = s["duplicate_of"], s["unit"]
        ref = open_one["ref"]
        return [turn.say(
            "service_request.duplicate",
            turn.button("service_request.duplicate_add_button",
                        _button_payload(self.intent, duplicate="add"), ref=ref),
            turn.button("service_request.duplicate_new_button",
                        _button_payload(self.intent, duplicate="new")),
            turn.button("service_request.duplicate_check_button",
                        _button_payload("check_request_status", ticket_id=ref), ref=ref),
            ref=ref, product=_in_sentence(unit["name"], turn.lang), serial=unit["serial"],
            subject=_short(open_one["subject"], 80), status=turn.t(f"status.statuses.{open_one['status']}"),
        )]

    def _warranty_line(self, turn: Turn) -> str:
        unit = turn.slots["unit"]
        key = "service_request.warranty_in" if unit["in_warranty"] else "service_request.warranty_out"
        return turn.t(key, product=_in_sentence(unit["name"], turn.lang), serial=unit["serial"],
                      ends_on=unit["ends_on"], type=_warranty_type(turn, unit["type"]))

    def _product_text(self, turn: Turn) -> str:
        unit = turn.slots.get("unit")
        if unit:
            return f"{unit['name']} · {unit['serial']}"
        return turn.t("service_request.no_product")

    def _visit_text(self, turn: Turn) -> str:
        value = turn.slots["preferred_time"]
        return turn.t("service_request.asap") if value == ASAP else _when(turn, datetime.fromisoformat(value))

    async def confirmation(self, turn: Turn) -> Reply:
        """The summary card (or, when adding to the open request, what will be added to it)."""
        s = turn.slots
        yes_no = (turn.button("service_request.yes_button", "/affirm"),
                  turn.button("service_request.no_button", "/deny"))
        if s.get("duplicate") == "add":
            open_one = s["duplicate_of"]
            return turn.say("service_request.add_summary", *yes_no, ref=open_one["ref"],
                            subject=_short(open_one["subject"], 80), description=s["description"])
        lines = [turn.t("service_request.summary_title")]
        if s.get("customer_code") and not s.get("unit"):
            lines.append(turn.t("service_request.summary_customer", customer=s["customer_code"]))
        lines.append(turn.t("service_request.summary_product", product=self._product_text(turn)))
        lines.append(turn.t("service_request.summary_problem", description=s["description"]))
        lines.append(turn.t("service_request.summary_visit", visit=self._visit_text(turn)))
        if s.get("unit"):
            lines.append(self._warranty_line(turn))
        if s.get("kb_article_code"):
            lines.append(turn.t("service_request.summary_article", code=s["kb_article_code"],
                                title=s.get("kb_title", "")))
        lines.append(turn.t("service_request.summary_question"))
        return Reply(text="\n".join(lines), buttons=(turn.button("service_request.yes_button", "/affirm"),
                                                       turn.button("service_request.no_button", "/deny")))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Open the request through the service desk (or add the new description to the open one)."""
        s = turn.slots
        if s.get("duplicate") == "add":
            ref = s["duplicate_of"]["ref"]
            await turn.core.service_desk.add_comment(turn.actor, ref, s["description"])
            turn.state.context["ticket_id"] = ref
            _topic(turn, f"{ref}: {s['description']}")
            return [turn.say("service_request.added", ref=ref)]
        preferred = None if s["preferred_time"] == ASAP else datetime.fromisoformat(s["preferred_time"])
        if preferred is not None and preferred <= turn.now:
            # The time passed while the summary was waiting for a yes: ask again rather than fail.
            del s["preferred_time"]
            slot = next(item for item in self.slots if item.name == "preferred_time")
            turn.state.awaiting = slot.name
            passed = turn.say("service_request.time_past", when=_when(turn, preferred))
            return [passed, *await self.ask(turn, slot)]
        unit = s.get("unit")
        description = s["description"]
        first_line = " ".join(description.split())[:120]
        subject = f"{unit['name']}: {first_line}" if unit else first_line
        severity = Severity.HIGH if _has_safety_risk(description) else Severity.MEDIUM
        opened = await turn.core.service_desk.open_request(turn.actor, ServiceRequestIn(
            customer_code=s.get("customer_code") or None,
            kind=RequestKind.REQUEST,
            severity=severity,
            channel=_channel(turn),
            subject=subject[:300],
            description=description,
            serial_number=s["product"] or None,
            kb_article_code=s.get("kb_article_code"),
            preferred_time=preferred,
        ))
        turn.state.context["ticket_id"] = opened.ref
        turn.state.context.pop("kb_query", None)
        _topic(turn, f"{opened.ref}: {description}")
        if unit:
            product = _in_sentence(unit["name"], turn.lang)
            text = turn.t("service_request.opened", ref=opened.ref, product=product, serial=unit["serial"])
        else:
            text = turn.t("service_request.opened_no_product", ref=opened.ref)
        lines = [text]
        if preferred is not None:
            lines.append(turn.t("service_request.opened_time", when=_when(turn, preferred)))
        if severity is Severity.HIGH:
            lines.append(turn.t("service_request.safety"))
        return [Reply(text="\n".join(lines))]


def _combine(raw_date: str | None, raw_time: str | None, tz: ZoneInfo, now: datetime) -> datetime | None:
    """An aware datetime from ISO date and/or time values (naive ones are the person's local time)."""
    day: date | None = None
    clock: time | None = None
    for raw in (raw_date, raw_time):
        if not raw:
            continue
        value = raw.strip()
        try:
            if _DATE_ONLY.match(value):
                day = date.fromisoformat(value)
            elif "T" in value or " " in value or re.match(r"^\d{4}-", value):
                moment = datetime.fromisoformat(value)
                return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment
            else:
                clock = time.fromisoformat(value)
        except ValueError:
            return None
    if day is None and clock is None:
        return None
    local_now = now.astimezone(tz)
    if day is None:
        assert clock is not None
        moment = datetime.combine(local_now.date(), clock.replace(tzinfo=None), tz)
        # "at 9" said after nine means tomorrow at nine.
        return moment if moment > now else moment + timedelta(days=1)
    return datetime.combine(day, (clock or DEFAULT_VISIT_TIME).replace(tzinfo=None), tz)


# --- J4: complaints ------------------------------------------------------------------------------


class FileComplaint(ServiceHandler):
    """What happened (and which request), severity from the words, confirm, open a complaint with its SLA."""

    intent = "file_complaint"
    roles: ClassVar[frozenset[Role] | None] = frozenset({Role.CUSTOMER})
    slots: ClassVar[tuple[Slot, ...]] = (
        Slot("description", "complaint.ask_description", free_text=True),
        Slot("ticket", "complaint.ask_description", entity="ticket_id", required=False),
    )
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """The complaint is usually the first message itself."""
        if _describes(_without_entities(turn), _COMPLAINT_WORDS, _COMPLAINT_PHRASES_ZH):
            turn.slots["description"] = turn.text.strip()[:MAX_TEXT]
        said = turn.entity("ticket_id")
        if said:
            try:
                turn.slots["ticket"] = await self.validate(turn, self.slots[1], said)
            except SlotInvalid as invalid:
                self.note(turn, invalid.hint)

    async def validate_description(self, turn: Turn, raw: str) -> str:
        """What happened, as text."""
        text = raw.strip()
        if _is_payload(text) or len(text) < 3:
            raise SlotInvalid(turn.t("complaint.description_short"))
        return text[:MAX_TEXT]

    async def validate_ticket(self, turn: Turn, raw: str) -> str:
        """The related request: one the person can see."""
        ticket = _ticket_ref(raw)
        if ticket is None:
            raise SlotInvalid(turn.t("status.bad_ref"))
        try:
            detail = await turn.core.service_desk.get_request(turn.actor, ticket)
        except NotFound:
            raise SlotInvalid(turn.t("complaint.ticket_unknown", ticket=ticket)) from None
        turn.slots["ticket_serial"] = detail.serial_number or ""
        return detail.ref

    async def confirmation(self, turn: Turn) -> Reply:
        """What will be sent to the service manager."""
        s = turn.slots
        _topic(turn, s["description"])
        lines = [*self.notes(turn), turn.t("complaint.summary", description=s["description"])]
        if s.get("ticket"):
            lines.append(turn.t("complaint.summary_ticket", ticket=s["ticket"]))
        lines.append(turn.t("complaint.summary_question"))
        return Reply(text="\n".join(lines), buttons=(turn.button("service_request.yes_button", "/affirm"),
                                                       turn.button("service_request.no_button", "/deny")))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Open the complaint and acknowledge it with the response time."""
        s = turn.slots
        description = s["description"]
        severity, safety = _severity(description)
        ticket = s.get("ticket")
        # ServiceRequestIn has no link to another request, so the related one is named in the text.
        body = f"{description}\n\nRelated request: {ticket}" if ticket else description
        opened = await turn.core.service_desk.open_request(turn.actor, ServiceRequestIn(
            kind=RequestKind.COMPLAINT,
            severity=severity,
            channel=_channel(turn),
            subject=f"Complaint: {' '.join(description.split())[:150]}",
            description=body,
            serial_number=s.get("ticket_serial") or None,
        ))
        turn.state.context["ticket_id"] = opened.ref
        _topic(turn, f"{opened.ref}: {description}")
        lines = [turn.t("complaint.opened", ref=opened.ref, within=_duration(turn, _response_time(opened)))]
        if severity is Severity.HIGH:
            lines.append(turn.t("complaint.urgent"))
        if safety:
            lines.append(turn.t("service_request.safety"))
        return [Reply(text="\n".join(lines))]


def _response_time(opened: ServiceRequestOut) -> timedelta:
    if opened.response_due_at is None:
        return timedelta(hours=4)
    return opened.response_due_at - opened.created_at


def _duration(turn: Turn, span: timedelta) -> str:
    """'2 hours', '30 minutes', '1 day' in the person's language."""
    minutes = max(1, round(span.total_seconds() / 60))
    if minutes % (24 * 60) == 0:
        return turn.t("complaint.days", n=minutes // (24 * 60))
    if minutes % 60 == 0:
        return turn.t("complaint.hours", n=minutes // 60)
    return turn.t("complaint.minutes", n=minutes)


# --- request status ------------------------------------------------------------------------------


class CheckRequestStatus(ServiceHandler):
    """One request's status in words, or the person's open requests as buttons."""

    intent = "check_request_status"
    slots: ClassVar[tuple[Slot, ...]] = (
        Slot("ticket", "status.list", entity="ticket_id", remember=True, required=False),
    )

    async def validate_ticket(self, turn: Turn, raw: str) -> str:
        """SR-n in any common spelling."""
        ticket = _ticket_ref(raw)
        if ticket is None:
            raise SlotInvalid(turn.t("status.bad_ref"))
        return ticket

    async def prefill(self, turn: Turn) -> None:
        """The request named, a customer's technician, appliance or all requests, else the one remembered."""
        s = turn.slots
        said = turn.entity("ticket_id")
        if said:
            ticket = _ticket_ref(said)
            if ticket is None:
                self.note(turn, turn.t("status.bad_ref"))
            else:
                s["ticket"], s["said"] = ticket, True
            return
        if not turn.actor.is_customer and not _is_payload(turn.text) and self._desk_filter(turn):
            return
        if turn.actor.is_customer and not _is_payload(turn.text):
            grounded = await _ground(turn, remembered=False)
            if grounded.said_now and grounded.matches:
                s["units"] = [unit.serial_number for unit in grounded.matches]
                s["named"] = grounded.said[:64]
            if _TECHNICIAN.search(turn.text):
                s["technician"] = True
                return
            if "units" in s or _ALL_REQUESTS.search(turn.text):
                return
        remembered = turn.state.context.get("ticket_id")
        ticket = _ticket_ref(remembered) if remembered else None
        if ticket:
            s["ticket"] = ticket

    async def execute(self, turn: Turn) -> list[Reply]:
        """Show the request, the technicians coming, or list open ones."""
        s = turn.slots
        # No question follows: a note waiting (a reference that is no request) is said on its own, first.
        notes = self.notes(turn)
        notices = [Reply(text="\n".join(notes))] if notes else []
        if s.get("technician"):
            return [*notices, *await self._technicians(turn)]
        ticket = s.get("ticket")
        if not ticket:
            return [*notices, *await self._list(turn)]
        try:
            detail = await turn.core.service_desk.get_request(turn.actor, ticket)
        except NotFound:
            turn.state.context.pop("ticket_id", None)
            if not s.get("said"):
                # Only a request named now is reported missing; a remembered one that is not theirs is
                # no answer to "what's the status?": their own requests are.
                return [*notices, *await self._list(turn)]
            # Someone else's request reads exactly like one that does not exist; staff are told it is not
            # in what they may see (another branch's, or none), not that they typed it wrong.
            key = "status.not_found" if turn.actor.is_customer else "status.not_found_staff"
            return [*notices, turn.say(key, ticket=ticket)]
        turn.state.context["ticket_id"] = detail.ref
        return [*notices, Reply(text=await self._render(turn, detail))]

    @staticmethod
    def _desk_filter(turn: Turn) -> bool:
        """Staff asking across the desk: complaints, escalated ones, this week's; whether any was asked."""
        text, s = turn.text, turn.slots
        if _COMPLAINTS.search(text):
            s["kind"] = RequestKind.COMPLAINT.value
        if _ESCALATED.search(text):
            s["status"] = "escalated"
        if _THIS_WEEK.search(text):
            today = turn.now.astimezone(_tz(turn)).date()
            s["since"] = (today - timedelta(days=today.weekday())).isoformat()
        return any(key in s for key in ("kind", "status", "since"))

    async def _desk_list(self, turn: Turn) -> list[Reply]:
        """What staff asked to see in their scope (not only what is assigned to them), newest first."""
        s = turn.slots
        page = await turn.core.service_desk.list_requests(
            turn.actor, kind=s.get("kind"), status=s.get("status"),
            # "complaints this week" counts closed ones too; without a period, what is still open.
            open_only="since" not in s and "status" not in s, limit=50,
        )
        items = list(page.items)
        if "since" in s:
            since = date.fromisoformat(s["since"])
            items = [item for item in items if item.created_at.astimezone(_tz(turn)).date() >= since]
        what = turn.t("status.desk." + ("escalated_" if "status" in s else "") + (
            "complaints" if "kind" in s else "requests"))
        when = turn.t("status.desk.this_week") if "since" in s else ""
        if not items:
            return [turn.say("status.desk.none", what=what, when=when)]
        shown = items[:MAX_OPEN_LISTED]
        buttons = tuple(
            Button(title=turn.t("status.item", ref=item.ref, subject=_short(item.subject, 40),
                                status=turn.t(f"status.statuses.{item.status}")),
                   payload=_button_payload(self.intent, ticket_id=item.ref))
            for item in shown
        )
        text = turn.t("status.desk.list", what=what, when=when, count=len(items))
        return [Reply(text=text, buttons=buttons)]

    async def _list(self, turn: Turn) -> list[Reply]:
        """Every open request, newest first, a button each (customers: of the appliance named, if one was)."""
        actor, s = turn.actor, turn.slots
        if not actor.is_customer and any(key in s for key in ("kind", "status", "since")):
            return await self._desk_list(turn)
        assignee = None if actor.is_customer else actor.username
        page = await turn.core.service_desk.list_requests(
            actor, open_only=True, assignee=assignee, limit=MAX_OPEN_LISTED
        )
        items = page.items
        serials = s.get("units")
        if serials:
            items = [item for item in items if item.serial_number in serials]
            if not items:
                return [await self._none_for(turn, serials)]
            if len(items) == 1:
                # "is my fridge fixed yet?" with one open request for it: that request's status.
                detail = await turn.core.service_desk.get_request(actor, items[0].ref)
                turn.state.context["ticket_id"] = detail.ref
                return [Reply(text=await self._render(turn, detail))]
        suffix = "" if actor.is_customer else "_staff"
        if not items:
            return [turn.say(f"status.none{suffix}")]
        buttons = [
            Button(
                title=turn.t("status.item", ref=item.ref, subject=_short(item.subject, 40),
                             status=turn.t(f"status.statuses.{item.status}")),
                payload=_button_payload(self.intent, ticket_id=item.ref),
            )
            for item in items
        ]
        text = turn.t(f"status.list{suffix}")
        if not serials and page.total > len(items):
            text = f"{text}\n{turn.t('status.more', n=page.total - len(items))}"
        return [Reply(text=text, buttons=tuple(buttons))]

    async def _none_for(self, turn: Turn, serials: list[str]) -> Reply:
        """No open request for the appliance named: say so, and offer to open one (with what was said)."""
        entities = {"serial_number": serials[0]} if len(serials) == 1 else {}
        said = turn.text.strip()
        describes = _describes(_without_entities(turn), _REQUEST_WORDS, _REQUEST_PHRASES_ZH)
        if describes and not _QUESTION.search(said):
            # "my dishwsher is brokn" describes the problem; "any news on my dishwasher?" does not.
            entities["description"] = said[:300]
        repair = turn.button("status.repair_for_button", _button_payload("open_service_request", **entities))
        if len(serials) == 1:
            unit = await turn.core.installed.get(turn.actor, serials[0])
            return turn.say("status.none_for", repair, product=_in_sentence(unit.product_name, turn.lang),
                            serial=unit.serial_number)
        return turn.say("status.none_for_said", repair, said=turn.slots.get("named", ""))

    async def _technicians(self, turn: Turn) -> list[Reply]:
        """Who is coming, and when, for the customer's own active jobs (never the request last mentioned)."""
        page = await turn.core.service_desk.list_repair_orders(
            turn.actor, active_only=True, limit=MAX_OPEN_LISTED
        )
        serials = turn.slots.get("units")
        orders = [order for order in page.items if not serials or order.serial_number in serials]
        if not orders:
            return [turn.say("status.technician_none"), *await self._list(turn)]
        lines = [self._job_line(turn, order) for order in orders]
        if len(orders) == 1:
            turn.state.context["ticket_id"] = orders[0].service_request_ref
            return [Reply(text=lines[0])]
        buttons = [
            turn.button("status.job_button",
                        _button_payload(self.intent, ticket_id=order.service_request_ref),
                        ref=order.service_request_ref, subject=_short(order.subject, 40))
            for order in orders
        ]
        return [Reply(text="\n".join([turn.t("status.technician_several"), *lines]), buttons=tuple(buttons))]

    def _job_line(self, turn: Turn, order: RepairOrderOut) -> str:
        """One job as the customer sees it: who comes, and when (or that they are on the way)."""
        who = order.technician or turn.t("status.technician_someone")
        about = {"ref": order.service_request_ref, "subject": _short(order.subject, 60)}
        scheduled = _when(turn, order.scheduled_at) if order.scheduled_at else ""
        if order.status == RepairStatus.DISPATCHED:
            return turn.t("status.technician_dispatched", when=scheduled, **about)
        if order.status == RepairStatus.IN_PROGRESS:
            if order.eta_at is not None:
                return turn.t("status.technician_on_way", who=who, eta=_when(turn, order.eta_at), **about)
            return turn.t("status.technician_working", who=who, **about)
        if scheduled:
            return turn.t("status.technician_booked", who=who, when=scheduled, **about)
        return turn.t("status.technician_unbooked", who=who, **about)

    async def _render(self, turn: Turn, detail: ServiceRequestDetail) -> str:
        actor = turn.actor
        lines = [turn.t("status.header", ref=detail.ref, subject=detail.subject),
                 turn.t("status.state", status=turn.t(f"status.statuses.{detail.status}"))]
        orders = []
        for reference in detail.repair_orders:
            try:
                orders.append(await turn.core.service_desk.get_repair_order(actor, reference))
            except NotFound:
                continue
        live = [order for order in orders if order.status != "cancelled"]
        if actor.is_customer:
            # Customers never see internal account names.
            if any(order.technician for order in live):
                who = turn.t("status.who_technician")
            elif detail.assignee:
                who = turn.t("status.who_team")
            else:
                who = turn.t("status.who_nobody")
        else:
            who = detail.assignee or turn.t("status.who_nobody")
        lines.append(turn.t("status.handled_by", who=who))
        if detail.history:
            last = detail.history[-1]
            action = turn.t(f"status.actions.{last.action}") if last.action in _ACTIONS else last.action
            line = turn.t("status.last", when=_when(turn, last.at), action=action)
            if not actor.is_customer and last.comment:
                line = f"{line} ({_short(last.comment, 120)})"
            lines.append(line)
        scheduled = [order.scheduled_at for order in live if order.scheduled_at]
        if scheduled and detail.status not in (RequestStatus.RESOLVED, RequestStatus.CLOSED):
            lines.append(turn.t("status.visit", when=_when(turn, scheduled[-1])))
        elif detail.preferred_time and detail.status not in (RequestStatus.RESOLVED, RequestStatus.CLOSED):
            key = "status.preferred" if turn.actor.is_customer else "status.preferred_staff"
            lines.append(turn.t(key, when=_when(turn, detail.preferred_time)))
        if detail.resolution and detail.status in (RequestStatus.RESOLVED, RequestStatus.CLOSED):
            lines.append(turn.t("status.resolution", text=_short(detail.resolution, 300)))
        return "\n".join(lines)


_ACTIONS = frozenset({"open", "assign", "start", "hold", "escalate", "resolve", "close", "reopen", "comment"})


def _short(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- J2: warranty --------------------------------------------------------------------------------


class CheckWarranty(ServiceHandler):
    """Covered until / expired on, for the person's own products (staff: any)."""

    intent = "check_warranty"
    slots: ClassVar[tuple[Slot, ...]] = (
        Slot("serial", "warranty.ask", entity="serial_number", remember=True),
    )

    async def prefill(self, turn: Turn) -> None:
        """The appliance named (serial of any shape, model, kind), else the one just talked about."""
        self._take(turn, await _ground(turn), turn.entity("serial_number"))

    async def extract_serial(self, turn: Turn) -> str:
        """An answer to "which appliance?" (a button, a serial, "the fridge", "冰箱"): grounded afresh."""
        grounded = await _ground(turn, remembered=False)
        if self._take(turn, grounded, turn.entity("serial_number")):
            return str(turn.slots["serial"])
        question = turn.slots.get(UNIT_QUESTION) or {}
        raise SlotInvalid(_unit_hint(turn, question))

    def _take(self, turn: Turn, grounded: Grounded[InstalledProductOut], said: str | None) -> bool:
        """Fill the serial from a grounding, or keep what to ask; whether it was filled."""
        s = turn.slots
        if grounded.one is not None:
            s["serial"] = grounded.one.serial_number
            return True
        if not turn.actor.is_customer:
            if grounded.found is Found.NONE:
                # Staff look up any serial: the look-up itself says it does not exist.
                s["serial"] = grounded.said or str(said)
                return True
            return False
        if grounded.found is not Found.UNSAID:
            question = _unit_question(turn, grounded, "warranty.not_found")
            if "hint" in question and not turn.state.awaiting:
                self.note(turn, question.pop("hint"))
            s[UNIT_QUESTION] = question
        return False

    async def ask_serial(self, turn: Turn) -> list[Reply]:
        """A button per own product (those that fit what was said, if anything was), else a typed serial."""
        units = await _own_units(turn)
        if not units:
            return [turn.say("warranty.ask")]
        question = turn.slots.pop(UNIT_QUESTION, None) or {}
        offered = [unit for unit in units if unit.serial_number in question.get("serials", ())] or units
        if question.get("question"):
            return [Reply(text=question["question"], buttons=tuple(self._buttons(offered)))]
        return [turn.say("warranty.ask_buttons", *self._buttons(offered))]

    def _buttons(self, units: list[InstalledProductOut]) -> list[Button]:
        return [
            Button(title=_product_label(unit),
                   payload=_button_payload(self.intent, serial_number=unit.serial_number))
            for unit in units[:MAX_PRODUCT_BUTTONS]
        ]

    async def execute(self, turn: Turn) -> list[Reply]:
        """Look the warranty up through core (which scopes customers to their own products)."""
        serial = turn.slots["serial"]
        try:
            found = await turn.core.installed.warranty(turn.actor, serial)
        except NotFound:
            turn.state.context.pop("serial_number", None)
            if turn.actor.is_customer:
                buttons = self._buttons(await _own_units(turn))
                return [turn.say("warranty.not_found", *buttons, serial=serial[:64])]
            return [turn.say("warranty.not_found_staff", serial=serial[:64])]
        turn.state.context["serial_number"] = found.serial_number
        product = found.product
        if found.in_warranty:
            lines = [turn.t("warranty.covered", product=product, serial=found.serial_number,
                            ends_on=found.ends_on.isoformat(), type=_warranty_type(turn, found.warranty_type),
                            days=found.days_left)]
        else:
            lines = [turn.t("warranty.expired", product=product, serial=found.serial_number,
                            ends_on=found.ends_on.isoformat()), turn.t("warranty.terms")]
        if not turn.actor.is_customer:
            lines.append(turn.t("warranty.customer", customer=found.customer))
        repair = _button_payload("open_service_request", serial_number=found.serial_number)
        offer = (turn.button("warranty.repair_button", repair),) if turn.actor.is_customer else ()
        return [Reply(text="\n".join(lines), buttons=offer)]


class MyProducts(Handler):
    """"What appliances do I have?": the customer's registered units, each with its warranty."""

    intent = "my_products"
    roles: ClassVar[frozenset[Role] | None] = frozenset({Role.CUSTOMER})

    async def execute(self, turn: Turn) -> list[Reply]:
        """One line per unit (the first MAX_PRODUCT_BUTTONS also as [Check warranty] buttons), or none."""
        units = await _own_units(turn)
        if not units:
            return [turn.say("my_products.none")]
        lines = [turn.t("my_products.title", count=len(units))]
        for unit in units:
            key = "my_products.covered" if unit.in_warranty else "my_products.expired"
            lines.append(turn.t(key, product=unit.product_name, serial=unit.serial_number,
                                ends_on=unit.warranty_ends_on.isoformat()))
        lines.append(turn.t("my_products.next"))
        buttons = tuple(
            Button(title=_product_label(unit),
                   payload=_button_payload("open_service_request", serial_number=unit.serial_number))
            for unit in units[:MAX_PRODUCT_BUTTONS]
        )
        return [Reply(text="\n".join(lines), buttons=buttons)]


# --- J3: knowledge base --------------------------------------------------------------------------


class SearchKnowledge(ServiceHandler):
    """Top solutions for a question, each with 'this solved it' and 'open a repair request'."""

    intent = "search_knowledge"
    slots: ClassVar[tuple[Slot, ...]] = (Slot("query", "kb.ask", entity="query", free_text=True),)

    async def prefill(self, turn: Turn) -> None:
        """The question is the message itself (or a `query` from a button)."""
        query = turn.entity("query")
        if query is None and not _is_payload(turn.text) and turn.text.strip():
            query = turn.text
        if query and query.strip():
            turn.slots["query"] = query.strip()[:MAX_TEXT]

    async def execute(self, turn: Turn) -> list[Reply]:
        """Search and show the best few."""
        query = turn.slots["query"]
        unit, said_now = await self._named_unit(turn)
        product_code = unit.product_code if unit else None
        hits = await turn.core.knowledge.search(
            turn.actor, query, limit=KB_TOP, product_code=product_code, lang=turn.lang)
        hits = [hit for hit in hits if hit.score >= KB_SHOW_SCORE]
        # The same article in the other language is noise next to the person's own; others only when none.
        hits = [hit for hit in hits if hit.lang == turn.lang] or hits
        if unit is not None:
            # About the dishwasher, a washing machine's article is noise too (unless nothing else fits).
            own = [hit for hit in hits if not await _other_kind(turn, unit, hit.product_code)]
            hits = own or hits
        turn.state.context["kb_query"] = query
        _topic(turn, query)
        # A repair opened from here is about the appliance named in the question (one only talked about
        # before may not be what this question is about: "my toaster sings" after the dishwasher).
        named = {"serial_number": unit.serial_number} if unit and said_now else {}
        if not hits:
            repair = _button_payload("open_service_request", **named)
            return [turn.say("kb.nothing", turn.button("kb.repair_button", repair),
                             turn.button("kb.human_button", "/human_handoff"))]
        replies = [turn.say("kb.intro")]
        for hit in hits:
            replies.append(turn.say(
                "kb.hit",
                turn.button("kb.solved_button", _button_payload("kb_solved", code=hit.code)),
                turn.button("kb.repair_button",
                            _button_payload("open_service_request", kb_article_code=hit.code, **named)),
                title=hit.title, code=hit.code, solution=hit.solution,
            ))
        return replies

    async def _named_unit(self, turn: Turn) -> tuple[InstalledProductOut | None, bool]:
        """The appliance named ("洗碗机显示E13"), else the one being talked about ("it's full of water after
        the cycle", right after the dishwasher), whose articles come first; and whether it was named now."""
        if _is_payload(turn.text):
            return None, False
        grounded = await _ground(turn)
        unit = grounded.one
        if unit is not None:
            turn.state.context["serial_number"] = unit.serial_number
        return unit, grounded.said_now


class KbSolved(Handler):
    """The 'This solved it' button: thank the person; nothing is opened."""

    intent = "kb_solved"
    slots: ClassVar[tuple[Slot, ...]] = (Slot("code", "kb.thanks", entity="code", required=False),)

    async def execute(self, turn: Turn) -> list[Reply]:
        """Thank them and forget the pending search."""
        code = turn.slots.get("code")
        if code:
            # Counted so the knowledge team sees which articles really help; an unknown code is ignored.
            await turn.core.knowledge.mark_solved(turn.actor, str(code))
        turn.state.context.pop("kb_query", None)
        # Pressed under the tip offered in a repair request: solved means that request is not wanted.
        turn.state.kept = [form for form in turn.state.kept if form.intent != OpenServiceRequest.intent]
        return [turn.say("kb.thanks")]


# --- ratings -------------------------------------------------------------------------------------

RATED = "_rated"
# Parses that never replace a comment ("no" is an answer; prose the model can't place is the comment).
_NOT_A_REQUEST = ("affirm", "deny", "out_of_scope", "nlu_fallback")
# Answers to "anything to add?" that mean no (the "No comment" button sends /deny).
_NO_COMMENT = re.compile(
    r"^\s*(?:no|nope|nah|none|nothing|nothing else|no comments?|skip|n/?a|-+|no thanks?|not really|all good|"
    r"没有|没有了|没了|无|不用|不用了|跳过|没什么|没啥|没有意见|不用了谢谢)\s*[.!。！~]*\s*$",
    re.IGNORECASE,
)


class RateService(ServiceHandler):
    """Rate a finished request 1-5 through its pending survey, then add a comment if the customer wants."""

    intent = "rate_service"
    roles: ClassVar[frozenset[Role] | None] = frozenset({Role.CUSTOMER})
    # Asked once the rating is recorded (execute sets it as the pending question); never required. Not free
    # text: a message that confidently asks for something else is done instead (extract_comment).
    COMMENT: ClassVar[Slot] = Slot("comment", "survey_chat.ask_comment", required=False)
    slots: ClassVar[tuple[Slot, ...]] = (
        # Recorded as soon as both are known, so a later message never "corrects" them: a new rating is a
        # new request (already rated, or another ticket).
        Slot("ticket", "rating.ask_ticket", entity="ticket_id", remember=True, correctable=False),
        Slot("rating", "rating.ask", entity="rating", correctable=False),
        COMMENT,
    )

    async def prefill(self, turn: Turn) -> None:
        """Pick the request: the one named, the one in context, or the only one waiting for a rating."""
        s = turn.slots
        rateable = await self._rateable(turn)
        said = turn.entity("ticket_id")
        remembered = turn.state.context.get("ticket_id")
        if said:
            ticket = _ticket_ref(said) or said
            if ticket not in rateable:
                self.stop(turn, await self._why_not(turn, ticket))
                return
            s["ticket"] = ticket
        elif remembered in rateable:
            s["ticket"] = remembered
        elif len(rateable) == 1:
            s["ticket"] = rateable[0]
        elif not rateable:
            self.stop(turn, turn.t("rating.nothing"))
            return
        rating = turn.entity("rating")
        if rating is not None:
            try:
                s["rating"] = await self.validate(turn, self.slots[1], rating)
            except SlotInvalid as invalid:
                self.note(turn, invalid.hint)

    async def _rateable(self, turn: Turn) -> list[str]:
        """Requests with a survey waiting for this customer's answer, newest first."""
        page = await turn.core.surveys.list(turn.actor, limit=50)
        waiting = (SurveyStatus.PENDING, SurveyStatus.SENT)
        return [item.service_request_ref for item in page.items
                if item.status in waiting and item.service_request_ref]

    async def _why_not(self, turn: Turn, ticket: str) -> str:
        try:
            detail = await turn.core.service_desk.get_request(turn.actor, ticket)
        except (NotFound, ValidationFailed):
            return turn.t("status.not_found", ticket=ticket)
        if detail.status not in (RequestStatus.RESOLVED, RequestStatus.CLOSED):
            return turn.t("rating.not_finished", ticket=detail.ref)
        for status, key in ((SurveyStatus.ANSWERED, "rating.already"),
                            (SurveyStatus.EXPIRED, "rating.expired")):
            done = await turn.core.surveys.list(turn.actor, status=status.value, limit=50)
            if any(item.service_request_ref == detail.ref for item in done.items):
                return turn.t(key, ticket=detail.ref)
        return turn.t("rating.nothing_for", ticket=detail.ref)

    async def extract_comment(self, turn: Turn) -> str | None:
        """While waiting for a comment, another rating (a survey's button, "rate SR-3 4") is not a comment:
        it starts over with what it says; and a message that clearly asks for something else ("my dishwasher
        is broken again", hours later) is not one either: the comment is dropped and that is done."""
        parse = turn.parse
        if parse.intent == self.intent and (
            _is_payload(turn.text) or (turn.entity("ticket_id") and turn.entity("rating"))
        ):
            turn.slots.clear()
            await self.prefill(turn)
            return None
        if parse.intent not in (self.intent, *_NOT_A_REQUEST) and parse.confidence >= SWITCH_CONFIDENCE:
            raise SlotInvalid(turn.t("survey_chat.ask_comment", ticket=turn.slots.get("ticket", "")))
        comment: str = await self.plain_answer(turn, self.COMMENT)
        return comment

    async def validate_comment(self, turn: Turn, raw: str) -> str:
        """Any comment ("no" / "No comment": none)."""
        if turn.parse.intent == "deny" or _NO_COMMENT.match(raw) or _is_payload(raw):
            return ""
        return raw.strip()[:MAX_TEXT]

    async def validate_rating(self, turn: Turn, raw: str) -> int:
        """A rating from 1 to 5."""
        stars = _stars(raw)
        if not 1 <= stars <= 5:
            raise SlotInvalid(turn.t("rating.hint"))
        return stars

    async def validate_ticket(self, turn: Turn, raw: str) -> str:
        """A request waiting for this customer's rating."""
        ticket = _ticket_ref(raw)
        if ticket is None:
            raise SlotInvalid(turn.t("status.bad_ref"))
        if ticket not in await self._rateable(turn):
            raise SlotInvalid(await self._why_not(turn, ticket))
        return ticket

    async def ask_ticket(self, turn: Turn) -> list[Reply]:
        """A button for each request waiting for a rating."""
        buttons = []
        for ticket in (await self._rateable(turn))[:MAX_LISTED]:
            detail = await turn.core.service_desk.get_request(turn.actor, ticket)
            title = turn.t("rating.ticket_button", ticket=ticket, subject=_short(detail.subject, 40))
            buttons.append(Button(title=title, payload=_button_payload(self.intent, ticket_id=ticket)))
        return [turn.say("rating.ask_ticket", *buttons)]

    async def ask_rating(self, turn: Turn) -> list[Reply]:
        """Five star buttons."""
        stars = [turn.button("rating.star_button", str(n), n=n) for n in range(1, 6)]
        return [turn.say("rating.ask", *stars, ticket=turn.slots["ticket"])]

    async def ask_comment(self, turn: Turn) -> list[Reply]:
        """The comment question with a "No comment" button."""
        return [self._comment_question(turn)]

    def _comment_question(self, turn: Turn) -> Reply:
        low = int(turn.slots.get("rating") or 5) <= 2
        key = "survey_chat.ask_comment_low" if low else "survey_chat.ask_comment"
        skip = turn.button("survey_chat.skip_button", "/deny")
        return turn.say(key, skip, ticket=turn.slots.get("ticket", ""))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Record the rating on the survey and ask for a comment; then record the comment, if any."""
        s = turn.slots
        if s.get(RATED):
            return await self._take_comment(turn)
        s.pop("comment", None)
        ticket, stars = s["ticket"], int(s["rating"])
        turn.state.context["ticket_id"] = ticket
        try:
            await turn.core.surveys.answer(turn.actor, ticket, stars)
        except Conflict:
            return [turn.say("rating.already", ticket=ticket)]
        except InvalidTransition:
            return [turn.say("rating.expired", ticket=ticket)]
        except NotFound:
            return [turn.say("rating.nothing_for", ticket=ticket)]
        lines = [turn.t("rating.thanks", ticket=ticket, stars="⭐" * stars)]
        if stars <= 2:
            lines.append(turn.t("rating.sorry"))
        # The rating is kept; the comment is the next (optional) question of this same conversation.
        s[RATED] = True
        turn.state.awaiting = "comment"
        return [Reply(text="\n".join(lines)), self._comment_question(turn)]

    async def _take_comment(self, turn: Turn) -> list[Reply]:
        ticket, comment = turn.slots["ticket"], str(turn.slots.get("comment") or "")
        if not comment:
            return [turn.say("survey_chat.no_comment")]
        try:
            await turn.core.surveys.add_comment(turn.actor, ticket, comment)
        except (Conflict, InvalidTransition, NotFound, ValidationFailed):
            return [turn.say("survey_chat.comment_not_kept", ticket=ticket)]
        return [turn.say("survey_chat.comment_thanks", ticket=ticket)]


# --- hand-off ------------------------------------------------------------------------------------


class HumanHandoff(Handler):
    """Ask a colleague to take over: a hand-off task for the service desk."""

    intent = "human_handoff"

    async def execute(self, turn: Turn) -> list[Reply]:
        """Create the task with what the person said and what they were dealing with."""
        # Asking about a person ("Oliver Smith的电话是多少") is not asking for one: no task for a colleague.
        about_someone = not_a_person_request(turn)
        if about_someone is not None:
            return about_someone
        parts = []
        if not _is_payload(turn.text) and turn.text.strip():
            parts.append(turn.text.strip())
        topic = turn.state.context.get("topic")
        if topic:
            parts.append(f"(topic: {topic})")
        ticket = turn.state.context.get("ticket_id")
        if ticket and (not topic or ticket not in topic):
            parts.append(f"(request {ticket})")
        summary = " ".join(parts)
        await turn.core.service_desk.request_handoff(turn.actor, summary=summary, channel=turn.channel)
        return [turn.say("handoff.done")]


def handlers() -> list[Handler]:
    """One instance of every customer-service handler."""
    return [OpenServiceRequest(), FileComplaint(), CheckRequestStatus(), CheckWarranty(), MyProducts(),
            SearchKnowledge(), KbSolved(), RateService(), HumanHandoff()]
