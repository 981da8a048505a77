"""The Kubernetes client, and the only module that imports it: credentials, TLS, connections.

`KubeTransport` is the `kubernetes.aio` client behind `webhook.cluster.apiserver.Transport`, for
what runs for long in `kubefence serve`: the informer, the drift watch and the live reads; and
its one writer, the leader election's Lease (`send`).
`BlockingTransport` is the synchronous client behind the same GETs, for `kubefence scan`: a
one-shot command with nothing else on its event loop, so its requests may block it; it keeps that
client's credential loading, retries and failure texts.

Invariants:
- Answers are taken raw and parsed with orjson: no per-object model deserialisation.
- Each client is imported only by the function that opens it, so a command pays for the one it
  uses and `--state` for neither.
- Credentials that will not load raise `CredentialsError`, one line naming the file (and, for a
  kubeconfig, the field: `webhook.cluster.kubeconfig` merges and checks it first, and the client
  is given the merged document); a server that cannot be reached raises `Unreachable`
  (blocking; its text the cause in words, `webhook.cluster.unreachable`) or the connection error
  (aio); the callers word both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from webhook.cluster import kubeconfig as kubeconfig_file
from webhook.cluster.apiserver import JSON, ApiError, Lines
from webhook.cluster.kubeconfig import CredentialsError, Kubeconfig
from webhook.cluster.unreachable import cause

if TYPE_CHECKING:
    import aiohttp
    from kubernetes.aio.client import ApiClient

__all__ = [
    "ApiClient",  # for annotations only: imported when type checking
    "BlockingTransport",
    "CredentialsError",
    "KubeTransport",
    "Unreachable",
    "blocking",
    "close",
    "connect",
    "refresh_credentials",
]

USER_AGENT = "kubefence"
# A connection that is not up in this long is given up (client-go's dialer waits 30 s too); the
# answer itself may take as long as it takes, as kubectl's has no limit either.
CONNECT_TIMEOUT = 30.0
Credentials = Kubeconfig | Path | None  # a merged kubeconfig, one file, or None: in-cluster


def _loaded(credentials: Credentials) -> Kubeconfig | None:
    if isinstance(credentials, Path):
        return kubeconfig_file.load([credentials], explicit=True)
    return credentials


class Unreachable(Exception):
    """No answer from the API server (connection, TLS or protocol failure); str: the client's."""


# --- kubernetes.aio: kubefence serve --------------------------------------------------------------


class KubeTransport:
    """The API server through the `kubernetes.aio` client: its auth, TLS and connection pool."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def get(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        timeout: float | None,
        accept: str = JSON,
    ) -> dict[str, Any]:
        async with await self._open(path, query, timeout=timeout, accept=accept) as response:
            body = await response.read()
            if response.status != 200:
                raise ApiError(
                    response.status,
                    _reason(body, response.reason),
                    phrase=response.reason,
                    body=body,
                )
        parsed = orjson.loads(body)
        if not isinstance(parsed, dict):
            raise ApiError(500, "the answer is not a JSON object")
        return parsed

    async def send(
        self, method: str, path: str, body: Mapping[str, Any], *, timeout: float | None
    ) -> dict[str, Any]:
        """POST or PUT one JSON object (the election's Lease); the answer parsed, as `get`'s."""
        serialized, url, headers, payload, post = await self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params={"Accept": JSON, "Content-Type": JSON},
            body=dict(body),
            auth_settings=["BearerToken"],
        )
        result = await self.api.call_api(
            serialized,
            url,
            headers,
            payload,
            post,
            _request_timeout=timeout,
            _preload_content=False,
        )
        response: aiohttp.ClientResponse = result.response
        async with response:
            answer = await response.read()
            if response.status not in (200, 201):
                raise ApiError(
                    response.status,
                    _reason(answer, response.reason),
                    phrase=response.reason,
                    body=answer,
                )
        parsed = orjson.loads(answer)
        if not isinstance(parsed, dict):
            raise ApiError(500, "the answer is not a JSON object")
        return parsed

    @contextlib.asynccontextmanager
    async def watch(
        self, path: str, query: Sequence[tuple[str, str]], *, timeout: float
    ) -> AsyncIterator[Lines]:
        response = await self._open(path, query, timeout=timeout, accept=JSON)
        try:
            if response.status != 200:
                body = await response.read()
                raise ApiError(
                    response.status,
                    _reason(body, response.reason),
                    phrase=response.reason,
                    body=body,
                )
            yield response.content
        finally:
            _drop(response)

    async def _open(
        self, path: str, query: Sequence[tuple[str, str]], *, timeout: float | None, accept: str
    ) -> aiohttp.ClientResponse:
        method, url, headers, body, post = await self.api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list(query),
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        result = await self.api.call_api(
            method, url, headers, body, post, _request_timeout=timeout, _preload_content=False
        )
        response: aiohttp.ClientResponse = result.response
        return response


def _drop(response: aiohttp.ClientResponse) -> None:
    """End a response mid-stream: abort its connection rather than drain it, and without TLS's
    closing handshake, which waits for the server's reply (a busy or restarting server may never
    send it, and the socket stayed open until the event loop was gone)."""
    connection = response.connection
    stream = connection.transport if connection is not None else None
    if stream is not None:
        stream.abort()
    response.close()


async def connect(credentials: Credentials) -> tuple[ApiClient, Any]:
    """An API client from a kubeconfig (merged, or one file), or from the Pod's service account
    when None.

    Returns the client and the kubeconfig loader (None in-cluster) for `refresh_credentials`.
    """
    from kubernetes.aio.client import ApiClient, Configuration
    from kubernetes.aio.config import (
        ConfigException,
        load_incluster_config,
        load_kube_config_from_dict,
    )

    configuration = Configuration()
    loader: Any = None
    kubeconfig = _loaded(credentials)
    try:
        if kubeconfig is None:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            loader = await load_kube_config_from_dict(  # type: ignore[no-untyped-call]
                config_dict=kubeconfig.document,
                context=kubeconfig.context,
                client_configuration=configuration,
            )
    except (ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        where = kubeconfig.source if kubeconfig is not None else "in-cluster config"
        raise CredentialsError(where, kubeconfig_file.one_line(str(exc))) from None
    api = ApiClient(configuration)
    api.rest_client = _rest_client(configuration)
    api.user_agent = USER_AGENT
    return api, loader


def _rest_client(configuration: Any) -> Any:
    """The client's connection pool, with a connector that, where asyncio needs it (Python before
    3.12.8), aborts the TLS connections it has closed: 2 s after the close, and at the latest when
    the client is closed. A close mid-response (a timeout, a cancelled read) waits for the
    server's TLS goodbye, which a busy or restarting server may never send; the socket then stayed
    open until the event loop was gone, and was reported at a later garbage collection."""
    import aiohttp
    from aiohttp.connector import NEEDS_CLEANUP_CLOSED
    from kubernetes.aio.client import rest

    class RestClient(rest.RESTClientObject):  # the client's documented seam for its connector
        def _create_connector(self) -> aiohttp.TCPConnector:
            return aiohttp.TCPConnector(
                limit=self.maxsize, ssl=self.ssl_context, enable_cleanup_closed=NEEDS_CLEANUP_CLOSED
            )

    return RestClient(configuration)


async def refresh_credentials(loader: Any, api: ApiClient) -> None:
    """Keep exec-plugin and GCP credentials of a kubeconfig fresh (returns at once otherwise)."""
    from kubernetes.aio.config.kube_config import refresh_token

    await refresh_token(loader, api.configuration)  # type: ignore[no-untyped-call]


async def close(api: ApiClient) -> None:
    """Close the client's connections; a client already broken closes quietly."""
    with contextlib.suppress(Exception):
        await api.close()  # type: ignore[no-untyped-call]


def _reason(body: bytes | str, fallback: str | None) -> str:
    """The message of a Status answer, else the HTTP reason."""
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        return fallback or "no reason given"
    message = status.get("message") if isinstance(status, dict) else None
    return str(message or fallback or "no reason given")


# --- the synchronous client: kubefence scan -------------------------------------------------------


class BlockingTransport:
    """The synchronous client's GETs behind the async `Getter`: each request blocks the loop."""

    def __init__(self, api: Any) -> None:
        self._api = api

    @property
    def server(self) -> str:
        """The API server's URL, as the credentials name it."""
        return str(self._api.configuration.host)

    async def get(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        timeout: float | None,
        accept: str = JSON,
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        method, url, headers, body, post = self._api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list(query),
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method,
                url,
                headers,
                body,
                post,
                _request_timeout=timeout if timeout is not None else (CONNECT_TIMEOUT, None),
            )
            if not 200 <= response.status <= 299:  # as the client's generated calls judge it
                response.read()
                raise ApiException.from_response(http_resp=response, body=None, data=None)
            data = response.response.data
        except ApiException as exc:
            raise ApiError(
                exc.status,
                _reason(exc.body or "", exc.reason),
                phrase=exc.reason,
                body=exc.body,
            ) from None
        except HTTPError as exc:
            raise Unreachable(cause(exc)) from None
        parsed = orjson.loads(data)
        if not isinstance(parsed, dict):
            raise ApiError(500, "the answer is not a JSON object")
        return parsed


@contextlib.contextmanager
def blocking(credentials: Credentials) -> Iterator[BlockingTransport]:
    """The synchronous client from a kubeconfig (merged, or one file); when None, the Pod's
    service account. Its connections are closed on leaving."""
    from kubernetes import client, config
    from urllib3 import Retry

    kubeconfig = _loaded(credentials)
    configuration = client.Configuration()
    # A connection that failed is not tried again: a server that does not answer is said after
    # CONNECT_TIMEOUT, not four times that (urllib3's default retries every error 3 times).
    configuration.retries = Retry(total=3, connect=0)
    try:
        if kubeconfig is not None:
            api = config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
                config_dict=kubeconfig.document,
                context=kubeconfig.context,
                persist_config=False,
                client_configuration=configuration,
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.ApiClient(configuration)
    except (config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        where = kubeconfig.source if kubeconfig is not None else "in-cluster config"
        raise CredentialsError(where, kubeconfig_file.one_line(str(exc))) from None
    with api:
        yield BlockingTransport(api)
