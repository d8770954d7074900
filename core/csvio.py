"""Reading and field validation for `crmbot import` CSV files: bytes in, checked rows out, no database."""

from __future__ import annotations

import calendar
import codecs
import csv
import datetime
import difflib
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "IMPORT_COLUMNS",
    "MAX_CATEGORY_DEPTH",
    "MAX_REPORTED_ERRORS",
    "CsvFileError",
    "CsvRow",
    "CsvTable",
    "FieldError",
    "RowError",
    "RowErrors",
    "cap_errors",
    "optional",
    "parse_category_path",
    "parse_choice",
    "parse_code",
    "parse_date",
    "parse_email",
    "parse_int",
    "parse_lang",
    "parse_phone",
    "read_csv",
    "require",
    "validate_rows",
]

IMPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("code", "name", "type", "segment", "phone", "email", "address", "owner"),
    "contacts": ("customer_code", "name", "title", "phone", "email", "lang"),
    "products": (
        "serial_number",
        "product_code",
        "product_name",
        "customer_code",
        "sold_on",
        "warranty_months",
        "warranty_type",
    ),
    "kb": ("code", "title", "category", "product_code", "symptoms", "solution", "lang"),
}

MAX_REPORTED_ERRORS = 50
MAX_CATEGORY_DEPTH = 6

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------
# Result and error types
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem in an import file, tied to the physical line it was found on (header is line 1)."""

    line: int
    reason: str

    def format(self, filename: str) -> str:
        """Render as ``FILE:LINE: reason``, the form editors and terminals can jump to."""
        return f"{filename}:{self.line}: {self.reason}"


class CsvFileError(Exception):
    """The file as a whole can't be read (encoding, header); carries errors: list[RowError]."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        if not errors:
            raise ValueError("CsvFileError needs at least one RowError")
        self.errors: list[RowError] = list(errors)
        super().__init__("; ".join(f"line {e.line}: {e.reason}" for e in self.errors))

    def format(self, filename: str) -> list[str]:
        """All errors as ``FILE:LINE: reason`` lines, ready to print."""
        return [error.format(filename) for error in self.errors]


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data record: the physical line where it starts and its stripped values keyed by column."""

    line: int
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class CsvTable:
    """A decoded, header-checked import file."""

    encoding: str
    rows: list[CsvRow]
    delimiter: str = ","


class FieldError(ValueError):
    """One cell failed validation; the importer adds the row's line number."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"{column}: {message}")
        self.column = column
        self.message = message


class RowErrors(Exception):
    """Several FieldErrors from one row, raised together so the user can fix them all in one pass."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


def cap_errors(errors: Sequence[RowError], limit: int = MAX_REPORTED_ERRORS) -> list[RowError]:
    """Sort errors by line and keep the first ``limit``, summarising the rest in one final entry."""
    ordered = sorted(errors, key=lambda e: e.line)
    if len(ordered) <= limit:
        return ordered
    rest = len(ordered) - limit
    # The summary points at the first error not shown, so the user knows where the hidden ones start.
    summary = RowError(ordered[limit].line, f"… and {rest} more error{'s' if rest != 1 else ''} from here on")
    return [*ordered[:limit], summary]


def _file_error(line: int, reason: str) -> CsvFileError:
    """Shorthand for a single-problem CsvFileError."""
    return CsvFileError([RowError(line, reason)])


# ----------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------

_SAVE_AS_UTF8 = "save the file as UTF-8 (in Excel: Save As → 'CSV UTF-8')"

# C0/C1 control characters other than tab, CR and LF, plus lone surrogates: never part of real CRM text, and
# their presence almost always means a binary file or a broken export.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_ASCII_RUN_RE = re.compile("[\x00-\x7f]+")


def _count_line_breaks(chunk: bytes | str) -> int:
    """Count CRLF, CR and LF line breaks the way csv over ``newline=''`` text does."""
    if isinstance(chunk, bytes):
        return chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
    return chunk.count("\n") + chunk.count("\r") - chunk.count("\r\n")


def _line_start(chunk: bytes, pos: int) -> int:
    """Offset of the first byte of the line containing ``pos``."""
    return max(chunk.rfind(b"\n", 0, pos), chunk.rfind(b"\r", 0, pos)) + 1


def _is_chinese_char(char: str) -> bool:
    """True for CJK ideographs and the punctuation Chinese text is written with."""
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= code <= 0x4DBF  # extension A
        or 0x20000 <= code <= 0x3134F  # extensions B-G
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0x3000 <= code <= 0x303F  # CJK symbols and punctuation (、。「」)
        or 0xFF00 <= code <= 0xFFEF  # full-width forms (，：（）)
        or 0xFE30 <= code <= 0xFE4F  # CJK compatibility forms
        or 0x2010 <= code <= 0x206F  # general punctuation (“”‘’…—) used in Chinese prose
        or code == 0x00B7  # middle dot in transliterated names
    )


def _in_gb2312(char: str) -> bool:
    """True if the character is in GB2312, i.e. a common simplified-Chinese character or symbol."""
    try:
        char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def _decode_as_chinese(body: bytes) -> str | None:
    """Decode a non-UTF-8 file as GB18030 if, and only if, the result reads as Chinese text."""
    try:
        text = body.decode("gb18030")
    except UnicodeDecodeError:
        return None
    # A UTF-8 file with a few damaged bytes often also decodes as GB18030 (as mojibake like 涓枃); if most
    # non-ASCII sequences are valid UTF-8 the file is broken UTF-8, not GBK, and must be refused.
    loose = _ASCII_RUN_RE.sub("", body.decode("utf-8", errors="replace"))
    bad_utf8 = loose.count("\ufffd")
    if len(loose) - bad_utf8 >= bad_utf8:
        return None
    counts = Counter(_ASCII_RUN_RE.sub("", text))
    total = sum(counts.values())
    chinese = sum(n for char, n in counts.items() if _is_chinese_char(char) or _in_gb2312(char))
    common = sum(n for char, n in counts.items() if _in_gb2312(char))
    # Latin-1 text often decodes as GBK too ("Müller" -> "M黮ler"), but lands on rare ideographs outside
    # GB2312; real Chinese text is overwhelmingly common characters.
    if chinese * 10 < total * 9 or common * 2 < total:
        return None
    return text


def _decode(data: bytes) -> tuple[str, str]:
    """Return (text, encoding name) or raise CsvFileError saying why the bytes aren't usable text."""
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise _file_error(1, "this is an Excel workbook or other archive, not CSV; " + _SAVE_AS_UTF8)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _file_error(1, "the file is UTF-16 text; " + _SAVE_AS_UTF8)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _file_error(
            _count_line_breaks(data[:nul]) + 1,
            "contains NUL bytes, so this is a binary file (or UTF-16 text), not CSV; " + _SAVE_AS_UTF8,
        )

    has_bom = data.startswith(codecs.BOM_UTF8)
    encoding = "utf-8-sig" if has_bom else "utf-8"
    body = data[len(codecs.BOM_UTF8) :] if has_bom else data
    try:
        return body.decode("utf-8"), encoding
    except UnicodeDecodeError as exc:
        pos = exc.start
    # A BOM is an explicit claim of UTF-8, so only BOM-less files get the GBK second chance.
    if not has_bom:
        text = _decode_as_chinese(body)
        if text is not None:
            return text, "gb18030"
    start = _line_start(body, pos)
    column = len(body[start:pos].decode("utf-8", errors="replace")) + 1
    raise _file_error(
        _count_line_breaks(body[:pos]) + 1,
        f"not UTF-8 text (byte 0x{body[pos]:02X} at column {column}); {_SAVE_AS_UTF8}",
    )


def _check_controls(text: str) -> None:
    """Refuse text with control characters, which mean a binary file or a corrupted export."""
    match = _CONTROL_RE.search(text)
    if match is None:
        return
    before = text[: match.start()]
    line_start = max(before.rfind("\n"), before.rfind("\r")) + 1
    raise _file_error(
        _count_line_breaks(before) + 1,
        f"contains the invisible control character U+{ord(match.group()):04X} at column "
        f"{match.start() - line_start + 1}; this does not look like a CSV text file",
    )


# ----------------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    """One csv record (or a parse failure) with the physical line it starts on."""

    line: int
    fields: list[str] | None
    error: str | None = None
    fatal: bool = False


def _csv_error_reason(exc: csv.Error, start: int, delimiter: str) -> tuple[str, bool]:
    """Translate csv module errors into advice a spreadsheet user can act on; the bool means 'stop'."""
    message = str(exc)
    if "field larger than field limit" in message:
        limit = csv.field_size_limit()
        # Past this point the parser is inside a runaway quoted value, so any further errors would be noise.
        return (f'a value is longer than {limit} characters; probably a " that is never closed', True)
    if "unexpected end of data" in message:
        return (f'a quoted value starting on line {start} is never closed (missing ")', True)
    if "expected after" in message:
        return (
            f'a quoted value must be followed by "{delimiter}" or the end of the line; '
            'to put a " inside a value, write it twice ("")',
            False,
        )
    return (f"this line is not valid CSV ({message})", False)


def _records(text: str, delimiter: str) -> Iterator[_Record]:
    """Yield records with their starting physical line, turning csv errors into error records."""
    # newline="" makes StringIO split on CRLF, CR and LF without translating them, so csv sees quoted line
    # breaks intact and reader.line_num counts physical lines.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            reason, fatal = _csv_error_reason(exc, start, delimiter)
            # Fatal errors are runaway quotes: the useful pointer is where the quoted value began.
            line = start if fatal else reader.line_num
            yield _Record(line, None, reason, fatal)
            if fatal:
                return
        else:
            yield _Record(start, fields)
        start = reader.line_num + 1


def _is_blank(fields: list[str]) -> bool:
    """True for empty lines and for rows of empty cells (Excel writes ',,,,' for formatted blank rows)."""
    return all(not field.strip() for field in fields)


def _first_record(records: Iterator[_Record]) -> _Record | None:
    """Advance past blank lines and return the first real record (the header)."""
    for record in records:
        if record.fields is None or not _is_blank(record.fields):
            return record
    return None


def _normalise_header(fields: list[str]) -> list[str]:
    """Column names compare stripped and lower-cased; a stray BOM (double-BOM files) is dropped too."""
    return [field.replace("\ufeff", "").strip().lower() for field in fields]


def _header_errors(line: int, raw: list[str], names: list[str], kind: str) -> list[RowError]:
    """Every problem with the header, each naming the columns involved."""
    expected = IMPORT_COLUMNS[kind]
    expected_text = ",".join(expected)
    for other, columns in IMPORT_COLUMNS.items():
        if other != kind and set(names) == set(columns):
            return [RowError(line, f"this looks like a {other} file, not {kind}; expected: {expected_text}")]
    missing = [column for column in expected if column not in names]
    if len(missing) == len(expected):
        if len(raw) == 1 and "\t" in raw[0]:
            return [RowError(line, "the file looks tab-separated; save it as CSV (comma-separated)")]
        found = ", ".join(_show(field) for field in raw[:4]) + (", …" if len(raw) > 4 else "")
        return [RowError(line, f"the first line must be the header {expected_text} (found {found})")]

    errors: list[RowError] = []
    if missing:
        errors.append(RowError(line, f"missing column(s): {', '.join(missing)} (expected: {expected_text})"))
    unknown = [name for name in dict.fromkeys(names) if name and name not in expected]
    if unknown:
        described = []
        for name in unknown:
            guess = difflib.get_close_matches(name.replace(" ", "_"), missing, n=1, cutoff=0.6)
            described.append(f"{name} (did you mean {guess[0]}?)" if guess else name)
        errors.append(
            RowError(line, f"unknown column(s): {', '.join(described)} (expected: {expected_text})")
        )
    duplicates = [name for name, n in Counter(names).items() if name and n > 1]
    if duplicates:
        errors.append(RowError(line, f"duplicate column(s): {', '.join(duplicates)}"))
    unnamed = [str(i) for i, name in enumerate(names, start=1) if not name]
    if unnamed:
        errors.append(
            RowError(line, f"column(s) {', '.join(unnamed)} of the header have no name; delete those columns")
        )
    return errors


def _count_reason(found: int, expected: int, delimiter: str) -> str:
    """Explain a wrong number of fields, with the most likely cause."""
    separator = "comma" if delimiter == "," else "semicolon"
    if found > expected:
        hint = f"if a value contains a {separator}, put the whole value in double quotes"
    else:
        hint = "a value may be missing, or a line break inside a value is not quoted"
    return f"expected {expected} values (one per column), found {found}; {hint}"


def _format_size(size: int) -> str:
    """Human-readable byte count for size-limit messages."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size} bytes"


def read_csv(data: bytes, kind: str, *, max_bytes: int = 200 * 1024 * 1024) -> CsvTable:
    """Decode and parse an import file of ``kind``, checking the header and every row's field count."""
    try:
        expected = IMPORT_COLUMNS[kind]
    except KeyError:
        raise ValueError(
            f"unknown import kind {kind!r}; expected one of {', '.join(IMPORT_COLUMNS)}"
        ) from None
    if len(data) > max_bytes:
        raise _file_error(
            1, f"the file is too large ({_format_size(len(data))}; the limit is {_format_size(max_bytes)})"
        )
    text, encoding = _decode(data)
    _check_controls(text)

    delimiter = ","
    records = _records(text, delimiter)
    header = _first_record(records)
    if header is None:
        raise _file_error(1, f"the file is empty; the first line must be the header {','.join(expected)}")
    # Excel in locales with a decimal comma saves "CSV" with semicolons; accept that when the header is
    # unmistakably semicolon-separated, and report header problems in terms of the semicolon columns.
    if header.fields is not None and len(header.fields) == 1 and ";" in header.fields[0]:
        semicolon_records = _records(text, ";")
        semicolon_header = _first_record(semicolon_records)
        if semicolon_header is not None and semicolon_header.fields is not None:
            delimiter, records, header = ";", semicolon_records, semicolon_header
    if header.fields is None:
        raise _file_error(header.line, f"the header is not valid CSV: {header.error}")

    names = _normalise_header(header.fields)
    header_errors = _header_errors(header.line, header.fields, names, kind)
    if header_errors:
        raise CsvFileError(header_errors)

    index = {name: position for position, name in enumerate(names)}
    width = len(names)
    rows: list[CsvRow] = []
    errors: list[RowError] = []
    for record in records:
        if record.fields is None:
            errors.append(RowError(record.line, record.error or "this line is not valid CSV"))
            continue
        if _is_blank(record.fields):
            continue
        if len(record.fields) != width:
            errors.append(RowError(record.line, _count_reason(len(record.fields), width, delimiter)))
            continue
        # Values are kept as text: a cell like "=HYPERLINK(...)" is stored, never evaluated.
        values = {column: record.fields[index[column]].strip() for column in expected}
        rows.append(CsvRow(record.line, values))
    if errors:
        raise CsvFileError(cap_errors(errors))
    return CsvTable(encoding=encoding, rows=rows, delimiter=delimiter)


# ----------------------------------------------------------------------------------------------------------
# Field validators
# ----------------------------------------------------------------------------------------------------------

_SHOW_LIMIT = 40


def _show(value: str) -> str:
    """Quote a cell value for a message, shortened so one huge cell can't flood the terminal."""
    flat = value.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    if len(flat) > _SHOW_LIMIT:
        flat = flat[: _SHOW_LIMIT - 1] + "…"
    return f"'{flat}'"


def _cell(row: CsvRow, column: str) -> str:
    """The row's value for ``column``; a KeyError here is an importer bug, not a user error."""
    try:
        return row.values[column]
    except KeyError:
        raise KeyError(f"column {column!r} is not part of this import (line {row.line})") from None


def _check_length(column: str, value: str, max_len: int) -> None:
    """Reject values longer than the database column allows."""
    if len(value) > max_len:
        raise FieldError(column, f"{_show(value)} is too long ({len(value)} characters; at most {max_len})")


def require(row: CsvRow, column: str, *, max_len: int = 200) -> str:
    """A non-empty text value of at most ``max_len`` characters."""
    value = _cell(row, column)
    if not value:
        raise FieldError(column, "a value is required (the cell is empty)")
    _check_length(column, value, max_len)
    return value


def optional(row: CsvRow, column: str, *, max_len: int = 200) -> str | None:
    """A text value of at most ``max_len`` characters, or None when the cell is empty."""
    value = _cell(row, column)
    if not value:
        return None
    _check_length(column, value, max_len)
    return value


_DATE_RE = re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})", re.ASCII)
_DATE_ZH_RE = re.compile(r"(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日?", re.ASCII)
_DAY_FIRST_RE = re.compile(r"\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}", re.ASCII)


def parse_date(row: CsvRow, column: str) -> datetime.date:
    """A calendar date written YYYY-MM-DD (also YYYY/MM/DD, YYYY.M.D and 2023年2月3日)."""
    value = _cell(row, column)
    if not value:
        raise FieldError(column, "a date is required (use YYYY-MM-DD)")
    # NFKC maps full-width digits and separators typed with a Chinese IME to ASCII.
    text = unicodedata.normalize("NFKC", value)
    match = _DATE_RE.fullmatch(text)
    parts = (match.group(1), match.group(3), match.group(4)) if match else None
    if parts is None and (zh := _DATE_ZH_RE.fullmatch(text)):
        parts = (zh.group(1), zh.group(2), zh.group(3))
    if parts is None:
        if _DAY_FIRST_RE.fullmatch(text):
            # 03/02/2023 is March 2 in the US and February 3 elsewhere; guessing would corrupt dates silently.
            raise FieldError(column, f"{_show(value)} is ambiguous (day/month order); use YYYY-MM-DD")
        raise FieldError(column, f"{_show(value)} is not a date (use YYYY-MM-DD)")
    year, month, day = (int(part) for part in parts)
    if year < 1:
        raise FieldError(column, f"{_show(value)} is not a date (use YYYY-MM-DD)")
    if not 1 <= month <= 12:
        raise FieldError(column, f"{_show(value)} is not a date (the month must be 1-12)")
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        month_name = calendar.month_name[month]
        raise FieldError(column, f"{_show(value)} is not a date ({month_name} {year} has {days} days)")
    return datetime.date(year, month, day)


_INT_RE = re.compile(r"[+-]?\d+")


def parse_int(row: CsvRow, column: str, *, min_value: int, max_value: int) -> int:
    """A whole number between ``min_value`` and ``max_value`` inclusive."""
    value = _cell(row, column)
    if not value:
        raise FieldError(column, f"a whole number from {min_value} to {max_value} is required")
    if not _INT_RE.fullmatch(value):
        raise FieldError(column, f"{_show(value)} is not a whole number")
    digits = value.lstrip("+-").lstrip("0") or "0"
    # Python refuses to parse very long digit strings; anything this long is out of any sane range anyway.
    if len(digits) > 30:
        raise FieldError(column, f"{_show(value)} is out of range (must be from {min_value} to {max_value})")
    number = int(value)
    if not min_value <= number <= max_value:
        raise FieldError(column, f"{_show(value)} is out of range (must be from {min_value} to {max_value})")
    return number


def parse_choice(row: CsvRow, column: str, choices: Sequence[str], *, default: str | None = None) -> str:
    """One of ``choices`` (case-insensitive, returned as spelled in ``choices``); empty gives ``default``."""
    value = _cell(row, column)
    allowed = ", ".join(choices)
    if not value:
        if default is not None:
            return default
        raise FieldError(column, f"a value is required (one of: {allowed})")
    folded = value.casefold()
    for choice in choices:
        if choice.casefold() == folded:
            return choice
    raise FieldError(column, f"{_show(value)} is not one of: {allowed}")


# Legal only in quoted RFC 5322 local parts, which in CRM data come from copy-paste accidents, not real mail.
_EMAIL_LOCAL_BAD_RE = re.compile(r'[\s<>()\[\],;:"\\]')
_DOMAIN_LABEL_RE = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")


def parse_email(row: CsvRow, column: str) -> str | None:
    """An email address with its domain lower-cased, or None when the cell is empty."""
    value = _cell(row, column)
    if not value:
        return None

    def bad(why: str) -> FieldError:
        """The error for this value, with the specific reason."""
        return FieldError(column, f"{_show(value)} is not a valid email address ({why})")

    if len(value) > 254:
        raise bad("longer than 254 characters")
    if "@" not in value:
        raise bad("use a half-width @ instead of ＠" if "＠" in value else "no '@'")
    if value.count("@") > 1:
        raise bad("put only one address in the cell")
    local, _, domain = value.partition("@")
    if not local:
        raise bad("nothing before the '@'")
    if re.search(r"\s", value):
        raise bad("spaces are not allowed")
    if (
        len(local) > 64
        or _EMAIL_LOCAL_BAD_RE.search(local)
        or ".." in local
        or local.startswith(".")
        or local.endswith(".")
    ):
        raise bad("the part before the '@' is malformed")
    labels = domain.split(".")
    top = labels[-1]
    if (
        len(labels) < 2
        or not all(_DOMAIN_LABEL_RE.fullmatch(label) for label in labels)
        or not ((top.isalpha() and len(top) >= 2) or top.lower().startswith("xn--"))
    ):
        raise bad("the part after the '@' must be a domain such as example.com")
    return f"{local}@{domain.lower()}"


_PHONE_SEPARATORS_RE = re.compile(r"[\s().-]")
_PHONE_RE = re.compile(r"\+?[0-9]+", re.ASCII)
_EXCEL_NUMBER_RE = re.compile(r"[0-9]+(\.[0-9]+)?[eE]\+?[0-9]+", re.ASCII)


def parse_phone(row: CsvRow, column: str) -> str | None:
    """A phone number normalised to an optional '+' and 6-20 digits, or None when the cell is empty."""
    value = _cell(row, column)
    if not value:
        return None
    # NFKC turns full-width digits, plus signs and brackets typed with a Chinese IME into their ASCII forms.
    text = unicodedata.normalize("NFKC", value)
    if _EXCEL_NUMBER_RE.fullmatch(text):
        raise FieldError(
            column,
            f"{_show(value)} was turned into a number by Excel and its digits are lost; "
            "format the column as Text and export again",
        )
    if re.search(r"[,;/、]", text):
        raise FieldError(column, f"{_show(value)} looks like several numbers; put one phone number per cell")
    compact = _PHONE_SEPARATORS_RE.sub("", text)
    if not _PHONE_RE.fullmatch(compact):
        raise FieldError(
            column,
            f"{_show(value)} is not a phone number (use digits, optionally starting with +; "
            "spaces, dashes and parentheses are allowed)",
        )
    digits = len(compact.lstrip("+"))
    if not 6 <= digits <= 20:
        raise FieldError(column, f"{_show(value)} has {digits} digits; a phone number has 6 to 20")
    return compact


_LANG_ALIASES: dict[str, str] = {
    "en": "en",
    "eng": "en",
    "english": "en",
    "英文": "en",
    "英语": "en",
    "英語": "en",
    "zh": "zh",
    "cn": "zh",
    "chs": "zh",
    "cht": "zh",
    "zho": "zh",
    "chi": "zh",
    "chinese": "zh",
    "mandarin": "zh",
    "中文": "zh",
    "中": "zh",
    "汉语": "zh",
    "漢語": "zh",
    "简体中文": "zh",
    "繁体中文": "zh",
    "繁體中文": "zh",
    "普通话": "zh",
}
_LANG_TAG_RE = re.compile(r"(en|zh)(-[a-z0-9]{1,8})*", re.ASCII)


def parse_lang(row: CsvRow, column: str) -> str:
    """'en' or 'zh' from common spellings (zh-CN, zh_cn, cn, 中文, english…); empty means 'en'."""
    value = _cell(row, column)
    if not value:
        return "en"
    key = value.casefold().replace("_", "-")
    if key in _LANG_ALIASES:
        return _LANG_ALIASES[key]
    tag = _LANG_TAG_RE.fullmatch(key)
    if tag:
        return tag.group(1)
    raise FieldError(column, f"{_show(value)} is not a supported language (use en or zh)")


def parse_category_path(row: CsvRow, column: str) -> tuple[str, ...]:
    """A category path 'a/b/c' as its stripped parts, at most MAX_CATEGORY_DEPTH levels."""
    value = require(row, column)
    # A Chinese IME easily produces the full-width slash; it is never meant as part of a name.
    parts = tuple(part.strip() for part in value.replace("／", "/").split("/"))
    if any(not part for part in parts):
        raise FieldError(column, f"{_show(value)} has an empty level; write categories as a/b/c")
    if len(parts) > MAX_CATEGORY_DEPTH:
        raise FieldError(
            column, f"{_show(value)} has {len(parts)} levels; at most {MAX_CATEGORY_DEPTH} are allowed"
        )
    return parts


_CODE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./")


def _describe_char(char: str) -> str:
    """Name a character so the user can find it even when it is invisible or look-alike."""
    if char == " ":
        return "a space"
    if char.isspace():
        return f"a space character (U+{ord(char):04X})"
    if unicodedata.east_asian_width(char) == "F":
        return f"the full-width character '{char}' (switch the keyboard to half-width)"
    if char.isprintable():
        return f"'{char}'"
    return f"the character U+{ord(char):04X}"


def parse_code(row: CsvRow, column: str, *, max_len: int = 64) -> str:
    """An identifier of ASCII letters, digits and - _ . /, kept exactly as typed."""
    value = _cell(row, column)
    if not value:
        raise FieldError(column, "a code is required (the cell is empty)")
    _check_length(column, value, max_len)
    for char in value:
        if char not in _CODE_CHARS:
            raise FieldError(
                column,
                f"{_show(value)} contains {_describe_char(char)}; "
                "codes may only use letters A-Z, digits and - _ . /",
            )
    return value


def validate_rows(table: CsvTable, fn: Callable[[CsvRow], T]) -> tuple[list[T], list[RowError]]:
    """Apply ``fn`` to every row, collecting its FieldErrors (or RowErrors) as RowErrors with line numbers."""
    results: list[T] = []
    errors: list[RowError] = []
    for row in table.rows:
        try:
            results.append(fn(row))
        except RowErrors as exc:
            errors.extend(RowError(row.line, f"{error.column}: {error.message}") for error in exc.errors)
        except FieldError as exc:
            errors.append(RowError(row.line, f"{exc.column}: {exc.message}"))
    return results, errors
