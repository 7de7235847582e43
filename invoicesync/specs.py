"""Spec files: from the files under ``specs/`` to validated, located :class:`DesiredInvoice` values.

Owns: finding spec files (recursively, sorted by path; symbolic links followed only while they stay
inside the workspace, and never read when they leave it), template variables (environment ``vars``,
``var_files``, ``--var-file``, ``--var``), Jinja2 rendering of ``*.j2`` files in a sandbox with
``StrictUndefined`` and no loader, YAML parsing (safe, bounded, floats read as ``Decimal``, numbers
written in YAML 1.1-only forms such as ``000123``, ``12:30``, ``0x1F`` or ``1_000`` kept as the text
written: a string field takes the text, a number field refuses it), file
``defaults``, ``lifecycle``, derived fields (``due_date`` from ``terms``, line ``amount`` from
``quantity`` x ``rate``), validation against :class:`~invoicesync.models.InvoiceBody`, workspace-wide
uniqueness of addresses, invoice numbers (per entity) and spec-set ``source_id``s, and the source
location of every problem.

Lines: YAML problems of a ``*.j2`` file are located at the line of its *rendered* output (as Helm
does), template syntax and runtime errors at the template's own line.

Every problem of a run is collected and raised together as one
:class:`~invoicesync.errors.SpecErrors`; errors of yaml, jinja2 and pydantic are translated here and
never reach the user raw. Never reads state and never calls the API.
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import functools
import itertools
import operator
import os
import re
import signal
import threading
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import jinja2
import simplejson
import yaml
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import Markup
from pydantic import ValidationError

from invoicesync.config import Settings
from invoicesync.errors import SourceLocation, SpecError, SpecErrors, UsageError, did_you_mean, field_path
from invoicesync.models import (
    BODY_FIELDS,
    DATE_FORMAT_MESSAGE,
    gc_paused,
    LINE_FIELDS,
    DesiredInvoice,
    InvoiceBody,
    InvoiceLine,
    Lifecycle,
    Terms,
    body_digest,
    to_wire,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_FORMAT_WIDTH",
    "MAX_NODES",
    "MAX_SPEC_BYTES",
    "SpecSet",
    "load_specs",
    "parse_cli_var",
    "spec_template_env",
]

#: Largest spec file, and largest rendered template output, in bytes.
MAX_SPEC_BYTES = 16 * 1024 * 1024
#: Deepest nesting of mappings and sequences in a YAML document.
MAX_DEPTH = 64
#: How long one template may take to render (seconds), so a runaway loop cannot hold a CI runner.
MAX_RENDER_SECONDS = 20.0
#: Most values in one YAML document, counting every alias expansion (billion-laughs guard).
MAX_NODES = 2_000_000
#: Widest field, and longest precision, a template's format spec (``'{:>8}'``) or ``%`` conversion
#: (``'%-8s'``) may ask for: padding is for lining text up, never for making it large.
MAX_FORMAT_WIDTH = 10_000

_ADDRESS_RE = re.compile(r"^[A-Za-z0-9\-_.:/]{1,200}$")
_VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
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

# --- public API -------------------------------------------------------------------------------------


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


def spec_template_env() -> ImmutableSandboxedEnvironment:
    """The Jinja2 environment spec templates render in.

    Sandboxed and immutable, ``StrictUndefined``, no loader (``include``/``import``/``extends`` are
    refused), no access to the process environment; filters ``add_days(n)``, ``add_months(n)``,
    ``month_start``, ``month_end`` and ``decimal``. A float reaching the output is an error (money is
    never a float): use ``| decimal`` or pass numbers in as variables.

    Memory is bounded before it is allocated: a format spec or ``%`` conversion asking for a width
    or precision over :data:`MAX_FORMAT_WIDTH`, and an operator, string method, filter or output
    whose result would exceed :data:`MAX_SPEC_BYTES` characters, raise ``SecurityError``.
    """
    env = _SpecEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_finalize,
    )
    env.globals.pop("lipsum", None)
    for name in ("center", "truncate", "batch", "slice"):
        if name in env.filters:
            env.filters[name] = _sized_filter(name, env.filters[name])
    for name, estimate in _FILTER_SIZES.items():
        if name in env.filters:
            env.filters[name] = _bounded_filter(name, env.filters[name], estimate)
    env.filters["int"] = _bounded_int_filter(env.filters["int"])
    env.filters.update(
        add_days=_add_days,
        add_months=_add_months,
        month_start=_month_start,
        month_end=_month_end,
        decimal=_to_decimal,
    )
    env.policies["json.dumps_function"] = _json_dumps
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return env


# --- Jinja ------------------------------------------------------------------------------------------


class _IncludeRefused(jinja2.TemplateError):
    """A template tried to read another template (include, import, extends)."""


def _refuse_sizes(what: str, args: Iterable[Any], name: str = "") -> None:
    """Refuse a call given a size no spec needs: `'a'.ljust(10**9)` allocates before any output bound."""
    for arg in args:
        if arg.__class__ is int and abs(arg) > MAX_SPEC_BYTES:
            raise SecurityError(f"{what}{name}: the number {arg} is larger than a spec may use")


def _sized_filter(name: str, filter_: Any) -> Any:
    def checked(*args: Any, **kwargs: Any) -> Any:
        _refuse_sizes("filter ", [*args[1:], *kwargs.values()], name)
        return filter_(*args, **kwargs)

    checked.__wrapped__ = filter_  # type: ignore[attr-defined]
    for attr in ("jinja_pass_arg",):  # keep Jinja's calling convention marker
        if hasattr(filter_, attr):
            setattr(checked, attr, getattr(filter_, attr))
    return checked


def _too_large(what: str, size: int) -> SecurityError:
    return SecurityError(
        f"{what} would make about {size:,} characters, more than a spec may use ({MAX_SPEC_BYTES // (1024 * 1024)} MiB)"
    )


def _check_size(what: str, size: int) -> None:
    if size > MAX_SPEC_BYTES:
        raise _too_large(what, size)


def _size_hint(value: Any, limit: int = MAX_SPEC_BYTES) -> int:
    """About how many characters ``str(value)`` (or a number's widest format) has; stops soon after ``limit``.

    Containers count their items every time they appear (``str([x] * 9)`` repeats ``x`` nine times).
    """
    cls = value.__class__
    if cls is str:
        return len(value)
    if cls is int:
        return value.bit_length() * 10 // 33 + 2  # type: ignore[no-any-return]
    size = _SCALAR_SIZES.get(cls)
    if size is not None:
        return size
    return _size_walk(value, limit, 0, set())


_SCALAR_SIZES: dict[type, int] = {bool: 5, type(None): 5, dt.date: 10, dt.datetime: 32, float: 330}


def _size_walk(value: Any, limit: int, depth: int, open_namespaces: set[int]) -> int:
    if isinstance(value, str):
        return len(value)
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() * 10 // 33 + 2  # decimal digits: log10(2) is about 10/33
    if isinstance(value, Decimal):
        # '{:f}' writes every digit and every zero of the exponent: Decimal('1E+999999999') is a GB.
        return len(value.as_tuple().digits) + abs(value.adjusted()) + 3 if value.is_finite() else 9
    if isinstance(value, float):
        return 330  # '%f' % 1e308
    if isinstance(value, (bytes, bytearray)):
        return 4 * len(value) + 3
    if depth > 100:
        return limit + 1
    if isinstance(value, Namespace):
        key = id(value)
        if key in open_namespaces:
            return 16  # repr() writes a namespace inside itself as '...'
        open_namespaces.add(key)
        try:
            return 16 + _size_walk(object.__getattribute__(value, "_Namespace__attrs"), limit, depth + 1, open_namespaces)
        finally:
            open_namespaces.discard(key)
    items: Iterable[Any]
    if isinstance(value, Mapping):
        total = 2 + 4 * len(value)
        items = itertools.chain.from_iterable(value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        total = 2 + 2 * len(value)
        items = value
    else:
        return 64
    for item in items:
        if total > limit:
            break
        total += _size_walk(item, limit - total, depth + 1, open_namespaces) + 2
    return total


def _format_spec_width(spec: str) -> int:
    """The largest width or precision a format spec asks for; SecurityError past :data:`MAX_FORMAT_WIDTH`.

    Every number in the spec counts, so that no spec grammar (str, int, Decimal, date) slips past.
    """
    widest = 0
    for digits in _DIGITS_RE.findall(spec):
        if len(digits) > 6 or int(digits) > MAX_FORMAT_WIDTH:
            raise SecurityError(
                f"formatting: a width or precision of {digits} is more than a spec needs (at most {MAX_FORMAT_WIDTH})"
            )
        widest = max(widest, int(digits))
    return widest


_DIGITS_RE = re.compile(r"\d+")


def _printf_size(fmt: str, values: Any) -> int:
    """About how long ``fmt % values`` is, before it is made; SecurityError for a width no spec needs.

    Reads the conversions as ``str.__mod__`` does: ``%(key)``, flags, width (``*`` takes the next
    value), ``.precision`` (``*`` too), a length modifier and the conversion type.
    """
    args = values if isinstance(values, tuple) else (values,)
    mapping = values if isinstance(values, Mapping) else None
    size, index, pos, end = len(fmt), 0, 0, len(fmt)

    def number(at: int) -> tuple[int, int]:
        nonlocal index
        if at < end and fmt[at] == "*":
            value = args[index] if index < len(args) else 0
            index += 1
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_FORMAT_WIDTH:
                raise SecurityError(
                    f"formatting: a width or precision of {value} is more than a spec needs (at most {MAX_FORMAT_WIDTH})"
                )
            return (abs(value) if isinstance(value, int) else 0), at + 1
        stop = at
        while stop < end and fmt[stop].isdigit():
            stop += 1
        return (_format_spec_width(fmt[at:stop]) if stop > at else 0), stop

    while True:
        pos = fmt.find("%", pos)
        if pos < 0:
            return size
        pos += 1
        key = None
        if pos < end and fmt[pos] == "(":
            depth, start = 1, pos + 1
            pos += 1
            while pos < end and depth:
                depth += {"(": 1, ")": -1}.get(fmt[pos], 0)
                pos += 1
            key = fmt[start : pos - 1]
        while pos < end and fmt[pos] in "-+ #0":
            pos += 1
        width, pos = number(pos)
        precision = 0
        if pos < end and fmt[pos] == ".":
            precision, pos = number(pos + 1)
        while pos < end and fmt[pos] in "hlL":
            pos += 1
        if pos >= end:
            return size
        conversion = fmt[pos]
        pos += 1
        if conversion == "%":
            continue
        if key is not None:
            value = mapping.get(key) if mapping is not None else None
        else:
            value = args[index] if index < len(args) else None
            index += 1
        field = _size_hint(value, MAX_SPEC_BYTES - size)
        if conversion in "sra" and precision:
            field = min(field, precision)
        else:
            field += precision
        size += max(width, field)
        _check_size("formatting", size)


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing a width or precision (nested ones too: ``'{0:{1}}'``)
    no spec needs, or a result too large, before formatting."""

    _size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        width = _format_spec_width(format_spec)
        self._size += max(width, _size_hint(value) + width)
        _check_size("formatting", self._size)
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    """:class:`_BoundedFormatter` for ``Markup`` format strings."""


def _join_size(sep: str, items: Sequence[Any]) -> int:
    return len(sep) * max(len(items) - 1, 0) + sum(_size_hint(item) for item in items)


def _replace_size(text: str, old: str, new: str, count: Any = -1) -> int:
    if not isinstance(text, str) or not isinstance(old, str) or not isinstance(new, str):
        return 0
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _str_method_size(text: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """About how long ``text.<name>(*args)`` is, for the str methods whose result can outgrow their inputs."""
    if name == "replace" and len(args) >= 2:
        return _replace_size(text, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count", -1))
    if name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        return len(text) + text.count("\t") * (tabsize if isinstance(tabsize, int) else 0)
    if name == "join" and args and isinstance(args[0], (list, tuple)):
        return _join_size(text, args[0])
    return 0


class _SpecCodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` checked by :meth:`_SpecEnvironment.concat_parts` before joining."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"{join}(environment.concat_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _SpecEnvironment(ImmutableSandboxedEnvironment):
    # `'a' * 10**9`, `9 ** 9 ** 9`, `'%*s' % (10**9, '')` or `x + x` would exhaust memory or CPU
    # before any output bound applies.
    intercepted_binops = frozenset(["*", "**", "%", "+"])
    code_generator_class = _SpecCodeGenerator

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        name = getattr(__obj, "__name__", "a function")
        if args:
            _refuse_sizes("calling ", args, name)
        if kwargs:
            _refuse_sizes("calling ", kwargs.values(), name)
        owner = getattr(__obj, "__self__", None)
        if owner.__class__ is str and name in ("replace", "expandtabs", "join"):
            if name == "join" and args and not isinstance(args[0], (list, tuple)):
                args = (list(args[0]), *args[1:])  # str.join makes a list of an iterable anyway
            _check_size(f"calling {name}", _str_method_size(owner, name, args, kwargs))
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        """Jinja's sandboxed ``str.format``/``format_map``, with :class:`_BoundedFormatter`."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        str_type = type(template)
        is_format_map = value.__name__ == "format_map"
        formatter: _BoundedFormatter
        if isinstance(template, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=template.escape)
        else:
            formatter = _BoundedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return str_type(formatter.vformat(template, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            if isinstance(left, str):
                _printf_size(left, right)
            else:
                _refuse_sizes("formatting", right if isinstance(right, (tuple, list)) else [right])
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int):
                    if len(seq) * times > MAX_SPEC_BYTES:
                        raise SecurityError(f"repeating a sequence {times} times makes it too large")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > 20_000:
                raise SecurityError("multiplying these whole numbers makes one with thousands of digits")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_size("adding", len(left) + len(right))
        elif operator == "**":
            if isinstance(right, (int, float, Decimal)) and isinstance(left, (int, float, Decimal)):
                if abs(right) > 100 and abs(left) > 1:  # type: ignore[operator]
                    raise SecurityError(f"exponent {right} is too large")
        return super().call_binop(context, operator, left, right)

    def concat_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The parts of a ``~`` concatenation, once their joined size is known to be bounded."""
        size = 0
        for part in parts:
            size += _size_hint(part, MAX_SPEC_BYTES - size)
            _check_size("joining with ~", size)
        return parts

    def _load_template(self, name: Any, globals: Any) -> NoReturn:  # noqa: A002 (jinja's signature)
        raise _IncludeRefused(
            f"cannot load {name!r}: spec templates cannot include, import or extend other files"
        )


def _bounded_filter(name: str, filter_: Any, estimate: Any) -> Any:
    """``filter_``, refusing before it runs when ``estimate(value, *args, **kwargs)`` is too large."""
    passes_arg = hasattr(filter_, "jinja_pass_arg")

    def checked(*args: Any, **kwargs: Any) -> Any:
        head, (value, *rest) = (args[:1], args[1:]) if passes_arg else ((), args)
        _refuse_sizes("filter ", [*rest, *kwargs.values()], name)
        if name == "join" and not isinstance(value, (list, tuple, str)):
            value = list(value)  # the join filter makes a list of an iterable anyway
        _check_size(f"filter {name}", estimate(value, *rest, **kwargs))
        return filter_(*head, value, *rest, **kwargs)

    checked.__wrapped__ = filter_  # type: ignore[attr-defined]
    if passes_arg:  # keep Jinja's calling convention marker
        checked.jinja_pass_arg = filter_.jinja_pass_arg  # type: ignore[attr-defined]
    return checked


def _bounded_int_filter(filter_: Any) -> Any:
    """The ``int`` filter, refusing a Decimal like ``1E+99999999``: its exact int takes minutes, in C, out of reach of the time budget."""

    def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite() and value.adjusted() >= 4300:
            raise SecurityError(f"filter int: {value} has more digits than a whole number may have (4300)")
        return filter_(value, *args, **kwargs)

    checked.__wrapped__ = filter_  # type: ignore[attr-defined]
    return checked


def _join_filter_size(value: Any, d: Any = "", attribute: Any = None) -> int:
    items = list(value) if not isinstance(value, (list, tuple)) else value
    return _join_size(str(d), items)


def _indent_filter_size(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> int:
    text = _size_hint(value)
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    lines = value.count("\n") + 1 if isinstance(value, str) else text // 2 + 1
    return text + lines * unit


def _wordwrap_filter_size(value: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, *args: Any, **kwargs: Any) -> int:
    text = _size_hint(value)
    wrap = len(wrapstring) if isinstance(wrapstring, str) else 2
    return text + (text // max(width, 1) + 1 if isinstance(width, int) else text) * wrap


def _dump_filter_size(value: Any, indent: Any = None, *args: Any, **kwargs: Any) -> int:
    # json and pprint quote and escape, and indent each nested value on a line of its own
    unit = (len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0) + 1
    return 2 * _size_hint(value) * unit


#: Filters whose result can be much larger than their input, with an estimate of its size.
_FILTER_SIZES: dict[str, Any] = {
    "format": lambda value, *args, **kwargs: _printf_size(str(value), kwargs or tuple(args)),
    "join": _join_filter_size,
    "replace": lambda value, old="", new="", count=None: _replace_size(str(value), str(old), str(new), -1 if count is None else count),
    "indent": _indent_filter_size,
    "wordwrap": _wordwrap_filter_size,
    "string": lambda value: _size_hint(value),
    "tojson": _dump_filter_size,
    "pprint": lambda value: 2 * _size_hint(value),
}


def _finalize(value: Any) -> Any:
    cls = value.__class__
    if cls is str or cls is int or cls is dt.date:
        return value  # what templates write out most, and nothing to check
    if isinstance(value, float):
        raise jinja2.TemplateRuntimeError(
            f"the float {value!r} reached the output; money is never a float: "
            "use '...'|decimal or pass the number in as a variable"
        )
    if value is None:
        return "null"
    _check_size("writing out this value", _size_hint(value))
    return value


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    return simplejson.dumps(obj, use_decimal=True, default=_json_default, **kwargs)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, dt.date):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} cannot be written as JSON")


def _as_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise FilterArgumentError(f"{name}: expected a date or an ISO date string (YYYY-MM-DD), got {value!r}")


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise FilterArgumentError(f"{name}: expected a whole number, got {value!r}")
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise FilterArgumentError(f"{name}: expected a whole number, got {value!r}") from None


def _add_days(value: Any, days: Any) -> dt.date:
    """``date | add_days(n)``: n days later (earlier when negative)."""
    return _as_date(value, "add_days") + dt.timedelta(days=_as_int(days, "add_days"))


def _add_months(value: Any, months: Any) -> dt.date:
    """``date | add_months(n)``: the same day n months later, clamped to the month's end (Jan 31 -> Feb 28)."""
    date = _as_date(value, "add_months")
    index = date.year * 12 + date.month - 1 + _as_int(months, "add_months")
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise FilterArgumentError(f"add_months: {date} + {months} months is out of range")
    day = min(date.day, calendar.monthrange(year, month + 1)[1])
    return dt.date(year, month + 1, day)


def _month_start(value: Any) -> dt.date:
    """``date | month_start``: the first day of its month."""
    return _as_date(value, "month_start").replace(day=1)


def _month_end(value: Any) -> dt.date:
    """``date | month_end``: the last day of its month."""
    date = _as_date(value, "month_end")
    return date.replace(day=calendar.monthrange(date.year, date.month)[1])


def _to_decimal(value: Any) -> Decimal:
    """``'0.1' | decimal``: an exact Decimal from a string or int (a float is refused)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise FilterArgumentError(f"decimal: expected a string or a whole number, got {value!r}")
    try:
        return Decimal(value.strip() if isinstance(value, str) else value)
    except (decimal.InvalidOperation, TypeError, ValueError):
        raise FilterArgumentError(f"decimal: {value!r} is not a number") from None


# Exceptions a template's own code can raise while rendering: its author's mistakes, not ours.
_TEMPLATE_RUNTIME_ERRORS = (
    jinja2.TemplateError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
    RecursionError,
)


class _OutputTooLarge(Exception):
    pass


def _render(env: ImmutableSandboxedEnvironment, source: str, rel: str, variables: Mapping[str, Any]) -> str:
    """Render one template, bounded in output size; raise SpecError located at the template line."""
    try:
        code = env.compile(source, name=rel, filename=rel)
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
    except jinja2.TemplateSyntaxError as exc:
        raise SpecError(SourceLocation(rel, exc.lineno), f"template syntax error: {exc.message}") from exc
    parts: list[str] = []
    size = 0
    try:
        with _time_budget(MAX_RENDER_SECONDS):
            for chunk in template.generate(variables):
                size += len(chunk)
                if size > MAX_SPEC_BYTES:
                    raise _OutputTooLarge
                parts.append(chunk)
    except _OutputTooLarge:
        raise SpecError(
            SourceLocation(rel), f"template output exceeds {MAX_SPEC_BYTES // (1024 * 1024)} MiB; split it into several files"
        ) from None
    except _RenderTimeout as exc:
        raise SpecError(
            SourceLocation(rel, _template_line(exc, rel)),
            f"template took longer than {MAX_RENDER_SECONDS:g} s to render (a runaway loop?)",
        ) from None
    except MemoryError:
        raise SpecError(SourceLocation(rel), "template needs more memory than a spec may use") from None
    except _TEMPLATE_RUNTIME_ERRORS as exc:
        line = _template_line(exc, rel)
        if isinstance(exc, jinja2.UndefinedError):
            problem = f"undefined template variable: {exc.message}"
        elif isinstance(exc, SecurityError):
            problem = f"refused by the template sandbox: {exc}"
        elif isinstance(exc, jinja2.TemplateError):
            problem = f"template error: {exc.message or exc}"
        else:
            problem = f"template error: {type(exc).__name__}: {exc}"
        raise SpecError(SourceLocation(rel, line), problem) from exc
    return "".join(parts)


class _RenderTimeout(Exception):
    """The render time budget ran out."""


@contextmanager
def _time_budget(seconds: float) -> Iterator[None]:
    """Interrupt what runs inside after ``seconds`` (a SIGALRM timer; main thread on POSIX only)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _RenderTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line an exception came from, from the frames Jinja rewrites to template lines."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# --- YAML ---------------------------------------------------------------------------------------------

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

if TYPE_CHECKING:
    _LoaderMixinBase = yaml.SafeLoader
else:
    _LoaderMixinBase = object

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_BINARY = "tag:yaml.org,2002:binary"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
# Plain scalars YAML 1.1 reads as numbers, written in a form kept as text (see _AsWritten).
_WRITTEN_INT = "tag:invoicesync,2025:as-written-int"
_WRITTEN_FLOAT = "tag:invoicesync,2025:as-written-float"
_WRITTEN_OCTAL = "tag:invoicesync,2025:as-written-0o"

_CANONICAL_INT_RE = re.compile(r"0|-?[1-9][0-9]*")
_OCTAL_0O_RE = re.compile(r"[-+]?0o[0-7_]+")


class _AsWritten(str):
    """A plain scalar that YAML 1.1 reads as a number, kept as the text written.

    ``number`` is what YAML 1.1 reads. ``pitfall`` names the YAML 1.1 form (``sexagesimal`` for
    ``12:30``, ``octal`` for ``000123``, ``hex``, ``binary``, ``octal-1.2`` for ``0o17``, and
    ``underscore`` for ``1_000``) when YAML 1.2 would not read the same number, and is None for
    spellings both agree on (``+12``, ``012.5``, ``1.5e+3``). A string field takes the text; a number
    field takes ``number``, or refuses a pitfall (see :func:`_not_a_number`).
    """

    number: int | Decimal
    pitfall: str | None


def _as_written(text: str, number: int | Decimal, octal_0o: bool = False) -> _AsWritten:
    value = _AsWritten(text)
    value.number = number
    bare = text.lstrip("+-").lower()
    if ":" in bare:
        value.pitfall = "sexagesimal"
    elif octal_0o:
        value.pitfall = "octal-1.2"
    elif bare.startswith("0x"):
        value.pitfall = "hex"
    elif bare.startswith("0b"):
        value.pitfall = "binary"
    elif isinstance(number, int) and bare.startswith("0") and len(bare) > 1:
        value.pitfall = "octal"
    elif "_" in bare:
        value.pitfall = "underscore"
    else:
        value.pitfall = None
    return value


def _not_a_number(value: _AsWritten) -> str:
    """Why a number field refuses ``value``, and what to write instead."""
    number, pitfall = value.number, value.pitfall
    quote = "or quote it if you mean text"
    if pitfall == "octal":
        written = int(value.replace("_", ""), 10)
        return (
            f"{value} is not a number (YAML 1.1 would read it as octal {number}); "
            f"write {written} (or {number} if you meant octal), {quote}"
        )
    if pitfall == "octal-1.2":
        return f"{value} is not a number (YAML 1.2 would read it as octal {number}); write {number} {quote}"
    reading = f"{pitfall} {number}" if pitfall in ("sexagesimal", "hex", "binary") else str(number)
    return f"{value} is not a number (YAML 1.1 would read it as {reading}); write {number} {quote}"


def _plain(value: Any) -> Any:
    """``value`` with every :class:`_AsWritten` in it settled: a pitfall as its text, any other as its number."""
    cls = value.__class__
    if cls is _AsWritten:
        return str(value) if value.pitfall is not None else value.number
    if cls is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if cls is list:
        return [_plain(v) for v in value]
    return value


def _decimal_from_yaml(text: str) -> Decimal:
    """A YAML 1.1 float, exactly: ``0.1`` is ``Decimal('0.1')``, ``1_000.5``, ``.inf`` and ``1:30.5`` too."""
    value = text.replace("_", "").lower()
    sign = ""
    if value[:1] in "+-":
        sign, value = ("-" if value[0] == "-" else ""), value[1:]
    if value == ".inf":
        return Decimal(sign + "Infinity")
    if value == ".nan":
        return Decimal("NaN")
    if ":" in value:
        total = Decimal(0)
        for part in value.split(":"):
            total = total * 60 + Decimal(part)
        return -total if sign else total
    return Decimal(sign + value)


_TAG_CACHE: dict[str, str] = {}
_ScalarNode = yaml.ScalarNode
_SequenceNode = yaml.SequenceNode
_MappingNode = yaml.MappingNode


class _YamlLimit(yaml.MarkedYAMLError):
    pass


class _SpecYamlMixin(_LoaderMixinBase):
    """Safe loading with Decimal floats, numbers as written, bounded depth and alias expansion.

    ``build`` replaces PyYAML's generator-based constructor: it constructs the same values as
    ``SafeLoader`` for the core tags (and refuses the rare others), counts every value with its
    alias expansions against :data:`MAX_NODES`, refuses recursive aliases and nesting deeper than
    :data:`MAX_DEPTH`, and reports duplicate keys instead of silently keeping the last.

    A plain scalar YAML 1.1 reads as a number but that is not written as a plain decimal (``000123``,
    ``12:30``, ``0x1F``, ``1_000``, ``+12``) is built as :class:`_AsWritten`, so that a string field
    keeps its text; ``written`` counts them, so that values without any skip settling them.
    """

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._memo: dict[int, tuple[Any, int, int]] = {}
        self._building: set[int] = set()
        self.count = 0
        self.written = 0

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        """The tag of an untagged node; plain scalars' tags are cached (the resolver's regexes are slow)."""
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR  # quoted: always a string
            tag = _TAG_CACHE.get(value)
            if tag is None:
                tag = _written_tag(value, super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]
                if len(value) <= 64 and len(_TAG_CACHE) < 100_000:
                    _TAG_CACHE[value] = tag
            return tag
        return _SEQ if kind is yaml.SequenceNode else _MAP

    def fail(self, node: yaml.Node, problem: str) -> NoReturn:
        raise _YamlLimit(None, None, problem, node.start_mark)

    def build(self, node: yaml.Node, depth: int = 0) -> Any:
        """The Python value of ``node``.

        Shared (aliased) values are built once per call; the memo is dropped afterwards so that it
        never holds a whole document (an alias to an earlier invoice is rebuilt, and counted again).
        """
        try:
            value, _height = self._build(node, depth)
        finally:
            self._memo.clear()
            self._building.clear()
        return value

    def _build(self, node: yaml.Node, depth: int) -> tuple[Any, int]:
        """``node``'s value and height (0 for a scalar); counts values, checks depth and aliases."""
        cls = node.__class__
        if cls is _ScalarNode:
            self.count += 1
            return self._scalar(cast(yaml.ScalarNode, node)), 0
        key = id(node)
        memo = self._memo.get(key)
        if memo is not None:
            value, size, height = memo
            self.count += size
            if self.count > MAX_NODES:
                self.fail(node, f"document has more than {MAX_NODES} values (counting alias expansions)")
            if depth + height > MAX_DEPTH:
                self.fail(node, f"nested deeper than {MAX_DEPTH} levels")
            return value, height
        if key in self._building:
            self.fail(node, "recursive alias: a value cannot contain itself")
        if depth >= MAX_DEPTH:
            self.fail(node, f"nested deeper than {MAX_DEPTH} levels")
        before = self.count
        self._building.add(key)
        height = 1
        scalars = 1  # this node, and its scalar children (counted in bulk)
        result: Any
        if cls is _SequenceNode:
            if node.tag != _SEQ:
                self.fail(node, f"unsupported YAML tag {node.tag}")
            result = []
            append = result.append
            for item in node.value:
                if item.__class__ is _ScalarNode:
                    scalars += 1
                    append(item.value if item.tag == _STR else self._scalar(item))
                else:
                    value, h = self._build(item, depth + 1)
                    append(value)
                    if h >= height:
                        height = h + 1
        elif cls is _MappingNode:
            if node.tag != _MAP:
                self.fail(node, f"unsupported YAML tag {node.tag}")
            explicit: dict[Any, Any] = {}
            merged: dict[Any, Any] | None = None
            for key_node, value_node in node.value:
                if key_node.__class__ is not _ScalarNode:
                    self.fail(key_node, "a mapping key must be a plain value, not a list or mapping")
                tag = key_node.tag
                if tag == _MERGE:
                    merged, h = self._merge(value_node, depth, merged)
                    height = max(height, h)
                    continue
                name = key_node.value if tag == _STR else self._scalar(key_node)
                if name in explicit:
                    self._duplicate_key(cast(yaml.MappingNode, node), key_node)
                if value_node.__class__ is _ScalarNode:
                    scalars += 2
                    explicit[name] = value_node.value if value_node.tag == _STR else self._scalar(value_node)
                else:
                    scalars += 1
                    value, h = self._build(value_node, depth + 1)
                    explicit[name] = value
                    if h >= height:
                        height = h + 1
            if merged:
                merged.update(explicit)
                explicit = merged
            result = explicit
        else:  # pragma: no cover - the composer only makes the three node kinds
            self.fail(node, "unsupported YAML node")
        self.count += scalars
        if self.count > MAX_NODES:
            self.fail(node, f"document has more than {MAX_NODES} values (counting alias expansions)")
        self._building.discard(key)
        self._memo[key] = (result, self.count - before, height)
        return result, height

    def _duplicate_key(self, node: yaml.MappingNode, key_node: yaml.ScalarNode) -> NoReturn:
        first = next(
            (k for k, _v in node.value if k.__class__ is _ScalarNode and k.value == key_node.value), key_node
        )
        self.fail(key_node, f"duplicate key {key_node.value!r} (first on line {first.start_mark.line + 1})")

    def _merge(
        self, node: yaml.Node, depth: int, merged: dict[Any, Any] | None
    ) -> tuple[dict[Any, Any], int]:
        # YAML merge keys: explicit keys win over merged ones; in a list of mappings, earlier ones win.
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out: dict[Any, Any] = {} if merged is None else merged
        height = 1
        for source in reversed(sources):
            value, h = self._build(source, depth)
            if not isinstance(value, dict):
                self.fail(source, "a merge key (<<) needs a mapping or a list of mappings")
            out.update(value)
            height = max(height, h)
        return out, height

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _INT:
            return self._int(node)
        if tag == _FLOAT:
            try:
                return _decimal_from_yaml(node.value)
            except decimal.InvalidOperation:
                self.fail(node, f"{node.value!r} is not a number")
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return self.bool_values[node.value.lower()]
        if tag == _TIMESTAMP:
            try:
                return self.construct_yaml_timestamp(node)
            except ValueError:
                return node.value  # looks like a date but is not one: validation says where
        if tag == _BINARY:
            return self.construct_yaml_binary(node)
        if tag == _WRITTEN_INT or tag == _WRITTEN_OCTAL:
            self.written += 1
            text = node.value
            return _as_written(text, self._int(node), octal_0o=tag == _WRITTEN_OCTAL)
        if tag == _WRITTEN_FLOAT:
            self.written += 1
            try:
                return _as_written(node.value, _decimal_from_yaml(node.value))
            except decimal.InvalidOperation:
                self.fail(node, f"{node.value!r} is not a number")
        if not isinstance(node, yaml.ScalarNode):  # pragma: no cover
            self.fail(node, "a plain value was expected")
        self.fail(node, f"unsupported YAML tag {tag}")


    def _int(self, node: yaml.ScalarNode) -> int:
        """A whole number, YAML 1.1's way; one too long to write out in decimal is an error, not a crash."""
        try:
            if node.tag == _WRITTEN_OCTAL:
                number = int(node.value.replace("_", "").replace("0o", "", 1), 8)
            else:
                number = self.construct_yaml_int(node)
        except ValueError:  # more than sys.get_int_max_str_digits() decimal digits
            number = None
        # Python writes out at most 4300 digits (about 14,000 bits) of a number; no spec needs nearly as many.
        if not isinstance(number, int) or number.bit_length() > 14_000:
            self.fail(node, f"a number with too many digits ({len(node.value)} characters); a spec never needs so many")
        return number


def _written_tag(value: str, tag: str) -> str:
    """``tag``, or an as-written tag for a number not written as a plain decimal (a 0o octal too)."""
    if tag == _INT:
        return tag if _CANONICAL_INT_RE.fullmatch(value) else _WRITTEN_INT
    if tag == _FLOAT:
        try:
            canonical = str(_decimal_from_yaml(value)) == value
        except decimal.InvalidOperation:
            canonical = True  # _scalar says it is not a number
        return tag if canonical else _WRITTEN_FLOAT
    if tag == _STR and "0o" in value[:3]:
        return _WRITTEN_OCTAL if _OCTAL_0O_RE.fullmatch(value) else tag
    return tag


class _SpecYamlLoader(_SpecYamlMixin, _BaseLoader):  # type: ignore[misc]
    """The spec loader: libyaml's parser when PyYAML was built with it (much faster), else PyYAML's own."""


class _PySpecYamlLoader(_SpecYamlMixin, yaml.SafeLoader):
    """The spec loader on PyYAML's pure Python parser; it must read every document as :class:`_SpecYamlLoader` does."""


def _compose(text: str) -> tuple[_SpecYamlMixin, yaml.Node | None]:
    # libyaml reads UTF-8 bytes faster than it reads a str.
    loader = _SpecYamlLoader(text.encode("utf-8", "surrogatepass"))
    try:
        return loader, loader.get_single_node()
    except BaseException:
        loader.dispose()
        raise


def _yaml_error(exc: yaml.YAMLError, rel: str) -> SpecError:
    """A yaml exception as a SpecError at its line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = "" if isinstance(exc, _YamlLimit) else "YAML syntax error: "
        parts = [p for p in (exc.context, exc.problem) if p]
        problem = ", ".join(parts) if parts else str(exc)
        return SpecError(SourceLocation(rel, line), f"{what}{problem}")
    return SpecError(SourceLocation(rel), f"YAML error: {exc}")


def _yaml_load_small(text: str) -> Any:
    """A small document (a --var value, a var file) as plain values: numbers as written are settled."""
    loader, node = _compose(text)
    try:
        value = None if node is None else loader.build(node)
        return _plain(value) if loader.written else value
    finally:
        loader.dispose()


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
_EXACT = decimal.Context(prec=200, traps=[decimal.InvalidOperation, decimal.Overflow])


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
        self, loader: _SpecYamlMixin, address: str, node: yaml.Node, where: SourceLocation, ctx: _FileContext
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
            self._invoice_body(loader, address, node, where, ctx, errors, address_ok)
        finally:
            if errors:
                errors.sort(key=lambda e: e.where.line or 0)
                self.errors.extend(errors)

    def _invoice_body(
        self,
        loader: _SpecYamlMixin,
        address: str,
        node: yaml.Node,
        where: SourceLocation,
        ctx: _FileContext,
        errors: list[SpecError],
        address_ok: bool,
    ) -> None:
        written = loader.written
        raw = loader.build(node, 2)
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
        if loader.written != written or ctx.defaults_written:
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
        elif isinstance(terms, str) and terms in Terms.__members__ and terms.startswith("net_"):
            data["due_date"] = invoice_date + int(terms[4:]) * _DAY
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
_NOT_TEXT_RE = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")


def _not_text(text: str) -> tuple[int, str] | None:
    """The line and the first character of ``text`` that no text file holds (a NUL byte, a control character)."""
    match = _NOT_TEXT_RE.search(text)
    if match is None:
        return None
    return text.count("\n", 0, match.start()) + 1, match.group()


def _not_text_problem(char: str, what: str) -> str:
    if char == "\0":
        return f"contains a NUL byte; {what} is text (is it a binary file?)"
    kind = "control character" if ord(char) < 0xA0 else "character"
    return f"contains the {kind} U+{ord(char):04X}, which {what} cannot contain"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _lifecycle(raw: Any, error: Any) -> Lifecycle:
    if raw is None:
        return Lifecycle()
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
        product = _EXACT.multiply(quantity, rate)
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
