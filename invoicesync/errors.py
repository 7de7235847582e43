"""The exception hierarchy; str(exc) of every class is what the user reads.

    InvoiceSyncError            base; caught by the CLI, printed as "Error: <str>", exit 1
    +-- UsageError              bad flags or arguments
    +-- ConfigError             invoicesync.toml / [tool.invoicesync], environments, missing API key
    +-- SpecError               one located problem in a spec file
    +-- SpecErrors              every spec problem of a run, reported together
    +-- StateError              unreadable, corrupt or too-new state file, journal problems
    |   +-- LockError           the state lock is held by another run
    +-- PlanError               a plan that must not be carried out (prevent_destroy, stale saved plan)
    +-- NotFoundError           an address, or an invoice in Campfire, that a command names does not exist
    +-- Cancelled               the user answered no at the prompt
    +-- ApiError                Campfire answered with an error status (carries status and body)
    |   +-- ApiConnectionError  no usable answer: connect/read timeout, reset, dropped connection
    |       +-- CreateUnsettled a create whose answer was lost, not found yet: wait out the settle window

No module here does IO.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class InvoiceSyncError(Exception):
    """Base class; str(exc) is shown to the user unchanged."""


class UsageError(InvoiceSyncError):
    """The command line itself is wrong (unknown flag, missing argument)."""


class ConfigError(InvoiceSyncError):
    """The workspace configuration is wrong or incomplete."""


@dataclass(frozen=True)
class SourceLocation:
    """Where something was written: a file (relative to the workspace when possible) and a 1-based line."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class SpecError(InvoiceSyncError):
    """One problem in a spec file, located as precisely as is known.

    Renders as ``specs/acme.yaml.j2:14: invoice "acme-2025-07": lines[0].rate: Input should be a valid decimal``;
    the address and field parts are left out when unknown.
    """

    def __init__(
        self,
        where: SourceLocation,
        problem: str,
        *,
        address: str | None = None,
        field: str | None = None,
    ) -> None:
        self.where = where
        self.problem = problem
        self.address = address
        self.field = field
        parts = [str(where)]
        if address is not None:
            parts.append(f'invoice "{address}"')
        if field:
            parts.append(field)
        parts.append(problem)
        super().__init__(": ".join(parts))


class SpecErrors(InvoiceSyncError):
    """All spec problems found in one run; each is one line of the message."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = list(errors)
        lines = _merged_lines(self.errors)
        n = len(lines)
        lines.append(f"{n} error{'s' if n != 1 else ''} in spec files.")
        super().__init__("\n".join(lines))


def _merged_lines(errors: Sequence[SpecError]) -> list[str]:
    """One line per problem: the same problem at the same place (a typo under ``defaults:``, merged
    under every invoice of the file) is said once, naming every invoice it affects."""
    groups: dict[tuple[str, str | None, str], list[SpecError]] = {}
    for error in errors:
        groups.setdefault((str(error.where), error.field, error.problem), []).append(error)
    lines: list[str] = []
    for (where, field, problem), group in groups.items():
        addresses = [e.address for e in group if e.address is not None]
        if len(group) == 1 or len(addresses) != len(group):
            lines.extend(str(e) for e in group)
            continue
        names = ", ".join(f'"{a}"' for a in addresses[:5]) + (f" and {len(addresses) - 5} more" if len(addresses) > 5 else "")
        parts = [where, f"invoices {names}"] + ([field] if field else []) + [problem]
        lines.append(": ".join(parts))
    return lines


class StateError(InvoiceSyncError):
    """The state file or journal cannot be read or written safely."""


class LockError(StateError):
    """Another run holds the state lock."""


class PlanError(InvoiceSyncError):
    """The plan must not be carried out as it stands."""


class NotFoundError(InvoiceSyncError):
    """Something a command names does not exist: an address in the specs or the state, an invoice in Campfire."""


class Cancelled(InvoiceSyncError):
    """The user answered no: nothing was changed."""


class ApiError(InvoiceSyncError):
    """Campfire answered a request with an error status.

    ``field_errors`` flattens a DRF error body into ``(path, message)`` pairs such as
    ``("lines[0].product", 'Invalid pk "999" - object does not exist.')``; ``path`` is ``""`` for
    ``detail``/``error``/``non_field_errors`` messages. The API key is never part of the message.
    ``uncertain`` is set when an earlier send of the same request may have taken effect, so the
    final answer does not prove that nothing happened.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        body: Any = None,
        uncertain: bool = False,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.body = body
        self.uncertain = uncertain
        self.field_errors: list[tuple[str, str]] = flatten_drf_errors(body) if body is not None else []
        super().__init__(message)


class ApiConnectionError(ApiError):
    """No usable answer: the request may or may not have reached Campfire."""


class CreateUnsettled(ApiConnectionError):
    """A create whose answer was lost (timeout, dropped connection, 5xx) and that a look-up did not find yet.

    It may still land at Campfire (a gateway's 504 can come while Campfire is still committing), so it
    must not be sent again before ``sent_at`` (``time.monotonic()`` of its last send) plus the
    settle window, and a second look-up after that.
    """

    def __init__(self, message: str, *, sent_at: float, method: str | None = None, path: str | None = None) -> None:
        super().__init__(message, method=method, path=path, uncertain=True)
        self.sent_at = sent_at


def flatten_drf_errors(body: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten a Django REST Framework error body into (field path, message) pairs.

    ``{"lines": [{}, {"amount": ["bad"]}], "detail": "x"}`` -> ``[("lines[1].amount", "bad"), ("", "x")]``.
    """
    out: list[tuple[str, str]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key in ("detail", "error", "non_field_errors") and not prefix:
                sub = ""
            else:
                sub = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_drf_errors(value, sub))
    elif isinstance(body, list):
        if all(isinstance(v, str) for v in body):
            out.extend((prefix, v) for v in body)
        else:
            for i, value in enumerate(body):
                out.extend(flatten_drf_errors(value, f"{prefix}[{i}]"))
    elif body is not None and body != "":
        out.append((prefix, str(body)))
    return out


def field_path(parts: Iterable[str | int]) -> str:
    """A field location as users write it: ``("lines", 0, "rate")`` -> ``lines[0].rate``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def did_you_mean(word: str, choices: Iterable[str], *, several: bool = False) -> str:
    """The one did-you-mean hint: `` (did you mean 'terms'?)`` for the closest choice, or ``""``.

    ``several``: up to three, as a sentence of their own (`` Did you mean sig-1, sig-10?``), for
    addresses, where more than one is often meant.
    """
    if several:
        close = difflib.get_close_matches(word, list(choices), n=3)
        return f" Did you mean {', '.join(close)}?" if close else ""
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
