"""Upstream chains that switch by health: two emulators stand in for huggingface.co (`origin`)
and hf-mirror.com (`mirror`, public repos only). The first hangs (accepts, never answers), then
refuses connections, then comes back; requests of every kind keep succeeding, only the first
one waits for the timeout, and traffic returns to the first upstream only after it passed
`recover_after` probes. Per-request durations are compared with the configured timeout: a
behaviour check (did a request wait for the hung upstream?), not a benchmark.
"""

from __future__ import annotations

import re
import threading
import time

from helpers import MiB, sha256, stream_sha256, wait_until

TIMEOUT = 3.0          # upstreams[].timeout
FAST = 1.0             # a request that did not wait for the hung upstream
PROBE_EVERY = 1.0
RECOVER_AFTER = 3
REPO = "acme/tiny-model"
SNAP = "acme/snapshot-300"


def chain(first, second, **health) -> list[dict]:
    return [{"url": first, "trust": "origin", "timeout": f"{int(TIMEOUT)}s",
             "health": {"probe_every": f"{int(PROBE_EVERY * 1000)}ms", "recover_after": RECOVER_AFTER,
                        **health}},
            {"url": second, "trust": "mirror", "timeout": f"{int(TIMEOUT)}s"}]


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def is_probe(entry: dict) -> bool:
    return entry["method"] == "HEAD" and entry["path"] == "/"


def real_requests(emu) -> list[dict]:
    """What `emu` was asked, probes left out."""
    return [e for e in emu.stats()["recent"] if not is_probe(e)]


def metric(m, name: str, **labels) -> float | None:
    text = m.metrics_text()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))).strip(",") == want:
            return float(match.group(2))
    return None


def exercise(m, emu, phase: int) -> list[tuple[str, float]]:
    """Metadata, API JSON, small files, a pass-through route and a large file, each new to
    the mirror in this phase; every answer checked against `emu`'s manifest.
    Returns (what, seconds) per request."""
    snap = sorted(emu.files(SNAP, "main"))
    small = [p for p in snap if p.startswith("data/")][phase * 3:phase * 3 + 3]
    big = [("acme/big-model", "main", "big.bin"), (REPO, "main", "model.safetensors"),
           (REPO, "dev", "extra.bin")][phase]
    tree = [f"/api/models/{REPO}/tree/main?recursive=true", "/api/models/acme/many-files/tree/main",
            f"/api/models/{SNAP}/tree/main/data"][phase]
    info = [f"/api/models/{REPO}/revision/v1.0", "/api/models/acme/many-files/revision/main",
            f"/api/models/{SNAP}/revision/main"][phase]
    timings, failures = [], []

    def run(what, call, check):
        response, took = timed(call)
        timings.append((what, took))
        problem = check(response)
        if problem:
            failures.append(f"[phase {phase}] {what}: {problem}")

    run(f"GET {info}", lambda: m.get(info),
        lambda r: None if r.status_code == 200 and r.json()["sha"] else f"{r.status_code}")
    run(f"GET {tree}", lambda: m.get(tree),
        lambda r: None if r.status_code == 200 and isinstance(r.json(), list) else f"{r.status_code}")
    run("GET commits (pass-through)", lambda: m.get(f"/api/models/{REPO}/commits/main"),
        lambda r: None if r.status_code == 200 else f"{r.status_code}")
    for path in small:
        run(f"GET {path}", lambda path=path: m.resolve("GET", SNAP, "main", path),
            lambda r, path=path: None if r.status_code == 200
            and sha256(r.content) == emu.file(SNAP, "main", path)["sha256"] else f"{r.status_code}")
    repo, rev, path = big
    entry = emu.file(repo, rev, path)
    run(f"GET {repo}/{path}", lambda: stream_sha256(f"{m.url}/{repo}/resolve/{rev}/{path}"),
        lambda got: None if got == (200, entry["sha256"], entry["size"]) else f"{got}")
    assert not failures, "\n".join(failures)
    return timings


def assert_fast(timings, phase: str) -> None:
    slow = [f"{what}: {took:.2f}s" for what, took in timings
            if took >= (TIMEOUT if "big" in what or "safetensors" in what or "extra" in what else FAST)]
    assert not slow, f"[{phase}] requests waited for the failing upstream:\n" + "\n".join(slow)


def test_a_hanging_then_refusing_primary_costs_one_timeout_and_traffic_returns_after_probes(
        emu_factory, mirror_factory):
    hub, mirror_hub = emu_factory(), emu_factory()
    m = mirror_factory(chain(hub, mirror_hub), revision_ttl="1s")

    # Healthy: the first upstream serves.
    assert m.get(f"/api/models/{REPO}/commits/main").status_code == 200
    assert [e["route"] for e in real_requests(hub)] == ["commits"]
    assert metric(m, "hubcache_upstream_up", upstream=hub.hub) == 1

    # It hangs: the first request waits one timeout, then the mirror answers.
    hub.fault(kind="hang", host="any")
    first, took = timed(lambda: m.get(f"/api/models/{REPO}/revision/main"))
    assert first.status_code == 200, first.text
    assert first.json()["sha"] == mirror_hub.commit(REPO, "main")
    assert TIMEOUT * 0.8 <= took < TIMEOUT + 3, f"first request took {took:.2f}s"
    asked = len(real_requests(mirror_hub))
    assert_fast(exercise(m, mirror_hub, 0), "hang")
    hung = real_requests(hub)[1:]
    assert len(hung) == 1 and hung[0]["status"] == 0, f"the hung upstream was asked again: {hung}"
    assert len(real_requests(mirror_hub)) > asked
    assert metric(m, "hubcache_upstream_up", upstream=hub.hub) == 0

    # It refuses connections.
    hub.clear_faults()
    hub.stop()
    assert_fast(exercise(m, mirror_hub, 1), "refused")
    assert metric(m, "hubcache_upstream_up", upstream=hub.hub) == 0

    # It comes back: probes first, real traffic only after recover_after of them.
    hub.start(same_ports=True)
    wait_until(lambda: m.get(f"/api/models/{REPO}/commits/main").status_code == 200
               and real_requests(hub), timeout=15 + PROBE_EVERY * RECOVER_AFTER, interval=0.2,
               what="traffic to return to the recovered upstream")
    log = hub.stats()["recent"]
    first_real = next(i for i, e in enumerate(log) if not is_probe(e))
    assert first_real >= RECOVER_AFTER, f"traffic returned after {first_real} probes: {log[:6]}"
    assert all(e["status"] < 500 for e in log[:first_real]), log[:first_real]
    before = len(real_requests(mirror_hub))
    assert_fast(exercise(m, hub, 2), "recovered")
    assert len(real_requests(mirror_hub)) == before, "the mirror is still asked after recovery"
    assert metric(m, "hubcache_upstream_up", upstream=hub.hub) == 1
    assert metric(m, "hubcache_upstream_state_changes_total", upstream=hub.hub, state="down") == 1
    assert metric(m, "hubcache_upstream_state_changes_total", upstream=hub.hub, state="recovered") == 1
    assert metric(m, "hubcache_upstream_errors_total", upstream=hub.hub, kind="timeout") >= 1
    assert metric(m, "hubcache_upstream_probes_total", upstream=hub.hub, result="pass") >= RECOVER_AFTER


def test_a_large_fill_resumes_at_its_offset_on_the_next_upstream_when_the_primary_goes_away(
        emu_factory, mirror_factory):
    size = 24 * MiB
    hub = emu_factory(big_size=size, extra=("--cdn-rate", str(4 * MiB)))
    mirror_hub = emu_factory(big_size=size)
    entry = mirror_hub.file("acme/big-model", "main", "big.bin")
    m = mirror_factory(chain(hub, mirror_hub), fill={"segment": "8MiB"})
    result = {}

    def download():
        result["got"] = stream_sha256(f"{m.url}/acme/big-model/resolve/main/big.bin", timeout=120)

    client = threading.Thread(target=download)
    client.start()
    wait_until(lambda: hub.cdn_bytes_for(entry["sha256"]) >= 4 * MiB, timeout=30,
               what="the first upstream to send a few MiB")
    hub.stop()
    client.join(120)
    assert not client.is_alive(), "the download hung"
    assert result["got"] == (200, entry["sha256"], size)
    resumed = [e for e in mirror_hub.stats()["cdn_requests"] if entry["sha256"] in e["path"]]
    starts = sorted(int(e["range"].split("=")[1].split("-")[0]) for e in resumed)
    assert any(s % (8 * MiB) != 0 for s in starts), \
        f"no segment resumed at the offset it had reached: {starts}"
    from_mirror = sum(e["bytes"] for e in resumed)
    assert from_mirror < size
    filled = metric(m, "hubcache_upstream_fill_bytes_total")
    assert filled == size, f"{filled} bytes fetched for a {size}-byte file"


def test_retry_after_keeps_requests_away_from_a_throttled_upstream(emu_factory, mirror_factory):
    hub, mirror_hub = emu_factory(), emu_factory()
    m = mirror_factory(chain(hub, mirror_hub))
    hub.fault(kind="status", status=429, retry_after=60, host="any")
    for n, path in enumerate(("config.json", "tokenizer.json", "sub/dir/notes.txt")):
        r = m.resolve("GET", REPO, "main", path)
        assert r.status_code == 200, (path, r.status_code)
        assert sha256(r.content) == mirror_hub.file(REPO, "main", path)["sha256"]
    assert m.get(f"/api/models/{REPO}/commits/main").status_code == 200
    asked = real_requests(hub)
    assert len(asked) == 1 and asked[0]["status"] == 429, asked
    assert metric(m, "hubcache_upstream_up", upstream=hub.hub) == 1, "throttled is not down"


def test_a_pass_through_request_to_a_hanging_primary_fails_over_after_one_timeout(
        emu_factory, mirror_factory):
    hub, mirror_hub = emu_factory(), emu_factory()
    m = mirror_factory(chain(hub, mirror_hub))
    hub.fault(kind="hang", host="any")
    route = f"/api/models/{REPO}/commits/main"
    first, took = timed(lambda: m.get(route))
    assert first.status_code == 200, first.text
    assert TIMEOUT * 0.8 <= took < TIMEOUT + 3, f"first request took {took:.2f}s"
    for _ in range(3):
        again, took = timed(lambda: m.get(route))
        assert again.status_code == 200 and took < FAST, f"{again.status_code} after {took:.2f}s"
    assert len(real_requests(hub)) == 1
    assert len([e for e in real_requests(mirror_hub) if e["route"] == "commits"]) == 4
