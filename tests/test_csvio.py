"""Tests for core.csvio: decoding, header checks, line numbers and the field validators."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.csvio import (
    IMPORT_COLUMNS,
    MAX_REPORTED_ERRORS,
    CsvFileError,
    CsvRow,
    CsvTable,
    FieldError,
    RowError,
    RowErrors,
    cap_errors,
    optional,
    parse_category_path,
    parse_choice,
    parse_code,
    parse_date,
    parse_email,
    parse_int,
    parse_lang,
    parse_phone,
    read_csv,
    require,
    validate_rows,
)

CONTACTS_HEADER = "customer_code,name,title,phone,email,lang"


def contacts(*lines: str, newline: str = "\n") -> bytes:
    """A contacts CSV (header plus ``lines``) as UTF-8 bytes."""
    return newline.join([CONTACTS_HEADER, *lines, ""]).encode("utf-8")


def file_errors(data: bytes, kind: str = "contacts") -> list[RowError]:
    """The errors read_csv raises for ``data``; fails the test if it doesn't raise."""
    with pytest.raises(CsvFileError) as info:
        read_csv(data, kind)
    return info.value.errors


def cell(column: str, value: str) -> CsvRow:
    """A one-cell row for validator tests."""
    return CsvRow(line=7, values={column: value})


# ---------------------------------------------------------------------------------------------------------
# read_csv: happy paths and line numbers
# ---------------------------------------------------------------------------------------------------------


def test_reads_rows_with_stripped_values_in_column_order() -> None:
    table = read_csv(contacts("  C001 , Li Lei ,CTO, +86 138 ,li@x.com,zh"), "contacts")
    assert table.encoding == "utf-8"
    assert table.delimiter == ","
    assert table.rows == [
        CsvRow(
            2,
            {
                "customer_code": "C001",
                "name": "Li Lei",
                "title": "CTO",
                "phone": "+86 138",
                "email": "li@x.com",
                "lang": "zh",
            },
        )
    ]


def test_header_is_case_and_space_insensitive_and_order_free() -> None:
    data = b" Lang ,EMAIL,phone,Title,name,Customer_Code\nzh,a@b.cn,123456,Boss,Wang,C9\n"
    (row,) = read_csv(data, "contacts").rows
    assert row.values["customer_code"] == "C9"
    assert row.values["lang"] == "zh"
    assert row.values["name"] == "Wang"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_follow_physical_lines_through_quoted_newlines(newline: str) -> None:
    nl = newline
    data = contacts(
        f'C1,"Multi{nl}line{nl}name",t,,,en',  # lines 2-4
        "",  # line 5, blank
        "C2,Two,t,,,en",  # line 6
        f'C3,"x",",{nl}",,,en',  # lines 7-8
        "C4,Four,t,,,en",  # line 9
        newline=nl,
    )
    table = read_csv(data, "contacts")
    assert [row.line for row in table.rows] == [2, 6, 7, 9]
    assert table.rows[0].values["name"] == f"Multi{nl}line{nl}name"
    assert table.rows[2].values["title"] == f",{nl}".strip()


def test_error_line_after_multiline_field_counts_physical_lines() -> None:
    data = contacts('C1,"a\nb\nc",t,,,en', "C2,too,few")
    errors = file_errors(data)
    assert [e.line for e in errors] == [5]
    assert "expected 6 values" in errors[0].reason
    assert "found 3" in errors[0].reason


def test_blank_lines_and_empty_cell_rows_are_skipped() -> None:
    data = contacts("", "   ", ",,,,,", "C1,A,,,,", "", "C2,B,,,,")
    table = read_csv(data, "contacts")
    assert [(row.line, row.values["customer_code"]) for row in table.rows] == [(5, "C1"), (7, "C2")]


def test_leading_blank_lines_before_header_are_skipped() -> None:
    table = read_csv(b"\n\n" + contacts("C1,A,,,,"), "contacts")
    assert [row.line for row in table.rows] == [4]


def test_header_only_gives_zero_rows() -> None:
    assert read_csv(CONTACTS_HEADER.encode(), "contacts").rows == []
    assert read_csv(contacts(), "contacts").rows == []


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n  \n", b"\r\n"])
def test_empty_file_is_refused(data: bytes) -> None:
    (error,) = file_errors(data)
    assert error.line == 1
    assert "empty" in error.reason
    assert CONTACTS_HEADER in error.reason


def test_bom_is_removed_and_reported() -> None:
    table = read_csv(b"\xef\xbb\xbf" + contacts("C1,A,,,,"), "contacts")
    assert table.encoding == "utf-8-sig"
    assert table.rows[0].values["customer_code"] == "C1"
    assert table.rows[0].line == 2


def test_formula_values_are_kept_as_text() -> None:
    table = read_csv(contacts('C1,=1+2,"=HYPERLINK(""http://evil"")",@SUM(A1),,'), "contacts")
    values = table.rows[0].values
    assert values["name"] == "=1+2"
    assert values["title"] == '=HYPERLINK("http://evil")'
    assert values["phone"] == "@SUM(A1)"


def test_semicolon_separated_header_is_accepted() -> None:
    data = "customer_code;name;title;phone;email;lang\nC1;Müller, Hans;CEO;;;en\n".encode()
    table = read_csv(data, "contacts")
    assert table.delimiter == ";"
    assert table.rows[0].values["name"] == "Müller, Hans"


def test_semicolon_header_with_typo_reports_semicolon_columns() -> None:
    data = b"customer_code;name;title;phone;e-mail;lang\nC1;A;;;;en\n"
    errors = file_errors(data)
    assert any("missing column(s): email" in e.reason for e in errors)
    assert any("e-mail (did you mean email?)" in e.reason for e in errors)


def test_tab_separated_file_gets_a_hint() -> None:
    (error,) = file_errors(CONTACTS_HEADER.replace(",", "\t").encode() + b"\n")
    assert "tab-separated" in error.reason


# ---------------------------------------------------------------------------------------------------------
# read_csv: encodings and binary data
# ---------------------------------------------------------------------------------------------------------


def test_gbk_chinese_file_is_accepted_as_gb18030() -> None:
    text = (
        CONTACTS_HEADER
        + "\nC001,张伟,采购经理,13812345678,zhang@example.cn,中文\n"
        + "C002,李娜,技术总监（华东区）,,,zh\n"
    )
    table = read_csv(text.encode("gbk"), "contacts")
    assert table.encoding == "gb18030"
    assert [row.values["name"] for row in table.rows] == ["张伟", "李娜"]
    assert table.rows[1].values["title"] == "技术总监（华东区）"


def test_broken_utf8_chinese_is_not_mistaken_for_gbk() -> None:
    good = contacts("C001,张伟,采购经理,,,zh", "C002,李娜,技术总监,,,zh", "C003,王芳,销售,,,zh")
    damaged = good.replace("销".encode(), b"\xe9\x94")  # a truncated UTF-8 sequence on line 4
    errors = file_errors(damaged)
    assert [e.line for e in errors] == [4]
    assert "not UTF-8" in errors[0].reason


def test_truncated_utf8_that_reads_as_plausible_gbk_is_refused() -> None:
    # Minus its last byte, UTF-8 "买堪概" decodes as GB18030 to mostly common characters ("涔板牚姒"), so only
    # the "most non-ASCII sequences are valid UTF-8" check stops it from being imported as mojibake.
    damaged = contacts("C1,买堪概,,,,zh").replace("买堪概".encode(), "买堪概".encode()[:-1])
    assert "涔板牚姒" in damaged.decode("gb18030")
    (error,) = file_errors(damaged)
    assert error.line == 2
    assert "not UTF-8 text (byte 0xE6 at column 6)" in error.reason


def test_latin1_file_is_refused_at_the_bad_byte() -> None:
    text = CONTACTS_HEADER + "\nC1,Hans,CEO,,,en\nC2,Müller,CTO,,,en\nC3,Café,CFO,,,en\n"
    (error,) = file_errors(text.encode("latin-1"))
    assert error.line == 3
    assert "not UTF-8 text (byte 0xFC at column 5)" in error.reason
    assert "save the file as UTF-8" in error.reason
    assert error.format("contacts.csv").startswith("contacts.csv:3: not UTF-8 text")


def test_latin1_text_that_happens_to_decode_as_gbk_is_still_refused() -> None:
    # "Müller" and "naïve" are valid GBK byte sequences ("M黮ler"), but rare ideographs give them away.
    text = CONTACTS_HEADER + "\nC1,Müller,naïve,,,en\n"
    (error,) = file_errors(text.encode("latin-1"))
    assert error.line == 2
    assert "not UTF-8" in error.reason


def test_utf8_error_after_bom_is_not_retried_as_gbk() -> None:
    (error,) = file_errors(
        b"\xef\xbb\xbf" + contacts("C1,张伟,,,,zh").replace("张伟".encode(), "张伟".encode("gbk"))
    )
    assert error.line == 2
    assert "column 4" in error.reason


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00rest-of-xlsx", "Excel workbook"),
        (CONTACTS_HEADER.encode("utf-16"), "UTF-16"),
        (b"customer_code,name\x00\x00\x00\xff\xfe", "NUL bytes"),
        (bytes(range(256)) * 4, "NUL bytes"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL bytes"),
        (b"\xff\xd8\xff\xe0\x10JFIF\x01\x02\xfe\xfd", "not UTF-8 text (byte 0xFF at column 1)"),
        (contacts("C1,A\x01B,,,,en"), "control character U+0001"),
    ],
)
def test_binary_files_are_refused_clearly(data: bytes, needle: str) -> None:
    errors = file_errors(data)
    assert len(errors) == 1
    assert needle in errors[0].reason


def test_control_character_is_located() -> None:
    (error,) = file_errors(contacts("C1,A,,,,en", "C2,A\x0bB,,,,en"))
    assert error.line == 3
    assert "U+000B at column 5" in error.reason


def test_nul_is_located() -> None:
    (error,) = file_errors(contacts("C1,A,,,,en", "C2,A\x00B,,,,en"))
    assert error.line == 3


def test_too_large_file_is_refused() -> None:
    (error,) = file_errors_with_limit(contacts("C1,A,,,,en"), max_bytes=10)
    assert error.line == 1
    assert "too large" in error.reason


def file_errors_with_limit(data: bytes, *, max_bytes: int) -> list[RowError]:
    """The errors read_csv raises under a custom size limit."""
    with pytest.raises(CsvFileError) as info:
        read_csv(data, "contacts", max_bytes=max_bytes)
    return info.value.errors


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown import kind"):
        read_csv(contacts(), "invoices")


# ---------------------------------------------------------------------------------------------------------
# read_csv: header and row structure
# ---------------------------------------------------------------------------------------------------------


def test_missing_columns_are_named() -> None:
    errors = file_errors(b"customer_code,name,title\nC1,A,B\n")
    assert len(errors) == 1
    assert errors[0].line == 1
    assert "missing column(s): phone, email, lang" in errors[0].reason


def test_extra_columns_are_named_with_suggestions() -> None:
    errors = file_errors((CONTACTS_HEADER.replace("email", "e-mail") + ",fax\n").encode())
    reasons = " | ".join(e.reason for e in errors)
    assert {e.line for e in errors} == {1}
    assert "missing column(s): email" in reasons
    assert "unknown column(s): e-mail (did you mean email?), fax" in reasons


def test_duplicate_columns_are_named() -> None:
    errors = file_errors((CONTACTS_HEADER + ",Email\n").encode())
    assert [(e.line, e.reason) for e in errors] == [(1, "duplicate column(s): email")]


def test_unnamed_header_columns_are_refused() -> None:
    errors = file_errors((CONTACTS_HEADER + ",,\n").encode())
    assert [e.line for e in errors] == [1]
    assert "column(s) 7, 8 of the header have no name" in errors[0].reason


def test_missing_header_is_explained() -> None:
    (error,) = file_errors(b"C1,Li,CTO,,,zh\n")
    assert error.line == 1
    assert "first line must be the header customer_code,name,title,phone,email,lang" in error.reason
    assert "'C1'" in error.reason


def test_file_of_another_kind_is_recognised() -> None:
    (error,) = file_errors(contacts("C1,A,,,,en"), kind="customers")
    assert "looks like a contacts file, not customers" in error.reason


def test_every_wrong_field_count_is_reported_sorted() -> None:
    data = contacts("C1,A,,,,en", "C2,A,,,,en,extra", "C3,A", "C4,A,,,,en", "C5,A,,,")
    errors = file_errors(data)
    assert [e.line for e in errors] == [3, 4, 6]
    assert "found 7" in errors[0].reason and "double quotes" in errors[0].reason
    assert "found 2" in errors[1].reason
    assert "found 5" in errors[2].reason


def test_errors_are_capped_with_a_summary() -> None:
    data = contacts(*["C,too,few"] * (MAX_REPORTED_ERRORS + 12))
    errors = file_errors(data)
    assert len(errors) == MAX_REPORTED_ERRORS + 1
    assert [e.line for e in errors[:-1]] == list(range(2, MAX_REPORTED_ERRORS + 2))
    assert errors[-1] == RowError(MAX_REPORTED_ERRORS + 2, "… and 12 more errors from here on")


def test_cap_errors_keeps_small_lists_and_sorts() -> None:
    errors = [RowError(9, "b"), RowError(3, "a")]
    assert cap_errors(errors) == [RowError(3, "a"), RowError(9, "b")]
    assert cap_errors(errors, limit=1) == [RowError(3, "a"), RowError(9, "… and 1 more error from here on")]


def test_unclosed_quote_is_reported_where_it_starts() -> None:
    errors = file_errors(contacts("C1,A,,,,en", 'C2,"Unclosed,,,,en', "C3,A,,,,en"))
    assert [e.line for e in errors] == [3]
    assert "never closed" in errors[0].reason


def test_text_after_closing_quote_is_reported_and_parsing_continues() -> None:
    errors = file_errors(contacts('C1,"Acme" Ltd,,,,en', "C2,A,,,,en", "C3,short"))
    assert [e.line for e in errors] == [2, 4]
    assert 'write it twice ("")' in errors[0].reason


def test_csv_file_error_formats_each_error() -> None:
    error = CsvFileError([RowError(3, "x"), RowError(5, "y")])
    assert error.format("a.csv") == ["a.csv:3: x", "a.csv:5: y"]
    assert "line 3: x" in str(error)


def test_every_kind_reads_its_own_header() -> None:
    for kind, columns in IMPORT_COLUMNS.items():
        table = read_csv((",".join(columns) + "\n" + ",".join("v" for _ in columns) + "\n").encode(), kind)
        assert table.rows == [CsvRow(2, dict.fromkeys(columns, "v"))]


# ---------------------------------------------------------------------------------------------------------
# Field validators
# ---------------------------------------------------------------------------------------------------------


def field_error(fn: object, row: CsvRow, *args: object, **kwargs: object) -> FieldError:
    """The FieldError raised by a validator call; fails the test if none is raised."""
    assert callable(fn)
    with pytest.raises(FieldError) as info:
        fn(row, *args, **kwargs)
    return info.value


def test_require_and_optional() -> None:
    assert require(cell("name", "Acme"), "name") == "Acme"
    error = field_error(require, cell("name", ""), "name")
    assert error.column == "name"
    assert "required" in error.message
    assert str(error).startswith("name: ")
    long = field_error(require, cell("name", "x" * 201), "name")
    assert "201 characters; at most 200" in long.message
    assert "'" + "x" * 39 + "…'" in long.message  # the value is shown, truncated
    assert optional(cell("title", ""), "title") is None
    assert optional(cell("title", "CTO"), "title") == "CTO"
    assert "at most 3" in field_error(optional, cell("title", "ABCD"), "title", max_len=3).message


def test_unknown_column_in_validator_is_a_bug() -> None:
    with pytest.raises(KeyError):
        require(cell("name", "x"), "nmae")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-02-03", datetime.date(2023, 2, 3)),
        ("2024-02-29", datetime.date(2024, 2, 29)),
        ("2023/02/03", datetime.date(2023, 2, 3)),
        ("2023.2.3", datetime.date(2023, 2, 3)),
        ("2023-2-3", datetime.date(2023, 2, 3)),
        ("2023年2月3日", datetime.date(2023, 2, 3)),
        ("２０２３－０２－０３", datetime.date(2023, 2, 3)),
        ("2999-12-31", datetime.date(2999, 12, 31)),
    ],
)
def test_parse_date_accepts(text: str, expected: datetime.date) -> None:
    assert parse_date(cell("sold_on", text), "sold_on") == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("2023-02-30", "February 2023 has 28 days"),
        ("2023-02-29", "February 2023 has 28 days"),
        ("2023-13-01", "month must be 1-12"),
        ("2023-00-10", "month must be 1-12"),
        ("2023-04-31", "April 2023 has 30 days"),
        ("2023-02-03T10:00", "is not a date (use YYYY-MM-DD)"),
        ("2023-02/03", "is not a date (use YYYY-MM-DD)"),
        ("0000-01-01", "is not a date"),
        ("yesterday", "is not a date (use YYYY-MM-DD)"),
        ("03/02/2023", "ambiguous"),
        ("", "a date is required"),
    ],
)
def test_parse_date_rejects(text: str, needle: str) -> None:
    error = field_error(parse_date, cell("sold_on", text), "sold_on")
    assert error.column == "sold_on"
    assert needle in error.message
    if text:
        assert f"'{text}'" in error.message


def test_parse_date_message_shape_matches_the_importer_contract() -> None:
    error = field_error(parse_date, CsvRow(7, {"sold_on": "2023-02-30"}), "sold_on")
    formatted = RowError(7, f"{error.column}: {error.message}").format("products.csv")
    assert formatted.startswith("products.csv:7: sold_on: '2023-02-30' is not a date")


def test_parse_int() -> None:
    row = cell("warranty_months", " 24 ".strip())
    assert parse_int(row, "warranty_months", min_value=0, max_value=600) == 24
    assert parse_int(cell("n", "0"), "n", min_value=0, max_value=600) == 0
    assert parse_int(cell("n", "600"), "n", min_value=0, max_value=600) == 600
    assert parse_int(cell("n", "+7"), "n", min_value=0, max_value=600) == 7
    assert parse_int(cell("n", "１２"), "n", min_value=0, max_value=600) == 12


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("-1", "'-1' is out of range (must be from 0 to 600)"),
        ("1000", "'1000' is out of range (must be from 0 to 600)"),
        ("9" * 5000, "out of range (must be from 0 to 600)"),
        ("12.5", "'12.5' is not a whole number"),
        ("twelve", "is not a whole number"),
        ("1,000", "is not a whole number"),
        ("", "a whole number from 0 to 600 is required"),
    ],
)
def test_parse_int_rejects(text: str, needle: str) -> None:
    error = field_error(
        parse_int, cell("warranty_months", text), "warranty_months", min_value=0, max_value=600
    )
    assert needle in error.message


def test_parse_choice() -> None:
    types = ("end", "intermediate", "public")
    assert parse_choice(cell("type", "END"), "type", types) == "end"
    assert parse_choice(cell("type", "Public"), "type", types) == "public"
    assert parse_choice(cell("type", ""), "type", types, default="end") == "end"
    error = field_error(parse_choice, cell("type", "retail"), "type", types)
    assert error.message == "'retail' is not one of: end, intermediate, public"
    assert "required" in field_error(parse_choice, cell("type", ""), "type", types).message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("li@Example.COM", "li@example.com"),
        ("Li.Lei+crm@sub.example.cn", "Li.Lei+crm@sub.example.cn"),
        ("张伟@example.cn", "张伟@example.cn"),
        ("info@例子.中国", "info@例子.中国"),
        ("a@xn--fsqu00a.xn--fiqs8s", "a@xn--fsqu00a.xn--fiqs8s"),
        ("", None),
    ],
)
def test_parse_email_accepts(text: str, expected: str | None) -> None:
    assert parse_email(cell("email", text), "email") == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("li.example.com", "no '@'"),
        ("li＠example.com", "half-width @"),
        ("a@b.com;c@d.com", "only one address"),
        ("@example.com", "nothing before"),
        ("li lei@example.com", "spaces"),
        ("li..lei@example.com", "before the '@'"),
        (".li@example.com", "before the '@'"),
        ("li@example", "domain such as example.com"),
        ("li@example.c", "domain such as example.com"),
        ("li@-example.com", "domain such as example.com"),
        ("li@example..com", "domain such as example.com"),
        ("li@example.com.", "domain such as example.com"),
        ("li@exa_mple.com", "domain such as example.com"),
    ],
)
def test_parse_email_rejects(text: str, needle: str) -> None:
    error = field_error(parse_email, cell("email", text), "email")
    assert needle in error.message
    assert f"'{text}' is not a valid email address" in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+86 138-1234-5678", "+8613812345678"),
        ("+86 (138) 1234 5678", "+8613812345678"),
        ("013812345678", "013812345678"),
        ("(010) 6552-1234", "01065521234"),
        ("138.1234.5678", "13812345678"),
        ("＋８６　１３８１２３４５６７８", "+8613812345678"),
        ("123456", "123456"),
        ("", None),
    ],
)
def test_parse_phone_normalises(text: str, expected: str | None) -> None:
    assert parse_phone(cell("phone", text), "phone") == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("12345", "has 5 digits; a phone number has 6 to 20"),
        ("1" * 21, "has 21 digits"),
        ("138 1234 567x", "is not a phone number"),
        ("138-+1234-5678", "is not a phone number"),
        ("ext 1234567", "is not a phone number"),
        ("13812345678/13912345678", "one phone number per cell"),
        ("1.38123E+10", "turned into a number by Excel"),
    ],
)
def test_parse_phone_rejects(text: str, needle: str) -> None:
    error = field_error(parse_phone, cell("phone", text), "phone")
    assert needle in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "en"),
        ("en", "en"),
        ("EN", "en"),
        ("English", "en"),
        ("en-US", "en"),
        ("en_gb", "en"),
        ("英文", "en"),
        ("zh", "zh"),
        ("zh-CN", "zh"),
        ("zh_cn", "zh"),
        ("zh-Hans-CN", "zh"),
        ("cn", "zh"),
        ("CN", "zh"),
        ("Chinese", "zh"),
        ("中文", "zh"),
        ("简体中文", "zh"),
    ],
)
def test_parse_lang_aliases(text: str, expected: str) -> None:
    assert parse_lang(cell("lang", text), "lang") == expected


@pytest.mark.parametrize("text", ["fr", "de-DE", "english please", "zhx", "日本語"])
def test_parse_lang_rejects(text: str) -> None:
    error = field_error(parse_lang, cell("lang", text), "lang")
    assert error.message == f"'{text}' is not a supported language (use en or zh)"


def test_parse_category_path() -> None:
    assert parse_category_path(cell("category", "Printers/Laser/Jams"), "category") == (
        "Printers",
        "Laser",
        "Jams",
    )
    assert parse_category_path(cell("category", " 打印机 ／ 激光 "), "category") == ("打印机", "激光")
    assert parse_category_path(cell("category", "a/b/c/d/e/f"), "category") == tuple("abcdef")
    for bad in ("a//b", "/a", "a/", "a/ /b"):
        assert "empty level" in field_error(parse_category_path, cell("category", bad), "category").message
    deep = field_error(parse_category_path, cell("category", "a/b/c/d/e/f/g"), "category")
    assert "7 levels; at most 6" in deep.message
    assert "required" in field_error(parse_category_path, cell("category", ""), "category").message


def test_parse_code() -> None:
    assert parse_code(cell("code", "C-001_x.y/Z"), "code") == "C-001_x.y/Z"
    assert parse_code(cell("code", "abc"), "code") == "abc"  # kept as typed, not upper-cased
    assert "a space" in field_error(parse_code, cell("code", "C 001"), "code").message
    assert "full-width" in field_error(parse_code, cell("code", "Ｃ001"), "code").message
    assert "'客'" in field_error(parse_code, cell("code", "客户1"), "code").message
    assert "'#'" in field_error(parse_code, cell("code", "C#1"), "code").message
    assert "at most 64" in field_error(parse_code, cell("code", "C" * 65), "code").message
    assert "at most 5" in field_error(parse_code, cell("code", "C" * 6), "code", max_len=5).message
    assert "required" in field_error(parse_code, cell("code", ""), "code").message


def test_validate_rows_collects_field_errors_with_lines() -> None:
    table = read_csv(
        contacts("C1,A,,,,en", "C 2,,,,,en", "C3,C,,,bad,xx", "C4,D,,,,zh"),
        "contacts",
    )

    def check(row: CsvRow) -> tuple[str, str]:
        errors: list[FieldError] = []
        code = name = lang = ""
        try:
            code = parse_code(row, "customer_code")
        except FieldError as exc:
            errors.append(exc)
        try:
            name = require(row, "name")
        except FieldError as exc:
            errors.append(exc)
        try:
            parse_email(row, "email")
            lang = parse_lang(row, "lang")
        except FieldError as exc:
            errors.append(exc)
        if errors:
            raise RowErrors(errors)
        return code, f"{name}/{lang}"

    results, errors = validate_rows(table, check)
    assert results == [("C1", "A/en"), ("C4", "D/zh")]
    assert [e.line for e in errors] == [3, 3, 4]
    assert errors[0].reason.startswith("customer_code: 'C 2' contains a space")
    assert errors[1].reason == "name: a value is required (the cell is empty)"
    assert errors[2].reason.startswith("email: 'bad' is not a valid email address")


def test_validate_rows_accepts_single_field_error() -> None:
    table = CsvTable("utf-8", [CsvRow(4, {"n": "x"}), CsvRow(9, {"n": "5"})])
    results, errors = validate_rows(table, lambda row: parse_int(row, "n", min_value=0, max_value=9))
    assert results == [5]
    assert errors == [RowError(4, "n: 'x' is not a whole number")]


# ---------------------------------------------------------------------------------------------------------
# Robustness
# ---------------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_a_table_or_a_file_error(data: bytes) -> None:
    try:
        result = read_csv(data, "contacts")
    except CsvFileError as exc:
        assert exc.errors
        assert all(isinstance(e, RowError) and e.line >= 1 and e.reason for e in exc.errors)
    else:
        assert isinstance(result, CsvTable)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list(',;"\r\n \tab张\x00é=')), max_size=40),
        max_size=20,
    ),
    st.sampled_from(["utf-8", "gbk", "latin-1"]),
)
def test_arbitrary_text_after_a_valid_header_gives_a_table_or_a_file_error(
    lines: list[str], encoding: str
) -> None:
    text = "\n".join([CONTACTS_HEADER, *lines])
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    try:
        table = read_csv(data, "contacts")
    except CsvFileError as exc:
        assert exc.errors == sorted(exc.errors, key=lambda e: e.line)
        assert all(1 <= e.line <= text.count("\n") + text.count("\r") + 1 for e in exc.errors)
    else:
        assert all(set(row.values) == set(IMPORT_COLUMNS["contacts"]) for row in table.rows)
        assert all(value == value.strip() for row in table.rows for value in row.values.values())
        lines_seen = [row.line for row in table.rows]
        assert lines_seen == sorted(set(lines_seen))
