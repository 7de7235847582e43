"""From the files under ``specs/`` to validated, located ``DesiredInvoice`` values.

Owns finding spec files (recursively, sorted by path; symbolic links followed only while they stay
inside the workspace, and never read when they leave it), merging ``defaults``, ``lifecycle``,
derived fields (``due_date`` from ``terms``, line ``amount`` from ``quantity`` x ``rate``),
validation against ``InvoiceBody``, workspace-wide uniqueness of addresses, invoice numbers (per
entity) and spec-set ``source_id``s, and the source location of every problem. Every problem of a
run is collected and raised together as one ``SpecErrors``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from invoicesync.config import Settings
from invoicesync.errors import SourceLocation, SpecError, SpecErrors, did_you_mean, field_path
from invoicesync.models import (
    BODY_FIELDS,
    DATE_FORMAT_MESSAGE,
    LINE_FIELDS,
    DesiredInvoice,
    InvoiceBody,
    InvoiceLine,
    Lifecycle,
    Terms,
    body_digest,
    gc_paused,
    to_wire,
)
from invoicesync.money import MONEY_CONTEXT
from invoicesync.specs.limits import MAX_SPEC_BYTES
from invoicesync.specs.template import _render, spec_template_env
from invoicesync.specs.variables import _deep_merge, _read_var_file, _set_dotted, parse_cli_var
from invoicesync.specs.yaml import (
    _MERGE,
    _NULL,
    _AsWritten,
    _compose,
    _not_a_number,
    _not_text,
    _not_text_problem,
    _plain,
    _fast_spec_document,
    _FastSpecDocument,
    _SpecYamlMixin,
    _yaml_error,
)

_ADDRESS_RE = re.compile(r"^[A-Za-z0-9\-_.:/]{1,200}$")
_TOP_KEYS = ("defaults", "invoices")
_LIFECYCLE_KEYS = ("prevent_destroy", "on_remove")
_ON_REMOVE = ("void", "delete", "forget")

#: Fields of Campfire's invoice responses that are not part of the request body.
_READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "entity_name",
        "client_name",
        "contract_name",
        "product_name",
        "product_bundle_name",
        "department_name_display",
        "total_amount",
        "amount_paid",
        "amount_due",
        "subtotal",
        "tax_amount",
        "status",
        "created_at",
        "last_modified_at",
        "last_modified_by",
        "created_by",
        "payments",
        "attachments",
        "credit_memos",
        "is_deleted",
        "pdf_url",
        "invoice_url",
        "journal_entry_number",
    }
)

_DAY = dt.timedelta(days=1)
#: The days ``net_N`` terms give: ``due_date`` is ``invoice_date`` plus these.
_NET_TERMS = {t.value: int(t.value[4:]) * _DAY for t in Terms if t.value.startswith("net_")}




@dataclass(frozen=True)
class SpecSet:
    """Every invoice the specs declare, sorted by address, and the spec files read (workspace-relative)."""

    invoices: tuple[DesiredInvoice, ...]
    files: tuple[str, ...]


def load_specs(
    settings: Settings,
    *,
    var_files: Sequence[Path] = (),
    cli_vars: Sequence[str] = (),
) -> SpecSet:
    """Render, parse and validate every spec file of the workspace.

    Variables, weakest first: the environment's ``vars``, its ``var_files``, then ``var_files``
    (``--var-file``, relative paths taken from the workspace root, as with ``-C``), then
    ``cli_vars`` (``--var k=v``). Raises :class:`SpecErrors` with every problem found, across all
    files and invoices, or :class:`UsageError` for a malformed ``--var``.
    """
    with gc_paused():
        return _Loader(settings).load(var_files, cli_vars)



# --- loading ------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    if isinstance(value, (dt.date, Decimal)):
        text = str(value)
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, dict):
        return "a mapping"
    elif isinstance(value, list):
        return "a list"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _node_line(node: yaml.Node | None, loc: Sequence[Any]) -> int | None:
    """The line of the deepest node along ``loc`` (the key's line for a mapping entry)."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    found = (key_node, value_node)
                    break
            if found is None:
                return line
            line = found[0].start_mark.line + 1
            node = found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except decimal.InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


# Exact products: quantity (16 digits and fraction) times rate (13 and fraction) overflows the
# default 28-digit context.


@dataclass
class _FileContext:
    rel: str
    defaults: dict[str, Any]
    defaults_node: yaml.Node | None
    defaults_written: bool = False


class _Loader:
    """One run of :func:`load_specs`: collects errors and the workspace-wide address, number and source_id indexes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.errors: list[SpecError] = []
        self.invoices: list[DesiredInvoice] = []
        self.addresses: dict[str, SourceLocation] = {}
        self.numbers: dict[tuple[Any, str], tuple[str, SourceLocation]] = {}
        self.source_ids: dict[str, tuple[str, SourceLocation]] = {}
        self._env: ImmutableSandboxedEnvironment | None = None

    def load(self, var_files: Sequence[Path], cli_vars: Sequence[str]) -> SpecSet:
        # Variables are read even when no template needs them: a bad --var or a missing var file is a
        # mistake worth reporting whether or not it mattered this time.
        variables = self._variables(var_files, cli_vars)
        files = self._find_files()
        rels: list[str] = []
        for path, target in files:
            rel = self.settings.relative(path)
            rels.append(rel)
            text = self._read(target, rel)
            if text is None:
                continue
            if path.name.endswith(".j2"):
                try:
                    text = _render(self._template_env(), text, rel, variables)
                except SpecError as exc:
                    self.errors.append(exc)
                    continue
            self._load_document(text, rel)
        if self.errors:
            raise SpecErrors(self.errors)
        self.invoices.sort(key=lambda inv: inv.address)
        return SpecSet(invoices=tuple(self.invoices), files=tuple(rels))

    # -- files and variables

    def _find_files(self) -> list[tuple[Path, Path]]:
        """The spec files under the spec folder, sorted: each as ``(path shown, path read)``.

        Symbolic links (to files or folders) are followed while they lead to a place inside the
        workspace. One leading out of it, or to a folder that contains it (a loop), is an error, and
        nothing it leads to is read. Links to files that are not spec files are never looked at.
        """
        specs_dir = self.settings.specs_dir
        rel_dir = self.settings.relative(specs_dir)
        found: list[tuple[str, Path, Path]] = []
        problems: list[SpecError] = []
        root = os.path.realpath(self.settings.root)

        def walk(folder: Path, prefix: str, open_folders: tuple[str, ...]) -> None:
            try:
                with os.scandir(folder) as scan:
                    entries = sorted(scan, key=lambda entry: entry.name)
            except OSError as exc:
                problems.append(
                    SpecError(SourceLocation(self.settings.relative(folder)), f"cannot read the folder: {exc.strerror or exc}")
                )
                return
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                path = Path(folder, name)
                is_spec = name.endswith((".yaml", ".yml", ".j2"))
                is_dir = entry.is_dir()  # follows a link: a stat of its target, never a read
                target = path
                if entry.is_symlink():
                    if not is_spec and not is_dir:
                        continue
                    real = os.path.realpath(path)
                    if not _within(real, root):
                        problems.append(
                            self._refused_link(
                                path, real, "outside the workspace", "spec files are read only from inside the workspace"
                            )
                        )
                        continue
                    if is_dir and any(_within(folder_real, real) for folder_real in open_folders):
                        problems.append(
                            self._refused_link(path, real, "a folder that contains it", "following it would loop")
                        )
                        continue
                    target = Path(real)
                if is_dir:
                    walk(path, f"{prefix}{name}/", (*open_folders, os.path.realpath(target)))
                elif is_spec:
                    found.append((f"{prefix}{name}", path, target))

        if specs_dir.is_dir():
            walk(specs_dir, "", (os.path.realpath(specs_dir),))
        self.errors.extend(problems)
        if not found:
            why = "has no spec files (*.yaml, *.yml, *.j2)" if specs_dir.is_dir() else "does not exist"
            raise SpecErrors([*problems, SpecError(SourceLocation(rel_dir), f"the spec folder {why}; nothing to plan")])
        found.sort(key=lambda item: item[0])
        return [(path, target) for _rel, path, target in found]

    def _refused_link(self, link: Path, real: str, where: str, why: str) -> SpecError:
        try:
            written = os.readlink(link)
        except OSError:
            written = real
        leads = written if written == real else f"{written} (which leads to {real})"
        return SpecError(SourceLocation(self.settings.relative(link)), f"a symbolic link to {leads}, {where}; refused ({why})")

    def _read(self, path: Path, rel: str) -> str | None:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_SPEC_BYTES + 1)
        except OSError as exc:
            self.errors.append(SpecError(SourceLocation(rel), f"cannot read the file: {exc.strerror or exc}"))
            return None
        if len(data) > MAX_SPEC_BYTES:
            self.errors.append(
                SpecError(SourceLocation(rel), f"file is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB")
            )
            return None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            self.errors.append(SpecError(SourceLocation(rel, line), "file is not valid UTF-8 text"))
            return None
        bad = _not_text(text)
        if bad is not None:
            self.errors.append(SpecError(SourceLocation(rel, bad[0]), _not_text_problem(bad[1], "a spec file")))
            return None
        return text

    def _template_env(self) -> ImmutableSandboxedEnvironment:
        if self._env is None:
            self._env = spec_template_env()
        return self._env

    def _variables(self, var_files: Sequence[Path], cli_vars: Sequence[str]) -> dict[str, Any]:
        env = self.settings.environment
        variables: dict[str, Any] = {}
        _deep_merge(variables, dict(env.vars))
        errors: list[SpecError] = []
        paths = [*env.var_files, *(p if p.is_absolute() else self.settings.root / p for p in var_files)]
        for path in paths:
            rel = self.settings.relative(path)
            try:
                _deep_merge(variables, _read_var_file(path, rel))
            except SpecError as exc:
                errors.append(exc)
        if errors:
            raise SpecErrors(errors)
        for text in cli_vars:
            key, value = parse_cli_var(text)
            _set_dotted(variables, key, value)
        return variables

    # -- documents and invoices

    def _load_document(self, text: str, rel: str) -> None:
        fast = _fast_spec_document(text)
        if fast is not None and self._fast_document(fast, rel):
            return
        try:
            loader, root = _compose(text)
        except yaml.reader.ReaderError as exc:
            # A file's own text was checked when read: this character came from rendering a template.
            bad = _not_text(text)
            if bad is None:
                self.errors.append(_yaml_error(exc, rel))
            else:
                problem = "contains a NUL byte" if bad[1] == "\0" else _not_text_problem(bad[1], "a spec file")
                self.errors.append(SpecError(SourceLocation(rel, bad[0]), f"the rendered template {problem}"))
            return
        except yaml.YAMLError as exc:
            self.errors.append(_yaml_error(exc, rel))
            return
        try:
            self._document(loader, root, rel)
        except yaml.YAMLError as exc:
            self.errors.append(_yaml_error(exc, rel))
        finally:
            loader.dispose()

    def _fast_document(self, doc: _FastSpecDocument, rel: str) -> bool:
        """Take the invoices of a document the YAML fast path read; False (and nothing kept) when any has a problem.

        Problems are said by the full parser, which knows the line of every field: the caller reads the
        document again that way. Until then nothing of this document is kept (its invoices, and the
        addresses, numbers and source_ids it claimed, are dropped).
        """
        if doc.invoices is None:
            return True  # a template that produced no invoices this time
        counts = (len(self.errors), len(self.invoices), len(self.addresses), len(self.numbers), len(self.source_ids))
        ctx = _FileContext(rel, doc.defaults or {}, None, doc.defaults_written)
        for address, line, raw, written in doc.invoices:
            self._invoice(None, address, None, SourceLocation(rel, line), ctx, prebuilt=(raw, written))
            if len(self.errors) > counts[0]:
                break
        if len(self.errors) == counts[0]:
            return True
        del self.errors[counts[0] :], self.invoices[counts[1] :]
        claims: tuple[dict[Any, Any], ...] = (self.addresses, self.numbers, self.source_ids)
        for index, claimed in zip(counts[2:], claims):
            while len(claimed) > index:
                claimed.popitem()  # what this document added, last first
        return False

    def _document(self, loader: _SpecYamlMixin, root: yaml.Node | None, rel: str) -> None:
        if not isinstance(root, yaml.MappingNode):
            line = root.start_mark.line + 1 if root is not None else None
            what = "the file is empty" if root is None or _is_null(root) else "the top level is not a mapping"
            self.errors.append(
                SpecError(SourceLocation(rel, line), f"{what}; expected a mapping with 'invoices' (and optionally 'defaults')")
            )
            return
        defaults: dict[str, Any] = {}
        defaults_node: yaml.Node | None = None
        defaults_written = False
        invoices_node: yaml.Node | None = None
        invoices_line: int | None = None
        for key_node, value_node in root.value:
            line = key_node.start_mark.line + 1
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key == "defaults":
                written = loader.written
                value = loader.build(value_node, 1)
                defaults_written = loader.written != written
                if value is None:
                    continue
                if not isinstance(value, dict):
                    self.errors.append(SpecError(SourceLocation(rel, line), "defaults must be a mapping of invoice fields"))
                    continue
                defaults, defaults_node = value, value_node
            elif key == "invoices":
                invoices_node, invoices_line = value_node, line
            else:
                shown = key if key is not None else "?"
                self.errors.append(
                    SpecError(
                        SourceLocation(rel, line),
                        f"unknown top-level key {shown!r}{did_you_mean(str(shown), _TOP_KEYS)}; "
                        "a spec file has 'invoices' and optionally 'defaults'",
                    )
                )
        if invoices_node is None:
            self.errors.append(SpecError(SourceLocation(rel, 1), "missing 'invoices': a spec file declares invoices by address"))
            return
        if _is_null(invoices_node):
            return  # a template that produced no invoices this time
        if not isinstance(invoices_node, yaml.MappingNode):
            self.errors.append(
                SpecError(SourceLocation(rel, invoices_line), "invoices must be a mapping of address -> invoice")
            )
            return
        ctx = _FileContext(rel, defaults, defaults_node, defaults_written)
        pairs = invoices_node.value
        for i, (key_node, value_node) in enumerate(pairs):
            # Release each invoice's nodes once done: the graph of a 10k-invoice template is large.
            pairs[i] = (key_node, None)
            where = SourceLocation(rel, key_node.start_mark.line + 1)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                self.errors.append(
                    SpecError(where, "an invoice address must be a plain string (merge keys '<<' belong in invoices, use defaults)")
                )
                continue
            self._invoice(loader, key_node.value, value_node, where, ctx)

    def _invoice(
        self,
        loader: _SpecYamlMixin | None,
        address: str,
        node: yaml.Node | None,
        where: SourceLocation,
        ctx: _FileContext,
        prebuilt: tuple[Any, bool] | None = None,
    ) -> None:
        errors: list[SpecError] = []
        address_ok = False
        if not _ADDRESS_RE.match(address):
            errors.append(
                SpecError(
                    where,
                    "an address is 1-200 characters of letters, digits and - _ . : /",
                    address=address,
                )
            )
        else:
            first = self.addresses.get(address)
            if first is not None:
                errors.append(SpecError(where, f"address already declared at {first}", address=address))
            else:
                self.addresses[address] = where
                address_ok = True
        try:
            self._invoice_body(loader, address, node, where, ctx, errors, address_ok, prebuilt)
        finally:
            if errors:
                errors.sort(key=lambda e: e.where.line or 0)
                self.errors.extend(errors)

    def _invoice_body(
        self,
        loader: _SpecYamlMixin | None,
        address: str,
        node: yaml.Node | None,
        where: SourceLocation,
        ctx: _FileContext,
        errors: list[SpecError],
        address_ok: bool,
        prebuilt: tuple[Any, bool] | None,
    ) -> None:
        """Check and derive one invoice; ``prebuilt`` is its raw value (and whether it holds numbers as
        written) when the fast path read it, else it is built from ``node``."""
        if prebuilt is None:
            assert loader is not None and node is not None
            written = loader.written
            raw = loader.build(node, 2)
            has_written = loader.written != written
        else:
            raw, has_written = prebuilt
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(SpecError(where, "an invoice must be a mapping of fields", address=address))
            return
        data: dict[str, Any] = {**ctx.defaults, **raw} if ctx.defaults else dict(raw)

        def error(loc: Sequence[Any], problem: str) -> None:
            line = _node_line(node, loc)
            if line is None and ctx.defaults_node is not None and loc and loc[0] not in raw:
                line = _node_line(ctx.defaults_node, loc)
            errors.append(
                SpecError(SourceLocation(ctx.rel, line or where.line), problem, address=address, field=field_path(loc))
            )

        refused: set[tuple[Any, ...]] = set()
        if has_written or ctx.defaults_written:
            data = _settle_as_written(data, error, refused)
        lifecycle = _lifecycle(data.pop("lifecycle", None), error)
        for key in [k for k in data if not isinstance(k, str)]:
            error((), f"field names are strings, got {key!r}")
            del data[key]

        skip_due_missing = self._derive_due_date(data, error)
        lines = data.get("lines")
        if isinstance(lines, list):
            data["lines"] = [_derive_amount(line, i, error) for i, line in enumerate(lines)]

        try:
            body = InvoiceBody.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_context=True):
                loc = err["loc"]
                if skip_due_missing and err["type"] == "missing" and loc == ("due_date",):
                    continue
                if loc in refused:
                    continue
                error(loc, _problem(err, loc))
            return
        if body.due_date < body.invoice_date:
            error(
                ("due_date",),
                f"due_date {body.due_date} is before invoice_date {body.invoice_date}",
            )
            return
        clashed = False
        if body.source_id:
            # A look-up matches on source_id: two invoices sharing one would each adopt the other.
            seen = self.source_ids.get(body.source_id)
            if seen is not None:
                error(("source_id",), f"source_id {body.source_id!r} is also used by invoice {seen[0]!r} ({seen[1]})")
                clashed = True
            else:
                self.source_ids[body.source_id] = (address, where)
        if body.invoice_number is not None:
            number_key = (body.entity, body.invoice_number)
            seen = self.numbers.get(number_key)
            if seen is not None:
                error(
                    ("invoice_number",),
                    f"invoice_number {body.invoice_number!r} is also used by invoice {seen[0]!r} ({seen[1]})",
                )
                clashed = True
            else:
                self.numbers[number_key] = (address, where)
        if clashed or errors or not address_ok:
            return
        wire = to_wire(body)
        self.invoices.append(
            DesiredInvoice(
                address=address,
                body=body,
                wire=wire,
                digest=body_digest(wire),
                location=where,
                lifecycle=lifecycle,
            )
        )

    @staticmethod
    def _derive_due_date(data: dict[str, Any], error: Any) -> bool:
        """Fill ``due_date`` from ``invoice_date`` and ``terms``; True when its absence is already explained."""
        if data.get("due_date") is not None:
            return False
        invoice_date = data.get("invoice_date")
        terms = data.get("terms")
        if isinstance(invoice_date, str):
            try:
                invoice_date = dt.date.fromisoformat(invoice_date)
            except ValueError:
                return True
        if not isinstance(invoice_date, dt.date) or isinstance(invoice_date, dt.datetime):
            return True  # invoice_date's own error says it
        if terms is None:
            error(("due_date",), "due_date is required (or set terms, e.g. net_30)")
            return True
        if terms == Terms.custom.value:
            error(("due_date",), "terms is 'custom': set due_date explicitly")
            return True
        if terms == Terms.due_on_receipt.value:
            data["due_date"] = invoice_date
        elif isinstance(terms, str) and terms in _NET_TERMS:
            data["due_date"] = invoice_date + _NET_TERMS[terms]
        else:
            return True  # terms's own error lists the allowed values
        return False


def _field_kind(annotation: Any) -> str:
    """``text`` for a string field, ``number`` for an int or Decimal, ``numbers`` for a list of them, else ``other``."""

    def bare(tp: Any) -> Any:
        return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp

    origin = typing.get_origin(annotation)
    members = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    kinds = set()
    for member in (bare(m) for m in members if m is not type(None)):
        if member is str:
            kinds.add("text")
        elif member is int or member is Decimal:
            kinds.add("number")
        elif typing.get_origin(member) is list and bare(typing.get_args(member)[0]) in (int, Decimal):
            kinds.add("numbers")
        else:
            kinds.add("other")
    return kinds.pop() if len(kinds) == 1 else "other"


_BODY_KINDS = {name: _field_kind(f.annotation) for name, f in InvoiceBody.model_fields.items()}
_LINE_KINDS = {name: _field_kind(f.annotation) for name, f in InvoiceLine.model_fields.items()}


def _settle_as_written(data: dict[str, Any], error: Any, refused: set[tuple[Any, ...]]) -> dict[str, Any]:
    """``data`` with its :class:`_AsWritten` values settled by field type (new containers; shared defaults stay as they are).

    A string field takes the text as written; a number field takes the number, or refuses a YAML 1.1
    pitfall with an error (the value becomes None, and its loc goes into ``refused`` so that
    validation does not say it again); any other field gets :func:`_plain`.
    """

    def settle(value: Any, kind: str, loc: tuple[Any, ...]) -> Any:
        if value.__class__ is _AsWritten:
            if kind == "text":
                return str(value)
            if kind == "number" and value.pitfall is not None:
                error(loc, _not_a_number(value))
                refused.add(loc)
                return None
        elif kind == "numbers" and value.__class__ is list:
            return [settle(item, "number", (*loc, i)) for i, item in enumerate(value)]
        return _plain(value)

    def settle_fields(fields: dict[Any, Any], kinds: Mapping[str, str], loc: tuple[Any, ...]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, value in fields.items():
            name = _plain(key)
            if not loc and name == "lines" and value.__class__ is list:
                out[name] = [
                    settle_fields(line, _LINE_KINDS, ("lines", i)) if line.__class__ is dict else _plain(line)
                    for i, line in enumerate(value)
                ]
            else:
                out[name] = settle(value, kinds.get(name, "other"), (*loc, name))
        return out

    return settle_fields(data, _BODY_KINDS, ())


def _within(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is ``folder`` or inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# What YAML (PyYAML and libyaml alike) refuses to read: C0 controls but tab and newlines, DEL, C1
# controls but NEL, surrogates, U+FFFE and U+FFFF.
def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


_DEFAULT_LIFECYCLE = Lifecycle()  # frozen: one serves every invoice that sets none


def _lifecycle(raw: Any, error: Any) -> Lifecycle:
    if raw is None:
        return _DEFAULT_LIFECYCLE
    if not isinstance(raw, dict):
        error(("lifecycle",), "lifecycle must be a mapping (prevent_destroy, on_remove)")
        return Lifecycle()
    ok = True
    for key in raw:
        if key not in _LIFECYCLE_KEYS:
            error(("lifecycle", key), f"unknown lifecycle setting{did_you_mean(str(key), _LIFECYCLE_KEYS)}; allowed: prevent_destroy, on_remove")
            ok = False
    prevent = raw.get("prevent_destroy", False)
    if not isinstance(prevent, bool):
        error(("lifecycle", "prevent_destroy"), f"must be true or false, got {_short(prevent)}")
        ok = False
    on_remove = raw.get("on_remove", "void")
    if on_remove not in _ON_REMOVE:
        error(("lifecycle", "on_remove"), f"must be one of void, delete, forget; got {_short(on_remove)}")
        ok = False
    if not ok:
        return Lifecycle()
    return Lifecycle(prevent_destroy=prevent, on_remove=on_remove)


def _derive_amount(line: Any, index: int, error: Any) -> Any:
    """A line with ``amount`` = ``quantity`` x ``rate`` filled in, or checked when given."""
    if not isinstance(line, dict):
        return line
    rate = _as_decimal(line.get("rate"))
    if rate is None:
        return line
    raw_quantity = line.get("quantity")
    quantity = Decimal(1) if raw_quantity is None else _as_decimal(raw_quantity)
    if quantity is None:
        return line
    try:
        product = MONEY_CONTEXT.multiply(quantity, rate)
    except ArithmeticError:
        return line  # 1.0E+999999999: the range check of quantity or rate says so
    given = line.get("amount")
    if given is None:
        return {**line, "amount": product}
    amount = _as_decimal(given)
    if amount is not None and amount != product:
        error(
            ("lines", index, "amount"),
            f"amount {amount} does not match quantity {quantity} x rate {rate} = {product} "
            "(leave amount out to have it computed)",
        )
    return line


def _problem(err: Mapping[str, Any], loc: Sequence[Any]) -> str:
    """A pydantic error as a sentence a spec author can act on."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        in_line = len(loc) >= 3 and loc[0] == "lines"
        if name in _READ_ONLY_FIELDS:
            return f"unknown field {name!r}: read-only: Campfire fills it in"
        if name in _LIFECYCLE_KEYS:
            return f"unknown field {name!r}: it belongs under lifecycle:"
        if in_line and name in BODY_FIELDS and name not in LINE_FIELDS:
            return f"unknown line field {name!r}: it is an invoice field, not a line field"
        choices = LINE_FIELDS if in_line else BODY_FIELDS
        return f"unknown field {name!r}{did_you_mean(name, choices)}"
    if kind == "missing":
        return "required field is missing"
    if kind == "enum":
        return f"{_short(value)} is not one of the allowed values: {ctx.get('expected', '')}"
    if kind == "string_too_long":
        length = len(value) if isinstance(value, str) else "?"
        return f"too long: {length} characters (max {ctx.get('max_length')})"
    if kind in ("greater_than", "less_than", "greater_than_equal", "less_than_equal"):
        op = {"greater_than": ">", "less_than": "<", "greater_than_equal": ">=", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "?")
        return f"{_short(value)} is out of range: must be {op} {bound}"
    if kind == "too_short" and tuple(loc) == ("lines",):
        return "an invoice needs at least one line"
    if kind == "finite_number":
        return f"{_short(value)} is not a finite number"
    message = str(err.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if message == DATE_FORMAT_MESSAGE and isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            dt.date.fromisoformat(value)
        except ValueError as exc:
            return f"{value} is not a date ({exc})"
    if isinstance(value, (dict, list)) and kind in ("model_type", "dict_type"):
        return f"{message}, got {_short(value)}"
    return f"{message} (got {_short(value)})"
