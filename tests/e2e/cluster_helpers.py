"""Several hubcache nodes in one cluster (`cluster:` config), for the sibling tests.

Every node's port is picked before any starts, so each config can list the others as peers.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import requests

from helpers import Mirror, free_port, upstream_entry

SECRET = "e2e-cluster-secret-0123456789"


class ClusterNode(Mirror):
    """A mirror on a port fixed in advance (its cluster URL), restarted on the same port."""

    def __init__(self, binary: str, workdir: Path, upstreams: list, fixed_port: int, **overrides):
        self.fixed_port = fixed_port
        super().__init__(binary, workdir, upstreams, **overrides)

    def start(self, port: int | None = None, **overrides) -> None:
        super().start(port=port or self.fixed_port, **overrides)


def start_cluster(binary: str, workdir: Path, upstream, n: int, **overrides) -> list[ClusterNode]:
    """Start `n` nodes in front of `upstream`, each listing the others as peers."""
    ports = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    nodes = []
    for i, port in enumerate(ports):
        cluster = {"self": urls[i], "peers": [u for u in urls if u != urls[i]], "secret": SECRET}
        nodes.append(ClusterNode(binary, workdir / f"node{i}", [upstream_entry(upstream)], port,
                                 name=f"node{i}", cluster=cluster, **overrides))
    return nodes


def rendezvous_order(urls: list[str], key: str) -> list[str]:
    """The nodes in rendezvous order of `key`, as hubcache ranks them (docs/cluster.md)."""
    def weight(url: str) -> int:
        base = url.rstrip("/") + "/"
        d = hashlib.sha256(b"hubcache-rendezvous-v1\0" + base.encode() + b"\0" + key.encode()).digest()
        return int.from_bytes(d[:8], "big")
    return sorted(urls, key=lambda u: (-weight(u), u.rstrip("/") + "/"))


def sign(secret: str, method: str, path_and_query: str, range_: str | None, auth: str | None,
         at: int | None = None) -> dict:
    """The headers of a sibling request signed with `secret` at unix time `at`."""
    at = int(time.time()) if at is None else at
    auth_digest = hashlib.sha256(auth.encode()).hexdigest() if auth else "-"
    message = f"hubcache-sibling-v1\n{method}\n{path_and_query}\n{range_ or '-'}\n{at}\n{auth_digest}"
    sig = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    headers = {"x-hubcache-sibling-time": str(at), "x-hubcache-sibling-signature": sig}
    if range_:
        headers["Range"] = range_
    if auth:
        headers["Authorization"] = auth
    return headers


def sibling_get(node: Mirror, path_and_query: str, headers: dict) -> requests.Response:
    return requests.get(node.url + path_and_query, headers=headers, timeout=60)
