"""The admin listener (issue 12): metrics, status JSON and the admin API on a port of their own,
never on the public port; a bearer token for mutating calls; metrics that move with traffic."""

from __future__ import annotations

import os
import threading

from helpers import MiB, parse_metrics, stream_sha256, wait_until

TOKEN = "adm-Tok3n-for-tests"
BIG = ("acme/big-model", "main", "big.bin")


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on."""
    ports = set()
    fds = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            fds.add(link[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in fds:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def wait_metric(mirror, name: str, labels: str, value: float) -> None:
    """Wait for a per-request counter: a request is counted just after its answer is sent."""
    wait_until(lambda: mirror.metric(name, labels) == value, 10, interval=0.1,
               what=f"{name}{{{labels}}} == {value} (now {mirror.metric(name, labels)})")


def test_metrics_status_and_admin_api_are_only_on_the_admin_port(mirror):
    # The public port serves the Hub surface alone.
    for path in ("/metrics", "/healthz"):
        r = mirror.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
        assert "hubcache_requests_total" not in r.text
    r = mirror.post("/api/log-level", json={"level": "debug"})
    assert "overridden_by_rust_log" not in r.text, r.text[:200]
    # The admin port serves metrics, the status JSON, the page and a liveness probe ...
    metrics = mirror.admin("GET", "/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE hubcache_requests_total counter" in metrics.text
    status = mirror.admin("GET", "/api/status")
    assert status.status_code == 200 and status.headers["content-type"] == "application/json"
    assert status.json()["listen"] == f"127.0.0.1:{mirror.port}"
    page = mirror.admin("GET", "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/api/status" in page.text and "default-src 'none'" in page.headers["content-security-policy"]
    assert mirror.admin("GET", "/healthz").json() == {"ok": True}
    # ... and nothing of the Hub.
    r = mirror.admin("GET", "/acme/tiny-model/resolve/main/config.json")
    assert r.status_code == 404 and r.json()["error"] == "no such admin route"
    r = mirror.admin("PUT", "/api/status")
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_mutating_admin_calls_need_the_token_and_reads_do_not(emu, mirror_factory):
    m = mirror_factory(emu, admin={"token": "${HUBCACHE_TEST_ADMIN_TOKEN}"},
                       env={"HUBCACHE_TEST_ADMIN_TOKEN": TOKEN})
    assert TOKEN not in m.config_path.read_text(), "the token should come from the environment"
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}):
        r = m.admin("POST", "/api/log-level", json={"level": "debug"}, headers=headers)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert m.admin("GET", "/api/log-level").json()["level"] == "info"
    r = m.admin("POST", "/api/log-level", json={"level": "debug"},
                headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.json()["level"] == "debug"
    assert m.admin("GET", "/api/log-level").json()["level"] == "debug"
    r = m.admin("POST", "/api/log-level?level=loud", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and "not a log level" in r.json()["error"]
    # A browser page of another site cannot make the call, even with the token.
    r = m.admin("POST", "/api/log-level?level=info",
                headers={"Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"})
    assert r.status_code == 403
    # Read-only routes never ask for the token.
    for path in ("/metrics", "/api/status", "/", "/healthz", "/api/log-level"):
        assert m.admin("GET", path).status_code == 200, path
    assert TOKEN not in m.log_path.read_text(errors="replace")


def test_without_a_token_mutating_calls_work_on_loopback_but_not_by_host_name(mirror):
    r = mirror.admin("POST", "/api/log-level", json={"level": "warn"})
    assert r.status_code == 200 and r.json()["level"] == "warn"
    # DNS rebinding: a name that resolves to us is not enough without a token.
    r = mirror.admin("POST", "/api/log-level", json={"level": "info"},
                     headers={"Host": f"rebind.example:{mirror.admin_port}"})
    assert r.status_code == 403


def test_admin_listen_null_turns_the_admin_listener_off(emu, mirror_factory):
    m = mirror_factory(emu, admin={"listen": None})
    assert listening_ports(m.proc.pid) == {m.port}
    assert m.get("/metrics").status_code == 404
    assert m.get("/acme/tiny-model/resolve/main/config.json").status_code == 200


def test_metrics_move_with_traffic_cold_then_warm(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    entry = own_emu.file(*BIG)
    url = m.url + "/{}/resolve/{}/{}".format(*BIG)
    before = m.metrics_text()
    assert 'hubcache_served_bytes_total{source="cache"} 0' in before
    # Cold: every byte comes from upstream, and the request is a miss.
    assert stream_sha256(url) == (200, entry["sha256"], entry["size"])
    wait_until(lambda: m.status()["fills"] == [], 30, what="the fill to settle")
    cold_cache = m.metric("hubcache_served_bytes_total", 'source="cache"')
    cold_upstream = m.metric("hubcache_served_bytes_total", 'source="upstream"')
    assert cold_cache == 0 and cold_upstream == entry["size"], (cold_cache, cold_upstream)
    wait_metric(m, "hubcache_cache_requests_total", 'outcome="miss"', 1)
    assert m.metric("hubcache_upstream_fill_bytes_total") == entry["size"]
    # Warm: every byte comes from the cache, and the request is a hit.
    assert stream_sha256(url) == (200, entry["sha256"], entry["size"])
    assert m.metric("hubcache_served_bytes_total", 'source="cache"') == entry["size"]
    assert m.metric("hubcache_served_bytes_total", 'source="upstream"') == entry["size"]
    wait_metric(m, "hubcache_cache_requests_total", 'outcome="hit"', 1)
    assert m.metric("hubcache_upstream_fill_bytes_total") == entry["size"]
    # A range over cached and missing blocks would be partial; here the whole file is cached,
    # so a range of it is a hit too.
    r = m.get("/{}/resolve/{}/{}".format(*BIG), headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    wait_metric(m, "hubcache_cache_requests_total", 'outcome="hit"', 2)
    text = m.metrics_text()
    assert m.metric("hubcache_requests_total", 'route="resolve",status="2xx"') == 3
    assert 'hubcache_repo_requests_total{repo="models/acme/big-model"} 3' in text
    assert 'hubcache_request_duration_seconds_count{route="resolve"} 3' in text
    # The cache's disk use is walked at most every 2 s on a small cache.
    wait_until(lambda: m.metric("hubcache_store_used_bytes", f'root="{m.cache_dir}"') >= entry["size"],
               10, interval=0.5, what="the store's used bytes to count the blob")
    assert m.metric("process_resident_memory_bytes") > 0
    assert m.metric("process_open_fds") > 0
    totals = m.status()["totals"]
    assert totals["served_cache_bytes"] == entry["size"] + 100
    assert totals["served_upstream_bytes"] == entry["size"]
    assert (totals["hits"], totals["misses"]) == (2, 1)
    assert m.status()["top_repos"][0] == {"repo": "models/acme/big-model", "requests": 3,
                                           "bytes": 2 * entry["size"] + 100}


def test_a_range_over_some_cached_blocks_is_a_partial_hit(own_emu, mirror_factory):
    m = mirror_factory(own_emu, cache={"block_size": "1MiB"},
                       fill={"mode": "on_demand", "read_ahead": 0, "segment": "1MiB"})
    path = "/{}/resolve/{}/{}".format(*BIG)
    for first, last in ((0, 99), (0, 2 * MiB - 1), (4 * MiB, 4 * MiB + 9)):   # blocks 0; 0-1; 4
        assert m.get(path, headers={"Range": f"bytes={first}-{last}"}).status_code == 206
        # The next request sees the blocks this one fetched committed.
        wait_until(lambda: m.status()["fills"] == [], 30, what="the fill to settle")
    wait_metric(m, "hubcache_cache_requests_total", 'outcome="miss"', 2)
    assert m.metric("hubcache_cache_requests_total", 'outcome="partial"') == 1
    assert m.metric("hubcache_served_bytes_total", 'source="cache"') == MiB
    assert m.metric("hubcache_served_bytes_total", 'source="upstream"') == 100 + MiB + 10


def test_upstream_429s_and_our_429s_are_counted(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    own_emu.fault(kind="status", status=429, host="hub", match="/api/models/acme/tiny-model", count=3)
    answers = [m.get("/api/models/acme/tiny-model").status_code for _ in range(3)]
    wait_until(lambda: sum(v for (name, labels), v in parse_metrics(m.metrics_text()).items()
                           if name == "hubcache_requests_total" and 'route="repo_info"' in labels) == 3,
               10, interval=0.1, what="the three requests to be counted")
    assert m.metric("hubcache_rate_limited_total", 'side="upstream"') >= 1
    assert m.metric("hubcache_rate_limited_total", 'side="client"') == answers.count(429)
    errors = m.status()["recent_errors"]
    assert errors and errors[0]["route"] == "repo_info", errors
    assert all(e["status"] >= 429 for e in errors)


def test_status_json_shows_a_fill_in_flight_with_its_progress(emu_factory, mirror_factory):
    emu = emu_factory(big_size=32 * MiB, extra=("--cdn-rate", str(2 * MiB)))
    m = mirror_factory(emu, cache={"block_size": "1MiB"}, fill={"connections_per_file": 2})
    entry = emu.file(*BIG)
    done: list = []
    url = m.url + "/{}/resolve/{}/{}".format(*BIG)
    download = threading.Thread(target=lambda: done.append(stream_sha256(url)))
    download.start()
    try:
        seen = []

        def fill_seen():
            fills = m.status()["fills"]
            if fills and fills[0]["present_bytes"] > 0:
                seen.append(fills[0])
            return len(seen) >= 2 and seen[-1]["present_bytes"] > seen[0]["present_bytes"]

        wait_until(fill_seen, 30, interval=0.3, what="a fill making progress in /api/status")
        assert m.metric("hubcache_fills_in_flight") == 1
        fill = seen[-1]
        assert fill["repo"] == "models/acme/big-model" and fill["path"] == "big.bin"
        assert fill["blob"] == entry["sha256"] and fill["size"] == entry["size"]
        assert 0 < fill["present_bytes"] < entry["size"]
        assert fill["rate_bytes_per_sec"] > 0
        assert fill["upstream"] == emu.hub
    finally:
        download.join(120)
    assert done == [(200, entry["sha256"], entry["size"])]
    wait_until(lambda: m.status()["fills"] == [], 30, what="the finished fill to leave the list")
    assert m.metric("hubcache_fills_in_flight") == 0


def test_the_status_json_has_every_section(mirror):
    status = mirror.status()
    for key in ("version", "now_ms", "started_ms", "listen", "offline", "upstreams", "roots",
                "fills", "jobs", "top_repos", "recent_errors", "totals", "log_level"):
        assert key in status, key
    assert status["jobs"] == []
    assert status["upstreams"][0]["available"] is True
    root = status["roots"][0]
    assert root["path"] == str(mirror.cache_dir) and root["healthy"] is True
    assert root["capacity_bytes"] > 0 and root["free_bytes"] >= 0 and root["used_bytes"] is not None
