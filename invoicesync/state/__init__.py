"""What exists: the recorded state of each environment, its journal, its lock, and where they are kept.

    model.py     State, InvoiceRecord, LifecycleRecord: the state as data, no IO
    journal.py   the journal records and fold_journal (which outcomes a run recorded, which intents it left open)
    lock.py      LockInfo: who holds a state lock
    backend.py   the seam every place that keeps state implements, and the choice of one per environment
    local.py     files under state/ with an OS lock (StateStore)
    postgres.py  tables in PostgreSQL with an advisory lock (PostgresStore), for teams and CI runners

Backends know nothing about HTTP or plans.
"""

from __future__ import annotations

from invoicesync.state.journal import JOURNAL_OPS, JournalEntry, fold_journal
from invoicesync.state.local import Journal, StateStore
from invoicesync.state.model import (
    FORMAT_VERSION,
    InvoiceRecord,
    LifecycleRecord,
    State,
    duplicate_ids,
    new_state,
    timestamp,
)

__all__ = [
    "FORMAT_VERSION",
    "JOURNAL_OPS",
    "InvoiceRecord",
    "Journal",
    "JournalEntry",
    "LifecycleRecord",
    "State",
    "StateStore",
    "duplicate_ids",
    "fold_journal",
    "new_state",
    "timestamp",
]
