"""What the user sees while an operation runs: apply's progress, settle-wait countdowns, the approval prompt.

Owns the terminal side of ``operations.Hooks`` (Terraform's ``command/views``): a progress bar on
a terminal, one line per finished change in a CI log; a countdown while a settle window is open;
the "yes" prompt; and the short texts of the commands around the state (``state history``,
``environments``, ``force-unlock``, the command that applies a saved plan). Decides nothing: what
to show comes from ``operations`` and ``render``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from invoicesync import operations
from invoicesync.errors import Cancelled, UsageError
from invoicesync.plan import Action, Outcome, Plan
from invoicesync.render import render_outcome

if TYPE_CHECKING:
    from invoicesync.state.postgres import StateVersion

__all__ = [
    "apply_command", "confirm", "countdown", "echo", "environments", "history", "hooks", "is_terminal", "progress",
    "rate_text", "reading", "refreshed", "unlocked",
]


def echo(text: str, *, err: bool = False) -> None:
    """One line (or block) of output; nothing for an empty text."""
    if text:
        click.echo(text.rstrip("\n"), err=err)


def hooks(*, no_color: bool = False) -> operations.Hooks:
    """How an operation reaches the user: notes on stderr, a countdown for an interrupted run's settle window,
    a progress bar while a refresh reads invoices back (on a terminal)."""
    return operations.Hooks(note=lambda text: echo(text, err=True), wait=countdown,
                            reading=lambda total, rate: reading(total, rate, no_color=no_color))


def rate_text(rate: operations.Rate) -> str:
    """The client's request rate for a progress line: ``42 req/s``, ``paced at 55/s`` once Campfire has throttled."""
    answered, pace = rate()
    text = f"{answered:.0f} req/s"
    return text + (f" (paced at {pace:.0f}/s after 429s)" if pace is not None else "")


@contextlib.asynccontextmanager
async def reading(total: int, rate: operations.Rate, *, no_color: bool) -> AsyncIterator[Callable[[int], None]]:
    """A progress bar of the invoices a refresh has read, on a terminal; nothing in a log (CI)."""
    if total < 1 or not is_terminal(no_color):
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("Refreshing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("refresh", total=total, rate="")

        def advance(n: int) -> None:
            bar.update(task, advance=n, rate=rate_text(rate))

        yield advance


def is_terminal(no_color: bool) -> bool:
    """Whether apply's progress shows as a bar (a terminal, colour allowed) rather than a line per change."""
    return sys.stderr.isatty() and not no_color and "NO_COLOR" not in os.environ


async def countdown(seconds: float, count: int) -> None:
    """Wait out an interrupted run's settle window: a live countdown on a terminal, a line a minute otherwise."""
    deadline = time.monotonic() + seconds
    what = f"{count} create{'s' if count != 1 else ''} of an interrupted run"
    if sys.stderr.isatty():
        while (left := deadline - time.monotonic()) > 0:
            click.echo(f"\rWaiting {left:3.0f} s for {what} to settle (Campfire may still be committing "
                       f"{'them' if count != 1 else 'it'})...", err=True, nl=False)
            await asyncio.sleep(min(1.0, left))
        click.echo("", err=True)
        return
    echo(f"Waiting {seconds:.0f} s for {what} to settle (Campfire may still be committing "
          f"{'them' if count != 1 else 'it'}); then looking again.", err=True)
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(60.0, left))
        if deadline - time.monotonic() > 1:
            echo(f"  {deadline - time.monotonic():.0f} s left", err=True)


def confirm(auto_approve: bool) -> None:
    """Ask for "yes" on a terminal (unless ``auto_approve``); refuse without one, cancel on anything else."""
    if auto_approve:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            "apply needs approval and there is no terminal to ask on: review the plan and pass --auto-approve, "
            "or apply a saved plan (`invoicesync plan --out plan.json`, then `invoicesync apply plan.json`)."
        )
    click.echo("\nDo you want to perform these actions? Only 'yes' will be accepted.")
    answer = click.prompt("  Enter a value", default="", show_default=False)
    if answer.strip() != "yes":
        raise Cancelled("Apply cancelled: nothing was changed.")


@contextlib.asynccontextmanager
async def progress(plan: Plan, settle: float, rate: operations.Rate, *, json: bool, no_color: bool,
                   ) -> AsyncIterator[operations.Progress]:
    """A progress bar with the request rate on a terminal; one line per finished change otherwise (CI logs).

    Creates waiting out their settle window show as a countdown beside the bar on a terminal; in a
    log, as a line when the wait starts and a line a minute while any wait is open.
    """
    actionable = [c for c in plan.changes if c.action is not Action.NOOP and not c.blocked]
    total = len(actionable)
    widths = {
        "address_width": max((len(c.address) for c in actionable), default=0),
        "action_width": max((len(c.action.value) for c in actionable), default=0),
    }
    waits: dict[str, float] = {}  # address -> when its settle window closes (time.monotonic())

    def waiting() -> str:
        if not waits:
            return ""
        left = max(0.0, max(waits.values()) - time.monotonic())
        n = len(waits)
        return f"{n} create{'s' if n != 1 else ''} settling, {left:.0f} s left"

    if json:
        yield operations.Progress()
        return
    if is_terminal(no_color):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("Applying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[settle]}"))
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("apply", total=total, settle="", rate="")

            def advance(outcome: Outcome) -> None:
                waits.pop(outcome.address, None)
                bar.update(task, advance=1, settle=waiting())

            def wait(address: str, deadline: float) -> None:
                waits[address] = deadline
                bar.update(task, settle=waiting())

            async def tick() -> None:
                while True:
                    await asyncio.sleep(0.5)
                    bar.update(task, settle=waiting(), rate=rate_text(rate))

            ticker = asyncio.get_running_loop().create_task(tick())
            try:
                yield operations.Progress(advance, wait)
            finally:
                ticker.cancel()
        return

    def line(outcome: Outcome) -> None:
        waits.pop(outcome.address, None)
        echo(render_outcome(outcome, color=False, **widths))

    def wait_line(address: str, deadline: float) -> None:
        waits[address] = deadline
        echo(f"  {address}: its answer was lost and a look-up has not found it yet; looking again in "
              f"{max(0.0, deadline - time.monotonic()):.0f} s, when the {settle:g} s settle window has passed", err=True)

    async def minutely() -> None:
        while True:
            await asyncio.sleep(60.0)
            if waits:
                echo(f"  Waiting: {waiting()}", err=True)

    ticker = asyncio.get_running_loop().create_task(minutely())
    try:
        yield operations.Progress(line, wait_line)
    finally:
        ticker.cancel()


# --- the commands around the state ------------------------------------------------------------------------------


def apply_command(directory: Path | None, env: str | None, var: Sequence[str], var_file: Sequence[Path],
                  planfile: Path) -> str:
    """The command that applies a saved plan: the same workspace, environment and variables."""
    words = ["invoicesync", *(["-C", str(directory)] if directory is not None else []), "apply"]
    words += ["-e", env] if env else []
    for value in var:
        words += ["--var", value]
    for path in var_file:
        words += ["--var-file", str(path)]
    return shlex.join([*words, str(planfile)])


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def history(versions: Sequence[StateVersion]) -> str:
    """``state history``: one line per serial, newest first."""
    if not versions:
        return "No state saved yet."
    rows = [("SERIAL", "TIME", "COMMAND", "WHO", "INVOICES", "RETIRED")]
    for v in versions:
        who = f"{v.user or '?'}@{v.host or '?'}" + (f" {v.run_url}" if v.run_url else "")
        rows.append((str(v.serial), v.time, v.command or "-", who, str(v.counts.get("invoices", 0)),
                     str(v.counts.get("retired", 0))))
    return _table(rows)


def environments(summaries: Sequence[operations.EnvironmentSummary]) -> str:
    """``environments``: name (``*`` the one used without -e), endpoint, backend, state serial."""
    rows = [("", "ENVIRONMENT", "ENDPOINT", "BACKEND", "SERIAL")]
    problems = []
    for s in summaries:
        serial = "error" if s.problem else ("no state yet" if s.serial is None else str(s.serial))
        rows.append(("*" if s.chosen else "", s.name, s.endpoint, s.backend, serial))
        if s.problem:
            problems.append(f"{s.name}: {s.problem}")
    return _table(rows) + "".join(f"\n\n{p}" for p in problems)


def refreshed(result: operations.RefreshResult, *, json: bool) -> str:
    """``refresh``: how many invoices were read and how, and each one that changed outside invoicesync."""
    if json:
        from invoicesync.models import dumps_json

        return dumps_json({
            "refreshed": result.count,
            "listings": result.listings,
            "read_by_id": result.fetched,
            "missing": list(result.missing),
            "changed_outside": [{"address": c.address, "id": c.invoice_id, "changes": list(c.what)}
                                for c in result.changed],
        }, pretty=True)
    how = f" ({result.listings} list quer{'ies' if result.listings != 1 else 'y'}, {result.fetched} read by id)"
    lines = [f"Refreshed {result.count} invoice{'s' if result.count != 1 else ''}{how}."]
    reported = {c.address for c in result.changed}
    gone = [a for a in result.missing if a not in reported]  # recorded as deleted by an earlier refresh
    if not result.changed:
        lines.append("Nothing changed outside invoicesync." if not gone else "Nothing new changed outside invoicesync.")
    else:
        n = len(result.changed)
        lines.append(f"{n} invoice{'s' if n != 1 else ''} changed outside invoicesync:")
        for change in result.changed:
            if change.what == ("deleted in Campfire",):
                lines.append(f"  {change.address} (id {change.invoice_id}): no longer exists in Campfire "
                             "(the next plan creates it again)")
                continue
            lines.append(f"  {change.address} (id {change.invoice_id}):")
            lines.extend(f"      {what}" for what in change.what)
    if gone:
        lines.append(f"Still missing from Campfire (the next plan creates {'them' if len(gone) != 1 else 'it'} again): "
                     + ", ".join(gone))
    return "\n".join(lines)


def unlocked(result: operations.Unlocked) -> str:
    """What ``force-unlock`` did."""
    if result.holder is None:
        return "There was no lock."
    if result.ended_session:
        return f"Ended the session of {result.holder.describe()}; the lock is free."
    return f"Removed the lock left by {result.holder.describe()} (no live run held it)."
