"""core.importers: every kind, idempotence, all-or-nothing with exact lines, encodings, progress."""

from __future__ import annotations

import itertools
from datetime import date

import pytest
from sqlalchemy import func, select

from core import importers
from core.auth import SYSTEM
from core.container import Core
from core.db.models import (
    Base,
    Contact,
    Customer,
    InstalledProduct,
    KbArticle,
    KbCategory,
    OutboxEvent,
    Product,
)
from core.importers import ImportFailed, ImportReport, import_csv
from tests.world import World

CUSTOMERS = "code,name,type,segment,phone,email,address,owner"
CONTACTS = "customer_code,name,title,phone,email,lang"
PRODUCTS = "serial_number,product_code,product_name,customer_code,sold_on,warranty_months,warranty_type"
KB = "code,title,category,product_code,symptoms,solution,lang"
SAVE_AS_UTF8 = "save the file as UTF-8 (in Excel: Save As → 'CSV UTF-8')"


def csv(header: str, *lines: str, encoding: str = "utf-8") -> bytes:
    """A CSV file: header, lines, trailing newline."""
    return "\n".join([header, *lines, ""]).encode(encoding)


async def count(core: Core, model: type[Base]) -> int:
    """Rows in a table."""
    async with core.uow() as uow:
        return (await uow.session.execute(select(func.count()).select_from(model))).scalar_one()


async def outbox(core: Core, event_type: str | None = None) -> int:
    """Outbox events, optionally of one type."""
    query = select(func.count()).select_from(OutboxEvent)
    if event_type:
        query = query.where(OutboxEvent.event_type == event_type)
    async with core.uow() as uow:
        return (await uow.session.execute(query)).scalar_one()


async def refused(core: Core, kind: str, data: bytes) -> list[str]:
    """The FILE:LINE: reason lines of an import that must fail."""
    with pytest.raises(ImportFailed) as info:
        await import_csv(core, kind, data)
    return info.value.format("f.csv")


# ----------------------------------------------------------------------------------------------------------
# Each kind imports, and importing again updates instead of duplicating
# ----------------------------------------------------------------------------------------------------------

CUSTOMER_ROWS = (
    "C-001,Initech,end,software,+86 21 5555 0101,Info@Initech.COM,1 Main St,rep.north",
    'C-002,"Umbrella, Inc.",public,,,,,',
    "ACME,Acme Corporation,intermediate,wholesale,,,,rep.south",
)


async def test_customers_import_creates_and_updates_by_code(core: Core, world: World) -> None:
    events = await outbox(core, "CustomerCreated")
    report = await import_csv(core, "customers", csv(CUSTOMERS, *CUSTOMER_ROWS))
    assert report == ImportReport(kind="customers", created=2, updated=1, encoding="utf-8", notices=[])

    initech = await core.customers.get(SYSTEM, "C-001")
    assert (initech.name, initech.type, initech.segment, initech.owner) == (
        "Initech",
        "end",
        "software",
        "rep.north",
    )
    assert (initech.phone, initech.email, initech.address) == (
        "+862155550101",
        "Info@initech.com",
        "1 Main St",
    )
    umbrella = await core.customers.get(SYSTEM, "C-002")
    assert (umbrella.name, umbrella.owner, umbrella.type) == ("Umbrella, Inc.", None, "public")
    acme = await core.customers.get(SYSTEM, "ACME")
    assert (acme.name, acme.type, acme.owner) == ("Acme Corporation", "intermediate", "rep.south")
    assert await outbox(core, "CustomerCreated") == events + 2

    again = await import_csv(core, "customers", csv(CUSTOMERS, *CUSTOMER_ROWS))
    assert (again.created, again.updated) == (0, 3)
    assert await count(core, Customer) == 4
    assert await outbox(core, "CustomerCreated") == events + 2


async def test_contacts_upsert_by_email_else_by_name(core: Core, world: World) -> None:
    rows = (
        "ACME,Li Wei,Buyer,138 0013 8000,li.wei@ACME.example.com,zh-CN",
        "ACME,Anna Smith,CTO,,,",
        "GLOBEX,Li Wei,Chef,,,中文",
    )
    report = await import_csv(core, "contacts", csv(CONTACTS, *rows))
    assert (report.created, report.updated) == (3, 0)
    acme = {c.name: c for c in await core.customers.contacts(SYSTEM, "ACME")}
    assert acme["Li Wei"].email == "li.wei@acme.example.com"
    assert (acme["Li Wei"].lang, acme["Li Wei"].phone, acme["Li Wei"].title) == ("zh", "13800138000", "Buyer")
    assert (acme["Anna Smith"].email, acme["Anna Smith"].lang) == (None, "en")

    # Same email (any case) → same person, even renamed; same name without email → same person.
    rows_again = (
        "ACME,Li Wei (Purchasing),Head buyer,,LI.WEI@acme.example.com,en",
        "ACME,anna  smith,CEO,,,",
        "GLOBEX,Li Wei,Head chef,,,zh",
    )
    again = await import_csv(core, "contacts", csv(CONTACTS, *rows_again))
    assert (again.created, again.updated) == (0, 3)
    assert await count(core, Contact) == 3
    acme_titles = {c.title for c in await core.customers.contacts(SYSTEM, "ACME")}
    assert acme_titles == {"Head buyer", "CEO"}
    assert [c.title for c in await core.customers.contacts(SYSTEM, "GLOBEX")] == ["Head chef"]


PRODUCT_ROWS = (
    "SN-1001,WM-2023,Some other name,ACME,2025-01-10,24,standard",
    "SN-1002,DW-500,,ACME,2025-02-10,12,standard",
    "sn-1003,DW-500,,GLOBEX,2025-03-10,36,Extended",
    "SN-1004,NEW-1,Fridge NEW-1,GLOBEX,2025-04-10,,",
    "SN-1005,NEW-1,,ACME,2024-01-31,1,standard",
)


async def test_products_import_registers_units_and_new_models(core: Core, world: World) -> None:
    events = await outbox(core, "InstalledProductRegistered")
    report = await import_csv(core, "products", csv(PRODUCTS, *PRODUCT_ROWS))
    assert (report.kind, report.created, report.updated) == ("products", 5, 0)

    # A month-end sale with one month of cover ends on the last day of February (leap year).
    warranty = await core.installed.warranty(SYSTEM, "SN-1005")
    assert (warranty.starts_on, warranty.ends_on, warranty.product) == (
        date(2024, 1, 31),
        date(2024, 2, 29),
        "Fridge NEW-1",
    )
    unit = await core.installed.get(SYSTEM, "SN-1003")  # stored upper-cased
    assert (unit.customer_code, unit.warranty_type, unit.warranty_ends_on) == (
        "GLOBEX",
        "extended",
        date(2028, 3, 9),
    )
    new_model = await core.installed.get(SYSTEM, "SN-1004")
    assert (new_model.warranty_months, new_model.warranty_type) == (12, "standard")  # new model's default
    # An existing catalogue model keeps its name whatever the file calls it; its defaults apply.
    wm = await core.installed.get(SYSTEM, "SN-1001")
    assert (wm.product_name, wm.next_maintenance_on) == ("Washing machine WM-2023", date(2026, 1, 10))
    assert await count(core, Product) == 3
    assert await outbox(core, "InstalledProductRegistered") == events + 5

    moved = (*PRODUCT_ROWS[:4], "SN-1005,NEW-1,,ACME,2024-02-29,12,extended")
    again = await import_csv(core, "products", csv(PRODUCTS, *moved))
    assert (again.created, again.updated) == (0, 5)
    assert await count(core, InstalledProduct) == 3 + 5
    assert await outbox(core, "InstalledProductRegistered") == events + 5
    warranty = await core.installed.warranty(SYSTEM, "sn-1005")
    assert (warranty.ends_on, warranty.warranty_type) == (date(2025, 2, 28), "extended")


async def test_kb_import_creates_categories_and_upserts_by_code(core: Core, world: World) -> None:
    rows = (
        'KB-1,Drum does not spin,washing machine/mechanical/drum,WM-2023,"Drum stuck, hums",Check belt,en',
        "KB-2,洗碗机不加热,洗碗机／故障,DW-500,显示E13,复位加热保险丝,中文",
        "KB-DW-E13,Dishwasher E13 (updated),dishwasher/errors,,E13,Reset the fuse,",
    )
    report = await import_csv(core, "kb", csv(KB, *rows))
    assert (report.created, report.updated) == (2, 1)
    drum = await core.knowledge.get(SYSTEM, "KB-1")
    assert (drum.category, drum.product_code) == ("washing machine/mechanical/drum", "WM-2023")
    assert (drum.symptoms, drum.solution, drum.lang) == ("Drum stuck, hums", "Check belt", "en")
    chinese = await core.knowledge.get(SYSTEM, "KB-2")
    assert (chinese.category, chinese.lang, chinese.product_code) == ("洗碗机/故障", "zh", "DW-500")
    e13 = await core.knowledge.get(SYSTEM, "KB-DW-E13")
    assert (e13.title, e13.product_code, e13.category) == (
        "Dishwasher E13 (updated)",
        None,
        "dishwasher/errors",
    )
    categories = await count(core, KbCategory)
    assert categories == 2 + 3 + 2

    again = await import_csv(core, "kb", csv(KB, *rows))
    assert (again.created, again.updated) == (0, 3)
    assert (await count(core, KbArticle), await count(core, KbCategory)) == (3, categories)


# ----------------------------------------------------------------------------------------------------------
# All or nothing: one bad row among good ones refuses the file with exact lines, and writes nothing
# ----------------------------------------------------------------------------------------------------------

GOOD_CUSTOMERS = tuple(f"N-{i},Customer {i},end,retail,,,,rep.north" for i in range(1, 6))
GOOD_CONTACTS = tuple(f"ACME,Person {i},,,p{i}@acme.example.com,en" for i in range(1, 6))
GOOD_PRODUCTS = tuple(f"SN-{i},DW-500,,ACME,2025-01-1{i},12,standard" for i in range(1, 6))


def with_bad(good: tuple[str, ...], bad: str, at: int = 3) -> tuple[str, ...]:
    """Good rows with ``bad`` inserted so it lands on physical line ``at + 2``... i.e. after ``at`` rows."""
    return (*good[:at], bad, *good[at:])


def products(bad: str) -> bytes:
    """The good products file with ``bad`` on line 5."""
    return csv(PRODUCTS, *with_bad(GOOD_PRODUCTS, bad))


BAD_FILES: dict[str, tuple[str, type[Base], bytes, list[str]]] = {
    "bad date": (
        "products",
        InstalledProduct,
        products("SN-9,DW-500,,ACME,2025-02-30,12,standard"),
        ["f.csv:5: sold_on: '2025-02-30' is not a date (February 2025 has 28 days)"],
    ),
    "future date": (
        "products",
        InstalledProduct,
        products("SN-9,DW-500,,ACME,2026-06-16,12,standard"),
        ["f.csv:5: sold_on: 2026-06-16 is in the future (today is 2026-06-15)"],
    ),
    "unknown owner": (
        "customers",
        Customer,
        csv(CUSTOMERS, *with_bad(GOOD_CUSTOMERS, "N-9,Ghost Co,end,,,,,ghost", at=1)),
        ["f.csv:3: owner: no user named 'ghost'"],
    ),
    "owner who is not in sales": (
        "customers",
        Customer,
        csv(CUSTOMERS, *with_bad(GOOD_CUSTOMERS, "N-9,Tech,end,,,,,tech.north", at=5)),
        ["f.csv:7: owner: 'tech.north' is a technician, not a sales rep, manager or admin"],
    ),
    "duplicate customer code": (
        "customers",
        Customer,
        csv(CUSTOMERS, *with_bad(GOOD_CUSTOMERS, "N-2,Again,end,,,,,", at=4)),
        ["f.csv:6: code: 'N-2' was already given on line 3"],
    ),
    "unknown customer code": (
        "contacts",
        Contact,
        csv(CONTACTS, *with_bad(GOOD_CONTACTS, "NOPE,Someone,,,,en", at=0)),
        ["f.csv:2: customer_code: no customer with code 'NOPE'"],
    ),
    "duplicate serial in file": (
        "products",
        InstalledProduct,
        products(" sn-2 ,DW-500,,GLOBEX,2025-01-01,12,standard"),
        ["f.csv:5: serial_number: 'SN-2' was already given on line 3"],
    ),
    "serial of another customer": (
        "products",
        InstalledProduct,
        products("ab12345,DW-500,,ACME,2025-01-01,12,standard"),
        ["f.csv:5: serial_number: 'AB12345' is already registered to another customer"],
    ),
    "new model without a name": (
        "products",
        InstalledProduct,
        products("SN-9,XX-1,,ACME,2025-01-01,12,standard"),
        ["f.csv:5: product_name: a value is required because product 'XX-1' is not in the catalogue yet"],
    ),
    "missing column": (
        "products",
        InstalledProduct,
        csv(PRODUCTS.removesuffix(",warranty_type"), *(r.rsplit(",", 1)[0] for r in GOOD_PRODUCTS)),
        [f"f.csv:1: missing column(s): warranty_type (expected: {PRODUCTS})"],
    ),
    "extra column": (
        "products",
        InstalledProduct,
        csv(PRODUCTS + ",colour", *(r + ",white" for r in GOOD_PRODUCTS)),
        [f"f.csv:1: unknown column(s): colour (expected: {PRODUCTS})"],
    ),
    "wrong field count": (
        "products",
        InstalledProduct,
        products("SN-9,DW-500,Dish,washer,ACME,2025-01-01,12,standard"),
        [
            "f.csv:5: expected 7 values (one per column), found 8; "
            "if a value contains a comma, put the whole value in double quotes"
        ],
    ),
    "Latin-1 bytes": (
        "customers",
        Customer,
        csv(CUSTOMERS, *with_bad(GOOD_CUSTOMERS, "N-9,Müller GmbH,end,,,,Köln,"), encoding="latin-1"),
        [f"f.csv:5: not UTF-8 text (byte 0xFC at column 6); {SAVE_AS_UTF8}"],
    ),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
async def test_one_bad_row_refuses_the_whole_file(core: Core, world: World, case: str) -> None:
    kind, table, data, expected = BAD_FILES[case]
    before = (await count(core, table), await outbox(core), await count(core, Product))
    assert await refused(core, kind, data) == expected
    assert (await count(core, table), await outbox(core), await count(core, Product)) == before


async def test_every_problem_is_reported_in_line_order(core: Core, world: World) -> None:
    data = csv(
        PRODUCTS,
        "SN-1,DW-500,,NOPE,2025-13-01,300,gold",
        "SN-2,NEW-2,,ACME,2025-01-01,0,none",
        "SN-1,DW-500,,ACME,2025-01-01,12,none",
    )
    assert await refused(core, "products", data) == [
        "f.csv:2: sold_on: '2025-13-01' is not a date (the month must be 1-12)",
        "f.csv:2: warranty_months: '300' is out of range (must be from 0 to 240)",
        "f.csv:2: warranty_type: 'gold' is not one of: standard, extended, none",
        "f.csv:3: product_name: a value is required because product 'NEW-2' is not in the catalogue yet",
        "f.csv:4: warranty_type: none needs warranty_months 0 (found 12)",
    ]


async def test_kb_refuses_unknown_product_and_duplicate_code(core: Core, world: World) -> None:
    data = csv(KB, "KB-1,One,a/b,NOPE,,,en", "KB-2,Two,a//b,,,,en", "KB-1,Three,a,,,,xx")
    assert await refused(core, "kb", data) == [
        "f.csv:2: product_code: no product with code 'NOPE' in the catalogue",
        "f.csv:3: category: 'a//b' has an empty level; write categories as a/b/c",
        "f.csv:4: lang: 'xx' is not a supported language (use en or zh)",
    ]
    assert await refused(core, "kb", csv(KB, "KB-1,One,a,,,,en", "KB-1,Two,b,,,,en")) == [
        "f.csv:3: code: 'KB-1' was already given on line 2"
    ]
    assert (await count(core, KbArticle), await count(core, KbCategory)) == (1, 2)


async def test_contacts_refuse_the_same_person_twice(core: Core, world: World) -> None:
    data = csv(
        CONTACTS,
        "ACME,Ann,,,ann@x.example.com,",
        "ACME,Ann B,,,ANN@x.example.com,",
        "ACME,Bo,,,,",
        "ACME,BO,,,,",
    )
    assert await refused(core, "contacts", data) == [
        "f.csv:3: email: 'ANN@x.example.com' at ACME was already given on line 2",
        "f.csv:5: name: 'BO' at ACME was already given on line 4",
    ]


async def test_many_bad_rows_are_capped(core: Core, world: World) -> None:
    data = csv(CUSTOMERS, *(f"X-{i},Name,bogus,,,,," for i in range(120)))
    lines = await refused(core, "customers", data)
    assert len(lines) == 51
    assert lines[0] == "f.csv:2: type: 'bogus' is not one of: end, intermediate, public"
    assert lines[-1] == "f.csv:52: … and 70 more errors from here on"


async def test_database_error_while_writing_rolls_back_and_reports_without_a_line(
    core: Core, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serial registered by someone else between the checks and the write (simulated by hiding it)."""

    async def nothing_registered(*_: object) -> dict[str, InstalledProduct]:
        return {}

    monkeypatch.setattr(importers, "_existing_units", nothing_registered)
    units, events = await count(core, InstalledProduct), await outbox(core)
    data = csv(PRODUCTS, *GOOD_PRODUCTS, f"{world.acme_serial},WM-2023,,ACME,2025-01-01,24,standard")
    with pytest.raises(ImportFailed) as info:
        await import_csv(core, "products", data)
    [error] = info.value.errors
    assert error.line == 0
    [line] = info.value.format("f.csv")
    assert line.startswith("f.csv: the database refused the import (")
    assert "serial_number" in line and "nothing was imported" in line
    assert "Traceback" not in line and "<class" not in line
    assert (await count(core, InstalledProduct), await outbox(core)) == (units, events)


# ----------------------------------------------------------------------------------------------------------
# Encodings, separators and line numbers
# ----------------------------------------------------------------------------------------------------------


async def test_gbk_chinese_customers_are_read_with_a_notice(core: Core, world: World) -> None:
    data = csv(
        CUSTOMERS,
        "CN-001,上海华联商厦有限公司,end,零售,021-63223344,,上海市黄浦区南京东路,rep.north",
        "CN-002,北京王府井百货（集团）股份有限公司,intermediate,百货,,,北京市东城区王府井大街,",
        encoding="gbk",
    )
    report = await import_csv(core, "customers", data)
    assert (report.encoding, report.notices, report.created) == (
        "gb18030",
        ["read as GB18030 (Chinese Windows encoding)"],
        2,
    )
    customer = await core.customers.get(SYSTEM, "CN-002")
    assert customer.name == "北京王府井百货（集团）股份有限公司"
    assert customer.address == "北京市东城区王府井大街"


async def test_utf8_bom_and_semicolons_from_excel(core: Core, world: World) -> None:
    report = await import_csv(core, "customers", b"\xef\xbb\xbf" + csv(CUSTOMERS, "B-1,Böhm AG,end,,,,,"))
    assert (report.encoding, report.notices, report.created) == ("utf-8-sig", [], 1)
    assert (await core.customers.get(SYSTEM, "B-1")).name == "Böhm AG"

    semicolons = csv(CUSTOMERS.replace(",", ";"), "B-2;Müller, Schmidt & Co;end;;;;;")
    report = await import_csv(core, "customers", semicolons)
    assert report.notices == ["semicolon-separated"]
    assert (await core.customers.get(SYSTEM, "B-2")).name == "Müller, Schmidt & Co"


async def test_multi_line_quoted_value_keeps_later_line_numbers(core: Core, world: World) -> None:
    data = csv(
        CUSTOMERS,
        'M-1,Multi,end,,,,"Building 4\nFloor 2\r\nRoom 7",',
        "M-2,Fine,end,,,,,",
        "M-3,Broken,end,,not-a-phone,,,",
    )
    assert await refused(core, "customers", data) == [
        "f.csv:6: phone: 'not-a-phone' is not a phone number (use digits, optionally starting with +; "
        "spaces, dashes and parentheses are allowed)"
    ]
    report = await import_csv(core, "customers", data.replace(b"not-a-phone", b""))
    assert report.created == 3
    assert (await core.customers.get(SYSTEM, "M-1")).address == "Building 4\nFloor 2\r\nRoom 7"


async def test_header_only_file_imports_nothing(core: Core, world: World) -> None:
    calls: list[tuple[int, int]] = []
    report = await import_csv(
        core, "contacts", csv(CONTACTS), progress=lambda done, total: calls.append((done, total))
    )
    assert (report.created, report.updated, calls) == (0, 0, [(0, 0)])


async def test_unknown_kind_is_a_programming_error(core: Core) -> None:
    with pytest.raises(ValueError, match="unknown import kind"):
        await import_csv(core, "orders", b"a,b\n")


# ----------------------------------------------------------------------------------------------------------
# Size and progress
# ----------------------------------------------------------------------------------------------------------


async def test_large_file_reports_progress_up_to_the_total(core: Core, world: World) -> None:
    total, customers = 5_000, ("ACME", "GLOBEX")
    rows = (
        f"BULK-{i:06d},BULK-M{i % 7},Model {i % 7},{customers[i % 2]},2025-0{i % 9 + 1}-15,24,standard"
        for i in range(total)
    )
    calls: list[tuple[int, int]] = []
    report = await import_csv(
        core, "products", csv(PRODUCTS, *rows), progress=lambda d, t: calls.append((d, t))
    )
    assert (report.created, report.updated) == (total, 0)
    assert calls[-1] == (total, total)
    assert len(calls) >= total // 1000
    assert all(t == total for _, t in calls)
    assert all(a < b for (a, _), (b, _) in itertools.pairwise(calls))
    assert await count(core, InstalledProduct) == 3 + total
    assert await outbox(core, "InstalledProductRegistered") == 3 + total
