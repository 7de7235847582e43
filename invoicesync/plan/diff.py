"""Field-level differences between what the specs ask for, what the state recorded and what Campfire holds.

One normaliser (``normalised``) puts every value in its canonical form before comparing, so that a
difference of spelling is never a change:

    ===================================  ===========================================
    value                                canonical form
    ===================================  ===========================================
    ``None``, ``bool``, ``str``          itself (``"54"`` stays text; dates are ISO text)
    integral ``Decimal`` (``50.00``)     ``int`` (``50``)
    other finite ``Decimal``             ``canonical_decimal`` (``0.30`` -> ``0.3``)
    ``float`` (never from our parsers)   as the ``Decimal`` of its repr, then as above
    mapping                              keys as ``str``, values normalised
    list or tuple                        ``list``, items normalised, order kept
    ===================================  ===========================================

``diff_values`` then asks ``deepdiff`` for the changed leaves, ``drift_of`` compares what the state
applied with what Campfire holds, ``merge_drift`` joins the two, ``to_field_changes`` turns them
into ``FieldChange`` rows and ``patch_body`` into the PATCH body (all of ``lines`` when any line
changed). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from invoicesync.errors import field_path
from invoicesync.models import DesiredInvoice, project_remote
from invoicesync.money import canonical_decimal
from invoicesync.plan.model import FieldChange
from invoicesync.state import InvoiceRecord

FieldPath = tuple[str | int, ...]
Diff = dict[FieldPath, tuple[Any, Any]]


# --- field diffs -----------------------------------------------------------------------------------


def normalised(value: Any) -> Any:
    """One Python value per JSON value: integral numbers as int, others as canonical Decimal.

    Bodies from the specs hold ``Decimal('50')`` where the state file read back ``50``; money must
    compare exactly (so no ``ignore_numeric_type_changes``, which rounds to significant digits).
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return canonical_decimal(value) if value.is_finite() else value
    if isinstance(value, float):
        return normalised(Decimal(str(value)))
    if isinstance(value, Mapping):
        return {str(k): normalised(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalised(v) for v in value]
    return value


def diff_values(before: Any, after: Any) -> Diff:
    """``{path: (before, after)}`` for every leaf that differs between two normalised bodies."""
    if before == after:
        return {}
    # Imported here: most plans diff nothing (an unchanged invoice is settled by comparing bodies),
    # and deepdiff is a tenth of the CLI's start-up.
    from deepdiff import DeepDiff
    from deepdiff.helper import NotPresent

    out: Diff = {}
    tree = DeepDiff(before, after, view="tree", threshold_to_diff_deeper=0)
    for levels in tree.values():
        for level in levels:
            path = tuple(level.path(output_format="list"))
            old = None if isinstance(level.t1, NotPresent) else level.t1
            new = None if isinstance(level.t2, NotPresent) else level.t2
            out[path] = (old, new)
    return out


def drift_of(
    record_body: Mapping[str, Any], live: Mapping[str, Any], *, ignore: Iterable[str] = ()
) -> tuple[Diff, dict[str, Any]]:
    """What Campfire holds that differs from the body last applied: ``({path: (applied, remote)}, remote view)``.

    Only the keys of the applied body are compared, and only those Campfire returned; ``ignore``
    names top-level keys left out of the comparison. The remote view is empty when nothing drifted.
    """
    if _unchanged(record_body, live, ignore):
        return {}, {}
    view = _align(project_remote(live, record_body), record_body)
    if not isinstance(view, dict):
        return {}, {}
    for key in ignore:
        view.pop(key, None)
    applied = _restrict(record_body, view)
    if applied == view:  # equal values (50 == Decimal("50.00")): no need to normalise and diff
        return {}, view
    return diff_values(normalised(applied), normalised(view)), view


def _unchanged(record_body: Mapping[str, Any], live: Mapping[str, Any], ignore: Iterable[str]) -> bool:
    """Whether Campfire visibly holds the applied body as it is: a quick check before the full one.

    Conservative: True only where every applied value Campfire returned is equal to it and of the
    same kind (numbers with numbers, so ``Decimal("50.00")`` matches ``50``; never a bool); anything
    else (a number sent back as a string, a missing or added line) is left to the full comparison.
    """
    skipped = set(ignore)
    for key, want in record_body.items():
        if key in skipped or key not in live:
            continue
        got = live[key]
        if key == "lines" and isinstance(want, list):
            if not isinstance(got, list) or len(got) != len(want):
                return False
            for applied_line, live_line in zip(want, got):
                if not isinstance(applied_line, Mapping) or not isinstance(live_line, Mapping):
                    return False
                for k, v in applied_line.items():
                    if k in live_line and not _same(live_line[k], v):
                        return False
        elif not _same(got, want):
            return False
    return True


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, Decimal)):
        return isinstance(got, (int, Decimal)) and got == want
    return type(got) is type(want) and got == want


def _align(value: Any, like: Any) -> Any:
    """Read numeric strings as Decimal where the applied body has a number (``"50.00"`` vs ``50``)."""
    if isinstance(value, str) and isinstance(like, (int, Decimal)) and not isinstance(like, bool):
        try:
            return Decimal(value)
        except ArithmeticError:
            return value
    if isinstance(value, Mapping) and isinstance(like, Mapping):
        return {k: _align(v, like.get(k)) for k, v in value.items()}
    if isinstance(value, list) and isinstance(like, list):
        return [_align(v, like[i] if i < len(like) else (like[-1] if like else None)) for i, v in enumerate(value)]
    return value


def _restrict(record_body: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
    """The applied body cut to the keys the remote view has (line keys too, line by line)."""
    out: dict[str, Any] = {}
    for key, value in view.items():
        applied = record_body.get(key)
        if isinstance(applied, list) and isinstance(value, list):
            lines: list[Any] = []
            for i, item in enumerate(applied):
                other = value[i] if i < len(value) else None
                if isinstance(item, Mapping) and isinstance(other, Mapping):
                    lines.append({k: v for k, v in item.items() if k in other})
                else:
                    lines.append(item)
            out[key] = lines
        else:
            out[key] = applied
    return out


def _get(value: Any, path: FieldPath) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return None
    return value


def merge_drift(spec_diff: Diff, drift: Diff, body_norm: Any) -> tuple[Diff, set[FieldPath]]:
    """Spec changes plus drift put back to the spec, and which paths of the result are drift.

    A drifted path shows the remote value as ``before``; one whose remote value already is what the
    spec wants needs nothing and is dropped.
    """
    merged: Diff = dict(spec_diff)
    drifted: set[FieldPath] = set()
    for path, (_applied, remote_value) in drift.items():
        wanted = spec_diff[path][1] if path in spec_diff else _get(body_norm, path)
        if remote_value == wanted:
            merged.pop(path, None)
            continue
        merged[path] = (remote_value, wanted)
        drifted.add(path)
    return merged, drifted


def _path_key(path: FieldPath) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in path)


def to_field_changes(diff: Diff, drift: Iterable[FieldPath] = ()) -> list[FieldChange]:
    drifted = set(drift)
    return [
        FieldChange(field_path(p), diff[p][0], diff[p][1], drift=p in drifted)
        for p in sorted(diff, key=_path_key)
    ]


def patch_body(diff: Diff, body: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH payload: each changed top-level field's new value (None when removed; all of lines)."""
    keys = sorted({str(p[0]) for p in diff if p})
    return {k: body.get(k) for k in keys}


def lifecycle_field_changes(record: InvoiceRecord, spec: DesiredInvoice) -> list[FieldChange]:
    out: list[FieldChange] = []
    if record.lifecycle.prevent_destroy != spec.lifecycle.prevent_destroy:
        out.append(
            FieldChange("lifecycle.prevent_destroy", record.lifecycle.prevent_destroy, spec.lifecycle.prevent_destroy)
        )
    if record.lifecycle.on_remove != spec.lifecycle.on_remove:
        out.append(FieldChange("lifecycle.on_remove", record.lifecycle.on_remove, spec.lifecycle.on_remove))
    return out
