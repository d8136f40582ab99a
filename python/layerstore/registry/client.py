"""The HTTP side of the OCI distribution API (v1.1, and Docker's registry API where it
differs), on urllib3, which streams large bodies without copying them.

One :class:`RegistryClient` talks to one repository of one registry: it answers
authentication challenges (basic, or a bearer token fetched from the challenge's realm and
renewed when it expires), retries with backoff on 429 and 5xx and on broken connections, and
raises :class:`~layerstore.errors.RegistryError` naming the registry, what was asked and the
status for anything else. :class:`BlobReader` is a blob as a stream that resumes with a Range
request where a connection broke, so the apply reading it only pauses.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urljoin

import certifi
import urllib3
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import SSLError

from .. import __version__
from ..errors import RegistryError
from .auth import Challenge, Credentials, find_credentials, parse_challenge
from .reference import RegistryReference

__all__ = ["BlobReader", "RegistryClient"]

_RETRIED_STATUSES = frozenset((429, 500, 502, 503, 504))
_ATTEMPTS = 5
_RESUMES = 10  # broken connections one blob may survive
_BACKOFF_SECONDS = 0.25
_USER_AGENT = f"layerstore/{__version__}"


def _backoff(attempt: int, retry_after: str | None = None) -> None:
    if retry_after and retry_after.isdigit():
        time.sleep(min(int(retry_after), 30))
        return
    time.sleep(_BACKOFF_SECONDS * (2**attempt) * (0.5 + random.random()))


class RegistryClient:
    """One repository of one registry."""

    def __init__(
        self,
        reference: RegistryReference,
        *,
        credentials: Credentials | None = None,
        auth_file: str | None = None,
        ca_file: str | None = None,
        tls_verify: bool = True,
        plain_http: bool | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.reference = reference
        self.repository = reference.repository
        if credentials is None:
            credentials = find_credentials(
                reference.registry, reference.repository, [auth_file] if auth_file else None
            )
        self._credentials = credentials
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=8,
            cert_reqs="CERT_REQUIRED" if tls_verify else "CERT_NONE",
            ca_certs=ca_file or certifi.where(),
            timeout=urllib3.Timeout(connect=min(timeout, 15.0), read=timeout),
            retries=False,
        )
        if not tls_verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._plain_http = plain_http
        self._base: str | None = None
        self._base_lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}

    # -- where and who -------------------------------------------------------------------------

    @property
    def base(self) -> str:
        """``https://host`` (or ``http://`` when asked, or for a local registry without TLS),
        found by asking ``/v2/`` once."""
        with self._base_lock:  # the threads of a push share the client
            if self._base is None:
                self._base = self._find_base()
            return self._base

    def _find_base(self) -> str:
        host = self.reference.endpoint
        if self._plain_http:
            return f"http://{host}"
        try:
            self._ping(f"https://{host}")
        except RegistryError as exc:
            # A server that answers TLS with plain HTTP fails the handshake; one whose
            # certificate is not trusted does speak TLS, and must not get plain HTTP.
            local_without_tls = (
                self._plain_http is None
                and self.reference.is_local
                and isinstance(exc.__cause__, SSLError)
                and "CERTIFICATE_VERIFY_FAILED" not in str(exc.__cause__)
            )
            if not local_without_tls:
                raise
            return f"http://{host}"  # a registry on this machine without TLS, as c/image allows
        return f"https://{host}"

    def _ping(self, base: str) -> None:
        response = self._send("GET", f"{base}/v2/", {}, None, preload=True)
        if response.status == 401:
            self._challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))

    def _authorization(self, scope: str) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._credentials.basic() if self._credentials else None
        if challenge.scheme != "bearer":
            return None
        token, expires = self._tokens.get(scope, ("", 0.0))
        if not token or time.monotonic() > expires - 10:
            token, lifetime = self._fetch_token(challenge, scope)
            self._tokens[scope] = (token, time.monotonic() + lifetime)
        return f"Bearer {token}"

    def _fetch_token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        realm = challenge.parameters.get("realm")
        if not realm:
            raise RegistryError(f"{self.reference.registry}: a bearer challenge without a realm")
        query: dict[str, str] = {"scope": scope}
        if challenge.parameters.get("service"):
            query["service"] = challenge.parameters["service"]
        headers = {"User-Agent": _USER_AGENT}
        if self._credentials:
            headers["Authorization"] = self._credentials.basic()
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        try:
            response = self._pool.request("GET", url, headers=headers, preload_content=True)
        except TransportError as exc:
            raise RegistryError(f"cannot reach the token server {realm}: {exc}") from exc
        if response.status != 200:
            raise RegistryError(
                f"the token server {realm} refused a token for {scope} "
                f"(HTTP {response.status}){self._credentials_hint(response.status)}",
                response.status,
            )
        try:
            answer = json.loads(response.data)
            token = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise RegistryError(f"the token server {realm} answered no token") from None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token server {realm} answered no token")
        return token, lifetime

    def _credentials_hint(self, status: int) -> str:
        if status == 401 and self._credentials is None:
            return ": no credentials given (credentials=, --creds or an auth file)"
        if status in (401, 403):
            return ": the credentials given are refused for it"
        return ""

    # -- requests ------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        preload: bool,
    ) -> urllib3.BaseHTTPResponse:
        """One request, retried on broken connections and on 429/5xx."""
        for attempt in range(_ATTEMPTS):
            try:
                response = self._pool.request(
                    method,
                    url,
                    body=body,
                    headers={"User-Agent": _USER_AGENT, **headers},
                    preload_content=preload,
                    decode_content=False,
                    redirect=True,
                )
            except TransportError as exc:
                if attempt == _ATTEMPTS - 1 or isinstance(exc, SSLError):
                    raise RegistryError(
                        f"cannot reach {self.reference.registry} ({method} {url}): {exc}"
                    ) from exc
                _backoff(attempt)
                continue
            if response.status in _RETRIED_STATUSES and attempt < _ATTEMPTS - 1:
                retry_after = response.headers.get("Retry-After")
                response.drain_conn()
                response.release_conn()
                _backoff(attempt, retry_after)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        scope: str = "pull",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        ok: Iterable[int] = (200,),
        preload: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        """``method`` on ``path`` (below the base, or a full URL a registry gave), with the
        authorization ``scope`` needs (``pull`` or ``pull,push`` on this repository); raises
        RegistryError naming ``what`` unless the status is one of ``ok``."""
        url = path if path.startswith(("http://", "https://")) else urljoin(self.base, path)
        full_scope = f"repository:{self.repository}:{scope}"
        for attempt in range(2):
            sent = dict(headers or {})
            authorization = self._authorization(full_scope)
            if authorization:
                sent["Authorization"] = authorization
            response = self._send(method, url, sent, body, preload=preload)
            if response.status == 401 and attempt == 0:
                challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
                response.drain_conn()
                response.release_conn()
                if challenge.scheme in ("basic", "bearer"):
                    renewed = challenge != self._challenge or challenge.scheme == "bearer"
                    self._challenge = challenge
                    self._tokens.pop(full_scope, None)
                    if renewed:
                        continue
                break
            if response.status in tuple(ok):
                return response
            detail = _error_detail(response)
            raise RegistryError(
                f"{self.reference.registry}/{self.repository}: {what}: HTTP {response.status}"
                f"{detail}{self._credentials_hint(response.status)}",
                response.status,
            )
        raise RegistryError(
            f"{self.reference.registry}/{self.repository}: {what}: HTTP 401 unauthorized"
            f"{self._credentials_hint(401)}",
            401,
        )


def _error_detail(response: urllib3.BaseHTTPResponse) -> str:
    """The registry's own words: ``{"errors":[{"code","message"}]}``."""
    try:
        data = response.data if response.data is not None else response.read(65536)
        errors = json.loads(data).get("errors") or []
        words = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
        return f" ({words})" if words else ""
    except Exception:
        return ""
    finally:
        response.release_conn()


class BlobReader(io.RawIOBase):
    """A registry blob as a stream; a connection that breaks is resumed where it broke."""

    def __init__(self, client: RegistryClient, digest: str, size: int | None) -> None:
        self._client = client
        self._digest = digest
        self._size = size
        self._offset = 0
        self._response: urllib3.BaseHTTPResponse | None = None
        self._resumes = 0

    def readable(self) -> bool:
        return True

    def _open(self) -> urllib3.BaseHTTPResponse:
        headers = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        response = self._client.request(
            "GET",
            f"/v2/{self._client.repository}/blobs/{self._digest}",
            what=f"blob {self._digest}",
            headers=headers,
            ok=(200, 206),
            preload=False,
        )
        if self._offset and response.status == 200:
            # The server ignored the range: skip what was read already.
            left = self._offset
            while left:
                chunk = response.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
        return response

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._response is None:
                self._response = self._open()
            try:
                count = self._response.readinto(buffer)
            except (TransportError, OSError) as exc:
                self._broken(exc)
                continue
            if count == 0 and self._size is not None and self._offset < self._size:
                self._broken(EOFError(f"the body ended at byte {self._offset} of {self._size}"))
                continue
            self._offset += count
            return count

    def _broken(self, cause: BaseException) -> None:
        if self._response is not None:
            self._response.release_conn()
            self._response = None
        self._resumes += 1
        if self._resumes > _RESUMES:
            raise RegistryError(
                f"{self._client.reference.registry}/{self._client.repository}: blob "
                f"{self._digest}: the connection broke {self._resumes} times "
                f"(last at byte {self._offset}): {cause}"
            ) from cause
        _backoff(min(self._resumes - 1, 3))

    def close(self) -> None:
        if self._response is not None:
            self._response.release_conn()
            self._response = None
        super().close()
