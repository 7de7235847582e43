"""The sandbox's invoice list over real HTTP: every filter of API.md, sort order and absolute page links."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit


from invoicesync.sandbox import Sandbox
from invoicesync.sandbox.listing import MAX_LIMIT, ListQuery, parse_query
from tests.sandbox_helpers import API, Api, data, invoice_body


def listed(api: Api, query: str = "") -> list[Any]:
    response = api.request("GET", f"{API}?{query}")
    assert response.status_code == 200, response.text
    return [item["invoice_number"] for item in data(response)["results"]]


def _days(n: int) -> str:
    return (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=n)).isoformat()


def test_pages_follow_absolute_next_links_until_every_invoice_is_seen(server: tuple[Sandbox, str, Api], api: Api) -> None:
    url = server[1]
    created = {api.create(invoice_body(invoice_number=f"N-{n:03d}", invoice_date=f"2025-07-{n % 28 + 1:02d}"))["id"] for n in range(25)}
    seen: list[int] = []
    link: str | None = f"{url}{API}?limit=10&entity=54"
    pages = 0
    while link:
        assert link.startswith(url + API)  # absolute, on the request's own base URL
        page = data(api.http.get(link))
        assert page["count"] == 25
        seen += [item["id"] for item in page["results"]]
        link = page["next"]
        pages += 1
    assert pages == 3 and len(seen) == 25 and set(seen) == created
    last = data(api.http.get(f"{url}{API}?limit=10&offset=20&entity=54"))
    assert parse_qs(urlsplit(last["previous"]).query) == {"entity": ["54"], "limit": ["10"], "offset": ["10"]}
    second = data(api.http.get(f"{url}{API}?limit=10&offset=10"))
    assert parse_qs(urlsplit(second["previous"]).query) == {"limit": ["10"]}
    assert data(api.http.get(f"{url}{API}?limit=10"))["previous"] is None


def test_default_page_is_100_and_limit_is_capped_at_1000(server: tuple[Sandbox, str, Api], api: Api) -> None:
    sandbox = server[0]
    bodies = [invoice_body(invoice_number=f"B-{n}") for n in range(101)]
    assert api.request("POST", f"{API}bulk-create", {"invoices": bodies}).status_code == 201
    page = data(api.request("GET", API))
    assert (page["count"], len(page["results"])) == (101, 100)
    assert parse_qs(urlsplit(page["next"]).query) == {"limit": ["100"], "offset": ["100"]}
    assert len(data(api.request("GET", f"{API}?limit=5000"))["results"]) == 101
    assert parse_query([("limit", "5000")])[0] == ListQuery(limit=MAX_LIMIT) and MAX_LIMIT == 1000
    assert len(data(api.request("GET", f"{API}?limit=abc"))["results"]) == 100  # invalid limit -> default
    assert len(sandbox.invoices()) == 101


def test_client_and_entity_filters_repeat(api: Api) -> None:
    api.create(invoice_body(invoice_number="A", client=33973))
    api.create(invoice_body(invoice_number="B", client=33974))
    api.create(invoice_body(invoice_number="C", client=33975, entity=55))
    assert sorted(listed(api, "client=33973&client=33975")) == ["A", "C"]
    assert sorted(listed(api, "entity=54")) == ["A", "B"]
    assert listed(api, "entity=55&entity=999") == ["C"]


def test_exact_filters_on_contract_currency_numbers(api: Api) -> None:
    api.create(invoice_body(invoice_number="A", contract=12954, ref_number="R-1"))
    api.create(invoice_body(invoice_number="B", client=33974, contract=12955, currency="EUR"))
    assert listed(api, "contract=12954") == ["A"]
    assert listed(api, "currency=EUR") == ["B"]
    assert listed(api, "invoice_number=B") == ["B"]
    assert listed(api, "invoice_number=b") == []
    assert listed(api, "ref_number=R-1") == ["A"]


def test_date_range_is_inclusive_on_invoice_date(api: Api) -> None:
    for n, day in enumerate(("2025-06-30", "2025-07-01", "2025-07-31", "2025-08-01")):
        api.create(invoice_body(invoice_number=str(n), invoice_date=day))
    assert sorted(listed(api, "start_date=2025-07-01&end_date=2025-07-31")) == ["1", "2"]
    assert sorted(listed(api, "start_date=2025-07-31")) == ["2", "3"]


def test_status_buckets_follow_payments_voids_and_ageing(api: Api) -> None:
    def make(number: str, due: str) -> int:
        return int(api.create(invoice_body(invoice_number=number, invoice_date=_days(-400), due_date=due))["id"])

    make("current", _days(5))
    make("late-10", _days(-10))
    make("late-45", _days(-45))
    make("late-200", _days(-200))
    paid = make("paid", _days(-10))
    partial = make("partial", _days(-10))
    voided = make("voided", _days(-10))
    payment = {"account_id": 2553, "account_name": "AR", "payment_date": "2025-07-10"}
    api.request("POST", f"{API}{paid}/pay/", {"empty_transactions": [{**payment, "amount": 110}]})
    api.request("POST", f"{API}{partial}/pay/", {"empty_transactions": [{**payment, "amount": 10}]})
    api.request("POST", f"{API}{voided}/void/")
    assert listed(api, "status=paid") == ["paid"]
    assert listed(api, "status=partially_paid") == ["partial"]
    assert listed(api, "status=voided") == ["voided"]
    assert sorted(listed(api, "status=unpaid")) == ["current", "late-10", "late-200", "late-45"]
    assert listed(api, "status=current") == ["current"]
    assert sorted(listed(api, "status=past_due")) == ["late-10", "late-200", "late-45", "partial"]
    assert sorted(listed(api, "status=1_30")) == ["late-10", "partial"]
    assert listed(api, "status=31_60") == ["late-45"]
    assert listed(api, "status=over_120") == ["late-200"]
    assert listed(api, "status=61_90") == []


def test_sent_status_and_q_search(api: Api) -> None:
    api.create(invoice_body(invoice_number="S-1", sent_date="2025-07-02", shipping_address="1 Main St, Springfield"))
    api.create(invoice_body(invoice_number="S-2", client=33976, message_on_invoice="Thank you for your business"))
    assert listed(api, "sentStatus=sent") == ["S-1"] and listed(api, "status=sent") == ["S-1"]
    assert listed(api, "sentStatus=not_sent") == ["S-2"]
    assert listed(api, "q=springfield") == ["S-1"]
    assert listed(api, "q=INITECH") == ["S-2"]
    assert listed(api, "q=thank") == ["S-2"]
    assert listed(api, "q=s-2") == ["S-2"]


def test_sort_defaults_to_newest_invoice_date_and_accepts_a_field(api: Api) -> None:
    api.create(invoice_body(invoice_number="mid", invoice_date="2025-07-15", client=33975))
    api.create(invoice_body(invoice_number="old", invoice_date="2025-07-01", client=33974))
    api.create(invoice_body(invoice_number="new", invoice_date="2025-07-31", client=33976))
    assert listed(api) == ["new", "mid", "old"]
    assert listed(api, "sort=invoice_date") == ["old", "mid", "new"]
    assert listed(api, "sort=client_name") == ["old", "mid", "new"]  # Acme, Globex, Initech
    assert listed(api, "sort=-id") == ["new", "old", "mid"]
    assert listed(api, "sort=no_such_field") == ["new", "mid", "old"]


def test_download_and_unknown_parameters_are_harmless(api: Api) -> None:
    api.create(invoice_body(invoice_number="A"))
    assert listed(api, "download=true&surprise=1") == ["A"]


def test_malformed_filters_are_400_in_django_filter_words(api: Api) -> None:
    response = api.request("GET", f"{API}?client=abc&start_date=yesterday&status=open")
    assert response.status_code == 400
    assert data(response) == {
        "client": ["Enter a whole number."],
        "start_date": ["Enter a valid date."],
        "status": ["Select a valid choice. open is not one of the available choices."],
    }
