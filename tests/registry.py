"""OCI registries for the pull and push tests (issue 17): Debian's ``docker-registry``
(distribution 2.8.2) on 127.0.0.1, each with its own config and storage below the test's
directory, in three kinds:

- ``plain``: plain HTTP, anyone may pull and push;
- ``basic``: TLS with a certificate of a CA made for the test, htpasswd (bcrypt) users;
- ``token``: plain HTTP, bearer tokens from a :class:`TokenServer` this module runs (JWTs signed
  RS256 by ``openssl dgst`` with a key whose certificate the registry trusts, sent with ``x5c``).

Beside them: :class:`FaultProxy`, an HTTP proxy that cuts a response after N bytes of its body
(to test resuming), corrupts bodies or runs a callback (to stop the registry mid-pull), and
records every request; :meth:`Registry.corrupt_blob` overwrites a blob in the registry's own
storage; :meth:`Registry.push_layout` uploads an OCI layout's image or index with the plain
registry API (nothing of layerstore's), and :func:`skopeo` runs skopeo on private settings.

Tests use the ``registries`` fixture (import ``registries_fixture`` from here): ``registries()``
or ``registries("basic")`` starts one; every registry, token server and proxy is stopped in
teardown.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REGISTRY = "/usr/bin/docker-registry"
MISSING_REGISTRY = "apt-get install docker-registry (distribution 2.8)"
SERVICE = "layerstore-test-registry"
ISSUER = "layerstore-test-issuer"
USER, PASSWORD = "tester", "s3cret-passw0rd"
START_TIMEOUT = 30.0
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _openssl(*arguments: str, data: bytes | None = None) -> bytes:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl missing: apt-get install openssl")
    completed = subprocess.run(
        [openssl, *arguments], input=data, capture_output=True, timeout=60, check=False
    )
    if completed.returncode != 0:
        raise AssertionError(f"openssl {' '.join(arguments)}: {completed.stderr.decode()}")
    return completed.stdout


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- certificates and passwords --------------------------------------------------------------


@dataclass
class Certificates:
    """A CA and a server certificate for 127.0.0.1 and localhost it signed, made by openssl."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    cert_dir: Path  # a containers-style directory (ca.crt) for skopeo's --cert-dir

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca = directory / "ca.key", directory / "ca.pem"
        key, request, cert = (
            directory / "server.key",
            directory / "server.csr",
            directory / "server.pem",
        )
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
                 "-subj", "/CN=layerstore test CA", "-keyout", str(ca_key), "-out", str(ca),
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-subj", "/CN=127.0.0.1",
                 "-keyout", str(key), "-out", str(request))  # fmt: skip
        extensions = directory / "server.ext"
        extensions.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(extensions),
                 "-out", str(cert))  # fmt: skip
        cert_dir = directory / "certs.d"
        cert_dir.mkdir()
        shutil.copyfile(ca, cert_dir / "ca.crt")
        return cls(ca, cert, key, cert_dir)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for distribution's htpasswd (it reads $2a$, $2b$ and $2y$): the
    ``bcrypt`` package when installed, else libxcrypt through Python 3.11's ``crypt``."""
    try:
        import bcrypt  # type: ignore[import-not-found]

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())
    except ImportError:
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    except (ImportError, AttributeError, OSError):
        hashed = None
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("no bcrypt for the registry's htpasswd: pip install bcrypt")
    return hashed


# -- the token server ------------------------------------------------------------------------


@dataclass
class TokenRequest:
    user: str | None  # who the credentials named; None: anonymous
    scopes: list[str]
    service: str | None
    granted: list[dict[str, Any]]
    refused: bool = False  # wrong credentials: answered 401


class TokenServer:
    """Docker's token protocol, as far as distribution's ``token`` auth needs: ``GET
    /token?service=S&scope=repository:NAME:pull,push`` with optional basic credentials answers a
    JWT granting the scopes asked for to a known user, nothing to anyone else (the registry
    then answers 401), and 401 to wrong credentials."""

    def __init__(self, directory: Path, users: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.key_file, self.cert_file = directory / "token.key", directory / "token.pem"
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
                 "-subj", "/CN=layerstore test token signer", "-keyout", str(self.key_file),
                 "-out", str(self.cert_file))  # fmt: skip
        der = _openssl("x509", "-in", str(self.cert_file), "-outform", "DER")
        self.x5c = [base64.b64encode(der).decode()]
        self.users = dict(users)
        self.requests: list[TokenRequest] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._answer(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [scope for value in query.get("scope", []) for scope in value.split(" ")]
        service = query.get("service", [None])[0]
        user: str | None = None
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
                handler.send_response(401)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
                with self.lock:
                    self.requests.append(TokenRequest(name, scopes, service, [], refused=True))
                return
            user = name
        granted = self.access(scopes) if user is not None else []
        token = self.token(granted, subject=user or "")
        with self.lock:
            self.requests.append(TokenRequest(user, scopes, service, granted))
        body = json.dumps(
            {"token": token, "access_token": token, "expires_in": 600,
             "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        ).encode()  # fmt: skip
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def access(scopes: list[str]) -> list[dict[str, Any]]:
        granted = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name:
                granted.append({"type": kind, "name": name, "actions": actions.split(",")})
        return granted

    def token(self, access: list[dict[str, Any]], subject: str = USER) -> str:
        """A JWT the registry accepts, granting ``access``."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(),
                  "access": access}  # fmt: skip
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = _openssl("dgst", "-sha256", "-sign", str(self.key_file),
                             data=signing_input.encode())  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


# -- the registry ----------------------------------------------------------------------------


@dataclass
class Registry:
    """One running ``docker-registry``; :meth:`stop` ends it (the fixture does, at the latest)."""

    kind: str
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path
    certificates: Certificates | None = None
    token_server: TokenServer | None = None
    credentials: tuple[str, str] | None = None
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.directory / "storage"

    @property
    def ca_file(self) -> str | None:
        return str(self.certificates.ca_file) if self.certificates else None

    @property
    def tls(self) -> bool:
        return self.certificates is not None

    def reference(self, repository: str, tag: str = "latest") -> str:
        separator = "@" if tag.startswith("sha256:") else ":"
        return f"{self.host}/{repository}{separator}{tag}"

    def auth_options(self) -> dict[str, Any]:
        """The keyword arguments of ``store.pull``/``store.push`` that reach this registry."""
        options: dict[str, Any] = {}
        if self.credentials:
            options["credentials"] = self.credentials
        if self.certificates:
            options["ca_file"] = self.ca_file
        return options

    def auth_file(self, path: Path) -> Path:
        """A containers-auth.json (``--authfile``) holding this registry's credentials."""
        assert self.credentials is not None
        auth = base64.b64encode(":".join(self.credentials).encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    # -- the registry API, spoken directly (the tests' own client, as an administrator) -----

    def _connection(self) -> http.client.HTTPConnection:
        if self.certificates:
            context = ssl.create_default_context(cafile=str(self.certificates.ca_file))
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                               context=context)  # fmt: skip
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def _authorization(self, path: str, method: str) -> dict[str, str]:
        if self.kind == "basic" and self.credentials:
            raw = base64.b64encode(":".join(self.credentials).encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        if self.kind == "token" and self.token_server:
            parts = path.split("/")
            if len(parts) < 4 or parts[1] != "v2":
                return {}
            # /v2/<name>/{manifests,blobs,tags}/...: the repository is what lies between.
            for marker in ("manifests", "blobs", "tags"):
                if marker in parts[2:]:
                    name = "/".join(parts[2 : parts.index(marker, 2)])
                    break
            else:
                return {}
            if name not in self._tokens:
                access = [{"type": "repository", "name": name, "actions": ["pull", "push"]}]
                self._tokens[name] = self.token_server.token(access)
            return {"Authorization": f"Bearer {self._tokens[name]}"}
        return {}

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        anonymous: bool = False,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """``method path`` on the registry: (status, headers, body)."""
        connection = self._connection()
        try:
            sent = dict(headers or {})
            if not anonymous:
                sent.update(self._authorization(urllib.parse.urlsplit(path).path, method))
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def ping(self, *, anonymous: bool = True) -> int:
        return self.request("GET", "/v2/", anonymous=anonymous)[0]

    def upload_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        status, _, _ = self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, body = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        assert status == 202, (status, body)
        location = urllib.parse.urlsplit(headers["Location"])
        query = location.query + ("&" if location.query else "") + f"digest={digest}"
        status, _, body = self.request(
            "PUT", f"{location.path}?{query}", body=data,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert status == 201, (status, body)
        return digest

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        status, headers, body = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", body=data,
            headers={"Content-Type": media_type},
        )  # fmt: skip
        assert status == 201, (status, body)
        assert headers["Docker-Content-Digest"] == sha256(data)
        return sha256(data)

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(manifest bytes, media type, Docker-Content-Digest) as the registry serves them."""
        status, headers, body = self.request(
            "GET", f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )  # fmt: skip
        assert status == 200, (status, body)
        return body, headers["Content-Type"], headers["Docker-Content-Digest"]

    def blob(self, repository: str, digest: str) -> bytes:
        status, _, body = self.request("GET", f"/v2/{repository}/blobs/{digest}")
        assert status == 200, (status, body)
        return body

    def tags(self, repository: str) -> list[str]:
        status, _, body = self.request("GET", f"/v2/{repository}/tags/list")
        if status == 404:
            return []
        assert status == 200, (status, body)
        return list(json.loads(body).get("tags") or [])

    def push_layout(self, layout: Path, repository: str, tag: str, ref: str | None = None) -> str:
        """Upload the image or index that ``ref`` (default: the only entry) names in the OCI
        layout ``layout`` as ``repository:tag``, with everything it refers to; its digest."""
        index = json.loads((layout / "index.json").read_text())
        entries = [
            entry for entry in index["manifests"]
            if ref is None
            or entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref
        ]  # fmt: skip
        assert len(entries) == 1, index
        return self._push_manifest(layout, repository, entries[0], tag)

    def _push_manifest(
        self, layout: Path, repository: str, descriptor: dict[str, Any], tag: str | None
    ) -> str:
        data = (layout / "blobs" / "sha256" / descriptor["digest"][7:]).read_bytes()
        document = json.loads(data)
        media_type = descriptor.get("mediaType") or document.get("mediaType")
        if "manifests" in document:
            for child in document["manifests"]:
                self._push_manifest(layout, repository, child, None)
        else:
            for blob in [document["config"], *document["layers"]]:
                self.upload_blob(
                    repository, (layout / "blobs" / "sha256" / blob["digest"][7:]).read_bytes()
                )
        return self.put_manifest(repository, tag or descriptor["digest"], data, media_type)

    def blob_file(self, digest: str) -> Path:
        """Where the registry's filesystem storage keeps the blob ``digest``."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def corrupt_blob(self, digest: str) -> bytes:
        """Make the registry serve other bytes (of the same length) for ``digest``: the byte
        in the middle of its data file is changed. The new contents."""
        path = self.blob_file(digest)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        assert sha256(bytes(data)) != digest
        return bytes(data)


def _config(kind: str, directory: Path, port: int, certificates: Certificates | None,
            token_server: TokenServer | None) -> str:  # fmt: skip
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {directory / 'storage'}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {os.urandom(16).hex()}",
    ]
    if certificates:
        lines += ["  tls:", f"    certificate: {certificates.cert_file}",
                  f"    key: {certificates.key_file}"]  # fmt: skip
    if kind == "basic":
        lines += ["auth:", "  htpasswd:", "    realm: layerstore-tests",
                  f"    path: {directory / 'htpasswd'}"]  # fmt: skip
    if kind == "token":
        assert token_server is not None
        lines += ["auth:", "  token:", f"    realm: {token_server.realm}",
                  f"    service: {SERVICE}", f"    issuer: {ISSUER}",
                  f"    rootcertbundle: {token_server.cert_file}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _wait_until_up(registry: Registry) -> bool:
    """True once ``/v2/`` answers (200 or 401); False if the registry exited."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not registry.running():
            return False
        try:
            if registry.ping() in (200, 401):
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)
    registry.stop()
    raise AssertionError(f"docker-registry did not answer in {START_TIMEOUT} s:\n{registry.log()}")


def start_registry(directory: Path, kind: str = "plain") -> Registry:
    """A ``docker-registry`` of ``kind`` (plain, basic, token) on a free port, its config and
    storage below ``directory``; the caller stops it (the ``registries`` fixture does)."""
    if not os.access(REGISTRY, os.X_OK):
        pytest.skip(f"{REGISTRY} missing: {MISSING_REGISTRY}")
    assert kind in ("plain", "basic", "token"), kind
    directory.mkdir(parents=True)
    (directory / "storage").mkdir()
    certificates = Certificates.make(directory / "tls") if kind == "basic" else None
    token_server = TokenServer(directory / "token", {USER: PASSWORD}) if kind == "token" else None
    credentials = (USER, PASSWORD) if kind in ("basic", "token") else None
    if kind == "basic":
        (directory / "htpasswd").write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    # Only what the registry needs: a REGISTRY_* variable would override the config.
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(directory)}
    for attempt in range(5):
        port = free_port()
        config = directory / "config.yml"
        config.write_text(_config(kind, directory, port, certificates, token_server))
        log_file = directory / f"registry-{attempt}.log"
        with open(log_file, "wb") as log:
            process = subprocess.Popen(
                [REGISTRY, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=environment, cwd=directory,
            )  # fmt: skip
        registry = Registry(kind, directory, port, process, log_file, certificates,
                            token_server, credentials)  # fmt: skip
        try:
            if _wait_until_up(registry):
                return registry
        except BaseException:
            registry.stop()
            if token_server:
                token_server.close()
            raise
        registry.stop()  # it exited: most likely the port was taken meanwhile
    if token_server:
        token_server.close()
    raise AssertionError(f"docker-registry would not start:\n{registry.log()}")


# -- a proxy that breaks things --------------------------------------------------------------


@dataclass
class Cut:
    """Cut the response to the next request whose path contains ``path`` after ``after``
    bytes of its body, ``times`` times. With ``vanish`` the proxy goes dark (:meth:`FaultProxy.
    go_dark`) before the client can see the cut; then ``then`` runs (if given)."""

    path: str
    after: int
    times: int = 1
    vanish: bool = False
    then: Callable[[], None] | None = None


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    status: int | None = None
    sent: int = 0  # body bytes passed on to the client
    cut: bool = False


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
               "trailer", "upgrade"}  # fmt: skip


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of a plain registry: ``proxy.host`` is what
    clients use instead of ``registry.host``. It passes requests (with their Host header, so the
    registry's Location headers point back at the proxy) and responses on, and can

    - :meth:`cut` a response after N bytes of its body (the connection is closed; the client
      saw a Content-Length larger than what came),
    - :meth:`corrupt` the body of every response whose path contains a string,
    - :meth:`go_dark`: stop listening and drop every connection (as a stopped registry).

    ``proxy.seen`` records every request, with its Range header and how it ended."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cuts: list[Cut] = []
        self.corruptions: list[str] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.dark = False
        self._sockets: set[socket.socket] = set()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.upstream: http.client.HTTPConnection | None = None
                with proxy.lock:
                    proxy._sockets.add(self.connection)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with proxy.lock:
                        proxy._sockets.discard(self.connection)
                    if self.upstream is not None:
                        self.upstream.close()

            def do_GET(self) -> None:
                proxy._forward(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self, path: str, after: int, times: int = 1, *, vanish: bool = False,
            then: Callable[[], None] | None = None) -> None:  # fmt: skip
        with self.lock:
            self.cuts.append(Cut(path, after, times, vanish, then))

    def corrupt(self, path: str) -> None:
        with self.lock:
            self.corruptions.append(path)

    def requests(self, path: str = "", method: str | None = None) -> list[Seen]:
        with self.lock:
            return [seen for seen in self.seen
                    if path in seen.path and (method is None or seen.method == method)]  # fmt: skip

    def _take_cut(self, path: str) -> Cut | None:
        with self.lock:
            for cut in self.cuts:
                if cut.path in path and cut.times > 0:
                    cut.times -= 1
                    return cut
        return None

    @staticmethod
    def _request_body(handler: http.server.BaseHTTPRequestHandler) -> bytes | None:
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
            return b"".join(chunks)
        length = handler.headers.get("Content-Length")
        return handler.rfile.read(int(length)) if length else None

    def _forward(self, handler: Any) -> None:
        if self.dark:
            handler.close_connection = True
            handler.connection.close()
            return
        headers = {
            key: value
            for key, value in handler.headers.items()
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length"
        }
        seen = Seen(handler.command, handler.path,
                    {key.lower(): value for key, value in handler.headers.items()})  # fmt: skip
        with self.lock:
            self.seen.append(seen)
        body = self._request_body(handler)
        try:
            if handler.upstream is None:
                handler.upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port,
                                                              timeout=60)  # fmt: skip
            handler.upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = handler.upstream.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            # The registry is gone: so is the connection, as if the client had met it.
            handler.close_connection = True
            if handler.upstream is not None:
                handler.upstream.close()
                handler.upstream = None
            return
        seen.status = response.status
        if handler.command != "HEAD" and any(path in handler.path for path in self.corruptions):
            if data:
                changed = bytearray(data)
                changed[len(changed) // 2] ^= 0xFF
                data = bytes(changed)
        handler.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                handler.send_header(key, value)
        if handler.command == "HEAD":
            handler.send_header("Content-Length", response.getheader("Content-Length", "0"))
            handler.end_headers()
            return
        handler.send_header("Content-Length", str(len(data)))
        cut = self._take_cut(handler.path) if response.status in (200, 206) else None
        handler.end_headers()
        if cut is None or cut.after >= len(data):
            handler.wfile.write(data)
            seen.sent = len(data)
            return
        if cut.vanish:
            self.go_dark(keep=handler.connection)
        handler.wfile.write(data[: cut.after])
        handler.wfile.flush()
        seen.sent, seen.cut = cut.after, True
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if cut.then is not None:
            cut.then()

    def go_dark(self, keep: socket.socket | None = None) -> None:
        """Stop listening and close every connection (but ``keep``): the registry has vanished.
        Requests that still come are dropped unanswered."""
        if self.dark:
            return
        self.dark = True

        def stop_listening() -> None:
            self.httpd.shutdown()
            self.httpd.server_close()

        threading.Thread(target=stop_listening, daemon=True).start()
        with self.lock:
            sockets = [connection for connection in self._sockets if connection is not keep]
        for connection in sockets:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.go_dark()
        self.thread.join(timeout=10)
        self.httpd.server_close()


# -- the fixtures ----------------------------------------------------------------------------


class Registries:
    """What the ``registries`` fixture gives: call it to start a registry; :meth:`proxy` puts a
    :class:`FaultProxy` in front of one. Everything is stopped in teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Registry] = []
        self.proxies: list[FaultProxy] = []

    def __call__(self, kind: str = "plain") -> Registry:
        registry = start_registry(self.directory / f"registry-{len(self.started)}-{kind}", kind)
        self.started.append(registry)
        return registry

    def proxy(self, registry: Registry) -> FaultProxy:
        assert not registry.tls, "the fault proxy speaks plain HTTP"
        made = FaultProxy(registry.port)
        self.proxies.append(made)
        return made

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        for registry in self.started:
            registry.stop()
            if registry.token_server:
                registry.token_server.close()


@pytest.fixture(name="registries")
def registries_fixture(tmp_path: Path) -> Iterator[Registries]:
    """Starts registries on demand (``registries("plain"|"basic"|"token")``), below
    ``tmp_path/registries``; all stopped afterwards."""
    made = Registries(tmp_path / "registries")
    try:
        yield made
    finally:
        made.close()


# -- skopeo on private settings --------------------------------------------------------------


def skopeo(directory: Path, *arguments: str) -> str:
    """skopeo with its own policy, registries.conf, HOME, TMPDIR and XDG directories below
    ``directory``, in a mount namespace with a tmpfs on /var/lib (as tests/interop/clients.py
    runs it: containers/image writes its blob info cache to /var/lib/containers/cache as root)."""
    if shutil.which("skopeo") is None or shutil.which("unshare") is None:
        pytest.skip("skopeo missing: apt-get install skopeo")
    for name in ("home", "tmp", "xdg", "conf"):
        (directory / name).mkdir(parents=True, exist_ok=True)
    policy, registries_conf = (
        directory / "conf" / "policy.json",
        directory / "conf" / "registries.conf",
    )
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    registries_conf.write_text("unqualified-search-registries = []\n")
    environment = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(directory / "home"),
        "TMPDIR": str(directory / "tmp"),
        "XDG_RUNTIME_DIR": str(directory / "xdg"),
        "XDG_CONFIG_HOME": str(directory / "home" / ".config"),
        "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
    }
    script = 'mount -t tmpfs -o mode=0755,size=64m layerstore-tests /var/lib && exec "$@"'
    command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
               "isolated", "skopeo", "--policy", str(policy), "--registries-conf",
               str(registries_conf), "--tmpdir", str(directory / "tmp"), *arguments]  # fmt: skip
    completed = subprocess.run(command, env=environment, capture_output=True, text=True,
                               timeout=120, check=False)  # fmt: skip
    if completed.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(arguments)} failed:\n{completed.stderr}")
    return completed.stdout
