"""User namespaces as rootless podman makes them: subordinate ids, the mapping, and running a
command inside such a namespace (``layerstore unshare``), where files get real owners.

An unprivileged user with ranges in ``/etc/subuid`` and ``/etc/subgid`` and the setuid helpers
``newuidmap``/``newgidmap`` (Debian package ``uidmap``) can own, inside a user namespace, as
many ids as the ranges hold. Rootless podman maps namespace id 0 to the user's own id and
namespace ids 1, 2, ... to the ranges, in order (podman ``pkg/rootless/rootless_linux.go``:
``GetConfiguredMappings``, ``becomeRootInUserNS``); :func:`podman_mapping` builds the same
mapping, so a layer extracted in the namespace has on the host the owners podman gives it.

The whole process runs in the namespace, not a helper beside it, as podman re-executes itself
there: files owned by subordinate ids (a 0700 directory of uid 1000 in a layer) are closed to
the user outside it, so the store's deletes, changes and checks must run inside it too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import NotSupported
from .layer import IDMap

__all__ = [
    "ROOTLESS_GID_VARIABLE",
    "ROOTLESS_UID_VARIABLE",
    "NamespaceMapping",
    "describe_ownership",
    "overlay_namespace_options",
    "podman_mapping",
    "read_id_map",
    "run_in_namespace",
    "running_in_user_namespace",
    "subordinate_ranges",
]

ROOTLESS_UID_VARIABLE = "_CONTAINERS_ROOTLESS_UID"
"""What containers/storage and podman read (``unshare.GetRootlessUID``) to know the user a
namespace was made for; ``podman unshare`` sets it, and so does :func:`run_in_namespace`."""
ROOTLESS_GID_VARIABLE = "_CONTAINERS_ROOTLESS_GID"
_CONFIGURED_VARIABLE = "_CONTAINERS_USERNS_CONFIGURED"
"""Set in the namespace so a podman started there does not try to make another one."""

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_INITIAL_MAP = ("0", "0", "4294967295")


def running_in_user_namespace() -> bool:
    """Whether this process runs in a user namespace other than the initial one: the first
    line of ``/proc/self/uid_map`` is not ``0 0 4294967295`` (containers/storage's
    ``RunningInUserNS``)."""
    try:
        with open("/proc/self/uid_map") as file:
            first = file.readline().split()
    except OSError:
        return False
    return tuple(first) != _INITIAL_MAP


def overlay_namespace_options() -> list[str]:
    """The overlay mount options a user namespace needs: ``userxattr`` (Linux 5.11+: overlay
    keeps its whiteout and opaque xattrs as ``user.overlay.*``, which the namespace's root may
    set), as containers/storage adds it when ``unshare.IsRootless()`` without a mount
    program; none outside one."""
    return ["userxattr"] if running_in_user_namespace() else []


def read_id_map(path: str = "/proc/self/uid_map") -> tuple[IDMap, ...]:
    """The mapping in a ``uid_map``/``gid_map`` file, as IDMap ranges."""
    with open(path) as file:
        return tuple(
            IDMap(container_id=int(parts[0]), host_id=int(parts[1]), size=int(parts[2]))
            for parts in (line.split() for line in file)
            if len(parts) == 3
        )


@dataclass(frozen=True, slots=True)
class NamespaceMapping:
    """The uid and gid maps of a user namespace (namespace ids to host ids)."""

    uid_map: tuple[IDMap, ...]
    gid_map: tuple[IDMap, ...]

    def describe(self) -> str:
        """``uids 0->1001 (1), 1->100000 (65536); gids ...`` for messages and status."""

        def ranges(maps: tuple[IDMap, ...]) -> str:
            return ", ".join(f"{m.container_id}->{m.host_id} ({m.size})" for m in maps)

        return f"uids {ranges(self.uid_map)}; gids {ranges(self.gid_map)}"


def subordinate_ranges(path: str, user: str, uid: int) -> list[tuple[int, int]]:
    """The (first id, count) ranges ``path`` (``/etc/subuid`` or ``/etc/subgid``) gives the
    user, named by login name or by decimal id as shadow's ``newuidmap`` accepts, in file
    order. A missing file gives no ranges; malformed lines are skipped, as shadow skips them."""
    found = []
    try:
        with open(path) as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            found.append((start, count))
    return found


def _mapping_for(own: int, ranges: list[tuple[int, int]]) -> tuple[IDMap, ...]:
    maps = [IDMap(container_id=0, host_id=own, size=1)]
    next_id = 1
    for start, count in ranges:
        maps.append(IDMap(container_id=next_id, host_id=start, size=count))
        next_id += count
    return tuple(maps)


def podman_mapping(
    uid: int | None = None,
    gid: int | None = None,
    *,
    subuid_path: str = "/etc/subuid",
    subgid_path: str = "/etc/subgid",
) -> NamespaceMapping:
    """The mapping rootless podman gives the user ``uid`` (default: this process's): its own
    uid and gid as 0, its subordinate ranges from 1 on. NotSupported, saying what is missing,
    when the user has no range in either file."""
    import pwd

    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    uids = subordinate_ranges(subuid_path, name, uid)
    gids = subordinate_ranges(subgid_path, name, uid)
    missing = [path for path, found in ((subuid_path, uids), (subgid_path, gids)) if not found]
    if missing:
        raise NotSupported(
            f"no user namespace for {name} (uid {uid}): no range for it in "
            f"{' or '.join(missing)} (add one with 'usermod --add-subuids FIRST-LAST "
            f"--add-subgids FIRST-LAST {name}' as root)"
        )
    return NamespaceMapping(_mapping_for(uid, uids), _mapping_for(gid, gids))


# Runs in the child: unshare, tell the parent, wait for the maps, become the namespace's root,
# exec the command. os.unshare is Python 3.12+; libc's is the same call.
_BOOTSTRAP = r"""
import ctypes, os, sys
ready, go, flags = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if hasattr(os, "unshare"):
    try:
        os.unshare(flags)
        failure = None
    except OSError as exc:
        failure = exc.errno
else:
    libc = ctypes.CDLL(None, use_errno=True)
    failure = ctypes.get_errno() if libc.unshare(flags) != 0 else None
if failure is not None:
    os.write(ready, f"unshare failed: {os.strerror(failure)} (errno {failure})".encode())
    sys.exit(125)
os.write(ready, b"ok")
os.close(ready)
if os.read(go, 2) != b"go":
    sys.exit(125)
os.setresgid(0, 0, 0)
os.setresuid(0, 0, 0)
try:
    os.execvp(sys.argv[4], sys.argv[4:])
except OSError as exc:
    print(f"layerstore unshare: cannot run {sys.argv[4]!r}: {exc.strerror}", file=sys.stderr)
    sys.exit(127)
"""


def _map_arguments(maps: Sequence[IDMap]) -> list[str]:
    return [str(value) for m in maps for value in (m.container_id, m.host_id, m.size)]


def run_in_namespace(
    command: Sequence[str],
    mapping: NamespaceMapping | None = None,
    *,
    mount_namespace: bool = True,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``command`` as root of a new user namespace (and mount namespace, unless not
    ``mount_namespace``) mapped by ``mapping`` (default: :func:`podman_mapping`), as ``podman
    unshare`` does; its exit status (128 + N if signal N killed it). NotSupported says why
    where the machine refuses: no subordinate ids, no ``newuidmap``/``newgidmap``, the kernel
    refusing ``unshare`` or the helpers refusing the map."""
    import shutil  # not loaded by the many processes that never make a namespace
    import subprocess
    import sys

    if not command:
        raise ValueError("no command to run in the user namespace")
    if os.geteuid() == 0 and not running_in_user_namespace():
        raise NotSupported("root needs no user namespace: run the command itself")
    if running_in_user_namespace():
        raise NotSupported("already in a user namespace: run the command itself")
    mapping = mapping or podman_mapping()
    helpers = {name: shutil.which(name) for name in ("newuidmap", "newgidmap")}
    absent = [name for name, path in helpers.items() if path is None]
    if absent:
        raise NotSupported(
            f"no user namespace: {' and '.join(absent)} not found (Debian: apt-get install uidmap)"
        )
    environment = dict(os.environ if env is None else env)
    environment[ROOTLESS_UID_VARIABLE] = str(os.getuid())
    environment[ROOTLESS_GID_VARIABLE] = str(os.getgid())
    environment[_CONFIGURED_VARIABLE] = "done"
    flags = _CLONE_NEWUSER | (_CLONE_NEWNS if mount_namespace else 0)
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(ready_write), str(go_read), str(flags),
             *command],
            pass_fds=(ready_write, go_read),
            env=environment,
        )  # fmt: skip
    finally:
        os.close(ready_write)
        os.close(go_read)
    try:
        with os.fdopen(ready_read, "rb") as ready:
            answer = ready.read(4096)
        if answer != b"ok":
            child.wait()
            raise NotSupported(
                f"no user namespace: {answer.decode(errors='replace') or 'the helper died'} "
                "(the kernel or a sandbox refuses unprivileged user namespaces)"
            )
        for helper, maps in (("newuidmap", mapping.uid_map), ("newgidmap", mapping.gid_map)):
            done = subprocess.run(
                [str(helpers[helper]), str(child.pid), *_map_arguments(maps)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise NotSupported(
                    f"no user namespace: {helper} refused the map {mapping.describe()}: "
                    f"{done.stderr.strip() or f'exit status {done.returncode}'}"
                )
        os.write(go_write, b"go")
    except BaseException:
        os.close(go_write)
        go_write = -1
        child.kill()
        child.wait()
        raise
    finally:
        if go_write >= 0:
            os.close(go_write)
    while True:
        try:
            status = child.wait()
            break
        except KeyboardInterrupt:
            continue  # the terminal sent the command SIGINT too: it decides, we wait for it
    return 128 - status if status < 0 else status  # killed by a signal: as a shell says it


def describe_ownership(force_mask: int | None, ignore_chown_errors: bool) -> tuple[str, str]:
    """How a store opened by this process keeps owners, and why: (mode, reason), for
    ``status()`` and messages."""
    if running_in_user_namespace():
        mapping = NamespaceMapping(read_id_map(), read_id_map("/proc/self/gid_map"))
        mode = f"user namespace ({mapping.describe()})"
        if force_mask is not None:
            return f"{mode}, force_mask {force_mask:04o}", "asked for (--force-mask)"
        return mode, (
            "this process runs in a user namespace: owners in the mapped ranges are set for "
            "real, as rootless podman sets them; device nodes are skipped (Go skips them too)"
        )
    if os.geteuid() == 0:
        if force_mask is not None:
            return f"root, force_mask {force_mask:04o}", "asked for (--force-mask)"
        if ignore_chown_errors:
            return "root, ignore_chown_errors", "asked for (--ignore-chown-errors)"
        return "root", "owners, modes and devices are set as the tar says"
    try:
        podman_mapping()
        namespace = (
            "'layerstore unshare -- COMMAND' runs COMMAND in a user namespace with real owners"
        )
    except NotSupported as exc:
        namespace = str(exc)
    if force_mask is not None:
        return f"unprivileged, force_mask {force_mask:04o}", (
            f"asked for (--force-mask): owners, modes and devices go into "
            f"user.containers.override_stat; {namespace}"
        )
    if ignore_chown_errors:
        return "unprivileged, ignore_chown_errors", (
            f"asked for (--ignore-chown-errors): owners are squashed to you; {namespace}"
        )
    return "unprivileged", f"owners are squashed to you and devices left out; {namespace}"
