"""Warm-up of gated and private repos (issue 9, warm-up part; issue 17 pins): `hubcache warm
--hf-token` (or HF_TOKEN) sends a hub token with the job; the node checks it with the hub first
and fetches with it. The token is a secret: never in the jobs or pins API, the node's log, or
its state on disk; a restarted node has forgotten it, and a job that needed it fails saying so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers import expected_files, run_client, sha256, wait_until

GATED = "acme/gated-model"
PRIVATE = "acme/private-model"
ALICE = "hf_valid_token"     # may read gated and private repos
BOB = "hf_other_token"       # a valid user without access
SECRETS = (ALICE.encode(), BOB.encode())


def warm(mirror, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("HUBCACHE_ADMIN_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    return subprocess.run([mirror.binary, "warm", *args, "--admin", mirror.admin_url],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**clean, **(env or {})})


def job_of(mirror, job_id: str) -> dict:
    r = mirror.admin("GET", f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def files_holding(root: Path, needles: tuple[bytes, ...]) -> list[str]:
    """Files under `root` whose bytes contain one of `needles` (the node's state on disk)."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and any(n in path.read_bytes() for n in needles):
            found.append(str(path))
    return found


def assert_no_secret_shown(m) -> None:
    for api in ("/api/jobs", "/api/pins"):
        r = m.admin("GET", api)
        assert r.status_code == 200, r.text
        assert not any(s.decode() in r.text for s in SECRETS), f"{api} shows a token: {r.text[:500]}"
    for job in m.admin("GET", "/api/jobs").json()["jobs"]:
        one = m.admin("GET", f"/api/jobs/{job['id']}").text
        assert not any(s.decode() in one for s in SECRETS), one[:500]
    log = m.log_path.read_bytes()
    assert not any(s in log for s in SECRETS), "the node's log holds a token"


def test_a_gated_repo_warms_only_with_a_token_the_hub_accepts(own_emu, mirror_factory, tmp_path):
    # Debug logging: not even the most talkative log has the token.
    m = mirror_factory(own_emu, log={"level": "debug"})
    expected = expected_files(own_emu, GATED, "main")
    # No token: the job fails on the hub's access error, and says how to give one.
    anonymous = warm(m, GATED)
    assert anonymous.returncode == 1, anonymous.stdout + anonymous.stderr
    assert "401" in anonymous.stderr and "GatedRepo" in anonymous.stderr, anonymous.stderr
    assert "--hf-token" in anonymous.stderr, anonymous.stderr
    # A valid user without access, and a token the hub does not know: refused before any job.
    for token, status in ((BOB, "403"), ("hf_not_a_real_token", "401")):
        refused = warm(m, GATED, "--hf-token", token)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "refused this token" in refused.stderr and status in refused.stderr, refused.stderr
        assert token not in refused.stderr + refused.stdout
    assert len(m.admin("GET", "/api/jobs").json()["jobs"]) == 1, "only the anonymous job ran"
    # alice's token from HF_TOKEN, as huggingface_hub takes it.
    done = warm(m, GATED, env={"HF_TOKEN": ALICE})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"all {len(expected)} files cached" in done.stdout, done.stdout
    [job] = [j for j in m.admin("GET", "/api/jobs").json()["jobs"] if j["state"] == "done"]
    assert job["needs_token"] is True and job["files_done"] == len(expected)
    assert_no_secret_shown(m)
    assert own_emu.stats()["auth_leaks"] == 0, "a token went to the CDN"
    # The origin goes away: alice downloads everything from the mirror, byte-exact.
    own_emu.stop()
    [result] = run_client(m.url, tmp_path / "client", [{"op": "snapshot", "repo_id": GATED}],
                          token=ALICE)
    assert result["ok"], result
    assert result["files"] == expected


def test_a_private_repo_warms_with_the_flag_and_the_flag_wins_over_hf_token(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    expected = expected_files(own_emu, PRIVATE, "main")
    done = warm(m, PRIVATE, "--hf-token", ALICE, env={"HF_TOKEN": BOB})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"all {len(expected)} files cached" in done.stdout, done.stdout
    m.restart(offline=True)
    for path, digest in expected.items():
        r = m.resolve("GET", PRIVATE, "main", path, headers={"Authorization": f"Bearer {ALICE}"})
        assert r.status_code == 200 and sha256(r.content) == digest, (path, r.status_code)
    assert_no_secret_shown(m)


def test_a_restarted_node_has_no_token_on_disk_and_the_job_needs_it_again(own_emu, mirror_factory):
    m = mirror_factory(own_emu)
    r = m.admin("POST", "/api/jobs", json={"repo": GATED, "rate_limit": "64KiB", "token": ALICE})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert ALICE not in r.text
    wait_until(lambda: job_of(m, job_id)["bytes_done"] > 0, 30, interval=0.1, what="bytes fetched")
    assert job_of(m, job_id)["state"] == "running"
    m.restart()
    stopped_with = files_holding(m.cache_dir, SECRETS) + files_holding(m.workdir, SECRETS)
    assert stopped_with == [], f"a token on disk: {stopped_with}"
    job = wait_until(lambda: (j := job_of(m, job_id))["state"] != "running" and j, 30, interval=0.1,
                     what="the job to settle after the restart")
    assert job["state"] == "failed", job
    assert "needs its hub token again" in job["error"], job["error"]
    assert job["runs"] == 1, "it never ran without its token"
    # Started again with the token, it finishes.
    again = warm(m, GATED, "--hf-token", ALICE)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_no_secret_shown(m)


def test_the_token_goes_only_to_an_origin_upstream_or_a_mirror_trusted_with_it(own_emu, mirror_factory):
    m = mirror_factory([{"url": own_emu, "trust": "mirror"}])
    unchecked = warm(m, GATED, "--hf-token", ALICE)
    assert unchecked.returncode == 2, unchecked.stdout + unchecked.stderr
    assert "cannot check the token" in unchecked.stderr and "not trusted" in unchecked.stderr, \
        unchecked.stderr
    users = {e["user"] for e in own_emu.stats()["recent"]}
    assert users == {None}, f"the mirror upstream saw a token: {users}"
    assert m.admin("GET", "/api/jobs").json()["jobs"] == []
    trusted = mirror_factory([{"url": own_emu, "trust": "mirror", "forward_token": True}])
    done = warm(trusted, GATED, "--hf-token", ALICE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "alice" in {e["user"] for e in own_emu.stats()["recent"]}


def test_a_pin_manifest_takes_its_token_from_the_environment(own_emu, mirror_factory, tmp_path):
    manifest = tmp_path / "pins.yaml"
    manifest.write_text(f"- repo: {GATED}\n  token: ${{WARM_GATED_TOKEN}}\n")
    m = mirror_factory(own_emu, pins=[str(manifest)], env={"WARM_GATED_TOKEN": ALICE})
    expected = expected_files(own_emu, GATED, "main")
    pins = wait_until(lambda: (p := m.admin("GET", "/api/pins").json()["pins"]) and
                      p[0]["job_state"] == "done" and p, 60, interval=0.2, what="the pin warmed")
    assert pins[0]["spec"]["repo"] == GATED and "token" not in pins[0]["spec"]
    assert manifest.read_text().count("${WARM_GATED_TOKEN}") == 1
    own_emu.stop()
    for path, digest in expected.items():
        r = m.resolve("GET", GATED, "main", path, headers={"Authorization": f"Bearer {ALICE}"})
        assert r.status_code == 200 and sha256(r.content) == digest, (path, r.status_code)
    assert_no_secret_shown(m)


def test_hubcache_pin_sends_the_manifest_token_from_its_environment(own_emu, mirror_factory, tmp_path):
    m = mirror_factory(own_emu)
    manifest = tmp_path / "team.yaml"
    manifest.write_text(f"- {{repo: {PRIVATE}, token: '${{TEAM_HF_TOKEN}}'}}\n")

    def pin(token: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if k not in ("HUBCACHE_ADMIN_TOKEN", "HF_TOKEN")}
        return subprocess.run([m.binary, "pin", "--manifest", str(manifest), "--admin", m.admin_url],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env={**clean, "TEAM_HF_TOKEN": token})

    refused = pin(BOB)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refused this token" in refused.stderr and BOB not in refused.stderr, refused.stderr
    assert m.admin("GET", "/api/pins").json()["pins"] == [], "a refused pin is not kept"
    done = pin(ALICE)
    assert done.returncode == 0, done.stdout + done.stderr
    [pinned] = m.admin("GET", "/api/pins").json()["pins"]
    assert pinned["job_state"] == "done" and "token" not in pinned["spec"], pinned
    assert files_holding(m.cache_dir, SECRETS) == [], "a token on disk"
    assert_no_secret_shown(m)
