"""Sibling nodes (issue 9): N nodes fetch each file from the origin once, survive the loss of
a blob's owner, and refuse sibling requests that are not signed with the cluster secret.

Three `hubcache serve` processes list each other as `cluster` peers, in front of one emulator;
the emulator's CDN counts the bytes of every file it serves.
"""

from __future__ import annotations

import signal
import threading
import time

from cluster_helpers import SECRET, rendezvous_order, sibling_get, sign
from helpers import VALID, MiB, resolve_path, sha256, stream_sha256, wait_until

BIG = ("acme/big-model", "main", "big.bin")


def download_all(nodes, clients: int, path: str) -> list:
    """`clients` concurrent GETs of `path`, spread round-robin over `nodes`; each result is
    (node index, status, sha256, bytes) or the exception raised."""
    results: list = [None] * clients

    def client(i: int) -> None:
        node = nodes[i % len(nodes)]
        try:
            results[i] = (i % len(nodes), *stream_sha256(node.url + path))
        except Exception as e:  # noqa: BLE001 - reported by the assertions
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "a client did not finish within 180 s"
    return results


def owner_of(nodes, blob: str):
    urls = [n.url for n in nodes]
    first = rendezvous_order(urls, blob)[0]
    return nodes[urls.index(first)]


def test_twelve_cold_clients_on_three_nodes_fetch_the_file_from_the_origin_once(
        emu_factory, cluster_factory):
    emu = emu_factory(big_size=32 * MiB)
    nodes = cluster_factory(emu, 3)
    entry = emu.file(*BIG)
    results = download_all(nodes, 12, resolve_path(*BIG))
    for r in results:
        assert not isinstance(r, Exception), r
        _, status, sha, read = r
        assert status == 200
        assert read == entry["size"]
        assert sha == entry["sha256"]
    fetched = emu.cdn_bytes_for(entry["sha256"])
    print(f"origin bytes / file size, 12 clients on 3 nodes: {fetched / entry['size']:.3f}")
    assert fetched <= entry["size"] * 1.05, f"the origin served {fetched} bytes of {entry['size']}"
    # The non-owners got the bytes from the owner, and it says so on /metrics.
    owner = owner_of(nodes, entry["sha256"])
    received = sum(n.metric("hubcache_sibling_bytes_total", 'direction="received"')
                   for n in nodes if n is not owner)
    served = owner.metric("hubcache_sibling_bytes_total", 'direction="served"')
    assert received >= entry["size"], received
    assert served >= received
    assert owner.metric("hubcache_sibling_requests_total", 'outcome="served",role="owner"') > 0
    assert owner.metric("hubcache_upstream_fill_bytes_total") >= entry["size"]
    for n in nodes:
        if n is not owner:
            assert n.metric("hubcache_upstream_fill_bytes_total") < entry["size"] * 0.05


def test_the_owner_killed_mid_fill_leaves_the_other_nodes_clients_byte_exact(
        emu_factory, cluster_factory):
    # A slow CDN (4 MiB/s per connection) so the owner is killed in the middle of its fill.
    emu = emu_factory(big_size=32 * MiB, extra=("--cdn-rate", str(4 * MiB)))
    nodes = cluster_factory(emu, 3)
    entry = emu.file(*BIG)
    owner = owner_of(nodes, entry["sha256"])
    others = [n for n in nodes if n is not owner]
    results: list = []
    threads = []
    for n in others:
        for _ in range(2):
            t = threading.Thread(target=lambda n=n: results.append(
                stream_sha256(n.url + resolve_path(*BIG))))
            threads.append(t)
            t.start()
    # Kill the owner once it has sent its siblings some bytes but not all.
    wait_until(lambda: sum(n.metric("hubcache_sibling_bytes_total", 'direction="received"')
                           for n in others) >= 2 * MiB, timeout=60, what="sibling bytes flowing")
    owner.stop(sig=signal.SIGKILL)
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    assert len(results) == 4
    for status, sha, read in results:
        assert (status, read, sha) == (200, entry["size"], entry["sha256"])
    # The rest came from the origin once more at most, not once per node.
    fetched = emu.cdn_bytes_for(entry["sha256"])
    print(f"origin bytes / file size, owner killed mid-fill: {fetched / entry['size']:.3f}")
    assert fetched <= entry["size"] * 2.1, f"the origin served {fetched} bytes"


def test_forged_unsigned_and_stale_sibling_requests_are_refused(emu, cluster_factory):
    nodes = cluster_factory(emu, 2)
    repo, rev, path = BIG
    entry = emu.file(*BIG)
    commit = emu.commit(repo, rev)
    path_and_query = (f"/_hubcache/sibling/blob/{entry['sha256']}?repo=models%2F{repo.replace('/', '%2F')}"
                      f"&commit={commit}&path={path}&size={entry['size']}&verifiable=1")
    node = nodes[0]
    rng = "bytes=0-9"
    # Signed with the cluster secret: served.
    ok = sibling_get(node, path_and_query, sign(SECRET, "GET", path_and_query, rng, None))
    assert ok.status_code == 206, ok.text
    assert ok.content == emu.file_bytes(repo, rev, path)[:10]
    now = int(time.time())
    cases = {
        "unsigned": {"Range": rng},
        "forged (another secret)": sign("not-the-cluster-secret-0000", "GET", path_and_query, rng, None),
        "stale (2 minutes old)": sign(SECRET, "GET", path_and_query, rng, None, at=now - 120),
        "from the future": sign(SECRET, "GET", path_and_query, rng, None, at=now + 120),
        "signed for another range": {**sign(SECRET, "GET", path_and_query, "bytes=0-1", None),
                                     "Range": rng},
        "signed for another token": {**sign(SECRET, "GET", path_and_query, rng, "Bearer hf_a"),
                                     "Authorization": "Bearer hf_b"},
    }
    for what, headers in cases.items():
        r = sibling_get(node, path_and_query, headers)
        assert r.status_code == 403, f"{what}: {r.status_code} {r.text}"
    ping = sibling_get(node, "/_hubcache/sibling/ping", {})
    assert ping.status_code == 403
    assert node.metric("hubcache_sibling_requests_total", 'outcome="refused",role="owner"') >= 7


GATED = "acme/gated-model"


def test_gated_bytes_go_between_nodes_only_on_behalf_of_a_verified_token(emu, cluster_factory):
    nodes = cluster_factory(emu, 3)
    path = "model.safetensors"
    entry = emu.file(GATED, "main", path)
    owner = owner_of(nodes, entry["sha256"])
    other = next(n for n in nodes if n is not owner)
    # The owner learns from the hub that the repo is gated (its repo info says so).
    assert owner.get(f"/api/models/{GATED}", headers=VALID).status_code == 200
    assert owner.resolve("GET", GATED, "main", path).status_code == 401
    # Alice, through a node that does not own the blob: byte-exact, the bytes via the owner.
    r = other.resolve("GET", GATED, "main", path, headers=VALID)
    assert r.status_code == 200
    assert sha256(r.content) == entry["sha256"]
    assert other.metric("hubcache_sibling_bytes_total", 'direction="received"') >= entry["size"]
    assert emu.cdn_bytes_for(entry["sha256"]) <= entry["size"] * 1.05
    # A signed request for the gated repo's blob without a client token: refused by the owner.
    commit = emu.commit(GATED, "main")
    pq = (f"/_hubcache/sibling/blob/{entry['sha256']}?repo=models%2Facme%2Fgated-model"
          f"&commit={commit}&path={path}&size={entry['size']}&verifiable=1")
    rng = "bytes=0-9"
    anonymous = sibling_get(owner, pq, sign(SECRET, "GET", pq, rng, None))
    assert anonymous.status_code == 403, anonymous.text
    token = VALID["Authorization"]
    with_token = sibling_get(owner, pq, sign(SECRET, "GET", pq, rng, token))
    assert with_token.status_code == 206, with_token.text
    assert with_token.content == emu.file_bytes(GATED, "main", path)[:10]


def test_a_returning_owner_gets_the_blob_from_its_siblings_not_the_origin(
        emu_factory, cluster_factory):
    emu = emu_factory(big_size=24 * MiB)
    nodes = cluster_factory(emu, 3)
    entry = emu.file(*BIG)
    owner = owner_of(nodes, entry["sha256"])
    others = [n for n in nodes if n is not owner]
    owner.stop()
    # While the owner is away, the next node in rendezvous order owns the blob.
    for n in others:
        status, sha, read = stream_sha256(n.url + resolve_path(*BIG))
        assert (status, read, sha) == (200, entry["size"], entry["sha256"])
    assert emu.cdn_bytes_for(entry["sha256"]) <= entry["size"] * 1.05
    # Back (same URL, same cache): it owns the blob again and fills it from the others.
    owner.start()
    status, sha, read = stream_sha256(owner.url + resolve_path(*BIG))
    assert (status, read, sha) == (200, entry["size"], entry["sha256"])
    assert owner.metric("hubcache_sibling_bytes_total", 'direction="received"') >= entry["size"]
    fetched = emu.cdn_bytes_for(entry["sha256"])
    assert fetched <= entry["size"] * 1.05, f"the origin served {fetched} bytes of {entry['size']}"
