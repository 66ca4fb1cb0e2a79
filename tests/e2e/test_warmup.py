"""Warm-up jobs (issue 9): `hubcache warm` asks a node's admin API to fetch a whole repo, shows
the progress, and exits 0 only when every file is cached; jobs survive a restart of the node."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import time

from helpers import expected_files, run_client, wait_until

TOKEN = "warm-Adm1n-token"
PROGRESS = re.compile(r"files (\d+)/(\d+), [\d.]+ [KMGT]?i?B / [\d.]+ [KMGT]?i?B, [\d.]+ [KMGT]?i?B/s, ETA ")


def warm(mirror, *args: str, token: str | None = None, env: dict | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess:
    command = [mirror.binary, "warm", *args, "--admin", mirror.admin_url]
    if token:
        command += ["--token", token]
    clean = {k: v for k, v in os.environ.items() if k != "HUBCACHE_ADMIN_TOKEN"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**clean, **(env or {})})


def job_of(mirror, job_id: str) -> dict:
    r = mirror.admin("GET", f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(mirror, job_id: str, timeout: float = 90) -> dict:
    return wait_until(lambda: (j := job_of(mirror, job_id))["state"] in ("done", "failed", "cancelled") and j,
                      timeout, interval=0.2, what=f"job {job_id} to finish")


def test_warm_then_a_full_snapshot_download_with_the_origin_down(own_emu, mirror_factory, tmp_path):
    m = mirror_factory(own_emu)
    repo = "acme/tiny-model"
    expected = expected_files(own_emu, repo, "main")
    done = warm(m, repo)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if PROGRESS.search(line)]
    assert lines, f"no progress line in:\n{done.stdout}"
    last = PROGRESS.search(lines[-1])
    assert last.group(1) == last.group(2) == str(len(expected)), lines[-1]
    assert f"all {len(expected)} files cached" in done.stdout, done.stdout
    assert m.metric("hubcache_warmup_files_total", 'outcome="fetched"') == len(expected) - 1  # empty.txt
    assert m.metric("hubcache_warmup_jobs", 'state="done"') == 1
    # The origin goes away: the whole snapshot comes from the mirror, byte-exact.
    own_emu.stop()
    [result] = run_client(m.url, tmp_path / "client", [{"op": "snapshot", "repo_id": repo}])
    assert result["ok"], result
    assert result["files"] == expected
    # A second warm-up of the same repo finds everything present (nothing is fetched).
    own_emu.start(same_ports=True)
    own_emu.reset()
    again = warm(m, repo)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(expected)} already present" in again.stdout or \
        f"{len(expected) - 1} already present" in again.stdout, again.stdout
    stats = own_emu.stats()
    assert stats["cdn_bytes"] == 0 and stats["hub_file_bytes"] == 0, stats["recent"][:5]


def test_include_and_exclude_choose_the_files(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    repo = "acme/many-files"
    include, exclude = "dir1/*", "*_01?.txt"
    files = own_emu.files(repo, "main")
    wanted = sorted(p for p in files if fnmatch.fnmatch(p, include) and not fnmatch.fnmatch(p, exclude))
    assert 0 < len(wanted) < len(files)
    done = warm(m, repo, "--include", include, "--exclude", exclude)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = m.admin("GET", "/api/jobs").json()["jobs"]
    assert [(j["files_total"], j["files_done"], j["spec"]["include"]) for j in jobs] == \
        [(len(wanted), len(wanted), [include])]
    # Offline, exactly the chosen files are there.
    m.restart(offline=True)
    taken = [p for p in files if m.resolve("GET", repo, "main", p).status_code == 200]
    assert sorted(taken) == wanted


def test_a_job_resumes_after_a_restart_and_skips_what_is_present(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    repo = "acme/snapshot-300"
    total = len(own_emu.files(repo, "main"))
    r = m.admin("POST", "/api/jobs", json={"repo": repo, "rate_limit": "256KiB"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    before = wait_until(lambda: (j := job_of(m, job_id))["files_done"] >= 40 and j, 60, interval=0.2,
                        what="40 files done")
    assert before["state"] == "running" and before["files_done"] < total
    assert 0 < before["rate_bytes_per_sec"] < 600 * 1024, before["rate_bytes_per_sec"]
    assert before["eta_seconds"] and before["eta_seconds"] > 0
    m.restart()
    m.admin("GET", "/api/jobs")
    done = wait_job(m, job_id, timeout=120)
    assert done["state"] == "done", done
    assert done["runs"] == 2
    assert done["files_done"] == total
    assert done["files_present"] >= before["files_done"], (done, before["files_done"])
    # No file was fetched twice.
    by_path: dict[str, int] = {}
    for req in own_emu.stats()["cdn_requests"]:
        if req["method"] == "GET":
            by_path[req["path"]] = by_path.get(req["path"], 0) + 1
    assert by_path and max(by_path.values()) == 1, by_path


def test_mutating_calls_need_the_token(own_emu, mirror_factory):
    m = mirror_factory(own_emu, admin={"token": TOKEN})
    refused = warm(m, "acme/tiny-model", "--include", "config.json")
    assert refused.returncode == 2
    assert "401" in refused.stderr, refused.stderr
    assert m.admin("POST", "/api/jobs", json={"repo": "acme/tiny-model"}).status_code == 401
    assert m.admin("GET", "/api/jobs").json() == {"jobs": []}
    ok = warm(m, "acme/tiny-model", "--include", "config.json", env={"HUBCACHE_ADMIN_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    [job] = m.admin("GET", "/api/jobs").json()["jobs"]
    r = m.admin("DELETE", f"/api/jobs/{job['id']}")
    assert r.status_code == 401
    r = m.admin("DELETE", f"/api/jobs/{job['id']}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["state"] == "done", "a finished job stays finished"


def test_failing_files_give_a_non_zero_exit_naming_them(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    own_emu.fault(kind="status", status=404, match="config.json", host="hub")
    done = warm(m, "acme/tiny-model")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "config.json: the upstream answered 404" in done.stderr, done.stderr
    assert "1 of" in done.stderr
    [job] = m.admin("GET", "/api/jobs").json()["jobs"]
    assert job["state"] == "failed" and job["files_failed"] == 1
    assert job["files_done"] == job["files_total"] - 1
    assert m.metric("hubcache_warmup_files_total", 'outcome="failed"') == 1


def test_a_running_job_can_be_cancelled_from_the_cli(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    r = m.admin("POST", "/api/jobs", json={"repo": "acme/snapshot-300", "rate_limit": "64KiB"})
    job_id = r.json()["id"]
    wait_until(lambda: job_of(m, job_id)["files_done"] >= 1, 30, interval=0.1, what="a file done")
    listed = subprocess.run([m.binary, "jobs", "list", "--admin", m.admin_url], capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0 and job_id in listed.stdout, listed.stdout + listed.stderr
    cancel = subprocess.run([m.binary, "jobs", "cancel", job_id, "--admin", m.admin_url],
                            capture_output=True, text=True, timeout=30)
    assert cancel.returncode == 0 and "cancelled" in cancel.stdout, cancel.stdout + cancel.stderr
    done_then = job_of(m, job_id)["files_done"]
    time.sleep(1.0)
    after = job_of(m, job_id)
    assert after["state"] == "cancelled" and after["files_done"] <= done_then + 4
