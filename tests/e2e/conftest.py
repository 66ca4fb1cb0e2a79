"""Fixtures for the hubcache end-to-end suite.

- `session_emulator`: one Hub emulator for read-only tests; `emu` resets its stats, faults and
  branches before each test.
- `emu_factory` / `own_emu`: emulators private to one test (to stop them, move branches, fault).
- `mirror_factory`: starts `hubcache serve` with config overrides on a fresh (or given) cache
  dir; every mirror it started is stopped (SIGINT, by PID) at teardown. Upstreams are emulators,
  URLs or dicts (`{"url": emu, "trust": "mirror"}`); an emulator plays huggingface.co, so it is
  declared `trust: origin` unless the dict says otherwise.
- `cluster_factory`: starts N mirrors listing each other as `cluster` peers (sibling tests).
- `mirror`: a fresh mirror in front of the session emulator.
- `shared_mirror`: one long-lived mirror in front of the session emulator, for tests that do not
  care about cache state.
On failure, the tail of every running emulator/mirror log is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers
from helpers import MiB, Emulator, Mirror

SESSION_BIG_SIZE = 48 * MiB


@pytest.fixture(scope="session")
def hubcache_bin() -> str:
    path = os.environ.get("HUBCACHE_BIN") or str(helpers.REPO_ROOT / "target" / "debug" / "hubcache")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"hubcache binary not found at {path}: run `cargo build --bin hubcache` "
                    f"or set HUBCACHE_BIN")
    return path


@pytest.fixture(scope="session")
def session_emulator(tmp_path_factory):
    emu = Emulator(tmp_path_factory.mktemp("session-emu"), big_size=SESSION_BIG_SIZE, name="session-emulator")
    yield emu
    emu.stop()


@pytest.fixture
def emu(session_emulator) -> Emulator:
    assert session_emulator.running, "the session emulator died:\n" + session_emulator.log_tail()
    session_emulator.reset(refs=True)
    return session_emulator


@pytest.fixture
def emu_factory(tmp_path):
    started: list[Emulator] = []
    counter = iter(range(1000))

    def make(big_size: int = 8 * MiB, page_size: int = 100, extra: tuple = ()) -> Emulator:
        n = next(counter)
        e = Emulator(tmp_path / f"emu{n}", big_size=big_size, page_size=page_size, extra=extra,
                     name=f"emulator{n}")
        started.append(e)
        return e

    yield make
    for e in started:
        e.stop()


@pytest.fixture
def own_emu(emu_factory) -> Emulator:
    return emu_factory()


@pytest.fixture
def mirror_factory(tmp_path, hubcache_bin):
    started: list[Mirror] = []
    counter = iter(range(1000))

    def make(upstreams, cache_dir: Path | None = None, **overrides) -> Mirror:
        if isinstance(upstreams, (str, Emulator)):
            upstreams = [upstreams]
        urls = [helpers.upstream_entry(u) for u in upstreams]
        n = next(counter)
        m = Mirror(hubcache_bin, tmp_path / f"mirror{n}", urls, cache_dir=cache_dir, name=f"mirror{n}",
                   **overrides)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


@pytest.fixture
def cluster_factory(tmp_path, hubcache_bin):
    """start(upstream, n, **overrides) -> n hubcache nodes in one cluster (see
    cluster_helpers); every node started is stopped at teardown."""
    import cluster_helpers

    started: list[Mirror] = []
    counter = iter(range(1000))

    def start(upstream, n: int = 3, **overrides) -> list[Mirror]:
        nodes = cluster_helpers.start_cluster(hubcache_bin, tmp_path / f"cluster{next(counter)}",
                                              upstream, n, **overrides)
        started.extend(nodes)
        return nodes

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def mirror(emu, mirror_factory) -> Mirror:
    return mirror_factory(emu)


@pytest.fixture(scope="session")
def _shared_mirror(session_emulator, hubcache_bin, tmp_path_factory):
    m = Mirror(hubcache_bin, tmp_path_factory.mktemp("shared-mirror"), [session_emulator.hub],
               name="shared-mirror")
    yield m
    m.stop()
    shutil.rmtree(m.cache_dir, ignore_errors=True)


@pytest.fixture
def shared_mirror(_shared_mirror, emu) -> Mirror:
    if not _shared_mirror.running:
        _shared_mirror.start()
    return _shared_mirror


@pytest.fixture
def hf_home(tmp_path) -> Path:
    """A fresh client cache (HF_HOME) for one test."""
    p = tmp_path / "hf_home"
    p.mkdir()
    return p


@pytest.fixture(autouse=True)
def _mark_started(request):
    request.node._started_mark = len(helpers.STARTED)
    yield


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        mark = getattr(item, "_started_mark", len(helpers.STARTED))
        procs = list(helpers.ACTIVE) + [p for p in helpers.STARTED[mark:] if p not in helpers.ACTIVE]
        for proc in procs:
            rep.sections.append((f"log tail: {proc.name} ({proc.log_path})", proc.log_tail(40)))


@pytest.fixture
def small_fs(tmp_path):
    """mount(size_mib) -> a fresh tmpfs of that size (skips the test if mounting is not
    possible). Unmounted at teardown, after stopping any mirror still using it."""
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path:
        d = tmp_path / f"smallfs{len(mounted)}"
        d.mkdir()
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs",
                                str(d)], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"cannot mount a small tmpfs to fill: {e}")
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill (uid {os.geteuid()}): "
                        f"{(r.stderr or r.stdout).strip() or r.returncode}")
        mounted.append(d)
        return d

    yield mount
    for d in reversed(mounted):
        for proc in list(helpers.ACTIVE):
            if isinstance(proc, Mirror) and str(d) in json.dumps(proc.config()):
                proc.stop()
        r = subprocess.run(["umount", str(d)], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)
