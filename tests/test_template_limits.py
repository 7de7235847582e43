"""Spec templates are untrusted: memory and CPU bombs end in a located error, not a hung or dead runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from invoicesync import specs
from invoicesync.config import load_settings
from invoicesync.errors import SpecErrors


def _workspace(tmp_path: Path, template: str) -> Path:
    (tmp_path / "specs").mkdir()
    (tmp_path / "invoicesync.toml").write_text('[environments.dev]\nendpoint = "sandbox"\n')
    (tmp_path / "specs" / "bomb.yaml.j2").write_text(template)
    return tmp_path


def _errors(root: Path) -> str:
    with pytest.raises(SpecErrors) as caught:
        specs.load_specs(load_settings(root))
    return str(caught.value)


def test_runaway_loop_stops_at_the_render_time_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specs, "MAX_RENDER_SECONDS", 0.3)
    root = _workspace(tmp_path, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\ninvoices: {}\n")
    message = _errors(root)
    assert "specs/bomb.yaml.j2" in message and "longer than 0.3 s" in message


def test_repeating_a_string_into_gigabytes_is_refused(tmp_path: Path) -> None:
    root = _workspace(tmp_path, "{% set x = 'a' * 3000000000 %}\ninvoices: {}\n")
    assert "specs/bomb.yaml.j2:1: refused by the template sandbox" in _errors(root)


def test_a_huge_power_is_refused(tmp_path: Path) -> None:
    root = _workspace(tmp_path, "{% set x = 10 ** 100000000 %}\ninvoices: {}\n")
    assert "exponent 100000000 is too large" in _errors(root)


@pytest.mark.parametrize(
    "expression",
    ["'a'.ljust(10**9)", "'%*s' % (10**9, 'a')", "'a'|center(10**9)", "'a'|indent(10**9)", "'{:>1000000000}'.format"],
)
def test_sizes_no_spec_needs_are_refused_before_allocating(tmp_path: Path, expression: str) -> None:
    template = f"{{% set x = {expression}{'(1)' if expression.endswith('.format') else ''} %}}\ninvoices: {{}}\n"
    message = _errors(_workspace(tmp_path, template))
    assert "specs/bomb.yaml.j2:1: refused by the template sandbox" in message or "larger than" in message


def test_ordinary_padding_and_formatting_still_work(tmp_path: Path) -> None:
    root = _workspace(tmp_path, "{% set x = 'ab'|center(6) ~ '%3s'|format('c') ~ 'd'.ljust(3) %}invoices: {}\n")
    assert specs.load_specs(load_settings(root)).invoices == ()
