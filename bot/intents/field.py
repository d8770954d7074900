"""Field service intents: my jobs (managers see their team's), accept a job, complete a job."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from bot.dialogue import Handler, Slot, SlotInvalid, Turn
from bot.intents.sales import (
    CJK,
    LATIN_WORD,
    StaffHandler,
    confirm_card,
    day_label,
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
from core.errors import InsufficientStock, InvalidTransition, NotFound, ValidationFailed
from core.schemas import PartUsedIn, RepairActionIn, RepairOrderOut

JOB_REF = re.compile(r"(?<![A-Za-z0-9])RO\s*[-#]?\s*(\d{1,9})(?![0-9])", re.IGNORECASE)
JOB_MENTION = re.compile(r"(?:\b(?:on|for|of|job|order)\s+)?(?<![A-Za-z0-9])RO\s*[-#]?\s*\d{1,9}(?![0-9])",
                         re.IGNORECASE)
DONE_TAIL = re.compile(
    r"[\s,，.。:：\-–—]*(?:(?:all\s+)?done|finished|completed|已?完工了?|已?完成了?|搞定了?)[\s.。!！]*$",
    re.IGNORECASE)
BARE_NUMBER = re.compile(r"^\s*#?\s*(\d{1,9})\s*$")
VALID_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")  # what core accepts as a part code
COMPLETABLE = frozenset({RepairStatus.ACCEPTED.value, RepairStatus.IN_PROGRESS.value})
PART_CODE = re.compile(r"(?<![A-Za-z0-9-])P-?(\d{2,6})(?![A-Za-z0-9-])", re.IGNORECASE)
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
LABOUR_CHOICES = (30, 45, 60, 90, 120)


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
        code = f"P-{numbered.group(1)}" if numbered else code
        if VALID_CODE.fullmatch(code) and code not in codes:
            codes.append(code)
    result: list[list[Any]] = []
    for code in codes:
        numbered = PART_CODE.fullmatch(code)
        written = rf"P-?{numbered.group(1)}" if numbered else re.escape(code)
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
    """Customer name and address, product and problem of a job."""
    name, address, product, subject = order.customer_code, "", "", ""
    try:
        customer = await turn.core.customers.get(turn.actor, order.customer_code)
        name, address = customer.name, customer.address
    except NotFound:
        pass
    try:
        request = await turn.core.service_desk.get_request(turn.actor, order.service_request_ref)
        subject = request.subject
        if request.serial_number:
            unit = await turn.core.installed.get(turn.actor, request.serial_number)
            product = f"{unit.product_name} ({unit.serial_number})"
    except NotFound:
        pass
    return JobInfo(customer=name, address=address, product=product, subject=subject)


def when_text(turn: Turn, order: RepairOrderOut) -> str:
    """The visit time, or that it is still to be agreed."""
    return moment_label(turn, order.scheduled_at) if order.scheduled_at else turn.t("jobs.no_time")


def status_text(turn: Turn, status: str) -> str:
    """A job status in the person's language."""
    return turn.t(f"jobs.status.{status}")


def accept_button(turn: Turn, order: RepairOrderOut) -> Button:
    """[Accept RO-n]"""
    return Button(title=turn.t("jobs.accept_button", ref=order.ref),
                  payload=payload("accept_job", job_id=order.ref))


class MyJobs(StaffHandler):
    """J7: 'my jobs today' / 'tomorrow' / 'this week', in time order, with [Accept] on new ones."""

    intent = "my_jobs"
    roles = frozenset({Role.TECHNICIAN, Role.MANAGER})

    async def execute(self, turn: Turn) -> list[Reply]:
        """The active jobs of the period (and any left over from before it, and any not yet scheduled)."""
        first, last, period = self._period(turn)
        tz = zone(turn)
        start = datetime.combine(first, time(0), tzinfo=tz)
        end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=tz)
        desk, actor = turn.core.service_desk, turn.actor
        scheduled = (await desk.list_repair_orders(actor, active_only=True, scheduled_from=start,
                                                   scheduled_to=end, limit=50)).items
        active = (await desk.list_repair_orders(actor, active_only=True, limit=100)).items
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
        if turn.actor.role is not Role.TECHNICIAN and order.technician:
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
        if re.search(r"\btomorrow\b|明天", text):
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
        """The job named; else the one talked about if it is new; else the only new one."""
        if turn.entity("decision") == "decline":
            turn.slots["decision"] = "decline"
        named = job_ref(turn.entity("job_id")) or named_job(spoken(turn))
        if named:
            turn.slots["job"] = named
            return
        new = (await turn.core.service_desk.list_repair_orders(
            turn.actor, status=RepairStatus.DISPATCHED.value, limit=20)).items
        remembered = job_ref(turn.state.context.get("job_id"))
        if remembered and any(order.ref == remembered for order in new):
            turn.slots["job"] = remembered
        elif len(new) == 1:
            turn.slots["job"] = new[0].ref
        elif new:
            turn.slots["_choices"] = [[order.ref, await self._title(turn, order)] for order in new[:8]]
        else:
            self.stop(turn, turn.t("jobs.none_to_accept"))

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """A job reference; a reason of a few words."""
        if slot.name == "reason":
            reason = raw.strip()
            if len(reason) < 3:
                raise SlotInvalid(turn.t("jobs.decline_reason_hint"))
            return reason[:500]
        reference = job_ref(raw)
        if reference is None:
            raise SlotInvalid(turn.t("jobs.bad_ref"))
        return reference

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """Which of the new jobs (buttons); why the job is declined."""
        if slot.name == "reason":
            return [turn.say("jobs.ask_decline_reason", ref=turn.slots["job"])]
        choices: list[list[str]] = turn.slots.get("_choices") or []
        return [Reply(text=turn.t("jobs.ask_accept"), buttons=tuple(
            Button(title=title, payload=payload(self.intent, job_id=ref)) for ref, title in choices))]

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
    )
    needs_confirmation = True

    async def prefill(self, turn: Turn) -> None:
        """Job, work summary, parts and labour from the first message."""
        text = spoken(turn)
        named = job_ref(turn.entity("job_id")) or named_job(text)
        if named:
            await self._take(turn, named, explicit=True)
        else:
            await self._guess(turn)
        self._read(turn, text)
        minutes = turn.entity("labour")
        if minutes and minutes.isdigit():
            turn.slots["labour"] = int(minutes)

    async def validate(self, turn: Turn, slot: Slot, raw: str) -> Any:
        """A job of mine that can be completed; what was done; how long it took."""
        if slot.name == "job":
            reference = job_ref(raw)
            if reference is None:
                raise SlotInvalid(turn.t("jobs.bad_ref"))
            problem = await self._take(turn, reference, explicit=False)
            if problem:
                raise SlotInvalid(problem)
            return reference
        if slot.name == "summary":
            self._read(turn, raw)
            if "summary" not in turn.slots:
                if len(raw.strip()) < 3:
                    raise SlotInvalid(turn.t("jobs.summary_too_short"))
                turn.slots["summary"] = raw.strip()[:10_000]
            return turn.slots["summary"]
        minutes = labour_minutes(raw)
        if minutes is None and raw.strip().isdigit() and 0 < int(raw.strip()) <= 24 * 60:
            minutes = int(raw.strip())
        if minutes is None:
            raise SlotInvalid(turn.t("jobs.bad_labour"))
        return minutes

    async def question(self, turn: Turn, slot: Slot) -> list[Reply]:
        """Which job (buttons), what was done, how long (buttons)."""
        if slot.name == "job":
            choices: list[list[str]] = turn.slots.get("_choices") or []
            return [Reply(text=turn.t("jobs.ask_complete"), buttons=tuple(
                Button(title=title, payload=payload(self.intent, job_id=ref)) for ref, title in choices))]
        if slot.name == "labour":
            return [Reply(text=turn.t("jobs.ask_labour"), buttons=tuple(
                Button(title=turn.t("jobs.minutes", minutes=minutes),
                       payload=payload(self.intent, labour=str(minutes)))
                for minutes in LABOUR_CHOICES))]
        return [turn.say(slot.prompt)]

    async def confirmation(self, turn: Turn) -> Reply:
        """Job, work, parts and labour before anything is taken from stock."""
        slots = turn.slots
        used = slots.get("parts", [])
        parts = ", ".join(f"{quantity} × {code}" for code, quantity in used) or turn.t("jobs.no_parts")
        lines = [
            turn.t("jobs.card_title", ref=slots["job"], customer=slots.get("job_customer", "")),
            turn.t("jobs.card_summary", summary=short(slots["summary"], 300)),
            turn.t("jobs.card_parts", parts=parts),
            turn.t("jobs.card_labour", minutes=slots["labour"]),
        ]
        return confirm_card(turn, "\n".join(lines))

    async def execute(self, turn: Turn) -> list[Reply]:
        """Complete through the service desk: stock, charge and the customer's notice happen there."""
        slots = turn.slots
        reference = slots["job"]
        parts = [PartUsedIn(part_code=code, quantity=quantity) for code, quantity in slots.get("parts", [])]
        action = RepairActionIn(action="complete", work_summary=slots["summary"][:10_000],
                                labour_minutes=int(slots["labour"]), parts=parts)
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
        except InvalidTransition:
            current = await turn.core.service_desk.get_repair_order(turn.actor, reference)
            return [turn.say("jobs.cannot_complete", ref=reference, status=status_text(turn, current.status))]
        turn.state.context["job_id"] = order.ref
        if order.in_warranty and order.total_charge == 0:
            charge = turn.t("jobs.free_under_warranty")
        else:
            charge = turn.t("jobs.charge", total=money(order.total_charge), parts=money(order.parts_charge),
                            labour=money(order.labour_charge))
        return [turn.say("jobs.completed", ref=order.ref, charge=charge)]

    # --- helpers ---

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

    def _read(self, turn: Turn, text: str) -> None:
        """Work summary, parts and labour from what the technician wrote."""
        if not text:
            return
        summary = DONE_WORDS.sub("", JOB_MENTION.sub(" ", text), count=1)
        summary = DONE_TAIL.sub("", summary)
        summary = re.sub(r"\s+([,，.。;；:：])", r"\1", re.sub(r"\s{2,}", " ", summary)).strip(" ,，.。:：-")
        if len(LATIN_WORD.findall(summary)) >= 2 or len(CJK.findall(summary)) >= 3:
            turn.slots["summary"] = summary[:10_000]
        found = parts_used(text, turn.parse.values("part"))
        if found:
            known = {code: quantity for code, quantity in turn.slots.get("parts", [])}
            known.update({code: quantity for code, quantity in found})
            turn.slots["parts"] = [[code, quantity] for code, quantity in known.items()]
        minutes = labour_minutes(text)
        if minutes is not None and "labour" not in turn.slots:
            turn.slots["labour"] = minutes


def handlers() -> list[Handler]:
    """One instance of every field-service handler."""
    return [MyJobs(), AcceptJob(), CompleteJob()]
