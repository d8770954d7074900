"""Message catalogs: YAML files of Jinja2 templates per language (bot/locales/<lang>/*.yml, merged)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined, Template

LOCALES = Path(__file__).with_name("locales")
LANGS = ("en", "zh")
_environment = Environment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False)


def _money(value: Any) -> str:
    """12345.5 → 12,345.50"""
    return f"{float(value):,.2f}"


_environment.filters["money"] = _money


@lru_cache(maxsize=4)
def _catalog(lang: str) -> dict[str, Template]:
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = str(node).rstrip("\n")

    for path in sorted((LOCALES / lang).glob("*.yml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        overlap = set(raw) & {key.split(".")[0] for key in flat}
        if overlap:
            raise ValueError(f"{path}: top-level keys {sorted(overlap)} are already defined in another file")
        walk("", raw)
    return {key: _environment.from_string(text) for key, text in flat.items()}


def t(lang: str, key: str, **params: Any) -> str:
    """The text for `key` in `lang` (English when the language lacks it), filled with `params`."""
    catalog = _catalog(lang if lang in LANGS else "en")
    template = catalog.get(key) or _catalog("en").get(key)
    if template is None:
        raise KeyError(f"no message '{key}'")
    return template.render(**params)


def keys(lang: str) -> set[str]:
    """Every message key a language defines (tests compare the catalogs)."""
    return set(_catalog(lang))
