"""layerstore and podman mount the same layer in every order (issue 14, defect 1).

Both must share one kernel mount at the layer's ``merged`` directory and one count in
mountpoints.json, whoever comes first, and leave nothing mounted after the last unmount.
"""

from __future__ import annotations

import os

import pytest

from layerstore.engines import Engine

from .clients import Clients

# Each side mounts once and unmounts once ("L" layerstore, "P" podman): every interleaving.
ORDERS = [
    "L+ L- P+ P-",
    "L+ P+ L- P-",
    "L+ P+ P- L-",
    "P+ P- L+ L-",
    "P+ L+ L- P-",
    "P+ L+ P- L-",
]
# Issue 14, defect 1: a Go process bind-mounts ROOT/overlay onto itself when it opens the
# store (unless it is a mount point already): a layerstore mount made before that would be
# hidden below the bind, so Go would mount the layer a second time; and when layerstore
# unmounted last, the bind Go left would stay. layerstore makes and removes the bind as Go does.


def kernel_mounts(path: str) -> int:
    """How many mounts the kernel has at ``path`` (hidden ones too)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return sum(1 for line in table if line.split(" ", 5)[4] == path)


@pytest.mark.parametrize("what", ["image", "container"])
@pytest.mark.parametrize("order", ORDERS)
def test_mounts_interleaved(
    clients: Clients,
    image: str,
    engine: Engine,
    order: str,
    what: str,
) -> None:
    if what == "image":
        layer = clients.top_layer(image)
        podman_mount, podman_unmount = ("image", "mount", image), ("image", "unmount", image)
    else:
        container = clients.podman("create", "--pull", "never", "--network", "none", image)
        container = container.strip()
        layer = clients.container_layer(container)
        podman_mount, podman_unmount = ("mount", container), ("umount", container)
    store = clients.open(engine)
    holders: set[str] = set()
    paths = set()
    for step in order.split():
        who, action = step[0], step[1]
        if who == "L":
            if action == "+":
                paths.add(store.mount(layer))
            else:
                store.unmount(layer)
        elif action == "+":
            paths.add(clients.podman(*podman_mount).strip())
        else:
            clients.podman(*podman_unmount)
        (holders.add if action == "+" else holders.discard)(who)

        assert len(paths) == 1, f"after {step}: both sides use one path"
        path = next(iter(paths))
        assert store.mounted(layer) == len(holders), f"after {step}: one count for both"
        if clients.driver == "overlay":
            expected = 1 if holders else 0
            assert kernel_mounts(path) == expected, f"after {step}: one kernel mount"
        if holders:
            assert os.path.exists(os.path.join(path, "bin", "busybox")), f"after {step}"
    assert store.mounted(layer) == 0
    assert clients.mounts_below() == [], "nothing is left mounted"
