"""podman, skopeo and buildah on a private store that layerstore opens too (issue 14).

Every call gets its own root, storage.conf, containers.conf (runtime, CNI config directory,
events log), registries.conf, policy, XDG_RUNTIME_DIR, TMPDIR and HOME below the test's
directory, and a run root in a short directory of /tmp (podman wants at most 50 characters).
skopeo and buildah run in their own mount namespace with a tmpfs on /var/lib (see
:meth:`Clients._isolated`), so the machine's own container state is never read or written;
``conftest.py`` checks that. :meth:`Clients.cleanup` unmounts what the tools or layerstore left
mounted, removes containers, and checks that nothing is left.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layerstore import LayerStore
from layerstore.engines import Engine

from ..tarballs import Entry, build_tar
from .layers import BASE_TAR, WHITEOUT_TAR

TOOLS = ("podman", "skopeo", "buildah", "runc", "unshare")
MISSING_TOOLS = "apt-get install podman skopeo buildah runc"
BUSYBOX = "/bin/busybox"
MISSING_BUSYBOX = "podman run needs a static busybox: apt-get install busybox-static"
TIMEOUT = 120
IMAGE = "localhost/layerstore-test:1"
IMAGE_REF = "test"


def require_tools(*names: str) -> None:
    missing = [name for name in names or TOOLS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: {MISSING_TOOLS}")


def static_busybox() -> str | None:
    """Debian's busybox-static binary, when installed (podman run needs something to run)."""
    if not os.path.exists(BUSYBOX):
        return None
    with open(BUSYBOX, "rb") as binary:
        head = binary.read(1 << 16)
    # A static ELF has no PT_INTERP, so no interpreter path in its first pages.
    return None if b"/lib64/ld-linux" in head or b"/lib/ld-" in head else BUSYBOX


def _ulimits() -> list[str]:
    """podman run's limits: within the shell's hard limits, nproc at most 32768."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    processes = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    files = 1024 if files == resource.RLIM_INFINITY else min(files, 1024)
    processes = 32768 if processes == resource.RLIM_INFINITY else min(processes, 32768)
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={processes}:{processes}"]


# -- the image the tests copy in -------------------------------------------------------------


@functools.cache
def busybox_tar() -> bytes:
    """A bottom layer with a static busybox, so ``podman run IMAGE /bin/busybox true`` works,
    and the trees containers change: /var/lib/app, and /opt/app which no other layer has."""
    busybox = static_busybox()
    data = Path(busybox).read_bytes() if busybox else b"#!/bin/false\n"
    return build_tar(
        [
            Entry(b"bin", "dir", mode=0o755),
            Entry(b"bin/busybox", "file", data=data, mode=0o755),
            Entry(b"bin/sh", "symlink", target=b"busybox"),
            Entry(b"etc", "dir", mode=0o755),
            Entry(b"etc/motd", "file", data=b"welcome\n"),
            Entry(b"opt", "dir", mode=0o755),
            Entry(b"opt/app", "dir", mode=0o755),
            Entry(b"opt/app/conf", "file", data=b"level = 1\n"),
            Entry(b"tmp", "dir", mode=0o1777),
            Entry(b"var", "dir", mode=0o755),
            Entry(b"var/lib", "dir", mode=0o755),
            Entry(b"var/lib/app", "dir", mode=0o755),
            Entry(b"var/lib/app/data", "dir", mode=0o755),
            Entry(b"var/lib/app/data/keep", "file", data=b"keep\n"),
            Entry(b"var/lib/app/state", "file", data=b"state 1\n"),
            Entry(b"var/lib/app/obsolete", "file", data=b"remove me\n"),
        ]
    )


@functools.cache
def image_layers() -> tuple[tuple[bytes, bytes], ...]:
    """(uncompressed tar, gzip blob) of the test image, bottom first: busybox, then the
    interop suite's base layer and its layer with whiteouts and an opaque directory."""
    tars = (busybox_tar(), BASE_TAR, WHITEOUT_TAR)
    return tuple((tar, gzip.compress(tar, compresslevel=1, mtime=0)) for tar in tars)


def small_tar(tag: str, size: int = 0) -> bytes:
    """A layer whose contents (and so DiffID) differ with ``tag``, with ``size`` more bytes."""
    name = b"srv/" + tag.encode()
    entries = [Entry(b"srv", "dir", mode=0o755), Entry(name, "file", data=tag.encode())]
    if size:
        entries.append(Entry(name + b".data", "file", data=os.urandom(size)))
    return build_tar(entries)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


LAYER_TYPES = {
    True: "application/vnd.oci.image.layer.v1.tar+gzip",
    False: "application/vnd.oci.image.layer.v1.tar",
}


def write_oci_layout(directory: Path, ref: str, layers: Iterable[tuple[bytes, bytes]]) -> Path:
    """An OCI image layout at ``directory`` holding one image tagged ``ref``."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> dict[str, Any]:
        digest = sha256(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    layers = list(layers)
    config = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/busybox", "true"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for tar, _ in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "layerstore tests"}]
        * len(layers),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **blob(json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": LAYER_TYPES[compressed[:2] == b"\x1f\x8b"], **blob(compressed)}
            for _, compressed in layers
        ],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **blob(json.dumps(manifest).encode()),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def tar_tree(data: bytes) -> dict[str, tuple[object, ...]]:
    """Path -> (type, mode, uid, gid, size, content hash or link target) of a tarball, as
    :func:`.trees.merged_tree` describes a directory (hard links as the files they are)."""
    tree: dict[str, tuple[object, ...]] = {}
    contents: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            name = os.path.normpath(member.name.lstrip("/"))
            if name == ".":
                continue
            kind = {
                tarfile.DIRTYPE: 0o040000,
                tarfile.SYMTYPE: 0o120000,
                tarfile.CHRTYPE: 0o020000,
                tarfile.BLKTYPE: 0o060000,
                tarfile.FIFOTYPE: 0o010000,
            }.get(member.type, 0o100000)
            detail: object = None
            size = 0
            if member.islnk():
                detail = contents[os.path.normpath(member.linkname.lstrip("/"))]
                size = tree[os.path.normpath(member.linkname.lstrip("/"))][4]
            elif member.isreg():
                handle = archive.extractfile(member)
                assert handle is not None
                detail = contents[name] = hashlib.sha256(handle.read()).hexdigest()
                size = member.size
            elif member.issym():
                detail = member.linkname
            tree[name] = (kind, member.mode & 0o7777, member.uid, member.gid, size, detail)
    return tree


# -- the clients -----------------------------------------------------------------------------


@dataclass
class Clients:
    """The real clients on one private store: ``base`` holds it and their configuration."""

    base: Path
    driver: str

    def __post_init__(self) -> None:
        self.root = self.base / "storage"
        # podman refuses a run root longer than 50 characters (its sockets' paths must fit).
        self.run_root = Path(tempfile.mkdtemp(prefix="layerstore-podman-", dir="/tmp")) / "run"
        self._opened: list[LayerStore] = []
        self.conf = self.base / "conf"
        for directory in (self.conf, self.base / "xdg", self.base / "tmp", self.base / "home"):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.conf / "storage.conf").write_text(
            f'[storage]\ndriver = "{self.driver}"\n'
            f'graphroot = "{self.root}"\nrunroot = "{self.run_root}"\n'
        )
        (self.conf / "containers.conf").write_text(
            '[containers]\nnetns = "none"\n\n'
            # File locks, in tmp_dir: podman's default is one shared memory segment
            # (/dev/shm/libpod_lock) that every podman on the machine shares.
            '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nlock_type = "file"\n'
            f'runtime = "runc"\ntmp_dir = "{self.base / "tmp"}"\n'
            f'events_logfile_path = "{self.base / "events.log"}"\n\n'
            f'[engine.runtimes]\nrunc = ["{self.base / "runc"}"]\n\n'
            # The CNI backend (Debian's default here) locks and reads its config directory;
            # a private one keeps /etc/cni untouched.
            f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{self.base / "cni"}"\n'
        )
        (self.conf / "registries.conf").write_text("unqualified-search-registries = []\n")
        (self.conf / "policy.json").write_text(
            '{"default": [{"type": "insecureAcceptAnything"}]}\n'
        )
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CONTAINERS_STORAGE_CONF": str(self.conf / "storage.conf"),
            "CONTAINERS_CONF": str(self.conf / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(self.conf / "registries.conf"),
            "XDG_RUNTIME_DIR": str(self.base / "xdg"),
            "XDG_CONFIG_HOME": str(self.base / "home" / ".config"),
            "XDG_DATA_HOME": str(self.base / "home" / ".local" / "share"),
            "HOME": str(self.base / "home"),
            "TMPDIR": str(self.base / "tmp"),
            "BUILDAH_ISOLATION": "chroot",
        }
        # runc keeps its state in /run/runc unless told otherwise, and podman does not pass a
        # --runtime-flag on to the exit command that cleans a container up: a wrapper does.
        self.runtime = self.base / "runc"
        runc = shutil.which("runc") or "runc"
        self.runtime.write_text(f'#!/bin/sh\nexec {runc} --root "{self.base}/runc-state" "$@"\n')
        self.runtime.chmod(0o755)
        self.storage_flags = ["--root", str(self.root), "--runroot", str(self.run_root),
                              "--storage-driver", self.driver]  # fmt: skip

    @property
    def transport(self) -> str:
        """containers/image's name of this store, for skopeo and buildah."""
        return f"containers-storage:[{self.driver}@{self.root}+{self.run_root}]"

    def open(self, engine: Engine | str) -> LayerStore:
        """layerstore on the clients' store; closed by :meth:`cleanup`."""
        store = LayerStore(self.root, run_root=self.run_root, driver=self.driver, engine=engine)
        self._opened.append(store)
        return store

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr}"
            )
        return completed

    def _podman_command(self, arguments: tuple[str, ...]) -> list[str]:
        return ["podman", *self.storage_flags, "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", "--runtime", "runc",
                "--tmpdir", str(self.base / "tmp"), *arguments]  # fmt: skip

    def podman(self, *arguments: str) -> str:
        return self._run(self._podman_command(arguments)).stdout

    def podman_bytes(self, *arguments: str) -> bytes:
        """podman's output as bytes (``podman export``)."""
        completed = subprocess.run(self._podman_command(arguments), env=self.env,
                                   capture_output=True, timeout=TIMEOUT, check=False)  # fmt: skip
        assert completed.returncode == 0, completed.stderr.decode(errors="replace")
        return completed.stdout

    def podman_result(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """podman's exit status, output and errors, for calls that may fail."""
        return self._run(self._podman_command(arguments), check=False)

    def podman_json(self, *arguments: str) -> Any:
        return json.loads(self.podman(*arguments) or "null")

    def podman_run(self, image: str, *command: str) -> str:
        return self.podman("run", "--rm", "--pull", "never", "--network", "none",
                           *_ulimits(), image, *command)  # fmt: skip

    @staticmethod
    def _isolated(command: list[str]) -> list[str]:
        """``command`` in its own mount namespace with a tmpfs on /var/lib: containers/image
        (skopeo, buildah commit) writes its blob info cache to /var/lib/containers/cache
        when run as root, and nothing but an environment variable that also turns on
        containers/storage's rootless mode moves it. The store is seen as it is."""
        script = 'mount -t tmpfs -o mode=0755,size=64m layerstore-tests /var/lib && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", script, "isolated", *command]  # fmt: skip

    def skopeo(self, *arguments: str) -> str:
        command = ["skopeo", "--policy", str(self.conf / "policy.json"),
                   "--registries-conf", str(self.conf / "registries.conf"),
                   "--tmpdir", str(self.base / "tmp"), *arguments]  # fmt: skip
        return self._run(self._isolated(command)).stdout

    def copy_in(self, layout: Path, ref: str, name: str) -> None:
        """skopeo copy of an OCI layout's image into the store, as ``name``."""
        self.skopeo("copy", "--quiet", f"oci:{layout}:{ref}", f"{self.transport}{name}")

    def buildah(self, *arguments: str) -> str:
        return self._run(self._isolated(["buildah", *self.storage_flags, *arguments])).stdout

    def inspect(self, image: str) -> dict[str, Any]:
        return dict(self.podman_json("image", "inspect", image)[0])

    def _records(self, kind: str) -> list[dict[str, Any]]:
        """containers/storage's own records (images.json, containers.json, layers.json)."""
        path = self.root / f"{self.driver}-{kind}" / f"{kind}.json"
        return list(json.loads(path.read_text())) if path.exists() else []

    def top_layer(self, image: str) -> str:
        """The image's top layer id, from images.json (podman's inspect does not show it)."""
        image_id = self.inspect(image)["Id"]
        records = {record["id"]: record for record in self._records("images")}
        return str(records[image_id]["layer"])

    def container_layer(self, container: str) -> str:
        records = self._records("containers")
        return str(next(record for record in records if record["id"] == container)["layer"])

    def chain(self, top: str) -> list[str]:
        """``top`` and its parents, bottom first, from layers.json."""
        parents = {record["id"]: record.get("parent", "") for record in self._records("layers")}
        chain = []
        while top:
            chain.append(top)
            top = parents[top]
        return chain[::-1]

    def layer_ids(self) -> list[str]:
        return [record["id"] for record in self._records("layers")]

    def mounts_below(self) -> list[str]:
        """What is mounted in the store, its run root or the tools' directories."""
        mine = (f"{self.base}/", f"{self.run_root.parent}/")
        with open("/proc/self/mountinfo", encoding="utf-8") as table:
            points = [line.split(" ", 5)[4] for line in table]
        return sorted(point for point in points if point.startswith(mine))

    def _unmount_all(self) -> None:
        # A mount hidden below another (defect 1) shows once what covered it is gone: rounds.
        for _ in range(8):
            points = self.mounts_below()
            if not points:
                return
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)

    def cleanup(self) -> None:
        """Close layerstore, unmount everything below ``base`` and the run root, remove the
        containers and check that nothing is left (unmounting first: podman rm fails after
        10 s on a layer with a mount hidden below its merged directory)."""
        for store in self._opened:
            store.close()
        self._unmount_all()
        if (self.root / "libpod").exists():
            self.podman_result("rm", "--all", "--force")
            self.podman_result("image", "unmount", "--all", "--force")
        self._unmount_all()
        left = self.mounts_below()
        assert not left, f"mounts left behind: {left}"
        shutil.rmtree(self.run_root.parent)
