"""The visit-time page: `GET /visit/{token}` shows a proposed visit time, `POST` confirms or refuses it.

Open like the survey page: the signed token in the link (see core.links.VisitLinks) is the customer's
credential, naming one repair order, the proposed time it answers and its expiry. Showing the page never
changes anything (mail scanners open links); only a submitted form answers, through core, as the request's
customer user and with the chat's rules. Plain HTML forms, no JavaScript, every value escaped; a link that
is not ours, outdated, expired or already used gets a clear page, never a stack trace.
"""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from core.container import Core
from core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from core.links import VisitLinks
from core.services.servicedesk import MAX_VISIT_NOTE, VisitView
from crmbot.link_pages import page_language, page_template, read_form, render
from notifier.templates import format_datetime

log = logging.getLogger("crmbot.visit_page")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Can we come at a new time?",
        "intro": "We'd like to move the visit of job {job} for your request {ticket} “{subject}”{product}.",
        "product": " ({product})",
        "previous": "Planned until now:",
        "proposed": "New time:",
        "technician": "Technician:",
        "confirm": "Confirm this time",
        "refuse": "This time does not suit me",
        "note": "A time that would suit you better, or a note (optional)",
        "note_hint": "For example: Saturday morning, or weekdays after 5 pm",
        "open_until": "You can answer here until {time}.",
        "choose": "Please use one of the two buttons.",
        "confirmed_title": "Confirmed",
        "confirmed": "Confirmed: {time}. Thank you, see you then (job {job}).",
        "refused_title": "Thank you for telling us",
        "refused": "You told us that {time} does not suit you. Your service team will get in touch to find "
        "another time (job {job}).",
        "answered_title": "Already answered",
        "already_confirmed": "This new time was already confirmed: {time} (job {job}).",
        "already_refused": "You already told us that {time} does not suit you (job {job}). Your service "
        "team will get in touch.",
        "outdated_title": "This proposal has changed",
        "outdated": "{time} is no longer the time we propose for job {job}. Please use the link in our "
        "latest message, answer in the chat or call your service team.",
        "expired_title": "This link has expired",
        "expired": "The link for {time} (job {job}) can no longer be used. Please answer in the chat or "
        "call your service team.",
        "closed_title": "This visit is no longer planned",
        "closed": "Job {job} is no longer planned, so there is nothing to answer. If you need us, tell us "
        "in the chat or call your service team.",
        "invalid_title": "This link doesn't work",
        "invalid": "The link is not valid. Please open the complete link from our message; if it still "
        "doesn't work, answer in the chat or call your service team.",
        "error_title": "Something went wrong",
        "error": "Something went wrong on our side and it has been logged. Please try again in a moment.",
        "switch": "中文",
    },
    "zh": {
        "title": "上门时间需要调整",
        "intro": "我们希望调整工单 {job} 的上门时间（您的请求 {ticket}“{subject}”{product}）。",
        "product": "，{product}",
        "previous": "原定时间：",
        "proposed": "新的时间：",
        "technician": "维修师傅：",
        "confirm": "确认这个时间",
        "refuse": "这个时间不方便",
        "note": "方便的时间或留言（选填）",
        "note_hint": "例如：周六上午，或工作日下午五点以后",
        "open_until": "您可以在 {time} 之前在此回复。",
        "choose": "请点击两个按钮之一。",
        "confirmed_title": "已确认",
        "confirmed": "已确认：{time}。谢谢，届时见（工单 {job}）。",
        "refused_title": "谢谢您告诉我们",
        "refused": "您表示 {time} 不方便。服务团队会与您联系，另约时间（工单 {job}）。",
        "answered_title": "已经回复过了",
        "already_confirmed": "这个新的上门时间已经确认过了：{time}（工单 {job}）。",
        "already_refused": "您已经告诉我们 {time} 不方便（工单 {job}），服务团队会与您联系。",
        "outdated_title": "上门时间已有变动",
        "outdated": "{time} 已不是工单 {job} 目前建议的时间。请打开我们最新消息中的链接，或在聊天中回复，"
        "或致电您的服务团队。",
        "expired_title": "链接已过期",
        "expired": "{time}（工单 {job}）的链接已无法使用。请在聊天中回复，或致电您的服务团队。",
        "closed_title": "这次上门已取消或结束",
        "closed": "工单 {job} 已不再安排上门，无需回复。如有需要，请在聊天中告诉我们，或致电您的服务团队。",
        "invalid_title": "链接无效",
        "invalid": "链接无效。请打开我们消息中的完整链接；如果仍然无法打开，请在聊天中回复"
        "或致电您的服务团队。",
        "error_title": "出了点问题",
        "error": "我们这边出了点问题，已记录下来。请稍后再试。",
        "switch": "English",
    },
}

_page = page_template("""{% extends "shell" %}
{% block style %}
dl{margin:12px 0;display:grid;grid-template-columns:auto 1fr;gap:4px 12px}
dt{color:#656d76}
dd{margin:0;font-weight:600}
dd.new{color:#1d4ed8;font-size:18px}
label{display:block;font-weight:600;margin:16px 0 6px}
textarea{min-height:80px}
button{margin-top:12px}
button.second{background:#fff;color:#1d4ed8;border:2px solid #1d4ed8}
hr{border:0;border-top:1px solid #d0d7de;margin:20px 0 4px}
{% endblock %}
{% block body %}
{% if form %}
<dl>
{% if previous %}<dt>{{ t.previous }}</dt><dd>{{ previous }}</dd>{% endif %}
<dt>{{ t.proposed }}</dt><dd class="new">{{ proposed }}</dd>
{% if technician %}<dt>{{ t.technician }}</dt><dd>{{ technician }}</dd>{% endif %}
</dl>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="lang" value="{{ lang }}">
<input type="hidden" name="answer" value="confirm">
<button type="submit">{{ t.confirm }}</button>
</form>
<hr>
<form method="post" action="{{ action }}">
<input type="hidden" name="lang" value="{{ lang }}">
<input type="hidden" name="answer" value="refuse">
<label for="note">{{ t.note }}</label>
<textarea id="note" name="note" maxlength="{{ max_note }}"
 placeholder="{{ t.note_hint }}">{{ note }}</textarea>
<button type="submit" class="second">{{ t.refuse }}</button>
</form>
<p class="muted">{{ open_until }}</p>
{% endif %}
{% endblock %}
""")


class _Page:
    """Renders one page of the visit link in one language."""

    def __init__(self, request: Request, core: Core, lang: str, view: VisitView | None = None) -> None:
        self.request = request
        self.lang = lang
        self.t = TEXTS[lang]
        self.view = view
        zone = view.timezone if view is not None and view.timezone else None
        self.tz = zone or core.settings.timezone

    def when(self, moment: datetime | None) -> str:
        return format_datetime(moment, self.lang, self.tz) if moment is not None else ""

    def html(
        self,
        title: str,
        lines: list[str],
        status: int = 200,
        *,
        show_form: bool = False,
        note: str = "",
        error: str = "",
    ) -> HTMLResponse:
        view = self.view
        return render(
            _page,
            self.request,
            self.lang,
            self.t,
            title,
            lines,
            status,
            form=show_form and view is not None,
            previous=self.when(view.previous_at) if view is not None else "",
            proposed=self.when(view.proposed_at) if view is not None else "",
            technician=view.technician_name if view is not None else "",
            open_until=self.t["open_until"].format(time=self.when(view.expires_at)) if view else "",
            note=note,
            error=error,
            max_note=MAX_VISIT_NOTE,
        )

    def _facts(self, view: VisitView) -> dict[str, str]:
        return {"time": self.when(view.proposed_at), "job": view.job}

    def form(self, view: VisitView, *, note: str = "", error: str = "") -> HTMLResponse:
        product = self.t["product"].format(product=view.product) if view.product else ""
        intro = self.t["intro"].format(
            ticket=view.ticket, subject=view.subject, product=product, job=view.job
        )
        status = 422 if error else 200
        return self.html(self.t["title"], [intro], status, show_form=True, note=note, error=error)

    def done(self, view: VisitView) -> HTMLResponse:
        """The result of the answer just given."""
        if view.state == "confirmed":
            return self.html(self.t["confirmed_title"], [self.t["confirmed"].format(**self._facts(view))])
        if view.state == "refused":
            return self.html(self.t["refused_title"], [self.t["refused"].format(**self._facts(view))])
        return self.state(view, answering=True)

    def state(self, view: VisitView, *, answering: bool) -> HTMLResponse:
        """Why this link cannot be answered (any more); answering: the status of a POST."""
        facts = self._facts(view)
        if view.state in ("confirmed", "refused"):
            text = self.t[f"already_{view.state}"].format(**facts)
            return self.html(self.t["answered_title"], [text], 409 if answering else 200)
        kind = view.state if view.state in ("outdated", "closed") else "expired"
        return self.html(self.t[f"{kind}_title"], [self.t[kind].format(**facts)], 410)

    def invalid(self) -> HTMLResponse:
        return self.html(self.t["invalid_title"], [self.t["invalid"]], 404)

    def error(self) -> HTMLResponse:
        return self.html(self.t["error_title"], [self.t["error"]], 500)


def visit_router() -> APIRouter:
    """`/visit/{token}`: the page a proposed visit time's link opens (the app's `state.core` works)."""
    router = APIRouter(include_in_schema=False)

    def core_of(request: Request) -> Core:
        core: Core = request.app.state.core
        return core

    @router.get("/visit/{token}")
    async def show(request: Request, token: str) -> HTMLResponse:
        """The proposed time and the two answers, or why it cannot be answered."""
        core = core_of(request)
        wanted = request.query_params.get("lang")
        default = core.settings.default_lang
        try:
            view = await core.service_desk.visit_by_token(token, VisitLinks.from_settings(core.settings))
        except NotFound:
            return _Page(request, core, page_language(request, wanted, None, default)).invalid()
        except Exception:
            log.exception("the visit page failed")
            return _Page(request, core, page_language(request, wanted, None, default)).error()
        page = _Page(request, core, page_language(request, wanted, view.lang, default), view)
        # Showing the page never answers: mail scanners open links, only a person submits a form.
        return page.form(view) if view.state == "open" else page.state(view, answering=False)

    @router.post("/visit/{token}")
    async def submit(request: Request, token: str) -> HTMLResponse:
        """Confirm the proposed time, or say it does not suit (with an optional note)."""
        core = core_of(request)
        fields = await read_form(request)
        wanted = fields.get("lang", "")
        answer = fields.get("answer", "").strip()
        note = fields.get("note", "")[:MAX_VISIT_NOTE]
        links = VisitLinks.from_settings(core.settings)
        default = core.settings.default_lang
        try:
            view = await core.service_desk.visit_by_token(token, links)
            page = _Page(request, core, page_language(request, wanted, view.lang, default), view)
            if view.state != "open":
                return page.state(view, answering=True)
            if answer not in ("confirm", "refuse"):
                return page.form(view, note=note, error=page.t["choose"])
            try:
                answered = await core.service_desk.answer_visit_by_token(
                    token, links, accept=answer == "confirm", note=note
                )
            except (Conflict, InvalidTransition):
                # Answered in the chat a moment ago, or the proposal changed: say what is true now.
                now = await core.service_desk.visit_by_token(token, links)
                page = _Page(request, core, page.lang, now)
                return page.state(now if now.state != "open" else view, answering=True)
            except ValidationFailed:
                return page.form(view, note=note, error=page.t["choose"])
            return _Page(request, core, page.lang, answered).done(answered)
        except NotFound:
            return _Page(request, core, page_language(request, wanted, None, default)).invalid()
        except Exception:
            log.exception("the visit page failed")
            return _Page(request, core, page_language(request, wanted, None, default)).error()

    return router
