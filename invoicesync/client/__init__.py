"""The Campfire HTTP client: auth, timeouts, retries, throttling, error mapping and reconcile look-ups.

    _http.py     CampfireClient: every request, its retries, deadlines and look-ups (the only httpx user)
    lookup.py    InvoiceLookup, CreateResult, ClientStats: what callers hand in and get back
    _support.py  redaction of the key, error summaries, Retry-After, base URL checks, id checks

Knows nothing about specs, plans or state.
"""

from __future__ import annotations

from invoicesync.client._http import ENTITIES_PATH, LOOKUP_PAGE_SIZE, CampfireClient
from invoicesync.client._support import INVOICES_PATH
from invoicesync.client.lookup import ClientStats, CreateResult, InvoiceLookup

__all__ = [
    "ENTITIES_PATH",
    "INVOICES_PATH",
    "LOOKUP_PAGE_SIZE",
    "CampfireClient",
    "ClientStats",
    "CreateResult",
    "InvoiceLookup",
]
