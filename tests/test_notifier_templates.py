"""Notification templates: every kind in both languages on every channel, escaping, filters, SMS length."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifier.templates import (
    DIRECTORY,
    MAX_PAYLOAD_BYTES,
    SMS_MAX_PARTS,
    TemplateFailure,
    Templates,
    format_date,
    format_datetime,
    format_money,
)
from notifier.types import ALL_CHANNELS, CHAT_CHANNELS, EMAIL, SMS

TZ = "Asia/Shanghai"
CJK = re.compile(r"[\u4e00-\u9fff]")
PAYLOAD = re.compile(r"^/([a-z_]{2,40})(\{.*\})$", re.DOTALL)

# Long enough to hurt: 40-character subjects, a four- and a ten-character Chinese name, a long address.
SUBJECT_EN = "Washer leaks under the door seal at spin"
SUBJECT_ZH = "洗衣机脱水时剧烈晃动，噪音很大，门封处一直漏水，显示屏反复报错E13，请尽快上门"
assert len(SUBJECT_EN) == 40 and len(SUBJECT_ZH) == 40
LONG_NAME = "阿卜杜热合曼·买买提"
ADDRESS_ZH = "新疆维吾尔自治区乌鲁木齐市天山区解放南路幸福小区12号楼3单元1201室"
RESOLUTION_EN = "Replaced the drain pump and cleaned the filter; two full test cycles ran without any error."
RESOLUTION_ZH = "更换了排水泵并清理了过滤器，完整测试了两个洗涤周期，未再出现任何错误代码，机器运行正常。"
STATUSES = (
    "new",
    "assigned",
    "in_progress",
    "on_hold",
    "waiting_customer",
    "escalated",
    "resolved",
    "closed",
    "reopened",
    "cancelled",
)
ARTICLES = [
    {"code": "E13", "title": "Drain pump blocked"},
    {"code": "E21", "title": "Door lock does not engage"},
    {"code": "F05", "title": "Water inlet valve faulty"},
    {"code": "F09", "title": "Heater element open circuit"},
]

# The people and things of one sample, in a Latin and in a Chinese variant.
PEOPLE = [
    {
        "customer": "Wang Fang",
        "recipient": "Wang Fang",
        "technician": "Tom Li",
        "assignee": "Tom Li",
        "subject": SUBJECT_EN,
        "product": "WM-1000 washing machine",
        "address": "12 Harbour Road, Pudong, Shanghai",
        "symptom": "Drum doesn't spin, error E13",
        "resolution": RESOLUTION_EN,
        "summary": "Replaced the drain pump <script>alert(1)</script>",
    },
    {
        "customer": "欧阳娜娜",
        "recipient": LONG_NAME,
        "technician": LONG_NAME,
        "assignee": "司马建国",
        "subject": SUBJECT_ZH,
        "product": "滚筒洗衣机 WM-1000",
        "address": ADDRESS_ZH,
        "symptom": "滚筒不转，显示错误代码 E13，门封处漏水",
        "resolution": RESOLUTION_ZH,
        "summary": "更换了排水泵，清理了过滤器",
    },
]


def samples(kind: str) -> list[dict[str, Any]]:
    """Contexts for `kind` that cover its branches (every status, with and without dates, …)."""
    contexts: list[dict[str, Any]] = []
    for who in PEOPLE:
        if kind == "link_code":
            contexts += [
                {"code": "482913", "channel": channel, "minutes": 10}
                for channel in ("telegram", "slack", "web", "terminal")
            ]
        elif kind == "request_acknowledged":
            for request_kind in ("repair", "complaint", "inquiry"):
                for severity, due, product, serial in (
                    ("normal", "2026-06-15T06:00:00+00:00", who["product"], "WM2023-00917"),
                    ("urgent", "", "", ""),
                ):
                    contexts.append(
                        {
                            "ticket": "SR-12",
                            "subject": who["subject"],
                            "kind": request_kind,
                            "severity": severity,
                            "product": product,
                            "serial": serial,
                            "response_due": due,
                            "customer_name": who["customer"],
                            "recipient_name": who["recipient"],
                        }
                    )
        elif kind == "request_status":
            for status in (*STATUSES, "something_new"):
                for assignee, resolution in ((who["assignee"], who["resolution"]), ("", "")):
                    contexts.append(
                        {
                            "ticket": "SR-12",
                            "subject": who["subject"],
                            "to_status": status,
                            "resolution": resolution,
                            "assignee_name": assignee,
                            "recipient_name": who["recipient"],
                        }
                    )
        elif kind == "request_assigned":
            for severity, due in (("urgent", "2026-06-15T06:00:00+00:00"), ("low", "")):
                contexts.append(
                    {
                        "ticket": "SR-12",
                        "subject": who["subject"],
                        "kind": "repair",
                        "severity": severity,
                        "customer_name": who["customer"],
                        "due": due,
                        "recipient_name": who["assignee"],
                    }
                )
        elif kind == "dispatch_card":
            for warranty, ends_on, scheduled, articles in (
                ("in", "2027-06-15", "2026-06-16T01:00:00+00:00", ARTICLES),
                ("out", "2025-03-01", "", []),
                ("unknown", "", "2026-06-16T01:00:00+00:00", ARTICLES[:1]),
            ):
                contexts.append(
                    {
                        "job": "RO-5",
                        "ticket": "SR-12",
                        "customer_name": who["customer"],
                        "address": who["address"],
                        "phone": "+86 138 0013 8000",
                        "product": who["product"],
                        "serial": "WM2023-00917",
                        "warranty": warranty,
                        "warranty_ends_on": ends_on,
                        "symptom": who["symptom"],
                        "scheduled_at": scheduled,
                        "articles": articles,
                        "recipient_name": who["technician"],
                    }
                )
        elif kind == "job_declined":
            contexts += [
                {
                    "ticket": "SR-12",
                    "job": "RO-5",
                    "subject": who["subject"],
                    "customer_name": who["customer"],
                    "technician_name": who["technician"],
                    "reason": who["summary"],
                    "scheduled_at": at,
                    "recipient_name": who["recipient"],
                }
                for at in ("2026-06-16T01:00:00+00:00", "")
            ]
        elif kind == "job_accepted":
            contexts += [
                {"ticket": "SR-12", "job": "RO-5", "technician_name": who["technician"], "scheduled_at": at}
                for at in ("2026-06-16T01:00:00+00:00", "")
            ]
        elif kind == "job_completed":
            for in_warranty in (True, False):
                for charge in ("0.00", "1234.50"):
                    contexts.append(
                        {
                            "ticket": "SR-12",
                            "job": "RO-5",
                            "summary": who["summary"],
                            "in_warranty": in_warranty,
                            "total_charge": charge,
                            "currency": "CNY",
                            "recipient_name": who["recipient"],
                        }
                    )
        elif kind == "test":
            contexts += [{"recipient_name": who["recipient"], "channel": channel} for channel in ALL_CHANNELS]
        else:
            raise AssertionError(f"no sample context for {kind!r}")
    return contexts


KINDS = (
    "link_code",
    "request_acknowledged",
    "request_status",
    "request_assigned",
    "dispatch_card",
    "job_accepted",
    "job_completed",
    "job_declined",
    "test",
)
# The id each kind's subject and texts must carry.
IDS = {"link_code": "code", "dispatch_card": "job", "job_declined": "job", "test": None}

GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[~]|€\f")


def sms_parts(text: str) -> int:
    """GSM-7 (extension characters count twice): 160 in one part, else 153 a part; UCS-2: 70, else 67."""
    if all(char in GSM_BASIC or char in GSM_EXTENDED for char in text):
        septets = sum(2 if char in GSM_EXTENDED else 1 for char in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


def test_the_sms_counter_itself() -> None:
    assert sms_parts("a" * 160) == 1
    assert sms_parts("a" * 161) == 2
    assert sms_parts("a" * 306) == 2
    assert sms_parts("€" * 80) == 1 and sms_parts("€" * 81) == 2
    assert sms_parts("中" * 70) == 1
    assert sms_parts("中" * 71) == 2
    assert sms_parts("a" * 150 + "中") == 3


def test_catalogs_define_the_same_kinds_parts_and_labels(templates: Templates) -> None:
    assert templates.languages == ("en", "zh")
    # Every area's catalog (care, surveys, …) adds kinds; both languages must have them all.
    assert templates.kinds("en") == templates.kinds("zh") and frozenset(KINDS) <= templates.kinds("en")
    assert templates.parts("en") == templates.parts("zh")
    for parts in templates.parts("en").values():
        assert {"subject", "text", "sms"} <= parts
    assert templates.label_groups("en") == templates.label_groups("zh")
    assert {"status", "kind", "severity", "channel", "warranty"} <= set(templates.label_groups("en"))
    assert set(STATUSES) <= templates.label_groups("zh")["status"]


def test_the_yaml_files_have_no_unknown_top_level_entries() -> None:
    for lang in ("en", "zh"):
        raw = yaml.safe_load((DIRECTORY / f"{lang}.yml").read_text(encoding="utf-8"))
        assert set(raw) == {"labels", "layout", *KINDS}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_kind_renders_on_every_channel(templates: Templates, kind: str, lang: str) -> None:
    for context in samples(kind):
        id_key = IDS.get(kind, "ticket")
        ident = str(context[id_key]) if id_key else None
        for channel in ALL_CHANNELS:
            rendered = templates.render(kind, channel, lang, context, TZ)
            assert rendered.subject.strip() and rendered.text.strip(), (kind, channel, lang)
            assert "\n" not in rendered.subject
            assert "None" not in rendered.text and "Undefined" not in rendered.text
            if lang == "zh":
                assert CJK.search(rendered.subject) and CJK.search(rendered.text), (kind, channel)
            else:
                assert "【" not in rendered.text
            if ident is not None:
                assert ident in rendered.text, (kind, channel, lang, rendered.text)
                if kind != "link_code":
                    assert ident in rendered.subject
            if channel == EMAIL:
                assert rendered.html is not None and "crmbot" in rendered.html
                assert rendered.text.endswith(rendered.text.rsplit("\n", 1)[-1])
                assert "\n-- \n" in rendered.text
                assert rendered.buttons == ()
            elif channel == SMS:
                assert rendered.html is None and rendered.buttons == ()
                assert "\n" not in rendered.text
                if lang == "zh":
                    assert rendered.text.startswith("【crmbot】")
            else:
                assert rendered.html is None
                assert rendered.text.startswith(rendered.subject + "\n")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_job_ids_appear_in_the_long_texts(templates: Templates, lang: str) -> None:
    for kind in ("dispatch_card", "job_accepted", "job_completed"):
        for channel in (EMAIL, "telegram"):
            text = templates.render(kind, channel, lang, samples(kind)[0], TZ).text
            assert "RO-5" in text and "SR-12" in text, (kind, channel)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_sms_fits_in_two_parts(templates: Templates, kind: str, lang: str) -> None:
    assert SMS_MAX_PARTS == 2
    for context in samples(kind):
        text = templates.render(kind, SMS, lang, context, TZ).text
        assert sms_parts(text) <= SMS_MAX_PARTS, (kind, lang, len(text), text)


def test_link_code_keeps_the_wording_of_the_outbox_files(templates: Templates) -> None:
    context = {"code": "482913", "channel": "web", "minutes": 10}
    sms = templates.render("link_code", SMS, "en", context, TZ)
    assert sms.text == "crmbot code 482913 links your web chat account; valid 10 min. Not you? Ignore this."
    zh = templates.render("link_code", SMS, "zh", context, TZ)
    assert zh.text == "【crmbot】验证码 482913，用于关联您的网页聊天账号，10分钟内有效。非本人操作请忽略。"
    email = templates.render("link_code", EMAIL, "en", context, TZ)
    assert email.subject == "Your crmbot code"
    assert "\n    482913\n" in email.text
    assert "It expires in 10 minutes and works once." in email.text
    assert email.html is not None and ">482913</p>" in email.html
    assert templates.render("link_code", EMAIL, "zh", context, TZ).subject == "您的 crmbot 验证码"


def test_html_is_escaped_and_text_is_not(templates: Templates) -> None:
    context = samples("request_acknowledged")[0] | {"subject": "<script>alert(1)</script> & co"}
    for lang in ("en", "zh"):
        rendered = templates.render("request_acknowledged", EMAIL, lang, context, TZ)
        assert "<script>alert(1)</script> & co" in rendered.text
        assert rendered.html is not None
        assert "<script>" not in rendered.html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in rendered.html
        chat = templates.render("request_acknowledged", "slack", lang, context, TZ)
        assert "<script>alert(1)</script>" in chat.text
    completed = templates.render("job_completed", EMAIL, "en", samples("job_completed")[0], TZ)
    assert "<script>" in completed.text
    assert completed.html is not None
    assert "&lt;script&gt;" in completed.html and "<script>" not in completed.html


def test_a_kind_with_its_own_html_is_escaped_too(templates: Templates) -> None:
    context = {"code": "<b>1</b>", "channel": "x<y", "minutes": 10}
    rendered = templates.render("link_code", EMAIL, "en", context, TZ)
    assert rendered.html is not None
    assert "&lt;b&gt;1&lt;/b&gt;" in rendered.html and "x&lt;y" in rendered.html
    assert "<b>1</b>" in rendered.text


def test_plain_text_becomes_paragraphs_in_the_shared_layout(templates: Templates) -> None:
    rendered = templates.render("request_assigned", EMAIL, "en", samples("request_assigned")[0], TZ)
    assert rendered.html is not None
    assert rendered.html.startswith("<!DOCTYPE html>") and '<html lang="en">' in rendered.html
    assert "<p>Hello Tom Li,</p>" in rendered.html
    assert "Customer: Wang Fang<br>" in rendered.html
    assert "You receive this because the request was assigned to you in crmbot." in rendered.html
    zh = templates.render("request_assigned", EMAIL, "zh", samples("request_assigned")[0], TZ)
    assert zh.html is not None and '<html lang="zh-CN">' in zh.html and "您收到这封邮件" in zh.html


def test_missing_variable_raises_template_failure(templates: Templates) -> None:
    context = dict(samples("request_acknowledged")[0])
    del context["ticket"]
    with pytest.raises(TemplateFailure, match=r"request_acknowledged.*\(en\).*'subject'.*ticket"):
        templates.render("request_acknowledged", EMAIL, "en", context, TZ)
    context = dict(samples("dispatch_card")[0])
    del context["symptom"]
    with pytest.raises(TemplateFailure, match=r"dispatch_card.*\(zh\).*'text'"):
        templates.render("dispatch_card", "telegram", "zh", context, TZ)


def test_unknown_kind_and_channel_raise_template_failure(templates: Templates) -> None:
    with pytest.raises(TemplateFailure, match="no_such_kind"):
        templates.render("no_such_kind", EMAIL, "en", {}, TZ)
    with pytest.raises(TemplateFailure, match="fax"):
        templates.render("test", "fax", "en", {"recipient_name": "", "channel": "email"}, TZ)


def test_a_bad_value_raises_template_failure(templates: Templates) -> None:
    context = samples("job_accepted")[0] | {"scheduled_at": "next Tuesday"}
    with pytest.raises(TemplateFailure, match="job_accepted"):
        templates.render("job_accepted", EMAIL, "en", context, TZ)
    charged = samples("job_completed")[0] | {"total_charge": "twelve"}
    with pytest.raises(TemplateFailure, match="job_completed"):
        templates.render("job_completed", EMAIL, "en", charged, TZ)


def _catalog(tmp_path: Path, kind: dict[str, Any]) -> Templates:
    (tmp_path / "en.yml").write_text(
        yaml.safe_dump({"layout": {"footer": "Because."}, "labels": {}, "broken": kind}), encoding="utf-8"
    )
    return Templates(tmp_path)


def test_syntax_error_raises_template_failure(tmp_path: Path) -> None:
    templates = _catalog(tmp_path, {"subject": "Hi", "text": "{{ ticket ", "sms": "x"})
    assert templates.render("broken", SMS, "en", {}, TZ).text == "x"
    with pytest.raises(TemplateFailure, match=r"'broken' \(en\), part 'text': TemplateSyntaxError"):
        templates.render("broken", EMAIL, "zh", {"ticket": "SR-1"}, TZ)


def test_a_catalog_missing_a_part_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateFailure, match="'sms' is missing"):
        _catalog(tmp_path, {"subject": "Hi", "text": "Hello"})


def test_bad_button_payloads_raise_template_failure(tmp_path: Path) -> None:
    button = {"title": "Go", "payload": "/go{{ x | tojson }}"}
    templates = _catalog(tmp_path, {"subject": "s", "text": "t", "sms": "m", "buttons": [button]})
    assert templates.render("broken", "web", "en", {"x": {"a": 1}}, TZ).buttons[0].payload == '/go{"a":1}'
    with pytest.raises(TemplateFailure, match="64 bytes"):
        templates.render("broken", "web", "en", {"x": {"a": "x" * 60}}, TZ)
    with pytest.raises(TemplateFailure, match="not /intent"):
        templates.render("broken", "web", "en", {"x": "no json"}, TZ)


def test_unknown_language_falls_back_to_english(templates: Templates) -> None:
    context = samples("job_accepted")[0]
    assert templates.render("job_accepted", EMAIL, "fr", context, TZ) == templates.render(
        "job_accepted", EMAIL, "en", context, TZ
    )


def test_local_dt_converts_to_the_recipients_time_zone(templates: Templates) -> None:
    assert format_datetime("2026-06-15T02:00:00+00:00", "en", TZ) == "Mon 15 Jun 2026, 10:00"
    assert format_datetime("2026-06-15T02:00:00+00:00", "zh", TZ) == "2026年6月15日 周一 10:00"
    assert format_datetime("2026-06-15T02:00:00Z", "en", "Europe/London") == "Mon 15 Jun 2026, 03:00"
    assert format_datetime("2026-06-15T02:00:00", "en", "") == "Mon 15 Jun 2026, 02:00"  # naive: UTC
    assert format_datetime("2026-06-15T02:00:00+00:00", "en", "Not/AZone") == "Mon 15 Jun 2026, 02:00"
    assert format_datetime("", "en", TZ) == ""
    context = {
        "ticket": "SR-12",
        "job": "RO-5",
        "technician_name": "Tom Li",
        "scheduled_at": "2026-06-16T01:00:00+00:00",
    }
    en = templates.render("job_accepted", "telegram", "en", context, TZ).text
    assert "Tom Li will come on Tue 16 Jun 2026, 09:00 for your request SR-12" in en
    zh = templates.render("job_accepted", "telegram", "zh", context, TZ).text
    assert "2026年6月16日 周二 09:00" in zh
    los_angeles = templates.render("job_accepted", SMS, "en", context, "America/Los_Angeles").text
    assert "Mon 15 Jun 2026, 18:00" in los_angeles  # the day before, there


def test_local_date_and_money() -> None:
    assert format_date("2027-06-15", "en") == "15 Jun 2027"
    assert format_date("2027-06-15", "zh") == "2027年6月15日"
    assert format_date("2026-06-14T20:00:00+00:00", "en", TZ) == "15 Jun 2026"
    assert format_date("", "zh") == ""
    assert format_money("1234.5", "CNY", "en") == "CNY 1,234.50"
    assert format_money("1234.5", "CNY", "zh") == "¥1,234.50"
    assert format_money("0.005", "USD", "zh") == "US$0.01"
    assert format_money(-12, "SEK", "zh") == "-12.00 SEK"
    assert format_money("99", "", "en") == "99.00"


def test_labels_localise_and_fall_back(templates: Templates) -> None:
    assert templates.label("en", "status", "in_progress") == "in progress"
    assert templates.label("zh", "status", "in_progress") == "处理中"
    assert templates.label("zh", "channel", "web") == "网页聊天"
    assert templates.label("en", "status", "mystery") == "mystery"
    assert templates.label("zh", "nogroup", "x") == "x"
    assert templates.label("fr", "channel", "terminal") == "terminal"


def test_dispatch_card_buttons_are_valid_short_payloads(templates: Templates) -> None:
    context = samples("dispatch_card")[0]
    for lang, titles in (("en", ["Accept", "Decline", "My jobs"]), ("zh", ["接受", "拒接", "我的工单"])):
        for channel in CHAT_CHANNELS:
            buttons = templates.render("dispatch_card", channel, lang, context, TZ).buttons
            assert [button.title for button in buttons] == titles
            assert [button.payload for button in buttons] == [
                '/accept_job{"job_id":"RO-5"}',
                '/accept_job{"job_id":"RO-5","decision":"decline"}',
                "/my_jobs{}",
            ]
    for kind in KINDS:
        for lang in ("en", "zh"):
            for context in samples(kind):
                for button in templates.render(kind, "telegram", lang, context, TZ).buttons:
                    assert len(button.payload.encode("utf-8")) <= MAX_PAYLOAD_BYTES
                    match = PAYLOAD.match(button.payload)
                    assert match is not None, button.payload
                    assert isinstance(json.loads(match.group(2)), dict)


def test_dispatch_card_is_a_compact_card(templates: Templates) -> None:
    text = templates.render("dispatch_card", EMAIL, "en", samples("dispatch_card")[0], TZ).text
    assert "When: Tue 16 Jun 2026, 09:00" in text
    assert "Where: 12 Harbour Road, Pudong, Shanghai" in text
    assert "Customer: Wang Fang, +86 138 0013 8000" in text
    assert "Product: WM-1000 washing machine, serial WM2023-00917" in text
    assert "Warranty: in warranty until 15 Jun 2027" in text
    assert "E13 — Drain pump blocked" in text and "F05" in text and "F09" not in text  # three at most
    out = templates.render("dispatch_card", "telegram", "zh", samples("dispatch_card")[1], TZ).text
    assert "保修：已过保（2025年3月1日 到期）" in out and "时间：待与客户约定" in out


def test_complaint_wording_differs(templates: Templates) -> None:
    repair, complaint = samples("request_acknowledged")[0], samples("request_acknowledged")[2]
    assert complaint["kind"] == "complaint"
    en = templates.render("request_acknowledged", EMAIL, "en", complaint, TZ)
    assert en.subject == "SR-12: we received your complaint"
    assert "sorry" in en.text and "service manager" in en.text
    assert templates.render("request_acknowledged", EMAIL, "en", repair, TZ).subject == (
        "SR-12: we received your request"
    )
    zh = templates.render("request_acknowledged", EMAIL, "zh", complaint, TZ)
    assert zh.subject == "SR-12：我们已收到您的投诉" and "服务经理" in zh.text and "抱歉" in zh.text
    greeting = templates.render("request_acknowledged", EMAIL, "zh", repair, TZ).text.split("\n")[0]
    assert greeting == "Wang Fang，您好："


def test_job_completed_charge_lines(templates: Templates) -> None:
    def text(in_warranty: bool, charge: str, lang: str = "en") -> str:
        context = samples("job_completed")[0] | {"in_warranty": in_warranty, "total_charge": charge}
        return templates.render("job_completed", EMAIL, lang, context, TZ).text

    assert "covered by your warranty, so there is nothing to pay" in text(True, "0.00")
    assert "CNY" not in text(False, "0.00") and "warranty" not in text(False, "0.00")
    assert "Amount to pay: CNY 1,234.50." in text(False, "1234.50")
    covered = text(True, "80")
    assert "covered by your warranty" in covered and "CNY 80.00" in covered
    assert "应付金额：¥1,234.50。" in text(False, "1234.50", "zh")


def test_request_status_speaks_of_each_status(templates: Templates) -> None:
    texts = {
        status: templates.render("request_status", EMAIL, "en", context, TZ).text
        for context in samples("request_status")[: 2 * len(STATUSES) : 2]
        for status in [context["to_status"]]
    }
    assert len(set(texts.values())) == len(STATUSES)
    assert "What was done: Replaced the drain pump" in texts["resolved"]
    assert "Thank you" in texts["closed"]
    assert "Tom Li is now looking after" in texts["assigned"]


def test_one_line_parts_keep_english_spaces_around_curly_quotes() -> None:
    from notifier.templates import _one_line

    assert (
        _one_line("Reply “stop warranty reminders”\nto stop them.")
        == "Reply “stop warranty reminders” to stop them."
    )
    assert _one_line("回复 “不要再发保修提醒” 即可停止 。") == "回复“不要再发保修提醒”即可停止。"
