"""Charts drawn for notifications: the digest's pipeline funnel, as a small PNG in the reader's language.

Drawn with matplotlib's Agg canvas on a private Figure (no pyplot: no global state, safe beside the event
loop). Chinese labels need a CJK font; when matplotlib finds none, the labels are drawn in English rather
than as empty boxes (the alt text stays in the reader's language: it is text, not pixels).
"""

from __future__ import annotations

import io
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.charting import CJK_FONTS, cjk_font
from notifier.templates import format_date, format_money

__all__ = ["CJK_FONTS", "STAGE_LABELS", "chart_labels", "cjk_font", "digest_chart", "draw_digest_chart"]

log = logging.getLogger("crmbot.notifier")

WIDTH, HEIGHT, DPI = 8.0, 4.5, 100  # 800 × 450 pixels
# Preferred Simplified Chinese faces first; any other CJK face matplotlib knows is a fallback.
STAGE_LABELS = {
    "en": {
        "qualification": "Qualification",
        "needs_analysis": "Needs analysis",
        "proposal": "Proposal",
        "negotiation": "Negotiation",
    },
    "zh": {
        "qualification": "资格确认",
        "needs_analysis": "需求分析",
        "proposal": "方案报价",
        "negotiation": "商务谈判",
    },
}
TEXTS = {
    "en": {
        "title": "Open pipeline by stage — {day}",
        "deals": "{count} deals",
        "deal": "1 deal",
        "total": "{count} open deals, {amount} in all",
        "alt": "Open pipeline by stage on {day}: {stages}.",
        "alt_stage": "{stage} {count} ({amount})",
    },
    "zh": {
        "title": "各阶段在手商机 — {day}",
        "deals": "{count} 个",
        "deal": "1 个",
        "total": "共 {count} 个在手商机，金额 {amount}",
        "alt": "{day}各阶段在手商机：{stages}。",
        "alt_stage": "{stage} {count} 个（{amount}）",
    },
}
COLOURS = ("#93c5fd", "#60a5fa", "#3b82f6", "#1d4ed8")




def _amount(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return amount if amount.is_finite() else Decimal(0)


def _compact(number: float) -> str:
    text = f"{number:.2f}".rstrip("0").rstrip(".")
    return text if abs(number) < 100 else f"{number:.0f}"


def _short_money(amount: Decimal, currency: str, lang: str) -> str:
    """120000 → 'CNY 120k' / '¥12万': bar labels must stay short (three significant digits)."""
    number = float(f"{float(amount):.3g}")
    if lang == "zh":
        sign = "¥" if currency in ("CNY", "RMB") else f"{currency} "
        for size, unit in ((1e8, "亿"), (1e4, "万")):
            if abs(number) >= size:
                return f"{sign}{_compact(number / size)}{unit}"
        return f"{sign}{_compact(number)}"
    for size, unit in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{currency} {_compact(number / size)}{unit}"
    return f"{currency} {_compact(number)}"


def chart_labels(context: dict[str, Any], lang: str, *, cjk: bool) -> dict[str, Any]:
    """The words the chart is drawn with: the reader's language, or English when Chinese cannot be drawn."""
    drawn = lang if lang in TEXTS and (lang != "zh" or cjk) else "en"
    texts = TEXTS[drawn]
    currency = str(context.get("currency") or "CNY")
    stages = [item for item in context.get("pipeline") or [] if isinstance(item, dict)]
    day = format_date(context.get("day") or "", drawn)
    rows: list[dict[str, Any]] = []
    for item in stages:
        stage = str(item.get("stage") or "")
        count = int(item.get("count") or 0)
        amount = _amount(item.get("amount"))
        rows.append(
            {
                "stage": STAGE_LABELS[drawn].get(stage, stage.replace("_", " ")),
                "count": count,
                "amount": amount,
                "value": (
                    f"{texts['deal'] if count == 1 else texts['deals'].format(count=count)} · "
                    f"{_short_money(amount, currency, drawn)}"
                ),
            }
        )
    total = sum((row["amount"] for row in rows), Decimal(0))
    return {
        "lang": drawn,
        "title": texts["title"].format(day=day),
        "total": texts["total"].format(
            count=sum(row["count"] for row in rows), amount=format_money(total, currency, drawn)
        ),
        "rows": rows,
    }


def _alt(context: dict[str, Any], lang: str) -> str:
    texts = TEXTS[lang if lang in TEXTS else "en"]
    labels = STAGE_LABELS[lang if lang in STAGE_LABELS else "en"]
    currency = str(context.get("currency") or "CNY")
    parts = [
        texts["alt_stage"].format(
            stage=labels.get(str(item.get("stage")), str(item.get("stage"))),
            count=int(item.get("count") or 0),
            amount=format_money(_amount(item.get("amount")), currency, lang),
        )
        for item in context.get("pipeline") or []
        if isinstance(item, dict)
    ]
    separator = "；" if lang == "zh" else "; "
    return texts["alt"].format(day=format_date(context.get("day") or "", lang), stages=separator.join(parts))


def draw_digest_chart(context: dict[str, Any], lang: str, *, font: str | None) -> tuple[bytes, str] | None:
    """The pipeline funnel of a digest as (PNG, alt text), drawn with `font` for Chinese (None: English
    labels); None when there is no open deal to draw."""
    labels = chart_labels(context, lang, cjk=font is not None)
    rows = labels["rows"]
    if not rows or not any(row["count"] for row in rows):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    family = [font, "DejaVu Sans"] if font is not None and labels["lang"] == "zh" else ["DejaVu Sans"]
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.2, 0.1, 0.76, 0.74))
    # A funnel: centred bars, as wide as the stage's amount (its count when no deal has an amount).
    by_amount = any(row["amount"] > 0 for row in rows)
    widths = [float(row["amount"]) if by_amount else float(row["count"]) for row in rows]
    widest = max(widths) or 1.0
    positions = list(range(len(rows)))[::-1]  # the first stage on top
    # A stage with deals but a tiny amount still shows a sliver; an empty stage shows none.
    shown = [
        max(width, widest * 0.02) if row["count"] else 0.0 for width, row in zip(widths, rows, strict=True)
    ]
    axes.barh(
        positions,
        shown,
        left=[(widest - width) / 2 for width in shown],
        height=0.72,
        color=[COLOURS[index % len(COLOURS)] for index in range(len(rows))],
    )
    for position, row in zip(positions, rows, strict=True):
        axes.text(
            widest / 2,
            position,
            row["value"],
            ha="center",
            va="center",
            fontsize=11,
            fontfamily=family,
            color="#0f172a",
            fontweight="bold",
            # Readable on the darkest bar and beside the narrowest one.
            bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )
    axes.set_yticks(positions, [row["stage"] for row in rows], fontsize=11, fontfamily=family)
    axes.set_xlim(0, widest)
    axes.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        axes.spines[side].set_visible(False)
    axes.tick_params(axis="y", length=0)
    figure.text(0.02, 0.93, labels["title"], fontsize=14, fontweight="bold", fontfamily=family)
    figure.text(0.02, 0.03, labels["total"], fontsize=10, color="#475569", fontfamily=family)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buffer.getvalue(), _alt(context, lang)


def digest_chart(context: dict[str, Any], lang: str) -> tuple[bytes, str] | None:
    """The Notifier's image maker for `digest`: the pipeline funnel, labelled in `lang` when it can be."""
    return draw_digest_chart(context, lang, font=cjk_font() if lang == "zh" else None)
