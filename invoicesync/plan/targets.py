"""``--target`` and ``--replace`` address globs: which addresses a plan covers, with did-you-mean when one matches nothing.

Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import translate

from invoicesync.errors import PlanError, did_you_mean
from invoicesync.models import DesiredInvoice
from invoicesync.state import InvoiceRecord

# --- address globs ---------------------------------------------------------------------------------


_DIGITS = re.compile(r"(\d+)")


def address_order(address: str) -> tuple[tuple[str | int, ...], str]:
    """The sort key of an address: numbers by value (``sig-2`` before ``sig-10``), then the text itself."""
    parts = _DIGITS.split(address)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), address


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def matching(addresses: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The addresses (sorted) matching any of the glob ``patterns``; all of them when there is none."""
    ordered = sorted(addresses)
    if not patterns:
        return ordered
    compiled = [_glob(p) for p in patterns]
    return [a for a in ordered if any(rx.match(a) for rx in compiled)]


def select_targets(universe: Iterable[str], targets: Sequence[str]) -> set[str]:
    addresses = sorted(universe)
    if not targets:
        return set(addresses)
    selected: set[str] = set()
    unmatched: list[str] = []
    for pattern in targets:
        rx = _glob(pattern)
        hits = [a for a in addresses if rx.match(a)]
        if not hits:
            unmatched.append(pattern)
        selected.update(hits)
    if unmatched:
        raise PlanError(
            "\n".join(
                f"--target {p} matches no address in the specs or the state.{did_you_mean(p, addresses, several=True)}"
                for p in unmatched
            )
        )
    return selected


def select_replacements(
    replace: Sequence[str],
    selected: set[str],
    desired: Mapping[str, DesiredInvoice],
    records: Mapping[str, InvoiceRecord],
) -> set[str]:
    candidates = sorted(a for a in selected if a in desired and a in records)
    chosen: set[str] = set()
    problems: list[str] = []
    for pattern in replace:
        rx = _glob(pattern)
        hits = [a for a in candidates if rx.match(a)]
        if hits:
            chosen.update(hits)
            continue
        if any(rx.match(a) for a in desired if a not in records):
            why = "only invoices not created yet, so there is nothing to replace"
        elif any(rx.match(a) for a in records if a not in desired):
            why = "only invoices whose spec was removed; they are removed, not replaced"
        elif any(rx.match(a) for a in records):
            why = "only addresses outside the --target addresses"
        else:
            why = "no invoice in the specs or the state"
        problems.append(f"--replace {pattern} matches {why}.{did_you_mean(pattern, candidates, several=True)}")
    if problems:
        raise PlanError("\n".join(problems))
    return chosen



