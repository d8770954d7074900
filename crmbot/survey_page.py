"""The satisfaction survey page: `GET /survey/{token}` shows the question, `POST` records the answer.

Open like the web chat page: the signed token in the link (see core.services.surveys.SurveyLinks) is the
customer's credential, naming one survey and its expiry. Plain HTML forms, no JavaScript, every value
escaped; a link that is not ours, expired or already used gets a clear page, never a stack trace.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from core.container import Core
from core.errors import Conflict, InvalidTransition, NotFound, ValidationFailed
from core.services.surveys import MAX_COMMENT, SurveyLinks, SurveyView
from crmbot.link_pages import page_language, page_template, read_form, render
from notifier.templates import format_date

log = logging.getLogger("crmbot.survey_page")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "How did we do?",
        "intro": "Your request {ticket} “{subject}”{product} is done{technician}.",
        "product": " ({product})",
        "technician": ": {name} took care of it",
        "question": "How satisfied are you with our service?",
        "scale_low": "1 = very dissatisfied",
        "scale_high": "5 = very satisfied",
        "comment": "Anything you would like to tell us? (optional)",
        "comment_hint": "What went well, what could be better…",
        "send": "Send",
        "open_until": "The survey is open until {date}.",
        "choose": "Please choose a score from 1 to 5.",
        "thanks_title": "Thank you!",
        "thanks": "You rated {ticket} {score}/5. Thank you for taking the time.",
        "sorry": "We're sorry it wasn't better. A service manager will look into it and contact you.",
        "answered_title": "Already answered",
        "answered": "{ticket} was already rated {score}/5. Thank you!",
        "expired_title": "This survey has closed",
        "expired": "The survey for {ticket} is no longer open. If something is still wrong, just tell us "
        "in the chat or reply to our email.",
        "invalid_title": "This link doesn't work",
        "invalid": "The survey link is not valid. Please open the complete link from our message; if it "
        "still doesn't work, you can rate us in the chat.",
        "error_title": "Something went wrong",
        "error": "Something went wrong on our side and it has been logged. Please try again in a moment.",
        "switch": "中文",
    },
    "zh": {
        "title": "请为我们的服务打分",
        "intro": "您的服务请求 {ticket}“{subject}”{product}已经处理完毕{technician}。",
        "product": "（{product}）",
        "technician": "，由{name}负责",
        "question": "您对这次服务满意吗？",
        "scale_low": "1 分：非常不满意",
        "scale_high": "5 分：非常满意",
        "comment": "还有什么想告诉我们的吗？（选填）",
        "comment_hint": "哪些地方做得好，哪些地方需要改进……",
        "send": "提交",
        "open_until": "问卷有效期至 {date}。",
        "choose": "请选择 1 到 5 分。",
        "thanks_title": "谢谢您！",
        "thanks": "您给 {ticket} 打了 {score} 分，感谢您抽出时间。",
        "sorry": "很抱歉没能让您满意，服务经理会跟进并与您联系。",
        "answered_title": "已经评价过了",
        "answered": "{ticket} 已经评价过了（{score} 分），谢谢您！",
        "expired_title": "问卷已关闭",
        "expired": "{ticket} 的问卷已经过期。如果还有问题，请在聊天中告诉我们，或直接回复我们的邮件。",
        "invalid_title": "链接无效",
        "invalid": "问卷链接无效。请打开我们消息中的完整链接；如果仍然无法打开，您也可以在聊天中为我们打分。",
        "error_title": "出了点问题",
        "error": "我们这边出了点问题，已记录下来。请稍后再试。",
        "switch": "English",
    },
}

_page = page_template("""{% extends "shell" %}
{% block style %}
fieldset{border:0;margin:16px 0;padding:0}
legend{font-weight:600;margin-bottom:8px;padding:0}
.scores{display:flex;gap:8px}
.scores label{flex:1}
.scores input{position:absolute;opacity:0;width:1px;height:1px}
.scores span{display:block;text-align:center;padding:14px 0;border:2px solid #1d4ed8;border-radius:10px;
color:#1d4ed8;font-size:20px;font-weight:700;cursor:pointer}
.scores input:checked+span{background:#1d4ed8;color:#fff}
.scores input:focus-visible+span{outline:3px solid #93c5fd;outline-offset:2px}
.scale{display:flex;justify-content:space-between;font-size:13px;color:#656d76;margin-top:6px}
label.comment{display:block;font-weight:600;margin:16px 0 6px}
textarea{min-height:110px}
button{margin-top:16px}
{% endblock %}
{% block body %}
{% if form %}
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="{{ action }}">
<input type="hidden" name="lang" value="{{ lang }}">
<fieldset>
<legend>{{ t.question }}</legend>
<div class="scores">
{% for n in range(1, 6) %}
<label><input type="radio" name="score" value="{{ n }}" required{{ " checked" if n == chosen else "" }}>
<span>{{ n }}</span></label>
{% endfor %}
</div>
<div class="scale"><span>{{ t.scale_low }}</span><span>{{ t.scale_high }}</span></div>
</fieldset>
<label class="comment" for="comment">{{ t.comment }}</label>
<textarea id="comment" name="comment" maxlength="{{ max_comment }}"
 placeholder="{{ t.comment_hint }}">{{ comment }}</textarea>
<button type="submit">{{ t.send }}</button>
</form>
{% if open_until %}<p class="muted">{{ open_until }}</p>{% endif %}
{% endif %}
{% endblock %}
""")


def _score(raw: str | None) -> int | None:
    text = (raw or "").strip()
    return int(text) if text in ("1", "2", "3", "4", "5") else None


class _Page:
    """Renders one page of the survey in one language."""

    def __init__(self, request: Request, core: Core, lang: str) -> None:
        self.request = request
        self.core = core
        self.lang = lang
        self.t = TEXTS[lang]

    def html(
        self,
        title: str,
        lines: list[str],
        status: int = 200,
        *,
        show_form: bool = False,
        chosen: int | None = None,
        comment: str = "",
        error: str = "",
        open_until: str = "",
    ) -> HTMLResponse:
        return render(
            _page,
            self.request,
            self.lang,
            self.t,
            title,
            lines,
            status,
            form=show_form,
            error=error,
            chosen=chosen,
            comment=comment,
            open_until=open_until,
            max_comment=MAX_COMMENT,
        )

    def intro(self, view: SurveyView) -> str:
        product = self.t["product"].format(product=view.product) if view.product else ""
        technician = self.t["technician"].format(name=view.technician_name) if view.technician_name else ""
        return self.t["intro"].format(
            ticket=view.ticket, subject=view.subject, product=product, technician=technician
        )

    def form(
        self, view: SurveyView, *, chosen: int | None, comment: str = "", error: str = ""
    ) -> HTMLResponse:
        until = ""
        if view.expires_at is not None:
            day = format_date(view.expires_at, self.lang, self.core.settings.timezone)
            until = self.t["open_until"].format(date=day)
        return self.html(
            self.t["title"],
            [self.intro(view)],
            422 if error else 200,
            show_form=True,
            chosen=chosen,
            comment=comment,
            error=error,
            open_until=until,
        )

    def thanks(self, view: SurveyView) -> HTMLResponse:
        lines = [self.t["thanks"].format(ticket=view.ticket, score=view.score)]
        if view.score is not None and view.score <= 2:
            lines.append(self.t["sorry"])
        return self.html(self.t["thanks_title"], lines)

    def answered(self, view: SurveyView, status: int = 200) -> HTMLResponse:
        text = self.t["answered"].format(ticket=view.ticket, score=view.score)
        return self.html(self.t["answered_title"], [text], status)

    def expired(self, ticket: str) -> HTMLResponse:
        return self.html(self.t["expired_title"], [self.t["expired"].format(ticket=ticket)], 410)

    def invalid(self) -> HTMLResponse:
        return self.html(self.t["invalid_title"], [self.t["invalid"]], 404)

    def error(self) -> HTMLResponse:
        return self.html(self.t["error_title"], [self.t["error"]], 500)


def survey_router() -> APIRouter:
    """`/survey/{token}`: the page a survey link opens (the app's `state.core` does the work)."""
    router = APIRouter(include_in_schema=False)

    def core_of(request: Request) -> Core:
        core: Core = request.app.state.core
        return core

    def links_of(core: Core) -> SurveyLinks:
        return SurveyLinks.from_settings(core.settings)

    @router.get("/survey/{token}")
    async def show(request: Request, token: str) -> HTMLResponse:
        """The question, or why it cannot be answered; `?score=N` (from the email's buttons) preselects."""
        core = core_of(request)
        wanted = request.query_params.get("lang")
        default = core.settings.default_lang
        try:
            view = await core.surveys.view_by_token(token, links_of(core))
        except NotFound:
            return _Page(request, core, page_language(request, wanted, None, default)).invalid()
        except Exception:
            log.exception("the survey page failed")
            return _Page(request, core, page_language(request, wanted, None, default)).error()
        page = _Page(request, core, page_language(request, wanted, view.lang, default))
        if view.state == "answered":
            return page.answered(view)
        if view.state == "expired":
            return page.expired(view.ticket)
        # Showing the page never records anything: mail scanners open links, only a person submits the form.
        return page.form(view, chosen=_score(request.query_params.get("score")))

    @router.post("/survey/{token}")
    async def submit(request: Request, token: str) -> HTMLResponse:
        """Record the score and comment sent with the form."""
        core = core_of(request)
        fields = await read_form(request)
        wanted = fields.get("lang", "")
        score = _score(fields.get("score"))
        comment = fields.get("comment", "")[:MAX_COMMENT]
        links = links_of(core)
        default = core.settings.default_lang
        try:
            view = await core.surveys.view_by_token(token, links)
            page = _Page(request, core, page_language(request, wanted, view.lang, default))
            if view.state == "answered":
                return page.answered(view, 409)
            if view.state == "expired":
                return page.expired(view.ticket)
            if score is None:
                return page.form(view, chosen=None, comment=comment, error=page.t["choose"])
            try:
                answered = await core.surveys.answer_by_token(token, links, score, comment)
            except Conflict:
                return page.answered(await core.surveys.view_by_token(token, links), 409)
            except InvalidTransition:
                return page.expired(view.ticket)
            except ValidationFailed:
                return page.form(view, chosen=None, comment=comment, error=page.t["choose"])
            return page.thanks(answered)
        except NotFound:
            return _Page(request, core, page_language(request, wanted, None, default)).invalid()
        except Exception:
            log.exception("the survey page failed")
            return _Page(request, core, page_language(request, wanted, None, default)).error()

    return router
