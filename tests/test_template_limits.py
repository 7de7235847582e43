"""Spec templates are untrusted: memory and CPU bombs end in a located error, not a hung or dead runner."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from invoicesync import specs
from invoicesync.specs import template as specs_template
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
    monkeypatch.setattr(specs_template, "MAX_RENDER_SECONDS", 0.3)
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


def _refusal_within_bounds(tmp_path: Path, template: str) -> str:
    """The spec errors of ``template``, checking that refusing it took under a second and 64 MiB of Python memory."""
    root = _workspace(tmp_path, template)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = _errors(root)
    finally:
        elapsed = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert peak < 64 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
    return message


@pytest.mark.parametrize(
    "expression",
    [
        "'{0:{1}}'.format('a', '999999999')",
        "'{:{w}}'.format('a', w='999999999')",
        "'%999999999s' % 'x'",
        "'%(a)999999999s' % {'a': 'x'}",
        "'%.999999999f' % 1",
        "'%*s' % (999999999, 'x')",
        "'%999999999s'|format('x')",
        "'a' * 999999999",
        "'{:999999999}'.format(1)",
        "'{:.999999999f}'.format(1)",
        "'{x:999999999}'.format_map({'x': 1})",
        "'x'|center(999999999)",
        "'{:f}'.format('1E+999999999'|decimal)",
        "'%d' % ('1E+999999999'|decimal)",
        "('1E+99999999'|decimal)|int",
    ],
)
def test_format_widths_and_repeats_no_spec_needs_are_refused_before_allocating(tmp_path: Path, expression: str) -> None:
    message = _refusal_within_bounds(tmp_path, f"invoices: {{}}\n{{% set x = {expression} %}}\n")
    assert message.startswith("specs/bomb.yaml.j2:2: refused by the template sandbox: "), message


@pytest.mark.parametrize(
    "template",
    [
        "{% set ns = namespace(x='a' * 9000000) %}{% for i in range(9) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "{% set ns = namespace(x='a' * 9000000) %}{% for i in range(9) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
        "{% set x = 'a' * 9000000 %}{{ ([x] * 400)|join }}",
        "{% set x = 'a' * 9000000 %}{{ x.join(['', ''] * 200) }}",
        "{% set x = 'a' * 5000 %}{{ x.replace('a', x) }}",
        "{{ ('\\t' * 4000).expandtabs(9000000) }}",
        "{{ ('x\\n' * 4000)|indent(9000000) }}",
        "{% set x = 'a' * 9000000 %}{{ [x] * 400 }}",
        "{% set x = 'a' * 9000000 %}{{ ([x] * 400)|tojson }}",
        "{% set x = 'a' * 9000000 %}{{ '%s' % ([x] * 400) }}",
        "{% set x = 'a' * 9000000 %}{{ '{}'.format([x] * 400) }}",
    ],
    ids=["concat", "add", "join-filter", "str-join", "replace", "expandtabs", "indent", "output", "tojson", "percent-s", "format-list"],
)
def test_results_that_would_outgrow_a_spec_are_refused_before_they_are_made(tmp_path: Path, template: str) -> None:
    message = _refusal_within_bounds(tmp_path, "invoices: {}\n" + template + "\n")
    assert message.startswith("specs/bomb.yaml.j2:2: refused by the template sandbox: "), message
    assert "more than a spec may use" in message


def test_ordinary_joins_formats_and_json_still_work(tmp_path: Path) -> None:
    template = (
        "{% set rows = [{'n': 'a'}, {'n': 'b'}] %}"
        "{% set x = rows|join(',', attribute='n') ~ '{:>4}|{:.2f}'.format('c', 1.5) ~ '%-3s|%05.1f' % ('d', 2.25) %}"
        "{% set y = rows|tojson ~ 'a\\tb'.expandtabs(2) ~ 'a-b'.replace('-', '+') ~ ('a' + 'b') ~ ([1] + [2])|join %}"
        "invoices: {}\n"
    )
    assert specs.load_specs(load_settings(_workspace(tmp_path, template))).invoices == ()
    env = specs.spec_template_env()
    assert env.from_string(template.replace("invoices: {}\n", "{{ x }} {{ y }}")).render() == (
        'a,b   c|1.50d  |002.2 [{"n": "a"}, {"n": "b"}]a ba+bab12'
    )
