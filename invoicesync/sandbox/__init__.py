"""A Campfire-compatible, stateful invoice API emulator (ASGI) with fault injection.

Owns nothing itself; re-exports the public API::

    from invoicesync.sandbox import Sandbox, FaultSettings, DEFAULT_TOKEN
    sb = Sandbox(data_file=None, fixtures_file=None, tokens=(DEFAULT_TOKEN,), honour_idempotency=True, faults=None)
    sb.app            # the Starlette ASGI app
    sb.transport()    # httpx transport for in-process use
    sb.set_faults(FaultSettings(drop_rate=0.1, seed=7)); sb.faults; sb.stats(); sb.reset(); sb.invoices()
    sb.set_faults(FaultSettings(rate_limit=60, burst=6))  # one token bucket for every Campfire request

``invoicesync.sandbox.server`` serves it over HTTP (``serve``, ``BackgroundServer``). Modules:
``app`` (routes, auth, idempotency, control API), ``validation`` (DRF error bodies), ``store``
(records, server-side fields, persistence), ``listing`` (list filters and pages), ``faults``
(fault settings and injection, the rate limit), ``fixtures`` (entities, clients, products, contracts, accounts),
``transport`` (in-process httpx transport). Nothing here imports the tool's planning code.
"""

from __future__ import annotations

from invoicesync.sandbox.app import DEFAULT_TOKEN, Sandbox
from invoicesync.sandbox.faults import DroppedConnection, FaultSettings, FaultSettingsError
from invoicesync.sandbox.fixtures import FixtureError
from invoicesync.sandbox.store import SandboxDataError

__all__ = [
    "DEFAULT_TOKEN",
    "DroppedConnection",
    "FaultSettings",
    "FaultSettingsError",
    "FixtureError",
    "Sandbox",
    "SandboxDataError",
]
