"""What every chart needs before drawing: a font that can write Chinese, if this machine has one."""

from __future__ import annotations

from functools import lru_cache

# Channels that can show a chart image (the terminal gets the text only); same set as the CSAT report's.
IMAGE_CHANNELS = frozenset({"telegram", "slack", "web", "rest"})

# Preferred first; Debian's fonts-noto-cjk (installed by .ci/run) provides the first one.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "Noto Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "SimHei",
    "Noto Serif CJK SC",
)


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The name of a font matplotlib can draw Chinese with, or None when it has none (charts then fall
    back to English labels rather than drawing empty boxes)."""
    try:
        from matplotlib import font_manager
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    names = {entry.name for entry in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in names:
            return name
    return next((name for name in sorted(names) if "CJK" in name), None)
