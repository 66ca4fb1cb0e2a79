"""Alerts from the running mirror (issue 7) to a loopback webhook receiver: the core's own
events (a file failing verification, the disk staying over its budget with only pinned files
left, an upstream answering 429), one alert per incident, a receiver answering 500 retried with
the same message, and a receiver that hangs slowing no download. DingoSpeed alerts only on a
proxy probe; these come from what the mirror itself sees."""

from __future__ import annotations

import struct
import time

import pytest

import helpers
from evict_helpers import Receiver, download, eviction, make_repo, metric, repo_arg, webhook
from helpers import MiB, BlobHeader, blob_path, crc32c, sha256, wait_until

REPO = "acme/alerts"


@pytest.fixture
def receiver():
    started: list[Receiver] = []

    def make(script=None) -> Receiver:
        r = Receiver(script)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def damage_consistently(path, page: int) -> None:
    """Flip a byte of `page` and store the page's new CRC-32C, and clear the verified flag:
    only the content hash can catch it (as after a crash between completion and verify)."""
    h = BlobHeader(path)
    start = page * h.page_size
    end = min(start + h.page_size, h.size)
    crc_at = helpers.BLOB_FIXED_HEADER + (h.block_count + 7) // 8 + 4 * page
    with open(path, "r+b") as f:
        f.seek(h.data_offset + start)
        data = bytearray(f.read(end - start))
        data[77] ^= 0xFF
        f.seek(h.data_offset + start)
        f.write(data)
        f.seek(crc_at)
        f.write(struct.pack("<I", crc32c(bytes(data))))
        f.seek(12)
        f.write(struct.pack("<I", h.flags & ~1))


def test_verify_failed_reaches_the_webhook_once_through_a_500(tmp_path, emu_factory,
                                                              mirror_factory, receiver):
    data = make_repo(tmp_path / "repo", {"model.bin": 2 * MiB}, seed=21)["model.bin"]
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "repo"))
    hook = receiver([500])
    mirror = mirror_factory(emu, cache={"block_size": "64KiB"}, plugins={"alerts": [
        webhook(hook.url, secret="s3cret", events=["verify_failed"])]})
    assert download(mirror, REPO, "model.bin") == data
    wait_until(lambda: metric(mirror, "hubcache_verified_files_total") >= 1, 30, what="verified")
    mirror.stop()
    damage_consistently(blob_path(mirror.cache_dir, sha256(data)), page=5)
    mirror.start()
    r = mirror.resolve("GET", REPO, "main", "model.bin", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data[:100]
    alerts = hook.wait_for("verify_failed", count=2, timeout=60)
    assert len(hook.requests) == 2, "one 500, one retry"
    ids = {r["headers"].get("webhook-id") for r in hook.requests}
    assert len(ids) == 1 and None not in ids, f"the retry is not the same message: {ids}"
    assert alerts[0]["subject"] == sha256(data) and alerts[0]["status"] == "firing"
    # The file was discarded and comes back right; the incident is reported once.
    assert download(mirror, REPO, "model.bin") == data
    time.sleep(3)
    assert len(hook.events("verify_failed")) == 2
    assert metric(mirror, "hubcache_alerts_sent_total", 'sink="webhook"') == 1
    assert metric(mirror, "hubcache_alert_retries_total", 'sink="webhook"') == 1


def test_disk_high_when_only_pinned_files_are_left_reaches_the_webhook_once(
        tmp_path, emu_factory, mirror_factory, receiver):
    files = make_repo(tmp_path / "pinned", {"p1.bin": MiB, "p2.bin": MiB}, seed=22)
    emu = emu_factory(extra=repo_arg("acme/pinned", tmp_path / "pinned"))
    hook = receiver()
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"}, plugins={
        "eviction": {"policy": "lru", "max_size": 3 * MiB // 2, "pin": ["acme/pinned"]},
        "alerts": [webhook(hook.url, events=["disk_high", "disk_ok", "eviction_blocked"])]})
    for name in ["p1.bin", "p2.bin"]:
        assert download(mirror, "acme/pinned", name) == files[name]
    [alert] = hook.wait_for("disk_high", timeout=30)
    assert alert["subject"] == "" and alert["severity"] == "warning"
    assert "pinned" in alert["details"]["blocked"], alert
    [blocked] = hook.wait_for("eviction_blocked", timeout=10)
    assert blocked["details"]["pinned"] == "2", blocked
    assert all(helpers.blob_path(mirror.cache_dir, sha256(d)).exists() for d in files.values())
    time.sleep(12)           # two more ticks of the service: still one alert per incident
    assert len(hook.events("disk_high")) == 1
    assert hook.events("disk_ok") == []
    assert metric(mirror, "hubcache_evictions_blocked_total", 'reason="pinned"') >= 1


def test_rate_limited_upstream_is_reported_and_a_hanging_sink_slows_no_download(
        tmp_path, emu_factory, mirror_factory, receiver):
    files = make_repo(tmp_path / "rl", {f"f{i}.bin": MiB for i in range(4)}, seed=23)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "rl"))
    ok, hanging = receiver(), receiver(["hang"] * 50)
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"}, plugins={"alerts": [
        webhook(ok.url, name="ops", events=["rate_limited"]),
        webhook(hanging.url, name="stuck", events=["rate_limited"], timeout="30s")]})
    emu.fault(kind="status", status=429, match="f0.bin", count=1, method="HEAD")
    r = mirror.resolve("GET", REPO, "main", "f0.bin")
    assert r.status_code >= 500, r.status_code
    [alert] = ok.wait_for("rate_limited", timeout=30)
    assert alert["subject"].startswith(emu.hub), alert
    wait_until(lambda: len(hanging.requests) >= 1, 30, what="the hanging sink to be called")
    # The 429 came with Retry-After: 1: the chain does not ask that upstream again before then.
    time.sleep(1.5)
    # The stuck sink holds its connection; downloads go on as before (each within its
    # timeout, while the stuck sink's attempt is still open).
    for name in sorted(files):
        assert download(mirror, REPO, name, timeout=20) == files[name]
    assert len(hanging.requests) == 1, "the stuck sink's first attempt has not timed out yet"
    assert len(ok.events("rate_limited")) == 1


def test_a_lost_root_is_reported_even_while_nothing_reads_from_it(tmp_path, emu_factory,
                                                                  mirror_factory, receiver):
    emu = emu_factory()
    hook = receiver()
    first, second = tmp_path / "d1", tmp_path / "d2"
    mirror = mirror_factory(emu, cache={"dir": None, "roots": [str(first), str(second)]},
                            plugins={"alerts": [webhook(hook.url, events=["root_lost"])]})
    time.sleep(1)
    (first / "blobs").rename(first / "blobs.gone")
    (first / "blobs").write_bytes(b"not a directory")
    [alert] = hook.wait_for("root_lost", timeout=30)
    assert alert["subject"] == str(first) and alert["severity"] == "critical", alert
    time.sleep(6)
    assert len(hook.events("root_lost")) == 1
    assert mirror.running
