"""Every kind of user mistake, through the real CLI: exit 1, a message that says where, no traceback.

Spec errors run both `validate` and `plan --refresh=false` in a workspace whose only environment
is the in-process sandbox, so no server, key or network is needed; neither may write to state/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import OFFLINE_COMMANDS, RunResult, Workspace, assert_spec_error
from tests.e2e.specs import ACME



def _state_files(ws: Workspace) -> list[str]:
    state = ws.root / "state"
    return sorted(p.name for p in state.iterdir()) if state.exists() else []


def _assert_clean_failure(result: RunResult, *expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    for fragment in expected:
        assert fragment in result.stderr, f"{fragment!r} missing from:\n{result.stderr}"



# --- one test per class of spec error ------------------------------------------------------------------


def test_yaml_syntax_error_names_file_and_line(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("invoice_number: ACME-2025-07", "invoice_number: ACME: 2025-07"))
    assert_spec_error(offline, "specs/acme.yaml:9:", "YAML")


def test_jinja_syntax_error_names_template_and_line(offline: Workspace) -> None:
    offline.write("specs/acme.yaml.j2", ACME.replace("rate: 50", "rate: {{ 50 }"))
    assert_spec_error(offline, "specs/acme.yaml.j2:14:", "template syntax error")


def test_undefined_jinja_variable_names_the_variable_file_and_line(offline: Workspace) -> None:
    offline.write("specs/acme.yaml.j2", ACME.replace("rate: 50", "rate: {{ seat_rate }}"))
    assert_spec_error(offline, "specs/acme.yaml.j2:14:", "seat_rate", "undefined")


def test_unknown_field_suggests_the_nearest_field(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("    lines:\n", "    purchase_order_numbr: PO-1\n    lines:\n"))
    assert_spec_error(
        offline, "specs/acme.yaml:10:", 'invoice "acme-2025-07"', "purchase_order_numbr", "did you mean",
        "purchase_order_number",
    )


def test_unknown_line_field_is_reported_with_its_line_path(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("rate: 50", "rate: 50\n        quantty: 2"))
    assert_spec_error(offline, "specs/acme.yaml:15:", 'invoice "acme-2025-07"', "lines[0].quantty", "did you mean", "quantity")


def test_wrong_type_names_field_path_and_value(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("rate: 50", "rate: fifty"))
    assert_spec_error(offline, "specs/acme.yaml:14:", 'invoice "acme-2025-07"', "lines[0].rate", "decimal", "fifty")


def test_bad_enum_lists_the_allowed_values(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("terms: net_30", "terms: net_31"))
    (result, _) = assert_spec_error(offline, "specs/acme.yaml:5:", 'invoice "acme-2025-07"', "terms", "net_31")
    for allowed in ("net_30", "net_60", "due_on_receipt", "custom"):
        assert allowed in result.stderr


def test_string_over_its_maximum_length_says_the_limit(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("invoice_number: ACME-2025-07", "purchase_order_number: " + "P" * 121))
    assert_spec_error(offline, "specs/acme.yaml:9:", 'invoice "acme-2025-07"', "purchase_order_number", "120")


def test_number_out_of_range_says_the_bound(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("rate: 50", "rate: 50\n        discount_percentage: 1000"))
    assert_spec_error(offline, "specs/acme.yaml:15:", 'invoice "acme-2025-07"', "lines[0].discount_percentage", "range")


def test_impossible_date_is_an_error_not_a_rollover(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("invoice_date: 2025-07-01", "invoice_date: 2025-02-30"))
    assert_spec_error(offline, "specs/acme.yaml:8:", 'invoice "acme-2025-07"', "invoice_date", "2025-02-30")


def test_duplicate_address_across_files_names_both_files(offline: Workspace) -> None:
    offline.write("specs/a.yaml", ACME)
    offline.write("specs/b.yaml", ACME.replace("ACME-2025-07\n", "OTHER-1\n"))
    assert_spec_error(offline, 'invoice "acme-2025-07"', "specs/a.yaml:7", "specs/b.yaml:7")


def test_duplicate_invoice_number_names_both_invoices(offline: Workspace) -> None:
    second = ACME.split("invoices:\n")[1].replace("acme-2025-07:", "acme-2025-08:")
    offline.write("specs/acme.yaml", ACME + second)
    assert_spec_error(
        offline, "specs/acme.yaml:17:", 'invoice "acme-2025-08"', "invoice_number", "ACME-2025-07", "acme-2025-07",
        "specs/acme.yaml:7",
    )


def test_custom_terms_without_due_date_asks_for_one(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("terms: net_30", "terms: custom"))
    assert_spec_error(offline, "specs/acme.yaml:", 'invoice "acme-2025-07"', "due_date", "custom")


def test_due_date_before_invoice_date_is_refused(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("    invoice_number:", "    due_date: 2025-06-01\n    invoice_number:"))
    assert_spec_error(offline, "specs/acme.yaml:9:", 'invoice "acme-2025-07"', "due_date", "2025-06-01", "2025-07-01")


def test_line_amount_disagreeing_with_quantity_times_rate_is_refused(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("rate: 50", "rate: 50\n        amount: 60"))
    assert_spec_error(offline, "specs/acme.yaml:15:", 'invoice "acme-2025-07"', "lines[0].amount", "60", "50")


def test_top_level_that_is_not_a_mapping_is_refused(offline: Workspace) -> None:
    offline.write("specs/list.yaml", "- acme-2025-07\n- acme-2025-08\n")
    assert_spec_error(offline, "specs/list.yaml:1:", "mapping")


def test_empty_spec_folder_says_there_is_nothing_to_plan(offline: Workspace) -> None:
    offline.write("specs/README.txt", "not a spec\n")
    assert_spec_error(offline, "specs", "no spec files")


def test_every_error_of_a_run_is_reported_together(offline: Workspace) -> None:
    offline.write("specs/a-type.yaml", ACME.replace("rate: 50", "rate: fifty"))
    offline.write("specs/b-list.yaml", "- 1\n")
    offline.write("specs/c-template.yaml.j2", "{{ nope }}\n")
    for result in assert_spec_error(offline, "specs/a-type.yaml:14:", "specs/b-list.yaml:1:", "specs/c-template.yaml.j2:1:"):
        assert "3 errors" in result.stderr


# --- command-line mistakes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("plan", "--bogus"), "No such option '--bogus'"),
        (("--bogus", "validate"), "No such option '--bogus'"),
        (("validate", "--refresh=false"), "No such option '--refresh'"),
        (("frobnicate",), "No such command 'frobnicate'"),
        (("plan", "--format", "xml"), "'xml' is not one of"),
        (("plan", "--parallelism", "0"), "--parallelism"),
    ],
    ids=["command-flag", "global-flag", "flag-of-another-command", "unknown-command", "bad-choice", "out-of-range"],
)
def test_usage_errors_exit_1_not_2(offline: Workspace, args: tuple[str, ...], expected: str) -> None:
    offline.write("specs/acme.yaml", ACME)
    result = offline.run(*args)
    _assert_clean_failure(result, "Error:", expected, "--help")
    assert _state_files(offline) == []


def test_unknown_flag_as_a_subprocess_exits_1(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME)
    result = offline.run_process("plan", "--bogus", timeout=30)
    _assert_clean_failure(result, "No such option", "--bogus")


def test_unknown_environment_is_named(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME)
    for command in OFFLINE_COMMANDS:
        _assert_clean_failure(offline.run(*command, "-e", "nope"), "'nope'", "dev")
    offline.env["INVOICESYNC_ENV"] = "nope"
    _assert_clean_failure(offline.run("validate"), "'nope'")
    assert _state_files(offline) == []


@pytest.mark.parametrize("var", ["novalue", "=3", "1x=3"])
def test_malformed_var_is_a_usage_error(offline: Workspace, var: str) -> None:
    offline.write("specs/acme.yaml.j2", ACME)
    for command in OFFLINE_COMMANDS:
        _assert_clean_failure(offline.run(*command, "--var", var), "--var", var)
    assert _state_files(offline) == []


def test_malformed_var_is_refused_even_without_templates(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME)
    _assert_clean_failure(offline.run("validate", "--var", "novalue"), "--var")


def test_missing_var_file_is_refused_even_without_templates(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME)
    _assert_clean_failure(offline.run("validate", "--var-file", "missing.yaml"), "missing.yaml")


# --- the template sandbox ------------------------------------------------------------------------------

SECRET_ENV = "INVOICESYNC_E2E_TEMPLATE_SECRET"
SECRET_VALUE = "tpl-secret-3b9e41"


@pytest.mark.parametrize(
    "payload",
    [
        "{{ env." + SECRET_ENV + " }}",
        "{{ environ['" + SECRET_ENV + "'] }}",
        "{{ cycler.__init__.__globals__.os.environ['" + SECRET_ENV + "'] }}",
        "{{ lipsum.__globals__['os'].environ['" + SECRET_ENV + "'] }}",
        "{{ self.__init__.__globals__ }}",
        "{% include '/etc/passwd' %}",
        "{% import 'os' as os %}{{ os.environ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
    ],
    ids=["env", "environ", "cycler-globals", "lipsum-globals", "self-globals", "include-passwd", "import-os",
         "mro", "subclasses", "tuple-subclasses"],
)
def test_template_sandbox_escapes_fail_cleanly_without_leaking(offline: Workspace, payload: str) -> None:
    offline.env[SECRET_ENV] = SECRET_VALUE
    offline.write("specs/acme.yaml.j2", ACME.replace("Platform subscription", payload))
    passwd = Path("/etc/passwd").read_text(errors="replace").splitlines()[:1] if Path("/etc/passwd").exists() else []
    for command in OFFLINE_COMMANDS:
        result = offline.run(*command)
        _assert_clean_failure(result, "specs/acme.yaml.j2:12:")
        assert SECRET_VALUE not in result.output
        assert "<class" not in result.output and "<module" not in result.output
        for line in passwd:
            assert line not in result.output
    assert _state_files(offline) == []


# --- a dead server never sees, nor prints, the key -----------------------------------------------------

DEAD_KEY = "sk-dead-server-zebra-90210"


def test_api_key_never_appears_when_the_server_is_down(offline: Workspace) -> None:
    offline.write("invoicesync.toml", 'default_environment = "dev"\n\n[environments.dev]\nbase_url = "http://127.0.0.1:9"\n')
    offline.write("specs/acme.yaml", ACME)
    offline.env.update({"CAMPFIRE_API_KEY": DEAD_KEY})
    outputs = []
    # apply fails to create (nothing was sent, so nothing is left to settle); plan fails the same way.
    for args in (("apply", "--auto-approve"), ("plan",)):
        result = offline.run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output and "internal error" not in result.output
        assert re.search(r"could not connect|connection", result.output, re.I), result.output
        assert "127.0.0.1" in result.output
        outputs.append(result.output)
    assert not (offline.root / "state" / "dev.json").exists()  # no empty state bound to the dead endpoint
    # refresh and show have nothing to read: they work offline.
    for args in (("refresh",), ("show",)):
        result = offline.run(*args)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    spawned = offline.run_process("apply", "--auto-approve", timeout=60)
    assert spawned.exit_code == 1 and "Traceback" not in spawned.output
    outputs.append(spawned.output)
    for text in outputs:
        assert DEAD_KEY not in text
    for path in (offline.root / "state").iterdir() if (offline.root / "state").exists() else ():
        assert DEAD_KEY not in path.read_text(errors="replace"), path.name
