"""The `crmbot` command line, in process, against the test database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.container import Core
from crmbot.cli import app
from tests.world import World


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose crmbot talks to the test database."""
    monkeypatch.setenv("CRMBOT_DATABASE_URL", database_url)
    monkeypatch.setenv("CRMBOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    import crmbot.cli

    monkeypatch.setattr(crmbot.cli.console, "width", 200)  # tables are not truncated to 80 columns
    return CliRunner()


def test_db_upgrade_reports_the_revision(cli: CliRunner, core: Core) -> None:
    result = cli.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    from core.db.migrate import head_revision

    assert f"revision {head_revision()}" in result.output


def test_users_add_with_identity_then_list(cli: CliRunner, world: World) -> None:
    result = cli.invoke(
        app,
        [
            "users",
            "add",
            "mei",
            "--role",
            "customer",
            "--customer",
            "ACME",
            "--name",
            "Mei Lin",
            "--lang",
            "zh",
            "--identity",
            "telegram:4242",
            "--identity",
            "web:mei",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Added customer mei (Mei Lin), linked telegram:4242, web:mei." in result.output
    listing = cli.invoke(app, ["users", "list"])
    assert listing.exit_code == 0 and "telegram:4242" in listing.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["users", "add", "x1", "--role", "customer"], "needs --customer"),
        (["users", "add", "x2", "--role", "rep", "--identity", "pigeon:1"], "Unknown channel 'pigeon'"),
        (["users", "add", "acme.buyer", "--role", "rep"], "already exists"),
        (["users", "add", "x3", "--role", "rep", "--manager", "nobody"], "No user named 'nobody'"),
        (["users", "add", "x4", "--role", "rep", "--email", "not-an-email"], "Invalid email"),
        (["users", "add", "x5", "--role", "rep", "--identity", "rest:acme-buyer"], "already linked"),
    ],
)
def test_users_add_refuses_bad_input_clearly(
    cli: CliRunner, world: World, arguments: list[str], message: str
) -> None:
    result = cli.invoke(app, arguments)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_import_all_or_nothing_with_file_and_line(cli: CliRunner, world: World, tmp_path: Path) -> None:
    good = tmp_path / "customers.csv"
    good.write_text(
        "code,name,type,segment,phone,email,address,owner\n"
        "C-1,Alpha,end,retail,,a@example.com,Road 1,rep.north\n"
        "C-2,贝塔公司,public,school,,,,\n",
        encoding="utf-8",
    )
    result = cli.invoke(app, ["import", "customers", str(good)])
    assert result.exit_code == 0, result.output
    assert "2 customers created, 0 updated" in result.output
    bad = tmp_path / "more.csv"
    bad.write_text(
        "code,name,type,segment,phone,email,address,owner\n"
        "C-3,Gamma,end,retail,,,,\n"
        "C-4,Delta,emperor,retail,,,,\n"
        "C-5,Epsilon,end,retail,,,,ghost\n",
        encoding="utf-8",
    )
    failed = cli.invoke(app, ["import", "customers", str(bad)])
    assert failed.exit_code == 1
    lines = failed.output.splitlines()
    assert any(line.startswith(f"{bad}:3: ") and "type" in line for line in lines), failed.output
    assert any(line.startswith(f"{bad}:4: ") and "ghost" in line for line in lines), failed.output
    assert "Nothing was imported" in failed.output
    listing = cli.invoke(app, ["kb", "search", "anything", "--json"])
    assert listing.exit_code == 0


async def test_import_leaves_database_unchanged_on_failure(
    cli: CliRunner, core: Core, world: World, tmp_path: Path
) -> None:
    from core.auth import SYSTEM

    bad = tmp_path / "products.csv"
    bad.write_text(
        "serial_number,product_code,product_name,customer_code,sold_on,warranty_months,warranty_type\n"
        "NEW-1,WM-2023,Washer,ACME,2025-01-31,12,standard\n"
        "NEW-2,WM-2023,Washer,ACME,2025-02-30,12,standard\n",
        encoding="utf-8",
    )
    import asyncio

    result = await asyncio.to_thread(cli.invoke, app, ["import", "products", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: " in result.output
    units = await core.installed.list(SYSTEM)
    assert "NEW-1" not in {unit.serial_number for unit in units.items}


def test_import_of_a_missing_file_is_a_clear_error(cli: CliRunner, core: Core) -> None:
    result = cli.invoke(app, ["import", "kb", "no-such-file.csv"])
    assert result.exit_code == 1
    assert "no-such-file.csv: cannot read" in result.output


def test_kb_search_json(cli: CliRunner, world: World) -> None:
    result = cli.invoke(app, ["kb", "search", "error e13 dishwasher", "--json", "--limit", "3"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits[0]["code"] == "KB-DW-E13"
    assert set(hits[0]) >= {"code", "title", "score", "lang", "solution"}
