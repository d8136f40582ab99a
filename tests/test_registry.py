"""``store.pull`` and ``store.push`` against a real registry (issue 17): distribution's
``docker-registry`` on 127.0.0.1, plain, with basic auth over TLS and with token auth, and a
proxy in front of it that cuts connections, corrupts bodies or vanishes (tests/registry.py).

Images get into a registry either by ``store.push`` or, where the test is about pulling, by
:meth:`Registry.push_layout`, which speaks the registry API itself (nothing of layerstore's).
Every test with a store runs for both drivers and both engines.
"""

from __future__ import annotations

import http.client
import http.server
import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layerstore import InvalidImage, LayerStore, chain_layer_id
from layerstore.cli import main
from layerstore.engines import Engine
from layerstore.errors import LayerStoreError, RegistryError
from layerstore.layer import Compression

from .images import ImageParts, Layout, image_diffs, oci_layout
from .registry import PASSWORD, USER, Registries, Registry, registries_fixture, sha256
from .tarballs import Entry, build_tar, compress

__all__ = ["registries_fixture"]  # the fixture, imported for pytest

REPOSITORY = "layerstore/test"
LOADED = "localhost/pushed:1"
LAYER_MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


# -- images and stores -------------------------------------------------------------------------


def three_tars() -> list[bytes]:
    """Three small layers, each changing the one below (as images.layer_tars(), but the same
    bytes every time)."""
    data = random.Random(3).randbytes(64 << 10)
    return [
        build_tar([Entry(b"etc", "dir", mode=0o755), Entry(b"etc/os", "file", data=b"one\n"),
                   Entry(b"etc/gone", "file", data=b"soon removed")]),
        build_tar([Entry(b"etc", "dir", mode=0o755), Entry(b"etc/os", "file", data=b"two\n"),
                   Entry(b"etc/.wh.gone", "file")]),
        build_tar([Entry(b"srv", "dir", mode=0o755), Entry(b"srv/data", "file", data=data)]),
    ]  # fmt: skip


def parts(architecture: str = "amd64") -> ImageParts:
    """three_tars() as a gzip, a zstd and an uncompressed blob."""
    tars = three_tars()
    kinds = [Compression.GZIP, Compression.ZSTD, Compression.NONE]
    return ImageParts(tars, [compress(tar, kind) for tar, kind in zip(tars, kinds, strict=True)],
                      architecture=architecture)  # fmt: skip


def big_parts() -> ImageParts:
    """Two layers of incompressible data (a few hundred KiB, the same bytes every run), gzip."""
    generator = random.Random(17)
    tars = [
        build_tar([Entry(b"data", "dir", mode=0o755),
                   Entry(b"data/%d" % number, "file", data=generator.randbytes(size))])
        for number, size in enumerate((300 << 10, 700 << 10))
    ]  # fmt: skip
    return ImageParts(tars, [compress(tar, Compression.GZIP) for tar in tars])


def chain_ids(diff_ids: list[str]) -> list[str]:
    ids, parent = [], ""
    for diff_id in diff_ids:
        parent = chain_layer_id(parent, diff_id)
        ids.append(parent)
    return ids


def config_id(image: ImageParts) -> str:
    return sha256(image.config())[7:]


def assert_pulled(store: LayerStore, reference: str, image: ImageParts) -> None:
    """``reference`` in ``store`` is ``image``: its id, its layers' ids, DiffIDs and bytes."""
    found = store.image(reference)
    assert found.id == config_id(image)
    layers = store.image_layers(reference)
    assert [layer.id for layer in layers] == chain_ids(image.diff_ids)
    assert [layer.uncompressed_digest for layer in layers] == image.diff_ids
    assert image_diffs(store, reference) == image.tars
    assert found.layer == layers[-1].id
    assert store.check(contents=True) == []


def assert_nothing_left(store: LayerStore) -> None:
    """A failed pull left no image, no layer and no staging behind."""
    assert store.images() == []
    assert store.layers() == []
    assert store.check(contents=True) == []
    staging = Path(store.root) / store.driver.name / "layerstore-staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def layout_of(tmp_path: Path, image: ImageParts, name: str = "layout") -> Path:
    return oci_layout(tmp_path / name, image, "ref")


def close_store(store: LayerStore) -> None:
    for layer in store.layers():
        if store.mounted(layer.id):
            store.unmount(layer.id, force=True)
    store.close()


@pytest.fixture
def other_store(tmp_path: Path, driver_name: str, engine: Engine) -> Iterator[LayerStore]:
    """A second, empty store beside ``store`` (the one pulled into)."""
    opened = LayerStore(tmp_path / "other", run_root=tmp_path / "other-run", driver=driver_name,
                        engine=engine)  # fmt: skip
    try:
        yield opened
    finally:
        close_store(opened)


@pytest.fixture
def plain(registries: Registries) -> Registry:
    return registries("plain")


# -- the fixtures themselves -------------------------------------------------------------------


def test_fixture_registries_answer(registries: Registries, tmp_path: Path) -> None:
    """Each registry kind starts, answers /v2/ as it should and stores what it is given below
    the test's directory; the proxy passes requests on."""
    plain = registries("plain")
    assert plain.ping() == 200
    basic = registries("basic")
    status, headers, _ = basic.request("GET", "/v2/", anonymous=True)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert basic.ping(anonymous=False) == 200
    untrusted = http.client.HTTPSConnection("127.0.0.1", basic.port, timeout=10)
    with pytest.raises(ssl.SSLError):  # TLS for real: without the test CA it is not trusted
        untrusted.request("GET", "/v2/")
    untrusted.close()
    token = registries("token")
    assert token.token_server is not None
    status, headers, _ = token.request("GET", "/v2/", anonymous=True)
    assert status == 401
    assert f'realm="{token.token_server.realm}"' in headers["WWW-Authenticate"]

    layout = layout_of(tmp_path, parts())
    for registry in (plain, basic, token):
        digest = registry.push_layout(layout, REPOSITORY, "1")
        manifest, media_type, served = registry.manifest(REPOSITORY, "1")
        assert served == digest == sha256(manifest)
        assert media_type == "application/vnd.oci.image.manifest.v1+json"
        assert registry.tags(REPOSITORY) == ["1"]
        config = json.loads(manifest)["config"]["digest"]
        assert registry.blob_file(config).read_bytes() == parts().config()
        assert registry.blob_file(config).is_relative_to(tmp_path)
    # Anonymous access to the protected ones is refused.
    assert basic.request("GET", f"/v2/{REPOSITORY}/tags/list", anonymous=True)[0] == 401
    assert token.request("GET", f"/v2/{REPOSITORY}/tags/list", anonymous=True)[0] == 401

    proxy = registries.proxy(plain)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    connection.request("GET", "/v2/")
    assert connection.getresponse().status == 200
    connection.close()
    assert [seen.path for seen in proxy.requests()] == ["/v2/"]


# -- push, then pull -----------------------------------------------------------------------------


def test_push_then_pull_is_the_same_image(
    store: LayerStore, other_store: LayerStore, plain: Registry, tmp_path: Path
) -> None:
    image = parts()
    loaded = store.load(f"oci:{layout_of(tmp_path, image)}:ref", names=[LOADED])
    reference = plain.reference(REPOSITORY, "1")
    digest = store.push(LOADED, reference)

    manifest_bytes, _, served = plain.manifest(REPOSITORY, "1")
    assert digest == served == sha256(manifest_bytes)
    manifest = json.loads(manifest_bytes)
    assert manifest["config"]["digest"] == f"sha256:{loaded.id}"
    assert plain.blob(REPOSITORY, manifest["config"]["digest"]) == image.config()
    assert len(manifest["layers"]) == 3
    assert store.images() == [store.image(LOADED)], "push changes nothing in the store"

    pulled = other_store.pull(reference)
    assert pulled.id == loaded.id
    assert pulled.names == (reference,)
    assert pulled == other_store.image(reference)
    assert_pulled(other_store, reference, image)
    assert [layer.id for layer in other_store.image_layers(reference)] == [
        layer.id for layer in store.image_layers(LOADED)
    ]
    assert image_diffs(other_store, reference) == image_diffs(store, LOADED)


def test_pull_by_digest_by_tag_and_with_the_default_tag(
    store: LayerStore, plain: Registry, tmp_path: Path
) -> None:
    image = parts()
    digest = plain.push_layout(layout_of(tmp_path, image), REPOSITORY, "latest")

    by_digest = store.pull(plain.reference(REPOSITORY, digest), names=["localhost/by-digest:1"])
    assert by_digest.id == config_id(image)
    assert by_digest.names == ("localhost/by-digest:1",)
    assert digest in by_digest.digests
    assert_pulled(store, "localhost/by-digest:1", image)

    # No tag: latest. The layers are there already: the same records, no new ones.
    layers_before = store.layers()
    untagged = store.pull(f"{plain.host}/{REPOSITORY}")
    assert untagged.id == by_digest.id
    assert f"{plain.host}/{REPOSITORY}:latest" in untagged.names
    assert set(store.image(untagged.id).names) == {
        "localhost/by-digest:1",
        f"{plain.host}/{REPOSITORY}:latest",
    }
    assert store.layers() == layers_before
    assert len(store.images()) == 1


def test_pull_picks_the_platform_from_an_index(
    store: LayerStore, plain: Registry, tmp_path: Path
) -> None:
    amd64 = parts("amd64")
    arm_tars = [*three_tars()[:2], build_tar([Entry(b"arm", "file", data=b"arm64 only\n")])]
    arm64 = ImageParts(arm_tars, [compress(tar, Compression.GZIP) for tar in arm_tars],
                       architecture="arm64")  # fmt: skip
    layout = Layout(tmp_path / "index")
    layout.add_index([amd64, arm64], "multi")
    layout.finish()
    index_digest = plain.push_layout(layout.directory, REPOSITORY, "multi")
    _, media_type, _ = plain.manifest(REPOSITORY, "multi")
    assert media_type == "application/vnd.oci.image.index.v1+json"
    reference = plain.reference(REPOSITORY, "multi")

    pulled = store.pull(reference, platform="linux/arm64", names=["localhost/arm:1"])
    assert pulled.id == config_id(arm64) != config_id(amd64)
    assert_pulled(store, "localhost/arm:1", arm64)
    assert store.image("localhost/arm:1").id == pulled.id

    other = store.pull(reference, platform="linux/amd64", names=["localhost/amd:1"])
    assert other.id == config_id(amd64)
    assert_pulled(store, "localhost/amd:1", amd64)
    # The two share their bottom two layers.
    assert len(store.layers()) == 4

    with pytest.raises(LayerStoreError, match="s390x"):
        store.pull(reference, platform="linux/s390x", names=["localhost/none:1"])
    assert {image.id for image in store.images()} == {pulled.id, other.id}
    assert len(store.layers()) == 4
    by_digest = store.pull(plain.reference(REPOSITORY, index_digest), platform="linux/arm64",
                           names=["localhost/arm:2"])  # fmt: skip
    assert by_digest.id == pulled.id


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_push_compresses_as_asked(
    store: LayerStore,
    other_store: LayerStore,
    plain: Registry,
    tmp_path: Path,
    compression: str,
) -> None:
    image = parts()
    loaded = store.load(f"oci:{layout_of(tmp_path, image)}:ref", names=[LOADED])
    reference = plain.reference(REPOSITORY, compression)
    digest = store.push(LOADED, reference, compression=compression)
    manifest_bytes, _, served = plain.manifest(REPOSITORY, compression)
    assert digest == served
    manifest = json.loads(manifest_bytes)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        LAYER_MEDIA_TYPES[compression]
    ] * 3
    magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}.get(compression)
    for layer, tar in zip(manifest["layers"], image.tars, strict=True):
        blob = plain.blob(REPOSITORY, layer["digest"])
        assert sha256(blob) == layer["digest"]
        assert len(blob) == layer["size"]
        assert blob.startswith(magic) if magic else blob == tar

    pulled = other_store.pull(reference)
    assert pulled.id == loaded.id
    assert_pulled(other_store, reference, image)


# -- authentication -----------------------------------------------------------------------------


def test_basic_auth_over_tls(store: LayerStore, registries: Registries, tmp_path: Path) -> None:
    basic = registries("basic")
    image = parts()
    basic.push_layout(layout_of(tmp_path, image), REPOSITORY, "1")
    reference = basic.reference(REPOSITORY, "1")
    # On 127.0.0.1 plain HTTP is tried only when TLS fails to start; this one speaks TLS, so
    # an untrusted certificate is an error, never a reason to fall back.
    tls = {"ca_file": basic.ca_file}

    with pytest.raises(RegistryError) as refused:
        store.pull(reference, **tls)
    assert refused.value.status == 401
    assert basic.host in str(refused.value)
    assert "401" in str(refused.value)
    with pytest.raises(RegistryError) as wrong:
        store.pull(reference, credentials=(USER, "wrong"), **tls)
    assert wrong.value.status == 401
    with pytest.raises(RegistryError) as untrusted:  # the test CA is no CA of the machine's
        store.pull(reference, credentials=(USER, PASSWORD))
    assert untrusted.value.status is None
    assert basic.host in str(untrusted.value)
    assert_nothing_left(store)

    pulled = store.pull(reference, credentials=(USER, PASSWORD), **tls)
    assert pulled.id == config_id(image)
    assert_pulled(store, reference, image)

    auth_file = basic.auth_file(tmp_path / "auth.json")
    again = store.pull(reference, auth_file=str(auth_file), names=["localhost/auth-file:1"],
                       **tls)  # fmt: skip
    assert again.id == config_id(image)
    unverified = store.pull(reference, credentials=(USER, PASSWORD), tls_verify=False,
                            names=["localhost/unverified:1"])  # fmt: skip
    assert unverified.id == config_id(image)
    assert len(store.images()) == 1

    # Push: refused without credentials, done with them.
    target = basic.reference(REPOSITORY, "pushed")
    with pytest.raises(RegistryError) as push_refused:
        store.push(again.id, target, **tls)
    assert push_refused.value.status == 401
    assert basic.tags(REPOSITORY) == ["1"]
    digest = store.push(again.id, target, **basic.auth_options())
    assert basic.manifest(REPOSITORY, "pushed")[2] == digest
    assert sorted(basic.tags(REPOSITORY)) == ["1", "pushed"]


def test_token_auth(store: LayerStore, registries: Registries, tmp_path: Path) -> None:
    token = registries("token")
    server = token.token_server
    assert server is not None
    image = parts()
    token.push_layout(layout_of(tmp_path, image), REPOSITORY, "1")
    reference = token.reference(REPOSITORY, "1")

    with pytest.raises(RegistryError) as refused:
        store.pull(reference)
    assert refused.value.status == 401
    assert token.host in str(refused.value)
    anonymous = [request for request in server.requests if request.user is None]
    assert anonymous, "the client asked the token server for an anonymous token"
    assert any(f"repository:{REPOSITORY}:pull" in request.scopes for request in anonymous)
    with pytest.raises(RegistryError) as wrong:
        store.pull(reference, credentials=(USER, "wrong"))
    assert wrong.value.status == 401
    assert_nothing_left(store)

    pulled = store.pull(reference, credentials=(USER, PASSWORD))
    assert_pulled(store, reference, image)
    granted = [
        request for request in server.requests if request.user == USER and not request.refused
    ]
    assert any(request.refused for request in server.requests), "the wrong password was sent"
    assert granted
    assert all(request.service == "layerstore-test-registry" for request in granted)
    assert any(grant["name"] == REPOSITORY and "pull" in grant["actions"]
               for request in granted for grant in request.granted)  # fmt: skip

    with pytest.raises(RegistryError) as push_refused:
        store.push(pulled.id, token.reference("other/repo", "1"))
    assert push_refused.value.status == 401
    digest = store.push(pulled.id, token.reference("other/repo", "1"),
                        credentials=(USER, PASSWORD))  # fmt: skip
    assert token.manifest("other/repo", "1")[2] == digest
    assert any("push" in grant["actions"] and grant["name"] == "other/repo"
               for request in server.requests for grant in request.granted)  # fmt: skip


# -- failures -----------------------------------------------------------------------------------


def test_a_missing_tag_is_404(store: LayerStore, plain: Registry, tmp_path: Path) -> None:
    plain.push_layout(layout_of(tmp_path, parts()), REPOSITORY, "1")
    for reference in (plain.reference(REPOSITORY, "missing"), plain.reference("no/such", "1")):
        with pytest.raises(RegistryError) as missing:
            store.pull(reference)
        assert missing.value.status == 404
        message = str(missing.value)
        assert plain.host in message
        assert "404" in message
        assert reference.rpartition(":")[2] in message
        assert isinstance(missing.value, LayerStoreError)
    assert_nothing_left(store)


def test_a_cut_connection_is_resumed(
    store: LayerStore, registries: Registries, plain: Registry, tmp_path: Path
) -> None:
    image = big_parts()
    plain.push_layout(layout_of(tmp_path, image), REPOSITORY, "big")
    manifest = json.loads(plain.manifest(REPOSITORY, "big")[0])
    proxy = registries.proxy(plain)
    generator = random.Random(1717)
    cuts: dict[str, list[int]] = {}
    for layer in manifest["layers"]:
        offsets = sorted(generator.randrange(1, layer["size"]) for _ in range(2))
        # The second cut falls into what the resumed request sends.
        cuts[layer["digest"]] = offsets
        proxy.cut(layer["digest"], after=offsets[0])
        proxy.cut(layer["digest"], after=max(1, offsets[1] - offsets[0]))

    reference = f"{proxy.host}/{REPOSITORY}:big"
    pulled = store.pull(reference)
    assert pulled.id == config_id(image)
    assert_pulled(store, reference, image)

    for layer in manifest["layers"]:
        digest = layer["digest"]
        seen = [request for request in proxy.requests(digest, "GET")]
        assert sum(request.cut for request in seen) == 2, seen
        assert not seen[-1].cut
        first_cut = seen[0]
        assert first_cut.cut
        # After a cut the client asks for the rest, not for everything again.
        resumed = [request.headers.get("range", "") for request in seen[1:]]
        assert all(value.startswith("bytes=") for value in resumed), resumed
        start = int(resumed[0].removeprefix("bytes=").partition("-")[0])
        assert 0 < start <= first_cut.sent
        assert sum(request.sent for request in seen) < 2 * layer["size"]


@pytest.mark.parametrize("which", ["config", "first layer", "last layer"])
def test_a_wrong_blob_fails_and_leaves_nothing(
    store: LayerStore, plain: Registry, tmp_path: Path, which: str
) -> None:
    image = parts()
    plain.push_layout(layout_of(tmp_path, image), REPOSITORY, "1")
    manifest = json.loads(plain.manifest(REPOSITORY, "1")[0])
    digest = {
        "config": manifest["config"]["digest"],
        "first layer": manifest["layers"][0]["digest"],
        "last layer": manifest["layers"][-1]["digest"],
    }[which]
    plain.corrupt_blob(digest)

    with pytest.raises((InvalidImage, RegistryError)) as failed:
        store.pull(plain.reference(REPOSITORY, "1"))
    assert digest.removeprefix("sha256:")[:12] in str(failed.value)
    assert_nothing_left(store)


def test_a_wrong_manifest_for_a_digest_fails(
    store: LayerStore, registries: Registries, plain: Registry, tmp_path: Path
) -> None:
    digest = plain.push_layout(layout_of(tmp_path, parts()), REPOSITORY, "1")
    proxy = registries.proxy(plain)
    proxy.corrupt("/manifests/")
    with pytest.raises((InvalidImage, RegistryError)) as failed:
        store.pull(f"{proxy.host}/{REPOSITORY}@{digest}")
    assert digest.removeprefix("sha256:")[:12] in str(failed.value)
    assert_nothing_left(store)


def test_the_registry_stopping_mid_pull_fails_cleanly(
    store: LayerStore, registries: Registries, plain: Registry, tmp_path: Path
) -> None:
    image = big_parts()
    plain.push_layout(layout_of(tmp_path, image), REPOSITORY, "big")
    manifest = json.loads(plain.manifest(REPOSITORY, "big")[0])
    big = manifest["layers"][-1]
    proxy = registries.proxy(plain)
    proxy.cut(big["digest"], after=big["size"] // 3, vanish=True, then=plain.stop)

    started = time.monotonic()
    with pytest.raises(RegistryError) as failed:
        store.pull(f"{proxy.host}/{REPOSITORY}:big")
    assert time.monotonic() - started < 120, "a vanished registry is given up on in time"
    assert failed.value.status is None
    assert proxy.host in str(failed.value)
    assert not plain.running()
    assert_nothing_left(store)


# -- the command --------------------------------------------------------------------------------


def test_the_cli_pushes_and_pulls(
    tmp_path: Path,
    driver_name: str,
    engine_name: str,
    registries: Registries,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain = registries("plain")
    image = parts()

    def flags(name: str) -> list[str]:
        return ["--root", str(tmp_path / name), "--run-root", str(tmp_path / f"{name}-run"),
                "--driver", driver_name, "--engine", engine_name]  # fmt: skip

    assert main([*flags("a"), "load", f"oci:{layout_of(tmp_path, image)}:ref",
                 "--name", LOADED]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == config_id(image)
    reference = plain.reference(REPOSITORY, "cli")
    assert main([*flags("a"), "push", LOADED, reference, "--compression", "zstd"]) == 0
    digest = capsys.readouterr().out.strip()
    manifest_bytes, _, served = plain.manifest(REPOSITORY, "cli")
    assert digest == served
    assert {layer["mediaType"] for layer in json.loads(manifest_bytes)["layers"]} == {
        LAYER_MEDIA_TYPES["zstd"]
    }

    assert main([*flags("b"), "pull", reference, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == config_id(image)
    assert shown["names"] == [reference]
    assert main([*flags("b"), "image", reference, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == chain_ids(image.diff_ids)
    assert main([*flags("b"), "pull", reference, "--name", "localhost/named:1"]) == 0
    capsys.readouterr()
    assert main([*flags("b"), "image", "localhost/named:1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == config_id(image)

    assert main([*flags("c"), "pull", plain.reference(REPOSITORY, "missing")]) == 1
    error = capsys.readouterr().err
    assert plain.host in error
    assert "404" in error
    with LayerStore(tmp_path / "c", run_root=tmp_path / "c-run", driver=driver_name) as empty:
        assert empty.images() == []
        assert empty.layers() == []


def test_the_cli_uses_credentials(
    tmp_path: Path,
    driver_name: str,
    engine_name: str,
    registries: Registries,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = registries("token")
    image = parts()
    token.push_layout(layout_of(tmp_path, image), REPOSITORY, "1")
    reference = token.reference(REPOSITORY, "1")
    flags = ["--root", str(tmp_path / "s"), "--run-root", str(tmp_path / "r"),
             "--driver", driver_name, "--engine", engine_name]  # fmt: skip

    assert main([*flags, "pull", reference]) == 1
    error = capsys.readouterr().err
    assert token.host in error
    assert "401" in error
    assert main([*flags, "pull", reference, "--creds", f"{USER}:{PASSWORD}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == config_id(image)
    auth_file = token.auth_file(tmp_path / "auth.json")
    target = token.reference(REPOSITORY, "again")
    assert main([*flags, "push", reference, target, "--authfile", str(auth_file)]) == 0
    assert capsys.readouterr().out.strip() == token.manifest(REPOSITORY, "again")[2]


# -- a registry that misbehaves on purpose -------------------------------------------------


class ScriptedRegistry(http.server.ThreadingHTTPServer):
    """Answers ``/v2/`` with 200 and each manifest request with the next status of
    ``statuses`` (the last one repeats), after ``delay`` seconds; counts the requests."""

    daemon_threads = True

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses = statuses
        self.delay = delay
        self.manifest_requests = 0
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedRegistry

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self._answer(200, b"{}")
            return
        registry = self.server
        status = registry.statuses[min(registry.manifest_requests, len(registry.statuses) - 1)]
        registry.manifest_requests += 1
        time.sleep(registry.delay)
        self._answer(status, b'{"errors":[{"code":"SCRIPTED","message":"as scripted"}]}')

    def _answer(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting: what the slow test wants


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedRegistry]]:
    servers: list[ScriptedRegistry] = []

    def start(statuses: list[int], delay: float = 0.0) -> ScriptedRegistry:
        server = ScriptedRegistry(statuses, delay)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_429_and_5xx_are_retried_before_the_answer_counts(
    store: LayerStore, scripted: Callable[..., ScriptedRegistry]
) -> None:
    registry = scripted([503, 429, 502, 404])
    with pytest.raises(RegistryError) as failed:
        store.pull(f"{registry.host}/retried/image:1")
    assert failed.value.status == 404
    assert registry.manifest_requests == 4
    assert "SCRIPTED as scripted" in str(failed.value)
    assert store.images() == []


def test_a_registry_that_stays_busy_fails_with_its_status(
    store: LayerStore, scripted: Callable[..., ScriptedRegistry]
) -> None:
    registry = scripted([503])
    with pytest.raises(RegistryError) as failed:
        store.pull(f"{registry.host}/busy/image:1")
    assert failed.value.status == 503
    assert registry.manifest_requests == 5  # every attempt, then the last answer counts


def test_a_slow_registry_times_out(
    store: LayerStore, scripted: Callable[..., ScriptedRegistry]
) -> None:
    registry = scripted([200], delay=3.0)
    started = time.monotonic()
    with pytest.raises(RegistryError) as failed:
        store.pull(f"{registry.host}/slow/image:1", timeout=0.3)
    assert failed.value.status is None
    assert "timed out" in str(failed.value).lower()
    assert time.monotonic() - started < 20
    assert store.images() == []


def test_a_pulled_image_pushed_again_mounts_or_skips_its_blobs(
    store: LayerStore, registries: Registries, plain: Registry, tmp_path: Path
) -> None:
    image = parts()
    plain.push_layout(layout_of(tmp_path, image), REPOSITORY, "1")
    proxy = registries.proxy(plain)
    pulled = store.pull(f"{proxy.host}/{REPOSITORY}:1")
    served, _, served_digest = plain.manifest(REPOSITORY, "1")

    # Another repository of the same registry: each layer is mounted from the one it came
    # from, the config and manifest are the image's own, so the digest stays.
    digest = store.push(pulled.id, f"{proxy.host}/layerstore/copy:1")
    assert digest == served_digest
    assert plain.manifest("layerstore/copy", "1")[0] == served
    mounts = [seen for seen in proxy.requests("/layerstore/copy/blobs/uploads/", "POST")
              if "mount=" in seen.path]  # fmt: skip
    assert len(mounts) == 3
    assert {seen.status for seen in mounts} == {201}
    assert proxy.requests("/layerstore/copy/", "PATCH") == []

    # The same repository again: the registry has every blob, nothing is uploaded.
    before = len(proxy.requests("", "POST"))
    assert store.push(pulled.id, f"{proxy.host}/{REPOSITORY}:2") == served_digest
    assert len(proxy.requests("", "POST")) == before
