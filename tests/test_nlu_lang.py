"""Language detection: Chinese when ideographs make up a meaningful share of the message."""

from __future__ import annotations

import pytest

from bot.nlu.lang import detect_lang, reply_lang


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("my washing machine is leaking", "en"),
        ("我的洗衣机漏水了", "zh"),
        ("我的洗衣机WM2023-00917漏水", "zh"),
        ("查一下Acme的pipeline", "zh"),
        ("显示 Acme", "zh"),
        ("visited 张三 today with Li", "en"),
        ("log a visit to Acme, met 王经理", "en"),
        ("SR-12 进度", "zh"),
        ("ＳＲ－１２怎么样了", "zh"),
        ("hello", "en"),
    ],
)
def test_detect_lang(text: str, lang: str) -> None:
    assert detect_lang(text) == lang


def test_no_letters_uses_the_default() -> None:
    assert detect_lang("4/5", default="zh") == "zh"
    assert detect_lang("👍", default="en") == "en"
    assert detect_lang("", default="zh") == "zh"
    assert detect_lang("WM2023-00917", default="zh") == "en"  # Latin letters, even in an identifier


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("show me 仁济医院", "en"),  # a long name is still one name in an English sentence
        ("王 芳 called about the pump", "en"),
        ("查一下 Acme Appliances 的商机", "zh"),  # Chinese around an English name
        ("帮我 update OP-1", "zh"),
        ("Oliver Smith的电话是多少", "zh"),
        ("Acme Appliances最近怎么样", "zh"),
        ("我的洗衣机漏水了", "zh"),
    ],
)
def test_the_reply_language_takes_a_chinese_name_for_a_name(text: str, lang: str) -> None:
    assert reply_lang(text) == lang
