"""Spec safety through the real CLI: clashing source_ids, YAML 1.1 number pitfalls, template size bombs,
symlinks out of the workspace and binary spec files all end in ``Error: ...``, exit 1, no traceback.

Every case runs both ``validate`` and ``plan --refresh=false`` in a workspace on the in-process sandbox
endpoint, so nothing here needs a server, a key or the network; neither command may write to state/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Workspace, assert_spec_error
from tests.e2e.specs import ACME




# --- source_id -----------------------------------------------------------------------------------------


def test_two_invoices_with_one_source_id_name_both(offline: Workspace) -> None:
    offline.write("specs/a.yaml", ACME.replace("    lines:\n", "    source_id: crm-1\n    lines:\n", 1))
    second = ACME.replace("acme-2025-07:", "acme-2025-08:").replace("ACME-2025-07", "ACME-2025-08")
    offline.write("specs/b.yaml", second.replace("    lines:\n", "    source_id: crm-1\n    lines:\n", 1))
    assert_spec_error(
        offline, "specs/b.yaml:10:", 'invoice "acme-2025-08"', "source_id", "'crm-1'", "'acme-2025-07'", "specs/a.yaml:7"
    )


# --- values as written -------------------------------------------------------------------------------


def test_a_yaml_1_1_number_in_a_number_field_is_refused_with_its_reading(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("rate: 50", "rate: 1:30"))
    assert_spec_error(
        offline,
        'specs/acme.yaml:14: invoice "acme-2025-07": lines[0].rate: 1:30 is not a number '
        "(YAML 1.1 would read it as sexagesimal 90); write 90 or quote it if you mean text",
    )


def test_a_var_in_a_yaml_1_1_form_is_refused_where_it_lands(offline: Workspace) -> None:
    offline.write("specs/acme.yaml.j2", ACME.replace("rate: 50", "rate: {{ rate }}"))
    offline.write("vars.yaml", "rate: 0x1F\n")
    for args in (("--var", "rate=0x1F"), ("--var-file", "vars.yaml")):
        assert_spec_error(offline, "specs/acme.yaml.j2:14:", "lines[0].rate: 0x1F is not a number", "hex 31", args=args)


def test_string_fields_keep_yaml_1_1_numbers_as_written_in_the_plan(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("ACME-2025-07", "000123").replace("    lines:\n", "    purchase_order_number: 12:30\n    lines:\n", 1))
    assert offline.run("validate").exit_code == 0
    result = offline.run("plan", "--refresh=false", "--format", "json")
    assert result.exit_code == 0, result.output
    (change,) = json.loads(result.stdout)["changes"]
    assert (change["body"]["invoice_number"], change["body"]["purchase_order_number"]) == ("000123", "12:30")


def test_numbers_too_large_to_read_are_located_errors_not_crashes(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME.replace("rate: 50", "rate: " + "9" * 5000).replace("quantity: 1", "quantity: 1.0E+999999999"))
    assert_spec_error(
        offline,
        "specs/acme.yaml:14: a number with too many digits (5000 characters)",
    )
    offline.write("specs/acme.yaml", ACME.replace("quantity: 1", "quantity: 1.0E+999999999"))
    assert_spec_error(offline, 'specs/acme.yaml:13: invoice "acme-2025-07": lines[0].quantity: 1.0E+999999999 is out of range')


# --- template size bombs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["'{0:{1}}'.format('a', '999999999')", "'%999999999s' % 'x'", "'{:999999999}'.format(1)", "'x'|center(999999999)"],
)
def test_a_template_asking_for_gigabytes_is_refused_at_its_line(offline: Workspace, expression: str) -> None:
    offline.write("specs/acme.yaml.j2", ACME.replace("rate: 50", "rate: 50\n        tax_description: {{ " + expression + " }}"))
    assert_spec_error(offline, "specs/acme.yaml.j2:15: refused by the template sandbox")


# --- symbolic links ------------------------------------------------------------------------------------


def test_a_spec_symlink_out_of_the_workspace_is_refused_unread(offline: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "acme.yaml").write_text("this: [would not even parse\n")
    offline.write("specs/ok.yaml", ACME)
    (offline.root / "specs" / "stolen.yaml").symlink_to(outside / "acme.yaml")
    (offline.root / "specs" / "more").symlink_to(outside, target_is_directory=True)
    results = assert_spec_error(
        offline,
        f"specs/more: a symbolic link to {outside}, outside the workspace; refused",
        f"specs/stolen.yaml: a symbolic link to {outside / 'acme.yaml'}, outside the workspace; refused",
    )
    for result in results:
        assert "would not even parse" not in result.output and "YAML" not in result.output


def test_a_spec_symlink_inside_the_workspace_keeps_working(offline: Workspace) -> None:
    offline.write("shared/acme.yaml", ACME)
    (offline.root / "specs" / "acme.yaml").symlink_to("../shared/acme.yaml")
    assert offline.run("validate").exit_code == 0
    result = offline.run("plan", "--refresh=false")
    assert result.exit_code == 0, result.output
    assert "acme-2025-07" in result.stdout


# --- files that are not text ---------------------------------------------------------------------------


def test_a_nul_byte_in_a_spec_file_is_reported_at_its_line(offline: Workspace) -> None:
    (offline.root / "specs" / "acme.yaml").write_bytes(ACME.replace("USD", "US\0D").encode())
    assert_spec_error(offline, "Error: specs/acme.yaml:4: contains a NUL byte")


def test_a_nul_byte_in_a_var_file_is_reported_at_its_line(offline: Workspace) -> None:
    offline.write("specs/acme.yaml.j2", ACME.replace("rate: 50", "rate: {{ rate }}"))
    (offline.root / "vars.yaml").write_bytes(b"# rates\nrate: 5\x000\n")
    assert_spec_error(offline, "Error: vars.yaml:2: contains a NUL byte", args=("--var-file", "vars.yaml"))


def test_a_binary_file_named_like_a_spec_is_reported_not_parsed(offline: Workspace) -> None:
    offline.write("specs/acme.yaml", ACME)
    (offline.root / "specs" / "logo.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert_spec_error(offline, "specs/logo.yaml:1: file is not valid UTF-8 text")
