"""The saved plan: the JSON document ``plan --out`` writes and ``apply PLANFILE`` reads, sealed by its digest.

Owns the document's format (``plan_to_dict``/``plan_from_dict``, described in README.md, "The JSON
plan"), its ``plan_digest`` (a plan edited by hand is refused: what was reviewed is what is sent),
the checks that a saved plan still fits the state and specs it was made from, and reading and
writing the file (atomically).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from invoicesync.errors import PlanError, field_path
from invoicesync.models import DesiredInvoice, Lifecycle, body_digest, canonical_json, dumps_json, loads_json
from invoicesync.money import ManagedMoney, canonical_decimal, invoice_total, money_text
from invoicesync.plan.diff import normalised
from invoicesync.plan.model import Action, Change, FieldChange, Plan, counts, plan_totals
from invoicesync.state import State

PLAN_FORMAT_VERSION = 1
PLAN_KIND = "invoicesync-plan"
PLAN_DIGEST_KEY = "plan_digest"
_REMAKE = "Make it again with `invoicesync plan --out FILE`."


def specs_digest(desired: Sequence[DesiredInvoice]) -> str:
    """``sha256:<hex>`` over the sorted (address, body digest, lifecycle) of every desired invoice.

    A saved plan records it; apply refuses the plan when the specs have moved on since. Lifecycle is
    part of it because a saved plan carries the lifecycle that apply records in the state.
    """
    items = sorted(
        (d.address, d.digest, d.lifecycle.prevent_destroy, d.lifecycle.on_remove) for d in desired
    )
    return "sha256:" + hashlib.sha256(canonical_json(items).encode()).hexdigest()


def check_saved_plan(
    plan: Plan, *, environment: str, state: State, state_exists: bool, desired: Sequence[DesiredInvoice]
) -> None:
    """Refuse (``PlanError``) a saved plan made for another environment, state or set of specs.

    A plan made before the state existed (serial 0) still applies while no state file exists.
    """
    problems = []
    if plan.environment != environment:
        problems.append(f'it was made for environment "{plan.environment}", not "{environment}"')
    if state_exists and (plan.lineage != state.lineage or plan.serial != state.serial):
        problems.append(
            f"the state has moved on since (planned against serial {plan.serial}, now {state.serial}"
            + (", another lineage" if plan.lineage != state.lineage else "")
            + ")"
        )
    if plan.specs_digest != specs_digest(desired):
        problems.append("the specs (or the variables given) have changed since")
    if problems:
        raise PlanError("the saved plan is stale: " + "; ".join(problems) + ". Run `invoicesync plan --out FILE` again.")


# --- the plan document -----------------------------------------------------------------------------


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as the documented JSON document (``--format json`` and the saved-plan file).

    Keys are described in README.md, "The JSON plan". Money totals and amounts are strings with at least
    two decimals (``"55.00"``); bodies, patches and field values keep their numbers as ``Decimal``,
    so serialise with ``models.dumps_json`` (JSON numbers, never floats). No-op changes are included
    (so the document accounts for every address) but carry no body, before or patch.

    ``plan_digest`` is ``sha256:<hex>`` over every other key of the document, in a canonical form
    (sorted keys, one spelling per number): ``plan_from_dict`` refuses a document whose content no
    longer matches it, so that a saved plan is applied (and shown) exactly as it was made.
    """
    doc = _plan_document(plan)
    doc[PLAN_DIGEST_KEY] = _document_digest(doc)
    return doc


def _document_digest(doc: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a plan document, its own ``plan_digest`` left out."""
    content = {k: v for k, v in doc.items() if k != PLAN_DIGEST_KEY}
    return "sha256:" + hashlib.sha256(canonical_json(_canonical(content)).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """One spelling per JSON value, so that reformatting a saved plan (indentation, key order, ``50.00``
    for ``50``) keeps its digest while any change of content does not."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        value = canonical_decimal(value)
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return str(value)


def _plan_document(plan: Plan) -> dict[str, Any]:
    summary = counts(plan)
    return {
        "format_version": PLAN_FORMAT_VERSION,
        "kind": PLAN_KIND,
        "environment": plan.environment,
        "lineage": plan.lineage,
        "serial": plan.serial,
        "specs_digest": plan.specs_digest,
        "refreshed": plan.refreshed,
        "targets": list(plan.targets),
        "summary": {
            "create": summary["create"],
            "update": summary["update"],
            "replace": summary["replace"],
            "remove": summary["remove"],
            "no_op": summary["noop"],
            "blocked": summary["blocked"],
        },
        "totals": [
            {
                "currency": t.currency,
                "entity": t.entity,
                "create": money_text(t.create),
                "update": money_text(t.update),
                "remove": money_text(t.remove),
                "net": money_text(t.net),
            }
            for t in plan_totals(plan)
        ],
        "managed": [
            {
                "currency": m.currency,
                "entity": m.entity,
                "invoices": m.invoices,
                "invoiced": money_text(m.invoiced),
                "paid": money_text(m.paid),
                "due": money_text(m.due),
            }
            for m in plan.managed
        ],
        "changes": [_change_to_dict(c) for c in plan.changes],
    }


def _change_to_dict(change: Change) -> dict[str, Any]:
    return {
        "address": change.address,
        "action": change.action.value,
        "invoice_id": change.invoice_id,
        "reason": change.reason,
        "blocked": change.blocked,
        "location": change.location,
        "currency": change.currency,
        "currency_before": change.currency_before,
        "entity": change.entity,
        "entity_before": change.entity_before,
        "amount": money_text(change.amount),
        "amount_before": money_text(change.amount_before),
        "field_changes": [
            {"path": f.path, "before": f.before, "after": f.after, "drift": f.drift} for f in change.field_changes
        ],
        "lifecycle": change.lifecycle.model_dump(mode="json"),
        "digest": change.digest,
        "body": None if change.body is None else dict(change.body),
        "before": None if change.before is None else dict(change.before),
        "patch": None if change.patch is None else dict(change.patch),
    }


class _FieldChangeDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    before: Any = None
    after: Any = None
    drift: bool = False


class _ChangeDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str
    action: Action
    invoice_id: int | None = None
    reason: str | None = None
    blocked: str | None = None
    location: str | None = None
    currency: str | None = "USD"
    currency_before: str | None = None
    entity: int | None = None
    entity_before: int | None = None
    amount: Decimal = Decimal(0)
    amount_before: Decimal = Decimal(0)
    field_changes: list[_FieldChangeDoc] = []
    lifecycle: Lifecycle | None = None
    digest: str | None = None
    body: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None


class _ManagedDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str | None
    entity: int | None = None
    invoices: int
    invoiced: Decimal
    paid: Decimal
    due: Decimal


class _PlanDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int
    kind: str
    environment: str
    lineage: str
    serial: int
    specs_digest: str
    refreshed: bool = False
    targets: list[str] = []
    summary: dict[str, int] | None = None  # derived; recomputed from the changes
    totals: list[dict[str, Any]] | None = None  # derived; recomputed from the changes
    managed: list[_ManagedDoc] = []
    changes: list[_ChangeDoc]
    plan_digest: str | None = None


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """Read a plan document back (the inverse of ``plan_to_dict``; load the JSON with ``models.loads_json``).

    Raises ``PlanError`` when it is not an invoicesync plan, has a ``format_version`` this version
    does not know, or is malformed (the message names the offending key); and when it was changed
    after it was made: it has no ``plan_digest`` (made by an older version), its content does not
    match its ``plan_digest``, or a change contradicts itself (a ``patch`` that is not what its
    ``body`` and ``field_changes`` say, a ``digest`` that is not its body's, ...).
    """
    if not isinstance(data, Mapping):
        raise PlanError("This is not an invoicesync plan: expected a JSON object.")
    if data.get("kind") != PLAN_KIND:
        raise PlanError(f'This is not an invoicesync plan: "kind" is {data.get("kind")!r}, expected {PLAN_KIND!r}.')
    version = data.get("format_version")
    if version != PLAN_FORMAT_VERSION:
        raise PlanError(
            f"Plan format_version {version!r} is not supported: this invoicesync reads format_version "
            f"{PLAN_FORMAT_VERSION}. Make the plan again with this version."
        )
    try:
        doc = _PlanDoc.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(f"{_loc_text(e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        more = len(exc.errors()) - 5
        suffix = f" (and {more} more)" if more > 0 else ""
        raise PlanError(f"The plan is malformed: {problems}{suffix}.") from exc
    if doc.plan_digest is None:
        raise PlanError(
            "The plan has no plan_digest: it was made by an older invoicesync (or assembled by hand), so "
            f"nothing shows that it is the plan that was reviewed. {_REMAKE}"
        )
    if doc.plan_digest != _document_digest(data):
        raise PlanError(
            "The plan file was changed after it was made: its content no longer matches its plan_digest. "
            f"A saved plan is applied exactly as it was made and reviewed, never as edited. {_REMAKE}"
        )
    plan = Plan(
        environment=doc.environment,
        lineage=doc.lineage,
        serial=doc.serial,
        specs_digest=doc.specs_digest,
        refreshed=doc.refreshed,
        targets=tuple(doc.targets),
        changes=tuple(_change_from_doc(c) for c in doc.changes),
        managed=tuple(
            ManagedMoney(m.currency, m.invoices, m.invoiced, m.paid, m.due, entity=m.entity) for m in doc.managed
        ),
    )
    for index, change in enumerate(plan.changes):
        problem = _inconsistency(change)
        if problem:
            raise PlanError(
                f"The plan file was changed after it was made: changes[{index}] ({change.address}): {problem}. "
                f"{_REMAKE}"
            )
    return plan


def _top_key(path: str) -> str:
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _inconsistency(change: Change) -> str | None:
    """What in one change contradicts the rest of it (None when nothing does): what make_plan never writes."""
    action = change.action
    if action in (Action.CREATE, Action.UPDATE, Action.REPLACE):
        if change.body is None:
            return f"a {action.value} without a body"
        if change.digest != body_digest(_canonical(change.body)):
            return "its digest is not that of its body"
        if change.amount != invoice_total(change.body):
            return "its amount is not its body's total"
    if action is not Action.CREATE and action is not Action.NOOP and change.invoice_id is None:
        return f"a {action.value} without an invoice_id"
    if action is Action.UPDATE:
        if change.patch is None:
            return "an update without a patch"
        body = change.body or {}
        for key, value in change.patch.items():
            if normalised(value) != normalised(body.get(key)):
                return f"its patch sets {key} to what its body does not hold"
        changed = {_top_key(f.path) for f in change.field_changes if not f.path.startswith("lifecycle.")}
        if set(change.patch) != changed:
            return "its patch does not send exactly the fields its field_changes list"
    elif change.patch is not None:
        return f"a {action.value} with a patch"
    return None


def _change_from_doc(doc: _ChangeDoc) -> Change:
    return Change(
        address=doc.address,
        action=doc.action,
        invoice_id=doc.invoice_id,
        body=doc.body,
        digest=doc.digest,
        before=doc.before,
        patch=doc.patch,
        field_changes=tuple(FieldChange(f.path, f.before, f.after, f.drift) for f in doc.field_changes),
        lifecycle=doc.lifecycle or Lifecycle(),
        location=doc.location,
        currency=doc.currency,
        currency_before=doc.currency_before,
        entity=doc.entity,
        entity_before=doc.entity_before,
        amount=doc.amount,
        amount_before=doc.amount_before,
        reason=doc.reason,
        blocked=doc.blocked,
    )


def _loc_text(loc: Sequence[str | int]) -> str:
    return field_path(tuple(loc)) or "(document)"


# --- the file ----------------------------------------------------------------------------------------


def save_plan(plan: Plan, path: Path) -> None:
    """Write the plan document to ``path`` atomically (a temporary file, fsynced, renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(dumps_json(plan_to_dict(plan), pretty=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PlanError(f"cannot write {path}: {exc.strerror or exc}") from exc


def load_plan(path: Path) -> Plan:
    """Read a saved plan back, refusing one that is not a plan document or was changed after it was made."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read the saved plan {path}: {exc.strerror or exc}") from exc
    try:
        data = loads_json(text)
    except ValueError as exc:
        raise PlanError(f"{path} is not a saved plan (not valid JSON: {exc})") from exc
    if not isinstance(data, Mapping):
        raise PlanError(f"{path} is not a saved plan (not a JSON object)")
    return plan_from_dict(data)
