"""Sibling nodes and eviction (issue 9): the copies a node keeps of blobs another node owns are
evicted before the blobs it owns, whatever the eviction policy's order.

Two nodes in one cluster with a small LRU budget; every file is downloaded through node 0.
Plain LRU would evict node 0's oldest files; here the files node 1 owns go first.
"""

from __future__ import annotations

import time

from cluster_helpers import rendezvous_order
from evict_helpers import cache_bytes, download, eviction, make_repo, metric, on_disk, repo_arg
from helpers import MiB, sha256, wait_until

REPO = "acme/cluster-evict"


def test_a_non_owner_evicts_its_copies_of_blobs_another_node_owns_first(
        tmp_path, emu_factory, cluster_factory):
    data = make_repo(tmp_path / "repo", {f"f{i:02}.bin": MiB for i in range(16)}, seed=9)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "repo"))
    budget = 7 * MiB // 2
    nodes = cluster_factory(emu, 2, cache={"block_size": "1MiB"},
                            **eviction("lru", max_size=budget))
    me = nodes[0]
    urls = [n.url for n in nodes]
    owned = [name for name in sorted(data)
             if rendezvous_order(urls, sha256(data[name]))[0] == me.url]
    foreign = [name for name in sorted(data) if name not in owned]
    assert len(owned) >= 3 and len(foreign) >= 2, (owned, foreign)
    mine, theirs = owned[:3], foreign[:2]
    # Oldest first: two files node 0 owns, then two node 1 owns (the cache goes over its
    # budget with the fourth), then a third file node 0 owns (over again).
    for name in [mine[0], mine[1], theirs[0], theirs[1], mine[2]]:
        assert download(me, REPO, name) == data[name]
        time.sleep(0.3)             # distinct last reads; the fill lets go of the blob
    wait_until(lambda: not any(on_disk(me.cache_dir, data[n]) for n in theirs), 30,
               what="node 0 to evict its copies of node 1's blobs")
    time.sleep(1)
    # Plain LRU would have taken mine[0] and mine[1], the least recently read.
    assert all(on_disk(me.cache_dir, data[n]) for n in mine), "node 0 evicted a blob it owns"
    assert cache_bytes(me.cache_dir) <= budget
    assert metric(me, "hubcache_evicted_blobs_total", 'policy="lru",reason="budget"') == 2
    # The owner still has them: node 0 gets them back from it, not from the origin.
    before = sum(emu.cdn_bytes_for(sha256(data[n])) for n in theirs)
    assert download(me, REPO, theirs[0]) == data[theirs[0]]
    assert sum(emu.cdn_bytes_for(sha256(data[n])) for n in theirs) == before
