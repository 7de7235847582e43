"""What an apply did: one ``Outcome`` per change and the ``ApplyResult`` of the run.

Apply reports them as they land; ``render`` prints them. No IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from invoicesync.plan.model import Action


@dataclass(frozen=True)
class Outcome:
    """What happened to one change during apply."""

    address: str
    action: Action
    ok: bool
    invoice_id: int | None = None
    message: str | None = None  # the error (ok=False) or a note ("found after a lost response")
    skipped: bool = False  # not attempted: blocked, interrupted, or its dependency failed


@dataclass(frozen=True)
class ApplyResult:
    """Every outcome of one apply, in plan order."""

    outcomes: tuple[Outcome, ...]
    interrupted: bool = False
    elapsed_seconds: float = 0.0  # carrying out the changes, journaling each outcome included; the final state write not

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """Outcomes that were attempted and failed, or skipped."""
        return tuple(o for o in self.outcomes if not o.ok)
