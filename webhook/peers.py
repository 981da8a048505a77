"""Who is calling: the verified client certificate's subject, the connection's address.

Never a header a client could set. The webhook logs both (`client`, `peer`), remembers approvals
by the first, and bounds work per caller; the monitor checks its senders the same way.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

from aiohttp import web

UNAUTHENTICATED = "unauthenticated"  # the decision log's `client` without a verified certificate


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A verified client certificate's subject: as logged, and its commonNames."""

    subject: str  # `key=value,...`, values escaped as RFC 4514 escapes them
    common_names: tuple[str, ...]

    def matches(self, pinned: str) -> bool:
        """Whether this is the pinned client: the whole subject as logged (values escaped, so it
        cannot be forged with a comma in one field), or its one and only commonName."""
        return pinned == self.subject or self.common_names == (pinned,)


# The client certificate is fixed for a connection: its subject is rendered once per connection.
_SUBJECTS: weakref.WeakKeyDictionary[asyncio.BaseTransport, ClientIdentity | None] = (
    weakref.WeakKeyDictionary()
)
_ESCAPED = str.maketrans({c: f"\\{c}" for c in ',+"\\<>;='})


def client_identity(request: web.Request) -> ClientIdentity | None:
    transport = request.transport
    if transport is None:
        return None
    try:
        return _SUBJECTS[transport]
    except KeyError:
        pass
    peer = transport.get_extra_info("peercert")
    pairs = [(str(k), str(v)) for rdn in (peer or {}).get("subject", ()) for k, v in rdn]
    identity = (
        ClientIdentity(
            ",".join(f"{k}={v.translate(_ESCAPED)}" for k, v in pairs),
            tuple(v for k, v in pairs if k == "commonName"),
        )
        if pairs
        else None
    )
    _SUBJECTS[transport] = identity
    return identity


def caller(request: web.Request) -> str:
    """Who asked, for bounds per caller: the verified client certificate, else the address."""
    client = client_identity(request)
    return f"subject:{client.subject}" if client is not None else f"peer:{peer_address(request)}"


def peer_address(request: web.Request) -> str:
    """The caller's address (the connection's, never a header a client could set)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
