"""One of many processes doing random operations on one store; it records what succeeded.

    python -m tests.reliability.concurrency_worker ROOT RUN_ROOT DRIVER ENGINE NUMBER OPERATIONS OUT

Each worker changes only the layers it made (so the final state follows from its own log) but
reads everything, names its layers with its NUMBER, and writes its expected final state to OUT.
"""

from __future__ import annotations

import io
import json
import random
import sys
import tarfile
import threading
from typing import Any

from layerstore import LayerStore


def blob(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = rng.randbytes(rng.randint(0, 5000))
        info = tarfile.TarInfo("file")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def run(store: LayerStore, number: int, operations: int, seed: int) -> dict[str, Any]:
    """Random operations; returns the expected state of this worker's layers."""
    rng = random.Random(seed)
    mine: dict[str, dict[str, Any]] = {}  # id -> names, metadata, big data, mounts
    counter = 0

    def new_name() -> str:
        nonlocal counter
        counter += 1
        return f"w{number}-n{counter}"

    for _ in range(operations):
        choice = rng.choice(["create", "put", "names", "metadata", "big-data", "mount", "delete"])
        if choice in ("create", "put") or not mine:
            name = new_name()
            if choice == "put":
                layer, _ = store.put(blob(rng), names=[name])
            else:
                layer = store.create(names=[name])
            mine[layer.id] = {"names": [name], "metadata": "", "big_data": {}, "mounts": 0}
            continue
        layer_id = rng.choice(sorted(mine))
        state = mine[layer_id]
        if choice == "names":
            names = [new_name() for _ in range(rng.randint(0, 2))]
            store.set_names(layer_id, names)
            state["names"] = names
        elif choice == "metadata":
            text = f"metadata {rng.random()}"
            store.set_metadata(layer_id, text)
            state["metadata"] = text
        elif choice == "big-data":
            key, value = f"k{rng.randint(0, 2)}", rng.randbytes(20).hex()
            store.set_big_data(layer_id, key, value.encode())
            state["big_data"][key] = value
        elif choice == "mount":
            if state["mounts"] and rng.random() < 0.5:
                store.unmount(layer_id)
                state["mounts"] -= 1
            else:
                store.mount(layer_id)
                state["mounts"] += 1
        elif choice == "delete":
            store.delete(layer_id)
            del mine[layer_id]
        # Reads of everything, racing with the other workers' writes.
        store.layers()
        store.exists(f"w{(number + 1) % 8}-n1")
    for layer_id, state in mine.items():  # leave nothing mounted
        for _ in range(state["mounts"]):
            store.unmount(layer_id)
        state["mounts"] = 0
    return mine


def main() -> None:
    root, run_root, driver, engine, number, operations, out = sys.argv[1:8]
    store = LayerStore(root, run_root=run_root, driver=driver, engine=engine)
    threads = int(sys.argv[8]) if len(sys.argv) > 8 else 1
    results: list[dict[str, Any]] = [{} for _ in range(threads)]

    def work(index: int) -> None:
        results[index] = run(
            store, int(number) * 100 + index, int(operations), int(number) * 7 + index
        )

    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    merged: dict[str, Any] = {}
    for result in results:
        merged.update(result)
    with open(out, "w") as handle:
        json.dump(merged, handle)


if __name__ == "__main__":
    main()
