"""The sandbox's Campfire endpoints over real HTTP: the seed example, validation, auth, lifecycle, idempotency."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import httpx

from invoicesync.models import dumps_json, loads_json
from invoicesync.sandbox import DEFAULT_TOKEN, Sandbox
from invoicesync.sandbox.store import LINE_RESPONSE_KEYS, RESPONSE_KEYS
from tests.sandbox_helpers import API, AUTH, Api, data, invoice_body, seed_request, seed_response

TIME_KEYS = {"created_at", "last_modified_at"}


def errors_of(api: Api, body: Any, method: str = "POST", path: str = API) -> Any:
    response = api.request(method, path, body)
    assert response.status_code == 400, response.text
    return data(response)


# --- the seed example ------------------------------------------------------------------------------


def test_seed_example_request_gets_the_seed_response_apart_from_timestamps(api: Api) -> None:
    response = api.request("POST", API, seed_request())
    assert response.status_code == 201
    got, want = data(response), seed_response()
    assert list(got) == list(want)
    assert list(got["lines"][0]) == list(want["lines"][0])
    for key in want:
        if key in TIME_KEYS:
            continue
        if key == "lines":
            for got_line, want_line in zip(got["lines"], want["lines"], strict=True):
                assert {k: v for k, v in got_line.items() if k not in TIME_KEYS} == {
                    k: v for k, v in want_line.items() if k not in TIME_KEYS
                }
        else:
            assert got[key] == want[key], key
    assert got["total_amount"] == 55 and got["amount_due"] == 55 and got["status"] == "open"
    assert isinstance(got["id"], int) and isinstance(got["entity"], int) and isinstance(got["journal_entry"], int)
    assert '"total_amount":55,' in response.text  # money is a JSON number, not a string or a float
    for key in TIME_KEYS:
        dt.datetime.strptime(got[key], "%Y-%m-%dT%H:%M:%S+0000")


def test_response_key_lists_match_the_seed_page() -> None:
    want = seed_response()
    assert RESPONSE_KEYS == tuple(want)
    assert LINE_RESPONSE_KEYS == tuple(want["lines"][0])


def test_retrieve_put_patch_and_list_items_carry_exactly_the_seed_keys(api: Api) -> None:
    keys = list(seed_response())
    created = api.create(seed_request())
    path = f"{API}{created['id']}/"
    assert list(data(api.request("GET", path))) == keys
    assert list(data(api.request("PATCH", path, {"ref_number": "R-1"}))) == keys
    assert list(data(api.request("PUT", path, seed_request()))) == keys
    (item,) = data(api.request("GET", API))["results"]
    assert list(item) == [*keys, "is_deleted"] and item["is_deleted"] is False


def test_ids_are_sequential_and_invoice_numbers_are_assigned_when_absent(api: Api) -> None:
    first = api.create(invoice_body())
    second = api.create(invoice_body(invoice_number="MINE-1"))
    assert (first["id"], second["id"]) == (145055, 145056)
    assert first["lines"][0]["id"] + 1 == second["lines"][0]["id"]
    assert first["invoice_number"].startswith("INV-") and second["invoice_number"] == "MINE-1"
    assert first["journal_entry"] != second["journal_entry"]


def test_server_computes_line_amounts_totals_names_and_currency(api: Api) -> None:
    body = invoice_body(
        entity="55",
        client=33975,
        contract=12956,
        discount=Decimal("0.5"),
        lines=[
            {"product": 2546, "quantity": 3, "rate": Decimal("33.33"), "tax": Decimal("1.01")},
            {"product": 2547, "amount": 20},
        ],
    )
    del body["terms"]
    got = api.create(body)
    assert [line["amount"] for line in got["lines"]] == [Decimal("99.99"), 20]
    assert got["total_amount"] == Decimal("120.5") and got["amount_due"] == Decimal("120.5") and got["amount_paid"] == 0
    assert (got["entity_name"], got["entity_currency"], got["currency"]) == ("Europe GmbH", "EUR", "EUR")
    assert [line["currency"] for line in got["lines"]] == ["EUR", "EUR"]
    assert [line["product_name"] for line in got["lines"]] == ["Support Plan", "Onboarding Services"]
    assert got["lines"][0]["product_is_taxable"] is True
    assert (got["client_name"], got["client_email"], got["contract_name"]) == (
        "Globex Corporation",
        "ap@globex.example",
        "Globex Annual Subscription",
    )
    assert got["terms"] is None and got["payment_status"] == "open"


def test_unknown_and_read_only_keys_are_ignored_and_empty_ids_become_null(api: Api) -> None:
    got = api.create(invoice_body(client_name="Somebody Else", total_amount=1, id=1, whatever=True, stripe_connection=""))
    assert got["client_name"] == "Client A" and got["total_amount"] == 110 and got["id"] == 145055
    assert got["stripe_connection"] is None and "whatever" not in got


# --- validation, one class each --------------------------------------------------------------------


def test_missing_required_fields_are_reported_per_field(api: Api) -> None:
    body = invoice_body()
    del body["due_date"], body["lines"]
    assert errors_of(api, body) == {"lines": ["This field is required."], "due_date": ["This field is required."]}


def test_wrong_types_use_drf_wording(api: Api) -> None:
    assert errors_of(api, invoice_body(exchange_rate="abc")) == {"exchange_rate": ["A valid number is required."]}
    assert errors_of(api, invoice_body(entity="abc")) == {"entity": ["Incorrect type. Expected pk value, received str."]}
    assert errors_of(api, invoice_body(auto_send_invoice="maybe")) == {"auto_send_invoice": ["Must be a valid boolean."]}
    assert errors_of(api, invoice_body(lines="x")) == {"lines": ['Expected a list of items but got type "str".']}
    assert errors_of(api, invoice_body(invoice_date=None)) == {"invoice_date": ["This field may not be null."]}


def test_bad_enum_value_is_not_a_valid_choice(api: Api) -> None:
    assert errors_of(api, invoice_body(terms="net_3")) == {"terms": ['"net_3" is not a valid choice.']}
    assert errors_of(api, invoice_body(payment_status="done")) == {"payment_status": ['"done" is not a valid choice.']}


def test_too_long_string_names_the_maximum(api: Api) -> None:
    assert errors_of(api, invoice_body(ref_number="x" * 121)) == {
        "ref_number": ["Ensure this field has no more than 120 characters."]
    }
    api.create(invoice_body(ref_number="x" * 120))


def test_out_of_range_number_names_the_bound(api: Api) -> None:
    assert errors_of(api, invoice_body(exchange_rate=10**14)) == {
        "exchange_rate": ["Ensure this value is less than or equal to 100000000000000."]
    }
    assert errors_of(api, invoice_body(discount=-(10**18))) == {
        "discount": ["Ensure this value is greater than or equal to -1000000000000000000."]
    }


def test_bad_date_names_the_expected_format(api: Api) -> None:
    message = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."
    assert errors_of(api, invoice_body(invoice_date="07/01/2025")) == {"invoice_date": [message]}
    assert errors_of(api, invoice_body(due_date="2025-02-30")) == {"due_date": [message]}


def test_unknown_fixture_id_is_an_invalid_pk(api: Api) -> None:
    assert errors_of(api, invoice_body(client="999")) == {"client": ['Invalid pk "999" - object does not exist.']}
    assert errors_of(api, invoice_body(entity=0)) == {"entity": ['Invalid pk "0" - object does not exist.']}
    assert errors_of(api, invoice_body(department=7)) == {"department": ['Invalid pk "7" - object does not exist.']}


def test_bad_line_is_reported_nested_at_its_position(api: Api) -> None:
    good = {"product": 2545, "amount": 10}
    body = invoice_body(lines=[good, {"product": 999, "rate": "fifty"}, good])
    assert errors_of(api, body) == {
        "lines": [{}, {"rate": ["A valid number is required."], "product": ['Invalid pk "999" - object does not exist.']}, {}]
    }
    assert errors_of(api, invoice_body(lines=[])) == {"lines": ["This list may not be empty."]}
    assert errors_of(api, invoice_body(lines=[good, "x"])) == {
        "lines": [{}, {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}]
    }


def test_body_that_is_not_a_json_object_is_refused(api: Api) -> None:
    assert errors_of(api, [1]) == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}
    response = api.http.post(API, content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and data(response)["detail"].startswith("JSON parse error - ")


def test_nothing_is_created_by_a_refused_body(api: Api, sb: Sandbox) -> None:
    errors_of(api, invoice_body(terms="net_3"))
    assert sb.invoices() == []


# --- auth and routing ------------------------------------------------------------------------------


def test_missing_credentials_are_401(url: str, sb: Sandbox) -> None:
    response = httpx.get(url + API)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert response.headers["www-authenticate"] == "Token"
    assert httpx.get(url + API, headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"}).status_code == 401


def test_wrong_token_is_401_invalid_token(url: str, sb: Sandbox) -> None:
    response = httpx.post(url + API, headers={"Authorization": "Token nope"}, content=dumps_json(invoice_body()))
    assert response.status_code == 401 and response.json() == {"detail": "Invalid token."}
    assert sb.invoices() == []


def test_configured_tokens_replace_the_default() -> None:
    sandbox = Sandbox(tokens=("alpha", "beta"))

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://sb") as client:
            return [
                (await client.get(API, headers={"Authorization": f"Token {token}"})).status_code
                for token in ("alpha", "beta", DEFAULT_TOKEN)
            ]

    assert asyncio.run(main()) == [200, 200, 401]


def test_unknown_invoice_and_unknown_path_are_404_not_found(api: Api) -> None:
    for path in (f"{API}1/", f"{API}abc/", "/coa/api/v1/nothing/", API.rstrip("/")):
        response = api.request("GET", path)
        assert (response.status_code, data(response)) == (404, {"detail": "Not found."}), path


def test_unsupported_method_is_405(api: Api) -> None:
    response = api.request("DELETE", API)
    assert response.status_code == 405 and data(response) == {"detail": 'Method "DELETE" not allowed.'}


# --- update, delete, void, reopen, pay ---------------------------------------------------------------


def test_put_replaces_the_whole_invoice_nulling_omitted_fields(api: Api) -> None:
    created = api.create(invoice_body(ref_number="R-1", message_on_invoice="Thanks", purchase_order_number="PO"))
    replacement = invoice_body(lines=[{"product": 2547, "amount": 7}])
    got = data(api.request("PUT", f"{API}{created['id']}/", replacement))
    assert got["id"] == created["id"] and got["created_at"] == created["created_at"]
    assert (got["ref_number"], got["message_on_invoice"], got["purchase_order_number"]) == (None, None, None)
    assert [line["product_name"] for line in got["lines"]] == ["Onboarding Services"]
    assert got["lines"][0]["id"] not in {line["id"] for line in created["lines"]}
    assert got["total_amount"] == 7


def test_put_requires_the_full_body(api: Api) -> None:
    created = api.create(invoice_body())
    assert errors_of(api, {"ref_number": "R"}, "PUT", f"{API}{created['id']}/").keys() >= {"lines", "entity"}


def test_patch_changes_only_what_is_sent(api: Api) -> None:
    created = api.create(invoice_body(message_on_invoice="Thanks"))
    path = f"{API}{created['id']}/"
    got = data(api.request("PATCH", path, {"ref_number": "R-2", "due_date": "2025-08-15"}))
    assert (got["ref_number"], got["due_date"], got["message_on_invoice"]) == ("R-2", "2025-08-15", "Thanks")
    assert got["lines"] == created["lines"] and got["total_amount"] == created["total_amount"]
    got = data(api.request("PATCH", path, {"lines": [{"product": 2546, "rate": 5}, {"amount": 1}]}))
    assert [line["amount"] for line in got["lines"]] == [5, 1] and got["total_amount"] == 6
    assert data(api.request("GET", path)) == got


def test_patch_validates_what_is_sent(api: Api) -> None:
    created = api.create(invoice_body())
    assert errors_of(api, {"terms": "soon"}, "PATCH", f"{API}{created['id']}/") == {"terms": ['"soon" is not a valid choice.']}


def test_delete_is_204_then_the_invoice_is_gone(api: Api) -> None:
    keep = api.create(invoice_body())
    gone = api.create(invoice_body())
    response = api.request("DELETE", f"{API}{gone['id']}/")
    assert response.status_code == 204 and response.content == b""
    assert api.request("GET", f"{API}{gone['id']}/").status_code == 404
    assert [item["id"] for item in data(api.request("GET", API))["results"]] == [keep["id"]]
    assert api.request("DELETE", f"{API}{gone['id']}/").status_code == 404


def test_void_defaults_to_today_and_reopen_restores_open(api: Api) -> None:
    created = api.create(invoice_body())
    path = f"{API}{created['id']}/"
    voided = data(api.request("POST", f"{path}void/"))
    assert (voided["status"], voided["payment_status"]) == ("voided", "voided")
    assert voided["voided_date"] == dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert voided["voided_journal_entry"] is not None and voided["amount_due"] == 0
    assert api.request("POST", f"{path}void/").status_code == 400
    assert data(api.request("PATCH", path, {"ref_number": "x"})) == {
        "non_field_errors": ["A voided invoice cannot be edited; reopen it first."]
    }
    reopened = data(api.request("POST", f"{path}reopen/"))
    assert (reopened["status"], reopened["voided_date"], reopened["voided_journal_entry"]) == ("open", None, None)
    assert reopened["amount_due"] == 110
    assert api.request("POST", f"{path}reopen/").status_code == 400


def test_void_takes_a_given_date_and_checks_it(api: Api) -> None:
    created = api.create(invoice_body())
    path = f"{API}{created['id']}/void/"
    assert errors_of(api, {"void_date": "soon"}, "POST", path) == {
        "void_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]
    }
    assert data(api.request("POST", path, {"void_date": "2025-08-01"}))["voided_date"] == "2025-08-01"


def _payment(amount: Any, date: str = "2025-07-10", **over: Any) -> dict[str, Any]:
    return {
        "empty_transactions": [
            {"account_id": 2553, "account_name": "1100 - Accounts Receivable", "amount": amount, "payment_date": date, **over}
        ]
    }


def test_partial_then_full_payment_updates_amounts_and_status(api: Api) -> None:
    created = api.create(invoice_body())
    path = f"{API}{created['id']}/"
    partial = data(api.request("POST", f"{path}pay/", _payment(Decimal("10.5"))))
    assert (partial["status"], partial["payment_status"]) == ("partial", "partial")
    assert (partial["amount_paid"], partial["amount_due"], partial["paid_date"]) == (Decimal("10.5"), Decimal("99.5"), None)
    (payment,) = partial["payments"]
    assert (payment["amount"], payment["payment_date"], payment["source"], payment["payment_type"]) == (
        Decimal("10.5"),
        "2025-07-10",
        "MANUAL",
        "MANUAL_TRANSACTION",
    )
    assert partial["payment_journal_entries"] == [payment["payment_journal_entry"]]
    paid = data(api.request("POST", f"{path}pay/", _payment(Decimal("99.5"), "2025-07-20")))
    assert (paid["status"], paid["amount_paid"], paid["amount_due"], paid["paid_date"]) == ("paid", 110, 0, "2025-07-20")
    assert data(api.request("GET", path)) == paid
    assert data(api.request("PUT", path, invoice_body())) == {"non_field_errors": ["A paid invoice cannot be edited."]}


def test_payment_body_is_validated(api: Api) -> None:
    created = api.create(invoice_body())
    path = f"{API}{created['id']}/pay/"
    assert errors_of(api, {"empty_transactions": [{"account_id": 2553}]}, "POST", path) == {
        "empty_transactions": [
            {
                "account_name": ["This field is required."],
                "amount": ["This field is required."],
                "payment_date": ["This field is required."],
            }
        ]
    }
    assert errors_of(api, _payment(5, account_id=1), "POST", path) == {
        "empty_transactions": [{"account_id": ['Invalid pk "1" - object does not exist.']}]
    }
    assert "non_field_errors" in errors_of(api, {}, "POST", path)
    assert "error" in errors_of(api, _payment(111), "POST", path)  # more than is due


def test_voiding_a_payment_reopens_the_amount_due(api: Api) -> None:
    created = api.create(invoice_body())
    path = f"{API}{created['id']}/"
    paid = data(api.request("POST", f"{path}pay/", _payment(110)))
    payment_id = paid["payments"][0]["id"]
    assert errors_of(api, {}, "POST", f"{path}void/") == {
        "error": "This invoice has payments; void them before voiding the invoice."
    }
    voided_payment = data(api.request("POST", f"{path}payment/{payment_id}/void/", {"void_date": "2025-07-30"}))
    assert voided_payment["id"] == payment_id and voided_payment["voided_date"] == "2025-07-30"
    after = data(api.request("GET", path))
    assert (after["status"], after["amount_paid"], after["amount_due"], after["paid_date"]) == ("open", 0, 110, None)
    assert api.request("POST", f"{path}payment/{payment_id}/void/").status_code == 400
    assert api.request("POST", f"{path}payment/99/void/").status_code == 404


def test_bulk_create_is_all_or_nothing(api: Api, sb: Sandbox) -> None:
    path = f"{API}bulk-create"
    bad = errors_of(api, {"invoices": [invoice_body(), invoice_body(terms="x")]}, "POST", path)
    assert bad == {"invoices": [{}, {"terms": ['"x" is not a valid choice.']}]}
    assert sb.invoices() == []
    response = api.request("POST", path, {"invoices": [invoice_body(), invoice_body(invoice_number="B")]})
    assert response.status_code == 201
    created = data(response)
    assert [inv["id"] for inv in created] == [145055, 145056] and list(created[0]) == list(seed_response())
    assert errors_of(api, {"invoices": []}, "POST", path) == {"invoices": ["Ensure this field has at least 1 elements."]}


# --- idempotency -------------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_first_response(api: Api, sb: Sandbox) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = api.request("POST", API, invoice_body(), headers=headers)
    again = api.request("POST", API, invoice_body(), headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert len(sb.invoices()) == 1
    assert sb.stats()["idempotent_replays"] == 1


def test_same_idempotency_key_with_another_body_is_422(api: Api, sb: Sandbox) -> None:
    api.request("POST", API, invoice_body(), headers={"Idempotency-Key": "k-2"})
    response = api.request("POST", API, invoice_body(ref_number="other"), headers={"Idempotency-Key": "k-2"})
    assert response.status_code == 422
    assert response.json() == {"detail": "Idempotency-Key reused with a different request body."}
    assert len(sb.invoices()) == 1


def test_idempotency_key_is_ignored_when_switched_off() -> None:
    sandbox = Sandbox(honour_idempotency=False)

    async def main() -> list[int]:
        async with httpx.AsyncClient(transport=sandbox.transport(), base_url="http://sb", headers=AUTH) as client:
            statuses = []
            for ref in ("a", "a", "b"):
                response = await client.post(
                    API, content=dumps_json(invoice_body(ref_number=ref)), headers={"Idempotency-Key": "same"}
                )
                statuses.append(response.status_code)
            return statuses

    assert asyncio.run(main()) == [201, 201, 201]
    assert len(sandbox.invoices()) == 3


# --- money -------------------------------------------------------------------------------------------


def test_money_round_trips_as_decimal_without_float_error(api: Api) -> None:
    got = api.create(invoice_body(lines=[{"quantity": 3, "rate": Decimal("0.1")}, {"amount": Decimal("0.2")}]))
    assert got["total_amount"] == Decimal("0.5")
    assert [line["amount"] for line in got["lines"]] == [Decimal("0.3"), Decimal("0.2")]
    stored = loads_json(dumps_json(got))
    assert stored["total_amount"] == Decimal("0.5")
