"""Config reload (issue 8): SIGHUP / `hubcache reload` re-read the file; live keys apply to
the next requests, an invalid file changes nothing, keys that need new sockets or a new store
are reported, and a download in flight finishes with the settings it started with."""

from __future__ import annotations

import os
import signal
import threading
import time

from helpers import MiB, resolve_path, stream_sha256, wait_until

SMALL = ("acme/tiny-model", "main", "config.json")
OTHER = ("acme/tiny-model", "main", "model.safetensors")
BIG = ("acme/big-model", "main", "big.bin")


def reload(mirror, *args: str):
    """`hubcache reload --config FILE` for this mirror; (exit code, output)."""
    p = mirror.command("reload", *(args or ("--config", str(mirror.config_path))))
    return p.returncode, p.stdout + p.stderr


def metric(mirror, name: str) -> float:
    """The value of one sample (`name` with its labels) in /metrics; 0 when absent."""
    for line in mirror.metrics_text().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def reloads(mirror, result: str) -> float:
    return metric(mirror, f'hubcache_config_reloads_total{{result="{result}"}}')


def test_offline_switched_on_by_sighup_refuses_uncached_files_within_a_second_and_off_restores_fetching(
        own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    assert m.resolve("GET", *SMALL).status_code == 200
    m.write_config(offline=True)
    requests_before = own_emu.stats()["requests"]
    sent = time.monotonic()
    os.kill(m.proc.pid, signal.SIGHUP)
    # Polling the metrics, not the file: an early request would fetch and cache it.
    wait_until(lambda: reloads(m, "ok") == 1, 1.0, interval=0.02, what="offline to apply")
    took = time.monotonic() - sent
    r = m.resolve("GET", *OTHER)
    assert r.status_code == 404, r.text
    assert own_emu.stats()["requests"] == requests_before, "offline: the hub was contacted"
    assert m.resolve("GET", *SMALL).status_code == 200, "cached files keep serving"
    assert m.running, "SIGHUP must not kill the mirror"

    m.write_config(offline=False)
    code, out = reload(m)
    assert code == 0 and "reload ok" in out and "offline" in out, out
    r = m.resolve("GET", *OTHER)
    assert r.status_code == 200
    assert len(r.content) == own_emu.file(*OTHER)["size"]
    assert own_emu.stats()["requests"] > requests_before
    print(f"offline in effect {took * 1000:.0f} ms after SIGHUP")


def test_an_invalid_file_is_refused_with_key_and_reason_and_the_running_config_keeps_serving(
        own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    good = m.config_path.read_text()
    m.config_path.write_text(good.replace('"revision_ttl": "60s"', '"revision_ttl": "60"'))
    code, out = reload(m, "--pid-file", str(m.pid_file))
    assert code == 1, out
    assert "reload invalid" in out and "revision_ttl" in out and "has no unit" in out, out
    assert "revision_ttl" in m.log_tail(20) and "refused" in m.log_tail(20)
    assert reloads(m, "invalid") == 1 and reloads(m, "ok") == 0
    assert m.resolve("GET", *SMALL).status_code == 200
    # `reload --config` with the broken file says why without signalling.
    code, out = reload(m)
    assert code != 0 and "revision_ttl" in out, out
    assert reloads(m, "invalid") == 1
    m.config_path.write_text(good)
    code, out = reload(m)
    assert code == 0, out
    assert reloads(m, "ok") == 1


def test_keys_that_need_new_sockets_or_a_new_store_are_reported_and_the_rest_applies(
        own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    port = m.port
    m.write_config(listen="127.0.0.1:1", cache={"block_size": "1MiB"}, server={"threads": 1},
                   revision_ttl="0s")
    code, out = reload(m)
    assert code == 0, out
    for key in ("listen", "cache.block_size", "server.threads"):
        assert key in out.split("needs `hubcache upgrade`:")[1], out
    assert "revision_ttl" in out
    assert "needs an upgrade" in m.log_tail(10)
    assert m.port == port and m.get("/api/models/acme/tiny-model").status_code == 200
    # revision_ttl 0s applied: every branch lookup asks the hub again (a revision call, or the
    # one HEAD by branch whose X-Repo-Commit names the commit).
    def branch_lookups() -> int:
        by_route = own_emu.stats()["by_route"]
        return by_route.get("api_info", 0) + by_route.get("resolve", 0)

    before = branch_lookups()
    for _ in range(3):
        assert m.resolve("HEAD", *SMALL).status_code == 200
    assert branch_lookups() >= before + 3


def test_reordered_upstreams_serve_new_requests_while_the_fill_in_flight_completes(
        emu_factory, mirror_factory):
    first = emu_factory(big_size=24 * MiB, extra=("--cdn-rate", str(6 * MiB)))
    second = emu_factory(big_size=24 * MiB)
    m = mirror_factory([first, second], fill={"segment": "4MiB", "connections_per_file": 1},
                       cache={"block_size": "1MiB"})
    big = first.file(*BIG)
    results: list = []
    url = m.url + resolve_path(*BIG)
    download = threading.Thread(target=lambda: results.append(stream_sha256(url)))
    download.start()
    wait_until(lambda: first.cdn_bytes_for(big["sha256"]) > 0, 20, what="the download to start")
    m.upstreams = [second, first]
    m.write_config()
    code, out = reload(m)
    assert code == 0 and "upstreams" in out, out
    assert download.is_alive(), "the download should still be in flight (rate-limited CDN)"
    # A new request goes to the new first upstream.
    second_before = second.stats()["requests"]
    assert m.resolve("GET", *OTHER).status_code == 200
    assert second.stats()["requests"] > second_before
    assert not any(OTHER[2] in e["path"] for e in first.stats()["recent"]), "old first asked"
    download.join(120)
    assert results == [(200, big["sha256"], big["size"])]
    fetched = first.cdn_bytes_for(big["sha256"]) + second.cdn_bytes_for(big["sha256"])
    assert fetched <= big["size"] * 1.02, f"{fetched} bytes fetched for a {big['size']}-byte file"


def test_watch_config_reloads_a_changed_file_by_itself(own_emu, mirror_factory):
    m = mirror_factory(own_emu, watch_config=True)
    assert m.resolve("GET", *SMALL).status_code == 200
    m.write_config(offline=True)
    wait_until(lambda: reloads(m, "ok") == 1, 15, interval=0.2, what="the watched file to be reloaded")
    assert m.resolve("GET", *OTHER).status_code == 404
    good = m.config_path.read_text()
    m.config_path.write_text(good.replace('"revision_ttl": "60s"', '"revision_ttl": "60"'))
    wait_until(lambda: reloads(m, "invalid") == 1, 15, interval=0.2, what="the broken file to be refused")
    assert m.resolve("GET", *SMALL).status_code == 200
    assert m.resolve("GET", *OTHER).status_code == 404, "the refused file changed nothing"
    m.write_config(offline=False)
    wait_until(lambda: m.resolve("GET", *OTHER).status_code == 200, 15, interval=0.2,
               what="the fixed file to apply")
