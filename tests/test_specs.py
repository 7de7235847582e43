"""specs: spec files to validated DesiredInvoice values, and every problem located (file:line, address, field)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from invoicesync.config import load_settings
from invoicesync.errors import SpecError, SpecErrors, UsageError
from invoicesync.models import body_digest, to_wire
from invoicesync.specs import SpecSet, load_specs, parse_cli_var, spec_template_env
from tests.spec_tree import build_file_tree

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
    defaults:
      entity: 54
      currency: USD
      terms: net_30
    invoices:
      acme-2025-07:
        client: 33973
        invoice_date: 2025-07-01
        invoice_number: ACME-2025-07
        lines:
          - product: 2545
            description: Platform subscription, July 2025
            quantity: 1
            rate: 50
            tax: 5
"""


def load(tmp_path: Path, files: Mapping[str, str | bytes], *, config: str = "", **kwargs: Any) -> SpecSet:
    build_file_tree(tmp_path, {"invoicesync.toml": config, **files})
    return load_specs(load_settings(tmp_path, environ={}), **kwargs)


def errors_of(tmp_path: Path, files: Mapping[str, str | bytes], **kwargs: Any) -> list[SpecError]:
    with pytest.raises(SpecErrors) as exc:
        load(tmp_path, files, **kwargs)
    return exc.value.errors


def only_error(tmp_path: Path, files: dict[str, str], **kwargs: Any) -> str:
    errors = errors_of(tmp_path, files, **kwargs)
    assert len(errors) == 1, [str(e) for e in errors]
    return str(errors[0])


def invoice(body: str) -> dict[str, str]:
    """One file with one invoice "a" (entity, dates and one line filled in) plus ``body``'s fields."""
    return {
        "specs/a.yaml": "invoices:\n  a:\n    entity: 54\n    invoice_date: 2025-07-01\n    terms: net_30\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
        + ("" if "lines:" in body else "    lines: [{product: 2545, rate: 10}]\n")
    }


# --- the good path ---------------------------------------------------------------------------------


def test_good_spec_derives_due_date_and_amount(tmp_path: Path) -> None:
    specs = load(tmp_path, {"specs/acme.yaml": GOOD})
    assert specs.files == ("specs/acme.yaml",)
    (inv,) = specs.invoices
    assert inv.address == "acme-2025-07"
    assert inv.body.due_date == dt.date(2025, 7, 31)
    assert inv.wire["lines"][0]["amount"] == Decimal(50)
    assert inv.wire["due_date"] == "2025-07-31"
    assert inv.wire == to_wire(inv.body)
    assert inv.digest == body_digest(inv.wire)
    assert str(inv.location) == "specs/acme.yaml:6"
    assert inv.total == Decimal(55)
    assert "source_id" not in inv.wire


def test_money_is_exact_decimal(tmp_path: Path) -> None:
    specs = load(tmp_path, invoice("lines: [{product: 2545, rate: 0.1, quantity: 3}]"))
    (inv,) = specs.invoices
    line = inv.body.lines[0]
    assert isinstance(line.rate, Decimal) and line.rate == Decimal("0.1")
    assert line.amount == Decimal("0.3")
    assert inv.wire["lines"][0]["amount"] == Decimal("0.3")
    assert inv.total == Decimal("0.3")


def test_quantity_defaults_to_one_for_the_amount(tmp_path: Path) -> None:
    (inv,) = load(tmp_path, invoice("lines: [{rate: 12.50}]")).invoices
    assert inv.wire["lines"][0] == {"rate": Decimal("12.5"), "amount": Decimal("12.5")}


def test_explicit_due_date_is_kept_and_terms_variants(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults: {entity: 54, invoice_date: 2025-01-31, lines: [{rate: 1}]}
            invoices:
              explicit: {terms: net_30, due_date: 2025-02-01}
              receipt: {terms: due_on_receipt}
              net: {terms: net_45}
              custom: {terms: custom, due_date: 2025-03-03}
        """
    }
    due = {inv.address: inv.body.due_date for inv in load(tmp_path, files).invoices}
    assert due == {
        "custom": dt.date(2025, 3, 3),
        "explicit": dt.date(2025, 2, 1),
        "net": dt.date(2025, 3, 17),
        "receipt": dt.date(2025, 1, 31),
    }


def test_invoices_sorted_by_address_across_files_and_lifecycle(tmp_path: Path) -> None:
    files = {
        "specs/z.yaml": "invoices:\n  b-1: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}]}\n",
        "specs/sub/a.yml": """\
            invoices:
              c-1:
                entity: 54
                invoice_date: 2025-07-01
                terms: net_5
                lines: [{rate: 1}]
                lifecycle: {prevent_destroy: true, on_remove: forget}
              a-1: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}]}
        """,
        "specs/README.md": "not a spec",
        "specs/.hidden.yaml": "not: loaded",
    }
    specs = load(tmp_path, files)
    assert [i.address for i in specs.invoices] == ["a-1", "b-1", "c-1"]
    assert specs.files == ("specs/sub/a.yml", "specs/z.yaml")
    c1 = specs.invoices[2]
    assert (c1.lifecycle.prevent_destroy, c1.lifecycle.on_remove) == (True, "forget")
    assert specs.invoices[0].lifecycle.on_remove == "void"


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults: {entity: 54, invoice_date: 2025-07-01, terms: net_30}
            invoices:
              a: &base
                lines: &lines [{product: 2545, rate: 10}]
              b:
                <<: *base
                terms: net_60
              c:
                lines: *lines
        """
    }
    specs = load(tmp_path, files)
    assert [i.body.due_date.isoformat() for i in specs.invoices] == ["2025-07-31", "2025-08-30", "2025-07-31"]
    assert all(i.wire["lines"][0]["amount"] == 10 for i in specs.invoices)


# --- templates and variables -----------------------------------------------------------------------


MONTHLY = """\
    invoices:
    {% for c in customers %}
      {{ c.name }}-{{ period.strftime('%Y-%m') }}:
        entity: 54
        client: {{ c.id }}
        invoice_date: {{ period }}
        due_date: {{ period | add_days(14) }}
        period_start: {{ period | month_start }}
        period_end: {{ period | month_end }}
        lines:
          - rate: {{ c.rate }}
            quantity: {{ seats }}
    {% endfor %}
"""


def test_template_with_vars_and_filters(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"vars.yaml": "customers:\n  - {name: acme, id: 33973, rate: 0.1}\n"})
    specs = load(
        tmp_path,
        {"specs/monthly.yaml.j2": MONTHLY},
        var_files=[Path("vars.yaml")],
        cli_vars=["period=2025-02-10", "seats=3"],
    )
    (inv,) = specs.invoices
    assert inv.address == "acme-2025-02"
    assert inv.wire["due_date"] == "2025-02-24"
    assert inv.wire["period_start"] == "2025-02-01" and inv.wire["period_end"] == "2025-02-28"
    assert inv.wire["lines"][0]["amount"] == Decimal("0.3")


def test_date_filters() -> None:
    env = spec_template_env()
    render = lambda text, **v: env.from_string(text).render(**v)  # noqa: E731
    assert render("{{ d | add_months(1) }}", d=dt.date(2024, 1, 31)) == "2024-02-29"
    assert render("{{ d | add_months(1) }}", d=dt.date(2025, 1, 31)) == "2025-02-28"
    assert render("{{ d | add_months(-2) }}", d="2025-03-31") == "2025-01-31"
    assert render("{{ d | add_months(12) }}", d="2025-12-15") == "2026-12-15"
    assert render("{{ '2025-12-31' | add_days(1) }}") == "2026-01-01"
    assert render("{{ '2024-02-10' | month_end }} {{ '2024-02-10' | month_start }}") == "2024-02-29 2024-02-01"
    assert render("{{ '0.1' | decimal * 3 }}") == "0.3"


def test_var_precedence_env_vars_then_files_then_cli(tmp_path: Path) -> None:
    config = """\
        [environments.e]
        vars = { a = "env", b = "env", c = "env", d = "env" }
        var_files = ["env-vars.yaml"]
    """
    build_file_tree(tmp_path, {"env-vars.yaml": "b: envfile\nc: envfile\nd: envfile\n", "cli.yaml": "c: clifile\nd: clifile\n"})
    files = {
        "specs/a.yaml.j2": """\
            invoices:
              x:
                entity: 54
                invoice_date: 2025-07-01
                terms: net_30
                message_on_invoice: "{{ a }} {{ b }} {{ c }} {{ d }}"
                lines: [{rate: 1}]
        """
    }
    specs = load(tmp_path, files, config=config, var_files=[tmp_path / "cli.yaml"], cli_vars=["d=cli"])
    assert specs.invoices[0].wire["message_on_invoice"] == "env envfile clifile cli"


def test_cli_var_values_are_yaml_scalars() -> None:
    assert parse_cli_var("period=2025-07-01") == ("period", dt.date(2025, 7, 1))
    assert parse_cli_var("seats=3") == ("seats", 3)
    assert parse_cli_var("rate=0.1") == ("rate", Decimal("0.1"))
    assert parse_cli_var("flag=true") == ("flag", True)
    assert parse_cli_var("code='007'") == ("code", "007")
    assert parse_cli_var("note=") == ("note", "")
    assert parse_cli_var("note=a: b") == ("note", "a: b")
    assert parse_cli_var("customer.seats=3") == ("customer.seats", 3)
    assert parse_cli_var("url=https://x.example/a=b") == ("url", "https://x.example/a=b")
    for bad in ("novalue", "=3", "bad key=1"):
        with pytest.raises(UsageError):
            parse_cli_var(bad)


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "refused by the template sandbox"),
        ("{{ cycler.__init__.__globals__ }}", "refused by the template sandbox"),
        ("{% include 'other.yaml' %}", "cannot include, import or extend"),
        ("{% import 'macros.j2' as m %}", "cannot include, import or extend"),
        ("{% extends 'base.j2' %}", "cannot include, import or extend"),
        ("{{ environ['HOME'] }}", "'environ' is undefined"),
        ("{{ lookup('env', 'HOME') }}", "'lookup' is undefined"),
        ("{{ 0.1 * 3 }}", "never a float"),
    ],
)
def test_template_sandbox_refuses_escapes(tmp_path: Path, template: str, expected: str) -> None:
    message = only_error(tmp_path, {"specs/a.yaml.j2": "invoices:\n  x: " + template + "\n"})
    assert message.startswith("specs/a.yaml.j2:2: ")
    assert expected in message


# --- one test per error class ----------------------------------------------------------------------


def test_yaml_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    message = only_error(tmp_path, {"specs/a.yaml": "invoices:\n  a:\n    entity: [54\n    client: 1\n"})
    assert message.startswith("specs/a.yaml:4: YAML syntax error")


def test_jinja_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    message = only_error(tmp_path, {"specs/m.yaml.j2": "invoices:\n{% for x in y %}\n  a: {{ x }\n{% endfor %}\n"})
    assert message.startswith("specs/m.yaml.j2:3: template syntax error")


def test_undefined_jinja_variable_names_it_and_its_line(tmp_path: Path) -> None:
    message = only_error(tmp_path, {"specs/m.yaml.j2": "invoices:\n  a:\n    client: {{ customer.id }}\n"})
    assert message == "specs/m.yaml.j2:3: undefined template variable: 'customer' is undefined"


def test_unknown_field_suggests(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("clinet: 33973"))
    assert message == "specs/a.yaml:6: invoice \"a\": clinet: unknown field 'clinet' (did you mean 'client'?)"


def test_read_only_field_hint(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("lines: [{product: 2545, product_name: Platform, rate: 1}]"))
    assert message == "specs/a.yaml:6: invoice \"a\": lines[0].product_name: unknown field 'product_name': read-only: Campfire fills it in"


def test_wrong_type(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("lines:\n  - product: 2545\n    rate: lots"))
    assert message == "specs/a.yaml:8: invoice \"a\": lines[0].rate: Input should be a valid decimal (got 'lots')"


def test_bad_enum_lists_allowed_values(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("payment_status: unpaid"))
    assert message.startswith("specs/a.yaml:6: invoice \"a\": payment_status: 'unpaid' is not one of the allowed values: ")
    assert "'open'" in message and "'voided'" in message


def test_bad_terms_enum_does_not_also_complain_about_due_date(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, {"specs/a.yaml": "invoices:\n  a: {entity: 54, invoice_date: 2025-07-01, terms: net_31, lines: [{rate: 1}]}\n"})
    assert [e.field for e in errors] == ["terms"]
    assert "'net_30'" in str(errors[0])


def test_string_over_max_length(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("ref_number: " + "x" * 121))
    assert message == "specs/a.yaml:6: invoice \"a\": ref_number: too long: 121 characters (max 120)"


def test_number_out_of_range(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("lines: [{rate: 1, discount_percentage: 1000}]"))
    assert message == "specs/a.yaml:6: invoice \"a\": lines[0].discount_percentage: 1000 is out of range: must be < 1000"


def test_bad_date(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("period_start: 2025-13-01"))
    assert message == 'specs/a.yaml:6: invoice "a": period_start: 2025-13-01 is not a date (month must be in 1..12)'


def test_date_in_another_format(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("period_start: 01/07/2025"))
    assert message.startswith("specs/a.yaml:6: invoice \"a\": period_start: Date has wrong format")
    assert "'01/07/2025'" in message


def test_duplicate_address_across_files_names_both(tmp_path: Path) -> None:
    one = "invoices:\n  dup: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}]}\n"
    message = only_error(tmp_path, {"specs/a.yaml": one, "specs/b.yaml": "\n" + one})
    assert message == 'specs/b.yaml:3: invoice "dup": address already declared at specs/a.yaml:2'


def test_duplicate_invoice_number_names_both(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}]}
            invoices:
              first: {invoice_number: INV-1}
              second:
                invoice_number: INV-1
        """
    }
    message = only_error(tmp_path, files)
    assert message == (
        "specs/a.yaml:5: invoice \"second\": invoice_number: invoice_number 'INV-1' is also used by "
        "invoice 'first' (specs/a.yaml:3)"
    )


def test_duplicate_source_id_names_both_invoices_and_places(tmp_path: Path) -> None:
    one = "invoices:\n  first: {entity: 54, invoice_date: 2025-07-01, terms: net_5, source_id: crm-7, lines: [{rate: 1}]}\n"
    files = {
        "specs/a.yaml": one,
        "specs/b.yaml.j2": """\
            defaults: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}]}
            invoices:
              second:
                source_id: {{ 'crm-' ~ 7 }}
        """,
    }
    message = only_error(tmp_path, files)
    assert message == (
        "specs/b.yaml.j2:4: invoice \"second\": source_id: source_id 'crm-7' is also used by "
        "invoice 'first' (specs/a.yaml:2)"
    )


def test_source_id_clashes_are_collected_with_every_other_error(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}], source_id: S}
            invoices:
              a: {}
              b: {invoice_number: N}
              c: {invoice_number: N}
              d: {clinet: 1}
        """
    }
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, files)
    assert [str(e) for e in caught.value.errors] == [
        "specs/a.yaml:1: invoice \"b\": source_id: source_id 'S' is also used by invoice 'a' (specs/a.yaml:3)",
        "specs/a.yaml:1: invoice \"c\": source_id: source_id 'S' is also used by invoice 'a' (specs/a.yaml:3)",
        "specs/a.yaml:5: invoice \"c\": invoice_number: invoice_number 'N' is also used by invoice 'b' (specs/a.yaml:4)",
        "specs/a.yaml:6: invoice \"d\": clinet: unknown field 'clinet' (did you mean 'client'?)",
    ]
    assert str(caught.value).splitlines()[0] == (
        "specs/a.yaml:1: invoices \"b\", \"c\": source_id: source_id 'S' is also used by invoice 'a' (specs/a.yaml:3)"
    )


def test_distinct_and_empty_source_ids_are_fine(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}]}
            invoices:
              a: {source_id: S1}
              b: {source_id: S2}
              c: {source_id: ""}
              d: {source_id: ""}
        """
    }
    assert [inv.body.source_id for inv in load(tmp_path, files).invoices] == ["S1", "S2", "", ""]


def test_custom_terms_without_due_date(tmp_path: Path) -> None:
    files = {"specs/a.yaml": "invoices:\n  a:\n    entity: 54\n    invoice_date: 2025-07-01\n    terms: custom\n    lines: [{rate: 1}]\n"}
    message = only_error(tmp_path, files)
    assert message == "specs/a.yaml:2: invoice \"a\": due_date: terms is 'custom': set due_date explicitly"


def test_no_terms_and_no_due_date(tmp_path: Path) -> None:
    files = {"specs/a.yaml": "invoices:\n  a: {entity: 54, invoice_date: 2025-07-01, lines: [{rate: 1}]}\n"}
    assert "due_date is required (or set terms" in only_error(tmp_path, files)


def test_due_date_before_invoice_date(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("due_date: 2025-06-30"))
    assert message == 'specs/a.yaml:6: invoice "a": due_date: due_date 2025-06-30 is before invoice_date 2025-07-01'


def test_line_amount_disagreeing_with_quantity_times_rate(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("lines:\n  - quantity: 3\n    rate: 49.99\n    amount: 150"))
    assert message.startswith('specs/a.yaml:9: invoice "a": lines[0].amount: amount 150 does not match quantity 3 x rate 49.99 = 149.97')


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    message = only_error(tmp_path, {"specs/a.yaml": "- just\n- a list\n"})
    assert message.startswith("specs/a.yaml:1: the top level is not a mapping")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = only_error(tmp_path, {"specs/a.yaml": "invoices: {}\ninvoice:\n  a: {}\n"})
    assert message.startswith("specs/a.yaml:2: unknown top-level key 'invoice' (did you mean 'invoices'?)")


def test_empty_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    message = only_error(tmp_path, {})
    assert message == "specs: the spec folder has no spec files (*.yaml, *.yml, *.j2); nothing to plan"


def test_missing_spec_folder(tmp_path: Path) -> None:
    assert "does not exist" in only_error(tmp_path, {})


def test_bad_address_and_lifecycle(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}]}
            invoices:
              "has space": {}
              ok:
                lifecycle: {prevent_destroy: yes, on_remove: vanish, prevent_destory: true}
        """
    }
    messages = [str(e) for e in errors_of(tmp_path, files)]
    assert messages[0].startswith('specs/a.yaml:3: invoice "has space": an address is 1-200 characters')
    assert any("lifecycle.on_remove: must be one of void, delete, forget" in m for m in messages)
    assert any("lifecycle.prevent_destory: unknown lifecycle setting (did you mean 'prevent_destroy'?)" in m for m in messages)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    message = only_error(tmp_path, invoice("client: 1\nclient: 2"))
    assert message == "specs/a.yaml:7: duplicate key 'client' (first on line 6)"


def test_all_errors_of_a_run_reported_together(tmp_path: Path) -> None:
    files = {
        "specs/1.yaml": "invoices:\n  a: {entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{rate: 1}], clinet: 1}\n",
        "specs/2.yaml": "invoices: [oops\n",
        "specs/3.yaml.j2": "invoices:\n  b: {{ nope }}\n",
        "specs/4.yaml": """\
            invoices:
              c: {entity: 54, invoice_date: 2025-07-01, due_date: 2025-01-01, lines: [{rate: 1}]}
              d: {entity: 0, invoice_date: bad, terms: net_5, lines: []}
        """,
    }
    with pytest.raises(SpecErrors) as exc:
        load(tmp_path, files)
    files_named = [e.where.file for e in exc.value.errors]
    assert files_named[:3] == ["specs/1.yaml", "specs/2.yaml", "specs/3.yaml.j2"]
    assert {(e.address, e.field) for e in exc.value.errors if e.where.file == "specs/4.yaml"} == {
        ("c", "due_date"),
        ("d", "entity"),
        ("d", "invoice_date"),
        ("d", "lines"),
    }
    assert str(exc.value).endswith("7 errors in spec files.")


# --- limits ------------------------------------------------------------------------------------------


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = "defaults:\n  integration_context:\n" + "".join(f"    {l}\n" for l in lines) + "invoices: {}\n"
    message = only_error(tmp_path, {"specs/a.yaml": text})
    assert "values (counting alias expansions)" in message and message.startswith("specs/a.yaml:")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    text = "invoices:\n  a:\n    integration_context: " + "[" * 80 + "]" * 80 + "\n"
    message = only_error(tmp_path, {"specs/a.yaml": text})
    assert message.startswith("specs/a.yaml:3: nested deeper than 64 levels")


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    message = only_error(tmp_path, {"specs/a.yaml": "invoices:\n  a: &x\n    lines: [*x]\n"})
    assert "recursive alias" in message


def test_unsupported_tags_are_refused(tmp_path: Path) -> None:
    message = only_error(tmp_path, {"specs/a.yaml": "invoices:\n  a: !!python/object:os.system {}\n"})
    assert message.startswith("specs/a.yaml:2: unsupported YAML tag")


# --- the repository's own workspaces -------------------------------------------------------------


def test_demo_specs_load(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = load_specs(load_settings(REPO, environ={}))
    assert len(specs.invoices) >= 5
    assert {inv.wire["entity"] for inv in specs.invoices} == {54}


@pytest.mark.parametrize(
    "example, environments",
    [
        ("monthly-subscriptions", [None]),
        ("environment-seeding", ["sandbox", "staging"]),
        ("ci-workflow", [None]),
    ],
)
def test_example_workspaces_load(example: str, environments: list[str | None]) -> None:
    for name in environments:
        settings = load_settings(REPO / "examples" / example, environment=name, environ={})
        assert load_specs(settings).invoices


def test_a_typo_under_defaults_is_reported_once_naming_every_invoice(tmp_path: Path) -> None:
    spec = (
        "defaults:\n  entity: 54\n  curency: USD\n  terms: net_30\ninvoices:\n"
        "  a: {invoice_date: 2025-02-01, lines: [{rate: 5}]}\n"
        "  b: {invoice_date: 2025-02-01, lines: [{rate: 5}]}\n"
    )
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, {"specs/a.yaml": spec})
    assert str(caught.value) == (
        "specs/a.yaml:3: invoices \"a\", \"b\": curency: unknown field 'curency' (did you mean 'currency'?)\n"
        "1 error in spec files."
    )


# --- symbolic links and files that are not text --------------------------------------------------------

ONE = "invoices:\n  {name}: {{entity: 54, invoice_date: 2025-07-01, terms: net_5, lines: [{{rate: 1}}]}}\n"


def test_symlinks_inside_the_workspace_keep_working(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    build_file_tree(ws, {"invoicesync.toml": "", "shared/b.yaml": ONE.format(name="b"), "library/c.yaml": ONE.format(name="c")})
    (ws / "specs").mkdir()
    (ws / "specs" / "b.yaml").symlink_to("../shared/b.yaml")
    (ws / "specs" / "lib").symlink_to(ws / "library", target_is_directory=True)
    loaded = load_specs(load_settings(ws, environ={}))
    assert [inv.address for inv in loaded.invoices] == ["b", "c"]
    assert loaded.files == ("specs/b.yaml", "specs/lib/c.yaml")
    assert str(loaded.invoices[1].location) == "specs/lib/c.yaml:2"


def test_a_symlink_to_a_folder_that_contains_it_is_refused_not_followed_forever(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    build_file_tree(ws, {"invoicesync.toml": "", "specs/a.yaml": ONE.format(name="a"), "library/c.yaml": ONE.format(name="c")})
    (ws / "specs" / "lib").symlink_to("../library", target_is_directory=True)
    (ws / "library" / "back").symlink_to("../specs", target_is_directory=True)
    (ws / "specs" / "up").symlink_to("..", target_is_directory=True)
    with pytest.raises(SpecErrors) as caught:
        load_specs(load_settings(ws, environ={}))
    assert [str(e) for e in caught.value.errors] == [
        f"specs/lib/back: a symbolic link to ../specs (which leads to {ws / 'specs'}), a folder that contains it; "
        "refused (following it would loop)",
        f"specs/up: a symbolic link to .. (which leads to {ws}), a folder that contains it; refused (following it would loop)",
    ]


def test_symlinks_out_of_the_workspace_are_refused_unread(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    build_file_tree(outside, {"secret.yaml": "not: [valid yaml", "dir/x.yaml": ONE.format(name="x")})
    ws = tmp_path / "ws"
    build_file_tree(ws, {"invoicesync.toml": "", "specs/a.yaml": ONE.format(name="a")})
    (ws / "specs" / "evil.yaml").symlink_to(outside / "secret.yaml")
    (ws / "specs" / "relative.yaml.j2").symlink_to("../../outside/secret.yaml")
    (ws / "specs" / "dir").symlink_to(outside / "dir", target_is_directory=True)
    (ws / "specs" / "hop.yaml").symlink_to("relative.yaml.j2")  # a link to a link that leaves
    (ws / "specs" / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    (ws / "specs" / "notes.txt").symlink_to(outside / "secret.yaml")  # not a spec file: never looked at
    with pytest.raises(SpecErrors) as caught:
        load_specs(load_settings(ws, environ={}))
    assert [str(e) for e in caught.value.errors] == [
        f"specs/dir: a symbolic link to {outside / 'dir'}, outside the workspace; refused (spec files are read only from inside the workspace)",
        f"specs/evil.yaml: a symbolic link to {outside / 'secret.yaml'}, outside the workspace; refused (spec files are read only from inside the workspace)",
        f"specs/gone.yaml: a symbolic link to {tmp_path / 'nowhere.yaml'}, outside the workspace; refused (spec files are read only from inside the workspace)",
        f"specs/hop.yaml: a symbolic link to relative.yaml.j2 (which leads to {outside / 'secret.yaml'}), outside the workspace; refused (spec files are read only from inside the workspace)",
        f"specs/relative.yaml.j2: a symbolic link to ../../outside/secret.yaml (which leads to {outside / 'secret.yaml'}), outside the workspace; refused (spec files are read only from inside the workspace)",
    ]


def test_a_nul_byte_is_reported_at_its_line(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {
        "specs/a.yaml": b"invoices:\n  a:\n    entity: 54\x00\n",
        "specs/b.yaml.j2": b"invoices: {}\n{# \x00 #}\n",
        "specs/c.yaml": "invoices:\n  c:\n    note: \"bell \x07\"\n",
        "specs/d.yaml": b"invoices:\n\n  d: \xff\xfe\n",
    }
    assert [str(e) for e in errors_of(tmp_path, files)] == [
        "specs/a.yaml:3: contains a NUL byte; a spec file is text (is it a binary file?)",
        "specs/b.yaml.j2:2: contains a NUL byte; a spec file is text (is it a binary file?)",
        "specs/c.yaml:3: contains the control character U+0007, which a spec file cannot contain",
        "specs/d.yaml:3: file is not valid UTF-8 text",
    ]


def test_a_template_that_renders_a_nul_byte_is_reported_at_the_rendered_line(tmp_path: Path) -> None:
    files = {"specs/a.yaml.j2": "invoices:\n  a:\n    note: {{ nul }}\n"}
    message = only_error(tmp_path, files, cli_vars=['nul="\\0"'])
    assert message == "specs/a.yaml.j2:3: the rendered template contains a NUL byte"


def test_a_nul_byte_in_a_var_file_is_reported_at_its_line(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"vars.yaml": b"a: 1\nb: \x002\n", "bad.yaml": b"a: 1\nb: \xc3\n"})
    for name, expected in (
        ("vars.yaml", "vars.yaml:2: contains a NUL byte; a var file is text (is it a binary file?)"),
        ("bad.yaml", "bad.yaml:2: var file is not valid UTF-8 text"),
    ):
        message = only_error(tmp_path, {"specs/a.yaml": ONE.format(name="a")}, var_files=[Path(name)])
        assert message == expected


# --- the YAML fast path ----------------------------------------------------------------------------------

FAST_DOCUMENTS = {
    "specs/a.yaml": """\
# plain block YAML, as templates write it
defaults:
  entity: 54
  terms: net_30
  currency: 'USD'
invoices:
  sub-1:
    client: 33973
    invoice_date: 2025-07-01
    invoice_number: "SUB-1"
    message_on_invoice: It's 50% off, as agreed (see page 2)
    purchase_order_number: 000123
    lines:
    - product: 2545
      description: 'Platform subscription, July ''25'
      quantity: 3
      rate: 49.99
      tax: 2.50

    -   product: 2546
        rate: 0.1
  sub-2:
    client: 33974
    invoice_date: 2025-07-02
    ref_number: 12:30
    tags:
      - 7
      - 8
    lifecycle:
      prevent_destroy: yes
      on_remove: forget
    lines:
      -
        product: 2545
        rate: 1000
        description: Café
""",
}


def _loaded(tmp_path: Path, files: Mapping[str, str], fast: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    from invoicesync.specs import yaml as specs_yaml

    monkeypatch.setattr(specs_yaml, "FAST_PATH", fast)
    root = tmp_path / ("fast" if fast else "full")
    try:
        specs = load(root, files)
    except SpecErrors as exc:
        return [str(e) for e in exc.errors]
    return [(i.address, dict(i.wire), i.digest, str(i.location), i.lifecycle) for i in specs.invoices]


def test_the_fast_path_reads_plain_block_yaml_as_the_full_parser_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invoicesync.specs.yaml import _fast_spec_document

    assert _fast_spec_document(FAST_DOCUMENTS["specs/a.yaml"]) is not None
    fast = _loaded(tmp_path, FAST_DOCUMENTS, True, monkeypatch)
    assert fast == _loaded(tmp_path, FAST_DOCUMENTS, False, monkeypatch)
    assert [a for a, *_ in fast] == ["sub-1", "sub-2"]


@pytest.mark.parametrize(
    "text",
    [
        "invoices:\n  a: &x\n    entity: 54\n",  # an anchor
        "invoices:\n  a: {entity: 54}\n",  # a flow mapping
        "invoices:\n  a:\n    message_on_invoice: |\n      two\n      lines\n",  # a block scalar
        "invoices:\n  a:\n    message_on_invoice: Invoice #5\n",  # an inline comment
        "invoices:\n  a:\n    message_on_invoice: one\n      two\n",  # a plain scalar on two lines
        "invoices:\n  a:\n    message_on_invoice: \"tab\\there\"\n",  # an escape
        "invoices:\n\ta:\n",  # a tab
        "---\ninvoices:\n",  # a document marker
        "invoices:\n  a:\n    entity: 54\n    entity: 55\n",  # a duplicate key
        "invoices:\n  a:\n    entity: 54\nother: 1\n",  # an unknown top-level key
    ],
)
def test_the_fast_path_leaves_the_rest_of_yaml_to_the_full_parser(text: str) -> None:
    from invoicesync.specs.yaml import _fast_spec_document

    assert _fast_spec_document(text) is None


def test_a_problem_in_a_document_read_fast_is_said_as_the_full_parser_locates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "specs/a.yaml": FAST_DOCUMENTS["specs/a.yaml"].replace("Café", "Café\n        colour: red"),
        # Claims the same invoice number as a.yaml's sub-1: reported once, against the invoice read last.
        "specs/b.yaml": "invoices:\n  b-1:\n    entity: 54\n    invoice_date: 2025-07-01\n    terms: net_30\n"
        "    invoice_number: SUB-1\n    lines:\n    - rate: 1\n",
    }
    fast = _loaded(tmp_path, files, True, monkeypatch)
    assert fast == _loaded(tmp_path, files, False, monkeypatch)
    assert fast == [
        "specs/a.yaml:37: invoice \"sub-2\": lines[0].colour: unknown field 'colour'",
        "specs/b.yaml:6: invoice \"b-1\": invoice_number: invoice_number 'SUB-1' is also used by invoice 'sub-1' (specs/a.yaml:7)",
    ]
