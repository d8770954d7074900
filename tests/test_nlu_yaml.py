"""Rasa NLU YAML loading: annotations and offsets, synonyms/regex/lookup blocks, errors with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.nlu.yaml_data import NluDataError, annotate, load_nlu_data, parse_nlu_yaml

FIXTURES = Path(__file__).parent / "nlu_fixtures"


def test_annotations_are_stripped_with_offsets_into_the_plain_text() -> None:
    data = load_nlu_data(FIXTURES / "train_small.yml")
    example = next(e for e in data.examples if e.text.startswith("move the Acme"))
    assert example.text == "move the Acme renewal to negotiation, 50k"
    assert example.intent == "update_deal"
    assert [(e.entity, e.value, e.start, e.end) for e in example.entities] == [
        ("customer", "Acme", 9, 13),
        ("stage", "negotiation", 25, 36),
    ]
    assert example.text[9:13] == "Acme" and example.text[25:36] == "negotiation"
    assert example.line == 64


def test_json_and_colon_values_and_chinese_offsets() -> None:
    data = load_nlu_data(FIXTURES / "train_small.yml")
    by_text = {e.text: e for e in data.examples}
    closed = by_text["set the Globex deal to closed won"].entities[1]
    assert (closed.entity, closed.value, closed.start, closed.end) == ("stage", "closed_won", 23, 33)
    won = by_text["we won the Initech deal"].entities[0]
    assert (won.value, won.start, won.end, won.text) == ("closed_won", 3, 6, "won")
    zh = by_text["把华为的商机改成谈判"]
    assert [(e.entity, e.value, e.start, e.end) for e in zh.entities] == [
        ("customer", "华为", 1, 3),
        ("stage", "negotiation", 8, 10),
    ]


def test_synonym_regex_and_lookup_blocks() -> None:
    data = load_nlu_data(FIXTURES / "train_small.yml")
    assert data.synonyms["signed"] == "closed_won"
    assert data.synonyms["签了"] == "closed_won"
    # inline values become synonyms too (Rasa's EntitySynonymMapper does the same)
    assert data.synonyms["won"] == "closed_won"
    assert data.regexes == {"account_number": [r"\d{10,12}"]}
    assert data.lookups == {"city": ["Shanghai", "北京"]}
    assert data.intents == [
        "greet",
        "goodbye",
        "check_warranty",
        "open_service_request",
        "update_deal",
        "out_of_scope",
    ]


def test_synonym_block_sets_the_value_of_plain_annotations(tmp_path: Path) -> None:
    path = tmp_path / "nlu.yml"
    path.write_text(
        'version: "3.1"\nnlu:\n- intent: update_deal\n  examples: |\n    - we [signed](stage) it\n'
        "- synonym: closed_won\n  examples: |\n    - Signed\n",
        encoding="utf-8",
    )
    entity = load_nlu_data(path).examples[0].entities[0]
    assert (entity.value, entity.text, entity.start, entity.end) == ("closed_won", "signed", 3, 9)


def test_yes_no_in_a_list_stay_text() -> None:
    data = parse_nlu_yaml('version: "3.1"\nnlu:\n- intent: affirm\n  examples:\n  - yes\n  - no problem\n')
    assert data is not None
    assert [e.text for e in data.examples] == ["yes", "no problem"]
    assert [e.line for e in data.examples] == [5, 6]


def test_directory_loading_skips_non_nlu_files(tmp_path: Path) -> None:
    (tmp_path / "nlu.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples: |\n    - hi\n', encoding="utf-8"
    )
    (tmp_path / "domain.yml").write_text("version: '3.1'\nintents:\n- greet\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not yaml at all: [", encoding="utf-8")
    data = load_nlu_data(tmp_path)
    assert [(e.text, e.intent) for e in data.examples] == [("hi", "greet")]


def test_hash_changes_with_content_not_with_order() -> None:
    one = parse_nlu_yaml("nlu:\n- intent: a\n  examples: |\n    - x\n    - y\n")
    two = parse_nlu_yaml("nlu:\n- intent: a\n  examples: |\n    - y\n    - x\n")
    three = parse_nlu_yaml("nlu:\n- intent: a\n  examples: |\n    - y\n    - z\n")
    assert one is not None and two is not None and three is not None
    assert one.data_hash() == two.data_hash() != three.data_hash()


def test_annotate_round_trips() -> None:
    data = load_nlu_data(FIXTURES / "train_small.yml")
    for example in data.examples:
        again = parse_nlu_yaml(
            f"nlu:\n- intent: {example.intent}\n  examples: |\n    - {annotate(example)}\n"
        )
        assert again is not None
        assert again.examples[0].text == example.text
        assert [(e.entity, e.value, e.start, e.end) for e in again.examples[0].entities] == [
            (e.entity, e.value, e.start, e.end) for e in example.entities
        ]


@pytest.mark.parametrize(
    ("name", "line", "fragment"),
    [
        ("bad_intent_name.yml", 6, "intent name 'check warranty' must not contain spaces or '/'"),
        ("bad_example_line.yml", 7, "each example must start with '- '"),
        ("bad_yaml.yml", 6, "invalid YAML"),
        ("bad_structure.yml", 6, "unknown key 'utterance'"),
    ],
)
def test_malformed_files_name_file_and_line(name: str, line: int, fragment: str) -> None:
    with pytest.raises(NluDataError) as caught:
        load_nlu_data(FIXTURES / name)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{FIXTURES / name}:{line}: ")
    assert fragment in str(caught.value)


def test_slash_in_intent_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NluDataError, match=r"x\.yml:4: intent name 'faq/ask' must not contain"):
        parse_nlu_yaml('nlu:\n- intent: greet\n  examples: "- hi"\n- intent: faq/ask\n', "x.yml")
    with pytest.raises(NluDataError, match="no such file or directory"):
        load_nlu_data(tmp_path / "missing.yml")
    with pytest.raises(NluDataError, match=r":1: no `nlu:` section"):
        parse_nlu_yaml("version: '3.1'\nintents: [a]\n", "domain.yml")
    bad = tmp_path / "latin1.yml"
    bad.write_bytes("nlu:\n- intent: a\n  examples: |\n    - caf\xe9\n".encode("latin-1"))
    with pytest.raises(NluDataError, match=r"latin1\.yml:4: the file is not UTF-8"):
        load_nlu_data(bad)


def test_large_data_set_loads_quickly(tmp_path: Path) -> None:
    import time

    lines = ['version: "3.1"', "nlu:"]
    for intent in range(300):
        lines.append(f"- intent: intent_{intent}")
        lines.append("  examples: |")
        lines.extend(f"    - example {n} of intent {intent} with [ACME{n}](customer)" for n in range(20))
    path = tmp_path / "big.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.perf_counter()
    data = load_nlu_data(path)
    assert len(data.examples) == 6000 and len(data.intents) == 300
    assert time.perf_counter() - started < 5
