"""One layerstore operation in a process of its own, for ``compare.py`` to measure.

    python benches/compare_child.py OPERATION ROOT DRIVER ENGINE [ARGUMENT ...]

The process does what the Go CLI's process does for the same operation (open the store, do the
one thing, print what the CLI prints) and then, on its last line of output, how long that took
inside the process: ``in-process <seconds>``, timed from after ``import layerstore`` (so without
the interpreter's start-up) to the end of the operation, opening the store included.

Operations: ``put BLOB [PARENT]`` (prints the new layer's id), ``diff LAYER none|gzip`` (reads the
whole stream), ``create`` (an empty writeable layer, as a container's; prints its id),
``delete LAYER``, ``open`` (opens the store and closes it), ``mount LAYER`` (prints the mount
point), ``unmount LAYER``,
``layers`` (prints every layer's id and names, as ``containers-storage layers`` does),
``chain COUNT`` (setup only: a chain of COUNT one-file layers; prints the top layer's id),
``put-each BLOB ...`` (the blobs put one after the other, each on the one before; prints the
top layer's id), ``put-chain BLOB ...`` (the same blobs as one ``put_chain``), ``load SOURCE
[NAME ...]`` (``LayerStore.load`` of an image, e.g. ``oci:DIR:REF``; prints the image's id),
``save IMAGE DESTINATION COMPRESSION`` (``LayerStore.save``; prints the manifest's digest),
``pull REFERENCE [NAME ...]`` (``LayerStore.pull`` of ``REGISTRY/REPOSITORY:TAG``, named so unless
NAMEs are given; prints the image's id), ``push IMAGE REFERENCE [COMPRESSION]``
(``LayerStore.push``, layers compressed as their blobs were unless COMPRESSION says otherwise;
prints the manifest's digest) and ``reader STOP_FILE`` (``layers()`` over and over until
STOP_FILE exists; prints one line per call: its start on the system's monotonic clock and how
long it took, in seconds).
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import time

from layerstore import LayerStore


def one_file_layer(number: int) -> bytes:
    """A small tar holding one file, different for each ``number``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(f"file{number}")
        data = f"layer {number}\n".encode()
        info.size, info.mtime = len(data), 1_700_000_000
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def main(arguments: list[str]) -> None:
    operation, root, driver, engine, *rest = arguments
    started = time.perf_counter()
    store = LayerStore(root, run_root=os.path.join(root, "run"), driver=driver, engine=engine)
    output: list[str] = []
    if operation == "put":
        parent = rest[1] if len(rest) > 1 else None
        layer, _size = store.put(rest[0], parent=parent)
        output.append(layer.id)
    elif operation == "diff":
        buffer = bytearray(1 << 20)
        with store.diff(rest[0], compression=rest[1]) as stream:
            while stream.readinto(buffer):  # type: ignore[attr-defined]  # BinaryIO lacks it
                pass
    elif operation == "create":
        output.append(store.create(writeable=True).id)
    elif operation == "delete":
        store.delete(rest[0])
    elif operation == "open":
        pass  # opening the store is all: it has read and indexed layers.json
    elif operation == "mount":
        output.append(store.mount(rest[0]))
    elif operation == "unmount":
        store.unmount(rest[0])
    elif operation == "layers":
        for layer in store.layers():
            output.append(layer.id)
            output.extend(f"\tname: {name}" for name in layer.names)
    elif operation == "put-each":
        parent = None
        for blob in rest:
            parent = store.put(blob, parent=parent)[0].id
        output.append(str(parent))
    elif operation == "put-chain":
        output.append(store.put_chain(rest)[-1].id)
    elif operation == "load":
        output.append(store.load(rest[0], names=rest[1:]).id)
    elif operation == "save":
        output.append(store.save(rest[0], rest[1], compression=rest[2]))
    elif operation == "pull":
        output.append(store.pull(rest[0], names=rest[1:] or None).id)
    elif operation == "push":
        compression = rest[2] if len(rest) > 2 else None
        output.append(store.push(rest[0], rest[1], compression=compression))
    elif operation == "reader":
        while not os.path.exists(rest[0]):
            begun = time.monotonic()
            store.layers()
            output.append(f"{begun:.6f} {time.monotonic() - begun:.6f}")
            time.sleep(0.002)
    elif operation == "chain":
        parent = None
        for number in range(int(rest[0])):
            parent = store.put(one_file_layer(number), parent=parent)[0].id
        output.append(str(parent))
    else:
        raise SystemExit(f"unknown operation {operation!r}")
    if output:
        sys.stdout.write("\n".join(output) + "\n")
    store.close()
    print(f"in-process {time.perf_counter() - started:.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
