"""Where a store lives when nobody says: the same defaults for the API and the CLI.

Never podman's own storage: a tool that wrote there by default could break a user's
containers. As podman pairs ``/var/lib/containers/storage`` with ``/run/containers/storage``,
the default store's run root is ``/run/layerstore``; any other store gets a directory of its
own below it, so two stores never share a mount table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["default_root", "default_run_root", "podman_rootless_locations"]


def _user(environ: Mapping[str, str], euid: int | None) -> int:
    """The effective uid, or in a user namespace made for a user (``layerstore unshare``,
    ``podman unshare``: ``_CONTAINERS_ROOTLESS_UID`` set, the uid map not the initial one) that
    user's: its root is that user, whose defaults it keeps, as containers/storage's
    ``GetRootlessUID`` makes podman keep them."""
    if euid is not None:
        return euid
    euid = os.geteuid()
    rootless = environ.get("_CONTAINERS_ROOTLESS_UID", "")
    if euid == 0 and rootless.isdigit():
        try:
            with open("/proc/self/uid_map") as file:
                initial = file.readline().split() == ["0", "0", "4294967295"]
        except OSError:
            initial = True
        if not initial:
            return int(rootless)
    return euid


def default_root(environ: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """The store's root when none is given.

    ``LAYERSTORE_ROOT``, else ``/var/lib/layerstore`` for root and
    ``$XDG_DATA_HOME/layerstore`` (``~/.local/share/layerstore``) for everyone else.
    """
    environ = os.environ if environ is None else environ
    if environ.get("LAYERSTORE_ROOT"):
        return environ["LAYERSTORE_ROOT"]
    euid = _user(environ, euid)
    if euid == 0:
        return "/var/lib/layerstore"
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(data_home, "layerstore")


def default_run_root(
    environ: Mapping[str, str] | None = None,
    euid: int | None = None,
    root: str | os.PathLike[str] | None = None,
) -> str | None:
    """The run root (mount counts: what lasts until reboot) of the store at ``root`` when none
    is given.

    ``LAYERSTORE_RUN_ROOT``, else ``/run/layerstore`` for root and
    ``$XDG_RUNTIME_DIR/layerstore`` for everyone else; for a ``root`` other than
    :func:`default_root`, ``stores/<16 hex of the root's sha256>`` below that. Without
    ``XDG_RUNTIME_DIR``: None, and the store uses ``ROOT/run``, because a fixed name in a
    shared /tmp could be made beforehand by another user.
    """
    environ = os.environ if environ is None else environ
    if environ.get("LAYERSTORE_RUN_ROOT"):
        return environ["LAYERSTORE_RUN_ROOT"]
    euid = _user(environ, euid)
    if euid == 0:
        base = "/run/layerstore"
    elif environ.get("XDG_RUNTIME_DIR"):
        base = os.path.join(environ["XDG_RUNTIME_DIR"], "layerstore")
    else:
        return None
    if root is None:
        return base
    absolute = os.path.abspath(os.fspath(root))
    if absolute == os.path.abspath(default_root(environ, euid)):
        return base
    import hashlib  # loads OpenSSL: not for the default store, nor a run root given

    digest = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:16]
    return os.path.join(base, "stores", digest)


def podman_rootless_locations(
    environ: Mapping[str, str] | None = None, euid: int | None = None
) -> tuple[str, str | None]:
    """The store and run root rootless podman uses for this user, for a store shared with it
    when asked (``--podman-store``), never by default: ``$XDG_DATA_HOME/containers/storage``
    (``~/.local/share/containers/storage``) and ``$XDG_RUNTIME_DIR/containers`` (None without
    a runtime directory), as containers/storage's rootless defaults (``getRootlessStorageOpts``)
    name them. Root's podman storage is refused: ValueError."""
    environ = os.environ if environ is None else environ
    if _user(environ, euid) == 0:
        raise ValueError(
            "podman's rootless store is a non-root user's: as root, name the store with --root"
        )
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "share"
    )
    runtime = environ.get("XDG_RUNTIME_DIR")
    return (
        os.path.join(data_home, "containers", "storage"),
        os.path.join(runtime, "containers") if runtime else None,
    )
