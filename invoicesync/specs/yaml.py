"""YAML, safe and located: the C loader when present, every node bounded, numbers read as written.

Floats are read as ``Decimal``; numbers written in YAML 1.1-only forms (``000123``, ``12:30``,
``0x1F``, ``1_000``) keep the text written, so that a string field takes the text and a number
field refuses it with a located error. Nesting, node count (aliases included) and size are bounded.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn, cast

import yaml

from invoicesync.errors import SourceLocation, SpecError
from invoicesync.specs.limits import MAX_DEPTH, MAX_NODES

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


# --- the fast path: plain block YAML ------------------------------------------------------------------

#: Whether spec documents are first tried with :func:`_fast_spec_document` (tests turn it off to run
#: the same cases through libyaml and PyYAML's parser).
FAST_PATH = True

# What the fast path reads: text without tabs, carriage returns or any character YAML treats
# specially (NEL and the other line breaks, a BOM, what no YAML reader accepts).
_FAST_REFUSED_RE = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
# One line of the fast path's subset, every line of the text at once: indent; "- " (a sequence
# entry); "key:" (a plain key); then a comment, a single-quoted, double-quoted (no escapes) or plain
# scalar (starting with a letter, digit or one of ``_.(/$+~``, or ``-`` before a digit or a dot;
# holding no ``#``, no ``: `` and no final ``:``), or anything else ("bad": not in the subset).
_FAST_LINES_RE = re.compile(
    r"""^( *+)(- ++|-(?= *$))?(?:(\w[\w.\-/]*+):(?: ++|(?= *$)))?"""
    r"""(?:(\#.*)|('(?:[^'\n]|'')*+')|("[^"\\\n]*+")|((?:\w|[.(/$+~]|-[0-9.])(?:[^#:\n ]++|:(?=[^ \n])| ++(?=[^ \n#]))*+)|(.+?))? *$""",
    re.MULTILINE,
)
_FAST_MAX_DEPTH = 24

#: Constructed values of plain scalars whose value never changes (numbers, dates, booleans, null), by
#: their tag and text: a template repeats the same few thousands of times.
_VALUE_CACHE: dict[tuple[str, str], Any] = {}
_CACHED_TAGS = frozenset({_INT, _FLOAT, _BOOL, _NULL, _TIMESTAMP})


class _NotFast(Exception):
    """The text is not in the fast path's subset of YAML: read it with the full parser instead."""


class _FastSpecDocument:
    """A spec document read by the fast path: ``defaults``, and each invoice as (address, line, raw value, as-written?)."""

    __slots__ = ("defaults", "defaults_written", "invoices")

    def __init__(self) -> None:
        self.defaults: dict[Any, Any] | None = None
        self.defaults_written = False
        self.invoices: list[tuple[str, int, Any, bool]] | None = None


def _fast_spec_document(text: str) -> _FastSpecDocument | None:
    """A spec document written in plain block YAML, read without building YAML nodes; None for any other text.

    The subset: block mappings and sequences (indentless ones too), plain keys, plain scalars without
    ``#`` or ``: ``, quoted scalars on one line (double-quoted without escapes), whole-line comments; a
    top-level mapping of ``defaults`` (a mapping) and ``invoices`` (a mapping of address to invoice)
    with nothing else. Anything beyond it (flow collections, anchors, tags, block or multi-line
    scalars, a duplicate key, an inline comment, a document marker, odd indentation) returns None,
    and the caller reads the text with the full parser, which also says where a problem is. Values
    are built as :meth:`_SpecYamlMixin.build` builds them: the same resolver, the same scalars.
    """
    if not FAST_PATH or _FAST_REFUSED_RE.search(text) is not None:
        return None
    try:
        return _FastReader(text).document()
    except (_NotFast, yaml.YAMLError, ValueError, ArithmeticError, RecursionError):
        return None


class _FastReader:
    """One pass of :func:`_fast_spec_document` over a text's lines."""

    def __init__(self, text: str) -> None:
        # (line number, column of the content, dash column or -1, key or None, value kind, value text)
        # per content line; kind: "" (nothing after the key or dash), "plain" or "quoted".
        rows: list[tuple[int, int, int, str | None, str, str]] = []
        append = rows.append
        for number, (indent, dash, key, comment, single, double, plain, bad) in enumerate(_FAST_LINES_RE.findall(text), 1):
            if bad:
                raise _NotFast
            if plain:
                kind, value = "plain", plain
            elif single:
                kind, value = "quoted", single[1:-1].replace("''", "'")
            elif double:
                kind, value = "quoted", double[1:-1]
            elif comment:
                if dash or key:
                    raise _NotFast  # a comment after content
                continue
            elif not dash and not key:
                continue  # a blank line
            else:
                kind = value = ""
            col = len(indent)
            if dash:
                append((number, col + len(dash), col, key or None, kind, value))
            else:
                append((number, col, -1, key or None, kind, value))
        self.rows = rows
        self.count = 0
        self.scalars = _PySpecYamlLoader("")

    def document(self) -> _FastSpecDocument | None:
        rows = self.rows
        if not rows or rows[0][1] != 0 or rows[0][2] != -1:
            return None
        doc = _FastSpecDocument()
        seen: set[str] = set()
        i, n = 0, len(rows)
        while i < n:
            number, col, dash_col, key, kind, text = rows[i]
            if col != 0 or dash_col != -1 or key is None or key in seen or key not in ("defaults", "invoices"):
                return None  # unknown or repeated keys, and the rest, are said by the full parser
            seen.add(key)
            if kind:
                return None  # a scalar where a mapping belongs (a null one reads as "nothing" below)
            i += 1
            if key == "defaults":
                written = self.scalars.written
                value, i = self._nested(i, 0, 1)
                if value is not None and value.__class__ is not dict:
                    return None
                doc.defaults, doc.defaults_written = value, self.scalars.written != written
            elif i < n and rows[i][1] > 0 and rows[i][2] == -1:
                doc.invoices, i = self._invoices(i, rows[i][1])
            elif i < n and rows[i][1] > 0:
                return None  # a list of invoices
            else:
                doc.invoices = None
        if "invoices" not in seen or self.count > MAX_NODES:
            return None
        return doc

    def _invoices(self, i: int, col: int) -> tuple[list[tuple[str, int, Any, bool]], int]:
        rows, n = self.rows, len(self.rows)
        scalars = self.scalars
        invoices: list[tuple[str, int, Any, bool]] = []
        while i < n:
            number, row_col, dash_col, key, kind, text = rows[i]
            if row_col < col:
                break
            if row_col != col or dash_col != -1 or key is None:
                raise _NotFast
            i += 1
            written = scalars.written
            if kind:
                value = self._scalar(kind, text)
            else:
                value, i = self._nested(i, col, 2)
            invoices.append((key, number, value, scalars.written != written))
        return invoices, i

    def _nested(self, i: int, col: int, depth: int) -> tuple[Any, int]:
        """The block value of a key at ``col`` with nothing after its colon: a deeper block, an indentless sequence, or null."""
        rows = self.rows
        if i < len(rows):
            row_col, dash_col = rows[i][1], rows[i][2]
            if dash_col != -1:
                if dash_col > col:
                    return self._sequence(i, dash_col, depth)
                if dash_col == col:
                    return self._sequence(i, col, depth)
            elif row_col > col:
                return self._mapping(i, row_col, depth)
        return None, i

    def _mapping(self, i: int, col: int, depth: int) -> tuple[dict[Any, Any], int]:
        """The mapping whose keys sit at ``col``; the first may follow a sequence's dash."""
        if depth > _FAST_MAX_DEPTH:
            raise _NotFast
        rows, n = self.rows, len(self.rows)
        tag_of = _TAG_CACHE.get
        result: dict[Any, Any] = {}
        first = True
        while i < n:
            number, row_col, dash_col, key, kind, text = rows[i]
            if row_col < col or (dash_col != -1 and not first):
                break
            if row_col != col or key is None:
                raise _NotFast
            first = False
            # The scalars' usual case (a key or value read as text, its tag cached) without a call.
            name = key if tag_of(key) == _STR else self._key(key)
            if name in result:
                raise _NotFast  # a duplicate key: the full parser says where
            i += 1
            if kind == "plain":
                self.count += 1
                result[name] = text if tag_of(text) == _STR else self._plain(text)
            elif kind:
                self.count += 1
                result[name] = text
            else:
                result[name], i = self._nested(i, col, depth + 1)
        self.count += 1
        return result, i

    def _sequence(self, i: int, col: int, depth: int) -> tuple[list[Any], int]:
        """The sequence whose dashes sit at ``col``."""
        if depth > _FAST_MAX_DEPTH:
            raise _NotFast
        rows, n = self.rows, len(self.rows)
        result: list[Any] = []
        while i < n:
            number, row_col, dash_col, key, kind, text = rows[i]
            if dash_col != col:
                if dash_col == -1 and row_col <= col:
                    break  # the mapping holding an indentless sequence goes on, or an outer block
                if dash_col < col:
                    break
                raise _NotFast
            value: Any
            if key is not None:
                value, i = self._mapping(i, row_col, depth + 1)
            elif kind:
                value = self._scalar(kind, text)
                i += 1
            else:
                # A dash alone: the block under it, or null.
                i += 1
                value = None
                if i < n:
                    next_col, next_dash = rows[i][1], rows[i][2]
                    if next_dash > col:
                        value, i = self._sequence(i, next_dash, depth + 1)
                    elif next_dash == -1 and next_col > col:
                        value, i = self._mapping(i, next_col, depth + 1)
            result.append(value)
        self.count += 1
        return result, i

    def _key(self, text: str) -> Any:
        tag = self._tag(text)
        return text if tag == _STR else self._construct(tag, text)

    def _plain(self, text: str) -> Any:
        tag = self._tag(text)
        return text if tag == _STR else self._construct(tag, text)

    def _scalar(self, kind: str, text: str) -> Any:
        self.count += 1
        return self._plain(text) if kind == "plain" else text

    def _tag(self, text: str) -> str:
        tag = _TAG_CACHE.get(text)
        if tag is None:
            tag = self.scalars.resolve(yaml.ScalarNode, text, (True, False))
        return tag

    def _construct(self, tag: str, text: str) -> Any:
        key = (tag, text)
        value = _VALUE_CACHE.get(key, _VALUE_CACHE)
        if value is not _VALUE_CACHE:
            return value
        value = self.scalars._scalar(yaml.ScalarNode(tag, text))
        if tag in _CACHED_TAGS and len(text) <= 64:
            if len(_VALUE_CACHE) >= 100_000:
                _VALUE_CACHE.clear()
            _VALUE_CACHE[key] = value
        return value
