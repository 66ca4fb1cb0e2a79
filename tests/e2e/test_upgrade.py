"""Binary upgrade (issue 8): `hubcache upgrade` starts the successor, waits until it waits for
the listening sockets, then hands over; the old process drains (in-flight downloads finish,
keep-alive clients are told `Connection: close`) and exits as soon as it is idle, within the
grace period. The upgrade socket and pid file live in a private directory."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time

import pytest

from helpers import (MiB, free_port, pid_listens_on, resolve_path, stop_pid,
                     stream_sha256, wait_until)

BIG = ("acme/big-model", "main", "big.bin")
SMALL = ("acme/tiny-model", "main", "config.json")


@pytest.fixture
def successors():
    """PIDs of mirrors started by upgrades, stopped at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        stop_pid(pid)


def upgrade(mirror, successors) -> tuple[int, int, str]:
    """Run `hubcache upgrade`; (new pid, old pid, output)."""
    old = mirror.serving_pid()
    p = mirror.command("upgrade", "--config", str(mirror.config_path))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    new = mirror.serving_pid()
    successors.append(new)
    assert new != old and f"pid {new} now serves" in out and f"pid {old} drains" in out, out
    return new, old, out


def test_upgrade_hands_the_port_over_and_an_idle_old_process_exits_at_once(
        own_emu, mirror_factory, successors):
    m = mirror_factory(own_emu, server={"grace_period": "1h"})
    assert m.resolve("GET", *SMALL).status_code == 200
    new, old, _ = upgrade(m, successors)
    assert old == m.proc.pid
    assert pid_listens_on(new, m.port)
    started = time.monotonic()
    m.proc.wait(30)
    idle_exit = time.monotonic() - started
    # 5 s of Pingora's hand-over window, then about a second of quiet: not the 1 h grace.
    assert idle_exit < 15, f"the idle old process took {idle_exit:.1f}s to exit"
    assert m.resolve("GET", *SMALL).status_code == 200
    assert "drained after" in m.log_tail(20)
    assert m.pid_file.read_text().strip() == str(new), "the old process left the new pid file alone"


def test_a_successor_that_cannot_start_leaves_the_old_process_serving(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    not_a_dir = m.workdir / "not-a-dir"
    not_a_dir.write_text("x")
    good = m.config_path.read_text()
    m.write_config(cache={"dir": str(not_a_dir)})
    p = m.command("upgrade", "--config", str(m.config_path))
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "before taking over" in out and "keeps serving" in out, out
    time.sleep(6)  # past Pingora's hand-over window: nothing was handed over
    assert m.running and pid_listens_on(m.proc.pid, m.port)
    assert m.serving_pid() == m.proc.pid
    assert m.resolve("GET", *SMALL).status_code == 200
    m.config_path.write_text(good)


def test_the_old_process_drains_its_download_closes_keepalive_and_exits_soon_after(
        emu_factory, mirror_factory, successors):
    emu = emu_factory(big_size=32 * MiB, extra=("--cdn-rate", str(4 * MiB)))
    m = mirror_factory(emu, server={"grace_period": "2m"})
    entry = emu.file(*BIG)
    keepalive = http.client.HTTPConnection("127.0.0.1", m.port, timeout=30)
    keepalive.request("GET", resolve_path(*SMALL))
    first = keepalive.getresponse()
    first.read()
    assert first.status == 200 and first.getheader("connection", "").lower() != "close"
    results: list = []
    download = threading.Thread(
        target=lambda: results.append(stream_sha256(m.url + resolve_path(*BIG))))
    download.start()
    wait_until(lambda: emu.cdn_bytes_for(entry["sha256"]) > 0, 20, what="the download to start")
    new, old, _ = upgrade(m, successors)
    # Within Pingora's hand-over window the old process still answers this connection, and
    # tells the client to reconnect.
    keepalive.request("GET", resolve_path(*SMALL))
    second = keepalive.getresponse()
    second.read()
    assert second.status == 200
    assert second.getheader("connection", "").lower() == "close"
    keepalive.close()
    download.join(120)
    finished = time.monotonic()
    assert results == [(200, entry["sha256"], entry["size"])]
    m.proc.wait(30)
    after = time.monotonic() - finished
    assert after < 10, f"the old process lingered {after:.1f}s after its last download"
    assert emu.cdn_bytes_for(entry["sha256"]) <= entry["size"] * 1.02
    assert stream_sha256(m.url + resolve_path(*BIG))[1:] == (entry["sha256"], entry["size"])
    assert emu.cdn_bytes_for(entry["sha256"]) <= entry["size"] * 1.02, "fetched again by the new one"


def test_sigusr2_makes_the_server_upgrade_itself(own_emu, mirror_factory, successors):
    m = mirror_factory(own_emu)
    old = m.proc.pid
    os.kill(old, signal.SIGUSR2)
    new = wait_until(lambda: (m.pid_file.exists() and m.serving_pid() != old and m.serving_pid()),
                     30, what="the successor to serve")
    successors.append(new)
    assert pid_listens_on(new, m.port)
    m.proc.wait(30)
    assert m.resolve("GET", *SMALL).status_code == 200


def test_a_runtime_dir_others_can_enter_is_refused(hubcache_bin, tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chmod(run, 0o755)
    config = tmp_path / "c.yaml"
    config.write_text(f"listen: 127.0.0.1:{free_port()}\ncache: {{dir: {tmp_path / 'cache'}}}\n"
                      f"server: {{runtime_dir: {run}}}\n")
    p = subprocess.run([hubcache_bin, "serve", "--config", str(config)], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "must be a private directory" in p.stderr and "chmod 700" in p.stderr, p.stderr


def test_a_second_instance_on_the_same_runtime_dir_is_refused(own_emu, mirror_factory, hubcache_bin):
    m = mirror_factory(own_emu)
    config = m.workdir / "second.yaml"
    config.write_text(f"listen: 127.0.0.1:{free_port()}\ncache: {{dir: {m.workdir / 'c2'}}}\n"
                      f"server: {{runtime_dir: {m.runtime_dir}}}\n")
    p = subprocess.run([hubcache_bin, "serve", "--config", str(config)], capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and f"another hubcache (pid {m.proc.pid})" in p.stderr, p.stderr
    assert m.serving_pid() == m.proc.pid


def test_sigquit_without_a_successor_waiting_is_ignored_instead_of_an_outage(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    os.kill(m.proc.pid, signal.SIGQUIT)
    wait_until(lambda: "SIGQUIT ignored" in m.log_tail(5), 10, what="the refusal in the log")
    time.sleep(6)  # past the hand-over window Pingora would have used
    assert m.running and pid_listens_on(m.proc.pid, m.port)
    assert m.resolve("GET", *SMALL).status_code == 200
