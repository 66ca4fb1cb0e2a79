"""The real huggingface_hub 2.4 client and `hf` CLI (with hf_xet installed and enabled) against
the real binary. Every client runs in a subprocess with its own HF_HOME and HF_ENDPOINT, and
can reach only the mirror: every other origin (the emulator's hub and CDN included) goes
through a proxy address that refuses connections (helpers.client_env)."""

from __future__ import annotations

import threading
import time

import pytest

from helpers import MiB, expected_files, run_cli, run_client, tree_files


def assert_ok(result: dict, what: str = "") -> dict:
    assert result["ok"], f"{what}: {result.get('error')}: {result.get('message')}\n{result.get('traceback', '')}"
    return result


def assert_no_xet_and_no_leak(emu) -> None:
    stats = emu.stats()
    assert stats["by_route"]["xet_token"] == 0, "a client asked for a Xet token"
    assert stats["by_route"]["cas"] == 0, "a client reached the Xet CAS"
    assert stats["auth_leaks"] == 0


def assert_snapshot_matches(result: dict, emu, repo: str, rev: str) -> None:
    assert result["files"] == expected_files(emu, repo, rev)


# --------------------------------------------------------------------------------------------
# hf_hub_download
# --------------------------------------------------------------------------------------------

SINGLE = [
    # (repo type, repo, revision, path)
    ("model", "acme/tiny-model", "main", "config.json"),
    ("model", "acme/tiny-model", "main", "model.safetensors"),
    ("model", "acme/tiny-model", "dev", "extra.bin"),
    ("model", "acme/tiny-model", "v1.0", "config.json"),
    ("model", "acme/tiny-model", "refs/pr/1", "config.json"),
    ("model", "acme/tiny-model", "@sha:v1.0", "model.safetensors"),
    ("model", "acme/tiny-model", "main", "sub/dir/notes.txt"),
    ("model", "acme/tiny-model", "main", "weird name +#%é.txt"),
    ("model", "acme/tiny-model", "main", "empty.txt"),
    ("model", "tinyllama", "main", "model.bin"),
    ("model", "acme/xet-model", "main", "model.safetensors"),
    ("model", "acme/old-name", "main", "config.json"),
    ("dataset", "acme/tiny-dataset", "main", "data/train.parquet"),
    ("dataset", "acme/tiny-dataset", "refs/convert/parquet", "data/test.csv"),
    ("space", "acme/tiny-space", "main", "app.py"),
]


def test_hf_hub_download_every_revision_and_repo_form(mirror, emu, hf_home):
    ops, expected = [], []
    for repo_type, repo, rev, path in SINGLE:
        if rev.startswith("@sha:"):
            rev = emu.commit(repo, rev[len("@sha:"):])
        source = "acme/new-name" if repo == "acme/old-name" else repo
        ops.append({"op": "download", "repo_id": repo, "filename": path, "revision": rev, "repo_type": repo_type})
        expected.append((f"{repo_type}:{repo}@{rev}/{path}", emu.file(source, rev, path)))
    results = run_client(mirror.url, hf_home, ops)
    failures = []
    for (what, entry), result in zip(expected, results):
        if not result["ok"]:
            failures.append(f"{what}: {result['error']}: {result['message'][:300]}")
        elif result["sha256"] != entry["sha256"] or result["size"] != entry["size"]:
            failures.append(f"{what}: wrong content ({result['size']} bytes)")
    assert not failures, "\n".join(failures)
    assert_no_xet_and_no_leak(emu)


def test_hf_hub_download_missing_file_and_bad_revision(shared_mirror, hf_home):
    results = run_client(shared_mirror.url, hf_home, [
        {"op": "download", "repo_id": "acme/tiny-model", "filename": "nope.json"},
        {"op": "download", "repo_id": "acme/tiny-model", "filename": "config.json", "revision": "no-such-branch"},
        {"op": "download", "repo_id": "acme/no-such-repo", "filename": "config.json"},
        {"op": "file_exists", "repo_id": "acme/tiny-model", "filename": "nope.json"},
        {"op": "file_exists", "repo_id": "acme/tiny-model", "filename": "config.json"},
    ])
    assert "EntryNotFoundError" in " ".join(results[0]["mro"]), results[0]
    assert results[1]["error"] == "RevisionNotFoundError", results[1]
    assert "RepositoryNotFoundError" in results[2]["mro"], results[2]
    assert results[3] == {"ok": True, "exists": False}
    assert results[4] == {"ok": True, "exists": True}
    # the 404 with X-Repo-Commit lets the client remember the missing file
    assert list(hf_home.glob("hub/models--acme--tiny-model/.no_exist/*/nope.json")), \
        "no .no_exist marker: the EntryNotFound answer lacked X-Repo-Commit"


# --------------------------------------------------------------------------------------------
# snapshot_download and the hf CLI
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("repo_type,repo,rev", [("model", "acme/tiny-model", "main"),
                                                ("model", "acme/tiny-model", "dev"),
                                                ("dataset", "acme/tiny-dataset", "main"),
                                                ("model", "acme/xet-model", "main")])
def test_snapshot_download(mirror, emu, hf_home, repo_type, repo, rev):
    [result] = run_client(mirror.url, hf_home, [{"op": "snapshot", "repo_id": repo, "repo_type": repo_type,
                                                 "revision": rev}])
    assert_ok(result, f"snapshot {repo}@{rev}")
    assert_snapshot_matches(result, emu, repo, rev)
    assert_no_xet_and_no_leak(emu)


def test_second_client_snapshot_moves_no_file_bytes_upstream(mirror, emu, tmp_path):
    [first] = run_client(mirror.url, tmp_path / "c1", [{"op": "snapshot", "repo_id": "acme/tiny-model"}])
    assert_ok(first, "first snapshot")
    emu.reset()
    [second] = run_client(mirror.url, tmp_path / "c2", [{"op": "snapshot", "repo_id": "acme/tiny-model"}])
    assert_ok(second, "second snapshot")
    assert second["files"] == expected_files(emu, "acme/tiny-model", "main")
    stats = emu.stats()
    assert stats["cdn_bytes"] == 0 and stats["hub_file_bytes"] == 0, stats["recent"]


def test_snapshot_download_of_a_paginated_tree(shared_mirror, emu, hf_home):
    [result] = run_client(shared_mirror.url, hf_home, [{"op": "snapshot", "repo_id": "acme/many-files",
                                                        "max_workers": 8}], timeout=240)
    assert_ok(result, "snapshot acme/many-files")
    assert_snapshot_matches(result, emu, "acme/many-files", "main")
    assert_no_xet_and_no_leak(emu)


def test_hf_cli_download_to_local_dir(mirror, emu, tmp_path, hf_home):
    dest = tmp_path / "local-model"
    p = run_cli(mirror.url, hf_home, ["download", "acme/tiny-model", "--local-dir", str(dest)])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert tree_files(dest) == expected_files(emu, "acme/tiny-model", "main")
    # a re-run finds everything in place (LFS files are checked by sha256 ETag, nothing re-downloaded)
    emu.reset()
    p = run_cli(mirror.url, hf_home, ["download", "acme/tiny-model", "--local-dir", str(dest)])
    assert p.returncode == 0, p.stderr[-3000:]
    assert emu.stats()["cdn_bytes"] == 0
    assert tree_files(dest) == expected_files(emu, "acme/tiny-model", "main")
    assert_no_xet_and_no_leak(emu)


def test_hf_cli_download_dataset_and_include(mirror, emu, tmp_path, hf_home):
    dest = tmp_path / "local-dataset"
    p = run_cli(mirror.url, hf_home, ["download", "acme/tiny-dataset", "--repo-type", "dataset",
                                      "--local-dir", str(dest)])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert tree_files(dest) == expected_files(emu, "acme/tiny-dataset", "main")
    only_json = tmp_path / "only-json"
    p = run_cli(mirror.url, hf_home, ["download", "acme/tiny-model", "--include", "*.json",
                                      "--local-dir", str(only_json)])
    assert p.returncode == 0, p.stderr[-3000:]
    want = {k: v for k, v in expected_files(emu, "acme/tiny-model", "main").items() if k.endswith(".json")}
    assert tree_files(only_json) == want
    assert_no_xet_and_no_leak(emu)


def test_second_snapshot_with_upstream_stopped_into_a_new_client_cache(own_emu, mirror_factory, tmp_path):
    m = mirror_factory(own_emu)
    expected = {r: expected_files(own_emu, r[1], "main") for r in (("model", "acme/tiny-model"),
                                                                   ("dataset", "acme/tiny-dataset"))}
    first = run_client(m.url, tmp_path / "client1", [
        {"op": "snapshot", "repo_id": "acme/tiny-model"},
        {"op": "snapshot", "repo_id": "acme/tiny-dataset", "repo_type": "dataset"}])
    for result, (key, want) in zip(first, expected.items()):
        assert_ok(result, f"first snapshot {key}")
        assert result["files"] == want
    assert_no_xet_and_no_leak(own_emu)
    own_emu.stop()
    second = run_client(m.url, tmp_path / "client2", [
        {"op": "snapshot", "repo_id": "acme/tiny-model"},
        {"op": "snapshot", "repo_id": "acme/tiny-dataset", "repo_type": "dataset"},
        {"op": "download", "repo_id": "acme/tiny-model", "filename": "model.safetensors"}])
    for result, (key, want) in zip(second, expected.items()):
        assert_ok(result, f"snapshot {key} with the upstream stopped")
        assert result["files"] == want
    assert_ok(second[2], "hf_hub_download with the upstream stopped")


def test_snapshot_from_an_offline_mirror(own_emu, mirror_factory, tmp_path):
    m = mirror_factory(own_emu)
    [first] = run_client(m.url, tmp_path / "client1", [{"op": "snapshot", "repo_id": "acme/tiny-model"}])
    assert_ok(first, "online snapshot")
    m.restart(offline=True)
    own_emu.reset()
    results = run_client(m.url, tmp_path / "client2", [
        {"op": "snapshot", "repo_id": "acme/tiny-model"},
        {"op": "snapshot", "repo_id": "acme/tiny-model", "revision": own_emu.commit("acme/tiny-model", "main")},
        {"op": "download", "repo_id": "acme/tiny-model", "filename": "config.json"},
        {"op": "model_info", "repo_id": "acme/tiny-model"}])
    assert_ok(results[0], "offline snapshot by branch")
    assert results[0]["files"] == expected_files(own_emu, "acme/tiny-model", "main")
    assert_ok(results[1], "offline snapshot by commit")
    assert_ok(results[2], "offline hf_hub_download")
    assert_ok(results[3], "offline model_info")["sha"] == own_emu.commit("acme/tiny-model", "main")
    assert own_emu.stats()["requests"] == 0, "the offline mirror contacted the upstream"


# --------------------------------------------------------------------------------------------
# gated repos
# --------------------------------------------------------------------------------------------

def test_gated_repo_with_and_without_a_token(mirror, emu, tmp_path):
    ok = run_client(mirror.url, tmp_path / "alice", [
        {"op": "download", "repo_id": "acme/gated-model", "filename": "model.safetensors"},
        {"op": "snapshot", "repo_id": "acme/gated-model"}], token="hf_valid_token")
    assert_ok(ok[0], "gated hf_hub_download with hf_valid_token")
    assert ok[0]["sha256"] == emu.file("acme/gated-model", "main", "model.safetensors")["sha256"]
    assert_ok(ok[1], "gated snapshot with hf_valid_token")
    assert ok[1]["files"] == expected_files(emu, "acme/gated-model", "main")
    # the same mirror, now warm: no token and the wrong token are still refused
    anon = run_client(mirror.url, tmp_path / "anon", [
        {"op": "download", "repo_id": "acme/gated-model", "filename": "model.safetensors"},
        {"op": "download", "repo_id": "acme/gated-model", "filename": "config.json"}])
    for r in anon:
        assert r["error"] == "GatedRepoError", r
    other = run_client(mirror.url, tmp_path / "bob", [
        {"op": "download", "repo_id": "acme/gated-model", "filename": "model.safetensors"}],
        token="hf_other_token")
    assert other[0]["error"] == "GatedRepoError", other[0]
    assert_no_xet_and_no_leak(emu)


# --------------------------------------------------------------------------------------------
# an interrupted download
# --------------------------------------------------------------------------------------------

def test_interrupted_cold_download_completes(emu_factory, mirror_factory, hf_home):
    e = emu_factory(big_size=48 * MiB)
    entry = e.file("acme/big-model", "main", "big.bin")
    e.fault(kind="cut", host="cdn", match=entry["sha256"], after_bytes=5 * MiB, count=1)
    m = mirror_factory(e)
    [result] = run_client(m.url, hf_home, [{"op": "download", "repo_id": "acme/big-model", "filename": "big.bin"}],
                          timeout=240)
    assert_ok(result, "hf_hub_download of big.bin after a cut transfer")
    assert result["size"] == entry["size"]
    assert result["sha256"] == entry["sha256"]
    assert [f["applied"] for f in e.faults()] == [1], "the cut fault never fired"
    assert_no_xet_and_no_leak(e)


def test_client_resumes_when_the_mirror_connection_is_cut(emu_factory, mirror_factory, hf_home):
    """A slow CDN and a mirror restarted mid-download (SIGINT, grace 1s): the client's retry
    (Range: bytes=N-) against the restarted mirror on the same cache completes the file."""
    e = emu_factory(big_size=24 * MiB, extra=("--cdn-rate", str(8 * MiB)))
    entry = e.file("acme/big-model", "main", "big.bin")
    m = mirror_factory(e, fill={"connections_per_file": 1, "segment": "4MiB"})
    port = m.port
    errors: list = []

    def restart_soon():
        # wait until the download is under way, then restart the mirror on the same port
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and e.stats()["cdn_bytes"] < 12 * MiB:
                time.sleep(0.05)
            m.restart(same_port=True)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    t = threading.Thread(target=restart_soon)
    t.start()
    try:
        [result] = run_client(f"http://127.0.0.1:{port}", hf_home,
                              [{"op": "download", "repo_id": "acme/big-model", "filename": "big.bin"}],
                              timeout=240)
    finally:
        t.join(60)
    assert not errors, errors
    assert_ok(result, "hf_hub_download across a mirror restart")
    assert result["sha256"] == entry["sha256"]
