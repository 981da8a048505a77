"""The decision line `write_decision` renders itself is the very line structlog's chain renders."""

from __future__ import annotations

import io
import re
from typing import Any

import structlog

from webhook import decisionlog

_TIMESTAMP = re.compile(rb'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')


def _product_chain() -> list[Any]:
    saved = structlog.get_config()
    try:
        decisionlog.configure(io.BytesIO())
        return list(structlog.get_config()["processors"])
    finally:
        structlog.configure(**saved)


FIELDS: dict[str, Any] = {
    "decision_id": "d-1",
    "decision": "warn",
    "allowed": True,
    "mode": "warn",
    "rules": [{"id": "host-network", "result": "fail", "mode": "warn", "message": 'é "q"\n'}],
    "groups": ["system:authenticated"],
    "audit_annotations": {"decision": "warn", "rules": "host-network"},
    "latency_ms": 0.123,
    "client": "CN=kube-apiserver",
}


def _lines(context: dict[str, Any]) -> tuple[bytes, bytes]:
    chain = _product_chain()
    fast, slow = io.BytesIO(), io.BytesIO()
    decisionlog.write_decision(
        structlog.wrap_logger(structlog.BytesLogger(fast), processors=chain, **context),
        dict(FIELDS),
    )
    structlog.wrap_logger(structlog.BytesLogger(slow), processors=chain, **context).info(
        decisionlog.DECISION_EVENT, **FIELDS
    )
    return fast.getvalue(), slow.getvalue()


def test_the_rendered_line_is_the_chains_byte_for_byte() -> None:
    fast, slow = _lines({})
    assert _TIMESTAMP.search(fast)
    assert _TIMESTAMP.sub(b"T", fast) == _TIMESTAMP.sub(b"T", slow)
    tail = b',"client":"CN=kube-apiserver","event":"admission.decision","level":"info",T}\n'
    assert _TIMESTAMP.sub(b"T", fast).endswith(tail)


def test_bound_context_comes_first_as_in_the_chain() -> None:
    fast, slow = _lines({"replica": "a", "decision": "overridden"})
    assert fast.startswith(b'{"replica":"a","decision":"warn"')
    assert _TIMESTAMP.sub(b"T", fast) == _TIMESTAMP.sub(b"T", slow)


def test_another_chain_gets_the_event_itself() -> None:
    with structlog.testing.capture_logs() as logs:
        decisionlog.write_decision(structlog.get_logger(), dict(FIELDS))
    assert logs == [{**FIELDS, "event": "admission.decision", "log_level": "info"}]
