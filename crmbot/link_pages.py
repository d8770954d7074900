"""What the pages behind signed links share (the survey page, the visit-time page): the page shell, the
safety headers, the language choice and the form reading.

The token in such a page's address is the customer's credential: never hand it to another site in a
Referer, never cache or index the page; plain HTML forms, no JavaScript, every value escaped.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import DictLoader, Environment, StrictUndefined, Template

MAX_FORM_BYTES = 32 * 1024
LANGS = ("en", "zh")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Cache-Control": "no-store",
}

# The shell every link page fills in: `style` for its own rules, `body` for what follows the lines.
SHELL = """<!DOCTYPE html>
<html lang="{{ html_lang }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{ title }} · crmbot</title>
<style>
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2328;font:16px/1.6 -apple-system,BlinkMacSystemFont,"Segoe UI",
Helvetica,Arial,"PingFang SC","Microsoft YaHei",sans-serif}
main{max-width:560px;margin:0 auto;padding:24px 16px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:12px;padding:20px}
.brand{display:flex;justify-content:space-between;align-items:center;margin-bottom:16px}
.brand b{color:#1d4ed8;font-size:18px}
.brand a{color:#656d76;font-size:14px}
h1{font-size:22px;margin:0 0 12px}
textarea{width:100%;padding:10px;border:1px solid #d0d7de;border-radius:8px;font:inherit}
button{width:100%;padding:14px;border:0;border-radius:10px;background:#1d4ed8;color:#fff;
font:inherit;font-weight:700;font-size:17px;cursor:pointer}
.error{background:#fff1f0;border:1px solid #ffccc7;border-radius:8px;padding:10px;margin:12px 0}
.muted{color:#656d76;font-size:14px}
{% block style %}{% endblock %}
</style>
</head>
<body>
<main>
<div class="brand"><b>crmbot</b>
<a href="{{ switch_href }}" lang="{{ other_lang }}">{{ t.switch }}</a></div>
<div class="card">
<h1>{{ title }}</h1>
{% for line in lines %}
<p>{{ line }}</p>
{% endfor %}
{% block body %}{% endblock %}
</div>
</main>
</body>
</html>
"""


def page_template(body: str) -> Template:
    """A link page: `body` extends the shell (`{% extends "shell" %}` and its blocks)."""
    environment = Environment(
        loader=DictLoader({"shell": SHELL, "page": body}),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("page")


def page_language(request: Request, wanted: str | None, own: str | None, default: str) -> str:
    """The language asked for, else the customer's own, else the browser's, else the company default."""
    if wanted in LANGS:
        return str(wanted)
    if own in LANGS:
        return str(own)
    for part in request.headers.get("accept-language", "").lower().split(","):
        tag = part.split(";")[0].strip()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return default if default in LANGS else "en"


async def read_form(request: Request) -> dict[str, str]:
    """The first value of each field of a posted form; a body over the limit is not read at all."""
    declared = request.headers.get("content-length", "")
    body = b"" if declared.isdigit() and int(declared) > MAX_FORM_BYTES else await request.body()
    fields = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), max_num_fields=10)
    return {name: values[0] for name, values in fields.items() if values}


def render(
    template: Template,
    request: Request,
    lang: str,
    texts: dict[str, str],
    title: str,
    lines: list[str],
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """One page in one language, with the language switch pointing back at this address."""
    other = "zh" if lang == "en" else "en"
    body = template.render(
        html_lang="zh-CN" if lang == "zh" else "en",
        title=title,
        lines=lines,
        t=texts,
        lang=lang,
        other_lang=other,
        switch_href=f"{request.url.path}?lang={other}",
        action=request.url.path,
        **context,
    )
    return HTMLResponse(body, status_code=status, headers=HEADERS)
