"""Notification texts: Jinja2 templates per kind and language (notifier/templates/<lang>.yml), per channel."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from jinja2 import Environment, StrictUndefined, Template, pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from bot.messages import Button
from notifier.types import ALL_CHANNELS, EMAIL, SMS, Rendered

__all__ = [
    "DIRECTORY",
    "LANGS",
    "MAX_PAYLOAD_BYTES",
    "SMS_MAX_PARTS",
    "TemplateFailure",
    "Templates",
    "format_date",
    "format_datetime",
    "format_money",
]

DIRECTORY = Path(__file__).with_name("templates")
LANGS = ("en", "zh")
DEFAULT_LANG = "en"
PRODUCT = "crmbot"
# Every SMS template must fit this many parts with realistic values (the tests check it).
SMS_MAX_PARTS = 2
# Telegram's callback data limit; the other chat channels accept more.
MAX_PAYLOAD_BYTES = 64
MAX_BUTTON_TITLE = 64

REQUIRED_PARTS = ("subject", "text", "sms")
OPTIONAL_PARTS = ("html", "footer")
RESERVED_KEYS = ("labels", "layout")
PAYLOAD = re.compile(r"^/([a-z_]{2,40})(\{.*\})?$", re.DOTALL)
_AROUND_CJK_PUNCTUATION = re.compile(r" ?([\u3000-\u303f\uff01-\uff0f\uff1a-\uff20]) ?")
# Curly quotes and the ellipsis serve English too: only a space between one of them and a Chinese
# character goes ("点击 “确认”" → "点击“确认”"), never in "Reply “stop” to stop them".
_CJK = "\u3000-\u303f\u3400-\u9fff\uff00-\uffef"
_SHARED_MARK_AFTER_CJK = re.compile(rf"(?<=[{_CJK}]) (?=[“”‘’…])")
_SHARED_MARK_BEFORE_CJK = re.compile(rf"(?<=[“”‘’…]) (?=[{_CJK}])")

_WEEKDAYS = {
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    "zh": ("周一", "周二", "周三", "周四", "周五", "周六", "周日"),
}
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CURRENCY_SIGNS_ZH = {
    "CNY": "¥",
    "RMB": "¥",
    "USD": "US$",
    "EUR": "€",
    "GBP": "£",
    "HKD": "HK$",
    "JPY": "JP¥",
}
_HTML_LANG = {"en": "en", "zh": "zh-CN"}

# The email frame around every HTML body: inline styles, because many mail clients drop <style>.
_LAYOUT = """<!DOCTYPE html>
<html lang="{{ html_lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ subject }}</title>
</head>
<body style="margin:0;padding:0;background:#f4f5f7;">
<div style="max-width:600px;margin:0 auto;padding:24px 16px;font-family:Helvetica,Arial,'PingFang SC',\
'Microsoft YaHei',sans-serif;font-size:15px;line-height:1.6;color:#1f2328;">
<div style="font-size:18px;font-weight:bold;color:#1d4ed8;padding-bottom:12px;\
border-bottom:1px solid #d0d7de;">{{ product }}</div>
<div style="padding:8px 0;">
{{ body }}
</div>
<div style="padding-top:12px;border-top:1px solid #d0d7de;font-size:12px;color:#656d76;">{{ footer }}</div>
</div>
</body>
</html>"""
_CODE_STYLE = "font-family:Menlo,Consolas,monospace;font-size:28px;font-weight:bold;letter-spacing:6px;"


class TemplateFailure(Exception):
    """A notification cannot be rendered (unknown kind, missing variable, broken template): dead-letter it."""


def _zone(name: str) -> tzinfo:
    """The recipient's time zone; UTC when it is unset or unknown (a bad setting must not lose a message)."""
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _moment(value: Any) -> datetime | None:
    """A datetime from a datetime or an ISO-8601 string ('' or None: unknown); naive means UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO-8601 datetime: {value!r}") from None
    else:
        raise TypeError(f"not a datetime: {value!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _day(value: Any, tz: str) -> date | None:
    """A calendar day from a date, an ISO date, or a datetime (taken in the recipient's time zone)."""
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO-8601 date: {value!r}") from None
    moment = _moment(value)
    return None if moment is None else moment.astimezone(_zone(tz)).date()


def _date_text(day: date, lang: str) -> str:
    if lang == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {_MONTHS_EN[day.month - 1]} {day.year}"


def format_datetime(value: Any, lang: str, tz: str) -> str:
    """'2026-06-15T02:00:00+00:00' in Asia/Shanghai: 'Mon 15 Jun 2026, 10:00', '2026年6月15日 周一 10:00'."""
    moment = _moment(value)
    if moment is None:
        return ""
    local = moment.astimezone(_zone(tz))
    weekday = _WEEKDAYS["zh" if lang == "zh" else "en"][local.weekday()]
    if lang == "zh":
        return f"{_date_text(local.date(), lang)} {weekday} {local:%H:%M}"
    return f"{weekday} {_date_text(local.date(), lang)}, {local:%H:%M}"


def format_date(value: Any, lang: str, tz: str = "UTC") -> str:
    """'2026-06-15' → '15 Jun 2026' / '2026年6月15日' ('' stays '')."""
    day = _day(value, tz)
    return "" if day is None else _date_text(day, lang)


def _amount(value: Any) -> Decimal:
    """An amount as a Decimal; junk raises (a wrong charge must not be shown as 'nothing to pay')."""
    if isinstance(value, bool):
        raise TypeError(f"not an amount: {value!r}")
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return amount


def format_money(value: Any, currency: str, lang: str) -> str:
    """1234.5 CNY → 'CNY 1,234.50' in English, '¥1,234.50' in Chinese (other currencies by code)."""
    amount = _amount(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    number = f"{abs(amount):,.2f}"
    sign = "-" if amount < 0 else ""
    code = currency.strip().upper()
    if not code:
        return f"{sign}{number}"
    if lang == "zh":
        symbol = _CURRENCY_SIGNS_ZH.get(code)
        return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code}"
    return f"{code} {sign}{number}"


def _tidy(text: str) -> str:
    """Trailing blanks off every line, at most one empty line in a row, no blank lines around the text."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _one_line(text: str) -> str:
    """Lines joined by single spaces, but none next to full-width punctuation (“，”, “。”, “（” …)."""
    joined = _AROUND_CJK_PUNCTUATION.sub(r"\1", " ".join(text.split()))
    return _SHARED_MARK_BEFORE_CJK.sub("", _SHARED_MARK_AFTER_CJK.sub("", joined))


def _paragraphs(text: str) -> Markup:
    """Plain text as escaped HTML: blank lines part paragraphs, line breaks stay, indented lines stand out."""
    blocks: list[Markup] = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if all(line.startswith("    ") for line in lines):
            inner = Markup("<br>\n").join(line.strip() for line in lines)
            blocks.append(Markup('<p style="{}">{}</p>').format(_CODE_STYLE, inner))
        else:
            blocks.append(Markup("<p>{}</p>").format(Markup("<br>\n").join(lines)))
    return Markup("\n").join(blocks)


def _strings(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise TemplateFailure(f"{where}: expected a mapping of texts")
    return {str(key): item for key, item in value.items()}


class Templates:
    """The notification catalogs, loaded once; templates compile on first use and stay compiled."""

    def __init__(self, directory: Path = DIRECTORY) -> None:
        self._sources: dict[str, dict[str, dict[str, str]]] = {}
        self._labels: dict[str, dict[str, dict[str, str]]] = {}
        self._layout: dict[str, dict[str, str]] = {}
        for lang in LANGS:
            path = directory / f"{lang}.yml"
            if lang == DEFAULT_LANG or path.exists():
                self._load(lang, path)
                # Each area keeps its own catalog beside the main one: `surveys.en.yml`, `alerts.zh.yml`, …
                for extra in sorted(directory.glob(f"*.{lang}.yml")):
                    self._load_more(lang, extra)
        self._compiled: dict[tuple[str, str, str], Template] = {}
        self._text_env = self._environment(autoescape=False)
        self._html_env = self._environment(autoescape=True)
        self._frame = self._html_env.from_string(_LAYOUT)

    # --- public API -------------------------------------------------------------------------------

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages with a catalog."""
        return tuple(self._sources)

    def kinds(self, lang: str = DEFAULT_LANG) -> frozenset[str]:
        """The notification kinds a language defines."""
        return frozenset(self._sources.get(lang, {}))

    def parts(self, lang: str) -> dict[str, frozenset[str]]:
        """Each kind's parts ('subject', 'text', 'sms', 'html', 'footer', 'buttons.0.title', …)."""
        return {kind: frozenset(parts) for kind, parts in self._sources.get(lang, {}).items()}

    def label_groups(self, lang: str) -> dict[str, frozenset[str]]:
        """The label groups and their values a language defines (the tests compare the catalogs)."""
        return {group: frozenset(values) for group, values in self._labels.get(lang, {}).items()}

    def label(self, lang: str, group: str, value: Any) -> str:
        """A stored value in the reader's words ('in_progress' → 'in progress'); the raw value if unknown."""
        labels = self._labels.get(lang if lang in self._labels else DEFAULT_LANG, {})
        text = str(value)
        return labels.get(str(group), {}).get(text, text)

    def render(self, kind: str, channel: str, lang: str, context: Mapping[str, Any], tz: str) -> Rendered:
        """`kind` for one channel (email, sms, telegram, slack, web) in `lang`, times in the zone `tz`.

        Email gets subject, plain text (with the footer) and HTML; SMS the short text; chat channels the
        subject as the first line of the text, and the buttons. Raises TemplateFailure when it cannot.
        """
        if channel not in ALL_CHANNELS:
            raise TemplateFailure(f"notification {kind!r}: unknown channel {channel!r}")
        if lang not in self._sources or kind not in self._sources[lang]:
            lang = DEFAULT_LANG
        if kind not in self._sources[lang]:
            raise TemplateFailure(f"unknown notification kind {kind!r}")
        variables = {**context, "_lang": lang, "_tz": tz}
        subject = _one_line(self._render(lang, kind, "subject", variables))
        if channel == SMS:
            return Rendered(subject=subject, text=_one_line(self._render(lang, kind, "sms", variables)))
        text = _tidy(self._render(lang, kind, "text", variables))
        if channel == EMAIL:
            footer = _one_line(self._render(lang, kind, "footer", variables))
            return Rendered(
                subject=subject,
                text=f"{text}\n\n-- \n{footer}",
                html=self._html(lang, kind, subject, text, footer, variables),
            )
        return Rendered(
            subject=subject, text=f"{subject}\n\n{text}", buttons=self._buttons(lang, kind, variables)
        )

    # --- loading ----------------------------------------------------------------------------------

    def _load(self, lang: str, path: Path) -> None:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateFailure(f"{path}: cannot load: {exc}") from exc
        if not isinstance(raw, dict):
            raise TemplateFailure(f"{path}: expected a mapping of notification kinds")
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            raise TemplateFailure(f"{path}: 'labels' must map groups to values")
        self._labels[lang] = {
            str(group): _strings(values, f"{path}: labels.{group}") for group, values in labels.items()
        }
        self._layout[lang] = _strings(raw.get("layout") or {}, f"{path}: layout")
        if "footer" not in self._layout[lang]:
            raise TemplateFailure(f"{path}: layout.footer is missing")
        kinds: dict[str, dict[str, str]] = {}
        for kind, spec in raw.items():
            if kind in RESERVED_KEYS:
                continue
            kinds[str(kind)] = self._parts(spec, f"{path}: {kind}")
        self._sources[lang] = kinds

    def _load_more(self, lang: str, path: Path) -> None:
        """Kinds (and labels) from an area's catalog; a kind defined twice is an error, not an override."""
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise TemplateFailure(f"{path}: cannot load: {exc}") from exc
        if not isinstance(raw, dict):
            raise TemplateFailure(f"{path}: expected a mapping of notification kinds")
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            raise TemplateFailure(f"{path}: 'labels' must map groups to values")
        for group, values in labels.items():
            self._labels[lang].setdefault(str(group), {}).update(_strings(values, f"{path}: labels.{group}"))
        for kind, spec in raw.items():
            if kind in RESERVED_KEYS:
                continue
            if str(kind) in self._sources[lang]:
                raise TemplateFailure(f"{path}: kind {kind!r} is already defined in another catalog")
            self._sources[lang][str(kind)] = self._parts(spec, f"{path}: {kind}")

    @staticmethod
    def _parts(spec: Any, where: str) -> dict[str, str]:
        if not isinstance(spec, dict):
            raise TemplateFailure(f"{where}: expected a mapping of parts")
        unknown = set(spec) - {*REQUIRED_PARTS, *OPTIONAL_PARTS, "buttons"}
        if unknown:
            raise TemplateFailure(f"{where}: unknown parts {sorted(unknown)}")
        parts: dict[str, str] = {}
        for name in (*REQUIRED_PARTS, *OPTIONAL_PARTS):
            if name in spec:
                if not isinstance(spec[name], str):
                    raise TemplateFailure(f"{where}.{name}: expected a text")
                parts[name] = spec[name]
            elif name in REQUIRED_PARTS:
                raise TemplateFailure(f"{where}: part {name!r} is missing")
        buttons = spec.get("buttons") or []
        if not isinstance(buttons, list):
            raise TemplateFailure(f"{where}.buttons: expected a list")
        for index, button in enumerate(buttons):
            fields = _strings(button, f"{where}.buttons[{index}]")
            if set(fields) != {"title", "payload"}:
                raise TemplateFailure(f"{where}.buttons[{index}]: expected exactly title and payload")
            parts[f"buttons.{index}.title"] = fields["title"]
            parts[f"buttons.{index}.payload"] = fields["payload"]
        return parts

    def _environment(self, *, autoescape: bool) -> Environment:
        environment = Environment(
            autoescape=autoescape,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        # Compact, readable JSON in button payloads: /accept_job{"job_id":"RO-5"}.
        environment.policies["json.dumps_kwargs"] = {
            "sort_keys": True,
            "ensure_ascii": False,
            "separators": (",", ":"),
        }

        @pass_context
        def local_dt(context: Context, value: Any) -> str:
            return format_datetime(value, context["_lang"], context["_tz"])

        @pass_context
        def local_date(context: Context, value: Any) -> str:
            return format_date(value, context["_lang"], context["_tz"])

        @pass_context
        def money(context: Context, value: Any, currency: str = "") -> str:
            return format_money(value, currency, context["_lang"])

        @pass_context
        def label(context: Context, group: str, value: Any) -> str:
            return self.label(context["_lang"], group, value)

        @pass_context
        def label_filter(context: Context, value: Any, group: str) -> str:
            return self.label(context["_lang"], group, value)

        environment.filters.update(
            local_dt=local_dt, local_date=local_date, money=money, amount=_amount, label=label_filter
        )
        environment.globals.update(label=label, product=PRODUCT)
        return environment

    # --- rendering --------------------------------------------------------------------------------

    def _source(self, lang: str, kind: str, part: str) -> str:
        parts = self._sources[lang][kind]
        if part == "footer" and part not in parts:
            return self._layout[lang]["footer"]
        return parts[part]

    def _render(self, lang: str, kind: str, part: str, variables: Mapping[str, Any]) -> str:
        key = (lang, kind, part)
        try:
            template = self._compiled.get(key)
            if template is None:
                environment = self._html_env if part == "html" else self._text_env
                template = environment.from_string(self._source(lang, kind, part))
                self._compiled[key] = template
            return template.render(variables)
        except Exception as exc:  # undefined variable, syntax error, a filter refusing its value …
            raise TemplateFailure(
                f"notification {kind!r} ({lang}), part {part!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def _html(
        self, lang: str, kind: str, subject: str, text: str, footer: str, variables: Mapping[str, Any]
    ) -> str:
        if "html" in self._sources[lang][kind]:
            body = Markup(self._render(lang, kind, "html", variables).strip())
        else:
            body = _paragraphs(text)
        return self._frame.render(
            html_lang=_HTML_LANG.get(lang, lang), subject=subject, product=PRODUCT, body=body, footer=footer
        )

    def _buttons(self, lang: str, kind: str, variables: Mapping[str, Any]) -> tuple[Button, ...]:
        buttons: list[Button] = []
        index = 0
        while f"buttons.{index}.title" in self._sources[lang][kind]:
            title = _one_line(self._render(lang, kind, f"buttons.{index}.title", variables))
            payload = self._render(lang, kind, f"buttons.{index}.payload", variables).strip()
            problem = _payload_problem(payload)
            if problem is None and not 0 < len(title) <= MAX_BUTTON_TITLE:
                problem = f"title must have 1 to {MAX_BUTTON_TITLE} characters"
            if problem is not None:
                raise TemplateFailure(f"notification {kind!r} ({lang}), button {index}: {problem}")
            buttons.append(Button(title=title, payload=payload))
            index += 1
        return tuple(buttons)


def _payload_problem(payload: str) -> str | None:
    """Why a button payload would not work as a bot command, or None when it does."""
    if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
        return f"payload {payload!r} is longer than {MAX_PAYLOAD_BYTES} bytes"
    match = PAYLOAD.match(payload)
    if match is None:
        return f"payload {payload!r} is not /intent{{json}}"
    if match.group(2):
        try:
            values = json.loads(match.group(2))
        except json.JSONDecodeError:
            return f"payload {payload!r} carries invalid JSON"
        if not isinstance(values, dict):
            return f"payload {payload!r} carries no JSON object"
    return None
