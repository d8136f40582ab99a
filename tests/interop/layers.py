"""The layers both suites make: a small image with a parent chain, whiteouts and an opaque dir."""

from __future__ import annotations

import gzip

from ..tarballs import Entry, build_tar

BASE_TAR = build_tar(
    [
        Entry(b"etc", "dir", mode=0o755),
        Entry(b"etc/hostname", "file", data=b"base\n"),
        Entry(b"etc/doomed", "file", data=b"gone soon\n"),
        Entry(b"usr", "dir", mode=0o755),
        Entry(b"usr/bin", "dir", mode=0o755),
        Entry(b"usr/bin/tool", "file", data=b"#!/bin/sh\n" * 100, mode=0o755),
        Entry(b"usr/bin/alias", "symlink", target=b"tool"),
        Entry(b"usr/bin/hard", "hardlink", target=b"usr/bin/tool", mode=0o755),
        Entry(b"var", "dir", mode=0o755),
        Entry(b"var/cache", "dir", mode=0o755),
        Entry(b"var/cache/old", "file", data=b"stale"),
    ]
)
WHITEOUT_TAR = build_tar(
    [
        Entry(b"etc", "dir", mode=0o755),
        Entry(b"etc/.wh.doomed", "file"),
        Entry(b"etc/hostname", "file", data=b"upper\n", mtime=1_750_000_000),
        Entry(b"var", "dir", mode=0o755),
        Entry(b"var/cache", "dir", mode=0o755),
        Entry(b"var/cache/.wh..wh..opq", "file"),
        Entry(b"var/cache/fresh", "file", data=b"fresh"),
    ]
)
BASE_BLOB = gzip.compress(BASE_TAR, mtime=0)
WHITEOUT_BLOB = gzip.compress(WHITEOUT_TAR, mtime=0)
