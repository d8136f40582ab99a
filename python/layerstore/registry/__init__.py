"""Registries: pull and push over the OCI distribution API.

``reference`` parses ``REGISTRY/REPOSITORY[:TAG][@DIGEST]``, ``auth`` finds credentials and
reads challenges, ``client`` speaks HTTP (urllib3) with retries, tokens and resumable blob
streams, ``pull`` and ``push`` move images. :meth:`LayerStore.pull` and
:meth:`LayerStore.push` are the entry points; docs/registries.md has the details.
"""

from __future__ import annotations

from .auth import Credentials, find_credentials
from .pull import pull_image
from .push import push_image
from .reference import RegistryReference, parse_registry_reference

__all__ = [
    "Credentials",
    "RegistryReference",
    "find_credentials",
    "parse_registry_reference",
    "pull_image",
    "push_image",
]
