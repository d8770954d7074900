"""Field service intents: my jobs (managers see their team's), accept a job, complete a job."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from bot.dialogue import CONFIRM, REFUSED_CORRECTIONS, STOP_KEY, Handler, Slot, SlotInvalid, Turn
from bot.grounding_sales import CJK, LATIN_WORD, Candidate, find_customers, pick
from bot.intents.smalltalk import Affirm, Deny
from bot.intents.staff import (
    StaffHandler,
    confirm_card,
    day_label,
    label,
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
from core.domain.enums import RepairStatus, Role
from core.errors import InsufficientStock, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from core.schemas import PartUsedIn, RepairActionIn, RepairOrderIn, RepairOrderOut, TechnicianSuggestionOut

JOB_REF = re.compile(r"(?<![A-Za-z0-9])RO\s*[-#]?\s*(\d{1,9})(?![0-9])", re.IGNORECASE)
JOB_MENTION = re.compile(r"(?:\b(?:on|for|of|job|order)\s+)?(?<![A-Za-z0-9])RO\s*[-#]?\s*\d{1,9}(?![0-9])",
                         re.IGNORECASE)
DONE_TAIL = re.compile(
    r"[\s,，.。:：\-–—]*(?:(?:all\s+)?done|finished|completed|已?完工了?|已?完成了?|搞定了?)[\s.。!！]*$",
    re.IGNORECASE)
BARE_NUMBER = re.compile(r"^\s*#?\s*(\d{1,9})\s*$")
VALID_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")  # what core accepts as a part code
COMPLETABLE = frozenset({RepairStatus.ACCEPTED.value, RepairStatus.IN_PROGRESS.value})
# A letter O typed for a zero ("P-10O") is still the part: the card names it before anything is taken.
PART_CODE = re.compile(r"(?<![A-Za-z0-9-])P-?(?=[\dOo]*\d)([\dOo]{2,6})(?![A-Za-z0-9-])", re.IGNORECASE)
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "pair": 2, "a pair of": 2}
ZH_DIGITS = {
    "零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
}
QUANTITY_BEFORE = re.compile(
    r"(?P<n>\d{1,4}|a\s+pair\s+of|an?|one|two|three|four|five|six|seven|eight|nine|ten|[一二两三四五六七八九十]{1,3})"
    r"\s*(?:x|×|\*|pcs?\.?|pieces?|units?|个|只|件|套|根|块|条)?\s*(?:of\s+)?(?:(?:spare\s+)?parts?\s+|配件\s*)?$",
    re.IGNORECASE)
QUANTITY_AFTER = re.compile(
    r"^\s*(?:[x×*]\s*(?P<n>\d{1,4})|[(（]\s*(?P<m>\d{1,4})\s*(?:pcs?|个|只|件)?\s*[)）])", re.IGNORECASE)
DONE_WORDS = re.compile(
    r"^(?:\s|[,，:：.。\-–—])*(?:is\s+|was\s+|all\s+)?(?:done|finished|completed|complete|fixed|repaired|"
    r"已?完工了?|已?完成了?|修好了?|搞定了?|结束了?)(?:\s|[,，:：.。!！\-–—])*", re.IGNORECASE)
HOURS_EN = re.compile(
    r"(?P<h>\d+(?:\.\d+)?|an?|one|two|three|four|five|six|seven|eight)\s*(?:h|hrs?|hours?)(?![a-z])"
    r"(?:\s*(?:and\s*)?(?P<m>\d{1,2})\s*(?:m|mins?|minutes?)?(?![a-z0-9]))?", re.IGNORECASE)
MINUTES_EN = re.compile(r"(?<![\d.])(?P<m>\d{1,4})\s*(?:m|mins?|minutes?)(?![a-z])", re.IGNORECASE)
HALF_HOUR_EN = re.compile(r"\bhalf\s+(?:an\s+)?hour\b", re.IGNORECASE)
HOURS_ZH = re.compile(
    r"(?P<h>\d+(?:\.\d+)?|[一二两三四五六七八九十]{1,3})\s*个?\s*(?P<half>半)?\s*(?:小时|钟头)")
MINUTES_ZH = re.compile(r"(?P<m>\d{1,4}|[一二两三四五六七八九十]{1,4})\s*分钟")
HALF_HOUR_ZH = re.compile(r"(?<![一二两三四五六七八九十\d个])半(?:个)?(?:小时|钟头)")
QUARTER_HOUR_ZH = re.compile(r"一刻钟")
# A technician turning a job down, whatever intent the words parse as ("decline RO-20", "RO-20我不接").
DECLINE_WORDS = re.compile(
    r"\b(?:decline[sd]?|reject(?:ed)?|refuse[sd]?|turn(?:ing)?\s+(?:it\s+)?down|(?:can'?t|cannot|won'?t|"
    r"will\s+not|unable\s+to)\s+(?:take|accept)|not\s+(?:take|taking|accept|accepting))\b"
    r"|不接|拒绝|拒单|退单|接不了|不能接|没法接|无法接|去不了|不去了?",
    re.IGNORECASE)
REASON_LEAD = re.compile(r"^\s*(?:because|as|since|due\s+to|—|-|:|因为|由于|原因是?)\s*", re.IGNORECASE)
# "any new jobs?", "有新工单吗": the jobs waiting to be accepted, on whatever day they are.
NEW_JOBS = re.compile(
    r"\bnew\s+(?:jobs?|work\s*orders?|ros?|assignments?|orders?)\b|\bunaccepted\b|\bnot\s+accepted\b"
    r"|\b(?:waiting\s+)?(?:for\s+me\s+)?to\s+accept\b|新(?:的)?(?:工单|单子|任务|派单)|新派|待接|未接|没接的?",
    re.IGNORECASE)
# A bare yes/no/ok, which says nothing about why a job is declined.
BARE_ANSWER = re.compile(
    r"[\s.,!?。，！？]*(?:yes|yeah|yep|yup|ya|ok|okay|sure|fine|right|no|nope|nah|y|n|confirm|decline|"
    r"是的?|好的?|对|嗯|行|可以|确认|不|不是|没有|拒绝)[\s.,!?。，！？~～]*",
    re.IGNORECASE)
LABOUR_CHOICES = (30, 45, 60, 90, 120)
ACTIVE_LIMIT = 200  # active jobs read for "my jobs" (a technician has a handful; a board, dozens)
NO_PARTS = "none"  # the [No parts used] button's answer (a plain word: a /payload would be an intent)
NO_PARTS_WORDS = frozenset({
    "none", "no parts", "no", "nothing", "no part", "没有", "没用配件", "不用", "无", "没用",
})
# What the technician says when the warranty does not cover the damage (then parts and labour are charged).
WARRANTY_EXCLUSION = re.compile(
    r"(?:customer|user|physical|accidental|water|liquid|impact|transport|misuse)[\s-]*(?:caused\s+)?damage[d]?"
    r"|\bdamaged\s+by\s+(?:the\s+)?(?:customer|user|water)\b|\bdropped\b|\bmisuse[d]?\b|\babuse[d]?\b"
    r"|\bnot\s+covered(?:\s+by\s+(?:the\s+)?warranty)?\b|\bwarranty\s+(?:excluded|exclusion|void(?:ed)?)\b"
    r"|\bout\s+of\s+(?:the\s+)?warranty\s+scope\b|\bno\s+warranty\s+cover\b"
    r"|人为(?:损坏|损伤|原因)?|不在保修范围(?:内)?|不属于保修(?:范围)?|不保修|保修不包括|摔坏了?|进水(?:损坏)?|私自拆(?:修|机)",
    re.IGNORECASE)


def zh_number(text: str) -> int | None:
    """一 … 九十九 → int."""
    if not text:
        return None
    if "十" in text:
        tens, _, ones = text.partition("十")
        ten_value = ZH_DIGITS.get(tens, 1) if tens else 1
        one_value = ZH_DIGITS.get(ones, 0) if ones else 0
        return ten_value * 10 + one_value
    if len(text) == 1:
        return ZH_DIGITS.get(text)
    return None


def count(word: str) -> int | None:
    """A quantity word or digits → int."""
    word = " ".join(word.casefold().split())
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word) or zh_number(word)


def labour_minutes(text: str) -> int | None:
    """'45 min', '1.5h', '1h30', 'half an hour', '45分钟', '半小时', '一个半小时' → minutes."""
    total, found = Decimal(0), False
    if HALF_HOUR_EN.search(text):
        total += 30
        found = True
        text = HALF_HOUR_EN.sub(" ", text)
    for match in HOURS_EN.finditer(text):
        hours = match.group("h")
        value = Decimal(hours) if hours[0].isdigit() else Decimal(count(hours) or 0)
        total += value * 60 + int(match.group("m") or 0)
        found = True
    rest = HOURS_EN.sub(" ", text)
    for match in MINUTES_EN.finditer(rest):
        total += int(match.group("m"))
        found = True
    for match in HOURS_ZH.finditer(text):
        hours = match.group("h")
        value = Decimal(hours) if hours[0].isdigit() else Decimal(zh_number(hours) or 0)
        total += value * 60 + (30 if match.group("half") else 0)
        found = True
    for match in MINUTES_ZH.finditer(text):
        minutes = match.group("m")
        total += int(minutes) if minutes.isdigit() else (zh_number(minutes) or 0)
        found = True
    if HALF_HOUR_ZH.search(text):
        total += 30
        found = True
    if QUARTER_HOUR_ZH.search(text):
        total += 15
        found = True
    if not found:
        return None
    minutes = int(total.to_integral_value())
    return minutes if 0 < minutes <= 24 * 60 else None


def parts_used(text: str, entities: list[str]) -> list[list[Any]]:
    """[[code, quantity], …] from part entities and codes like P-100, with '2x P-100' / '两个P-100' counts."""
    codes: list[str] = []
    for value in [*entities, *(f"P-{match.group(1)}" for match in PART_CODE.finditer(text))]:
        code = value.strip().upper()
        numbered = PART_CODE.fullmatch(code)
        code = f"P-{numbered.group(1).replace('O', '0')}" if numbered else code
        if VALID_CODE.fullmatch(code) and code not in codes:
            codes.append(code)
    result: list[list[Any]] = []
    for code in codes:
        numbered = PART_CODE.fullmatch(code)
        written = re.escape(code)
        if numbered:
            written = "P-?" + "".join("[0Oo]" if digit == "0" else digit for digit in numbered.group(1))
        pattern = re.compile(rf"(?<![A-Za-z0-9-]){written}(?![A-Za-z0-9-])", re.IGNORECASE)
        quantity = 0
        for match in pattern.finditer(text):
            before = QUANTITY_BEFORE.search(text[max(0, match.start() - 30) : match.start()])
            after = QUANTITY_AFTER.match(text[match.end() : match.end() + 12])
            number = None
            if after:
                number = int(after.group("n") or after.group("m"))
            elif before:
                number = count(before.group("n"))
            quantity += number if number and number > 0 else 1
        result.append([code, min(max(quantity, 1), 1000)])
    return result[:50]


async def parts_said(turn: Turn, text: str) -> list[list[Any]]:
    """Parts by code ("2x P-100") and by what they are ("换了一个加热管", "replaced the heating element"),
    matched to the catalogue's names (English and Chinese, "Heating element / 加热管")."""
    found = parts_used(text, turn.parse.values("part"))
    codes = {code for code, _quantity in found}
    lowered = text.casefold()
    for part in await turn.core.service_desk.parts(turn.actor):
        if part.code in codes:
            continue
        for name in _part_names(part.name):
            if CJK.search(name):
                match = re.search(re.escape(name), text)
            else:
                match = re.search(rf"(?<![a-z]){re.escape(name.casefold())}s?(?![a-z])", lowered)
            if match is None:
                continue
            before = QUANTITY_BEFORE.search(text[max(0, match.start() - 30) : match.start()])
            number = count(before.group("n")) if before else None
            found.append([part.code, min(number, 1000) if number and number > 0 else 1])
            codes.add(part.code)
            break
    return found[:50]


def _part_names(name: str) -> list[str]:
    """How a catalogue name is said: each language's side, without its note ("Door seal (washer)")."""
    sides = (re.sub(r"[(（][^)）]*[)）]", "", side).strip() for side in name.split("/"))
    return [side for side in sides if len(side) >= 2]


def declines(turn: Turn) -> bool:
    """Whether a technician's message turns a job down."""
    return turn.actor.role is Role.TECHNICIAN and DECLINE_WORDS.search(spoken(turn)) is not None


def decline_reason(text: str) -> str | None:
    """Why a job is turned down, when the message says it ("RO-20我不接，明天请假" → "明天请假")."""
    clauses = [clause.strip() for clause in re.split(r"[,，.。;；!！\n]+", text) if clause.strip()]
    plain = [clause for clause in clauses
             if not DECLINE_WORDS.search(clause) and not JOB_MENTION.fullmatch(clause)]
    if not plain and clauses:
        rest = JOB_MENTION.sub(" ", DECLINE_WORDS.split(clauses[-1])[-1])
        plain = [REASON_LEAD.sub("", rest).strip()]
    reason = "，".join(plain) if CJK.search("".join(plain)) else ", ".join(plain)
    return reason[:500] if len(LATIN_WORD.findall(reason)) >= 2 or len(CJK.findall(reason)) >= 2 else None


# A form handing the message on to another: a technician's "decline RO-20" read as completing or rescheduling.
DECLINING = Slot("_declining", "jobs.ask_decline_reason", required=False)


def job_question(turn: Turn, intent: str, prompt: str) -> Reply:
    """Which job: the candidates found (`_choices`) as buttons that name the job to `intent`."""
    choices: list[list[str]] = turn.slots.get("_choices") or []
    return Reply(text=turn.t(prompt), buttons=tuple(
        Button(title=title, payload=payload(intent, job_id=ref)) for ref, title in choices))


def job_ref(raw: str | None) -> str | None:
    """'RO-12', 'ro 12', '#12', '12' → 'RO-12'."""
    if not raw:
        return None
    match = JOB_REF.search(raw) or BARE_NUMBER.match(raw)
    return f"RO-{int(match.group(1))}" if match else None


def named_job(text: str) -> str | None:
    """An RO-n reference written in a message."""
    match = JOB_REF.search(text)
    return f"RO-{int(match.group(1))}" if match else None


@dataclass(frozen=True, slots=True)
class JobInfo:
    """Who, where and what a repair order is about, as far as the actor may see."""

    customer: str
    address: str
    product: str
    subject: str


async def job_info(turn: Turn, order: RepairOrderOut) -> JobInfo:
    """Customer name and address, product and problem of a job (the order carries them)."""
    product = order.product_name
    if product and order.serial_number:
        product = f"{product} ({order.serial_number})"
    return JobInfo(customer=order.customer_name or order.customer_code, address=order.address,
                   product=product, subject=order.subject)


def when_text(turn: Turn, order: RepairOrderOut) -> str:
    """The visit time, or that it is still to be agreed."""
    return moment_label(turn, order.scheduled_at) if order.scheduled_at else turn.t("jobs.no_time")


def status_text(turn: Turn, status: str) -> str:
    """A job status in the person's language."""
    return turn.t(f"jobs.status.{status}")


async def act_on_job(
    turn: Turn, reference: str, action: RepairActionIn, refused: str
) -> RepairOrderOut | Reply:
    """Act on a job through the service desk; the job, or the reply saying why not (`refused`: the key for
    the desk's own reason). The job becomes the one talked about."""
    try:
        order = await turn.core.service_desk.act_on_repair(turn.actor, reference, action)
    except (NotFound, PermissionDenied):
        return turn.say("jobs.not_found", ref=reference)
    except ValidationFailed as error:
        return turn.say(refused, message=error.message)
    except InvalidTransition:
        current = await turn.core.service_desk.get_repair_order(turn.actor, reference)
        return turn.say("field.job_not_active", ref=reference, status=status_text(turn, current.status))
    turn.state.context["job_id"] = order.ref
    return order


def accept_button(turn: Turn, order: RepairOrderOut) -> Button:
    """[Accept RO-n]"""
    return Button(title=turn.t("jobs.accept_button", ref=order.ref),
                  payload=payload("accept_job", job_id=order.ref))


class MyJobs(StaffHandler):
    """J7: 'my jobs today' / 'tomorrow' / 'this week', in time order, with [Accept] on new ones."""

    intent = "my_jobs"
    roles = frozenset({Role.TECHNICIAN, Role.MANAGER})

    async def execute(self, turn: Turn) -> list[Reply]:
        """The active jobs of the period (and any left over from before it, and any not yet scheduled);
        "any new jobs?" lists the ones waiting to be accepted, whatever their day."""
        if turn.actor.role is Role.TECHNICIAN and NEW_JOBS.search(spoken(turn)):
            waiting = await self._waiting(turn)
            if waiting is not None:
                return [waiting]
            # Said with the usual list, so "nothing new" never hides what is already on.
            return [turn.say("jobs.none_to_accept"), *await self._listing(turn)]
        return await self._listing(turn)

    async def _listing(self, turn: Turn) -> list[Reply]:
        """The period's list (a manager's: the team's board)."""
        first, last, period = self._period(turn)
        tz = zone(turn)
        start = datetime.combine(first, time(0), tzinfo=tz)
        end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=tz)
        desk, actor = turn.core.service_desk, turn.actor
        # A manager's "my jobs" is the team's board: what their own technicians are doing.
        board = actor.role is Role.MANAGER
        # One query of the active jobs serves both lists; a board too big for it asks for the period again.
        active_page = await desk.list_repair_orders(actor, active_only=True, team=board, limit=ACTIVE_LIMIT)
        active = active_page.items
        if active_page.total > len(active):
            scheduled = (await desk.list_repair_orders(actor, active_only=True, scheduled_from=start,
                                                       scheduled_to=end, team=board, limit=100)).items
        else:
            in_period = [order for order in active
                         if order.scheduled_at is not None and start <= order.scheduled_at < end]
            scheduled = sorted(in_period, key=lambda order: (order.scheduled_at or start, order.id))
        if board:
            return [await self._board(turn, period, (first, last), scheduled, active)]
        earlier = [
            order for order in active
            if order.scheduled_at is not None and order.scheduled_at < start and first <= local_today(turn)
        ]
        unscheduled = [order for order in active if order.scheduled_at is None]
        if not (scheduled or earlier or unscheduled):
            return [turn.say("jobs.none", period=period)]
        many_days = first != last
        lines = [turn.t("jobs.title", period=period, count=len(scheduled))]
        if not scheduled:
            lines.append(turn.t("jobs.none_scheduled"))
        for order in scheduled:
            lines.append(await self._line(turn, order, many_days))
        if earlier:
            lines.append(turn.t("jobs.earlier"))
            lines.extend([await self._line(turn, order, True) for order in earlier])
        if unscheduled:
            lines.append(turn.t("jobs.unscheduled"))
            lines.extend([await self._line(turn, order, True) for order in unscheduled])
        buttons = tuple(
            accept_button(turn, order) for order in [*earlier, *scheduled, *unscheduled]
            if order.status == RepairStatus.DISPATCHED.value and order.technician == actor.username
        )
        return [Reply(text="\n".join(lines), buttons=buttons[:10])]

    async def _waiting(self, turn: Turn) -> Reply | None:
        """The technician's jobs not accepted yet, each with [Accept]; None when there are none."""
        desk, actor = turn.core.service_desk, turn.actor
        new = [order for order in (await desk.list_repair_orders(
            actor, status=RepairStatus.DISPATCHED.value, limit=ACTIVE_LIMIT)).items
            if order.technician == actor.username]
        if not new:
            return None
        lines = [turn.t("field.new_jobs", count=len(new))]
        lines.extend([await self._line(turn, order, True) for order in new])
        return Reply(text="\n".join(lines), buttons=tuple(accept_button(turn, order) for order in new[:10]))

    async def _board(self, turn: Turn, period: str, days: tuple[date, date], scheduled: list[RepairOrderOut],
                     active: list[RepairOrderOut]) -> Reply:
        """The team's jobs grouped by technician, each in time order; left-overs and unscheduled after."""
        first, last = days
        start = datetime.combine(first, time(0), tzinfo=zone(turn))
        seen = {order.ref for order in scheduled}
        earlier = first <= local_today(turn)
        extra = [order for order in active if order.ref not in seen
                 and (order.scheduled_at is None or (order.scheduled_at < start and earlier))]
        orders = [*scheduled, *extra]
        if not orders:
            return turn.say("field.board.none", period=period)
        names = dict(await turn.core.service_desk.dispatchable_technicians(turn.actor))
        lines = [turn.t("field.board.title", period=period, count=len(scheduled))]
        by_technician: dict[str, list[RepairOrderOut]] = {}
        for order in orders:
            by_technician.setdefault(order.technician or "", []).append(order)
        for username in sorted(by_technician, key=lambda name: (name == "", names.get(name, name))):
            nobody = turn.t("field.board.nobody")
            title = f"{names.get(username, username)} — {username}" if username else nobody
            lines.append(title)
            # In time order: jobs left over from before the period first, then the period's, unscheduled last.
            ordered = sorted(by_technician[username],
                             key=lambda order: (order.scheduled_at is None, order.scheduled_at or start))
            for order in ordered:
                lines.append("  " + await self._line(turn, order, order.ref not in seen or first != last))
        return Reply(text="\n".join(lines))

    async def _line(self, turn: Turn, order: RepairOrderOut, with_day: bool) -> str:
        info = await job_info(turn, order)
        if order.scheduled_at is None:
            when = turn.t("jobs.no_time")
        elif with_day:
            when = moment_label(turn, order.scheduled_at)
        else:
            when = f"{order.scheduled_at.astimezone(zone(turn)):%H:%M}"
        parts = [f"• {when} {order.ref} {info.customer}"]
        parts += [value for value in (info.address, info.product, short(info.subject, 50)) if value]
        parts.append(status_text(turn, order.status))
        if order.proposed_at is not None:
            parts.append(turn.t("field.proposed", when=moment_label(turn, order.proposed_at)))
        if turn.actor.role not in (Role.TECHNICIAN, Role.MANAGER) and order.technician:
            parts.append(order.technician)
        return " — ".join(parts)

    def _period(self, turn: Turn) -> tuple[date, date, str]:
        """Today unless the person said tomorrow, this week, next week or a date."""
        today, text = local_today(turn), spoken(turn).casefold()
        monday = today - timedelta(days=today.weekday())
        if re.search(r"\bnext\s+week\b|下(?:个)?(?:周|星期|礼拜)", text):
            return monday + timedelta(days=7), monday + timedelta(days=13), turn.t("jobs.next_week")
        if re.search(r"\bthis\s+week\b|\bweek\b|本周|这周|这个?星期|本星期|这礼拜", text):
            return monday, monday + timedelta(days=6), turn.t("jobs.this_week")
        # Typed in a hurry: "tmorow", "tommorow", "tmrw".
        if re.search(r"\bto?m+o?r+o+w\b|\btmrw?\b|明天|明日", text):
            day = today + timedelta(days=1)
            return day, day, turn.t("jobs.tomorrow", day=day_label(turn, day))
        if not re.search(r"\btoday\b|今天|今日", text):
            for when in whens(turn):
                day = when.astimezone(zone(turn)).date() if isinstance(when, datetime) else when
                return day, day, day_label(turn, day)
        return today, today, turn.t("jobs.today", day=day_label(turn, today))


class AcceptJob(StaffHandler):
    """J7: 'accept RO-311' (or the [Accept] button) → the customer is told who comes when."""

    intent = "accept_job"
    roles = frozenset({Role.TECHNICIAN})
    # The card's [Decline] button is this intent with decision=decline: a reason is then asked for, and the
    # job goes back to whoever dispatched it.
    slots = (
        Slot("job", "jobs.ask_accept", entity="job_id"),
        Slot("reason", "jobs.ask_decline_reason", required=False, free_text=True),
    )

    def missing(self, turn: Turn) -> Slot | None:
        """The job; when declining, also the reason."""
        if "job" not in turn.slots:
            return self.slots[0]
        if turn.slots.get("decision") == "decline" and "reason" not in turn.slots:
            return self.slots[1]
        return None

    async def prefill(self, turn: Turn) -> None:
        """The job named; else the one talked about if it is new; else the only new one. Declining words
        ("RO-20我不接，明天请假") decline, with the reason when they give one."""
        if turn.entity("decision") == "decline" or declines(turn):
            turn.slots["decision"] = "decline"
            reason = decline_reason(spoken(turn)) if spoken(turn) else None
            if reason:
                turn.slots["reason"] = reason
        named = job_ref(turn.entity("job_id")) or named_job(spoken(turn))
        if named:
            turn.slots["job"] = named
            return
        new = (await turn.core.service_desk.list_repair_orders(
            turn.actor, status=RepairStatus.DISPATCHED.value, limit=20)).items
        remembered = job_ref(turn.state.context.get("job_id"))
        # The [Accept a job] suggestion names no job: the new ones are listed, even a single one.
        bare = turn.text.strip() == f"/{self.intent}"
        if remembered and any(order.ref == remembered for order in new):
            turn.slots["job"] = remembered
        elif len(new) == 1 and not bare:
            turn.slots["job"] = new[0].ref
        elif new:
            turn.slots["_choices"] = [[order.ref, await self._title(turn, order)] for order in new[:8]]
        else:
            self.stop(turn, turn.t("jobs.none_to_accept"))

    # One method per question (docs/dialogue.md): the dialogue calls validate_<slot> and ask_<slot>.

    async def validate_job(self, turn: Turn, raw: str) -> str:
        """A job reference."""
        reference = job_ref(raw)
        if reference is None:
            raise SlotInvalid(turn.t("jobs.bad_ref"))
        return reference

    async def ask_job(self, turn: Turn) -> list[Reply]:
        """Which of the new jobs (buttons)."""
        return [job_question(turn, self.intent, "jobs.ask_accept")]

    async def validate_reason(self, turn: Turn, raw: str) -> str:
        """Why the job is declined, in a few words."""
        reason = raw.strip()
        # "yes" / "ok" typed under the question answers nothing: the dispatcher needs a reason to act on.
        if len(reason) < 3 or BARE_ANSWER.fullmatch(reason):
            raise SlotInvalid(turn.t("jobs.decline_reason_hint"))
        return reason[:500]

    async def ask_reason(self, turn: Turn) -> list[Reply]:
        """Why the job is declined."""
        return [turn.say("jobs.ask_decline_reason", ref=turn.slots["job"])]

    async def execute(self, turn: Turn) -> list[Reply]:
        """Accept through the service desk; another technician's job is reported like an unknown one."""
        reference = turn.slots["job"]
        desk = turn.core.service_desk
        declining = turn.slots.get("decision") == "decline"
        action = (
            RepairActionIn(action="decline", comment=turn.slots.get("reason", ""))
            if declining
            else RepairActionIn(action="accept")
        )
        # Nothing is confirmed here: the task ends with this answer, even when a question filled the slot.
        turn.state.finish()
        try:
            order = await desk.act_on_repair(turn.actor, reference, action)
        except (NotFound, ValidationFailed):
            return [turn.say("jobs.not_found", ref=reference)]
        except InvalidTransition:
            current = await desk.get_repair_order(turn.actor, reference)
            key = "jobs.cannot_decline" if declining else "jobs.cannot_accept"
            return [turn.say(key, ref=reference, status=status_text(turn, current.status))]
        if declining:
            return [turn.say("jobs.declined", ref=order.ref)]
        turn.state.context["job_id"] = order.ref
        info = await job_info(turn, order)
        return [turn.say("jobs.accepted", ref=order.ref, customer=info.customer, address=info.address,
                         when=when_text(turn, order))]

    async def _title(self, turn: Turn, order: RepairOrderOut) -> str:
        info = await job_info(turn, order)
        return short(f"{order.ref} · {info.customer} · {when_text(turn, order)}", 70)


class CompleteJob(StaffHandler):
    """J7: 'RO-311 done, replaced pump, 2x P-100, 45 min' → parts taken from stock, charge computed."""

    intent = "complete_job"
    roles = frozenset({Role.TECHNICIAN})
    slots = (
        Slot("job", "jobs.ask_complete", entity="job_id"),
        Slot("summary", "jobs.ask_summary", free_text=True),
        Slot("labour", "jobs.ask_labour", entity="labour"),
        # Asked only when a part named does not exist or the station holds too few (see next_slot).
        Slot("parts", "field.complete.ask_parts", required=False, free_text=True),
    )
    needs_confirmation = True

    def next_slot(self, turn: Turn) -> Slot | None:
        """Job, summary, labour; then the parts again if the catalogue or the station's stock says no."""
        if turn.slots.get(DECLINING.name):
            return DECLINING
        slot = super().next_slot(turn)
        if slot is None and turn.slots.get("_parts_problem"):
            return self.slots[3]
        return slot

    async def prefill(self, turn: Turn) -> None:
        """Job, work summary, parts and labour from the first message ("decline RO-20" declines it)."""
        text = spoken(turn)
        if declines(turn) and not DONE_WORDS.search(JOB_MENTION.sub(" ", text)):
            turn.slots[DECLINING.name] = True
            return
        named = job_ref(turn.entity("job_id")) or named_job(text)
        if named:
            await self._take(turn, named, explicit=True)
        else:
            await self._guess(turn)
        await self._read(turn, text)
        minutes = turn.entity("labour")
        if minutes and minutes.isdigit():
            turn.slots["labour"] = int(minutes)
        await self._check_parts(turn)

    # One method per question (docs/dialogue.md): the dialogue calls validate_<slot> and ask_<slot>.

    async def validate_job(self, turn: Turn, raw: str) -> str:
        """A job of mine that can be completed."""
        reference = job_ref(raw)
        if reference is None:
            raise SlotInvalid(turn.t("jobs.bad_ref"))
        problem = await self._take(turn, reference, explicit=False)
        if problem:
            raise SlotInvalid(problem)
        await self._check_parts(turn)
        return reference

    async def ask_job(self, turn: Turn) -> list[Reply]:
        """Which job (buttons)."""
        return [job_question(turn, self.intent, "jobs.ask_complete")]

    async def validate_summary(self, turn: Turn, raw: str) -> str:
        """What was done (parts and labour said with it are taken too)."""
        await self._read(turn, raw)
        if "summary" not in turn.slots:
            if len(raw.strip()) < 3:
                raise SlotInvalid(turn.t("jobs.summary_too_short"))
            turn.slots["summary"] = raw.strip()[:10_000]
        await self._check_parts(turn)
        summary: str = turn.slots["summary"]
        return summary

    async def validate_labour(self, turn: Turn, raw: str) -> int:
        """How long it took: '45 min', '1.5h', '半小时', or bare minutes."""
        minutes = labour_minutes(raw)
        if minutes is None and raw.strip().isdigit() and 0 < int(raw.strip()) <= 24 * 60:
            minutes = int(raw.strip())
        if minutes is None:
            raise SlotInvalid(turn.t("jobs.bad_labour"))
        return minutes

    async def ask_labour(self, turn: Turn) -> list[Reply]:
        """How long (buttons)."""
        return [Reply(text=turn.t("jobs.ask_labour"), buttons=tuple(
            Button(title=turn.t("jobs.minutes", minutes=minutes),
                   payload=payload(self.intent, labour=str(minutes)))
            for minutes in LABOUR_CHOICES))]

    async def validate_parts(self, turn: Turn, raw: str) -> list[list[Any]]:
        """The parts used, again, after the catalogue or the stock said no."""
        return await self._parts_answer(turn, raw)

    async def ask_parts(self, turn: Turn) -> list[Reply]:
        """What was wrong with the parts named, and which were used (or [No parts used])."""
        problem = turn.slots.get("_parts_problem", "")
        none = Button(title=turn.t("field.complete.no_parts_button"), payload=NO_PARTS)
        question = "\n".join([problem, turn.t("field.complete.ask_parts")]).strip()
        return [Reply(text=question, buttons=(none,))]

    async def ask__declining(self, turn: Turn) -> list[Reply]:
        """Declining words ("decline RO-20") go on as declining the job (DECLINING's question)."""
        return await carry_on(turn, AcceptJob())

    async def correct(self, turn: Turn) -> list[str]:
        """Labour, parts and a warranty exclusion said later change the completion, at the card too."""
        # "actually 60 minutes", "用了两个P-100"; the question being asked is left to the answer.
        text = spoken(turn)
        if not text or "job" not in turn.slots:
            return await super().correct(turn)
        asked, changed = turn.state.awaiting, []
        minutes = labour_minutes(text)
        if asked not in ("labour", "summary") and minutes is not None and turn.slots.get("labour") != minutes:
            turn.slots["labour"] = minutes
            changed.append("labour")
        found = await parts_said(turn, text)
        if asked not in ("parts", "summary") and found:
            held = {code: quantity for code, quantity in turn.slots.get("parts", [])}
            # A part named again is its new count ("两个P-100"); a new one is added.
            merged = {**held, **{code: quantity for code, quantity in found}}
            if merged != held:
                turn.slots["parts"] = [[code, quantity] for code, quantity in merged.items()]
                await self._check_parts(turn)
                changed.append("parts")
                if asked not in (None, CONFIRM):
                    # Said while another question is asked ("P-100" for how long): say it was heard.
                    noted = ", ".join(f"{quantity} × {code}" for code, quantity in found)
                    self.note(turn, turn.t("field.complete.parts_noted", parts=noted))
        exclusion = WARRANTY_EXCLUSION.search(text)
        if asked != "summary" and exclusion and not turn.slots.get("excluded"):
            turn.slots["excluded"] = exclusion.group(0).strip()
            changed.append("excluded")
        return changed

    async def confirmation(self, turn: Turn) -> Reply:
        """Job, work, parts (with their names and the station's stock) and labour before anything is taken."""
        slots = turn.slots
        used = slots.get("parts", [])
        names: dict[str, list[Any]] = slots.get("_part_names", {})
        parts = ", ".join(
            turn.t("field.complete.part_line", quantity=quantity, code=code, name=names[code][0],
                   stock=names[code][1], station=names[code][2])
            if code in names and names[code][0] else f"{quantity} × {code}"
            for code, quantity in used
        ) or turn.t("jobs.no_parts")
        lines = [
            turn.t("jobs.card_title", ref=slots["job"], customer=slots.get("job_customer", "")),
            turn.t("jobs.card_summary", summary=short(slots["summary"], 300)),
            turn.t("jobs.card_parts", parts=parts),
            turn.t("jobs.card_labour", minutes=slots["labour"]),
        ]
        if slots.get("excluded"):
            lines.append(turn.t("field.complete.excluded", reason=slots["excluded"]))
        return confirm_card(turn, "\n".join(lines))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Complete through the service desk: stock, charge and the customer's notice happen there."""
        slots = turn.slots
        reference = slots["job"]
        parts = [PartUsedIn(part_code=code, quantity=quantity) for code, quantity in slots.get("parts", [])]
        action = RepairActionIn(action="complete", work_summary=slots["summary"][:10_000],
                                labour_minutes=int(slots["labour"]), parts=parts,
                                warranty_excluded=bool(slots.get("excluded")))
        try:
            order = await turn.core.service_desk.act_on_repair(turn.actor, reference, action)
        except NotFound as error:
            if error.field == "parts":
                codes = [code for code, _quantity in slots.get("parts", [])]
                code = next((code for code in codes if f"'{code}'" in error.message), error.message)
                return [turn.say("jobs.unknown_part", code=code)]
            return [turn.say("jobs.not_found", ref=reference)]
        except InsufficientStock as error:
            return [turn.say("jobs.short_stock", detail=error.message)]
        except ValidationFailed as error:
            return [turn.say("error.domain", message=error.message)]
        except InvalidTransition:
            current = await turn.core.service_desk.get_repair_order(turn.actor, reference)
            return [turn.say("jobs.cannot_complete", ref=reference, status=status_text(turn, current.status))]
        turn.state.context["job_id"] = order.ref
        if order.in_warranty and order.total_charge == 0:
            charge = turn.t("jobs.free_under_warranty")
        elif order.in_warranty:
            # In warranty, but the damage is not covered: parts and labour are charged all the same.
            charge = turn.t("field.complete.excluded_charge", total=money(order.total_charge),
                            parts=money(order.parts_charge), labour=money(order.labour_charge))
        else:
            charge = turn.t("jobs.charge", total=money(order.total_charge), parts=money(order.parts_charge),
                            labour=money(order.labour_charge))
        return [turn.say("jobs.completed", ref=order.ref, charge=charge)]

    # --- helpers ---

    async def _check_parts(self, turn: Turn) -> None:
        """Note what is wrong with the parts named (unknown, or more than the job's station holds), if any.

        Asked before the card, so the technician corrects the parts rather than retyping the job.
        """
        turn.slots.pop("_parts_problem", None)
        used = turn.slots.get("parts") or []
        if "job" not in turn.slots or not used:
            return
        checks = await turn.core.service_desk.check_parts(
            turn.actor, turn.slots["job"],
            [PartUsedIn(part_code=code, quantity=quantity) for code, quantity in used])
        problems: list[str] = []
        for check in checks:
            if check.part_name is None:
                problems.append(turn.t("field.complete.no_such_part", code=check.part_code))
            elif check.in_stock < check.needed:
                problems.append(turn.t("field.complete.short", code=check.part_code, name=check.part_name,
                                       stock=check.in_stock, needed=check.needed,
                                       station=check.station_code or "—"))
        turn.slots["_part_names"] = {
            check.part_code: [check.part_name, check.in_stock, check.station_code or "—"] for check in checks
        }
        if problems:
            turn.slots["_parts_problem"] = "\n".join(problems)

    async def _parts_answer(self, turn: Turn, raw: str) -> list[list[Any]]:
        """The parts again ('P-100', '2 x P-110', or none); re-asked while one is still unknown or short."""
        text = raw.strip()
        if text == NO_PARTS or text.casefold().strip(" .。!！") in NO_PARTS_WORDS:
            turn.slots["parts"] = []
        else:
            found = await parts_said(turn, text)
            if not found:
                raise SlotInvalid(turn.t("field.complete.parts_hint"))
            turn.slots["parts"] = found
        await self._check_parts(turn)
        if turn.slots.get("_parts_problem"):
            raise SlotInvalid(turn.slots["_parts_problem"])
        return list(turn.slots["parts"])

    async def _take(self, turn: Turn, reference: str, *, explicit: bool) -> str | None:
        """Take a job if it is mine and can be completed; else the reason (a stop when it was named first)."""
        desk = turn.core.service_desk
        try:
            order = await desk.get_repair_order(turn.actor, reference)
        except (NotFound, ValidationFailed):
            order = None
        if order is None or (not turn.actor.is_admin and order.technician != turn.actor.username):
            problem, buttons = turn.t("jobs.not_found", ref=reference), []
        elif order.status == RepairStatus.DISPATCHED.value:
            problem, buttons = turn.t("jobs.accept_first", ref=reference), [accept_button(turn, order)]
        elif order.status not in COMPLETABLE:
            problem = turn.t("jobs.cannot_complete", ref=reference, status=status_text(turn, order.status))
            buttons = []
        else:
            turn.slots["job"] = order.ref
            turn.slots["job_customer"] = (await job_info(turn, order)).customer
            turn.slots.pop("_choices", None)
            return None
        if explicit:
            self.stop(turn, problem, *buttons)
        return problem

    async def _guess(self, turn: Turn) -> None:
        """No job named: the one talked about, else the only one in progress, else ask."""
        desk = turn.core.service_desk
        active = (await desk.list_repair_orders(turn.actor, active_only=True, limit=50)).items
        mine = [order for order in active if order.status in COMPLETABLE]
        remembered = job_ref(turn.state.context.get("job_id"))
        chosen = next((order for order in mine if order.ref == remembered), None)
        if chosen is None and len(mine) == 1:
            chosen = mine[0]
        if chosen is not None:
            await self._take(turn, chosen.ref, explicit=True)
        elif mine:
            titles = []
            for order in mine[:8]:
                info = await job_info(turn, order)
                title = short(f"{order.ref} · {info.customer} · {when_text(turn, order)}", 70)
                titles.append([order.ref, title])
            turn.slots["_choices"] = titles
        else:
            self.stop(turn, turn.t("jobs.none_to_complete"))

    async def _read(self, turn: Turn, text: str) -> None:
        """Work summary, parts and labour from what the technician wrote."""
        if not text:
            return
        summary = DONE_WORDS.sub("", JOB_MENTION.sub(" ", text), count=1)
        summary = DONE_TAIL.sub("", summary)
        summary = re.sub(r"\s+([,，.。;；:：])", r"\1", re.sub(r"\s{2,}", " ", summary)).strip(" ,，.。:：-")
        if len(LATIN_WORD.findall(summary)) >= 2 or len(CJK.findall(summary)) >= 3:
            turn.slots["summary"] = summary[:10_000]
        found = await parts_said(turn, text)
        if found:
            known = {code: quantity for code, quantity in turn.slots.get("parts", [])}
            known.update({code: quantity for code, quantity in found})
            turn.slots["parts"] = [[code, quantity] for code, quantity in known.items()]
        minutes = labour_minutes(text)
        if minutes is not None and "labour" not in turn.slots:
            turn.slots["labour"] = minutes
        exclusion = WARRANTY_EXCLUSION.search(text)
        if exclusion:
            turn.slots["excluded"] = exclusion.group(0).strip()


# --- dispatch from chat ------------------------------------------------------------------------------

TICKET_REF = re.compile(r"(?<![A-Za-z0-9])SR\s*[-#]?\s*(\d{1,9})(?![0-9])", re.IGNORECASE)
NO_TIME = "none"
DEFAULT_HOUR = 9
# Orders carry no duration: a visit is taken to last about an hour when looking for a clash.
VISIT_SPAN = timedelta(hours=1)
ACTIVE_STATES = frozenset(
    {RepairStatus.DISPATCHED.value, RepairStatus.ACCEPTED.value, RepairStatus.IN_PROGRESS.value})
# "to Tom", "send Tom to", "派给张伟", "让张伟去": the words that name who should go.
NAMED_EN = re.compile(
    r"\b(?:to|for)\s+(?P<a>[A-Za-z][\w.'’-]*(?:\s+[A-Z][\w.'’-]*)?)"
    r"|\bsend\s+(?P<b>[A-Za-z][\w.'’-]*(?:\s+[A-Z][\w.'’-]*)?)\s+(?:to|over|out|instead)\b",
    re.IGNORECASE)
NAMED_ZH = re.compile(
    r"(?:派给|交给|分给|安排给|指派给|改派给?|换成|改成)\s*(?P<a>[A-Za-z.]{2,30}|[\u4e00-\u9fff]{2,3}?)"
    r"(?=[，,。.!！\s]|明天|今天|后天|大后天|周|星期|下周|礼拜|上午|下午|晚上|早上|中午|去|吧|啊|呢|$)"
    r"|(?:让|派|叫)\s*(?P<b>[\u4e00-\u9fff]{2,3}?)\s*(?:去|上门|跑一趟|处理)")
# Words around a name in a dispatch that are never the name.
DISPATCH_WORDS = frozenset((
    "assign", "assigned", "dispatch", "dispatched", "send", "sent", "book", "schedule", "who", "can", "could",
    "take", "go", "goes", "do", "it", "job", "ticket", "request", "sr", "am", "pm", "please", "pls",
    "someone", "somebody", "anyone", "anybody", "technician", "tech", "engineer", "free", "available",
    "suggest", "suggestion", "best", "a", "an", "the", "to", "for", "on", "at", "in", "by", "of", "me",
    "today", "tomorrow", "tonight", "morning", "afternoon", "evening", "noon", "next", "this", "week",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "mon", "tue", "wed", "thu",
    "fri", "sat", "sun", "o'clock", "oclock", "asap", "now", "there", "over", "out",
))
DISPATCH_ZH = re.compile(
    r"SR\s*-?\s*\d+|派给|交给|分给|安排给|指派给|派单|派工|派|谁能去|谁可以去|谁去|谁能|谁有空|安排|一下|"
    r"明天|今天|后天|大后天|下周.|周.|星期.|上午|下午|晚上|早上|中午|[零一二两三四五六七八九十\d]+点(?:半|\d+分?)?|"
    r"[，,。？?！!\s]", re.IGNORECASE)
# "换成明天下午": a day or a part of the day after 换成/改成 is a new time, not who goes.
TIME_NOT_NAME = re.compile(
    r"大?后天|[今明]天|下?(?:周|星期|礼拜)[一二三四五六日天末]|上午|下午|晚上|早上|中午|傍晚")
USERNAME = re.compile(r"[A-Za-z0-9]+[._][A-Za-z0-9._-]+")
# Open requests read to find one by its customer's name, and how many of them are offered as buttons.
REQUEST_LOOKUP_LIMIT = 200
MAX_REQUEST_CHOICES = 6
# How a technician is called by surname: "张工", "张师傅", "老张", "小张".
HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
SURNAME_CALL = re.compile(r"(?P<a>[\u4e00-\u9fff])(?:工|师傅|师父|工程师)|[老小](?P<b>[\u4e00-\u9fff])")
# Words that name a day, as opposed to a clock time alone ("3pm", "下午3点").
DAY_WORDS = re.compile(
    r"\d{1,4}\s*[/\-月年]\s*\d{1,2}|\b(?:today|tonight|tomorrow|yesterday|next|this|mon|tue|wed|thu|fri|sat|sun|"
    r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b|今|明|昨|后天|前天|周|星期|礼拜|号|日",
    re.IGNORECASE)
CLOCK = re.compile(r"(?<![\d:])(?P<h>[01]?\d|2[0-3])[:：.](?P<m>[0-5]\d)(?![\d])")


def named_technician(text: str) -> tuple[str, str] | None:
    """Who should go, as said and as a name to match ("to Tech South tomorrow" → "Tech South", "South")."""
    named = NAMED_ZH.search(text) or NAMED_EN.search(text)
    if not named:
        return None
    said = (named.group("a") or named.group("b") or "").strip()
    words = [word for word in said.split() if word.casefold() not in DISPATCH_WORDS]
    if not words or TICKET_REF.fullmatch(said) or TIME_NOT_NAME.match(said):
        return None
    shown = said.split()
    while shown and shown[-1].casefold() in DISPATCH_WORDS:
        shown.pop()  # "Bob tomorrow": the time is no part of the name
    return " ".join(shown), " ".join(words)


def ticket_ref(raw: str | None) -> str | None:
    """'SR-12', 'sr 12', '#12', '12' → 'SR-12'."""
    if not raw:
        return None
    match = TICKET_REF.search(raw) or BARE_NUMBER.match(raw)
    return f"SR-{int(match.group(1))}" if match else None


def moment(turn: Turn, value: date | datetime, hour: int = DEFAULT_HOUR) -> datetime:
    """A time from what was said: a day alone means that day at `hour`, local time."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(hour), tzinfo=zone(turn))


def said_moment(turn: Turn, text: str) -> datetime | None:
    """The first date/time the message names (a day alone: 9:00 that day); a bare "10:30" is today."""
    for when in whens(turn):
        return moment(turn, when)
    clock = CLOCK.search(text)
    if clock:
        return datetime.combine(local_today(turn), time(int(clock["h"]), int(clock["m"])), tzinfo=zone(turn))
    return None


def changed_moment(turn: Turn, held: datetime | None) -> datetime | None:
    """A time said as a change of `held`: a clock time alone keeps its day ("make it 3pm"), a day alone its
    hour ("改到周五"); anything else is the time said."""
    said = said_moment(turn, spoken(turn))
    found = [item for item in turn.parse.entities if item.entity in ("date", "time")]
    if said is None or held is None or len(found) != 1:
        return said
    tz, item = zone(turn), found[0]
    local, before = said.astimezone(tz), held.astimezone(tz)
    if item.entity == "date":
        return datetime.combine(local.date(), before.time(), tzinfo=tz)
    if item.text and not DAY_WORDS.search(item.text):
        return datetime.combine(before.date(), local.time(), tzinfo=tz)
    return said


def iso_value(raw: str) -> datetime | None:
    """A time carried by a button payload."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else None


class DispatchJob(StaffHandler):
    """J7: 'assign SR-12 to Tom tomorrow 9am', 'who can take SR-12?' → a confirmed repair order."""

    intent = "dispatch_job"
    roles = frozenset({Role.AGENT, Role.MANAGER})
    slots = (
        Slot("request", "field.dispatch.ask_request", entity="sr"),
        Slot("technician", "field.dispatch.ask_technician", entity="tech"),
        Slot("when", "field.dispatch.ask_when", entity="when"),
    )
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """Request, technician and time from the message (or the button that restarted it)."""
        text = spoken(turn)
        written = TICKET_REF.search(text)
        reference = (ticket_ref(turn.entity("sr")) or ticket_ref(turn.entity("ticket_id"))
                     or (ticket_ref(written.group(0)) if written else None))
        if reference is not None:
            problem = await self._take_request(turn, reference)
            if problem:
                self.stop(turn, problem)
                return
        elif text and await self._find_request(turn, text):
            # "assign 李秀英's request to Zhang Wei": the customer's open request, by their name.
            pass
        else:
            # "dispatch it to Tom" right after talking about SR-12; a stale one (closed since) is just asked.
            remembered = ticket_ref(turn.state.context.get("ticket_id"))
            if remembered and await self._take_request(turn, remembered):
                for name in ("request", "customer", "subject", "preferred"):
                    turn.slots.pop(name, None)
        chosen = turn.entity("tech")
        if chosen:
            await self._take_technician(turn, chosen, exact=True)
        elif text:
            await self._find_technician(turn, text)
        raw_when = turn.entity("when")
        if raw_when:
            self._take_when(turn, raw_when)
        elif text:
            said = said_moment(turn, text)
            if said is not None:
                self._take_when(turn, said.isoformat())

    def next_slot(self, turn: Turn) -> Slot | None:
        """Request, then technician, then time (the preferred time fills it when none was said)."""
        if "request" not in turn.slots:
            return self.slots[0]
        if "technician" not in turn.slots:
            return self.slots[1]
        if "when" not in turn.slots:
            preferred = iso_value(turn.slots.get("preferred") or "")
            if preferred is not None and preferred > turn.now and not turn.slots.get("_asked_when"):
                # No time said: the time the customer asked for, shown on the confirmation card.
                turn.slots["when"] = preferred.isoformat()
                return None
            return self.slots[2]
        return None

    # One method per question (docs/dialogue.md): the dialogue calls validate_<slot> and ask_<slot>.

    async def validate_request(self, turn: Turn, raw: str) -> str:
        """A request in scope that is open: by reference, or by its customer's name."""
        reference = ticket_ref(raw)
        if reference is None and not raw.startswith("/"):
            turn.slots.pop(STOP_KEY, None)
            if await self._find_request(turn, raw):
                stop = turn.slots.pop(STOP_KEY, None)
                if stop is not None:
                    raise SlotInvalid(stop["text"])
                if "request" in turn.slots:
                    found: str = turn.slots["request"]
                    return found
                raise SlotInvalid(turn.t("field.dispatch.pick_request"))
        if reference is None:
            raise SlotInvalid(turn.t("field.dispatch.bad_request"))
        problem = await self._take_request(turn, reference)
        if problem:
            raise SlotInvalid(problem)
        return reference

    async def validate_technician(self, turn: Turn, raw: str) -> str:
        """A technician of mine (by username from a button, else by name)."""
        exact = bool(turn.entity("tech"))
        named = None if exact else named_technician(raw)
        found = await self._take_technician(turn, named[1] if named else raw, exact=exact)
        if found is None:
            raise SlotInvalid(turn.t("field.dispatch.pick_again"))
        return found

    async def validate_when(self, turn: Turn, raw: str) -> str:
        """A time to come, or no time yet."""
        if raw.strip() == NO_TIME:
            return NO_TIME
        value = iso_value(raw) or said_moment(turn, raw)
        if value is None:
            raise SlotInvalid(turn.t("field.dispatch.bad_when"))
        if value < turn.now:
            raise SlotInvalid(turn.t("field.past", when=moment_label(turn, value)))
        return value.isoformat()

    async def correct(self, turn: Turn) -> list[str]:
        """Request, technician and time a typed message says, whatever was asked (that one: the answer)."""
        # "把SR-11派给张伟，明天上午10点" after the suggestions answers "who?" and says the time too.
        text = spoken(turn)
        if not text:
            return await super().correct(turn)
        asked, changed = turn.state.awaiting, []
        refused: list[str] = turn.slots.setdefault(REFUSED_CORRECTIONS, [])
        written = TICKET_REF.search(text)
        reference = ticket_ref(turn.entity("ticket_id")) or ticket_ref(written.group(0) if written else None)
        if asked != "request" and reference and reference != turn.slots.get("request"):
            held = {name: turn.slots.pop(name) for name in ("request", "customer", "subject", "preferred")
                    if name in turn.slots}
            problem = await self._take_request(turn, reference)
            if problem:
                turn.slots.update(held)
                refused.append(problem)
            else:
                changed.append("request")
        named = named_technician(text)
        if asked != "technician" and named:
            before = turn.slots.get("technician")
            if await self._take_technician(turn, named[1], exact=False) is None:
                if "_tech_choices" not in turn.slots:
                    refused.append(turn.t("field.dispatch.unknown_technician", name=short(named[0], 40)))
                elif before is not None:
                    # Several match: asked with buttons, the one held is dropped.
                    turn.slots.pop("technician", None)
                    changed.append("technician")
            elif turn.slots.get("technician") != before:
                changed.append("technician")
        held = iso_value(turn.slots.get("when") or "")
        moment_said = iso_value(turn.entity("when") or "") or changed_moment(turn, held)
        if asked != "when" and moment_said is not None:
            if moment_said < turn.now:
                refused.append(turn.t("field.past", when=moment_label(turn, moment_said)))
            elif turn.slots.get("when") != moment_said.isoformat():
                turn.slots["when"] = moment_said.isoformat()
                changed.append("when")
        if not refused:
            turn.slots.pop(REFUSED_CORRECTIONS)
        return changed

    async def ask_request(self, turn: Turn) -> list[Reply]:
        """Which request (the customer's open ones as buttons)."""
        requests: list[list[str]] = turn.slots.pop("_request_choices", None) or []
        return [Reply(text=turn.t("field.dispatch.ask_request"), buttons=tuple(
            Button(title=title, payload=payload(self.intent, sr=ref)) for ref, title in requests))]

    async def ask_technician(self, turn: Turn) -> list[Reply]:
        """Which technician: the matches, else suggestions, as buttons."""
        choices: list[list[str]] = turn.slots.get("_tech_choices") or []
        if choices:
            return [Reply(text=turn.t("field.dispatch.pick_technician"), buttons=tuple(
                Button(title=short(f"{name} ({username})", 60),
                       payload=payload(self.intent, tech=username))
                for username, name in choices))]
        return [await self._suggestions(turn)]

    async def ask_when(self, turn: Turn) -> list[Reply]:
        """When (the customer's preferred time, tomorrow morning, or no time yet, as buttons)."""
        turn.slots["_asked_when"] = True
        buttons = []
        preferred = iso_value(turn.slots.get("preferred") or "")
        if preferred is not None and preferred > turn.now:
            buttons.append(turn.button("field.dispatch.preferred_button",
                                       payload(self.intent, when=preferred.isoformat()),
                                       when=moment_label(turn, preferred)))
        tomorrow = datetime.combine(local_today(turn) + timedelta(days=1), time(DEFAULT_HOUR),
                                    tzinfo=zone(turn))
        buttons.append(turn.button("field.dispatch.tomorrow_button",
                                   payload(self.intent, when=tomorrow.isoformat()),
                                   when=moment_label(turn, tomorrow)))
        buttons.append(turn.button("field.dispatch.no_time_button", payload(self.intent, when=NO_TIME)))
        return [Reply(text=turn.t("field.dispatch.ask_when", name=turn.slots.get("technician_name", "")),
                      buttons=tuple(buttons))]

    async def confirmation(self, turn: Turn) -> Reply:
        """Request, customer, technician and time before the job is created."""
        slots = turn.slots
        when = iso_value(slots["when"]) if slots["when"] != NO_TIME else None
        text = turn.t("field.dispatch.card", request=slots["request"], customer=slots.get("customer", ""),
                      subject=short(slots.get("subject", ""), 60), name=slots.get("technician_name", ""),
                      when=moment_label(turn, when) if when else turn.t("jobs.no_time"))
        # What "yes" would overlook is said before it: who has the request now, and a clash in the slot.
        warnings = [*await self._held(turn), *await self._clashes(turn, when)]
        return confirm_card(turn, "\n".join([text, *warnings]))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Create the repair order: the technician gets the dispatch card through the notifier."""
        slots = turn.slots
        when = iso_value(slots["when"]) if slots["when"] != NO_TIME else None
        try:
            order = await turn.core.service_desk.dispatch(turn.actor, RepairOrderIn(
                service_request=slots["request"], technician=slots["technician"], scheduled_at=when))
        except NotFound:
            return [turn.say("field.dispatch.request_not_found", ref=slots["request"])]
        except (ValidationFailed, InvalidTransition) as error:
            return [turn.say("field.dispatch.refused", message=error.message)]
        turn.state.context["job_id"] = order.ref
        return [turn.say("field.dispatch.done", ref=order.ref, request=slots["request"],
                         name=slots.get("technician_name", order.technician or ""),
                         when=moment_label(turn, when) if when else turn.t("jobs.no_time"))]

    # --- helpers ---

    async def _take_request(self, turn: Turn, reference: str) -> str | None:
        """Keep an open request in scope; else why not (out of scope reads as not found)."""
        try:
            request = await turn.core.service_desk.get_request(turn.actor, reference)
        except (NotFound, ValidationFailed):
            return turn.t("field.dispatch.request_not_found", ref=reference)
        if request.status in ("resolved", "closed"):
            return turn.t("field.dispatch.request_closed", ref=request.ref,
                          status=label(turn, "field.request_status", request.status))
        turn.slots.update(request=request.ref, customer=request.customer_name, subject=request.subject)
        turn.state.context["ticket_id"] = request.ref
        if request.preferred_time is not None:
            turn.slots["preferred"] = request.preferred_time.isoformat()
        return None

    async def _find_request(self, turn: Turn, text: str) -> bool:
        """A request found by its customer's name in the message: taken when one fits, else offered as
        buttons; whether the name matched any."""
        named = NAMED_ZH.search(text) or NAMED_EN.search(text)
        # The technician's name is no customer's ("to Zhang Wei" may also be a customer called Zhang Wei).
        rest = text[: named.start()] + " " + text[named.end():] if named else text
        requests = (await turn.core.service_desk.list_requests(
            turn.actor, open_only=True, limit=REQUEST_LOOKUP_LIMIT)).items
        candidates = pick(find_customers([(item.ref, item.customer_name) for item in requests], rest,
                                         whole=False))
        if not candidates:
            return False
        names = {item.customer_name for item in requests if item.ref in {found.code for found in candidates}}
        matching = [item for item in requests if item.customer_name in names]
        if len(matching) == 1:
            problem = await self._take_request(turn, matching[0].ref)
            if problem:
                self.stop(turn, problem)
            return True
        turn.slots["_request_choices"] = [
            [item.ref, short(f"{item.ref} · {item.customer_name} · {item.subject}", 60)]
            for item in matching[:MAX_REQUEST_CHOICES]]
        return True

    async def _find_technician(self, turn: Turn, text: str) -> None:
        """A technician named in the message: one (taken), several (buttons), or a name nobody has."""
        named = named_technician(text)
        if named:
            found = await self._take_technician(turn, named[1], exact=False)
            if found is None and "_tech_choices" not in turn.slots:
                self.stop(turn, turn.t("field.dispatch.unknown_technician", name=short(named[0], 40)),
                          *([Button(title=turn.t("field.dispatch.suggest_button"),
                                    payload=payload(self.intent, sr=turn.slots["request"]))]
                            if "request" in turn.slots else []))
            return
        rest = DISPATCH_ZH.sub(" ", TICKET_REF.sub(" ", text))
        words = [word for word in LATIN_WORD.findall(rest) if word.casefold() not in DISPATCH_WORDS
                 and not any(char.isdigit() for char in word)]
        cjk = "".join(CJK.findall(rest))
        query = " ".join(words + ([cjk] if cjk else []))
        if query:
            await self._take_technician(turn, query, exact=False)

    async def _take_technician(self, turn: Turn, raw: str, *, exact: bool) -> str | None:
        """Match among the technicians this dispatcher may send; None when not exactly one."""
        names = await turn.core.service_desk.dispatchable_technicians(turn.actor)
        choices: list[list[str]] = turn.slots.get("_tech_choices") or []
        called = SURNAME_CALL.fullmatch(raw.strip())
        if exact or USERNAME.fullmatch(raw.strip()):
            # A username is exact: "rep.north" must not fuzzily become "Tech North".
            found = [Candidate(code, name, 100.0) for code, name in names if code == raw.strip().casefold()]
        elif called:
            # "张工", "张师傅", "老张": everyone of that surname (a name's Chinese part starts with it).
            surname = called.group("a") or called.group("b")
            found = [Candidate(code, name, 100.0) for code, name in names
                     if any(run.startswith(surname) for run in HAN_RUN.findall(name))]
        else:
            found = (pick(find_customers(choices, raw, whole=True)) if choices else []) or \
                pick(find_customers(names, raw, whole=True)) or pick(find_customers(names, raw, whole=False))
        if len(found) == 1:
            turn.slots["technician"], turn.slots["technician_name"] = found[0].code, found[0].name
            turn.slots.pop("_tech_choices", None)
            return found[0].code
        if found:
            turn.slots["_tech_choices"] = [[item.code, item.name] for item in found]
        return None

    async def _held(self, turn: Turn) -> list[str]:
        """The request's active jobs, each with its technician, status and time (dispatching adds another)."""
        desk = turn.core.service_desk
        try:
            request = await desk.get_request(turn.actor, turn.slots["request"])
        except (NotFound, PermissionDenied, ValidationFailed):
            return []
        names = dict(await desk.dispatchable_technicians(turn.actor))
        lines = []
        for reference in request.repair_orders:
            try:
                order = await desk.get_repair_order(turn.actor, reference)
            except (NotFound, PermissionDenied):
                continue
            if order.status in ACTIVE_STATES and order.technician:
                lines.append(turn.t("field.dispatch.held", request=request.ref, ref=order.ref,
                                    name=names.get(order.technician, order.technician),
                                    status=status_text(turn, order.status), when=when_text(turn, order)))
        return lines

    async def _clashes(self, turn: Turn, when: datetime | None) -> list[str]:
        """The technician's active jobs within a visit's length of `when`, said on the card."""
        if when is None or "technician" not in turn.slots:
            return []
        found = (await turn.core.service_desk.list_repair_orders(
            turn.actor, technician=turn.slots["technician"], active_only=True,
            scheduled_from=when - VISIT_SPAN, scheduled_to=when + VISIT_SPAN, limit=10)).items
        jobs = [turn.t("field.dispatch.clash_job", ref=order.ref, when=when_text(turn, order),
                       customer=order.customer_name or order.customer_code) for order in found]
        if not jobs:
            return []
        name = turn.slots.get("technician_name", turn.slots["technician"])
        return [turn.t("field.dispatch.clash", name=name, jobs=turn.t("field.why.join").join(jobs))]

    def _take_when(self, turn: Turn, raw: str) -> None:
        """A time said or chosen; a past one is refused with a note (and asked again)."""
        if raw.strip() == NO_TIME:
            turn.slots["when"] = NO_TIME
            return
        value = iso_value(raw)
        if value is None:
            return
        if value < turn.now:
            self.note(turn, turn.t("field.past", when=moment_label(turn, value)))
            turn.slots["_asked_when"] = True
            return
        turn.slots["when"] = value.isoformat()

    async def _suggestions(self, turn: Turn) -> Reply:
        """The three best technicians for the request, each with why."""
        when = iso_value(turn.slots.get("when") or "") or iso_value(turn.slots.get("preferred") or "")
        try:
            ranked = await turn.core.service_desk.suggest_technicians(turn.actor, turn.slots["request"], when)
        except (NotFound, InvalidTransition) as error:
            turn.state.finish()
            return Reply(text=error.message)
        if not ranked:
            turn.state.finish()
            return turn.say("field.dispatch.no_technicians")
        lines = [turn.t("field.dispatch.suggest_title", request=turn.slots["request"])]
        for number, item in enumerate(ranked, 1):
            lines.append(f"{number}. {item.name} — {self._why(turn, item)}")
        buttons = tuple(Button(title=short(item.name, 40), payload=payload(self.intent, tech=item.username))
                        for item in ranked)
        turn.slots["_tech_choices"] = [[item.username, item.name] for item in ranked]
        return Reply(text="\n".join(lines), buttons=buttons)

    @staticmethod
    def _why(turn: Turn, item: TechnicianSuggestionOut) -> str:
        """One line: region, skill, load."""
        parts = []
        if item.same_region:
            parts.append(turn.t("field.why.region"))
        if item.skill_match:
            parts.append(turn.t(f"field.why.skill_{item.skill_match}"))
        parts.append(turn.t("field.why.load", day=item.jobs_that_day, open=item.open_jobs))
        return turn.t("field.why.join").join(parts)


# --- on my way ---------------------------------------------------------------------------------------

ON_THE_WAY = frozenset({RepairStatus.ACCEPTED.value, RepairStatus.IN_PROGRESS.value})
ETA_CHOICES = (15, 30, 45, 60)


class JobPicker(StaffHandler):
    """A handler about one of the speaker's active jobs: named, talked about, by customer, or the only one."""

    pick_states: ClassVar[frozenset[str]] = ON_THE_WAY
    none_key: ClassVar[str] = "field.way.none"

    async def take_job(self, turn: Turn, text: str) -> None:
        """Fill `job` or leave choices (or stop when there is nothing to pick)."""
        desk = turn.core.service_desk
        named = job_ref(turn.entity("job_id")) or named_job(text)
        if named:
            try:
                order = await desk.get_repair_order(turn.actor, named)
            except (NotFound, ValidationFailed):
                self.stop(turn, turn.t("jobs.not_found", ref=named))
                return
            if turn.actor.role is Role.TECHNICIAN and order.technician != turn.actor.username:
                self.stop(turn, turn.t("jobs.not_found", ref=named))
            elif order.status == RepairStatus.DISPATCHED.value and self.pick_states == ON_THE_WAY:
                self.stop(turn, turn.t("field.way.accept_first", ref=named), accept_button(turn, order))
            elif order.status not in self.pick_states:
                status = status_text(turn, order.status)
                self.stop(turn, turn.t("field.job_not_active", ref=named, status=status))
            else:
                self._chosen(turn, order)
            return
        if turn.actor.role is not Role.TECHNICIAN:
            return  # the desk names the job; there is no "my" job to guess
        listed = (await desk.list_repair_orders(turn.actor, active_only=True, limit=50)).items
        active = [order for order in listed if order.status in self.pick_states]
        if not active:
            self.stop(turn, turn.t(self.none_key))
            return
        by_customer = pick(find_customers([(order.ref, order.customer_name) for order in active], text,
                                          whole=False)) if text else []
        remembered = job_ref(turn.state.context.get("job_id"))
        chosen = None
        if len(by_customer) == 1:
            chosen = next(order for order in active if order.ref == by_customer[0].code)
        elif remembered and any(order.ref == remembered for order in active):
            chosen = next(order for order in active if order.ref == remembered)
        elif len(active) == 1:
            chosen = active[0]
        if chosen is not None:
            self._chosen(turn, chosen)
        else:
            turn.slots["_choices"] = [
                [order.ref, short(f"{order.ref} · {order.customer_name} · {when_text(turn, order)}", 60)]
                for order in active[:8]]

    @staticmethod
    def _chosen(turn: Turn, order: RepairOrderOut) -> None:
        turn.slots["job"] = order.ref
        turn.slots["job_customer"] = order.customer_name or order.customer_code
        if order.scheduled_at is not None:
            turn.slots["job_at"] = order.scheduled_at.isoformat()
        turn.slots.pop("_choices", None)

    async def job_answer(self, turn: Turn, raw: str) -> str:
        """A job reference from an answer or button."""
        reference = job_ref(raw)
        if reference is None:
            raise SlotInvalid(turn.t("jobs.bad_ref"))
        turn.slots.pop(STOP_KEY, None)
        await self.take_job(turn, reference)
        if STOP_KEY in turn.slots:
            problem = turn.slots.pop(STOP_KEY)["text"]
            raise SlotInvalid(problem)
        return reference

    async def validate_job(self, turn: Turn, raw: str) -> str:
        """One of my jobs this form can act on."""
        return await self.job_answer(turn, raw)

    async def ask_job(self, turn: Turn) -> list[Reply]:
        """Which job (the form's own question): buttons when there are candidates."""
        prompt = next(slot.prompt for slot in self.slots if slot.name == "job")
        return [job_question(turn, self.intent, prompt)]


class OnMyWay(JobPicker):
    """J7: 'on my way to RO-311, 20 minutes' / '在路上了，大概半小时到' → the customer gets the ETA."""

    intent = "on_my_way"
    roles = frozenset({Role.TECHNICIAN})
    slots = (
        Slot("job", "field.way.ask_job", entity="job_id"),
        Slot("eta", "field.way.ask_eta", entity="minutes"),
    )

    async def prefill(self, turn: Turn) -> None:
        """The job and the arrival time from the message."""
        text = spoken(turn)
        await self.take_job(turn, text)
        minutes = turn.entity("minutes")
        if minutes and minutes.isdigit():
            turn.slots["eta"] = (turn.now + timedelta(minutes=int(minutes))).isoformat()
        elif text:
            eta = self._eta(turn, text)
            if eta is not None:
                turn.slots["eta"] = eta.isoformat()

    # One method per question (docs/dialogue.md); the job's are JobPicker's.

    async def validate_eta(self, turn: Turn, raw: str) -> str:
        """Minutes from now or a clock time."""
        if raw.strip().isdigit() and 0 < int(raw.strip()) <= 12 * 60:
            return (turn.now + timedelta(minutes=int(raw.strip()))).isoformat()
        eta = self._eta(turn, raw)
        if eta is None:
            raise SlotInvalid(turn.t("field.way.bad_eta"))
        return eta.isoformat()

    async def ask_eta(self, turn: Turn) -> list[Reply]:
        """How long until you get there (buttons)."""
        return [Reply(text=turn.t("field.way.ask_eta"), buttons=tuple(
            turn.button("jobs.minutes", payload(self.intent, minutes=str(minutes)), minutes=minutes)
            for minutes in ETA_CHOICES))]

    async def execute(self, turn: Turn) -> list[Reply]:
        """Record the departure: the job starts and the customer is told through the notifier."""
        eta = iso_value(turn.slots["eta"])
        reference = turn.slots["job"]
        action = RepairActionIn(action="depart", eta=eta)
        order = await act_on_job(turn, reference, action, "field.way.refused")
        if isinstance(order, Reply):
            return [order]
        arrival = f"{order.eta_at.astimezone(zone(turn)):%H:%M}" if order.eta_at else ""
        return [turn.say("field.way.done", customer=order.customer_name or order.customer_code, eta=arrival,
                         ref=order.ref)]

    @staticmethod
    def _eta(turn: Turn, text: str) -> datetime | None:
        """'20 minutes', 'half an hour', '半小时' (from now) or 'by 10:30' / a time entity."""
        minutes = labour_minutes(text)
        if minutes is not None and minutes <= 12 * 60:
            return turn.now + timedelta(minutes=minutes)
        return said_moment(turn, text)


# --- reschedule ----------------------------------------------------------------------------------------


class RescheduleJob(JobPicker):
    """J7: 'reschedule RO-311 to Friday 2pm' → a proposal the customer confirms."""

    intent = "reschedule_job"
    # A customer's "Friday 2pm works" reads as rescheduling: it is their answer to the time we proposed.
    roles = frozenset({Role.TECHNICIAN, Role.AGENT, Role.MANAGER, Role.CUSTOMER})
    pick_states: ClassVar[frozenset[str]] = frozenset(
        {RepairStatus.DISPATCHED.value, RepairStatus.ACCEPTED.value, RepairStatus.IN_PROGRESS.value})
    none_key: ClassVar[str] = "field.reschedule.none"
    slots = (
        Slot("job", "field.reschedule.ask_job", entity="job_id"),
        Slot("when", "field.reschedule.ask_when", entity="when"),
    )
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """The job and the new time from the message (a customer's words answer a time we proposed)."""
        if turn.actor.role is Role.CUSTOMER:
            turn.slots[VISIT_ANSWER.name] = True
            return
        if declines(turn) and not whens(turn):
            turn.slots[DECLINING.name] = True
            return
        text = spoken(turn)
        await self.take_job(turn, text)
        raw = turn.entity("when")
        when = iso_value(raw) if raw else (said_moment(turn, text) if text else None)
        if when is not None:
            if when <= turn.now:
                self.note(turn, turn.t("field.past", when=moment_label(turn, when)))
            else:
                turn.slots["when"] = when.isoformat()

    # One method per question (docs/dialogue.md); the job's are JobPicker's.

    async def validate_when(self, turn: Turn, raw: str) -> str:
        """A time to come."""
        value = iso_value(raw) or said_moment(turn, raw)
        if value is None:
            raise SlotInvalid(turn.t("field.reschedule.bad_when"))
        if value <= turn.now:
            raise SlotInvalid(turn.t("field.past", when=moment_label(turn, value)))
        return value.isoformat()

    def next_slot(self, turn: Turn) -> Slot | None:
        """Job and time; for a customer, their answer to our proposal."""
        if turn.slots.get(VISIT_ANSWER.name):
            return VISIT_ANSWER
        if turn.slots.get(DECLINING.name):
            return DECLINING
        return super().next_slot(turn)

    async def ask_when(self, turn: Turn) -> list[Reply]:
        """What time."""
        return [turn.say("field.reschedule.ask_when", ref=turn.slots["job"])]

    async def ask__visit_answer(self, turn: Turn) -> list[Reply]:
        """A customer's words go on as their answer to our proposal (VISIT_ANSWER's question)."""
        answered = await answer_to_proposal(turn)
        if answered is not None:
            return answered
        # Customers do not move visits themselves: a colleague arranges it.
        turn.state.finish()
        return [turn.say("field.visit.nothing_to_move",
                         turn.button("fallback.human_button", "/human_handoff"))]

    async def ask__declining(self, turn: Turn) -> list[Reply]:
        """Declining words ("拒绝RO-20") go on as declining the job (DECLINING's question)."""
        return await carry_on(turn, AcceptJob())

    async def correct(self, turn: Turn) -> list[str]:
        """A new time said later ("make it 3pm", "改到下午3点") changes the proposal, at the card too."""
        text = spoken(turn)
        if not text or turn.state.awaiting == "when" or "job" not in turn.slots:
            return await super().correct(turn)
        said = changed_moment(turn, iso_value(turn.slots.get("when") or "")) if whens(turn) else None
        if said is None or said.isoformat() == turn.slots.get("when"):
            return []
        if said <= turn.now:
            turn.slots.setdefault(REFUSED_CORRECTIONS, []).append(
                turn.t("field.past", when=moment_label(turn, said)))
            return []
        turn.slots["when"] = said.isoformat()
        return ["when"]

    async def confirmation(self, turn: Turn) -> Reply:
        """The job, the current and the new time."""
        current = iso_value(turn.slots.get("job_at") or "")
        return confirm_card(turn, turn.t(
            "field.reschedule.card", ref=turn.slots["job"], customer=turn.slots.get("job_customer", ""),
            current=moment_label(turn, current) if current else turn.t("jobs.no_time"),
            when=moment_label(turn, iso_value(turn.slots["when"]) or turn.now)))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Propose the time; the customer is asked through the notifier."""
        reference = turn.slots["job"]
        when = iso_value(turn.slots["when"])
        action = RepairActionIn(action="reschedule", scheduled_at=when)
        order = await act_on_job(turn, reference, action, "field.reschedule.refused")
        if isinstance(order, Reply):
            return [order]
        return [turn.say("field.reschedule.done", ref=order.ref,
                         when=moment_label(turn, order.proposed_at or turn.now),
                         customer=order.customer_name or order.customer_code)]


# --- the customer's answer to a new time --------------------------------------------------------------

YES_WORDS = re.compile(
    r"\b(?:yes|yeah|yep|ok|okay|sure|fine|works?|suits?|confirm(?:ed)?|good|great|perfect)\b|no\s+problem|"
    r"可以|行|好的?|没问题|确认|方便|就这样|同意",
    re.IGNORECASE)
NO_WORDS = re.compile(
    r"\b(?:no|nope|not|never|can'?t|cannot|won'?t|doesn'?t|don'?t|isn'?t|busy|another|other|different|"
    r"rather|instead|better)\b|n't\b|不行|不可以|不太?方便|不太?行|换|没空|没时间|有事|不能|来不了|改",
    re.IGNORECASE)
# Said as agreement although they hold a "no".
YES_PHRASES = re.compile(r"\bno\s+(?:problem|worries)\b|没问题|不错", re.IGNORECASE)
VISIT_ANSWER = Slot("_visit_answer", "field.visit.ask_decision", required=False)


async def pending_proposals(turn: Turn) -> list[RepairOrderOut]:
    """The customer's jobs with a new visit time waiting for their answer."""
    orders = (await turn.core.service_desk.list_repair_orders(turn.actor, active_only=True, limit=50)).items
    return [order for order in orders if order.proposed_at is not None]


def fits(turn: Turn, said: date | datetime, proposed: datetime) -> bool:
    """Whether a day or time the customer names is the one proposed ("Friday 2pm" for Fri 11 Jan 14:00)."""
    local = proposed.astimezone(zone(turn))
    if isinstance(said, datetime):
        mine = said.astimezone(zone(turn))
        # A weekday is read as the next one, the proposal may be a later one: the weekday and hour decide.
        return (mine.date() == local.date() or mine.weekday() == local.weekday()) and \
            (mine.hour, mine.minute) == (local.hour, local.minute)
    return said == local.date() or said.weekday() == local.weekday()


def read_visit_answer(turn: Turn, proposed: datetime | None) -> tuple[str | None, datetime | None]:
    """Yes or no, and the customer's own time, from what they wrote ("Friday 2pm works", "周六上午10点吧")."""
    text = spoken(turn)
    intent = turn.parse.intent
    named = whens(turn)
    other = [moment(turn, when) for when in named if proposed is None or not fits(turn, when, proposed)]
    other = [when for when in other if when > turn.now]
    agreed = YES_PHRASES.search(text)
    refused = intent == "deny" or (NO_WORDS.search(text) is not None and not agreed)
    if refused:
        return "no", (other[-1] if other else None)
    if other and (proposed is None or not any(fits(turn, when, proposed) for when in named)):
        # "Saturday 10am works better": another time than the one proposed is a counter-proposal.
        return "no", other[0]
    if intent in ("affirm", "accept_job") or YES_WORDS.search(text) or named:
        return "yes", None
    return None, None


async def carry_on(turn: Turn, handler: StaffHandler) -> list[Reply]:
    """Go on with this message as `handler`'s form (what the words mean for this person, not their parse)."""
    state = turn.state
    state.finish()
    state.active = handler.intent
    await handler.prefill(turn)
    slot = handler.missing(turn)
    if slot is not None:
        state.awaiting = slot.name
        return await handler.ask(turn, slot)
    replies = await handler.execute(turn)
    state.finish()
    return replies


class ConfirmVisit(StaffHandler):
    """A customer confirms a proposed visit time, or asks for another: buttons, yes/no, or a time in words."""

    intent = "confirm_visit"
    roles = frozenset({Role.CUSTOMER})
    slots = (
        Slot("job", "field.visit.ask_job", entity="job_id"),
        Slot("decision", "field.visit.ask_decision", entity="decision"),
        Slot("suggested", "field.visit.ask_time", entity="when"),
    )

    async def prefill(self, turn: Turn) -> None:
        """Which job (the only pending one when not named), and yes or no with their own time."""
        decision = turn.entity("decision")
        if decision in ("yes", "no"):
            turn.slots["decision"] = decision
        named = job_ref(turn.entity("job_id")) or named_job(spoken(turn))
        pending = await pending_proposals(turn)
        if named:
            if not any(order.ref == named for order in pending):
                self.stop(turn, turn.t("field.visit.nothing_pending"))
                return
            order = next(order for order in pending if order.ref == named)
            turn.slots.update(job=order.ref, proposed=(order.proposed_at or turn.now).isoformat())
        elif len(pending) == 1:
            turn.slots.update(job=pending[0].ref, proposed=(pending[0].proposed_at or turn.now).isoformat())
        elif pending:
            turn.slots["_choices"] = [
                [order.ref, short(f"{order.ref} · {moment_label(turn, order.proposed_at or turn.now)}", 60)]
                for order in pending[:8]]
        else:
            self.stop(turn, turn.t("field.visit.nothing_pending"))
            return
        if "decision" not in turn.slots and spoken(turn):
            self._take_answer(turn)

    def _take_answer(self, turn: Turn) -> bool:
        """Yes/no and their own time from the words; whether a decision was read."""
        decision, suggested = read_visit_answer(turn, iso_value(turn.slots.get("proposed") or ""))
        if decision is None:
            return False
        turn.slots["decision"] = decision
        if suggested is not None:
            turn.slots["suggested"] = suggested.isoformat()
        return True

    def next_slot(self, turn: Turn) -> Slot | None:
        """Job, decision, and when refusing, their own time (optional: 'none')."""
        for slot in self.slots[:2]:
            if slot.name not in turn.slots:
                return slot
        if turn.slots["decision"] == "no" and "suggested" not in turn.slots:
            return self.slots[2]
        return None

    # One method per question (docs/dialogue.md): the dialogue calls validate_<slot> and ask_<slot>.

    async def validate_job(self, turn: Turn, raw: str) -> str:
        """A job with a time proposed to this customer."""
        reference = job_ref(raw)
        pending = {order.ref: order for order in await pending_proposals(turn)}
        if reference is None or reference not in pending:
            raise SlotInvalid(turn.t("field.visit.nothing_pending"))
        turn.slots["proposed"] = (pending[reference].proposed_at or turn.now).isoformat()
        return reference

    async def ask_job(self, turn: Turn) -> list[Reply]:
        """Which proposal (buttons)."""
        return [job_question(turn, self.intent, "field.visit.ask_job")]

    async def validate_decision(self, turn: Turn, raw: str) -> str:
        """Yes or no (in words, with a time of their own)."""
        if raw in ("yes", "no"):
            return raw
        if not self._take_answer(turn):
            raise SlotInvalid(turn.t("field.visit.yes_or_no"))
        decision: str = turn.slots["decision"]
        return decision

    async def ask_decision(self, turn: Turn) -> list[Reply]:
        """Confirm or not."""
        return [self.decision_question(turn)]

    async def validate_suggested(self, turn: Turn, raw: str) -> str:
        """A time of their own to come, or none."""
        if raw.strip() == NO_TIME:
            return NO_TIME
        value = iso_value(raw) or said_moment(turn, raw)
        if value is None:
            raise SlotInvalid(turn.t("field.visit.bad_time"))
        if value <= turn.now:
            raise SlotInvalid(turn.t("field.past", when=moment_label(turn, value)))
        return value.isoformat()

    async def ask_suggested(self, turn: Turn) -> list[Reply]:
        """Which time instead (or [No preference])."""
        return [Reply(text=turn.t("field.visit.ask_time"), buttons=(
            Button(title=turn.t("field.visit.no_preference"), payload=payload(self.intent, when=NO_TIME)),))]

    def decision_question(self, turn: Turn) -> Reply:
        """'Does Fri 19 Jun 14:00 suit you?' [Confirm] [Another time]."""
        proposed = iso_value(turn.slots.get("proposed") or "") or turn.now
        reference = turn.slots["job"]
        text = turn.t("field.visit.ask_decision", ref=reference, when=moment_label(turn, proposed))
        return Reply(text=text,
                     buttons=(Button(title=turn.t("field.visit.confirm_button"),
                                     payload=payload(self.intent, job_id=reference, decision="yes")),
                              Button(title=turn.t("field.visit.other_button"),
                                     payload=payload(self.intent, job_id=reference, decision="no"))))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Confirm (the visit moves) or refuse (the technician and dispatcher are told, with their time)."""
        reference, yes = turn.slots["job"], turn.slots["decision"] == "yes"
        suggested = turn.slots.get("suggested")
        action = RepairActionIn(
            action="confirm_time" if yes else "refuse_time",
            scheduled_at=iso_value(suggested) if suggested and suggested != NO_TIME else None)
        try:
            order = await turn.core.service_desk.act_on_repair(turn.actor, reference, action)
        except (NotFound, PermissionDenied, InvalidTransition):
            return [turn.say("field.visit.nothing_pending")]
        except ValidationFailed as error:
            return [turn.say("field.visit.refused", message=error.message)]
        if yes:
            return [turn.say("field.visit.confirmed", ref=order.ref,
                             when=moment_label(turn, order.scheduled_at or turn.now))]
        if action.scheduled_at is not None:
            return [turn.say("field.visit.refused_with_time", when=moment_label(turn, action.scheduled_at))]
        return [turn.say("field.visit.refused_plain")]


async def answer_to_proposal(turn: Turn) -> list[Reply] | None:
    """A customer's words as their answer to the visit time we proposed, when one is waiting; else None."""
    if turn.actor.role is not Role.CUSTOMER or not await pending_proposals(turn):
        return None
    return await carry_on(turn, ConfirmVisit())


async def answer_in_other_words(turn: Turn) -> list[Reply] | None:
    """A customer's message the NLU could not place that names a time and says yes or no ("Saturday 10am would
    suit me better") answers a pending proposal; else None."""
    text = spoken(turn)
    if not (text and whens(turn) and (YES_WORDS.search(text) or NO_WORDS.search(text))):
        return None
    return await answer_to_proposal(turn)


class VisitAffirm(Affirm):
    """A customer's bare "yes" answers the visit time we proposed, when one is waiting."""

    async def execute(self, turn: Turn) -> list[Reply]:
        """Confirm the pending proposal (asking which when there are several); otherwise the usual answer."""
        return await answer_to_proposal(turn) or await super().execute(turn)


class VisitDeny(Deny):
    """A customer's "no" to the visit time we proposed asks which time suits them instead."""

    async def execute(self, turn: Turn) -> list[Reply]:
        """Refuse the pending proposal, with their own time when they gave one; a technician's "拒绝RO-20"
        declines the job; otherwise the usual answer."""
        if declines(turn):
            return await carry_on(turn, AcceptJob())
        return await answer_to_proposal(turn) or await super().execute(turn)


def handlers() -> list[Handler]:
    """One instance of every field-service handler (VisitAffirm and VisitDeny replace the plain yes/no
    handlers in bot/intents/__init__.py)."""
    return [MyJobs(), AcceptJob(), CompleteJob(), DispatchJob(), OnMyWay(), RescheduleJob(), ConfirmVisit()]
