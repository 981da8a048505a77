"""The AdmissionReview wire format: what is accepted, what is refused with which one-line reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from objects import workload_review

from webhook.admission import AdmissionResponse, parse_review, render_response
from webhook.errors import ReviewError


def body(mutate: Any = None, **top: Any) -> bytes:
    doc = workload_review("Pod")
    doc.update(top)
    if mutate:
        mutate(doc["request"])
    return orjson.dumps(doc)


def test_a_review_as_the_api_server_sends_it_parses() -> None:
    request = parse_review(body())
    assert request.operation == "CREATE"
    assert request.kind.kind == "Pod"
    assert request.resource.resource == "pods"
    assert request.user.groups == ("system:authenticated",)


def nest(depth: int) -> bytes:
    return (
        b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":'
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )


BAD = [
    (b"not json", "body is not valid JSON"),
    (b"", "body is not valid JSON"),
    (b"[]", "body must be a JSON object"),
    (
        b'{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":"\xff\xfe"}',
        "body is not valid JSON",
    ),
    (nest(5000), "body is not valid JSON"),
    (body(kind="Pod"), "kind must be AdmissionReview"),
    (body(apiVersion="admission.k8s.io/v2"), "apiVersion must be"),
    (body(request=None), "request must be an object"),
    (body(lambda r: r.pop("uid")), "request.uid must be a non-empty string"),
    (body(lambda r: r.update(uid=7)), "request.uid must be a non-empty string"),
    (body(lambda r: r.update(operation="PATCH")), "request.operation must be one of"),
    (body(lambda r: r.update(kind="Pod")), "request.kind must be an object"),
    (body(lambda r: r.update(resource={"group": 1})), "request.resource.group must be a string"),
    (
        body(lambda r: r.update(userInfo={"username": "a", "groups": "g"})),
        "request.userInfo.groups must be a list of strings",
    ),
    (body(lambda r: r.update(namespace=["x"])), "request.namespace must be a string"),
    (body(lambda r: r.update(object="pod")), "request.object must be an object or null"),
    (body(lambda r: r.update(dryRun="yes")), "request.dryRun must be a boolean"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD)
def test_malformed_reviews_are_refused_with_a_one_line_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ReviewError) as caught:
        parse_review(raw)
    assert str(caught.value).startswith(reason)
    assert "\n" not in str(caught.value)
    assert caught.value.status == 400


@pytest.mark.parametrize("version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_response_is_in_the_version_asked_and_echoes_the_uid(version: str) -> None:
    request = parse_review(body(apiVersion=version))
    out = orjson.loads(
        render_response(
            AdmissionResponse(uid=request.uid, allowed=False, message="no"), request.api_version
        )
    )
    assert out["apiVersion"] == version
    assert out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == request.uid
    assert out["response"]["status"] == {"code": 403, "reason": "Forbidden", "message": "no"}
