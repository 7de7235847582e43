"""specs: values are read as written, not as YAML 1.1 reads them.

PyYAML's resolver follows YAML 1.1: ``000123`` is octal 83, ``12:30`` sexagesimal 750, ``0x1F`` hex 31
and ``1_000`` is 1000. A string field keeps the text as written; a number field refuses such a value,
saying how YAML 1.1 would have read it. Every test runs with both the C (libyaml) and the pure Python
YAML loader, which must behave the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from invoicesync.specs import yaml as specs_yaml
from invoicesync.config import load_settings
from invoicesync.errors import SpecErrors
from invoicesync.specs import SpecSet, load_specs, parse_cli_var
from tests.spec_tree import build_file_tree


@pytest.fixture(autouse=True, params=["fast", "libyaml", "python"])
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test as specs read (the fast path for plain block YAML, then libyaml when PyYAML has it),
    and with each full parser alone: libyaml's, and the pure Python one."""
    if request.param != "fast":
        monkeypatch.setattr(specs_yaml, "FAST_PATH", False)
    if request.param == "python":
        monkeypatch.setattr(specs_yaml, "_SpecYamlLoader", specs_yaml._PySpecYamlLoader)
    elif not yaml.__with_libyaml__:
        pytest.skip("PyYAML was built without libyaml")
    yield request.param


def load(tmp_path: Path, files: dict[str, str], *, config: str = "", **kwargs: Any) -> SpecSet:
    build_file_tree(tmp_path, {"invoicesync.toml": config, **files})
    return load_specs(load_settings(tmp_path, environ={}), **kwargs)


def messages(tmp_path: Path, files: dict[str, str], **kwargs: Any) -> list[str]:
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, files, **kwargs)
    return [str(e) for e in caught.value.errors]


def invoice(body: str, line: str = "rate: 10") -> dict[str, str]:
    """One file with one invoice "a": ``body``'s fields from line 6, then one line holding ``line``'s fields."""
    return {
        "specs/a.yaml": "invoices:\n  a:\n    entity: 54\n    invoice_date: 2025-07-01\n    terms: net_30\n"
        + "".join(f"    {text}\n" for text in body.splitlines())
        + "    lines:\n      - "
        + "\n        ".join(line.splitlines())
        + "\n"
    }


def test_the_c_loader_is_used_when_pyyaml_has_it(yaml_loader: str) -> None:
    if yaml_loader in ("fast", "libyaml"):
        assert issubclass(specs_yaml._SpecYamlLoader, yaml.CSafeLoader)
    else:
        assert not issubclass(specs_yaml._SpecYamlLoader, yaml.CSafeLoader)


# --- string fields keep the text ----------------------------------------------------------------------


def test_string_fields_keep_yaml_1_1_numbers_as_written(tmp_path: Path) -> None:
    body = "\n".join(
        [
            "invoice_number: 000123",
            "purchase_order_number: 12:30",
            "ref_number: 0x1F",
            "message_on_invoice: 1_000",
            "source_id: 0b101",
            "vat_number: 0o17",
            "billing_address: -1:30.5",
        ]
    )
    (inv,) = load(tmp_path, invoice(body, "rate: 10\ndescription: 007")).invoices
    wire = inv.wire
    assert (wire["invoice_number"], wire["purchase_order_number"], wire["ref_number"]) == ("000123", "12:30", "0x1F")
    assert (wire["message_on_invoice"], wire["source_id"], wire["vat_number"]) == ("1_000", "0b101", "0o17")
    assert wire["billing_address"] == "-1:30.5"
    assert wire["lines"][0]["description"] == "007"
    assert all(type(wire[k]) is str for k in ("invoice_number", "purchase_order_number", "source_id"))


def test_string_fields_keep_other_number_spellings_as_written(tmp_path: Path) -> None:
    body = "invoice_number: +12\nref_number: 012.50\npurchase_order_number: 1.5e+3\nmessage_on_invoice: .inf\nsource_id: 0.0000001"
    (inv,) = load(tmp_path, invoice(body)).invoices
    assert [inv.wire[k] for k in ("invoice_number", "ref_number", "purchase_order_number", "message_on_invoice", "source_id")] == [
        "+12", "012.50", "1.5e+3", ".inf", "0.0000001"
    ]


def test_string_fields_from_defaults_keep_the_text(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults: {entity: 54, invoice_date: 2025-07-01, terms: net_30, purchase_order_number: 0012, lines: [{rate: 1}]}
            invoices:
              a: {invoice_number: 00042}
              b: {invoice_number: 00043}
        """
    }
    loaded = load(tmp_path, files).invoices
    assert [(inv.wire["invoice_number"], inv.wire["purchase_order_number"]) for inv in loaded] == [
        ("00042", "0012"),
        ("00043", "0012"),
    ]


# --- number fields refuse them ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "rate: 1:30",
            'specs/a.yaml:7: invoice "a": lines[0].rate: 1:30 is not a number '
            "(YAML 1.1 would read it as sexagesimal 90); write 90 or quote it if you mean text",
        ),
        (
            "rate: 1:30.5",
            'specs/a.yaml:7: invoice "a": lines[0].rate: 1:30.5 is not a number '
            "(YAML 1.1 would read it as sexagesimal 90.5); write 90.5 or quote it if you mean text",
        ),
        (
            "rate: 2\nquantity: 0x1F",
            'specs/a.yaml:8: invoice "a": lines[0].quantity: 0x1F is not a number '
            "(YAML 1.1 would read it as hex 31); write 31 or quote it if you mean text",
        ),
        (
            "rate: 2\ntax: 010",
            'specs/a.yaml:8: invoice "a": lines[0].tax: 010 is not a number '
            "(YAML 1.1 would read it as octal 8); write 10 (or 8 if you meant octal), or quote it if you mean text",
        ),
        (
            "rate: 1_000.50",
            'specs/a.yaml:7: invoice "a": lines[0].rate: 1_000.50 is not a number '
            "(YAML 1.1 would read it as 1000.50); write 1000.50 or quote it if you mean text",
        ),
        (
            "rate: 2\nproduct: 0b11",
            'specs/a.yaml:8: invoice "a": lines[0].product: 0b11 is not a number '
            "(YAML 1.1 would read it as binary 3); write 3 or quote it if you mean text",
        ),
        (
            "rate: 2\ndiscount: -0o17",
            'specs/a.yaml:8: invoice "a": lines[0].discount: -0o17 is not a number '
            "(YAML 1.2 would read it as octal -15); write -15 or quote it if you mean text",
        ),
    ],
)
def test_number_fields_refuse_yaml_1_1_forms_saying_how_they_would_read(tmp_path: Path, line: str, expected: str) -> None:
    assert messages(tmp_path, invoice("", line)) == [expected]


def test_invoice_level_ids_and_lists_of_ids_refuse_them_too(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            invoices:
              a:
                entity: 0x36
                client: 1_000
                invoice_date: 2025-07-01
                terms: net_30
                exchange_rate: 1:00
                tags: [1, 017]
                lines: [{rate: 1}]
        """
    }
    assert messages(tmp_path, files) == [
        'specs/a.yaml:3: invoice "a": entity: 0x36 is not a number (YAML 1.1 would read it as hex 54); '
        "write 54 or quote it if you mean text",
        'specs/a.yaml:4: invoice "a": client: 1_000 is not a number (YAML 1.1 would read it as 1000); '
        "write 1000 or quote it if you mean text",
        'specs/a.yaml:7: invoice "a": exchange_rate: 1:00 is not a number (YAML 1.1 would read it as sexagesimal 60); '
        "write 60 or quote it if you mean text",
        'specs/a.yaml:8: invoice "a": tags[1]: 017 is not a number (YAML 1.1 would read it as octal 15); '
        "write 17 (or 15 if you meant octal), or quote it if you mean text",
    ]


def test_a_refused_number_in_defaults_is_said_once_at_its_line(tmp_path: Path) -> None:
    files = {
        "specs/a.yaml": """\
            defaults:
              entity: 54
              invoice_date: 2025-07-01
              terms: net_30
              lines: [{rate: 1:30, amount: 90}]
            invoices:
              a: {}
              b: {}
        """
    }
    with pytest.raises(SpecErrors) as caught:
        load(tmp_path, files)
    assert str(caught.value) == (
        'specs/a.yaml:5: invoices "a", "b": lines[0].rate: 1:30 is not a number (YAML 1.1 would read it as '
        "sexagesimal 90); write 90 or quote it if you mean text\n1 error in spec files."
    )


# --- what keeps working ---------------------------------------------------------------------------------


def test_plain_numbers_and_quoted_text_work_as_before(tmp_path: Path) -> None:
    body = 'invoice_number: "000123"\npurchase_order_number: 54\nref_number: 12.50\nexchange_rate: "1.5"'
    (inv,) = load(tmp_path, invoice(body, "rate: 12.5\nquantity: 54\ntax: +2\ndiscount: 0\nproduct: 2545")).invoices
    assert inv.wire["invoice_number"] == "000123"
    assert inv.wire["purchase_order_number"] == "54"
    assert inv.wire["ref_number"] == "12.50"
    assert inv.wire["exchange_rate"] == Decimal("1.5")
    line = inv.body.lines[0]
    assert (line.rate, line.quantity, line.amount, line.tax, line.discount) == (
        Decimal("12.5"), Decimal(54), Decimal(675), Decimal(2), Decimal(0)
    )
    assert line.product == 2545 and inv.body.entity == 54


def test_other_number_spellings_still_count_as_numbers(tmp_path: Path) -> None:
    (inv,) = load(tmp_path, invoice("", "rate: 1.5e+1\nquantity: +2\ntax: .5")).invoices
    line = inv.body.lines[0]
    assert (line.rate, line.quantity, line.amount, line.tax) == (Decimal(15), Decimal(2), Decimal(30), Decimal("0.5"))


def test_a_quoted_yaml_1_1_form_in_a_number_field_is_an_ordinary_type_error(tmp_path: Path) -> None:
    assert messages(tmp_path, invoice("", 'rate: "1:30"')) == [
        "specs/a.yaml:7: invoice \"a\": lines[0].rate: Input should be a valid decimal (got '1:30')"
    ]


def test_free_form_fields_and_lifecycle_keep_the_text(tmp_path: Path) -> None:
    body = "integration_context: {code: 0x1F, n: 3, nested: [1:30, 00, +4]}\nlifecycle: {on_remove: forget}"
    (inv,) = load(tmp_path, invoice(body)).invoices
    assert inv.wire["integration_context"] == {"code": "0x1F", "n": 3, "nested": ["1:30", "00", 4]}
    assert inv.lifecycle.on_remove == "forget"


# --- variables go through the same rules ---------------------------------------------------------------


def test_cli_var_values_keep_yaml_1_1_forms_as_text() -> None:
    assert parse_cli_var("code=007") == ("code", "007")
    assert parse_cli_var("po=12:30") == ("po", "12:30")
    assert parse_cli_var("mask=0x1F") == ("mask", "0x1F")
    assert parse_cli_var("big=1_000") == ("big", "1_000")
    assert parse_cli_var("seats=+3") == ("seats", 3)
    assert parse_cli_var("rate=0.10") == ("rate", Decimal("0.10"))
    assert parse_cli_var("period=2025-07-01") == ("period", dt.date(2025, 7, 1))
    for name in ("code=007", "po=12:30"):
        assert type(parse_cli_var(name)[1]) is str


def test_var_files_and_cli_vars_reach_templates_as_written(tmp_path: Path) -> None:
    files = {
        "vars.yaml": "po: 12:30\nnumbers: {first: 000123}\n",
        "specs/a.yaml.j2": """\
            invoices:
              a:
                entity: 54
                invoice_date: 2025-07-01
                terms: net_30
                invoice_number: "{{ numbers.first }}"
                purchase_order_number: "{{ po }}"
                ref_number: {{ ref }}
                lines: [{rate: {{ rate }}}]
        """,
    }
    (inv,) = load(tmp_path, files, var_files=[Path("vars.yaml")], cli_vars=["ref=0x1F", "rate=+2"]).invoices
    assert (inv.wire["invoice_number"], inv.wire["purchase_order_number"], inv.wire["ref_number"]) == (
        "000123", "12:30", "0x1F"
    )
    assert inv.wire["lines"][0]["rate"] == Decimal(2)


def test_a_var_that_lands_in_a_number_field_is_refused_at_the_rendered_line(tmp_path: Path) -> None:
    files = {"specs/a.yaml.j2": "invoices:\n  a:\n    entity: 54\n    invoice_date: 2025-07-01\n    terms: net_30\n"
             "    lines: [{rate: {{ rate }}}]\n"}
    assert messages(tmp_path, files, cli_vars=["rate=1:30"]) == [
        'specs/a.yaml.j2:6: invoice "a": lines[0].rate: 1:30 is not a number (YAML 1.1 would read it as '
        "sexagesimal 90); write 90 or quote it if you mean text"
    ]


# --- numbers too large to be read ---------------------------------------------------------------------


def test_a_whole_number_with_thousands_of_digits_is_a_located_error(tmp_path: Path) -> None:
    digits = "1" * 5000
    for line in (f"rate: {digits}", f"rate: 2\nquantity: 0{'7' * 5000}"):
        message = messages(tmp_path, invoice("", line))
        assert len(message) == 1 and message[0].startswith("specs/a.yaml:"), message
        assert "too many digits" in message[0]


def test_a_huge_exponent_is_out_of_range_not_a_crash(tmp_path: Path) -> None:
    assert messages(tmp_path, invoice("", "rate: 1.0E+999999999\nquantity: 2.0E+999999999")) == [
        'specs/a.yaml:7: invoice "a": lines[0].rate: 1.0E+999999999 is out of range: must be < 10000000000000',
        'specs/a.yaml:8: invoice "a": lines[0].quantity: 2.0E+999999999 is out of range: must be < 10000000000000000',
    ]
