"""Schemathesis hooks for flashsale: the one rule of the API a JSON Schema cannot state.

A sale's `ends_at` must be after its `starts_at` and in the future; that relation between two
fields cannot be written in the document, so generated sales get an `ends_at` that keeps it (a
day after the later of `starts_at` and now). Every other field stays as generated.
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
    return body
