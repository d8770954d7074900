"""A choice among the buttons offered, named by its place ("the second one", "第二个")."""

import pytest

from bot.parsing import ordinal_choice


@pytest.mark.parametrize(
    ("text", "place"),
    [("the second one", 2), ("2nd", 2), ("number 3", 3), ("first", 1), ("the third deal", 3),
     ("第二个", 2), ("第2个", 2), ("选第一个", 1), ("第三个吧", 3)],
)
def test_an_ordinal_names_a_place(text: str, place: int) -> None:
    assert ordinal_choice(text) == place


@pytest.mark.parametrize("text", ["second hand washer", "两个", "OP-2", "the hospital one", "2 units"])
def test_other_words_are_no_ordinal(text: str) -> None:
    assert ordinal_choice(text) is None
