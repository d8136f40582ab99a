"""Type stub of the Rust extension ``layerstore._native`` (see rust/lib.rs)."""

__all__ = ["copy_tree"]

def copy_tree(source: str, destination: str) -> None:
    """Copy the directory tree ``source`` to ``destination``, which must not exist."""
