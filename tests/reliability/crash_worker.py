"""A child process that changes a store at random until it is killed (crash tests).

    python -m tests.reliability.crash_worker ROOT RUN_ROOT DRIVER ENGINE SEED JOURNAL [OPERATION]

Each put that returns is appended to JOURNAL (and fsynced) before anything else happens, and
each delete is noted before it starts, so the parent knows which layers must survive any
kill. With OPERATION, it does just that one thing (for the fault points) instead of looping.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import sys
import tarfile

from layerstore import LayerStore, LayerStoreError


def layer_blob(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for number in range(rng.randint(1, 30)):
            data = rng.randbytes(rng.randint(0, 40_000))
            info = tarfile.TarInfo(f"dir{number % 3}/file{number}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=1)


def note(journal: str, line: str) -> None:
    with open(journal, "a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def main() -> None:
    root, run_root, driver, engine, seed, journal = sys.argv[1:7]
    operation = sys.argv[7] if len(sys.argv) > 7 else ""
    rng = random.Random(int(seed))
    store = LayerStore(root, run_root=run_root, driver=driver, engine=engine)

    def put() -> None:
        layers = store.layers()
        parent = rng.choice(layers).id if layers and rng.random() < 0.5 else None
        layer, _ = store.put(layer_blob(rng), parent=parent)
        note(journal, f"put {layer.id} {layer.uncompressed_digest}")

    def put_mapped() -> None:
        # Other id maps than its parent's (none): applied in place, under the lock.
        maps = [(0, 100_000, 65_536)]
        layer, _ = store.put(layer_blob(rng), uid_map=maps, gid_map=maps)
        note(journal, f"put {layer.id} {layer.uncompressed_digest}")

    def chain() -> None:
        layers = store.layers()
        parent = rng.choice(layers).id if layers and rng.random() < 0.5 else None
        blobs = [layer_blob(rng) for _ in range(rng.randint(2, 4))]
        for layer in store.put_chain(blobs, parent=parent):
            note(journal, f"put {layer.id} {layer.uncompressed_digest}")

    def create() -> None:
        layer = store.create()
        note(journal, f"created {layer.id}")

    def delete() -> None:
        layers = store.layers()
        parents = {layer.parent for layer in layers}
        childless = [layer for layer in layers if layer.id not in parents]
        if childless:
            victim = rng.choice(childless).id
            note(journal, f"deleting {victim}")  # from now on it may be gone
            store.delete(victim)

    def names() -> None:
        layers = store.layers()
        if layers:
            store.set_names(rng.choice(layers).id, [f"name-{rng.randint(0, 20)}"])

    def big_data() -> None:
        layers = store.layers()
        if layers:
            store.set_big_data(rng.choice(layers).id, f"key{rng.randint(0, 3)}", rng.randbytes(100))

    def image() -> None:
        layers = store.layers()
        if layers:
            top = rng.choice(layers)
            made = store.create_image(
                top.id,
                names=[f"localhost/image-{rng.randint(0, 20)}:1"],
                big_data=[("manifest", rng.randbytes(200), None), ("config", b"{}", None)],
            )
            note(journal, f"image {made.id} {top.id}")

    def rmi() -> None:
        images = store.images()
        if images:
            victim = rng.choice(images)
            note(journal, f"deleting-image {victim.id}")
            for layer in store.image_layers(victim.id):  # from now on they may be gone
                note(journal, f"deleting {layer.id}")
            store.delete_image(victim.id)

    def mount() -> None:
        layers = store.layers()
        if layers:
            layer = rng.choice(layers)
            if layer.mount_count and rng.random() < 0.6:
                store.unmount(layer.id)
            else:
                store.mount(layer.id)

    def unmount() -> None:
        for layer in store.layers():
            if layer.mount_count:
                store.unmount(layer.id)
                return

    operations = {"put": put, "put-mapped": put_mapped, "chain": chain, "create": create,
                  "delete": delete, "names": names, "big-data": big_data, "mount": mount,
                  "unmount": unmount, "image": image, "rmi": rmi}  # fmt: skip
    if operation:
        operations[operation]()
        return
    weights = {"put": 5, "chain": 2, "put-mapped": 1, "delete": 2, "names": 2, "big-data": 2,
               "mount": 2, "image": 2, "rmi": 1}  # fmt: skip
    while True:
        chosen = rng.choices(list(weights), weights=list(weights.values()))[0]
        try:
            operations[chosen]()
        except LayerStoreError:
            pass  # e.g. a name another worker took meanwhile: not what this test is about


if __name__ == "__main__":
    main()
