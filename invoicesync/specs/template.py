"""Spec templates (``*.j2``): a sandboxed Jinja2 environment whose every allocation is bounded, and its filters.

Sandboxed and immutable, ``StrictUndefined``, no loader, no access to the file system or the
process environment; the date filters ``add_days``, ``add_months``, ``month_start``,
``month_end`` and ``decimal``. A format spec or ``%`` conversion asking for a width over
``MAX_FORMAT_WIDTH``, and an operator, string method, filter or output whose result would exceed
``MAX_SPEC_BYTES``, is refused before it runs; a render over ``MAX_RENDER_SECONDS`` is stopped.
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import functools
import itertools
import operator
import re
import signal
import threading
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, NoReturn

import jinja2
import simplejson
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import FilterArgumentError, SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import Markup

from invoicesync.errors import SourceLocation, SpecError
from invoicesync.specs.limits import MAX_FORMAT_WIDTH, MAX_RENDER_SECONDS, MAX_SPEC_BYTES


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
    size, index = len(fmt), 0

    def star() -> int:
        nonlocal index
        value = args[index] if index < len(args) else 0
        index += 1
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_FORMAT_WIDTH:
            raise SecurityError(
                f"formatting: a width or precision of {value} is more than a spec needs (at most {MAX_FORMAT_WIDTH})"
            )
        return abs(value) if isinstance(value, int) else 0

    conversions = _printf_conversions_cached(fmt) if len(fmt) <= 200 else _printf_conversions(fmt)
    for key, width, precision, conversion in conversions:
        if width is None:
            width = star()
        if precision is None:
            precision = star()
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
    return size


#: One conversion of a ``%`` format: its ``(key)``, width and precision (None: ``*``, read from the
#: values), and its type.
_Conversion = tuple[str | None, int | None, int | None, str]


def _printf_conversions(fmt: str) -> tuple[_Conversion, ...]:
    """The conversions of a ``%`` format (read once per short format: a template applies one many times).

    A width or precision written out larger than :data:`MAX_FORMAT_WIDTH` raises ``SecurityError``
    (never cached, so it is raised on every use). A conversion cut short by the end of ``fmt``
    ends the list.
    """
    conversions: list[_Conversion] = []
    pos, end = 0, len(fmt)

    def number(at: int) -> tuple[int | None, int]:
        if at < end and fmt[at] == "*":
            return None, at + 1
        stop = at
        while stop < end and fmt[stop].isdigit():
            stop += 1
        return (_format_spec_width(fmt[at:stop]) if stop > at else 0), stop

    while True:
        pos = fmt.find("%", pos)
        if pos < 0:
            return tuple(conversions)
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
        precision: int | None = 0
        if pos < end and fmt[pos] == ".":
            precision, pos = number(pos + 1)
        while pos < end and fmt[pos] in "hlL":
            pos += 1
        if pos >= end:
            # Cut short: its '*'s still take their values, as they did when read inline.
            if width is None or precision is None:
                conversions.append((key, width, precision, "%"))
            return tuple(conversions)
        conversions.append((key, width, precision, fmt[pos]))
        pos += 1


_printf_conversions_cached = functools.lru_cache(maxsize=512)(_printf_conversions)


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
