"""The linking dialogue for chat accounts not yet linked to a CRM user: address → one-time code → linked.

It reaches nothing but the linking service and public help: no NLU, no CRM look-up, so an unlinked
person can learn nothing about customers, nor whether an address is known to us.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

from bot.i18n import t
from bot.messages import Button, IncomingMessage, Reply
from bot.nlu.lang import detect_lang
from core.container import Core
from core.errors import Conflict, ValidationFailed
from core.services.linking import (
    NOT_SELF_SERVICE,
    LinkingService,
    LinkRateLimited,
    normalise_address,
    normalise_code,
)

log = logging.getLogger("crmbot.linking")

RESEND = "/link_resend"
MAX_TEXT = 500
STEP_ADDRESS = "address"
STEP_CODE = "code"
HELP_WORDS = frozenset(
    {
        "help",
        "/help",
        "?",
        "？",
        "help me",
        "what is this",
        "what can you do",
        "帮助",
        "帮忙",
        "怎么用",
        "说明",
    }
)
START_WORDS = frozenset({"/start", "start", "hi", "hello", "hey", "你好", "您好", "嗨"})
# Looks like someone trying to type an address (an '@', or mostly digits), not a sentence.
_ADDRESS_ATTEMPT = re.compile(r"^[^\s@]*@.*$|^[+\d\s().-]{3,}$")
# An address inside a sentence ("my email is a@b.com", "我的手机号是 138 0013 8000").
_EMAIL_IN_TEXT = re.compile(r"[^\s@<>()\[\]:;,，：；（）]+[@＠][^\s@<>()\[\]:;,，：；（）]+")
_CODE_IN_TEXT = re.compile(r"(?<![\w+])[0-9]{3}[\s-]?[0-9]{3}(?![\w])")
_PHONE_IN_TEXT = re.compile(r"(?<!\w)[+＋]?[0-9０-９][0-9０-９\s().-]{5,}[0-9０-９](?!\w)")


def find_address(text: str) -> str | None:
    """The email or phone number the text is, or contains; None when there is none."""
    if normalise_address(text) is not None and normalise_code(text) is None:
        return text
    for pattern in (_EMAIL_IN_TEXT, _PHONE_IN_TEXT):
        for match in pattern.finditer(text):
            candidate = match.group().strip().rstrip(".。")
            # Six digits are a code, not a phone number.
            if normalise_address(candidate) is not None and normalise_code(candidate) is None:
                return candidate
    return None


def find_code(text: str) -> str | None:
    """The 6-digit code the text is, or contains ("my code is 123 456"); None otherwise."""
    if (code := normalise_code(text)) is not None:
        return code
    for match in _CODE_IN_TEXT.finditer(unicodedata.normalize("NFKC", text)):
        if (code := normalise_code(match.group())) is not None:
            return code
    return None


def _clean(text: str) -> str:
    """Drop control characters and surrounding blanks; an address or code is short."""
    return "".join(
        char for char in text[: MAX_TEXT * 2] if unicodedata.category(char)[0] != "C" or char in "\n\t"
    ).strip()[:MAX_TEXT]


class LinkingFlow:
    """Answers unlinked chat accounts (any channel but REST) until they prove an address of a user."""

    def __init__(self, core: Core, linking: LinkingService | None = None) -> None:
        self._core = core
        self._linking = linking or LinkingService(core.uow, core.clock, core.settings.timezone)

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        """One turn of the linking dialogue; its state is kept per chat under 'unlinked:<sender>'."""
        if message.channel in NOT_SELF_SERVICE:
            # The REST contract: an unknown sender is told it is not linked, and nothing else.
            said = detect_lang(message.text, self._core.settings.default_lang)
            return [Reply(text=t(said, "identity.not_linked"))]
        store = self._core.conversations
        key = "unlinked:" + message.sender_id
        saved = await store.load(message.channel, message.conversation_id, key)
        state: dict[str, Any] = dict(saved)
        text = _clean(message.text)
        lang = self._language(text, state)
        state["lang"] = lang
        try:
            replies, state = await self._respond(message, text, lang, state)
        except Exception:
            # Never a stack trace to a person: log it and keep the conversation where it was.
            log.exception("linking turn failed on %s", message.channel)
            replies = [Reply(text=t(lang, "error.internal"))]
        if state != saved:
            await store.save(message.channel, message.conversation_id, key, state)
        return replies

    async def _respond(
        self, message: IncomingMessage, text: str, lang: str, state: dict[str, Any]
    ) -> tuple[list[Reply], dict[str, Any]]:
        first_turn = "step" not in state
        state.setdefault("step", STEP_ADDRESS)
        lowered = text.lower().rstrip("!.。！")
        if lowered in HELP_WORDS:
            return [Reply(text=t(lang, "linking.help"))], state
        if text == RESEND:
            address = state.get("address")
            if not isinstance(address, str):
                state["step"] = STEP_ADDRESS
                return [Reply(text=t(lang, "linking.ask_address"))], state
            return await self._request(message, address, lang, state)
        if (code := normalise_code(text)) is not None:
            return await self._verify(message, code, lang, state)
        if (address := find_address(text)) is not None:
            return await self._request(message, address, lang, state)
        if (code := find_code(text)) is not None:
            return await self._verify(message, code, lang, state)
        if first_turn or lowered in START_WORDS:
            return [Reply(text=t(lang, "linking.greet"))], state
        if _ADDRESS_ATTEMPT.match(text):
            return [Reply(text=t(lang, "linking.invalid_address"))], state
        again = "linking.ask_code" if state["step"] == STEP_CODE else "linking.ask_address"
        return [Reply(text=t(lang, again))], state

    async def _request(
        self, message: IncomingMessage, address: str, lang: str, state: dict[str, Any]
    ) -> tuple[list[Reply], dict[str, Any]]:
        try:
            await self._linking.request_code(message.channel, message.sender_id, address, lang)
        except LinkRateLimited:
            return [Reply(text=t(lang, "linking.wait"))], state
        except ValidationFailed:
            return [Reply(text=t(lang, "linking.invalid_address"))], state
        # Kept so "Send a new code" goes to the same place; it is what this person typed, nothing more.
        state["address"] = address.strip()[:254]
        state["step"] = STEP_CODE
        return [Reply(text=t(lang, "linking.code_sent"))], state

    async def _verify(
        self, message: IncomingMessage, code: str, lang: str, state: dict[str, Any]
    ) -> tuple[list[Reply], dict[str, Any]]:
        try:
            actor = await self._linking.verify(message.channel, message.sender_id, code)
        except Conflict:
            return [Reply(text=t(lang, "linking.already_linked"))], {}
        if actor is None:
            resend = Button(title=t(lang, "linking.resend_button"), payload=RESEND)
            return [Reply(text=t(lang, "linking.bad_code"), buttons=(resend,))], state
        # Linked: the linking conversation is over; the assistant takes it from here.
        return [Reply(text=t(lang, "linking.linked", name=actor.name or actor.username))], {}

    def _language(self, text: str, state: dict[str, Any]) -> str:
        """The message's language when it has words; an address, a code or a button keeps the chat's."""
        known = state.get("lang")
        fallback = known if isinstance(known, str) else self._core.settings.default_lang
        if (address := find_address(text)) is not None:
            text = text.replace(address, " ")  # "我的邮箱是 a.b@example.com" is Chinese
        if not any(char.isalpha() for char in text) or text.startswith("/") or _ADDRESS_ATTEMPT.match(text):
            return fallback
        return detect_lang(text)
