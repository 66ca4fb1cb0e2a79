"""State keyed by client input stays bounded: tens of thousands of requests for random repos,
random paths and random query strings leave the number of metadata files unchanged and the
mirror's memory (RSS, from /proc) flat. Bounded in time: each phase stops at its deadline."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from helpers import session

TINY = "acme/tiny-model"
WORKERS = 8
MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def meta_files(cache: Path) -> int:
    return sum(1 for p in (cache / "meta").rglob("*") if p.is_file())


def random_name(i: int) -> tuple[str, str]:
    """A request about a repo nobody has (or a query nobody asked before)."""
    token = secrets.token_hex(6)
    kind = i % 3
    if kind == 0:
        return "HEAD", f"/org{token[:4]}/repo-{token}/resolve/main/config.json"
    if kind == 1:
        return "GET", f"/api/models/user{token[:3]}/m{token}/revision/main"
    return "GET", f"/api/models/{TINY}/tree/main?recursive=false&utm_source={token}"


def random_path(i: int) -> tuple[str, str]:
    """A request for a file that does not exist in a repo that does."""
    return "HEAD", f"/{TINY}/resolve/main/missing/{secrets.token_hex(6)}.bin"


def hammer(url: str, make, count: int, deadline: float) -> tuple[int, dict]:
    """Send up to `count` requests `make(i)` from WORKERS threads until `deadline`."""
    done = [0]
    statuses: dict = {}
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        if time.monotonic() > deadline:
            return
        s = getattr(local, "s", None) or session()
        local.s = s
        method, path = make(i)
        r = s.request(method, url + path, timeout=30, allow_redirects=False)
        with lock:
            done[0] += 1
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, range(count)))
    return done[0], statuses


def test_random_repos_paths_and_queries_leave_files_and_memory_bounded(emu_factory, mirror_factory,
                                                                       tmp_path):
    emu = emu_factory(extra=("--quiet",))
    cache = tmp_path / "flood-cache"
    m = mirror_factory(emu, cache_dir=cache)
    # Warm up: the known repo's metadata, thread pools, allocator arenas.
    for make in (random_name, random_path):
        n, statuses = hammer(m.url, make, 3000, time.monotonic() + 60)
        assert n >= 1000 and set(statuses) <= {200, 401, 404}, (n, statuses)
    time.sleep(1)                                   # let queued metadata writes land
    files0, rss0 = meta_files(cache), rss_bytes(m.proc.pid)

    # Names and queries nobody asked before: nothing may be kept for them.
    n1, statuses = hammer(m.url, random_name, 30000, time.monotonic() + 120)
    assert n1 >= 10000, f"only {n1} requests in time: the run measures nothing ({statuses})"
    assert set(statuses) <= {200, 401, 404}, statuses
    time.sleep(1)
    files1, rss1 = meta_files(cache), rss_bytes(m.proc.pid)
    # Missing files of a real repo: remembered for a while, in memory only, up to a cap.
    n2, statuses = hammer(m.url, random_path, 10000, time.monotonic() + 60)
    assert n2 >= 3000 and set(statuses) <= {404}, (n2, statuses)
    time.sleep(1)
    files2, rss2 = meta_files(cache), rss_bytes(m.proc.pid)
    print(f"\n{n1} random repos/queries: metadata files {files0} -> {files1}, RSS {rss0 / MiB:.1f} -> "
          f"{rss1 / MiB:.1f} MiB ({(rss1 - rss0) / n1:.0f} B/request); {n2} random paths: files -> "
          f"{files2}, RSS -> {rss2 / MiB:.1f} MiB")
    assert files1 == files0, f"{files1 - files0} metadata files from {n1} random names"
    assert files2 == files0, f"{files2 - files0} metadata files from {n2} random paths"
    # Allocator noise is a few hundred KiB; a record per name would be >100 bytes per request.
    assert rss1 - rss0 < max(2 * MiB, 48 * n1), \
        f"RSS grew by {(rss1 - rss0) / MiB:.1f} MiB over {n1} requests for random names"
    assert m.running
