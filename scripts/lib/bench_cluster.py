"""The `--cluster N` phase of scripts/bench: N hubcache nodes in one cluster (each lists the
others as `cluster.peers`) in front of one emulator, cold caches, `--clients` concurrent
downloads of big.bin spread round-robin over the nodes. Reports the origin (CDN) bytes per
file, at the moment the last client finished and once background fills settled, and the
aggregate throughput of all clients. Method: docs/benchmark.md#cluster.
"""

from __future__ import annotations

import re
import time
import urllib.request

SECRET = "bench-cluster-secret-0123456789"
# The cluster's goal (issue 9): the origin serves each file once, within 5 %.
TARGET = 1.05


def distinct_ports(free_port, n: int) -> list[int]:
    ports: list[int] = []
    for _ in range(100 * n):
        if len(ports) == n:
            break
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def start_nodes(bench, lib, n: int, rep: int) -> list:
    """Start `n` nodes on ports fixed in advance (each config names the others)."""
    ports = distinct_ports(lib.free_port, 2 * n)
    ports, admin_ports = ports[:n], ports[n:]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    nodes = []
    for i, port in enumerate(ports):
        cluster = {"cluster": {"self": urls[i], "peers": [u for u in urls if u != urls[i]],
                               "secret": SECRET},
                   "admin": {"listen": f"127.0.0.1:{admin_ports[i]}"}}
        overrides = lib.deep_merge(bench.args.mirror_overrides, cluster)
        m = lib.Mirror(bench.procs, bench.binary, bench.tmp / f"cluster-node{i}", bench.emu.hub, overrides)
        m.fixed_port = port
        m.admin_url = f"http://127.0.0.1:{admin_ports[i]}"
        log_path = bench.tmp / f"mirror-cluster-node{i}.log"
        if log_path not in bench.mirror_logs:
            bench.mirror_logs.append(log_path)
        nodes.append(m)
        m.start(bench.new_cache(), log_path, label=f"cluster node {i} rep {rep}")
    return nodes


def metric(node, name: str, labels: str = "") -> float:
    """One sample of the node's admin /metrics (0 when absent or unreadable)."""
    try:
        with urllib.request.urlopen(node.admin_url + "/metrics", timeout=10) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+(\S+)$", line)
        if m and m.group(1) == want:
            return float(m.group(2))
    return 0.0


def stop_nodes(bench, nodes: list) -> None:
    for m in nodes:
        cache = m.cache_dir
        m.stop()
        for ev in m.events:
            bench.anomalies.append(f"cluster: {ev}")
        bench.drop_cache(cache)


def phase_cluster(bench, lib, n: int, reps: int) -> None:
    size, clients = bench.emu.big["size"], bench.args.clients
    section = f"cluster of {n} nodes"
    samples = []
    for rep in range(reps):
        nodes: list = []
        try:
            nodes = start_nodes(bench, lib, n, rep + 1)
            bench.emu.reset()
            items = [(bench.big_url(nodes[i % n].url), None) for i in range(clients)]
            t0 = time.monotonic()
            res, wall, digest = lib.run_curls(items, hash_index=0 if rep == 0 else None)
            lib.check(res, 200, size, f"{clients} concurrent cold downloads over {n} nodes")
            if rep == 0:
                bench.record_verification("cluster", f"{section}: 1 of {clients} concurrent cold downloads",
                                          bench.emu.big["sha256"], digest)
            st = bench.emu.stats()
            at_done, cdn_reqs = st["cdn_bytes"], len(st["cdn_requests"])
            settled, _ = bench.emu.cdn_bytes_settled(settle=1.0, limit=120)
            served = sum(r["bytes"] for r in res)
            received = sum(metric(m, "hubcache_sibling_bytes_total", 'direction="received"') for m in nodes)
            filled = [metric(m, "hubcache_upstream_fill_bytes_total") for m in nodes]
            samples.append({"sibling_received": received, "node_origin_fill": filled,"wall": wall, "served": served, "upstream_at_done": at_done,
                            "upstream_settled": settled, "cdn_requests": cdn_reqs,
                            "ttfb": [r["ttfb"] for r in res], "total": [r["total"] for r in res],
                            "seconds": time.monotonic() - t0})
            bench.log(f"  rep {rep + 1}/{reps}: {clients} cold clients on {n} nodes, aggregate "
                      f"{served / wall / 1e6:8.1f} MB/s, origin {lib.human_size(at_done)} at done / "
                      f"{lib.human_size(settled)} settled ({cdn_reqs} CDN requests) for a "
                      f"{lib.human_size(size)} file; nodes filled {[lib.human_size(f) for f in filled]} "
                      f"from the origin, {lib.human_size(received)} from siblings")
        finally:
            stop_nodes(bench, nodes)
    bench.raw["cluster"] = samples
    at_done = lib.median([s["upstream_at_done"] / size for s in samples])
    settled = lib.median([s["upstream_settled"] / size for s in samples])
    agg = lib.median([s["served"] / s["wall"] / 1e6 for s in samples])
    target = TARGET
    bench.row(section, f"{clients} cold clients: origin bytes / file size", "ratio", settled, 1.0, settled,
              f"<= {target}", settled <= target, "background completion counted; each byte once = 1.0")
    bench.row(section, f"{clients} cold clients: same, when the last client finished", "ratio", at_done, 1.0,
              at_done, None, None, "each byte once = 1.0")
    bench.row(section, f"{clients} cold clients: aggregate throughput", "MB/s", agg, None, None, None, None,
              f"{lib.human_size(samples[0]['served'])} served by {n} nodes; no baseline")
    slow = lib.median([max(s["ttfb"]) for s in samples])
    bench.row(section, f"{clients} cold clients: TTFB of the slowest-to-start client", "ms", slow * 1e3, None,
              None, None, None, "no baseline")
