"""Go's ``path.Clean`` and ``path.Base`` on byte strings.

tar-split decides which names are duplicates with Go's ``Clean``, and containers/storage picks
whiteout entries with Go's ``Base``; matching them exactly keeps our tar-split files and uid/gid
sets equal to Go's. Names are bytes: tar names need not be UTF-8.
"""

from __future__ import annotations

__all__ = ["base", "clean"]


def clean(path: bytes) -> bytes:
    """The shortest equivalent path: no ``//``, no ``.`` elements, ``..`` resolved lexically."""
    if not path:
        return b"."
    rooted = path.startswith(b"/")
    parts: list[bytes] = []
    for element in path.split(b"/"):
        if element in (b"", b"."):
            continue
        if element == b"..":
            if parts and parts[-1] != b"..":
                parts.pop()
            elif not rooted:
                parts.append(b"..")
            continue
        parts.append(element)
    joined = b"/".join(parts)
    if rooted:
        return b"/" + joined
    return joined or b"."


def base(path: bytes) -> bytes:
    """The last element of ``path``, trailing slashes ignored (``""`` gives ``"."``)."""
    if not path:
        return b"."
    stripped = path.rstrip(b"/")
    if not stripped:
        return b"/"
    return stripped.rsplit(b"/", 1)[-1]
