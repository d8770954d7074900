"""Rasa NLU YAML training data (`nlu:` with intent, synonym, regex and lookup blocks) as typed examples."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

YAML_SUFFIXES = (".yml", ".yaml")
# Top-level keys of a Rasa training data file; only `nlu` matters here, the others are tolerated.
TRAINING_DATA_KEYS = frozenset({"version", "nlu", "stories", "rules", "responses", "e2e_tests"})
BLOCK_KINDS = ("intent", "synonym", "regex", "lookup")
BLOCK_KEYS = frozenset({*BLOCK_KINDS, "examples", "metadata"})

# Rasa's annotation grammar: [text](entity), [text](entity:value), [text]{"entity": ...}, [text][{...}].
ENTITY_RE = re.compile(
    r"\[(?P<text>[^\]]+?)\]"
    r"(?:\((?P<entity>[^:)]+?)(?::(?P<value>[^)]+))?\)"
    r"|\{(?P<dict>[^}]+?)\}"
    r"|\[(?P<dicts>.*?)\])"
)
NAME_RE = re.compile(r"^[^\s/]+$")


class NluDataError(ValueError):
    """Malformed training data, located by file and line (1-based)."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class AnnotatedEntity:
    """One entity annotation of a training example; offsets into the example's plain text."""

    entity: str
    value: str
    start: int
    end: int
    text: str
    role: str | None = None
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: the plain text (annotations stripped), its intent and entities."""

    text: str
    intent: str
    entities: tuple[AnnotatedEntity, ...] = ()
    source: str = ""
    line: int = 0


@dataclass(slots=True)
class NluData:
    """Everything an NLU YAML data set holds."""

    examples: list[Example] = field(default_factory=list)
    # entity text (lower case) → canonical value, from `synonym` blocks and inline values.
    synonyms: dict[str, str] = field(default_factory=dict)
    regexes: dict[str, list[str]] = field(default_factory=dict)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def intents(self) -> list[str]:
        """Intent names in first-seen order."""
        return list(dict.fromkeys(example.intent for example in self.examples))

    @property
    def entity_names(self) -> list[str]:
        """Entity names used by annotations, in first-seen order."""
        return list(dict.fromkeys(e.entity for example in self.examples for e in example.entities))

    def data_hash(self) -> str:
        """A content hash (order-independent): the model records it to know when to retrain."""
        rows = sorted(
            json.dumps(
                [ex.intent, ex.text, [[e.entity, e.value, e.start, e.end] for e in ex.entities]],
                ensure_ascii=False,
            )
            for ex in self.examples
        )
        extra = json.dumps(
            [sorted(self.synonyms.items()), sorted(self.regexes.items()), sorted(self.lookups.items())],
            ensure_ascii=False,
        )
        digest = hashlib.sha256()
        for row in rows:
            digest.update(row.encode("utf-8"))
            digest.update(b"\n")
        digest.update(extra.encode("utf-8"))
        return digest.hexdigest()

    def merge(self, other: NluData) -> None:
        """Add another data set's content to this one."""
        self.examples.extend(other.examples)
        self.synonyms.update(other.synonyms)
        for name, patterns in other.regexes.items():
            self.regexes.setdefault(name, []).extend(patterns)
        for name, items in other.lookups.items():
            self.lookups.setdefault(name, []).extend(items)
        self.sources.extend(other.sources)


def data_files(paths: Path | str | Iterable[Path | str]) -> list[Path]:
    """The YAML files behind files and/or directories (directories are searched recursively, sorted)."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise NluDataError(str(path), 0, "no such file or directory")
    return files


def load_nlu_data(paths: Path | str | Iterable[Path | str]) -> NluData:
    """Load Rasa NLU YAML from files or directories.

    Inside a directory, YAML files without an `nlu` key (domain, config, stories) are skipped;
    a file named explicitly must be NLU training data.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    data = NluData()
    for item in items:
        path = Path(item)
        explicit = not path.is_dir()
        for file in data_files(path):
            loaded = load_nlu_file(file, required=explicit)
            if loaded is not None:
                data.merge(loaded)
    _apply_synonyms(data)
    return data


def load_nlu_file(path: Path | str, *, required: bool = True) -> NluData | None:
    """Load one file; None when `required` is false and the file holds no `nlu` section."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise NluDataError(source, 0, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NluDataError(source, line, "the file is not UTF-8 text") from None
    return parse_nlu_yaml(text, source, required=required)


def parse_nlu_yaml(text: str, source: str = "<string>", *, required: bool = True) -> NluData | None:
    """Parse NLU YAML from a string (see `load_nlu_file`)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise NluDataError(source, line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise NluDataError(source, 0, f"invalid YAML: {exc}") from None
    if root is None:
        if required:
            raise NluDataError(source, 1, "the file is empty; expected `version:` and `nlu:`")
        return None
    if not isinstance(root, MappingNode):
        raise NluDataError(source, _line(root), "the top level must be a mapping with `version:` and `nlu:`")
    top = _mapping(root, source)
    if "nlu" not in top:
        if required:
            raise NluDataError(source, _line(root), "no `nlu:` section")
        return None
    for key, (key_node, _value) in top.items():
        if key not in TRAINING_DATA_KEYS:
            allowed = ", ".join(sorted(TRAINING_DATA_KEYS))
            raise NluDataError(
                source, _line(key_node), f"unknown top-level key {key!r} (expected one of {allowed})"
            )
    nlu_node = top["nlu"][1]
    data = NluData(sources=[source])
    if isinstance(nlu_node, ScalarNode) and nlu_node.value in ("", "~", "null"):
        return data
    if not isinstance(nlu_node, SequenceNode):
        raise NluDataError(
            source, _line(nlu_node), "`nlu:` must be a list of `- intent:` (or synonym/regex/lookup) items"
        )
    for item in nlu_node.value:
        _parse_block(item, source, data)
    return data


def _parse_block(item: Node, source: str, data: NluData) -> None:
    if not isinstance(item, MappingNode):
        raise NluDataError(
            source, _line(item), "each `nlu:` item must be a mapping such as `- intent: greet`"
        )
    block = _mapping(item, source)
    kinds = [kind for kind in BLOCK_KINDS if kind in block]
    for key, (key_node, _value) in block.items():
        if key not in BLOCK_KEYS:
            raise NluDataError(
                source,
                _line(key_node),
                f"unknown key {key!r} (expected intent, synonym, regex or lookup with examples)",
            )
    if len(kinds) != 1:
        raise NluDataError(
            source, _line(item), "each item needs exactly one of `intent`, `synonym`, `regex`, `lookup`"
        )
    kind = kinds[0]
    name_node = block[kind][1]
    if not isinstance(name_node, ScalarNode) or not name_node.value.strip():
        raise NluDataError(source, _line(name_node), f"`{kind}` needs a name")
    name = name_node.value.strip()
    if kind == "intent" and not NAME_RE.match(name):
        raise NluDataError(source, _line(name_node), f"intent name {name!r} must not contain spaces or '/'")
    if "examples" not in block:
        raise NluDataError(source, _line(item), f"{kind} {name!r} has no `examples`")
    lines = list(_example_lines(block["examples"][1], source, f"{kind} {name!r}"))
    if kind == "intent":
        for text, line in lines:
            data.examples.append(_parse_example(text, name, source, line))
    elif kind == "synonym":
        for text, _line_no in lines:
            data.synonyms[text.lower()] = name
    elif kind == "regex":
        for pattern, line in lines:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise NluDataError(source, line, f"regex {name!r}: invalid pattern ({exc})") from None
            data.regexes.setdefault(name, []).append(pattern)
    else:
        data.lookups.setdefault(name, []).extend(text for text, _line_no in lines)


def _example_lines(node: Node, source: str, owner: str) -> Iterator[tuple[str, int]]:
    """(text, line) per example: a `|` block of `- ` lines, or a list of strings / `text:` mappings."""
    if isinstance(node, ScalarNode):
        first = node.start_mark.line + (1 if node.style in ("|", ">") else 0)
        found = False
        for offset, raw in enumerate(node.value.splitlines()):
            stripped = raw.strip()
            if not stripped:
                continue
            line = first + offset + 1
            if not stripped.startswith("-"):
                raise NluDataError(
                    source, line, f"{owner}: each example must start with '- ', got {stripped[:40]!r}"
                )
            text = stripped[1:].strip()
            if not text:
                raise NluDataError(source, line, f"{owner}: empty example")
            found = True
            yield text, line
        if not found:
            raise NluDataError(source, _line(node), f"{owner} has no examples")
        return
    if isinstance(node, SequenceNode):
        if not node.value:
            raise NluDataError(source, _line(node), f"{owner} has no examples")
        for child in node.value:
            if isinstance(child, ScalarNode):
                text = child.value.strip()
            elif isinstance(child, MappingNode):
                fields = _mapping(child, source)
                text_node = fields.get("text", (None, None))[1]
                if not isinstance(text_node, ScalarNode):
                    raise NluDataError(source, _line(child), f"{owner}: an example mapping needs `text:`")
                text = text_node.value.strip()
            else:
                raise NluDataError(source, _line(child), f"{owner}: an example must be text")
            if not text:
                raise NluDataError(source, _line(child), f"{owner}: empty example")
            yield text, _line(child)
        return
    raise NluDataError(
        source, _line(node), f"{owner}: `examples` must be a `|` block of '- ' lines or a list"
    )


def _parse_example(annotated: str, intent: str, source: str, line: int) -> Example:
    """Strip `[text](entity)` annotations, keeping offsets into the plain text."""
    plain: list[str] = []
    entities: list[AnnotatedEntity] = []
    position = 0
    length = 0
    for match in ENTITY_RE.finditer(annotated):
        before = annotated[position : match.start()]
        plain.append(before)
        length += len(before)
        entity_text = match.group("text")
        start, end = length, length + len(entity_text)
        plain.append(entity_text)
        length = end
        position = match.end()
        for spec in _entity_specs(match, source, line):
            name = spec.get("entity")
            if not isinstance(name, str) or not name.strip():
                raise NluDataError(source, line, f"entity annotation {match.group(0)!r} has no entity name")
            value = spec.get("value", entity_text)
            role, group = spec.get("role"), spec.get("group")
            entities.append(
                AnnotatedEntity(
                    entity=name.strip(),
                    value=str(value),
                    start=start,
                    end=end,
                    text=entity_text,
                    role=str(role) if role is not None else None,
                    group=str(group) if group is not None else None,
                )
            )
    plain.append(annotated[position:])
    return Example(text="".join(plain), intent=intent, entities=tuple(entities), source=source, line=line)


def _entity_specs(match: re.Match[str], source: str, line: int) -> list[dict[str, object]]:
    if match.group("entity") is not None:
        spec: dict[str, object] = {"entity": match.group("entity")}
        if match.group("value") is not None:
            spec["value"] = match.group("value")
        return [spec]
    raw = (
        "{" + match.group("dict") + "}"
        if match.group("dict") is not None
        else "[" + match.group("dicts") + "]"
    )
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        raise NluDataError(source, line, f"entity annotation {match.group(0)!r} is not valid JSON") from None
    specs = parsed if isinstance(parsed, list) else [parsed]
    if not specs or not all(isinstance(item, dict) for item in specs):
        raise NluDataError(source, line, f"entity annotation {match.group(0)!r} must be a JSON object")
    return specs


def _apply_synonyms(data: NluData) -> None:
    """Like Rasa's EntitySynonymMapper: inline `[text](entity:value)` values become synonyms too, and
    entity texts listed in a `synonym` block take its value."""
    for example in data.examples:
        for entity in example.entities:
            if entity.value != entity.text:
                data.synonyms.setdefault(entity.text.lower(), entity.value)
    if not data.synonyms:
        return
    updated: list[Example] = []
    for example in data.examples:
        entities = tuple(
            _with_value(entity, data.synonyms.get(entity.text.lower()))
            if entity.value == entity.text and entity.text.lower() in data.synonyms
            else entity
            for entity in example.entities
        )
        updated.append(
            Example(
                text=example.text,
                intent=example.intent,
                entities=entities,
                source=example.source,
                line=example.line,
            )
            if entities != example.entities
            else example
        )
    data.examples = updated


def _with_value(entity: AnnotatedEntity, value: str | None) -> AnnotatedEntity:
    return AnnotatedEntity(
        entity=entity.entity,
        value=value if value is not None else entity.value,
        start=entity.start,
        end=entity.end,
        text=entity.text,
        role=entity.role,
        group=entity.group,
    )


def _mapping(node: MappingNode, source: str) -> dict[str, tuple[Node, Node]]:
    result: dict[str, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            raise NluDataError(source, _line(key_node), "mapping keys must be plain names")
        if key_node.value in result:
            raise NluDataError(source, _line(key_node), f"duplicate key {key_node.value!r}")
        result[key_node.value] = (key_node, value_node)
    return result


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def annotate(example: Example) -> str:
    """The example back in Rasa's annotated form (for exporting a Rasa project)."""
    parts: list[str] = []
    position = 0
    by_span: dict[tuple[int, int], list[AnnotatedEntity]] = {}
    for entity in example.entities:
        by_span.setdefault((entity.start, entity.end), []).append(entity)
    for (start, end), group in sorted(by_span.items()):
        if start < position:
            continue  # overlapping annotations cannot be written inline; keep the first
        parts.append(example.text[position:start])
        span = example.text[start:end]
        if len(group) == 1 and group[0].value == span and group[0].role is None and group[0].group is None:
            parts.append(f"[{span}]({group[0].entity})")
        else:
            specs = [_spec(entity, span) for entity in group]
            body = json.dumps(specs[0] if len(specs) == 1 else specs, ensure_ascii=False)
            parts.append(f"[{span}]{body}")
        position = end
    parts.append(example.text[position:])
    return "".join(parts)


def _spec(entity: AnnotatedEntity, span: str) -> dict[str, str]:
    spec = {"entity": entity.entity}
    if entity.value != span:
        spec["value"] = entity.value
    if entity.role is not None:
        spec["role"] = entity.role
    if entity.group is not None:
        spec["group"] = entity.group
    return spec
