"""Names a package exports but imports only when they are first used (PEP 562).

``import layerstore`` runs before every command of the CLI, and most calls need a small part of
the package: a package's ``__init__`` lists where each public name lives, and the module that
defines it is imported on first access (``layerstore.LayerStore``, ``from layerstore import
LayerStore``), then cached in the package's namespace. Type checkers see the names through the
package's ``if TYPE_CHECKING:`` imports, so the static view is what eager imports gave.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know it)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, exports: Mapping[str, str], submodules: Iterable[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``.

    ``exports`` maps each lazily exported name to the module (relative to ``package``) that
    defines it; ``submodules`` are the package's modules that are reachable as attributes
    (``layerstore.errors``) without being imported first, as eager imports made them.
    """
    namespace = sys.modules[package].__dict__
    known = frozenset(submodules)

    def get_attribute(name: str) -> object:
        module = exports.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module, package), name)
        elif name in known:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted({*namespace, *exports, *known})

    return get_attribute, names
