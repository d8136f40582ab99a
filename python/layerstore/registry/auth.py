"""Who we are to a registry: credentials from the files podman and docker users have, and the
two schemes registries ask for (RFC 7617 basic, and the bearer token flow of Docker's
distribution: a ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge answered
with a token from the realm, renewed when it expires)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import RegistryError

__all__ = ["Challenge", "Credentials", "find_credentials", "parse_challenge"]


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


def auth_files(environ: Mapping[str, str] | None = None) -> list[str]:
    """Where credentials are looked for, first match wins: ``REGISTRY_AUTH_FILE``, podman's
    ``$XDG_RUNTIME_DIR/containers/auth.json`` and ``~/.config/containers/auth.json``, then
    docker's ``~/.docker/config.json`` (``$DOCKER_CONFIG/config.json``)."""
    environ = os.environ if environ is None else environ
    home = environ.get("HOME") or os.path.expanduser("~")
    files = []
    if environ.get("REGISTRY_AUTH_FILE"):
        files.append(environ["REGISTRY_AUTH_FILE"])
    if environ.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files.append(os.path.join(config_home, "containers", "auth.json"))
    docker = environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker")
    files.append(os.path.join(docker, "config.json"))
    return files


def find_credentials(
    registry: str, repository: str, files: list[str] | None = None
) -> Credentials | None:
    """The credentials an auth file holds for ``registry`` (or ``registry/repository`` and
    its parents, as podman also keys them), else None."""
    candidates = [f"{registry}/{repository}"]
    parts = repository.split("/")
    candidates += [f"{registry}/{'/'.join(parts[:n])}" for n in range(len(parts) - 1, 0, -1)]
    candidates += [registry, f"https://{registry}", f"http://{registry}"]
    if registry == "docker.io":
        candidates += ["https://index.docker.io/v1/", "index.docker.io"]
    for path in files if files is not None else auth_files():
        try:
            with open(path, "rb") as source:
                auths = json.load(source).get("auths") or {}
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError) as exc:
            raise RegistryError(f"cannot read the credentials in {path}: {exc}") from None
        for key in candidates:
            entry = auths.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
                try:
                    decoded = base64.b64decode(entry["auth"]).decode("utf-8")
                except ValueError:
                    raise RegistryError(f"{path}: the entry for {key} is not base64") from None
                username, _, password = decoded.partition(":")
                return Credentials(username, password)
    return None


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    """``basic`` or ``bearer``."""
    parameters: Mapping[str, str]


_PARAMETER = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge:
    """A ``WWW-Authenticate`` header's scheme and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    parameters = {
        match.group(1).lower(): match.group(2) if match.group(2) is not None else match.group(3)
        for match in _PARAMETER.finditer(rest)
    }
    return Challenge(scheme.lower(), parameters)
