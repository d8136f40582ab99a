"""Pull and push beside the real clients (issue 17): what skopeo pushed to a registry
(distribution's ``docker-registry``, tests/registry.py) layerstore pulls with the layer ids,
image id and records that ``skopeo copy docker://... containers-storage:`` gives, podman runs
what layerstore pulled, and skopeo reads what layerstore pushed.

Every test runs for both drivers and both engines on fresh private stores (see clients.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layerstore.engines import Engine

from ..images import ImageParts, Layout, image_diffs
from ..registry import Registries, Registry, registries_fixture
from .clients import (
    IMAGE,
    IMAGE_REF,
    MISSING_BUSYBOX,
    Clients,
    image_layers,
    sha256,
    small_tar,
    static_busybox,
)

__all__ = ["registries_fixture"]  # the fixture, imported for pytest

REPOSITORY = "interop/image"


@pytest.fixture
def fresh_clients(tmp_path: Path, driver_name: str) -> Iterator[Callable[[str], Clients]]:
    """More private client stores (below ``tmp_path/<name>``), each cleaned up afterwards."""
    made: list[Clients] = []

    def make(name: str) -> Clients:
        opened = Clients(tmp_path / name, driver_name)
        made.append(opened)
        return opened

    try:
        yield make
    finally:
        for opened in reversed(made):
            opened.cleanup()


@pytest.fixture
def registry(registries: Registries) -> Registry:
    return registries("plain")


def diff_ids() -> list[str]:
    return [sha256(tar) for tar, _ in image_layers()]


def records(clients: Clients, kind: str) -> list[dict[str, Any]]:
    """containers/storage's records of a kind, without the layers' creation times."""
    return [
        {key: value for key, value in record.items() if kind != "layers" or key != "created"}
        for record in clients._records(kind)
    ]


def skopeo_push(clients: Clients, layout: Path, ref: str, target: str, *options: str) -> None:
    clients.skopeo("copy", "--quiet", "--dest-tls-verify=false", *options, f"oci:{layout}:{ref}",
                   f"docker://{target}")  # fmt: skip


# -- skopeo pushes, layerstore pulls -------------------------------------------------------------


def test_layerstore_pulls_what_skopeo_pushed_as_skopeo_does(
    clients: Clients,
    oci_layout: Path,
    engine: Engine,
    registry: Registry,
    fresh_clients: Callable[[str], Clients],
) -> None:
    reference = registry.reference(REPOSITORY, "1")
    skopeo_push(clients, oci_layout, IMAGE_REF, reference)
    _, _, manifest_digest = registry.manifest(REPOSITORY, "1")

    # skopeo copies it from the registry into one store, layerstore pulls it into another.
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}",
                   f"{clients.transport}{IMAGE}")  # fmt: skip
    other = fresh_clients("ours")
    ours = other.open(engine)
    pulled = ours.pull(reference, names=[IMAGE])

    inspected = clients.inspect(IMAGE)
    assert pulled.id == inspected["Id"]
    assert pulled.digest == inspected["Digest"] == manifest_digest
    assert [layer.id for layer in ours.image_layers(IMAGE)] == clients.chain(
        clients.top_layer(IMAGE)
    )
    assert [layer.uncompressed_digest for layer in ours.image_layers(IMAGE)] == diff_ids()
    assert image_diffs(ours, IMAGE) == [tar for tar, _ in image_layers()]
    assert records(other, "layers") == records(clients, "layers")
    ours_images, theirs_images = records(other, "images"), records(clients, "images")
    assert [record["id"] for record in ours_images] == [pulled.id]
    assert ours_images == theirs_images, "the image record is skopeo's, big data and all"
    # layerstore reads what skopeo wrote as the same image.
    theirs = clients.open(engine)
    assert theirs.image(IMAGE).id == pulled.id
    for key in pulled.big_data_names:
        assert ours.image_big_data(IMAGE, key) == theirs.image_big_data(IMAGE, key)
    assert other.inspect(IMAGE)["RootFS"]["Layers"] == diff_ids()
    assert ours.check(contents=True) == []


def test_podman_runs_what_layerstore_pulled(
    clients: Clients, oci_layout: Path, engine: Engine, registry: Registry
) -> None:
    reference = registry.reference(REPOSITORY, "run")
    skopeo_push(clients, oci_layout, IMAGE_REF, reference)
    store = clients.open(engine)
    pulled = store.pull(reference)
    assert pulled.names == (reference,)

    listed = clients.podman_json("images", "--format", "json")
    assert [(entry["Id"], entry["Names"]) for entry in listed] == [(pulled.id, [reference])]
    inspected = clients.inspect(reference)
    assert inspected["RootFS"]["Layers"] == diff_ids()
    assert inspected["Config"]["Cmd"] == ["/bin/busybox", "true"]
    assert clients.top_layer(reference) == pulled.layer
    if static_busybox() is None:
        pytest.skip(MISSING_BUSYBOX + " (everything but podman run was checked)")
    assert clients.podman_run(reference, "/bin/busybox", "cat", "/opt/app/conf") == "level = 1\n"
    assert clients.podman_run(reference, "/bin/busybox", "cat", "/etc/motd") == "welcome\n"
    assert clients.podman_json("ps", "--all", "--format", "json") == []


def test_layerstore_pulls_a_platform_of_an_index_skopeo_pushed(
    clients: Clients, engine: Engine, registry: Registry, tmp_path: Path
) -> None:
    amd64_tars = [tar for tar, _ in image_layers()]
    arm64_tars = [*amd64_tars[:1], small_tar("arm64")]
    images = [ImageParts(amd64_tars, [blob for _, blob in image_layers()]),
              ImageParts(arm64_tars, arm64_tars, architecture="arm64")]  # fmt: skip
    layout = Layout(tmp_path / "index")
    layout.add_index(images, "multi")
    layout.finish()
    reference = registry.reference(REPOSITORY, "multi")
    skopeo_push(clients, layout.directory, "multi", reference, "--all")
    assert registry.manifest(REPOSITORY, "multi")[1] == "application/vnd.oci.image.index.v1+json"

    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", "--override-arch", "arm64",
                   f"docker://{reference}", f"{clients.transport}localhost/arm:1")  # fmt: skip
    store = clients.open(engine)
    pulled = store.pull(reference, platform="linux/arm64", names=["localhost/arm:2"])
    assert pulled.id == sha256(images[1].config())[7:] == clients.inspect("localhost/arm:1")["Id"]
    assert store.image("localhost/arm:1").id == pulled.id, "the very image skopeo copied"
    assert [layer.id for layer in store.image_layers(pulled.id)] == clients.chain(
        clients.top_layer("localhost/arm:1")
    )
    assert image_diffs(store, pulled.id) == arm64_tars


# -- layerstore pushes, skopeo reads ---------------------------------------------------------------


def layout_image(layout: Path, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and config of ``ref`` in an OCI layout, every blob checked."""

    def blob(digest: str) -> bytes:
        data = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
        assert sha256(data) == digest
        return data

    index = json.loads((layout / "index.json").read_text())
    key = "org.opencontainers.image.ref.name"
    entries = [
        entry for entry in index["manifests"] if entry.get("annotations", {}).get(key) == ref
    ]
    assert len(entries) == 1, index
    manifest = json.loads(blob(entries[0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    for layer in manifest["layers"]:
        blob(layer["digest"])
    return manifest, config


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_reads_what_layerstore_pushed(
    clients: Clients,
    oci_layout: Path,
    engine: Engine,
    registry: Registry,
    tmp_path: Path,
    fresh_clients: Callable[[str], Clients],
    compression: str,
) -> None:
    store = clients.open(engine)
    loaded = store.load(f"oci:{oci_layout}:{IMAGE_REF}", names=[IMAGE])
    reference = registry.reference(REPOSITORY, compression)
    digest = store.push(IMAGE, reference, compression=compression)

    inspected = json.loads(clients.skopeo("inspect", "--tls-verify=false", f"docker://{reference}"))
    assert inspected["Digest"] == digest
    assert inspected["Architecture"] == "amd64"
    assert inspected["Os"] == "linux"
    assert len(inspected["Layers"]) == len(image_layers())
    raw = clients.skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}")
    assert sha256(raw.encode()) == digest
    assert json.loads(raw)["config"]["digest"] == f"sha256:{loaded.id}"
    media_type = f"application/vnd.oci.image.layer.v1.tar+{compression}"
    assert {layer["mediaType"] for layer in json.loads(raw)["layers"]} == {media_type}
    config = json.loads(
        clients.skopeo("inspect", "--config", "--tls-verify=false", f"docker://{reference}")
    )
    assert config["rootfs"]["diff_ids"] == diff_ids()

    copied = tmp_path / "copied"
    clients.skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}",
                   f"oci:{copied}:out")  # fmt: skip
    manifest, copied_config = layout_image(copied, "out")
    assert manifest["config"]["digest"] == f"sha256:{loaded.id}"
    assert copied_config["rootfs"]["diff_ids"] == diff_ids()

    # Into a store of their own: the same image, which podman runs.
    target = fresh_clients("target")
    target.skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}",
                  f"{target.transport}localhost/pushed:1")  # fmt: skip
    assert target.inspect("localhost/pushed:1")["Id"] == loaded.id
    assert target.chain(target.top_layer("localhost/pushed:1")) == clients.chain(loaded.layer)
    if static_busybox() is None:
        pytest.skip(MISSING_BUSYBOX)
    assert target.podman_run("localhost/pushed:1", "/bin/busybox", "cat", "/etc/motd") == (
        "welcome\n"
    )
