"""The AdmissionReview wire format: what is accepted, what is refused with which one-line reason."""

from __future__ import annotations

import orjson
import pytest
from objects import BAD_REVIEWS, review_body

from webhook.admission import AdmissionResponse, parse_review, render_response
from webhook.errors import ReviewError


@pytest.mark.parametrize(("raw", "reason"), BAD_REVIEWS)
def test_malformed_reviews_are_refused_with_a_one_line_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ReviewError) as caught:
        parse_review(raw)
    assert str(caught.value).startswith(reason)
    assert "\n" not in str(caught.value)
    assert caught.value.status == 400


@pytest.mark.parametrize("version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_response_is_in_the_version_asked_and_echoes_the_uid(version: str) -> None:
    request = parse_review(review_body(apiVersion=version))
    out = orjson.loads(
        render_response(
            AdmissionResponse(uid=request.uid, allowed=False, message="no"), request.api_version
        )
    )
    assert out["apiVersion"] == version
    assert out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == request.uid
    assert out["response"]["status"] == {"code": 403, "reason": "Forbidden", "message": "no"}
