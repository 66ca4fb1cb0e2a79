"""`hubcache cache import --olah DIR`: take over a cache the real Olah 0.5.4 wrote, and one
built the way DingoSpeed's code writes it, then serve it with `offline: true` and the
upstream stopped.

The real Olah runs from .venv-olah (tests/requirements-olah.txt) against the Hub emulator;
files are downloaded through it with the real huggingface_hub client.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dingospeed_cache import DingoSpeedCache
from helpers import MiB, blob_path, flip_byte, read_blob_header, resolve_path, run_client, sha256
from olah_mirror import OLAH_CLI, Olah

pytestmark = pytest.mark.skipif(not OLAH_CLI.exists(),
                                reason=".venv-olah is missing (scripts/test creates it)")

MODEL, DATASET = "acme/tiny-model", "acme/tiny-dataset"
# huggingface.co compresses API answers; Olah keeps some encoded and some decoded (but with the
# encoding header), which the import must read as Olah does.
GZIP_JSON = ("--gzip-json",)


@pytest.fixture
def olah_factory(tmp_path):
    started: list[Olah] = []

    def make(emu, **kw) -> Olah:
        o = Olah(tmp_path / f"olah{len(started)}", emu, name=f"olah{len(started)}", **kw)
        started.append(o)
        return o

    yield make
    for o in started:
        o.stop()


def import_cache(hubcache_bin: str, workdir: Path, cache_dir: Path, repos: Path,
                 block_size: str = "8MiB", json_report: bool = True):
    """Runs the import; -> (exit code, report (dict, or text), stderr)."""
    config = workdir / "import.yaml"
    config.write_text(json.dumps({"cache": {"dir": str(cache_dir), "block_size": block_size},
                                  "upstreams": [], "offline": True}))
    args = [hubcache_bin, "cache", "import", "--config", str(config), "--olah", str(repos)]
    proc = subprocess.run(args + (["--json"] if json_report else []), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = json.loads(proc.stdout) if json_report and proc.returncode in (0, 1) else proc.stdout
    return proc.returncode, out, proc.stderr


def outcomes(report: dict) -> dict[tuple[str, str, str], dict]:
    return {(f["repo"], f["commit"], f["path"]): f["outcome"] for f in report["files"]}


def curl(url: str, out: Path) -> tuple[int, dict]:
    """GET with the real curl into `out`; -> (status, headers)."""
    args = ["curl", "-sS", "--noproxy", "*", "-D", "-", "-o", str(out), url]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    return status, headers


# What is downloaded through Olah: (repo type, repo, revision, path). `weird name +#%é.txt`
# is left out: Olah 0.5.4 forwards `#` unescaped upstream and gets a 404, so it never caches it.
DOWNLOADS = [
    ("model", MODEL, "main", "config.json"),
    ("model", MODEL, "main", "model.safetensors"),
    ("model", MODEL, "main", "tokenizer.json"),
    ("model", MODEL, "main", "sub/dir/notes.txt"),
    ("model", MODEL, "main", "empty.txt"),
    ("model", MODEL, "dev", "extra.bin"),
    ("model", MODEL, "v1.0", "config.json"),
    ("dataset", DATASET, "main", "data/train.parquet"),
    ("dataset", DATASET, "main", "data/test.csv"),
    ("model", "tinyllama", "main", "config.json"),
]


def olah_download(olah: Olah, hf_home: Path) -> None:
    """snapshot_download of the model, the dataset and tinyllama at `main` (this also caches
    their repo info), then single files at the branch `dev` and the tag `v1.0`."""
    ops = [
        {"op": "snapshot", "repo_id": MODEL, "ignore_patterns": ["weird*"]},
        {"op": "snapshot", "repo_id": DATASET, "repo_type": "dataset"},
        {"op": "snapshot", "repo_id": "tinyllama"},
        {"op": "download", "repo_id": MODEL, "filename": "extra.bin", "revision": "dev"},
        {"op": "download", "repo_id": MODEL, "filename": "config.json", "revision": "v1.0"},
    ]
    results = run_client(olah.url, hf_home, ops, extra_env={"HF_HUB_DISABLE_XET": "1"})
    for op, result in zip(ops, results):
        assert result["ok"], (op, result, olah.log_tail())


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_real_olah_cache_is_served_offline_byte_exact(compression, emu_factory, olah_factory,
                                                      mirror_factory, hubcache_bin, tmp_path):
    emu = emu_factory(extra=GZIP_JSON)
    olah = olah_factory(emu, compression=compression)
    olah_download(olah, tmp_path / "hf-olah")
    expected = {}
    for repo_type, repo, rev, path in DOWNLOADS:
        entry = emu.file(repo, rev, path)
        expected[(repo_type, repo, rev, path)] = (emu.commit(repo, rev), entry["sha256"], entry["size"])
    olah.stop()
    emu.stop()

    cache = tmp_path / "hubcache-cache"
    rc, report, err = import_cache(hubcache_bin, tmp_path, cache, olah.repos)
    assert rc == 0, (rc, report, err)
    got = outcomes(report)
    for (repo_type, repo, rev, path), (commit, digest, size) in expected.items():
        outcome = got[(f"{repo_type}s/{repo}", commit, path)]
        assert outcome["status"] == "imported", (path, outcome)
        assert outcome["size"] == size
    assert all(o["status"] in ("imported", "not_downloaded") for o in got.values()), report
    assert report["other"] == [] and report["notes"] == [], report   # every answer was read
    revisions = {(r["repo"], r["revision"]): r["commit"] for r in report["revisions"]}
    assert revisions[(f"models/{MODEL}", "main")] == emu.commit(MODEL, "main")
    assert revisions[(f"models/{MODEL}", "dev")] == emu.commit(MODEL, "dev")
    assert revisions[(f"models/{MODEL}", "v1.0")] == emu.commit(MODEL, "v1.0")
    assert revisions[(f"datasets/{DATASET}", "main")] == emu.commit(DATASET, "main")

    # Importing again copies nothing; the text summary counts match the per-file lines.
    rc, text, err = import_cache(hubcache_bin, tmp_path, cache, olah.repos, json_report=False)
    assert rc == 0, (text, err)
    lines = [line for line in text.splitlines() if line.startswith("  imported ")]
    assert len(lines) == len(report["files"]) and all("already in the store" in l or " 0 B," in l
                                                      for l in lines), text
    assert f"{len(lines)} files: {len(lines)} imported" in text, text

    mirror = mirror_factory([emu.hub], cache_dir=cache, offline=True)
    # The real client, with the upstream stopped: every file, by branch, tag and default.
    ops = []
    for (repo_type, repo, rev, path) in expected:
        op = {"op": "download", "repo_id": repo, "filename": path, "repo_type": repo_type}
        if rev != "main":
            op["revision"] = rev
        ops.append(op)
    results = run_client(mirror.url, tmp_path / "hf-hubcache", ops, extra_env={"HF_HUB_DISABLE_XET": "1"})
    for op, result, (key, (commit, digest, size)) in zip(ops, results, expected.items()):
        assert result["ok"], (op, result, mirror.log_tail())
        assert (result["sha256"], result["size"]) == (digest, size), op
    # curl, by branch and by commit.
    out = tmp_path / "curl.out"
    for (repo_type, repo, rev, path), (commit, digest, size) in expected.items():
        for r in (rev, commit):
            url = mirror.url + resolve_path(repo, r, path, repo_type)
            status, headers = curl(url, out)
            assert status == 200, (url, status, headers)
            assert headers.get("x-repo-commit") == commit, (url, headers)
            assert sha256(out.read_bytes()) == digest, url


def test_partial_olah_download_imports_checked_blocks_and_fetches_only_the_rest(
        emu_factory, olah_factory, mirror_factory, hubcache_bin, tmp_path):
    """Olah keeps 1 MiB blocks: a ranged download caches blocks 0-2, a download the emulator
    cuts off in block 3 adds nothing, another range caches block 5. hubcache (2 MiB blocks)
    imports the one block made only of checked Olah blocks, serves nothing of the file
    offline, and online fetches only the other 6 MiB."""
    emu = emu_factory(big_size=8 * MiB, extra=GZIP_JSON)
    repo, path = "acme/big-model", "big.bin"
    entry = emu.file(repo, "main", path)
    commit = emu.commit(repo, "main")
    olah = olah_factory(emu, block_size=MiB)
    [info] = run_client(olah.url, tmp_path / "hf-olah", [{"op": "model_info", "repo_id": repo}])
    assert info["ok"], info
    url = f"/{repo}/resolve/main/{path}"
    r = olah.get(url, headers={"Range": f"bytes=0-{3 * MiB - 1}"})
    assert r.status_code == 206 and len(r.content) == 3 * MiB
    emu.fault(kind="cut", host="cdn", match=entry["sha256"], after_bytes=100_000, count=1)
    with olah.http.get(olah.url + url, stream=True, timeout=60) as cut:
        with pytest.raises(Exception):
            for _ in cut.iter_content(1 << 16):
                pass
    r = olah.get(url, headers={"Range": f"bytes={5 * MiB}-{6 * MiB - 1}"})
    assert r.status_code == 206 and len(r.content) == MiB
    olah.stop()
    assert olah.present_blocks("model", repo, commit, path) == {0, 1, 2, 5}

    cache = tmp_path / "hubcache-cache"
    rc, report, err = import_cache(hubcache_bin, tmp_path, cache, olah.repos, block_size="2MiB")
    assert rc == 0, (rc, report, err)
    outcome = outcomes(report)[(f"models/{repo}", commit, path)]
    assert outcome["status"] == "partial", outcome
    assert (outcome["size"], outcome["bytes"]) == (8 * MiB, 2 * MiB), outcome
    assert outcome["missing"] == ["blocks 3-4: not downloaded", "blocks 6-7: not downloaded"]
    header = read_blob_header(blob_path(cache, entry["sha256"]))
    assert header.present == {0}, header

    offline = mirror_factory([emu.hub], cache_dir=cache, offline=True)
    r = offline.resolve("GET", repo, "main", path)
    assert r.status_code == 404 and r.headers.get("X-Error-Code") == "EntryNotFound", r.headers
    offline.stop()

    emu.reset()
    online = mirror_factory(emu, cache_dir=cache)
    r = online.resolve("GET", repo, "main", path)
    assert r.status_code == 200 and sha256(r.content) == entry["sha256"]
    fetched = emu.cdn_bytes_for(entry["sha256"])
    assert fetched <= 6 * MiB, f"fetched {fetched} bytes, {2 * MiB} of {8 * MiB} were imported"


def test_a_damaged_olah_block_is_reported_and_never_served(emu_factory, olah_factory,
                                                            mirror_factory, hubcache_bin, tmp_path):
    emu = emu_factory(extra=GZIP_JSON)
    commit = emu.commit(MODEL, "main")
    weights = emu.file(MODEL, "main", "model.safetensors")
    config = emu.file(MODEL, "main", "config.json")
    olah = olah_factory(emu, block_size=MiB)
    ops = [{"op": "model_info", "repo_id": MODEL},
           {"op": "download", "repo_id": MODEL, "filename": "model.safetensors"},
           {"op": "download", "repo_id": MODEL, "filename": "config.json"}]
    for result in run_client(olah.url, tmp_path / "hf-olah", ops, extra_env={"HF_HUB_DISABLE_XET": "1"}):
        assert result["ok"], result
    olah.stop()
    for path, block in (("model.safetensors", 2), ("config.json", 0)):
        spoilt = olah.entry("model", MODEL, commit, path) / "blocks" / f"block_{block:08d}.bin"
        raw = bytearray(spoilt.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        spoilt.write_bytes(bytes(raw))

    cache = tmp_path / "hubcache-cache"
    rc, report, err = import_cache(hubcache_bin, tmp_path, cache, olah.repos, block_size="1MiB")
    assert rc == 1, (rc, report, err)        # a file with bytes was left out
    got = outcomes(report)
    w = got[(f"models/{MODEL}", commit, "model.safetensors")]
    assert w["status"] == "partial" and w["missing"] == ["block 2: chunk 0 fails its CRC32"], w
    c = got[(f"models/{MODEL}", commit, "config.json")]
    assert c["status"] == "left_out" and "chunk 0 fails its CRC32" in c["reason"], c
    header = read_blob_header(blob_path(cache, weights["sha256"]))
    assert header.present == {0, 1, 3, 4}, header
    assert read_blob_header(blob_path(cache, config["oid"])) is None

    emu.reset()
    online = mirror_factory(emu, cache_dir=cache)
    for path, wanted in (("model.safetensors", weights), ("config.json", config)):
        r = online.resolve("GET", MODEL, "main", path)
        assert r.status_code == 200 and sha256(r.content) == wanted["sha256"], path
    assert emu.cdn_bytes_for(weights["sha256"]) <= MiB


def test_a_directory_that_is_not_an_olah_cache_is_refused_and_junk_is_reported(hubcache_bin, tmp_path):
    cache = tmp_path / "hubcache-cache"
    other = tmp_path / "not-olah"
    (other / "stuff").mkdir(parents=True)
    (other / "stuff" / "a.txt").write_text("hello")
    rc, out, err = import_cache(hubcache_bin, tmp_path, cache, other)
    assert rc == 2, (rc, out, err)
    assert "no Olah or DingoSpeed cache here" in err, err

    junk = tmp_path / "junk" / "repos"
    sha = "1" * 40
    (junk / "files/models/acme/x/resolve" / sha).mkdir(parents=True)
    (junk / "files/models/acme/x/resolve" / sha / "plain.txt").write_text("not an Olah file")
    fake = junk / "files/models/acme/x/resolve" / sha / "fake.bin"
    (fake / "blocks").mkdir(parents=True)
    (fake / "meta.bin").write_bytes(b"OLAH" + b"\x0a\x00" + b"\x00" * 60)
    rc, report, err = import_cache(hubcache_bin, tmp_path, cache, junk)
    assert rc == 1, (rc, report, err)
    got = outcomes(report)
    assert "not an Olah cache file" in got[("models/acme/x", sha, "plain.txt")]["reason"]
    assert "Olah header" in got[("models/acme/x", sha, "fake.bin")]["reason"], got
    assert not (cache / "blobs").exists() or not any((cache / "blobs").rglob("*")), \
        "nothing unverified may reach the store"


def test_dingospeed_cache_built_as_its_code_writes_it_is_served_offline(
        emu_factory, mirror_factory, hubcache_bin, tmp_path):
    emu = emu_factory(big_size=12 * MiB)
    dingo = DingoSpeedCache(tmp_path / "dingospeed", emu)
    files = [("model", MODEL, "config.json"), ("model", MODEL, "model.safetensors"),
             ("model", MODEL, "tokenizer.json"), ("model", MODEL, "sub/dir/notes.txt"),
             ("model", MODEL, "empty.txt"), ("dataset", DATASET, "data/train.parquet"),
             ("model", "acme/big-model", "big.bin")]
    shas = {repo: dingo.revision(repo_type, repo) for repo_type, repo, _ in files}
    expected = {}
    for repo_type, repo, path in files:
        dingo.file(repo_type, repo, shas[repo], path)
        entry = emu.file(repo, "main", path)
        expected[(repo_type, repo, path)] = (entry["sha256"], entry["size"])
    # A download DingoSpeed did not finish: its blob keeps no checksums, so it is left out.
    partial = emu.file(MODEL, "dev", "extra.bin")
    dev = dingo.revision("model", MODEL, "dev")
    dingo.file("model", MODEL, dev, "extra.bin", present=lambda block: False)
    # A blob damaged on disk (DingoSpeed checks nothing): it does not match its etag.
    readme = emu.file(MODEL, "main", "README.md")
    dingo.file("model", MODEL, shas[MODEL], "README.md")
    damaged = dingo.blob_path("model", MODEL, readme["oid"])
    flip_byte(damaged, damaged.stat().st_size - 10)
    emu.stop()

    cache = tmp_path / "hubcache-cache"
    rc, report, err = import_cache(hubcache_bin, tmp_path, cache, dingo.repos)
    assert rc == 1, (rc, report, err)
    got = outcomes(report)
    for (repo_type, repo, path), (_, size) in expected.items():
        outcome = got[(f"{repo_type}s/{repo}", shas[repo], path)]
        assert outcome["status"] == "imported" and outcome["size"] == size, (path, outcome)
    left = got[(f"models/{MODEL}", dev, "extra.bin")]
    assert left["status"] == "left_out" and "no checksums" in left["reason"], left
    assert read_blob_header(blob_path(cache, partial["sha256"])) is None
    bad = got[(f"models/{MODEL}", shas[MODEL], "README.md")]
    assert bad["status"] == "left_out" and "does not match its etag" in bad["reason"], bad
    assert read_blob_header(blob_path(cache, readme["oid"])) is None

    mirror = mirror_factory([emu.hub], cache_dir=cache, offline=True)
    ops = [{"op": "download", "repo_id": repo, "filename": path, "repo_type": repo_type}
           for repo_type, repo, path in expected]
    results = run_client(mirror.url, tmp_path / "hf-hubcache", ops, extra_env={"HF_HUB_DISABLE_XET": "1"})
    for op, result, (digest, size) in zip(ops, results, expected.values()):
        assert result["ok"], (op, result, mirror.log_tail())
        assert (result["sha256"], result["size"]) == (digest, size), op
    r = mirror.resolve("GET", MODEL, "main", "README.md")
    assert r.status_code == 404 and r.headers.get("X-Error-Code") == "EntryNotFound", r.headers
    out = tmp_path / "curl.out"
    for (repo_type, repo, path), (digest, _) in expected.items():
        for rev in ("main", shas[repo]):
            status, headers = curl(mirror.url + resolve_path(repo, rev, path, repo_type), out)
            assert status == 200 and headers.get("x-repo-commit") == shas[repo], (path, rev, headers)
            assert sha256(out.read_bytes()) == digest, (path, rev)
