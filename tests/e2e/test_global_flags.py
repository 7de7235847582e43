"""Flags before the command, as the README's CI lines write them, and Terraform's single-dash spellings."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.conftest import Workspace

CONFIG = """\
default_environment = "dev"

[environments.dev]
endpoint = "sandbox"

[environments.production]
endpoint = "sandbox"
vars = { tier = "gold" }
"""

SPEC = """\
invoices:
  acme-{{ period }}:
    entity: 54
    client: 33973
    invoice_date: {{ period }}-01
    due_date: {{ period }}-28
    lines:
      - product: 2545
        description: "{{ tier | default('basic') }} plan, {{ period }}"
        quantity: 1
        rate: 50
"""


def _same_but_lineage(text: str) -> str:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "LINEAGE", text)
    return re.sub(r'"(plan_digest|digest)": "[^"]*"', r'"\1": "X"', text)


@pytest.fixture
def ws(offline: Workspace) -> Workspace:
    offline.write("invoicesync.toml", CONFIG)
    offline.write("specs/acme.yaml.j2", SPEC)
    offline.write("vars/july.yaml", "period: 2025-07\n")
    return offline


def test_env_and_vars_before_the_command_are_the_same_as_after(ws: Workspace) -> None:
    before = ws.run("-e", "production", "--var-file", "vars/july.yaml", "plan", "--refresh=false", "--json")
    after = ws.run("plan", "--refresh=false", "--json", "-e", "production", "--var-file", "vars/july.yaml")
    assert before.exit_code == after.exit_code == 0, before.output + after.output
    assert _same_but_lineage(before.stdout) == _same_but_lineage(after.stdout)  # no state yet: each run a new one
    assert '"environment": "production"' in before.stdout and "gold plan, 2025-07" in before.stdout
    mixed = ws.run("--var", "period=2025-08", "validate", "--var", "tier=silver", "--json")
    assert mixed.exit_code == 0 and '"invoices": 1' in mixed.stdout, mixed.output


def test_vars_after_the_command_win_over_those_before(ws: Workspace) -> None:
    result = ws.run("--var", "period=2025-07", "--var", "tier=silver", "plan", "--refresh=false", "--var", "tier=bronze")
    assert result.exit_code == 0, result.output
    assert "acme-2025-07" in result.stdout


def test_two_different_environments_are_refused(ws: Workspace) -> None:
    result = ws.run("-e", "production", "plan", "-e", "dev", "--var", "period=2025-07")
    assert result.exit_code == 1
    assert "two environments given: -e production before the command and -e dev after it" in result.stderr
    assert ws.run("-e", "dev", "plan", "-e", "dev", "--refresh=false", "--var", "period=2025-07").exit_code == 0


@pytest.mark.parametrize(("args", "meant"), [
    (("plan", "-out=plan.json"), "--out=plan.json"),
    (("apply", "-auto-approve"), "--auto-approve"),
    (("plan", "-var", "period=2025-07"), "--var"),
    (("plan", "-var-file=vars/july.yaml"), "--var-file=vars/july.yaml"),
    (("plan", "-refresh=false"), "--refresh=false"),
    (("plan", "-detailed-exitcode"), "--detailed-exitcode"),
    (("-e", "dev", "plan", "-target=acme-*"), "--target=acme-*"),
])
def test_terraform_single_dash_flags_name_the_flag_meant(ws: Workspace, args: tuple[str, ...], meant: str) -> None:
    result = ws.run(*args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"invoicesync spells it with two dashes: {meant}" in result.stderr, result.stderr
    assert not (ws.root / "state").exists() or not any((ws.root / "state").iterdir())


def test_terraform_flags_without_an_equivalent_say_so(ws: Workspace) -> None:
    result = ws.run("plan", "-input=false")
    assert result.exit_code == 1 and "Terraform's -input=false has no invoicesync equivalent" in result.stderr


def test_values_after_a_double_dash_and_short_flags_are_left_alone(ws: Workspace) -> None:
    assert ws.run("-C", str(ws.root), "validate", "--var", "period=2025-07").exit_code == 0
    result = ws.run("validate", "--var", "period=2025-07", "--", "-out")
    assert "two dashes" not in result.output


def test_addresses_sort_by_their_numbers(ws: Workspace) -> None:
    """sig-2 before sig-10, in the plan, in `show` and in `state list` (issue 13: natural sort)."""
    lines = ["invoices:"]
    for n in (10, 2, 1, 20):
        lines += [f"  sig-{n}:", "    entity: 54", "    client: 33973", "    invoice_date: 2025-07-01",
                  "    due_date: 2025-07-31", "    lines:", "      - {product: 2545, quantity: 1, rate: 5}"]
    ws.remove("specs/acme.yaml.j2")
    ws.write("specs/sig.yaml", "\n".join(lines) + "\n")
    plan = ws.run("plan", "--refresh=false")
    order = [a for a in re.findall(r"sig-\d+", plan.stdout)]
    assert order == ["sig-1", "sig-2", "sig-10", "sig-20"], plan.stdout
    assert ws.run("apply", "--auto-approve").exit_code == 0
    listed = ws.run("state", "list").stdout.split()
    assert [w for w in listed if w.startswith("sig-")] == ["sig-1", "sig-2", "sig-10", "sig-20"]
    shown = re.findall(r"sig-\d+", ws.run("show").stdout)
    assert shown == ["sig-1", "sig-2", "sig-10", "sig-20"]


def test_validate_json_prints_each_problem_located_on_stdout(ws: Workspace) -> None:
    ws.write("specs/bad.yaml", "invoices:\n  bad-1:\n    entity: 54\n    invoice_date: 2025-07-01\n"
                               "    due_date: 2025-07-31\n    lines:\n      - {product: 2545, rate: fifty}\n")
    result = ws.run("validate", "--json", "--var", "period=2025-07")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    (problem,) = [e for e in report["errors"] if e["address"] == "bad-1"]
    assert problem["file"] == "specs/bad.yaml" and problem["line"] == 7 and problem["field"] == "lines[0].rate"
    assert "fifty" in problem["message"] or "number" in problem["message"]
    assert "specs/bad.yaml:7" in result.stderr  # people still read stderr
    ws.write("invoicesync.toml", "default_environment = 'nope'\n")
    config = ws.run("validate", "--json")
    assert config.exit_code == 1 and json.loads(config.stdout)["errors"][0]["message"]
