"""The CLI's surface end to end: examples, money, output formats, exit codes, the terminal, signals,
the sandbox server, show/state commands and --version.

Most tests use a workspace on the in-process sandbox endpoint (no server, no key); the Ctrl-C test
uses the sandbox over loopback HTTP, and the terminal tests run `python -m invoicesync` on a pty.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from invoicesync import __version__
from tests.e2e.conftest import SandboxServer, Workspace
from tests.sandbox_helpers import API, seed_request

REPO = Path(__file__).resolve().parents[2]
ANSI = "\x1b"

SANDBOX_CONFIG = """\
default_environment = "dev"

[environments.dev]
endpoint = "sandbox"
"""

# Two currencies (entity 54 is USD, 55 is EUR in the sandbox fixtures) and amounts a float would get wrong.
MONEY = """\
defaults:
  client: 33973
  terms: net_30
invoices:
  usd-data:
    entity: 54
    currency: USD
    invoice_date: 2025-07-01
    lines:
      - product: 2547
        description: Data migration, per 1,000 records
        quantity: 3
        rate: 0.1
  usd-support:
    entity: 54
    currency: USD
    invoice_date: 2025-07-01
    lines:
      - product: 2546
        description: Support hours
        quantity: 7.5
        rate: 120.02
        tax: 0.07
  eur-small:
    entity: 55
    currency: EUR
    invoice_date: 2025-07-01
    lines:
      - product: 2545
        description: Part A
        rate: 0.1
      - product: 2545
        description: Part B
        rate: 0.2
  eur-licence:
    entity: 55
    currency: EUR
    invoice_date: 2025-07-01
    lines:
      - product: 2545
        description: Licence
        quantity: 3
        rate: 33.33
"""
MONEY_TOTALS = {"EUR": Decimal("100.29"), "USD": Decimal("900.52")}
MONEY_AMOUNTS = {
    "usd-data": ("USD", Decimal("0.30")),
    "usd-support": ("USD", Decimal("900.22")),
    "eur-small": ("EUR", Decimal("0.30")),
    "eur-licence": ("EUR", Decimal("99.99")),
}


@pytest.fixture
def sandboxed(tmp_path: Path, capsys: Any) -> Workspace:
    """A workspace whose only environment is the in-process sandbox: no server, no key, no network."""
    ws = Workspace(tmp_path / "ws", env={}, capsys=capsys)
    ws.root.mkdir()
    ws.write("invoicesync.toml", SANDBOX_CONFIG)
    ws.write("specs/money.yaml", MONEY)
    return ws


def _ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


# --- the examples and the demo workspace ---------------------------------------------------------------

# (workspace under the repo, extra flags, extra environment): what each example's README says to run.
EXAMPLE_RUNS = [
    ("examples/ci-workflow", (), {}),
    ("examples/environment-seeding", (), {}),
    ("examples/environment-seeding", ("-e", "staging"), {}),
    ("examples/environment-seeding", (), {"INVOICESYNC_ENV": "staging"}),
    ("examples/monthly-subscriptions", (), {}),
    ("examples/monthly-subscriptions", ("--var", "period=2025-08-01"), {}),
    ("examples/monthly-subscriptions", ("-e", "production"), {}),
    (".", (), {}),
    (".", ("--var", "period=2025-08-01"), {}),
]


def _copy_example(src: str, dst: Path) -> None:
    if src == ".":  # the demo workspace: its specs and the [tool.invoicesync] of pyproject.toml
        dst.mkdir()
        shutil.copytree(REPO / "specs", dst / "specs")
        shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")
    else:
        shutil.copytree(REPO / src, dst, ignore=shutil.ignore_patterns("state"))


@pytest.mark.parametrize(
    ("example", "flags", "env"), EXAMPLE_RUNS,
    ids=[f"{e.split('/')[-1] if e != '.' else 'demo'}{''.join(f) or ''}{''.join(f'{k}={v}' for k, v in env.items())}"
         for e, f, env in EXAMPLE_RUNS],
)
def test_example_workspace_validates_and_plans_offline(
    tmp_path: Path, capsys: Any, example: str, flags: tuple[str, ...], env: dict[str, str]
) -> None:
    ws = Workspace(tmp_path / "ws", env=dict(env), capsys=capsys)
    _copy_example(example, ws.root)
    validated = _ok(ws.run("validate", *flags))
    count = int(re.search(r"Valid: (\d+) invoices?", validated.stdout).group(1))  # type: ignore[union-attr]
    assert count > 0
    planned = _ok(ws.run("plan", "--refresh=false", *flags))
    assert f"Plan: {count} to create, 0 to update, 0 to remove." in planned.stdout
    if "period=2025-08-01" in flags:
        # moving the period on adds August and keeps July as it was (never voids last month)
        assert re.search(r"(/|subscription-)2025-08 ", planned.stdout), planned.stdout
        assert re.search(r"(/|subscription-)2025-07 ", planned.stdout), planned.stdout
    if "staging" in flags or env.get("INVOICESYNC_ENV") == "staging":
        assert "2025-06-01" in planned.stdout  # staging's seed_date, from vars/staging.yaml


def test_every_example_workspace_is_exercised() -> None:
    examples = {f"examples/{p.name}" for p in (REPO / "examples").iterdir() if p.is_dir()}
    assert examples <= {e for e, _f, _env in EXAMPLE_RUNS}


# --- money stays exact ---------------------------------------------------------------------------------


def test_text_plan_shows_exact_decimal_money(sandboxed: Workspace) -> None:
    out = _ok(sandboxed.run("plan", "--refresh=false")).stdout
    assert "0.30000000000000004" not in out and "0.3000" not in out
    assert re.search(r"\+ usd-data .* USD 0\.30$", out, re.M), out
    assert re.search(r"\+ eur-small .* EUR 0\.30$", out, re.M), out
    assert "Billing: +EUR 100.29, +USD 900.52" in out


def test_json_plan_totals_add_up_per_currency(sandboxed: Workspace) -> None:
    plan = json.loads(_ok(sandboxed.run("plan", "--refresh=false", "--format", "json")).stdout)
    amounts = {c["address"]: (c["currency"], Decimal(c["amount"])) for c in plan["changes"]}
    assert amounts == MONEY_AMOUNTS
    sums: dict[str, Decimal] = {}
    for currency, amount in amounts.values():
        sums[currency] = sums.get(currency, Decimal(0)) + amount
    totals = {t["currency"]: t for t in plan["totals"]}
    assert set(totals) == set(MONEY_TOTALS)
    for currency, expected in MONEY_TOTALS.items():
        assert sums[currency] == expected
        assert Decimal(totals[currency]["create"]) == expected
        assert Decimal(totals[currency]["net"]) == expected
    data_line = next(c for c in plan["changes"] if c["address"] == "usd-data")["body"]["lines"][0]
    assert Decimal(str(data_line["amount"])) == Decimal("0.3")
    assert "0.30000000000000004" not in json.dumps(plan)


# --- output formats and colour -------------------------------------------------------------------------


def test_markdown_plan_is_a_table(sandboxed: Workspace) -> None:
    out = _ok(sandboxed.run("plan", "--refresh=false", "--format", "markdown")).stdout
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert any(re.fullmatch(r"\|( *:?-+:? *\|)+", line) for line in rows), out  # a header separator
    assert any("`usd-data`" in line and "USD 0.30" in line for line in rows), out
    assert any("`eur-small`" in line and "EUR 0.30" in line for line in rows), out
    assert ANSI not in out


def test_json_flag_equals_format_json(sandboxed: Workspace) -> None:
    _ok(sandboxed.run("apply", "--auto-approve"))
    sandboxed.write("specs/money.yaml", MONEY.replace("rate: 33.33", "rate: 33.34"))
    sandboxed.write("specs/more.yaml", MONEY.replace("usd-", "more-usd-").replace("eur-", "more-eur-"))
    by_flag = sandboxed.run("plan", "--json")
    by_format = sandboxed.run("plan", "--format", "json")
    assert by_flag.exit_code == by_format.exit_code == 0
    assert json.loads(by_flag.stdout) == json.loads(by_format.stdout)
    assert by_flag.stdout == by_format.stdout
    assert json.loads(by_flag.stdout)["summary"]["update"] == 1


# --- exit codes ----------------------------------------------------------------------------------------


def test_detailed_exitcode_is_2_with_changes_and_0_without(sandboxed: Workspace) -> None:
    assert sandboxed.run("plan", "--detailed-exitcode").exit_code == 2
    assert sandboxed.run("plan", "--detailed-exitcode", "--refresh=false").exit_code == 2
    assert sandboxed.run("plan").exit_code == 0
    _ok(sandboxed.run("apply", "--auto-approve"))
    assert _ok(sandboxed.run("plan", "--detailed-exitcode")).exit_code == 0
    assert _ok(sandboxed.run("plan", "--detailed-exitcode", "--refresh=false")).exit_code == 0
    sandboxed.write("specs/money.yaml", MONEY.replace("rate: 33.33", "rate: 33.34"))
    changed = sandboxed.run("plan", "--detailed-exitcode")
    assert changed.exit_code == 2, changed.output
    assert "Traceback" not in changed.output


# --- on a terminal -------------------------------------------------------------------------------------


def _run_on_terminal(args: list[str], *, answer: str | None = None, env: dict[str, str] | None = None,
                     timeout: float = 30) -> tuple[int, str]:
    """Run `python -m invoicesync ARGS` with stdin, stdout and stderr on a pseudo-terminal.

    With ``answer``, it is typed (with Enter) once the confirmation prompt shows. Returns the exit
    code and everything the terminal showed.
    """
    child_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "CI")}
    child_env.update({"TERM": "xterm-256color", "COLUMNS": "160", **(env or {})})
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoicesync", *args],
        stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=child_env, start_new_session=True,
    )
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every holder of the slave has closed it
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
            if answer is not None and not answered and b"Enter a value" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        else:
            proc.kill()
            pytest.fail(f"{args} did not finish in {timeout} s; the terminal showed:\n{seen.decode(errors='replace')}")
        code = proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = seen.decode(errors="replace")
    if answer is not None:
        assert answered, f"no prompt was shown:\n{text}"
    return code, text


def _sandbox_files(ws: Workspace) -> list[str]:
    return sorted(p.name for p in (ws.root / "state").glob("dev.sandbox.json*"))


def test_apply_on_a_terminal_asks_and_yes_applies(sandboxed: Workspace) -> None:
    code, shown = _run_on_terminal(["-C", str(sandboxed.root), "apply"], answer="yes")
    assert code == 0, shown
    assert "Only 'yes' will be accepted" in shown
    assert "Traceback" not in shown
    assert sorted(sandboxed.state("dev")["invoices"]) == sorted(MONEY_AMOUNTS)
    assert _ok(sandboxed.run("plan", "--detailed-exitcode")).exit_code == 0


def test_apply_on_a_terminal_answered_no_changes_nothing(sandboxed: Workspace) -> None:
    code, shown = _run_on_terminal(["-C", str(sandboxed.root), "apply"], answer="no")
    assert code == 1, shown
    assert "cancelled" in shown.lower() and "nothing was changed" in shown
    assert "Traceback" not in shown
    assert sandboxed.state("dev").get("invoices", {}) == {}
    assert _sandbox_files(sandboxed) == []  # the sandbox never received a request
    assert sandboxed.run("plan", "--detailed-exitcode").exit_code == 2


def test_apply_without_a_terminal_refuses_to_ask(sandboxed: Workspace) -> None:
    result = sandboxed.run_process("apply", timeout=30)
    assert result.exit_code == 1
    assert "--auto-approve" in result.stderr and "Traceback" not in result.output
    assert _sandbox_files(sandboxed) == []


def test_terminal_plan_is_coloured_unless_no_color_or_NO_COLOR(sandboxed: Workspace) -> None:
    root = str(sandboxed.root)
    code, coloured = _run_on_terminal(["-C", root, "plan"])
    assert code == 0 and ANSI in coloured  # the control: colour is on by default on a terminal
    for args, env in ((["plan", "--no-color"], None), (["plan"], {"NO_COLOR": "1"})):
        code, shown = _run_on_terminal(["-C", root, *args], env=env)
        assert code == 0, shown
        assert ANSI not in shown, (args, env, shown)
        assert "USD 0.30" in shown


def test_no_color_flag_keeps_apply_and_show_free_of_escape_codes(sandboxed: Workspace) -> None:
    root = str(sandboxed.root)
    code, shown = _run_on_terminal(["-C", root, "apply", "--no-color"], answer="yes")
    assert code == 0, shown
    assert ANSI not in shown, shown
    code, shown = _run_on_terminal(["-C", root, "show", "--no-color"])
    assert code == 0 and ANSI not in shown, shown


def test_NO_COLOR_keeps_apply_free_of_escape_codes(sandboxed: Workspace) -> None:
    code, shown = _run_on_terminal(["-C", str(sandboxed.root), "apply"], answer="yes", env={"NO_COLOR": "1"})
    assert code == 0, shown
    assert ANSI not in shown, shown


# --- Ctrl-C during apply -------------------------------------------------------------------------------


def _many(n: int) -> str:
    lines = ["defaults:", "  entity: 54", "  client: 33974", "  currency: USD", "  terms: net_30", "invoices:"]
    for i in range(n):
        lines += [
            f"  bulk-{i:03d}:",
            f"    invoice_date: 2025-09-{1 + i % 28:02d}",
            f"    invoice_number: BULK-{i:03d}",
            "    lines:",
            "      - product: 2546",
            f"        description: Support, seat {i}",
            "        rate: 12.5",
        ]
    return "\n".join(lines) + "\n"


def test_ctrl_c_during_apply_stops_cleanly_records_every_create_and_converges(
    workspace: Workspace, sandbox_server: SandboxServer
) -> None:
    total = 40
    workspace.write("specs/bulk.yaml", _many(total))
    sandbox_server.set_faults(latency_ms=200)
    journal = workspace.root / "state" / "e2e.journal"
    proc = workspace.spawn("apply", "--auto-approve", "--parallelism", "2")
    deadline = time.monotonic() + 20
    while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert journal.exists(), proc.communicate()
    time.sleep(0.5)  # a few creates land, two are in flight
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err
    assert re.search(r"interrupted", out + err, re.I), out + err

    recorded = {a: r["id"] for a, r in workspace.state()["invoices"].items()}
    on_server = {inv["invoice_number"]: inv["id"] for inv in sandbox_server.invoices()}
    assert 0 < len(recorded) < total, "the interrupt should land mid-run"
    # Every invoice the server has is in the state with its id (in-flight ones finished and were recorded).
    assert sorted(on_server.values()) == sorted(recorded.values())
    for address, invoice_id in recorded.items():
        assert on_server[address.replace("bulk-", "BULK-")] == invoice_id

    sandbox_server.set_faults(latency_ms=0)
    again = workspace.run("apply", "--auto-approve")
    assert again.exit_code == 0, again.output
    numbers = Counter(inv["invoice_number"] for inv in sandbox_server.invoices())
    assert numbers == Counter(f"BULK-{i:03d}" for i in range(total))
    state = workspace.state()["invoices"]
    assert {a: r["id"] for a, r in state.items() if a in recorded} == recorded
    assert sorted(r["id"] for r in state.values()) == sorted(inv["id"] for inv in sandbox_server.invoices())
    assert workspace.run("plan", "--detailed-exitcode").exit_code == 0


# --- invoicesync sandbox -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_sandbox_command_serves_the_seed_request_and_stops_on_ctrl_c() -> None:
    body = seed_request()
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoicesync", "sandbox", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )
    try:
        line = _readline(proc, 15)
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, f"no URL in {line!r}"
        assert int(match.group(1)) == port
        url = match.group(0)
        with httpx.Client(base_url=url, timeout=10) as http:
            created = http.post(API, json=body, headers={"Authorization": "Token sandbox"})
            assert created.status_code == 201, created.text
            invoice = created.json()
            assert invoice["id"] and invoice["invoice_number"] == body["invoice_number"]
            assert http.get(f"{API}{invoice['id']}/", headers={"Authorization": "Token sandbox"}).status_code == 200
            assert http.post(API, json=body, headers={"Authorization": "Token wrong"}).status_code in (401, 403)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in out + err
    assert "stopped" in out.lower()


# --- show, state, force-unlock, --version --------------------------------------------------------------


def test_show_lists_invoices_and_money_per_currency(sandboxed: Workspace) -> None:
    _ok(sandboxed.run("apply", "--auto-approve"))
    ids = {a: r["id"] for a, r in sandboxed.state("dev")["invoices"].items()}
    text = _ok(sandboxed.run("show")).stdout
    for address, invoice_id in ids.items():
        assert re.search(rf"^{re.escape(address)}\s+{invoice_id}\s", text, re.M), text
    assert re.search(r"^EUR\s+100\.29\s+0\.00\s+100\.29$", text, re.M), text
    assert re.search(r"^USD\s+900\.52\s+0\.00\s+900\.52$", text, re.M), text

    shown = json.loads(_ok(sandboxed.run("show", "--json")).stdout)
    assert {i["address"]: i["id"] for i in shown["invoices"]} == ids
    for item in shown["invoices"]:
        currency, amount = MONEY_AMOUNTS[item["address"]]
        assert (item["currency"], Decimal(item["invoiced"]), Decimal(item["paid"]), Decimal(item["due"])) == (
            currency, amount, Decimal(0), amount)
    totals = {t["currency"]: t for t in shown["totals"]}
    assert {c: Decimal(t["invoiced"]) for c, t in totals.items()} == MONEY_TOTALS
    assert {c: Decimal(t["due"]) for c, t in totals.items()} == MONEY_TOTALS

    one = _ok(sandboxed.run("show", "usd-data")).stdout
    assert "usd-data" in one and "eur-small" not in one


def test_state_list_and_show(sandboxed: Workspace) -> None:
    _ok(sandboxed.run("apply", "--auto-approve"))
    ids = {a: r["id"] for a, r in sandboxed.state("dev")["invoices"].items()}
    listed = _ok(sandboxed.run("state", "list")).stdout
    assert [line.split("\t") for line in listed.splitlines()] == [[a, str(ids[a])] for a in sorted(ids)]
    assert json.loads(_ok(sandboxed.run("state", "list", "--json")).stdout) == ids
    record = json.loads(_ok(sandboxed.run("state", "show", "usd-data")).stdout)
    assert record["id"] == ids["usd-data"]
    assert record["body"]["invoice_date"] == "2025-07-01"

    unknown = sandboxed.run("state", "show", "unknown")
    assert unknown.exit_code == 1
    assert '"unknown"' in unknown.stderr and "state list" in unknown.stderr
    assert "Traceback" not in unknown.output


def test_force_unlock_without_a_lock_says_so(sandboxed: Workspace) -> None:
    result = _ok(sandboxed.run("force-unlock"))
    assert "no lock" in result.output.lower()
    _ok(sandboxed.run("plan", "--refresh=false"))  # leaves the (released) lock file behind
    result = _ok(sandboxed.run("force-unlock"))
    assert "no lock" in result.output.lower()


def test_version_and_help_as_a_module() -> None:
    version = subprocess.run([sys.executable, "-m", "invoicesync", "--version"], capture_output=True, text=True,
                             cwd=REPO, timeout=30)
    assert version.returncode == 0, version.stderr
    assert __version__ in version.stdout and "invoicesync" in version.stdout
    helped = subprocess.run([sys.executable, "-m", "invoicesync", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=30)
    assert helped.returncode == 0
    for command in ("validate", "plan", "apply", "show", "state", "force-unlock", "sandbox"):
        assert command in helped.stdout
