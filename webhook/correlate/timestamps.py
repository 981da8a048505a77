"""Time as the audit log and the decision log write it: RFC 3339 text to epoch seconds and back.

Invariant: `format_time` writes exactly the API server's layout (UTC, microseconds, `Z`), so its
output compares with audit timestamps as bytes.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from functools import lru_cache


@lru_cache(maxsize=8192)
def _whole_seconds(prefix: str) -> float:
    return float(calendar.timegm(datetime.strptime(prefix, "%Y-%m-%dT%H:%M:%S").timetuple()))


def parse_time(text: str) -> float:
    """An RFC 3339 time as epoch seconds; ValueError when it is not one."""
    if len(text) >= 20 and text[-1] == "Z" and text[10] == "T":
        base = _whole_seconds(text[:19])
        return base + float("0" + text[19:-1]) if len(text) > 20 else base
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return parsed.timestamp()


def format_time(epoch: float) -> str:
    """Epoch seconds as the API server writes them: RFC 3339, UTC, microseconds."""
    whole = int(epoch // 1)
    micros = round((epoch - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return f"{datetime.fromtimestamp(whole, tz=UTC):%Y-%m-%dT%H:%M:%S}.{micros:06d}Z"
