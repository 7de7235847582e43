"""Template variables: ``--var key=value`` (a YAML scalar, as Helm's ``--set``), var files, and how they merge."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from invoicesync.errors import SourceLocation, SpecError, UsageError
from invoicesync.specs.limits import MAX_SPEC_BYTES
from invoicesync.specs.yaml import _not_text, _not_text_problem, _yaml_error, _yaml_load_small

_VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_cli_var(text: str) -> tuple[str, Any]:
    """Split ``--var key=value``; the value is read as a YAML scalar, as Helm's ``--set`` does.

    ``period=2025-07-01`` gives a date, ``seats=3`` an int, ``rate=0.1`` a ``Decimal``, ``flag=true``
    a bool, ``code='007'`` the string ``007``; ``note=`` an empty string. As in spec files, a number
    in a YAML 1.1-only form stays the text written (``code=007``, ``at=12:30``, ``mask=0x1F``). A
    value YAML would read as a list or mapping is kept as the plain string. ``key`` may be dotted
    (``customer.seats=3``).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--var {text!r}: expected KEY=VALUE")
    if not _VAR_NAME_RE.match(key):
        raise UsageError(f"--var {text!r}: {key!r} is not a variable name (letters, digits and _, dotted for nesting)")
    if raw == "":
        return key, ""
    try:
        value = _yaml_load_small(raw)
    except yaml.YAMLError:
        return key, raw
    if isinstance(value, (dict, list)):
        return key, raw
    return key, value



# --- variables -----------------------------------------------------------------------------------


def _read_var_file(path: Path, rel: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(SourceLocation(rel), "var file not found") from None
    except OSError as exc:
        raise SpecError(SourceLocation(rel), f"cannot read the var file: {exc.strerror or exc}") from exc
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(SourceLocation(rel), f"var file is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(SourceLocation(rel, line), "var file is not valid UTF-8 text") from exc
    bad = _not_text(text)
    if bad is not None:
        raise SpecError(SourceLocation(rel, bad[0]), _not_text_problem(bad[1], "a var file"))
    try:
        value = _yaml_load_small(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, rel) from exc
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SpecError(SourceLocation(rel, 1), "a var file is a mapping of variable names to values")
    return value


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Merge ``new`` over ``into``: nested mappings merge (as Helm values do), anything else replaces."""
    for key, value in new.items():
        old = into.get(key)
        if isinstance(old, dict) and isinstance(value, Mapping):
            merged = dict(old)
            _deep_merge(merged, value)
            into[key] = merged
        elif isinstance(value, Mapping):
            into[key] = dict(value)
        else:
            into[key] = value


def _set_dotted(into: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    target = into
    for part in parents:
        child = target.get(part)
        child = dict(child) if isinstance(child, Mapping) else {}
        target[part] = child
        target = child
    target[last] = value
