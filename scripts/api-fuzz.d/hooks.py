"""Schemathesis hooks for flashsale: the rules of the API a JSON Schema cannot state.

A sale's `ends_at` must be after its `starts_at` and in the future; that relation between two
fields cannot be written in the document, so generated sales get an `ends_at` that keeps it (a
day after the later of `starts_at` and now). A change of a sale (`PATCH`) depends on the sale as
it is: its `ends_at` must not be before now, its `per_user_limit` may only be raised (the fuzzed
sale's is already the most, 100), a rate applies only to a sale with a waiting room (the fuzzed
one has none), and `add_stock` and `remove_stock` are not given together; generated changes are
made to keep those rules. Every other field stays as generated.
"""

import datetime

import schemathesis


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    if (
        operation is not None
        and operation.method.upper() == "POST"
        and operation.path == "/api/v1/sales"
        and isinstance(body, dict)
        and isinstance(body.get("ends_at"), str)
        and isinstance(body.get("starts_at"), str)
    ):
        try:
            starts_at = datetime.datetime.fromisoformat(body["starts_at"].replace("Z", "+00:00"))
        except ValueError:
            return body
        now = datetime.datetime.now(datetime.timezone.utc)
        later = max(starts_at.astimezone(datetime.timezone.utc), now)
        body = dict(body, ends_at=(later + datetime.timedelta(days=1)).isoformat())
    if (
        operation is not None
        and operation.method.upper() == "PATCH"
        and operation.path == "/api/v1/sales/{sale_id}"
        and isinstance(body, dict)
    ):
        body = dict(body)
        if isinstance(body.get("ends_at"), str):
            now = datetime.datetime.now(datetime.timezone.utc)
            body["ends_at"] = (now + datetime.timedelta(days=1)).isoformat()
        if "per_user_limit" in body:
            body["per_user_limit"] = 100
        body.pop("waiting_room", None)
        if "add_stock" in body and "remove_stock" in body:
            body.pop("remove_stock")
    return body
