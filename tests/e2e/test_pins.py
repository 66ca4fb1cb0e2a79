"""Pins (issue 17): manifests of {repo, type, revision, include, exclude} named by `pins:` or
given to `hubcache pin --manifest`: warmed through warm-up jobs, kept out of eviction, and a
pinned branch follows upstream."""

from __future__ import annotations

import json
import subprocess

from evict_helpers import download, eviction, make_repo, metric, on_disk, repo_arg
from helpers import MiB, sha256, wait_until

OTHER = "acme/evict"


def pins_of(mirror) -> list[dict]:
    r = mirror.admin("GET", "/api/pins")
    assert r.status_code == 200, r.text
    return r.json()["pins"]


def job_of(mirror, job_id: str) -> dict:
    return mirror.admin("GET", f"/api/jobs/{job_id}").json()


def pin_done(mirror, commit: str | None = None):
    """The pins, once each one's last job is done (at `commit`, if given)."""
    pins = pins_of(mirror)
    ok = pins and all(p["job_state"] == "done" and (commit is None or p["commit"] == commit)
                      for p in pins)
    return pins if ok else None


def test_a_manifest_pin_is_warmed_and_kept_out_of_eviction(tmp_path, emu_factory, mirror_factory):
    pinned = make_repo(tmp_path / "pinned", {"p1.bin": MiB, "p2.bin": MiB}, seed=4)
    other = make_repo(tmp_path / "other", {"x.bin": MiB, "y.bin": MiB, "z.bin": MiB}, seed=5)
    emu = emu_factory(extra=repo_arg("acme/keep", tmp_path / "pinned") + repo_arg(OTHER, tmp_path / "other"))
    manifest = tmp_path / "pins.yaml"
    manifest.write_text("- repo: acme/keep\n  revision: main\n")
    m = mirror_factory(emu, cache={"block_size": "1MiB"}, pins=[str(manifest)],
                       **eviction("lru", max_size=7 * MiB // 2))
    wait_until(lambda: pin_done(m), 60, interval=0.2, what="the pin's warm-up job")
    assert on_disk(m.cache_dir, pinned["p1.bin"]) and on_disk(m.cache_dir, pinned["p2.bin"])
    wait_until(lambda: metric(m, "hubcache_verified_files_total") >= 2, 20, what="2 files verified")
    for n, name in enumerate(["x.bin", "y.bin", "z.bin"]):
        assert download(m, OTHER, name) == other[name]
        wait_until(lambda: metric(m, "hubcache_verified_files_total") >= n + 3, 20, what="verified")
    wait_until(lambda: not on_disk(m.cache_dir, other["x.bin"]) and not on_disk(m.cache_dir, other["y.bin"]),
               20, what="the unpinned files to be evicted")
    assert on_disk(m.cache_dir, pinned["p1.bin"]) and on_disk(m.cache_dir, pinned["p2.bin"]), \
        "a pinned file was evicted"
    [pin] = pins_of(m)
    assert pin["source"] == str(manifest) and pin["spec"]["repo"] == "acme/keep"
    # `cache ls` beside the mirror knows the manifest's pins too.
    ls = m.command("cache", "ls", "--config", str(m.config_path))
    assert ls.returncode == 0, ls.stderr
    keep = [line for line in ls.stdout.splitlines() if "acme/keep" in line]
    assert keep and all("[pinned]" in line for line in keep), ls.stdout
    assert not any("[pinned]" in line for line in ls.stdout.splitlines() if OTHER in line), ls.stdout


def test_a_pinned_branch_follows_upstream(own_emu, mirror_factory, tmp_path):
    repo = "acme/tiny-model"
    manifest = tmp_path / "pins.yaml"
    manifest.write_text(json.dumps([{"repo": repo, "include": ["config.json"]}]))
    m = mirror_factory(own_emu, pins=[str(manifest)], pin_refresh="1s", revision_ttl="1s")
    main = own_emu.commit(repo, "main")
    old = own_emu.commit(repo, "v1.0")
    assert main != old
    wait_until(lambda: pin_done(m, main), 60, interval=0.2, what="the pin warmed at main")
    own_emu.move_branch(repo, "main", old)
    [pin] = wait_until(lambda: pin_done(m, old), 60, interval=0.2, what="the pin to follow main")
    assert job_of(m, pin["job"])["files_done"] == 1
    # Offline, main is the new commit and its config.json is cached.
    m.restart(offline=True)
    r = m.resolve("GET", repo, "main", "config.json")
    assert r.status_code == 200 and r.headers["X-Repo-Commit"] == old
    assert sha256(r.content) == own_emu.file(repo, "v1.0", "config.json")["sha256"]


def test_hubcache_pin_warms_a_manifest_and_the_pin_survives_a_restart(own_emu, mirror_factory, tmp_path):
    m = mirror_factory(own_emu)
    manifest = tmp_path / "team.yaml"
    manifest.write_text("- {repo: acme/tiny-model, include: '*.json'}\n"
                        "- {repo: acme/tiny-dataset, type: dataset}\n")
    done = subprocess.run([m.binary, "pin", "--manifest", str(manifest), "--admin", m.admin_url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pinned models/acme/tiny-model" in done.stdout and "datasets/acme/tiny-dataset" in done.stdout
    assert done.stdout.count("files cached") == 2, done.stdout
    assert {p["spec"]["repo"] for p in pins_of(m)} == {"acme/tiny-model", "acme/tiny-dataset"}
    m.restart()
    assert {(p["spec"]["repo"], p["source"]) for p in pins_of(m)} == \
        {("acme/tiny-model", "api"), ("acme/tiny-dataset", "api")}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {repo: acme/x, colour: red}\n")
    refused = subprocess.run([m.binary, "pin", "--manifest", str(bad), "--admin", m.admin_url],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "colour" in refused.stderr, refused.stderr
