"""The image store (images.json beside the layers) and loading and saving images."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from layerstore import (
    DuplicateName,
    ImageUnknown,
    ImageUsedByContainer,
    InvalidImage,
    LayerStore,
    LayerUsedByImage,
    chain_layer_id,
    gojson,
)
from layerstore.cli import main
from layerstore.image import Image
from layerstore.layer import Compression

from .images import (
    ImageParts,
    Layout,
    docker_archive,
    image_diffs,
    layer_tars,
    oci_archive,
    oci_layout,
    sha256,
)
from .tarballs import compress

# What skopeo 1.9.3 (containers/image 5.23 on containers/storage 1.43) wrote for an image
# copied from an OCI layout into containers-storage: our record must read and write it back
# byte for byte.
SKOPEO_RECORD = (
    '{"id":"28cf8e3ad8ffb03a35ba259c057002bb178a04808bae914f6044919f84634695","digest":"sha256:'
    'b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b55dc8435f4e","names":["localhost/'
    'layerstore-test:1"],"names-history":["localhost/layerstore-test:1"],"layer":"6a0267b7bcaa'
    'e85a0f356570226c018dda9072eb8b3667ba311e5637dee9f264","metadata":"{\\"signatures-sizes\\":'
    '{\\"sha256:b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b55dc8435f4e\\":[]}}","big-'
    'data-names":["sha256:28cf8e3ad8ffb03a35ba259c057002bb178a04808bae914f6044919f84634695","m'
    'anifest-sha256:b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b55dc8435f4e","manifes'
    't","signature-b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b55dc8435f4e"],"big-dat'
    'a-sizes":{"manifest":742,"manifest-sha256:b723daee0c9080c37fbadb1a64e55d451e4593826cfbc86'
    '95991b55dc8435f4e":742,"sha256:28cf8e3ad8ffb03a35ba259c057002bb178a04808bae914f6044919f84'
    '634695":637,"signature-b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b55dc8435f4e":0'
    '},"big-data-digests":{"manifest":"sha256:b723daee0c9080c37fbadb1a64e55d451e4593826cfbc869'
    '5991b55dc8435f4e","manifest-sha256:b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b5'
    '5dc8435f4e":"sha256:b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b55dc8435f4e","sh'
    'a256:28cf8e3ad8ffb03a35ba259c057002bb178a04808bae914f6044919f84634695":"sha256:28cf8e3ad8'
    'ffb03a35ba259c057002bb178a04808bae914f6044919f84634695","signature-b723daee0c9080c37fbadb'
    '1a64e55d451e4593826cfbc8695991b55dc8435f4e":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae4'
    '1e4649b934ca495991b7852b855"},"created":"2024-01-01T00:00:00Z"}'
)


def parts(architecture: str = "amd64") -> ImageParts:
    tars = layer_tars()
    kinds = [Compression.GZIP, Compression.ZSTD, Compression.NONE]
    blobs = [compress(tar, kind) for tar, kind in zip(tars, kinds, strict=True)]
    return ImageParts(tars, blobs, architecture=architecture)


def chain_ids(diff_ids: list[str]) -> list[str]:
    ids, parent = [], ""
    for diff_id in diff_ids:
        parent = chain_layer_id(parent, diff_id)
        ids.append(parent)
    return ids


def images_json(store: LayerStore) -> list[dict[str, object]]:
    path = Path(store.root) / f"{store.driver.name}-images" / "images.json"
    return list(json.loads(path.read_text())) if path.exists() else []


# -- the record ---------------------------------------------------------------------------------


def test_a_record_skopeo_wrote_reads_and_writes_back_byte_for_byte() -> None:
    image = Image.from_json(json.loads(SKOPEO_RECORD), source="images.json")
    assert image.layer.startswith("6a0267b7")
    assert image.digests == (
        "sha256:b723daee0c9080c37fbadb1a64e55d451e4593826cfbc8695991b55dc8435f4e",
    )
    assert gojson.dumps(image.to_json()) == SKOPEO_RECORD


def test_unknown_keys_are_kept_and_bad_types_refused() -> None:
    record = {"id": "a" * 64, "created": "2024-01-01T00:00:00Z", "future-key": [1, {"b": 2}]}
    assert Image.from_json(record, source="x").to_json() == record
    with pytest.raises(Exception, match="names"):
        Image.from_json({"id": "a" * 64, "names": "not a list"}, source="x")


# -- the image store ----------------------------------------------------------------------------


def test_images_are_found_by_id_name_prefix_and_digest(store: LayerStore) -> None:
    top = store.create()
    first = store.create_image(top.id, id="ab" + "1" * 62, names=["localhost/a:1"],
                               big_data=[("manifest", b"{}", None)])  # fmt: skip
    store.create_image(top.id, id="ab" + "2" * 62, names=["localhost/b:1"])
    assert store.image("localhost/a:1") == first
    assert store.image("ab1").id == first.id
    with pytest.raises(ImageUnknown, match="ambiguous"):
        store.image("ab")
    with pytest.raises(ImageUnknown):
        store.image("localhost/c:1")
    assert store.images_by_digest(sha256(b"{}")) == [first]
    assert first.digest == sha256(b"{}")
    with pytest.raises(DuplicateName):
        store.create_image(None, names=["localhost/a:1"])


def test_names_move_between_images_and_are_remembered(store: LayerStore) -> None:
    one = store.create_image(None, names=["x:1"])
    two = store.create_image(None, names=["y:1"])
    store.add_image_names(two.id, ["x:1"])
    assert store.image(one.id).names == ()
    assert store.image(two.id).names == ("y:1", "x:1")
    assert store.image(two.id).names_history == ("x:1", "y:1")
    store.remove_image_names(two.id, ["y:1"])
    assert store.image("x:1").names == ("x:1",)


def test_big_data_files_are_named_as_containers_storage_names_them(store: LayerStore) -> None:
    image = store.create_image(None, big_data=[("manifest", b"m", None),
                                               ("sha256:abc", b"c", None)])  # fmt: skip
    directory = Path(store.root) / f"{store.driver.name}-images" / image.id
    encoded = "=" + base64.b64encode(b"sha256:abc").decode()
    assert sorted(path.name for path in directory.iterdir()) == sorted(["manifest", encoded])
    assert store.image_big_data(image.id, "sha256:abc") == b"c"
    assert store.image(image.id).big_data_sizes == {"manifest": 1, "sha256:abc": 1}


def test_another_store_object_sees_the_changes(store: LayerStore) -> None:
    other = LayerStore(store.root, store.run_root, driver=store.driver.name, engine=store.engine)
    assert other.images() == []
    made = store.create_image(None, names=["seen:1"])
    assert other.image("seen:1").id == made.id
    other.delete_image(made.id)
    assert store.images() == []


def test_deleting_an_image_deletes_the_layers_only_it_used(store: LayerStore) -> None:
    base = store.create()
    middle = store.create(parent=base.id)
    top_a = store.create(parent=middle.id)
    top_b = store.create(parent=middle.id)
    a = store.create_image(top_a.id, names=["a:1"])
    store.create_image(top_b.id, names=["b:1"])
    with pytest.raises(LayerUsedByImage):
        store.delete(top_a.id)
    assert store.delete_image(a.id) == [top_a.id]  # middle still has top_b on it
    assert {layer.id for layer in store.layers()} == {base.id, middle.id, top_b.id}
    assert store.delete_image("b:1") == [top_b.id, middle.id, base.id]
    assert store.layers() == []
    kept = store.create_image(store.create().id)
    assert store.delete_image(kept.id, keep_layers=True) == []
    assert len(store.layers()) == 1


def test_an_image_a_container_uses_is_not_deleted(store: LayerStore) -> None:
    image = store.create_image(store.create().id, names=["c:1"])
    containers = Path(store.root) / f"{store.driver.name}-containers"
    containers.mkdir()
    (containers / "containers.json").write_text(
        json.dumps([{"id": "c" * 64, "image": image.id, "layer": "d" * 64}])
    )
    with pytest.raises(ImageUsedByContainer):
        store.delete_image("c:1")
    assert store.image("c:1").id == image.id


# -- loading ------------------------------------------------------------------------------------


def test_load_of_an_oci_layout_records_the_image_as_containers_image_does(
    store: LayerStore, tmp_path: Path
) -> None:
    image = parts()
    oci_layout(tmp_path / "oci", image, "v1")
    loaded = store.load(f"oci:{tmp_path / 'oci'}:v1", names=["localhost/app:1"])
    config_digest = sha256(image.config())
    assert loaded.id == config_digest[7:]
    assert [layer.id for layer in store.image_layers(loaded.id)] == chain_ids(image.diff_ids)
    assert loaded.layer == chain_ids(image.diff_ids)[-1]
    manifest = store.image_big_data(loaded.id, "manifest")
    assert loaded.digest == sha256(manifest)
    assert loaded.big_data_names == (
        config_digest,
        f"manifest-{loaded.digest}",
        "manifest",
        f"signature-{loaded.digest[7:]}",
    )
    assert store.image_big_data(loaded.id, config_digest) == image.config()
    assert json.loads(loaded.metadata) == {"signatures-sizes": {loaded.digest: []}}
    assert loaded.created == "2024-01-02T03:04:05.123456789Z"
    assert loaded.names == ("localhost/app:1",)
    assert image_diffs(store, loaded.id) == image.tars
    assert images_json(store)[0]["layer"] == loaded.layer


def test_a_second_load_reuses_everything_and_adds_names(store: LayerStore, tmp_path: Path) -> None:
    oci_layout(tmp_path / "oci", parts())
    first = store.load(f"oci:{tmp_path / 'oci'}", names=["one"])
    layers = store.layers()
    second = store.load(f"oci:{tmp_path / 'oci'}", names=["two"])
    assert second.id == first.id
    assert store.layers() == layers
    assert store.image(first.id).names == ("docker.io/library/one:latest",
                                           "docker.io/library/two:latest")  # fmt: skip


def test_a_layer_put_under_another_id_is_reused_by_its_diff_id(
    store: LayerStore, tmp_path: Path
) -> None:
    image = parts()
    base, _ = store.put(image.tars[0])
    oci_layout(tmp_path / "oci", image)
    loaded = store.load(f"oci:{tmp_path / 'oci'}")
    assert store.image_layers(loaded.id)[0].id == base.id
    assert len(store.layers()) == 3


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-layout", "oci-blobs-layout"])
def test_load_of_a_docker_archive(store: LayerStore, tmp_path: Path, legacy: bool) -> None:
    tars = layer_tars()
    tars[2] = tars[0] if legacy else tars[2]  # the legacy form links a repeated layer
    image = ImageParts(tars, tars)
    archive = docker_archive(tmp_path / "d.tar", image, ["app:2", "quay.io/x/app:2"],
                             legacy=legacy)  # fmt: skip
    loaded = store.load(f"docker-archive:{archive}")
    assert loaded.id == sha256(image.config())[7:]
    assert loaded.names == ("docker.io/library/app:2", "quay.io/x/app:2")
    assert image_diffs(store, loaded.id) == tars
    manifest = json.loads(store.image_big_data(loaded.id, "manifest"))
    assert [layer["digest"] for layer in manifest["layers"]] == image.diff_ids


def test_a_gzip_compressed_docker_archive_and_one_image_of_several(
    store: LayerStore, tmp_path: Path
) -> None:
    image = ImageParts(layer_tars(), layer_tars())
    plain = docker_archive(tmp_path / "d.tar", image, ["app:3"], legacy=False)
    packed = tmp_path / "d.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert store.load(f"docker-archive:{packed}:app:3").names == ("docker.io/library/app:3",)
    with pytest.raises(InvalidImage, match="no image tagged"):
        store.load(f"docker-archive:{packed}:other:1")


def test_load_of_an_oci_archive(store: LayerStore, tmp_path: Path) -> None:
    image = parts()
    archive = oci_archive(tmp_path / "o.tar", oci_layout(tmp_path / "oci", image, "t"))
    loaded = store.load(f"oci-archive:{archive}:t", names=["localhost/o:1"])
    assert image_diffs(store, loaded.id) == image.tars


def test_a_multi_platform_index_gives_the_chosen_platform(
    store: LayerStore, tmp_path: Path
) -> None:
    amd, arm = parts("amd64"), parts("arm64")
    layout = Layout(tmp_path / "oci")
    layout.add_index([amd, arm], "multi")
    layout.finish()
    loaded = store.load(f"oci:{layout.directory}:multi", platform="linux/arm64")
    assert loaded.id == sha256(arm.config())[7:]
    with pytest.raises(InvalidImage, match=r"linux/s390x.*linux/amd64, linux/arm64"):
        store.load(f"oci:{layout.directory}:multi", platform="linux/s390x")
    assert [image.id for image in store.images()] == [loaded.id]


def nothing_left(store: LayerStore) -> None:
    assert store.images() == []
    assert store.layers() == []


def test_a_tampered_blob_fails_the_load_and_leaves_nothing(
    store: LayerStore, tmp_path: Path
) -> None:
    image = parts()
    oci_layout(tmp_path / "oci", image)
    blob = tmp_path / "oci" / "blobs" / "sha256" / sha256(image.blobs[2])[7:]
    tampered = bytearray(blob.read_bytes())
    tampered[600] ^= 1
    blob.write_bytes(bytes(tampered))
    with pytest.raises(InvalidImage, match="layer 2"):
        store.load(f"oci:{tmp_path / 'oci'}")
    nothing_left(store)


def test_a_tampered_diff_id_fails_the_load_and_leaves_nothing(
    store: LayerStore, tmp_path: Path
) -> None:
    image = parts()
    image.diff_ids[1] = sha256(b"something else")
    oci_layout(tmp_path / "oci", image)
    with pytest.raises(InvalidImage, match="DiffID"):
        store.load(f"oci:{tmp_path / 'oci'}")
    nothing_left(store)


def test_a_missing_blob_and_a_truncated_archive_are_clear_errors(
    store: LayerStore, tmp_path: Path
) -> None:
    image = parts()
    layout = oci_layout(tmp_path / "oci", image)
    archive = oci_archive(tmp_path / "o.tar", layout)
    (layout / "blobs" / "sha256" / sha256(image.blobs[1])[7:]).unlink()
    with pytest.raises(InvalidImage, match="missing"):
        store.load(f"oci:{layout}")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImage, match=r"truncated|not a readable tar"):
        store.load(f"oci-archive:{archive}")
    with pytest.raises(InvalidImage, match="not an image location"):
        store.load(f"docker:{archive}")
    nothing_left(store)


# -- saving -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "compression"),
    [("oci", "gzip"), ("oci", "zstd"), ("oci", "none"), ("oci-archive", None),
     ("docker-archive", None)],
)  # fmt: skip
def test_save_then_load_gives_the_same_image(
    store: LayerStore, tmp_path: Path, transport: str, compression: str | None
) -> None:
    image = parts()
    oci_layout(tmp_path / "oci", image)
    loaded = store.load(f"oci:{tmp_path / 'oci'}", names=["localhost/round:trip"])
    target = tmp_path / ("out" if transport == "oci" else "out.tar")
    store.save(loaded.id, f"{transport}:{target}", compression=compression)
    fresh = LayerStore(tmp_path / "fresh", tmp_path / "fresh-run", driver=store.driver.name,
                       engine=store.engine)  # fmt: skip
    again = fresh.load(f"{transport}:{target}")
    assert again.id == loaded.id  # the config was kept byte for byte
    assert again.names == ("localhost/round:trip",)
    assert [layer.id for layer in fresh.image_layers(again.id)] == chain_ids(image.diff_ids)
    assert image_diffs(fresh, again.id) == image.tars


def test_save_into_a_layout_adds_an_image_and_replaces_its_ref(
    store: LayerStore, tmp_path: Path
) -> None:
    oci_layout(tmp_path / "oci", parts())
    loaded = store.load(f"oci:{tmp_path / 'oci'}")
    out = tmp_path / "out"
    store.save(loaded.id, f"oci:{out}:a")
    store.save(loaded.id, f"oci:{out}:b", compression="none")
    store.save(loaded.id, f"oci:{out}:a", compression="zstd")
    index = json.loads((out / "index.json").read_text())
    refs = [entry["annotations"]["org.opencontainers.image.ref.name"]
            for entry in index["manifests"]]  # fmt: skip
    assert refs == ["b", "a"]


def test_save_refuses_what_it_cannot_write(store: LayerStore, tmp_path: Path) -> None:
    bare = store.create_image(None, names=["bare:1"])
    with pytest.raises(InvalidImage, match="no config"):
        store.save(bare.id, f"oci:{tmp_path / 'out'}")
    oci_layout(tmp_path / "oci", parts())
    loaded = store.load(f"oci:{tmp_path / 'oci'}")
    with pytest.raises(InvalidImage, match="uncompressed"):
        store.save(loaded.id, f"docker-archive:{tmp_path / 'd.tar'}", compression="gzip")
    assert not (tmp_path / "d.tar").exists()


# -- the command --------------------------------------------------------------------------------


def test_the_image_verbs(
    tmp_path: Path, driver_name: str, engine_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    oci_layout(tmp_path / "oci", parts())
    flags = ["--root", str(tmp_path / "s"), "--run-root", str(tmp_path / "r"),
             "--driver", driver_name, "--engine", engine_name]  # fmt: skip
    assert main([*flags, "load", f"oci:{tmp_path / 'oci'}", "--name", "localhost/cli:1"]) == 0
    image_id = capsys.readouterr().out.strip()
    assert main([*flags, "tag", image_id[:8], "localhost/cli:2"]) == 0
    assert main([*flags, "images"]) == 0
    table = capsys.readouterr().out
    assert image_id[:12] in table
    assert "localhost/cli:1,localhost/cli:2" in table
    assert main([*flags, "image", "localhost/cli:2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == image_id
    assert len(shown["layers"]) == 3
    out = tmp_path / "saved.tar"
    assert main([*flags, "save", "localhost/cli:1", "-o", f"docker-archive:{out}"]) == 0
    assert capsys.readouterr().out.startswith("sha256:")
    assert main([*flags, "rmi", "--untag", "localhost/cli:2"]) == 0
    assert main([*flags, "rmi", "localhost/cli:1"]) == 0
    output = capsys.readouterr().out
    assert output.count("deleted layer") == 3
    assert main([*flags, "rmi", "localhost/cli:1"]) == 1
    assert "'layerstore images' lists them" in capsys.readouterr().err
    assert main([*flags, "load", f"oci:{tmp_path / 'nowhere'}"]) == 1
    assert "is not a directory" in capsys.readouterr().err
