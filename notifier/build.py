"""Wiring the notifier: its senders for this process, from settings and the channels already connected."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from bot.channels.base import ChannelSender
from bot.outbound import Outbound
from core.container import Core
from notifier.alerts import active_rules
from notifier.charts import digest_chart
from notifier.chat import ChatSender
from notifier.dispatcher import Notifier
from notifier.senders.email import build_email_sender
from notifier.senders.sms import build_sms_sender
from notifier.types import Sender


def standalone_chat_senders(
    core: Core,
) -> tuple[dict[str, ChannelSender], list[Callable[[], Awaitable[None]]]]:
    """Telegram and Slack senders for a process that serves no chat (`crmbot run --role worker`,
    `crmbot notify test`): they only send, never poll or take webhooks. Returns how to close them."""
    settings = core.settings
    senders: dict[str, ChannelSender] = {}
    closers: list[Callable[[], Awaitable[None]]] = []
    if settings.telegram_token is not None:
        from bot.channels.telegram import TelegramSender, build_bot

        bot = build_bot(settings)
        senders["telegram"] = TelegramSender(bot, core.conversations)
        closers.append(bot.session.close)
    if settings.slack_bot_token is not None:
        from bot.channels.slack import SlackSender

        senders["slack"] = SlackSender.from_settings(settings, core.conversations)
    return senders, closers


async def check_configuration(core: Core) -> None:
    """What can only be checked with the database at hand: the users and departments the alert rules name.

    Raises RulesError (`FILE:LINE: reason` lines) for a rules file that cannot be used.
    """
    await active_rules(core.settings).check_against(core)


def build_notifier(core: Core, channel_senders: Mapping[str, ChannelSender]) -> Notifier:
    """A notifier delivering by email and SMS (as configured) and on every chat channel given, applying the
    managers' alert rules and drawing the digest's chart."""
    outbound = Outbound(core, channel_senders)
    senders: dict[str, Sender] = {channel: ChatSender(outbound, channel) for channel in outbound.channels}
    senders["email"] = build_email_sender(core.settings)
    senders["sms"] = build_sms_sender(core.settings)
    notifier = Notifier(core, senders, rules=[active_rules(core.settings)], images={"digest": digest_chart})
    core.commit_listeners.append(notifier.wake)
    return notifier
