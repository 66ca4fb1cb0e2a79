"""The huggingface_hub cache layout in and out (issue 17):

- `hubcache export REPO --to DIR`: the real huggingface_hub (and transformers' AutoConfig) with
  `HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1` and no endpoint at all loads the files byte-exact; a
  second revision shares blobs; offline, only what is cached is exported.
- `hubcache cache import --hf-cache DIR`: a cache the real huggingface_hub filled by
  downloading straight from the emulator is served by the mirror with `offline: true` and the
  emulator stopped, byte-exact, `main` included; bad input is reported and never imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import REPO_ROOT, HERE, client_env, file_sha256, git_oid, run_client, sha256

MODEL, DATASET = "acme/tiny-model", "acme/tiny-dataset"
# Nothing listens here: with HF_HUB_OFFLINE=1 the clients must not need an endpoint.
DEAD_ENDPOINT = "http://127.0.0.1:9"
ML_PYTHON = REPO_ROOT / ".venv-ml" / "bin" / "python"
ML_CLIENT = HERE / "ml_client.py"


def write_config(path: Path, cache: Path, emu=None, offline: bool = False) -> Path:
    upstreams = [{"url": emu.hub, "trust": "origin", "timeout": "10s"}] if emu else []
    path.write_text(json.dumps({"cache": {"dir": str(cache)}, "upstreams": upstreams,
                                "offline": offline}))
    return path


def hubcache(binary: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def export(binary: str, config: Path, repo: str, to: Path, *extra: str) -> tuple[int, dict | str]:
    p = hubcache(binary, "export", repo, "--to", str(to), "--config", str(config), "--json", *extra)
    if p.returncode in (0, 1):
        return p.returncode, json.loads(p.stdout)
    return p.returncode, p.stderr


def statuses(report: dict) -> dict[str, str]:
    return {f["path"]: (f["outcome"]["status"] if f["outcome"]["status"] != "copied"
                        else f"copied:{f['outcome']['method']}")
            for f in report["files"]}


def offline_env(cache_dir: Path, hf_home: Path) -> dict:
    return {"HF_HUB_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def test_export_is_loaded_by_huggingface_hub_offline_byte_exact(own_emu, hubcache_bin, tmp_path):
    emu = own_emu
    config = write_config(tmp_path / "hubcache.yaml", tmp_path / "cache", emu)
    out = tmp_path / "models"
    rc, main = export(hubcache_bin, config, MODEL, out)
    assert rc == 0, main
    main_files = emu.files(MODEL, "main")
    assert set(statuses(main)) == set(main_files)
    assert statuses(main).pop("empty.txt") == "copied:read_write", main
    assert {s for p, s in statuses(main).items() if p != "empty.txt"} == {"fetched"}, main
    assert main["commit"] == emu.commit(MODEL, "main")

    # A second revision shares the blobs the two have in common.
    rc, dev = export(hubcache_bin, config, MODEL, out, "--revision", "dev")
    assert rc == 0, dev
    dev_files = emu.files(MODEL, "dev")
    for path, status in statuses(dev).items():
        same = path in main_files and main_files[path]["sha256"] == dev_files[path]["sha256"]
        assert status == ("shared" if same else "fetched") or (not same and status.startswith("copied")), (path, status)
    assert statuses(dev)["extra.bin"] == "fetched"
    assert statuses(dev)["model.safetensors"] == "shared"

    folder = out / "models--acme--tiny-model"
    assert (folder / "refs" / "main").read_text() == emu.commit(MODEL, "main")
    assert (folder / "refs" / "dev").read_text() == emu.commit(MODEL, "dev")
    link = folder / "snapshots" / emu.commit(MODEL, "main") / "sub" / "dir" / "notes.txt"
    assert link.is_symlink() and os.readlink(link).startswith("../../../../blobs/")
    blobs = sorted(p.name for p in (folder / "blobs").iterdir())
    want_blobs = {f["sha256"] if f["lfs"] else f["oid"] for f in [*main_files.values(), *dev_files.values()]}
    assert set(blobs) == want_blobs, "one blob per content, named by its etag"

    # The real huggingface_hub, offline, with only the exported directory.
    ops = [{"op": "snapshot", "repo_id": MODEL},
           {"op": "snapshot", "repo_id": MODEL, "revision": "dev"},
           {"op": "download", "repo_id": MODEL, "filename": "extra.bin", "revision": "dev"},
           {"op": "download", "repo_id": MODEL, "filename": "config.json"},
           {"op": "download", "repo_id": MODEL, "filename": "config.json",
            "revision": emu.commit(MODEL, "main")}]
    results = run_client(DEAD_ENDPOINT, tmp_path / "hf_home", ops,
                         extra_env=offline_env(out, tmp_path / "hf_home"))
    for op, result in zip(ops, results):
        assert result["ok"], (op, result)
    assert results[0]["files"] == {p: f["sha256"] for p, f in main_files.items()}
    assert results[1]["files"] == {p: f["sha256"] for p, f in dev_files.items()}
    assert results[2]["sha256"] == dev_files["extra.bin"]["sha256"]
    assert results[3]["sha256"] == results[4]["sha256"] == main_files["config.json"]["sha256"]

    # From the now warm cache into another directory: copied, not fetched, and the method said.
    rc, again = export(hubcache_bin, config, MODEL, tmp_path / "models2")
    assert rc == 0, again
    methods = set(statuses(again).values())
    assert methods <= {"copied:reflink", "copied:copy_file_range", "copied:read_write"}, again


def test_export_of_a_dataset_with_include_and_exclude(own_emu, hubcache_bin, tmp_path):
    emu = own_emu
    config = write_config(tmp_path / "hubcache.yaml", tmp_path / "cache", emu)
    out = tmp_path / "hub"
    files = emu.files(DATASET, "main")
    rc, report = export(hubcache_bin, config, DATASET, out, "--type", "dataset",
                        "--include", "data/*", "--exclude", "*.csv")
    assert rc == 0, report
    want = {p for p in files if p.startswith("data/") and not p.endswith(".csv")}
    assert want and set(statuses(report)) == want
    assert report["filtered_out"] == len(files) - len(want)
    folder = out / "datasets--acme--tiny-dataset"
    results = run_client(DEAD_ENDPOINT, tmp_path / "hf_home",
                         [{"op": "download", "repo_id": DATASET, "repo_type": "dataset", "filename": p}
                          for p in sorted(want)], extra_env=offline_env(out, tmp_path / "hf_home"))
    for path, result in zip(sorted(want), results):
        assert result["ok"] and result["sha256"] == files[path]["sha256"], (path, result)
    assert (folder / "refs" / "main").exists()


def test_export_offline_writes_what_is_cached_and_names_the_rest(own_emu, hubcache_bin, tmp_path):
    emu = own_emu
    cache = tmp_path / "cache"
    online = write_config(tmp_path / "online.yaml", cache, emu)
    rc, first = export(hubcache_bin, online, MODEL, tmp_path / "warm", "--include", "config.json")
    assert rc == 0 and list(statuses(first)) == ["config.json"], first
    emu.stop()

    offline = write_config(tmp_path / "offline.yaml", cache, None, offline=True)
    rc, report = export(hubcache_bin, offline, MODEL, tmp_path / "out")
    assert rc == 1, report
    got = statuses(report)
    assert got["config.json"].startswith("copied:"), got
    failed = {f["path"]: f["outcome"]["reason"] for f in report["files"] if f["outcome"]["status"] == "failed"}
    assert "model.safetensors" in failed and "offline" in failed["model.safetensors"], failed
    snapshot = tmp_path / "out" / "models--acme--tiny-model" / "snapshots" / report["commit"]
    assert (snapshot / "config.json").read_bytes() == b'{"model_type":"tiny","v":2}'
    assert not (snapshot / "model.safetensors").exists()

    # An unknown repo offline: a clear error, exit 2, nothing written.
    p = hubcache(hubcache_bin, "export", "acme/nope", "--to", str(tmp_path / "none"), "--config", str(offline))
    assert p.returncode == 2 and "acme/nope" in p.stderr, p.stderr
    assert not (tmp_path / "none" / "models--acme--nope").exists()


def run_ml(env: dict, ops: list[dict]) -> list[dict]:
    p = subprocess.run([str(ML_PYTHON), str(ML_CLIENT), json.dumps(ops)], env=env, capture_output=True,
                       text=True, timeout=300, stdin=subprocess.DEVNULL)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, p.stderr[-3000:]
    results = json.loads(lines[-1][len("RESULT "):])
    for op, result in zip(ops, results):
        assert result["ok"], (op, result)
    return results


def test_transformers_loads_an_export_offline(emu_factory, hubcache_bin, tmp_path):
    """A BERT config and tokenizer made with `tokenizers` (ml_client.py), served by the
    emulator, exported, then loaded by transformers with HF_HUB_OFFLINE=1."""
    if not ML_PYTHON.exists():
        pytest.skip(".venv-ml is missing (scripts/test creates it)")
    model_dir = tmp_path / "made"
    (made,) = run_ml(client_env(DEAD_ENDPOINT, tmp_path / "hf_make"), [{"op": "make_model", "dir": str(model_dir)}])
    emu = emu_factory(extra=("--repo-dir", f"model:acme/tiny-bert={model_dir}"))
    config = write_config(tmp_path / "hubcache.yaml", tmp_path / "cache", emu)
    out = tmp_path / "hub"
    rc, report = export(hubcache_bin, config, "acme/tiny-bert", out)
    assert rc == 0, report
    emu.stop()
    env = client_env(DEAD_ENDPOINT, tmp_path / "hf_home", extra=offline_env(out, tmp_path / "hf_home"))
    conf, tok = run_ml(env, [{"op": "auto_config", "repo_id": "acme/tiny-bert"},
                             {"op": "auto_tokenizer", "repo_id": "acme/tiny-bert"}])
    assert conf["model_type"] == "bert" and conf["vocab_size"] == made["vocab_size"]
    assert tok["ids"] == made["ids"]
    for path, digest in conf["files"].items():
        assert digest == file_sha256(model_dir / path), path


def test_export_of_a_gated_repo_needs_hf_token(own_emu, hubcache_bin, tmp_path):
    config = write_config(tmp_path / "hubcache.yaml", tmp_path / "cache", own_emu)
    out = tmp_path / "hub"
    anonymous = hubcache(hubcache_bin, "export", "acme/gated-model", "--to", str(out), "--config", str(config))
    assert anonymous.returncode != 0, anonymous.stdout
    blobs = out / "models--acme--gated-model" / "blobs"
    assert not (blobs.exists() and any(blobs.iterdir())), "nothing of a gated repo without a token"
    p = subprocess.run([hubcache_bin, "export", "acme/gated-model", "--to", str(out), "--config", str(config),
                        "--json"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                       env={**os.environ, "HF_TOKEN": "hf_valid_token"})
    assert p.returncode == 0, p.stdout + p.stderr
    files = own_emu.files("acme/gated-model", "main")
    assert set(statuses(json.loads(p.stdout))) == set(files)
    results = run_client(DEAD_ENDPOINT, tmp_path / "hf_home",
                         [{"op": "download", "repo_id": "acme/gated-model", "filename": path} for path in sorted(files)],
                         extra_env=offline_env(out, tmp_path / "hf_home"))
    for path, result in zip(sorted(files), results):
        assert result["ok"] and result["sha256"] == files[path]["sha256"], (path, result)


@pytest.fixture
def xfs_dir(tmp_path):
    """A fresh loop-mounted XFS with reflinks (skips the test where mkfs.xfs or loop mounts
    are missing). Unmounted at teardown."""
    mkfs = subprocess.run(["sh", "-c", "command -v mkfs.xfs"], capture_output=True, text=True)
    if mkfs.returncode != 0:
        pytest.skip("mkfs.xfs is missing (scripts/test installs xfsprogs)")
    image, mnt = tmp_path / "xfs.img", tmp_path / "xfs"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(2048 * 1024 * 1024)  # sparse; above the cache's 256 MiB free-space reserve
    made = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mkfs.xfs failed: {made.stderr.strip()}")
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True,
                             timeout=60)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount an XFS image: {mounted.stderr.strip()}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=60)
    image.unlink(missing_ok=True)


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_export_reflinks_where_the_filesystem_can_and_costs_no_space(emu_factory, hubcache_bin, xfs_dir):
    emu = emu_factory(big_size=64 * 1024 * 1024)
    config = write_config(xfs_dir / "hubcache.yaml", xfs_dir / "cache", emu)
    rc, first = export(hubcache_bin, config, "acme/big-model", xfs_dir / "first")
    assert rc == 0 and set(statuses(first).values()) == {"fetched"}, first
    big = emu.file("acme/big-model", "main", "big.bin")
    emu.stop()
    os.sync()
    before = used_bytes(xfs_dir)
    started = time.monotonic()
    rc, second = export(hubcache_bin, config, "acme/big-model", xfs_dir / "second")
    took = time.monotonic() - started
    assert rc == 0, [(f["path"], f["outcome"]) for f in second["files"]]
    assert set(statuses(second).values()) == {"copied:reflink"}, second
    os.sync()
    grown = used_bytes(xfs_dir) - before
    print(f"reflinked export of 64 MiB: {took:.2f} s (hashing the result included), "
          f"{grown / 1024:.0f} KiB of disk")
    assert grown < 4 * 1024 * 1024, f"a reflinked 64 MiB export took {grown} bytes"
    blob = xfs_dir / "second" / "models--acme--big-model" / "blobs" / big["sha256"]
    assert file_sha256(blob) == big["sha256"]


# ---------------------------------------------------------------------------------------------
# import --hf-cache
# ---------------------------------------------------------------------------------------------


def import_hf(binary: str, config: Path, dir: Path) -> tuple[int, dict | str, str]:
    p = hubcache(binary, "cache", "import", "--config", str(config), "--hf-cache", str(dir), "--json")
    if p.returncode in (0, 1):
        return p.returncode, json.loads(p.stdout), p.stderr
    return p.returncode, p.stdout, p.stderr


def outcomes(report: dict) -> dict[tuple[str, str], dict]:
    return {(f["commit"], f["path"]): f["outcome"] for f in report["files"]}


def test_a_cache_huggingface_hub_filled_is_served_offline_after_import(
        own_emu, mirror_factory, hubcache_bin, tmp_path):
    emu = own_emu
    hf_home = tmp_path / "hf_direct"
    ops = [{"op": "snapshot", "repo_id": MODEL},
           {"op": "download", "repo_id": MODEL, "filename": "extra.bin", "revision": "dev"},
           {"op": "download", "repo_id": MODEL, "filename": "config.json", "revision": "v1.0"},
           {"op": "snapshot", "repo_id": DATASET, "repo_type": "dataset"}]
    direct = run_client(emu.hub, hf_home, ops, extra_env={"HF_HUB_DISABLE_XET": "1"}, sandbox=False)
    for op, result in zip(ops, direct):
        assert result["ok"], (op, result)
    expected = {("model", MODEL, rev, path): emu.file(MODEL, rev, path)
                for rev, path in [("main", p) for p in emu.files(MODEL, "main")]
                + [("dev", "extra.bin"), ("v1.0", "config.json")]}
    expected.update({("dataset", DATASET, "main", p): f for p, f in emu.files(DATASET, "main").items()})
    emu.stop()

    cache = tmp_path / "cache"
    config = write_config(tmp_path / "import.yaml", cache, None, offline=True)
    rc, report, err = import_hf(hubcache_bin, config, hf_home / "hub")
    assert rc == 0, (report, err)
    got = outcomes(report)
    for (kind, repo, rev, path), entry in expected.items():
        outcome = got[(emu.commit(repo, rev), path)]
        assert outcome["status"] == "imported", (repo, rev, path, outcome)
    revisions = {(r["repo"], r["revision"]): r["commit"] for r in report["revisions"]}
    assert revisions[("models/" + MODEL, "main")] == emu.commit(MODEL, "main")
    assert revisions[("models/" + MODEL, "dev")] == emu.commit(MODEL, "dev")
    assert revisions[("models/" + MODEL, "v1.0")] == emu.commit(MODEL, "v1.0")

    # Nothing was written into the imported directory.
    before = sorted(str(p) for p in (hf_home / "hub").rglob("*"))
    mirror = mirror_factory([], cache_dir=cache, offline=True)
    for (kind, repo, rev, path), entry in expected.items():
        prefix = "datasets/" if kind == "dataset" else ""
        r = mirror.get(f"/{prefix}{repo}/resolve/{rev}/{quote(path)}")
        assert r.status_code == 200, (repo, rev, path, r.status_code, r.text[:200])
        assert sha256(r.content) == entry["sha256"], (repo, rev, path)
    # The real client through the offline mirror, default revision (main).
    results = run_client(mirror.url, tmp_path / "hf_via_mirror",
                         [{"op": "download", "repo_id": MODEL, "filename": "model.safetensors"},
                          {"op": "download", "repo_id": MODEL, "filename": "extra.bin", "revision": "dev"}])
    assert results[0]["ok"], results[0]
    assert results[0]["sha256"] == expected[("model", MODEL, "main", "model.safetensors")]["sha256"]
    assert results[1]["ok"] and results[1]["sha256"] == expected[("model", MODEL, "dev", "extra.bin")]["sha256"]
    assert sorted(str(p) for p in (hf_home / "hub").rglob("*")) == before


def make_repo(root: Path, files: dict[str, bytes], repo: str = "models--acme--bad",
              commit: str = "c" * 40) -> Path:
    """A well-formed huggingface_hub cache repo with `files` at `commit` (refs/main)."""
    folder = root / repo
    (folder / "blobs").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    for path, data in files.items():
        etag = git_oid(data) if len(data) < 100 else sha256(data)
        (folder / "blobs" / etag).write_bytes(data)
        link = folder / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(folder / "blobs" / etag, link.parent), link)
    return folder


def test_bad_hf_cache_input_is_reported_and_never_imported(mirror_factory, hubcache_bin, tmp_path):
    cache = tmp_path / "cache"
    config = write_config(tmp_path / "import.yaml", cache, None, offline=True)

    # Not a huggingface_hub cache at all.
    junk = tmp_path / "junk"
    (junk / "something").mkdir(parents=True)
    (junk / "file.txt").write_text("x")
    rc, out, err = import_hf(hubcache_bin, config, junk)
    assert rc == 2 and "not a huggingface_hub cache" in err, (rc, out, err)

    outside = tmp_path / "outside"
    outside.mkdir()
    secret = b"outside the import directory " * 8
    (outside / sha256(secret)).write_bytes(secret)
    outside_before = sorted(p.name for p in outside.iterdir())

    hub = tmp_path / "hub"
    good = b"good content, imported"
    wrong = b"the bytes a blob is named after " * 8
    folder = make_repo(hub, {"good.txt": good, "mismatch.bin": wrong})
    commit = "c" * 40
    snap = folder / "snapshots" / commit
    # Content not matching its name: the blob file is overwritten with other bytes.
    (folder / "blobs" / sha256(wrong)).write_bytes(b"tampered" + wrong[8:])
    # A dangling symlink.
    os.symlink("../../blobs/" + "d" * 64, snap / "dangling.bin")
    # `..` climbing out of the repo, and out of DIR.
    os.symlink(os.path.relpath(outside / sha256(secret), snap), snap / "escape.bin")
    os.symlink("../../../../../../../../../etc/hostname", snap / "climb.txt")
    # An absolute symlink.
    os.symlink(str(outside / sha256(secret)), snap / "absolute.bin")
    # A blob in blobs/ that is itself a symlink out of DIR.
    os.symlink(str(outside / sha256(secret)), folder / "blobs" / sha256(secret))
    os.symlink("../../blobs/" + sha256(secret), snap / "via-blob-link.bin")
    # A snapshot subdirectory that is a symlink out of DIR.
    os.symlink(str(outside), snap / "linked-dir")
    # A partial download.
    (folder / "blobs" / (sha256(b"partial") + ".incomplete")).write_bytes(b"par")

    rc, report, err = import_hf(hubcache_bin, config, hub)
    assert rc == 1, (report, err)
    got = {path: o for (c, path), o in outcomes(report).items()}
    assert got["good.txt"]["status"] == "imported", got
    for bad in ["mismatch.bin", "dangling.bin", "escape.bin", "climb.txt", "absolute.bin", "via-blob-link.bin"]:
        assert got[bad]["status"] == "left_out", (bad, got.get(bad))
    assert "does not match" in got["mismatch.bin"]["reason"]
    assert "dangling" in got["dangling.bin"]["reason"]
    assert "outside" in got["escape.bin"]["reason"] or "escapes" in got["escape.bin"]["reason"]
    assert "escapes" in got["climb.txt"]["reason"] or "outside" in got["climb.txt"]["reason"]
    others = {Path(o["path"]).name: o["reason"] for o in report["other"]}
    assert "linked-dir" in others and sha256(b"partial") + ".incomplete" in others, others
    assert sorted(p.name for p in outside.iterdir()) == outside_before

    # Only the good file is served; nothing unverified is in the store.
    mirror = mirror_factory([], cache_dir=cache, offline=True)
    r = mirror.get(f"/acme/bad/resolve/main/good.txt")
    assert r.status_code == 200 and r.content == good
    for bad in ["mismatch.bin", "escape.bin", "absolute.bin", "via-blob-link.bin", "dangling.bin"]:
        assert mirror.get(f"/acme/bad/resolve/main/{bad}").status_code >= 400, bad
    stored = {p.name for p in (cache / "blobs").rglob("*") if p.is_file()}
    assert sha256(secret) not in stored and sha256(wrong) not in stored, stored
