"""Why pull and push use urllib3: a blob's download through urllib3 and through httpx, from
Debian's ``docker-registry`` started on 127.0.0.1 for the run (storage on /dev/shm).

    pip install httpx   # not a dependency of layerstore: only this comparison needs it
    python benches/http_clients.py [--megabytes 200] [--rounds 3]

Both read the body 1 MiB at a time, as an apply reads a layer, alternating; the figure is the
median throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import urllib3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_registry(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {directory / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    base = f"http://127.0.0.1:{port}"
    pool = urllib3.PoolManager()
    for _ in range(100):
        try:
            if pool.request("GET", f"{base}/v2/", retries=False).status == 200:
                return process, base
        except urllib3.exceptions.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("docker-registry did not start")


def upload(base: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    pool = urllib3.PoolManager()
    location = pool.request("POST", f"{base}/v2/bench/blob/blobs/uploads/").headers["Location"]
    separator = "&" if "?" in location else "?"
    response = pool.request("PUT", f"{location}{separator}digest={digest}", body=data,
                            headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert response.status == 201, response.status
    return f"{base}/v2/bench/blob/blobs/{digest}"


def with_urllib3(url: str) -> int:
    response = urllib3.PoolManager().request(
        "GET", url, preload_content=False, decode_content=False
    )
    buffer = bytearray(1 << 20)
    total = 0
    while count := response.readinto(buffer):
        total += count
    return total


def with_httpx(url: str) -> int:
    import httpx

    total = 0
    with httpx.Client() as client, client.stream("GET", url) as response:
        for chunk in response.iter_raw(1 << 20):
            total += len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch, prefix="http-clients-") as work:
        process, base = start_registry(Path(work))
        try:
            url = upload(base, os.urandom(arguments.megabytes << 20))
            clients: dict[str, Callable[[str], int]] = {"urllib3": with_urllib3,
                                                         "httpx": with_httpx}  # fmt: skip
            rates: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(arguments.rounds):
                for name, client in clients.items():
                    started = time.perf_counter()
                    count = client(url)
                    rates[name].append(count / (time.perf_counter() - started) / 1e6)
            for name, values in rates.items():
                print(f"{name}: median {statistics.median(values):.0f} MB/s "
                      f"({', '.join(f'{value:.0f}' for value in values)})")  # fmt: skip
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
