"""Fixtures shared by the whole suite: one sandbox served over loopback per test module, reset for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from invoicesync.sandbox import FaultSettings, Sandbox
from tests.sandbox_helpers import Api, served


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Sandbox, str, Api]]:
    """A sandbox served over HTTP on loopback for the module: (sandbox, base URL, API client)."""
    sandbox = Sandbox()
    with served(sandbox) as (url, api):
        yield sandbox, url, api


@pytest.fixture
def sb(server: tuple[Sandbox, str, Api]) -> Iterator[Sandbox]:
    """The module's sandbox, with no invoices and no faults, for one test."""
    server[0].reset()
    server[0].set_faults(FaultSettings())
    yield server[0]
    server[0].set_faults(FaultSettings())


@pytest.fixture
def api(server: tuple[Sandbox, str, Api], sb: Sandbox) -> Api:
    """An HTTP client of the module's sandbox, reset for this test."""
    return server[2]


@pytest.fixture
def url(server: tuple[Sandbox, str, Api], sb: Sandbox) -> str:
    """The module's sandbox base URL, reset for this test."""
    return server[1]
