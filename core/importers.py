"""`crmbot import`: all-or-nothing CSV imports of customers, contacts, installed products and KB articles.

Every import runs in three passes inside one unit of work: csvio reads the file and checks each cell;
cross-row and database checks run against lookups loaded in bulk; only when no row has a problem are
the changes written and committed. Any error leaves the database exactly as it was. New rows are
written with batched ORM INSERTs and updated rows through the session, a chunk at a time, so 50,000 rows
cost a few hundred statements rather than one per row.

Errors carry the physical line of the file (the header is line 1). Problems that belong to no line, such
as the database refusing the write because someone changed the same records meanwhile, use line 0 and
are rendered without a line number (``FILE: reason``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ParamSpec, TypeVar, cast
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from core.container import Core
from core.csvio import (
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
from core.db.models import Base, Contact, Customer, InstalledProduct, KbArticle, KbCategory, Product, User
from core.domain.enums import CustomerType, LifecycleStage, Role, WarrantyType
from core.domain.events import CustomerCreated, InstalledProductRegistered
from core.domain.warranty import warranty_end
from core.services.installed import normalise_serial
from core.services.knowledge import ensure_category
from core.uow import UnitOfWork

__all__ = ["IMPORT_KINDS", "ImportFailed", "ImportReport", "ProgressCallback", "import_csv"]

ProgressCallback = Callable[[int, int], None]
"""Told (rows done, rows total) every PROGRESS_EVERY rows while writing, and once at the end."""

PROGRESS_EVERY = 500
# Rows written per flush: big enough for batched INSERTs, small enough for a lively progress bar.
_CHUNK = PROGRESS_EVERY
# Keys per IN (...) lookup, well under SQLite's and asyncpg's bind-parameter limits.
_LOOKUP_CHUNK = 500
# A product added to the catalogue by an import gets the same default cover as one added by the API.
_NEW_PRODUCT_WARRANTY_MONTHS = 12
_OWNER_ROLES = (Role.REP.value, Role.MANAGER.value, Role.ADMIN.value)
_CLASS_PREFIX_RE = re.compile(r"^<class '[\w.]+'>:\s*")

P = ParamSpec("P")
T = TypeVar("T")
M = TypeVar("M", bound=Base)


@dataclass(frozen=True)
class ImportReport:
    """What a successful import did."""

    kind: str
    created: int
    updated: int
    encoding: str
    notices: list[str] = field(default_factory=list)


class ImportFailed(Exception):
    """The file was refused and nothing was written; ``errors`` say where and why (line 0: no line)."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        if not errors:
            raise ValueError("ImportFailed needs at least one RowError")
        self.errors: list[RowError] = list(errors)
        super().__init__("; ".join(f"line {e.line}: {e.reason}" if e.line else e.reason for e in self.errors))

    def format(self, filename: str) -> list[str]:
        """``FILE:LINE: reason`` lines (``FILE: reason`` for line 0), at most ~50 of them."""
        errors = self.errors
        # Errors from csvio and from import_csv arrive already capped (50 plus a summary line).
        if len(errors) > MAX_REPORTED_ERRORS + 1:
            errors = cap_errors(errors)
        return [f"{filename}: {e.reason}" if e.line <= 0 else e.format(filename) for e in errors]


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


async def import_csv(
    core: Core, kind: str, data: bytes, *, progress: ProgressCallback | None = None
) -> ImportReport:
    """Import one CSV file of ``kind`` (customers|contacts|products|kb) as the system; all or nothing.

    Raises ImportFailed with every problem found (nothing written), or ValueError for an unknown kind.
    """
    importer = _IMPORTERS.get(kind)
    if importer is None:
        raise ValueError(f"unknown import kind {kind!r}; expected one of {', '.join(_IMPORTERS)}")
    try:
        table = read_csv(data, kind)
    except CsvFileError as exc:
        raise ImportFailed(exc.errors) from None

    notices: list[str] = []
    if table.encoding == "gb18030":
        notices.append("read as GB18030 (Chinese Windows encoding)")
    if table.delimiter == ";":
        notices.append("semicolon-separated")

    ticker = _Progress(progress, len(table.rows))
    try:
        async with core.uow() as uow:
            context = _Context(uow=uow, now=core.clock.now(), today=_today(core), progress=ticker)
            created, updated = await importer(context, table)
            await uow.commit()
    except SQLAlchemyError as exc:
        raise ImportFailed([RowError(0, _database_reason(exc))]) from exc
    ticker.finish()
    if kind == "kb":
        core.knowledge.invalidate()
    if kind == "products":
        core.installed.invalidate()
    return ImportReport(kind=kind, created=created, updated=updated, encoding=table.encoding, notices=notices)


def _today(core: Core) -> date:
    """The business day in the company's timezone (a sale 'today' in Shanghai is not in the future)."""
    return core.clock.now().astimezone(ZoneInfo(core.settings.timezone)).date()


def _database_reason(exc: SQLAlchemyError) -> str:
    """A one-line, trace-free explanation of a database failure."""
    detail = str(exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc)
    # asyncpg's adapted errors read "<class 'asyncpg.exceptions.UniqueViolationError'>: duplicate key ...".
    detail = _CLASS_PREFIX_RE.sub("", detail)
    detail = " ".join(detail.split("\n", 1)[0].split())[:200]
    return (
        f"the database refused the import ({detail}); nothing was imported. If someone changed the same "
        "records at the same time, run the import again"
    )


# ----------------------------------------------------------------------------------------------------------
# Shared machinery
# ----------------------------------------------------------------------------------------------------------


class _Progress:
    """Throttles the caller's progress callback to every PROGRESS_EVERY rows, plus one final call."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback = callback
        self._total = total
        self._reported = 0

    def advance(self, done: int) -> None:
        """Report ``done`` rows if enough have passed since the last report (never the final total)."""
        if self._callback is not None and done < self._total and done - self._reported >= PROGRESS_EVERY:
            self._reported = done
            self._callback(done, self._total)

    def finish(self) -> None:
        """Report completion, once the commit has succeeded."""
        if self._callback is not None:
            self._callback(self._total, self._total)


@dataclass
class _Context:
    """What every importer needs: the open unit of work, the time, progress."""

    uow: UnitOfWork
    now: datetime
    today: date
    progress: _Progress

    @property
    def session(self) -> AsyncSession:
        """The unit of work's session."""
        return self.uow.session


class _Cells:
    """Runs field parsers on one row and keeps every FieldError, so a row's problems are reported together."""

    def __init__(self) -> None:
        self._errors: list[FieldError] = []

    def __call__(self, parser: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """The parsed value; on error the failure is recorded and a placeholder returned (see done())."""
        try:
            return parser(*args, **kwargs)
        except FieldError as exc:
            self._errors.append(exc)
            # The placeholder never escapes: done() raises before the row object is used.
            return cast(T, None)

    def done(self) -> None:
        """Raise the collected errors, if any."""
        if self._errors:
            raise RowErrors(self._errors)


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _fetch_by(
    session: AsyncSession, model: type[M], column: InstrumentedAttribute[str], keys: Iterable[str]
) -> dict[str, M]:
    """Rows of ``model`` whose ``column`` is one of ``keys``, keyed by it (a few queries, not one per key)."""
    wanted = sorted(set(keys))
    found: dict[str, M] = {}
    for chunk in _chunks(wanted, _LOOKUP_CHUNK):
        rows = (await session.execute(select(model).where(column.in_(chunk)))).scalars()
        for row in rows:
            found[getattr(row, column.key)] = row
    return found


async def _customer_ids(session: AsyncSession, codes: Iterable[str]) -> dict[str, int]:
    """Customer ids by code, for the codes given."""
    ids: dict[str, int] = {}
    for chunk in _chunks(sorted(set(codes)), _LOOKUP_CHUNK):
        rows = await session.execute(select(Customer.code, Customer.id).where(Customer.code.in_(chunk)))
        ids.update(rows.tuples().all())
    return ids


async def _existing_units(session: AsyncSession, serials: Iterable[str]) -> dict[str, InstalledProduct]:
    """Installed products already registered under any of ``serials``."""
    return await _fetch_by(session, InstalledProduct, InstalledProduct.serial_number, serials)


def _flag_repeats(errors: list[RowError], column: str, keyed: Iterable[tuple[int, str]]) -> None:
    """Flag every repeat of a key on its later line, naming the line where it first appeared."""
    first: dict[str, int] = {}
    for line, key in keyed:
        if key in first:
            errors.append(RowError(line, f"{column}: '{key}' was already given on line {first[key]}"))
        else:
            first[key] = line


def _assign(row: Base, fields: dict[str, Any]) -> None:
    """Set attributes of a loaded row; the ORM turns the changes into UPDATEs at the next flush."""
    for name, value in fields.items():
        setattr(row, name, value)


def _fail_if(errors: list[RowError]) -> None:
    """Stop the import with every error found so far, in line order."""
    if errors:
        raise ImportFailed(cap_errors(errors))


async def _write_chunk(
    context: _Context,
    model: type[Base],
    new: list[dict[str, Any]],
    done: int,
    *,
    returning: tuple[InstrumentedAttribute[str], InstrumentedAttribute[int]] | None = None,
) -> dict[str, int]:
    """Insert a chunk's new rows, flush its updated ones, report progress; return new ids by key if asked.

    New rows go in as one ORM bulk INSERT: flushing added objects costs one statement per row on SQLite
    (its RETURNING order is not guaranteed, so SQLAlchemy inserts row by row to match ids to objects).
    Returning the key with the id makes the order irrelevant.
    """
    session = context.session
    ids: dict[str, int] = {}
    if new and returning is None:
        await session.execute(insert(model), new)
    elif new and returning is not None:
        result = await session.execute(insert(model).returning(*returning), new)
        ids.update(result.tuples().all())
    # Rows loaded for update are ORM objects: the flush sends their UPDATEs, batched by executemany.
    await session.flush()
    context.progress.advance(done)
    return ids


# ----------------------------------------------------------------------------------------------------------
# customers: code,name,type,segment,phone,email,address,owner
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CustomerRow:
    line: int
    code: str
    name: str
    type: str
    segment: str
    phone: str | None
    email: str | None
    address: str
    owner: str | None


def _parse_customer(row: CsvRow) -> _CustomerRow:
    cell = _Cells()
    parsed = _CustomerRow(
        line=row.line,
        code=cell(parse_code, row, "code"),
        name=cell(require, row, "name"),
        type=cell(parse_choice, row, "type", [t.value for t in CustomerType]),
        segment=cell(optional, row, "segment", max_len=64) or "",
        phone=cell(parse_phone, row, "phone"),
        email=cell(parse_email, row, "email"),
        address=cell(optional, row, "address", max_len=300) or "",
        # Usernames are a subset of code characters; parse_code explains stray spaces and full-width letters.
        owner=cell(parse_code, row, "owner") if row.values["owner"] else None,
    )
    cell.done()
    return parsed


async def _import_customers(context: _Context, table: CsvTable) -> tuple[int, int]:
    """Upsert customers by code; owners must be existing reps, managers or admins."""
    session = context.session
    rows, errors = validate_rows(table, _parse_customer)
    _flag_repeats(errors, "code", ((r.line, r.code) for r in rows))

    owners: dict[str, tuple[int, str, bool]] = {}
    usernames = sorted({r.owner for r in rows if r.owner})
    for chunk in _chunks(usernames, _LOOKUP_CHUNK):
        result = await session.execute(
            select(User.username, User.id, User.role, User.active).where(User.username.in_(chunk))
        )
        owners.update((username, (uid, role, active)) for username, uid, role, active in result.tuples())
    for r in rows:
        if r.owner is None:
            continue
        if r.owner not in owners:
            errors.append(RowError(r.line, f"owner: no user named '{r.owner}'"))
            continue
        _, role, active = owners[r.owner]
        if role not in _OWNER_ROLES:
            errors.append(
                RowError(r.line, f"owner: '{r.owner}' is a {role}, not a sales rep, manager or admin")
            )
        elif not active:
            errors.append(RowError(r.line, f"owner: '{r.owner}' is deactivated"))
    existing = await _fetch_by(session, Customer, Customer.code, (r.code for r in rows))
    _fail_if(errors)

    # From here on every row is valid and unique: validation has failed the import otherwise.
    created = updated = 0
    new: list[dict[str, Any]] = []
    for done, r in enumerate(rows, start=1):
        # The file is the record: an empty cell clears the field, as it would in the spreadsheet.
        fields = {
            "name": r.name,
            "type": r.type,
            "segment": r.segment,
            "phone": r.phone,
            "email": r.email,
            "address": r.address,
            "owner_id": owners[r.owner][0] if r.owner else None,
            "updated_at": context.now,
        }
        customer = existing.get(r.code)
        if customer is None:
            new.append(
                {
                    "code": r.code,
                    "lifecycle_stage": LifecycleStage.NEW.value,
                    "value_score": 0.0,
                    "tier": "regular",
                    "created_at": context.now,
                    **fields,
                }
            )
        else:
            _assign(customer, fields)
            updated += 1
        if done % _CHUNK == 0 or done == len(rows):
            ids = await _write_chunk(context, Customer, new, done, returning=(Customer.code, Customer.id))
            for values in new:
                context.uow.emit(CustomerCreated(aggregate_id=ids[values["code"]], code=values["code"]))
            created += len(new)
            new = []
    return created, updated


# ----------------------------------------------------------------------------------------------------------
# contacts: customer_code,name,title,phone,email,lang
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ContactRow:
    line: int
    customer_code: str
    name: str
    title: str
    phone: str | None
    email: str | None
    lang: str

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the contact within its customer: the email if given, else the name."""
        return ("email", self.email.casefold()) if self.email else ("name", _name_key(self.name))


def _name_key(name: str) -> str:
    """Names match ignoring case and runs of spaces."""
    return " ".join(name.split()).casefold()


def _parse_contact(row: CsvRow) -> _ContactRow:
    cell = _Cells()
    parsed = _ContactRow(
        line=row.line,
        customer_code=cell(parse_code, row, "customer_code"),
        name=cell(require, row, "name"),
        title=cell(optional, row, "title") or "",
        phone=cell(parse_phone, row, "phone"),
        email=cell(parse_email, row, "email"),
        lang=cell(parse_lang, row, "lang"),
    )
    cell.done()
    return parsed


async def _import_contacts(context: _Context, table: CsvTable) -> tuple[int, int]:
    """Upsert contacts of existing customers by (customer, email), or (customer, name) without an email."""
    session = context.session
    rows, errors = validate_rows(table, _parse_contact)
    customer_ids = await _customer_ids(session, (r.customer_code for r in rows))

    existing: dict[tuple[int, str, str], Contact] = {}
    for chunk in _chunks(sorted(set(customer_ids.values())), _LOOKUP_CHUNK):
        query = select(Contact).where(Contact.customer_id.in_(chunk)).order_by(Contact.id)
        result = await session.execute(query)
        for known in result.scalars():
            # With duplicates already in the database, the oldest contact is the one kept up to date.
            if known.email:
                existing.setdefault((known.customer_id, "email", known.email.casefold()), known)
            existing.setdefault((known.customer_id, "name", _name_key(known.name)), known)

    plan: list[tuple[_ContactRow, int, Contact | None]] = []
    seen: dict[tuple[int, str, str], int] = {}
    targets: dict[int, int] = {}
    for r in rows:
        customer_id = customer_ids.get(r.customer_code)
        if customer_id is None:
            errors.append(RowError(r.line, f"customer_code: no customer with code '{r.customer_code}'"))
            continue
        key = (customer_id, *r.key)
        if key in seen:
            column, value = ("email", r.email) if r.email else ("name", r.name)
            errors.append(
                RowError(
                    r.line,
                    f"{column}: '{value}' at {r.customer_code} was already given on line {seen[key]}",
                )
            )
            continue
        seen[key] = r.line
        contact = existing.get(key)
        if contact is not None:
            # One row matching by email and another by name must not both rewrite the same person.
            if contact.id in targets:
                errors.append(
                    RowError(
                        r.line,
                        f"this row and line {targets[contact.id]} both match the existing contact "
                        f"'{contact.name}' at {r.customer_code}",
                    )
                )
                continue
            targets[contact.id] = r.line
        plan.append((r, customer_id, contact))
    _fail_if(errors)

    created = updated = 0
    new: list[dict[str, Any]] = []
    for done, (r, customer_id, contact) in enumerate(plan, start=1):
        fields = {"name": r.name, "title": r.title, "phone": r.phone, "email": r.email, "lang": r.lang}
        if contact is None:
            new.append({"customer_id": customer_id, **fields})
            created += 1
        else:
            _assign(contact, fields)
            updated += 1
        if done % _CHUNK == 0 or done == len(plan):
            await _write_chunk(context, Contact, new, done)
            new = []
    return created, updated


# ----------------------------------------------------------------------------------------------------------
# products (installed base): serial_number,product_code,product_name,customer_code,sold_on,warranty_months,
# warranty_type
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _UnitRow:
    line: int
    serial: str
    product_code: str
    product_name: str | None
    customer_code: str
    sold_on: date
    warranty_months: int | None
    warranty_type: str


def _parse_unit(row: CsvRow) -> _UnitRow:
    cell = _Cells()
    parsed = _UnitRow(
        line=row.line,
        serial=cell(_parse_serial, row),
        product_code=cell(parse_code, row, "product_code"),
        product_name=cell(optional, row, "product_name"),
        customer_code=cell(parse_code, row, "customer_code"),
        sold_on=cell(_parse_sold_on, row),
        # Empty means the catalogue model's default cover, as with the API.
        warranty_months=(
            cell(parse_int, row, "warranty_months", min_value=0, max_value=240)
            if row.values["warranty_months"]
            else None
        ),
        warranty_type=cell(
            parse_choice,
            row,
            "warranty_type",
            [t.value for t in WarrantyType],
            default=WarrantyType.STANDARD.value,
        ),
    )
    cell.done()
    if parsed.warranty_type == WarrantyType.NONE.value and parsed.warranty_months:
        raise FieldError("warranty_type", f"none needs warranty_months 0 (found {parsed.warranty_months})")
    return parsed


def _parse_serial(row: CsvRow) -> str:
    """A serial number in its stored form (upper case), so 'ab-1' and 'AB-1' are the same unit."""
    return normalise_serial(parse_code(row, "serial_number"))


def _parse_sold_on(row: CsvRow) -> date:
    """The sale date; dates before 1970 are typos (the API refuses them too)."""
    sold_on = parse_date(row, "sold_on")
    if sold_on.year < 1970:
        raise FieldError("sold_on", f"'{row.values['sold_on']}' is before 1970")
    return sold_on


async def _import_units(context: _Context, table: CsvTable) -> tuple[int, int]:
    """Register delivered units by serial number, adding unknown catalogue models on the way."""
    session = context.session
    rows, errors = validate_rows(table, _parse_unit)
    _flag_repeats(errors, "serial_number", ((r.line, r.serial) for r in rows))

    customer_ids = await _customer_ids(session, (r.customer_code for r in rows))
    products = await _fetch_by(session, Product, Product.code, (r.product_code for r in rows))
    units = await _existing_units(session, (r.serial for r in rows))
    new_products: dict[str, str] = {}
    for r in rows:
        if r.product_code not in products and r.product_name and r.product_code not in new_products:
            new_products[r.product_code] = r.product_name

    plan: list[tuple[_UnitRow, int, InstalledProduct | None]] = []
    for r in rows:
        if r.sold_on > context.today:
            errors.append(
                RowError(
                    r.line, f"sold_on: {r.sold_on.isoformat()} is in the future (today is {context.today})"
                )
            )
        if r.product_code not in products and r.product_code not in new_products:
            errors.append(
                RowError(
                    r.line,
                    f"product_name: a value is required because product '{r.product_code}' "
                    "is not in the catalogue yet",
                )
            )
        customer_id = customer_ids.get(r.customer_code)
        if customer_id is None:
            errors.append(RowError(r.line, f"customer_code: no customer with code '{r.customer_code}'"))
        unit = units.get(r.serial)
        # Naming the owner would tell one customer's data to whoever holds another's serial list.
        if unit is not None and customer_id is not None and unit.customer_id != customer_id:
            errors.append(
                RowError(r.line, f"serial_number: '{r.serial}' is already registered to another customer")
            )
        if customer_id is not None:
            plan.append((r, customer_id, unit))
    _fail_if(errors)

    added = [
        Product(code=code, name=name, category="", default_warranty_months=_NEW_PRODUCT_WARRANTY_MONTHS)
        for code, name in new_products.items()
    ]
    session.add_all(added)
    await session.flush()
    products.update((product.code, product) for product in added)

    created = updated = 0
    new: list[dict[str, Any]] = []
    for done, (r, customer_id, unit) in enumerate(plan, start=1):
        product = products[r.product_code]
        months = r.warranty_months if r.warranty_months is not None else product.default_warranty_months
        fields = {
            "product_id": product.id,
            "sold_on": r.sold_on,
            "warranty_months": months,
            "warranty_type": r.warranty_type,
            "warranty_ends_on": warranty_end(r.sold_on, months),
        }
        if unit is None:
            new.append(
                {
                    "serial_number": r.serial,
                    "customer_id": customer_id,
                    "maintenance_interval_months": product.maintenance_interval_months,
                    "created_at": context.now,
                    **fields,
                }
            )
        else:
            # Same customer: the file corrects the sale; maintenance history stays as it is.
            _assign(unit, fields)
            updated += 1
        if done % _CHUNK == 0 or done == len(plan):
            returning = (InstalledProduct.serial_number, InstalledProduct.id)
            ids = await _write_chunk(context, InstalledProduct, new, done, returning=returning)
            # Announced after the insert: the events need the new ids.
            for values in new:
                context.uow.emit(
                    InstalledProductRegistered(
                        aggregate_id=ids[values["serial_number"]],
                        serial_number=values["serial_number"],
                        customer_id=values["customer_id"],
                        warranty_ends_on=values["warranty_ends_on"],
                    )
                )
            created += len(new)
            new = []
    return created, updated


# ----------------------------------------------------------------------------------------------------------
# kb: code,title,category,product_code,symptoms,solution,lang
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ArticleRow:
    line: int
    code: str
    title: str
    category: tuple[str, ...]
    product_code: str | None
    symptoms: str
    solution: str
    lang: str


def _parse_article(row: CsvRow) -> _ArticleRow:
    cell = _Cells()
    parsed = _ArticleRow(
        line=row.line,
        code=cell(parse_code, row, "code"),
        title=cell(require, row, "title", max_len=300),
        category=cell(parse_category_path, row, "category") if row.values["category"] else (),
        product_code=cell(parse_code, row, "product_code") if row.values["product_code"] else None,
        symptoms=cell(optional, row, "symptoms", max_len=10_000) or "",
        solution=cell(optional, row, "solution", max_len=10_000) or "",
        lang=cell(parse_lang, row, "lang"),
    )
    cell.done()
    return parsed


async def _import_articles(context: _Context, table: CsvTable) -> tuple[int, int]:
    """Upsert knowledge articles by code, creating their category paths."""
    session = context.session
    rows, errors = validate_rows(table, _parse_article)
    _flag_repeats(errors, "code", ((r.line, r.code) for r in rows))

    product_ids: dict[str, int] = {}
    codes = sorted({r.product_code for r in rows if r.product_code})
    for chunk in _chunks(codes, _LOOKUP_CHUNK):
        result = await session.execute(select(Product.code, Product.id).where(Product.code.in_(chunk)))
        product_ids.update(result.tuples().all())
    for r in rows:
        if r.product_code and r.product_code not in product_ids:
            errors.append(
                RowError(r.line, f"product_code: no product with code '{r.product_code}' in the catalogue")
            )
    existing = await _fetch_by(session, KbArticle, KbArticle.code, (r.code for r in rows))
    _fail_if(errors)

    # The tree is small: knowing all of it up front leaves ensure_category to insert only what is new.
    tree = await session.execute(select(KbCategory.path, KbCategory.id))
    categories: dict[str, int] = dict(tree.tuples().all())
    created = updated = 0
    new: list[dict[str, Any]] = []
    for done, r in enumerate(rows, start=1):
        fields = {
            "title": r.title,
            "category_id": await ensure_category(session, r.category, categories) if r.category else None,
            "product_id": product_ids[r.product_code] if r.product_code else None,
            "symptoms": r.symptoms,
            "solution": r.solution,
            "lang": r.lang,
            "updated_at": context.now,
        }
        article = existing.get(r.code)
        if article is None:
            new.append({"code": r.code, "solved_count": 0, "created_at": context.now, **fields})
            created += 1
        else:
            _assign(article, fields)
            updated += 1
        if done % _CHUNK == 0 or done == len(rows):
            await _write_chunk(context, KbArticle, new, done)
            new = []
    return created, updated


_IMPORTERS: dict[str, Callable[[_Context, CsvTable], Awaitable[tuple[int, int]]]] = {
    "customers": _import_customers,
    "contacts": _import_contacts,
    "products": _import_units,
    "kb": _import_articles,
}
IMPORT_KINDS: tuple[str, ...] = tuple(_IMPORTERS)
