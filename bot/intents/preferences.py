"""Notification settings from chat: "stop warranty reminders", "email me instead", "no messages after 10pm",
"unmute reminders", "what notifications do I get?" — and the same in Chinese.

What the person wants is read from the message (the entities `notification_kind`, `channel` and `time`, and
a few words: "stop", "again", "after"…); anything missing is asked with buttons; every change is confirmed
before it is made through `core.preferences`, as the person speaking.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar

from bot.dialogue import CONFIRM, Handler, Slot, SlotInvalid, Turn, cue
from bot.intents.staff import payload
from bot.messages import Button, Reply
from core.domain.enums import Role
from core.domain.quiet import parse_quiet_hours
from core.services.preferences import (
    CHANNELS,
    MUTABLE_KINDS,
    ChannelNotLinked,
    Preferences,
    UnknownChannel,
    UnknownKind,
)

INTENT = "notification_settings"
KIND_ENTITY = "notification_kind"
CHANNEL_ENTITY = "channel"
QUIET_ENTITY = "quiet"
# "reminders" / "提醒" on their own: the reminders this person's role gets.
REMINDERS = "reminders"
REMINDER_KINDS = {"customer": ("warranty_expiring", "maintenance_due"), "staff": ("task_due",)}
ALL_WORDS = cue("all|every|everything|any|anything", "所有|全部|一切|任何")
# "stop", "don't", "no more", "mute" … (not "unmute": \b keeps it out).
NEGATIVE = cue(
    r"stop|stopped|don'?t|dont|do not|no more|no longer|never|mute|silence|turn off|switch off|"
    r"disable|unsubscribe|opt out|quit|hate|enough|without|no",
    "不要|别|不用|停止|停掉|停发|关掉|关闭|取消|屏蔽|不想|不再|退订|静音|不需要",
)
# Within the clause before a channel: that channel is not wanted.
NOT_THIS = re.compile(
    NEGATIVE.pattern + r"|\b(?:not|instead of|rather than|than|except)\b|而不是|不用|别用|除了",
    re.IGNORECASE,
)
CLAUSE_BREAK = re.compile(r"[,，.。;；!！?？]|\bbut\b|但是|可是")
AGAIN = cue(
    r"unmute|resume|turn (?:\w+ )?back on|turn on|switch on|enable|start|again|resubscribe|back",
    "恢复|重新|打开|开启|继续|订阅",
)
QUESTION = cue("what|which|show|list|current|do i (?:get|receive)", r"\?|？|哪些|什么|查看|看看|现在|目前|吗")
AFTER = cue("after|from|past|since", "以后|之后|后|从|起")
BEFORE = cue("before|until|till|til", "以前|之前|前|到")
WINDOW = re.compile(
    r"(?<!\d)([01]?\d|2[0-3])[:：.]([0-5]\d)\s*(?:-|–|—|~|～|to|到|至)\s*([01]?\d|2[0-3])[:：.]([0-5]\d)(?!\d)"
)
CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
QUIET_CHOICES = (("22:00", "07:00"), ("21:00", "08:00"), ("23:00", "07:00"))


def joined(turn: Turn, items: list[str]) -> str:
    """'a, b and c' / 'a、b和c'."""
    if len(items) <= 1:
        return "".join(items)
    return turn.t("preferences.comma").join(items[:-1]) + turn.t("preferences.and") + items[-1]


def kind_names(turn: Turn, kinds: list[str]) -> str:
    """The kinds in the person's words."""
    return joined(turn, [turn.t(f"preferences.kinds.{kind}") for kind in kinds])


def channel_names(turn: Turn, channels: list[str] | tuple[str, ...]) -> str:
    """The channels in the person's words."""
    return joined(turn, [turn.t(f"preferences.channels.{channel}") for channel in channels])


def expand_kinds(turn: Turn, values: list[str]) -> list[str]:
    """Entity values → notification kinds ("reminders" becomes the reminders of the person's role)."""
    kinds: list[str] = []
    for value in values:
        value = value.strip().lower()
        if value == REMINDERS:
            group = "customer" if turn.actor.role is Role.CUSTOMER else "staff"
            found = list(REMINDER_KINDS[group])
        else:
            found = [value]
        kinds += [kind for kind in found if kind not in kinds]
    return kinds


def clock_of(value: str) -> str | None:
    """'HH:MM' from an NLU time ('2026-06-15T22:00:00+08:00', already on the person's wall clock)."""
    raw = value.strip()
    if CLOCK.match(raw):
        hours, minutes = raw.split(":")
        return f"{int(hours):02d}:{minutes}"
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if len(raw) == 10:
        return None  # a date, not a time of day
    return f"{moment:%H:%M}"


def quiet_times(turn: Turn) -> tuple[str | None, str | None, bool]:
    """(start, end, said): the quiet window the message gives; one side may be missing."""
    given = turn.entity(QUIET_ENTITY)
    text = turn.text if not turn.text.startswith("/") else ""
    window = WINDOW.search(given or text)
    if window is not None:
        start = f"{int(window.group(1)):02d}:{window.group(2)}"
        end = f"{int(window.group(3)):02d}:{window.group(4)}"
        return start, end, True
    found = [item for item in turn.parse.entities if item.entity == "time"]
    found.sort(key=lambda item: item.start)
    clocks = [clock for clock in (clock_of(item.value) for item in found) if clock is not None]
    if len(clocks) >= 2:
        return clocks[0], clocks[1], True
    if len(clocks) == 1:
        clock = clocks[0]
        item = found[0]
        before_text = text[max(0, item.start - 12) : item.start]
        after_text = text[item.end : item.end + 6]
        if AFTER.search(before_text) or AFTER.search(after_text[:3]):
            return clock, None, True
        if BEFORE.search(before_text) or BEFORE.search(after_text[:3]):
            return None, clock, True
        # No word says which side: an evening hour starts the quiet time, a morning hour ends it.
        return (clock, None, True) if int(clock[:2]) >= 12 else (None, clock, True)
    return None, None, False


def split_channels(turn: Turn) -> tuple[list[str], list[str]]:
    """(wanted, avoided): the channels named, each read in its own clause ("email me, not SMS",
    "用邮件，不要用短信", "stop emailing me"); a button payload names wanted channels only."""
    text = turn.text if not turn.text.startswith("/") else ""
    wanted: list[str] = []
    avoided: list[str] = []
    found = sorted(
        (item for item in turn.parse.entities if item.entity == CHANNEL_ENTITY), key=lambda item: item.start
    )
    for item in found:
        name = item.value.strip().lower()
        start = min(item.start, len(text))
        clause = CLAUSE_BREAK.split(text[:start])[-1] if text else ""
        target = avoided if NOT_THIS.search(clause) else wanted
        if name not in wanted and name not in avoided:
            target.append(name)
    return wanted, avoided


def read_request(turn: Turn) -> dict[str, Any]:
    """What the message asks for: {"op": show|mute|unmute|channel|avoid|quiet, "kinds", "channels", …}."""
    text = turn.text if not turn.text.startswith("/") else ""
    kinds = expand_kinds(turn, turn.parse.values(KIND_ENTITY))
    channels, avoided = split_channels(turn)
    start, end, timed = quiet_times(turn)
    negative = bool(NEGATIVE.search(text))
    again = bool(AGAIN.search(text))
    op = turn.entity("op")
    if op in ("show", "mute", "unmute", "channel", "avoid", "quiet"):
        pass
    elif timed:
        op = "quiet"
    elif channels or avoided:
        op = "channel" if channels else "avoid"
    elif kinds or ALL_WORDS.search(text) or negative or again:
        if negative and not again:
            op = "mute"
        elif again or (kinds and not QUESTION.search(text)):
            op = "unmute"
        else:
            op = "show"
    else:
        op = "show"
    plan: dict[str, Any] = {"op": op}
    if kinds:
        plan["kinds"] = kinds
    elif op in ("mute", "unmute") and ALL_WORDS.search(text):
        plan["all"] = True
    if channels:
        plan["channels"] = channels
    if avoided:
        plan["avoided"] = avoided
    if op == "quiet":
        plan["start"], plan["end"] = start, end
    return plan


class NotificationSettings(Handler):
    """Mute or unmute kinds of message, choose the channel first, set quiet hours, or say how it stands."""

    intent = INTENT
    needs_confirmation = True
    KINDS: ClassVar[Slot] = Slot("kinds", "preferences.ask_mute", entity=KIND_ENTITY)
    CHANNELS: ClassVar[Slot] = Slot("channels", "preferences.ask_channel", entity=CHANNEL_ENTITY)
    QUIET: ClassVar[Slot] = Slot("quiet", "preferences.ask_quiet", entity=QUIET_ENTITY)
    slots = (KINDS, CHANNELS, QUIET)

    # Each question belongs to one kind of change: only the one asked for is asked, while it is missing.

    def needs_kinds(self, turn: Turn) -> bool:
        """Which kinds, to mute or unmute."""
        return turn.slots.get("op") in ("mute", "unmute") and not turn.slots.get("kinds")

    def needs_channels(self, turn: Turn) -> bool:
        """Which channel first, to choose or avoid one."""
        return turn.slots.get("op") in ("channel", "avoid") and not turn.slots.get("channels")

    def needs_quiet(self, turn: Turn) -> bool:
        """Both ends of the quiet hours."""
        return turn.slots.get("op") == "quiet" and not (turn.slots.get("start") and turn.slots.get("end"))

    async def prefill(self, turn: Turn) -> None:
        """Read the request, fill in what it leaves to the current settings, and stop early when there is
        nothing to change or it cannot be done."""
        plan = read_request(turn)
        current = await turn.core.preferences.get(turn.actor)
        op = plan["op"]
        turn.slots["op"] = op
        if op == "show":
            self.stop(turn, summary(turn, current))
            return
        if op in ("mute", "unmute"):
            kinds = list(plan.get("kinds", []))
            if plan.get("all"):
                kinds = list(current.receiving if op == "mute" else current.muted)
            if op == "unmute" and not kinds and not current.muted:
                self.stop(turn, turn.t("preferences.nothing_muted"))
                return
            if kinds:
                self._set_kinds(turn, current, kinds)
        elif op in ("channel", "avoid"):
            if plan.get("kinds"):
                self.note(turn, turn.t("preferences.per_kind_note"))
            if plan.get("channels") or plan.get("avoided"):
                self._set_channels(
                    turn, current, list(plan.get("channels", [])), list(plan.get("avoided", []))
                )
        elif op == "quiet":
            self._set_quiet(turn, current, plan.get("start"), plan.get("end"))

    async def correct(self, turn: Turn) -> list[str]:
        """At the card, another settings request ("晚上十点以后别发消息" after "不要保修提醒") is read afresh
        and replaces the one not yet confirmed: the new card says exactly what will change."""
        if turn.state.awaiting != CONFIRM or turn.parse.intent != self.intent:
            return await super().correct(turn)
        before = dict(turn.slots)
        turn.slots.clear()
        await self.prefill(turn)
        return [] if turn.slots == before else ["op"]

    def _set_kinds(self, turn: Turn, current: Preferences, kinds: list[str]) -> None:
        unknown = [kind for kind in kinds if kind not in MUTABLE_KINDS]
        if unknown:
            text = (
                turn.t("preferences.cannot_mute")
                if all(kind == "link_code" for kind in unknown)
                else turn.t("preferences.unknown_kind", kinds=kind_names(turn, list(MUTABLE_KINDS)))
            )
            self.stop(turn, text)
            return
        if turn.slots["op"] == "mute":
            todo = [kind for kind in kinds if kind not in current.muted]
            if not todo:
                self.stop(turn, turn.t("preferences.already_muted", kinds=kind_names(turn, kinds)))
                return
        else:
            todo = [kind for kind in kinds if kind in current.muted]
            if not todo:
                self.stop(turn, turn.t("preferences.already_on", kinds=kind_names(turn, kinds)))
                return
        turn.slots["kinds"] = todo

    def _set_channels(
        self, turn: Turn, current: Preferences, channels: list[str], avoided: list[str] | None = None
    ) -> None:
        """Wanted channels first, avoided ones last; refuse channels that do not reach the person."""
        avoided = [name for name in avoided or turn.slots.get("avoided", []) if name not in channels]
        unknown = [name for name in [*channels, *avoided] if name not in CHANNELS]
        missing = [name for name in channels if name in CHANNELS and name not in current.reachable]
        if unknown or missing:
            self.stop(turn, not_linked_text(turn, [*unknown, *missing], list(current.reachable)))
            return
        # An avoided channel the person is not on needs no moving: it is never used anyway.
        avoided = [name for name in avoided if name in current.reachable]
        first = channels or [name for name in current.reachable if name not in avoided]
        if not first:
            if avoided:
                only = channel_names(turn, avoided[:1])
                self.stop(turn, turn.t("preferences.only_channel", channel=only))
            else:
                self.stop(turn, not_linked_text(turn, channels, list(current.reachable)))
            return
        reachable = list(current.reachable)
        if (
            current.channel_order
            and reachable[: len(first)] == first
            and (not avoided or reachable[-len(avoided) :] == avoided)
        ):
            self.stop(turn, turn.t("preferences.already_first", channels=channel_names(turn, first)))
            return
        turn.slots["channels"] = first
        turn.slots["avoided"] = avoided

    def _set_quiet(self, turn: Turn, current: Preferences, start: str | None, end: str | None) -> None:
        # One side given ("no messages after 10pm"): the other stays as it is now (theirs or the default).
        window = parse_quiet_hours(current.quiet_hours) if current.quiet_hours else None
        default_start, default_end = (
            ("21:00", "08:00")
            if window is None
            else (
                f"{window[0]:%H:%M}",
                f"{window[1]:%H:%M}",
            )
        )
        if start is None and end is None:
            return
        turn.slots["start"] = start or default_start
        turn.slots["end"] = end or default_end
        turn.slots["quiet"] = f"{turn.slots['start']}-{turn.slots['end']}"

    async def extract_kinds(self, turn: Turn) -> list[str]:
        """Kinds named in the answer (several, or "all")."""
        current = await turn.core.preferences.get(turn.actor)
        kinds = expand_kinds(turn, turn.parse.values(KIND_ENTITY))
        if not kinds and ALL_WORDS.search(turn.text):
            kinds = list(current.receiving if turn.slots.get("op") == "mute" else current.muted)
        if not kinds:
            raise SlotInvalid(turn.t("preferences.kind_hint"))
        self._set_kinds(turn, current, kinds)
        chosen: list[str] = turn.slots.get("kinds") or kinds
        return chosen

    async def extract_channels(self, turn: Turn) -> list[str]:
        """Channels named in the answer, in order."""
        current = await turn.core.preferences.get(turn.actor)
        channels = [value.strip().lower() for value in turn.parse.values(CHANNEL_ENTITY)]
        if not channels:
            raise SlotInvalid(turn.t("preferences.channel_hint"))
        self._set_channels(turn, current, channels)
        chosen: list[str] = turn.slots.get("channels") or channels
        return chosen

    async def extract_quiet(self, turn: Turn) -> str:
        """Two times: the start and the end of the quiet hours."""
        current = await turn.core.preferences.get(turn.actor)
        start, end, timed = quiet_times(turn)
        if not timed or start is None or end is None:
            raise SlotInvalid(turn.t("preferences.quiet_hint"))
        self._set_quiet(turn, current, start, end)
        return str(turn.slots["quiet"])

    async def ask_kinds(self, turn: Turn) -> list[Reply]:
        """The kinds that can change, as buttons."""
        current = await turn.core.preferences.get(turn.actor)
        op = turn.slots.get("op")
        choices = list(current.receiving) if op == "mute" else list(current.muted)
        buttons = tuple(
            Button(turn.t(f"preferences.buttons.{kind}"), payload(INTENT, notification_kind=kind, op=str(op)))
            for kind in choices
        )
        key = "preferences.ask_mute" if op == "mute" else "preferences.ask_unmute"
        return [Reply(text=turn.t(key), buttons=buttons)]

    async def ask_channels(self, turn: Turn) -> list[Reply]:
        """The channels that reach the person (not one they want to avoid), as buttons."""
        current = await turn.core.preferences.get(turn.actor)
        buttons = tuple(
            Button(
                turn.t(f"preferences.channels.{name}"),
                payload(INTENT, channel=name, op="channel"),
            )
            for name in current.reachable
            if name not in turn.slots.get("avoided", [])
        )
        return [Reply(text=turn.t("preferences.ask_channel"), buttons=buttons)]

    async def ask_quiet(self, turn: Turn) -> list[Reply]:
        """Common quiet hours, as buttons."""
        buttons = tuple(
            Button(
                turn.t("preferences.quiet_button", start=start, end=end),
                payload(INTENT, quiet=f"{start}-{end}"),
            )
            for start, end in QUIET_CHOICES
        )
        return [Reply(text=turn.t("preferences.ask_quiet"), buttons=buttons)]

    async def confirmation(self, turn: Turn) -> Reply:
        """What will change, with [Yes] [No]."""
        op = turn.slots.get("op")
        notes = self.notes(turn)
        if op == "mute":
            text = turn.t("preferences.confirm_mute", kinds=kind_names(turn, turn.slots["kinds"]))
        elif op == "unmute":
            text = turn.t("preferences.confirm_unmute", kinds=kind_names(turn, turn.slots["kinds"]))
        elif turn.slots.get("avoided"):
            text = turn.t(
                "preferences.confirm_avoid",
                channels=channel_names(turn, turn.slots["channels"]),
                avoided=channel_names(turn, turn.slots.get("avoided", [])),
            )
        elif op in ("channel", "avoid"):
            text = turn.t("preferences.confirm_channel", channels=channel_names(turn, turn.slots["channels"]))
        else:
            text = turn.t("preferences.confirm_quiet", start=turn.slots["start"], end=turn.slots["end"])
            notes.append(turn.t("preferences.urgent_note"))
        buttons = (
            Button(turn.t("preferences.yes"), "/affirm"),
            Button(turn.t("preferences.no"), "/deny"),
        )
        return Reply(text="\n".join([text, *notes]), buttons=buttons)

    async def execute(self, turn: Turn) -> list[Reply]:
        """Make the change as the person speaking; say what it is now."""
        service = turn.core.preferences
        op = turn.slots.get("op")
        try:
            if op == "mute":
                kinds = list(turn.slots["kinds"])
                await service.mute(turn.actor, kinds)
                example = turn.t(f"preferences.kinds.{kinds[0]}")
                return [turn.say("preferences.done_mute", kinds=kind_names(turn, kinds), example=example)]
            if op == "unmute":
                kinds = list(turn.slots["kinds"])
                await service.unmute(turn.actor, kinds)
                return [turn.say("preferences.done_unmute", kinds=kind_names(turn, kinds))]
            if op in ("channel", "avoid"):
                first = list(turn.slots["channels"])
                avoided = list(turn.slots.get("avoided", []))
                reachable = (await service.get(turn.actor)).reachable
                rest = [name for name in reachable if name not in first and name not in avoided]
                await service.set_channel_order(turn.actor, [*first, *rest, *avoided])
                return [turn.say("preferences.done_channel", channels=channel_names(turn, first))]
            start, end = str(turn.slots["start"]), str(turn.slots["end"])
            view = await service.set_quiet_hours(turn.actor, start, end)
            return [turn.say("preferences.done_quiet", start=start, end=end, zone=view.timezone)]
        except ChannelNotLinked as refused:
            return [Reply(text=not_linked_text(turn, refused.channels, refused.reachable))]
        except UnknownChannel as refused:
            return [Reply(text=not_linked_text(turn, refused.channels, []))]
        except UnknownKind as refused:
            if refused.always and len(refused.always) == len(refused.kinds):
                return [turn.say("preferences.cannot_mute")]
            return [turn.say("preferences.unknown_kind", kinds=kind_names(turn, list(MUTABLE_KINDS)))]


def not_linked_text(turn: Turn, channels: list[str], reachable: list[str]) -> str:
    """'I can't reach you on Slack: … I can reach you on email.' in the person's language."""
    names = [turn.t(f"preferences.channels.{name}") if name in CHANNELS else name for name in channels]
    reach = (
        turn.t("preferences.reach", channels=channel_names(turn, reachable))
        if reachable
        else turn.t("preferences.reach_none")
    )
    return " ".join(
        [
            turn.t("preferences.not_linked", channels=joined(turn, names), reach=reach),
            turn.t("preferences.link_hint"),
        ]
    )


def summary(turn: Turn, current: Preferences) -> str:
    """ "What notifications do I get?" """
    lines = [turn.t("preferences.summary_title")]
    if current.reachable:
        lines.append(turn.t("preferences.summary_channels", channels=channel_names(turn, current.reachable)))
    else:
        lines.append(turn.t("preferences.summary_no_channel"))
    window = parse_quiet_hours(current.quiet_hours) if current.quiet_hours else None
    if window is None:
        lines.append(turn.t("preferences.summary_no_quiet"))
    else:
        lines.append(
            turn.t(
                "preferences.summary_quiet",
                start=f"{window[0]:%H:%M}",
                end=f"{window[1]:%H:%M}",
                default=current.quiet_default,
            )
        )
    receiving = list(current.receiving)
    if receiving:
        lines.append(turn.t("preferences.summary_on", kinds=kind_names(turn, receiving)))
    else:
        lines.append(turn.t("preferences.summary_none_on"))
    if current.muted:
        lines.append(turn.t("preferences.summary_muted", kinds=kind_names(turn, list(current.muted))))
    lines.append(turn.t("preferences.summary_hint"))
    return "\n".join(lines)


def handlers() -> list[Handler]:
    """This module's handlers."""
    return [NotificationSettings()]


__all__ = ["NotificationSettings", "handlers", "read_request"]
