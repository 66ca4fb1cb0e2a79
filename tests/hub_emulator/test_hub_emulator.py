"""Self-test of the Hub emulator (tests/hub_emulator/hub.py).

Needs: pytest, requests, huggingface_hub (the last only for the real-client test, skipped if absent).
    python3 -m venv /tmp/emu-venv && /tmp/emu-venv/bin/pip install pytest requests huggingface_hub
    /tmp/emu-venv/bin/python -m pytest -q tests/hub_emulator
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import subprocess
import sys
import textwrap
import time
from urllib.parse import quote, urlsplit

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
HUB_PY = os.path.join(HERE, "hub.py")
BIG = 8 * 1024 * 1024
VALID = {"Authorization": "Bearer hf_valid_token"}
OTHER = {"Authorization": "Bearer hf_other_token"}
BAD = {"Authorization": "Bearer hf_nope"}


class Emu:
    """A running emulator process plus small request helpers."""

    def __init__(self, tmp_path, *extra: str):
        self.log = open(tmp_path / "emulator.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, HUB_PY, "--port", "0", "--cdn-port", "0", "--big-size", str(BIG),
             "--data-dir", str(tmp_path / "data"), *extra],
            stdout=subprocess.PIPE, stderr=self.log)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready, "emulator did not start within 60 s"
        info = json.loads(self.proc.stdout.readline())
        self.hub, self.cdn = info["hub"], info["cdn"]
        self.s = requests.Session()

    def close(self) -> None:
        self.s.close()
        self.proc.terminate()
        try:
            assert self.proc.wait(10) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()

    def req(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 30)
        url = path if path.startswith("http") else self.hub + path
        return self.s.request(method, url, **kw)

    def control(self, name: str, body=None):
        r = self.s.request("POST" if body is not None else "GET", f"{self.hub}/_emulator/{name}",
                           json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = Emu(tmp_path_factory.mktemp("emu"))
    e.manifest = e.control("manifest")
    yield e
    e.close()


@pytest.fixture(autouse=True)
def _reset(request):
    if "emu" in request.fixturenames:
        request.getfixturevalue("emu").control("reset", {"refs": True})


def files_of(emu, repo, rev="main"):
    r = emu.manifest["repos"][repo]
    return {f["path"]: f for f in r["commits"][r["revisions"][rev]]["files"]}


def content(emu, f) -> bytes:
    return emu.req("GET", f["content_url"]).content


def resolve_url(repo, rev, path, prefix=""):
    return f"/{prefix}{repo}/resolve/{quote(rev, safe='')}/{quote(path)}"


# ---------------------------------------------------------------------------------------------
# manifest / content
# ---------------------------------------------------------------------------------------------

def test_manifest_sha256_matches_content(emu):
    repos = emu.manifest["repos"]
    assert {"acme/tiny-model", "tinyllama", "acme/tiny-dataset", "acme/gated-model", "acme/private-model",
            "acme/new-name", "acme/many-files", "acme/big-model", "acme/xet-model", "acme/tiny-space",
            "acme/snapshot-300"} <= set(repos)
    assert len(files_of(emu, "acme/many-files")) == 350
    snap = files_of(emu, "acme/snapshot-300")
    assert len(snap) == 300 and sum(f["lfs"] for f in snap.values()) == 20
    assert files_of(emu, "acme/big-model")["big.bin"]["size"] == BIG
    for repo_id, repo in repos.items():
        if repo_id in ("acme/many-files", "acme/snapshot-300"):
            continue
        for sha, commit in repo["commits"].items():
            for f in commit["files"]:
                data = content(emu, f)
                assert len(data) == f["size"], f
                assert hashlib.sha256(data).hexdigest() == f["sha256"], f
                if not f["lfs"]:
                    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == f["oid"]


def test_deterministic_across_restarts(emu, tmp_path):
    other = Emu(tmp_path)
    try:
        assert other.control("manifest")["repos"] == emu.manifest["repos"]
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------
# resolve
# ---------------------------------------------------------------------------------------------

def test_regular_file_307_to_resolve_cache(emu):
    main = emu.manifest["repos"]["acme/tiny-model"]["revisions"]["main"]
    f = files_of(emu, "acme/tiny-model")["config.json"]
    r = emu.req("HEAD", resolve_url("acme/tiny-model", "main", "config.json"))
    assert r.status_code == 307 and int(r.headers["Content-Length"]) > 0
    loc = r.headers["Location"]
    assert loc.startswith(f"/api/resolve-cache/models/acme/tiny-model/{main}/config.json?")
    assert f"etag=%22{f['oid']}%22" in loc
    head = emu.req("HEAD", loc)
    get = emu.req("GET", loc.split("?")[0])          # old clients drop the query
    for resp in (head, get):
        assert resp.status_code == 200
        assert resp.headers["X-Repo-Commit"] == main
        assert resp.headers["ETag"] == f'"{f["oid"]}"'
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert int(resp.headers["Content-Length"]) == f["size"]
    assert head.content == b"" and get.content == b'{"model_type":"tiny","v":2}'
    ranged = emu.req("GET", loc, headers={"Range": "bytes=2-11"})
    assert ranged.status_code == 206 and ranged.content == get.content[2:12]


def test_direct_200_cases(emu):
    cases = [("tinyllama", "config.json", {}), ("acme/tiny-model", "empty.txt", {}),
             ("acme/gated-model", "config.json", VALID), ("acme/private-model", "config.json", VALID)]
    for repo, path, headers in cases:
        f = files_of(emu, repo)[path]
        for method in ("HEAD", "GET"):
            r = emu.req(method, resolve_url(repo, "main", path), headers=headers)
            assert r.status_code == 200, (repo, path, r.status_code)
            assert r.headers["ETag"] == f'"{f["oid"]}"'
            assert int(r.headers["Content-Length"]) == f["size"]
            assert r.content == (b"" if method == "HEAD" else content(emu, f))


def test_revisions_and_encoded_names(emu):
    def config(rev, **kw):
        r = emu.req("GET", resolve_url("acme/tiny-model", rev, "config.json"), allow_redirects=True, **kw)
        assert r.status_code == 200, (rev, r.status_code)
        return json.loads(r.content)["v"]
    revs = emu.manifest["repos"]["acme/tiny-model"]["revisions"]
    assert config("main") == 2 and config("v1.0") == 1 and config("refs/pr/1") == 4
    assert config(revs["v1.0"]) == 1 and config("dev") == 2
    raw = emu.req("GET", "/acme/tiny-model/resolve/refs/pr/1/config.json", allow_redirects=True)
    assert json.loads(raw.content)["v"] == 4
    assert emu.req("HEAD", resolve_url("acme/tiny-model", "dev", "extra.bin")).status_code == 302
    assert emu.req("HEAD", resolve_url("acme/tiny-model", "main", "extra.bin")).status_code == 404
    for path in ("weird name +#%é.txt", "sub/dir/notes.txt"):
        r = emu.req("GET", resolve_url("acme/tiny-model", "main", path), allow_redirects=True)
        assert r.content == content(emu, files_of(emu, "acme/tiny-model")[path])
    ds = emu.req("GET", resolve_url("acme/tiny-dataset", "refs/convert/parquet", "data/test.csv", "datasets/"),
                 allow_redirects=True)
    assert ds.status_code == 200 and ds.content.startswith(b"id,text")
    assert urlsplit(ds.history[0].headers["Location"]).path.startswith("/api/resolve-cache/datasets/")
    sp = emu.req("GET", resolve_url("acme/tiny-space", "main", "app.py", "spaces/"), allow_redirects=True)
    assert sp.status_code == 200 and b"print" in sp.content


def test_lfs_302_and_cdn(emu):
    f = files_of(emu, "acme/tiny-model")["model.safetensors"]
    data, size = content(emu, f), f["size"]
    r = emu.req("HEAD", resolve_url("acme/tiny-model", "main", "model.safetensors"), headers=VALID)
    assert r.status_code == 302 and r.content == b""
    assert r.headers["X-Linked-Etag"] == f'"{f["sha256"]}"' and int(r.headers["X-Linked-Size"]) == size
    assert r.headers["ETag"] == f'"{f["oid"]}"' and "X-Xet-Hash" not in r.headers
    cdn = r.headers["Location"]
    assert cdn.startswith(f"{emu.cdn}/repos/{f['sha256'][:2]}/{f['sha256'][2:4]}/{f['sha256']}?Expires=")
    get = emu.req("GET", cdn)
    assert get.status_code == 200 and get.content == data and "X-Repo-Commit" not in get.headers
    assert get.headers["ETag"] == f'"{f["sha256"]}"'
    head = emu.req("HEAD", cdn)
    assert int(head.headers["Content-Length"]) == size and head.content == b""
    ranges = {"bytes=0-0": (0, 0), "bytes=10-19": (10, 19), "bytes=-5": (size - 5, size - 1),
              f"bytes={size - 3}-": (size - 3, size - 1), f"bytes=100-{size + 50}": (100, size - 1),
              "bytes=5-9, 20-29": (5, 9)}
    for header, (a, b) in ranges.items():
        rr = emu.req("GET", cdn, headers={"Range": header})
        assert rr.status_code == 206, header
        assert rr.headers["Content-Range"] == f"bytes {a}-{b}/{size}"
        assert rr.content == data[a:b + 1]
    bad = emu.req("GET", cdn, headers={"Range": f"bytes={size}-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{size}"
    leak = emu.req("GET", cdn, headers=VALID)
    assert leak.status_code == 400
    tampered = emu.req("GET", cdn.replace("Signature=", "Signature=0"))
    assert tampered.status_code == 403 and tampered.json()["error"] == "invalid signature"
    stats = emu.control("stats")
    assert stats["auth_leaks"] == 1 and stats["by_route"]["cdn"] == len(ranges) + 5
    assert stats["cdn_bytes"] == size + sum(b - a + 1 for a, b in ranges.values())


def test_cdn_expired_url(tmp_path):
    e = Emu(tmp_path, "--url-ttl", "-5")
    try:
        r = e.req("HEAD", resolve_url("tinyllama", "main", "model.bin"))
        expired = e.req("GET", r.headers["Location"])
        assert expired.status_code == 403 and expired.json() == {"error": "Request has expired"}
    finally:
        e.close()


def test_repo_dir_serves_a_directory_as_a_repo(tmp_path):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    parquet = os.urandom(3000)
    (src / "data" / "train-00000-of-00001.parquet").write_bytes(parquet)
    (src / "README.md").write_text("---\nlicense: mit\n---\n")
    e = Emu(tmp_path, "--repo-dir", f"dataset:acme/from-dir={src}")
    try:
        repo = e.control("manifest")["repos"]["acme/from-dir"]
        files = {f["path"]: f for f in repo["commits"][repo["revisions"]["main"]]["files"]}
        assert sorted(files) == ["README.md", "data/train-00000-of-00001.parquet"]
        lfs = files["data/train-00000-of-00001.parquet"]
        assert lfs["lfs"] and lfs["sha256"] == hashlib.sha256(parquet).hexdigest()
        assert not files["README.md"]["lfs"]
        r = e.req("GET", resolve_url("acme/from-dir", "main", lfs["path"], "datasets/"))
        assert r.status_code == 302
        assert e.req("GET", r.headers["Location"]).content == parquet
        readme = e.req("GET", resolve_url("acme/from-dir", "main", "README.md", "datasets/"), allow_redirects=True)
        assert readme.status_code == 200 and readme.content == (src / "README.md").read_bytes()
    finally:
        e.close()


def test_repo_dir_rejects_a_bad_spec(tmp_path):
    p = subprocess.run([sys.executable, HUB_PY, "--repo-dir", f"widget:acme/x={tmp_path}"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "expected TYPE:ID=DIR" in p.stderr


def test_xet_markers(emu):
    r = emu.req("HEAD", resolve_url("acme/xet-model", "main", "model.safetensors"))
    assert r.status_code == 302 and len(r.headers["X-Xet-Hash"]) == 64
    assert 'rel="xet-auth"' in r.headers["Link"] and "X-Xet-Refresh-Route" in r.headers
    info = emu.req("GET", "/api/models/acme/xet-model").json()
    assert info["xetEnabled"] is True
    tok = emu.req("GET", f"/api/models/acme/xet-model/xet-read-token/{info['sha']}")
    assert tok.status_code == 200 and tok.headers["X-Xet-Cas-Url"].startswith(emu.hub)
    assert {"X-Xet-Access-Token", "X-Xet-Token-Expiration"} <= set(tok.headers)
    tree = emu.req("GET", "/api/models/acme/tiny-model/tree/main").json()
    assert [e["path"] for e in tree if "xetHash" in e] == ["model.safetensors"]


# ---------------------------------------------------------------------------------------------
# errors and redirects
# ---------------------------------------------------------------------------------------------

def assert_error(r, status, code, message=None):
    assert r.status_code == status, (r.status_code, r.headers, r.text)
    assert r.headers.get("X-Error-Code") == code
    if message is not None:
        assert r.headers["X-Error-Message"] == message and r.json() == {"error": message}
    if r.request.method != "HEAD":
        assert int(r.headers["Content-Length"]) == len(r.content)


def test_error_codes(emu):
    main = emu.manifest["repos"]["acme/tiny-model"]["revisions"]["main"]
    r = emu.req("GET", resolve_url("acme/tiny-model", "main", "nope.txt"))
    assert_error(r, 404, "EntryNotFound", "Entry not found")
    assert r.headers["X-Repo-Commit"] == main
    assert_error(emu.req("HEAD", resolve_url("acme/tiny-model", "nope", "config.json")), 404, "RevisionNotFound")
    assert_error(emu.req("GET", "/api/models/acme/tiny-model/revision/nope"), 404, "RevisionNotFound",
                 "Invalid rev id: nope")
    gated_anon = ("Access to model acme/gated-model is restricted. You must have access to it and be "
                  "authenticated to access it. Please log in.")
    gated_bob = ("Access to model acme/gated-model is restricted and you are not in the authorized list. "
                 "Visit https://huggingface.co/acme/gated-model to ask for access.")
    for path in (resolve_url("{r}", "main", "config.json"), "/api/models/{r}", "/api/models/{r}/tree/main",
                 "/api/models/{r}/refs"):
        def at(repo):
            return path.replace("{r}", repo)
        assert_error(emu.req("GET", at("acme/missing")), 401, "RepoNotFound", "Repository not found")
        assert_error(emu.req("GET", at("acme/missing"), headers=VALID), 404, "RepoNotFound")
        assert_error(emu.req("GET", at("acme/gated-model")), 401, "GatedRepo", gated_anon)
        assert_error(emu.req("GET", at("acme/gated-model"), headers=OTHER), 403, "GatedRepo", gated_bob)
        assert_error(emu.req("GET", at("acme/private-model")), 401, "RepoNotFound")
        assert_error(emu.req("GET", at("acme/private-model"), headers=OTHER), 404, "RepoNotFound")
        assert emu.req("GET", at("acme/private-model"), headers=VALID).status_code in (200, 307)
        bad = emu.req("GET", at("acme/tiny-model"), headers=BAD)
        assert_error(bad, 401, None, "Invalid credentials in Authorization header")
    pi = emu.req("POST", "/api/models/acme/gated-model/paths-info/main", data={"paths": "config.json"})
    assert_error(pi, 401, "GatedRepo")
    nf = emu.req("GET", "/nothing/here")
    assert nf.status_code == 404 and nf.headers["Content-Type"].startswith("text/plain")
    assert emu.req("GET", "/api/whoami-v2").status_code == 401
    assert emu.req("GET", "/api/whoami-v2", headers=VALID).json()["name"] == "alice"
    assert emu.req("GET", "/api/whoami-v2", headers=OTHER).json()["name"] == "bob"


def test_renamed_and_case_mismatch_redirects(emu):
    cases = {
        "/acme/old-name/resolve/main/config.json": "/acme/new-name/resolve/main/config.json",
        "/api/models/acme/old-name": "/api/models/acme/new-name",
        "/api/models/acme/old-name/tree/main?recursive=true": "/api/models/acme/new-name/tree/main?recursive=true",
        "/api/models/acme/old-name/refs": "/api/models/acme/new-name/refs",
        "/api/models/ACME/Tiny-Model/revision/main": "/api/models/acme/tiny-model/revision/main",
    }
    for src, dst in cases.items():
        r = emu.req("GET", src)
        assert r.status_code == 307 and r.headers["Location"] == dst, (src, r.headers.get("Location"))
    pi = emu.req("POST", "/api/models/acme/old-name/paths-info/main", data={"paths": "config.json"})
    assert pi.status_code == 307
    followed = emu.req("GET", "/acme/old-name/resolve/main/config.json", allow_redirects=True)
    assert followed.status_code == 200 and followed.content == b'{"model_type":"renamed"}'


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------

def test_repo_info_and_blobs(emu):
    info = emu.req("GET", "/api/models/acme/tiny-model").json()
    files = files_of(emu, "acme/tiny-model")
    assert info["sha"] == emu.manifest["repos"]["acme/tiny-model"]["revisions"]["main"]
    assert info["id"] == info["modelId"] == "acme/tiny-model" and info["gated"] is False
    assert sorted(s["rfilename"] for s in info["siblings"]) == sorted(files)
    for flag in ("true", "True", "1"):
        blobs = emu.req("GET", f"/api/models/acme/tiny-model/revision/v1.0?blobs={flag}&expand=sha&expand=siblings")
        sib = {s["rfilename"]: s for s in blobs.json()["siblings"]}
        st = sib["model.safetensors"]
        assert st["lfs"]["sha256"] == files["model.safetensors"]["sha256"] and st["blobId"] == files["model.safetensors"]["oid"]
        assert "tokenizer.json" not in sib
    ds = emu.req("GET", "/api/datasets/acme/tiny-dataset").json()
    assert "modelId" not in ds and ds["id"] == "acme/tiny-dataset"
    assert emu.req("GET", "/api/models/acme/gated-model", headers=VALID).json()["gated"] == "auto"
    assert emu.req("GET", "/api/spaces/acme/tiny-space").status_code == 200
    assert emu.req("GET", "/api/datasets/acme/tiny-model").status_code == 401


def test_tree_pagination_and_subpaths(emu):
    url, pages, entries = "/api/models/acme/many-files/tree/main?recursive=true&expand=false", 0, []
    while url and pages < 20:
        r = emu.req("GET", url)
        assert r.status_code == 200
        entries += r.json()
        pages += 1
        url = r.links.get("next", {}).get("url")
        if url:
            assert url.startswith(emu.hub + "/api/models/acme/many-files/tree/main?") and "cursor=" in url
    paths = [e["path"] for e in entries]
    assert pages >= 4 and len(paths) == len(set(paths))
    assert sorted(e["path"] for e in entries if e["type"] == "file") == sorted(files_of(emu, "acme/many-files"))
    root = emu.req("GET", "/api/models/acme/many-files/tree/main").json()
    assert [e["path"] for e in root] == [f"dir{i}" for i in range(7)] and root[0]["type"] == "directory"
    sub = emu.req("GET", "/api/models/acme/many-files/tree/main/dir0%2Fsub0?recursive=false").json()
    assert sub and all(e["path"].startswith("dir0/sub0/") and "/" not in e["path"][10:] for e in sub)
    assert_error(emu.req("GET", "/api/models/acme/many-files/tree/main/nope"), 404, "EntryNotFound")
    pr = emu.req("GET", "/api/models/acme/tiny-model/tree/refs%2Fpr%2F1/sub?recursive=true&expand=true").json()
    assert [e["path"] for e in pr] == ["sub/dir", "sub/dir/notes.txt"] and "lastCommit" in pr[1]
    top = {e["path"]: e for e in emu.req("GET", "/api/models/acme/tiny-model/tree/main?expand=true").json()}
    st = top["model.safetensors"]
    assert st["lfs"]["oid"] == files_of(emu, "acme/tiny-model")["model.safetensors"]["sha256"]
    assert top["config.json"]["lastCommit"]["title"] != top["README.md"]["lastCommit"]["title"]


def test_paths_info(emu):
    base = "/api/models/acme/tiny-model/paths-info/refs%2Fpr%2F1"
    form = emu.req("POST", base, data={"paths": ["config.json", "sub/dir", "missing"], "expand": "False"}).json()
    assert [(e["path"], e["type"]) for e in form] == [("config.json", "file"), ("sub/dir", "directory")]
    assert form[0]["oid"] == files_of(emu, "acme/tiny-model", "refs/pr/1")["config.json"]["oid"]
    js = emu.req("POST", base, json={"paths": ["model.safetensors"], "expand": True}).json()
    assert js[0]["xetHash"] and js[0]["lfs"]["pointerSize"] > 0 and "lastCommit" in js[0]


def test_refs_and_commits(emu):
    revs = emu.manifest["repos"]["acme/tiny-model"]["revisions"]
    refs = emu.req("GET", "/api/models/acme/tiny-model/refs").json()
    assert "pullRequests" not in refs and refs["tags"][0] == {"name": "v1.0", "ref": "refs/tags/v1.0",
                                                              "targetCommit": revs["v1.0"]}
    assert {b["name"]: b["targetCommit"] for b in refs["branches"]} == {"main": revs["main"], "dev": revs["dev"]}
    prs = emu.req("GET", "/api/models/acme/tiny-model/refs?include_prs=1").json()["pullRequests"]
    assert prs[0]["ref"] == "refs/pr/1" and prs[0]["targetCommit"] == revs["refs/pr/1"]
    conv = emu.req("GET", "/api/datasets/acme/tiny-dataset/refs").json()["converts"]
    assert conv[0]["ref"] == "refs/convert/parquet"
    commits = emu.req("GET", "/api/models/acme/tiny-model/commits/dev").json()
    assert [c["id"] for c in commits][0] == revs["dev"] and len(commits) == 3 and commits[-1]["id"] == revs["v1.0"]


def test_branch_move(emu):
    revs = emu.manifest["repos"]["acme/tiny-model"]["revisions"]
    moved = emu.control("branch", {"repo": "acme/tiny-model", "type": "model", "branch": "main",
                                   "commit": revs["v1.0"]})
    assert moved["previous"] == revs["main"]
    assert emu.req("GET", "/api/models/acme/tiny-model").json()["sha"] == revs["v1.0"]
    r = emu.req("GET", resolve_url("acme/tiny-model", "main", "config.json"), allow_redirects=True)
    assert r.content == b'{"model_type":"tiny","v":1}'
    emu.control("reset", {"refs": True})
    assert emu.req("GET", "/api/models/acme/tiny-model").json()["sha"] == revs["main"]


# ---------------------------------------------------------------------------------------------
# faults, stats, keep-alive
# ---------------------------------------------------------------------------------------------

def raw_get(base: str, path: str, headers=None):
    """GET with http.client; returns (status, headers, body, complete)."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        try:
            return resp.status, dict(resp.headers), resp.read(), True
        except http.client.IncompleteRead as err:
            return resp.status, dict(resp.headers), err.partial, False
    finally:
        conn.close()


def cdn_path(emu, repo, path):
    loc = emu.req("HEAD", resolve_url(repo, "main", path)).headers["Location"]
    return loc[len(emu.cdn):]


def test_fault_cut_then_resume(emu):
    f = files_of(emu, "tinyllama")["model.bin"]
    data, path = content(emu, f), cdn_path(emu, "tinyllama", "model.bin")
    emu.control("faults", {"kind": "cut", "after_bytes": 1000, "match": f["sha256"], "host": "cdn", "count": 1})
    status, headers, body, complete = raw_get(emu.cdn, path)
    assert status == 200 and not complete and body == data[:1000]
    assert int(headers["Content-Length"]) == f["size"]
    status, headers, body, complete = raw_get(emu.cdn, path, {"Range": "bytes=1000-"})
    assert status == 206 and complete and data[:1000] + body == data
    stats = emu.control("stats")
    assert [c["bytes"] for c in stats["cdn_requests"]][-2:] == [1000, f["size"] - 1000]


def test_fault_bad_content_range_and_ignore_range(emu):
    f = files_of(emu, "tinyllama")["model.bin"]
    data, path = content(emu, f), cdn_path(emu, "tinyllama", "model.bin")
    emu.control("faults", {"kind": "bad_content_range", "host": "cdn", "count": 1})
    status, headers, body, _ = raw_get(emu.cdn, path, {"Range": "bytes=0-99"})
    assert status == 206 and headers["Content-Range"] == f"bytes 1000-1099/{f['size']}" and body == data[1000:1100]
    emu.control("faults", {"kind": "ignore_range", "host": "cdn", "count": 1})
    status, _, body, _ = raw_get(emu.cdn, path, {"Range": "bytes=0-99"})
    assert status == 200 and body == data
    status, _, body, _ = raw_get(emu.cdn, path, {"Range": "bytes=0-99"})
    assert status == 206 and body == data[:100]


def test_fault_status_down_delay(emu):
    url = resolve_url("tinyllama", "main", "config.json")
    emu.control("faults", {"kind": "status", "status": 503, "match": "/resolve/", "host": "hub", "count": 2})
    r = emu.req("GET", url)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert emu.req("GET", url).status_code == 503 and emu.req("GET", url).status_code == 200
    emu.control("faults", {"kind": "down", "match": "config.json", "count": 1})
    with pytest.raises(requests.ConnectionError):
        emu.req("GET", url)
    emu.control("faults", {"kind": "delay", "ms": 300, "match": "config.json", "count": 1})
    t0 = time.monotonic()
    assert emu.req("GET", url).status_code == 200 and time.monotonic() - t0 >= 0.3
    rules = emu.req("GET", "/_emulator/faults").json()["rules"]
    assert [r["applied"] for r in rules] == [2, 1, 1]
    bad = emu.s.post(f"{emu.hub}/_emulator/faults", json={"kind": "explode"}, timeout=10)
    assert bad.status_code == 400


def test_fault_hang_holds_the_request_until_the_rule_is_deleted(emu):
    url = resolve_url("tinyllama", "main", "config.json")
    emu.control("faults", {"kind": "status", "status": 429, "retry_after": 7, "count": 1})
    r = emu.req("GET", url)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    emu.control("faults", {"kind": "hang", "match": "config.json"})
    with pytest.raises(requests.Timeout):
        emu.req("GET", url, timeout=0.5)
    # Deleting the rules (stats kept) ends the hang.
    r = emu.s.delete(f"{emu.hub}/_emulator/faults", timeout=10)
    assert r.status_code == 200 and emu.req("GET", "/_emulator/faults").json()["rules"] == []
    assert emu.req("GET", url).status_code == 200
    recent = emu.control("stats")["recent"]
    assert [e["status"] for e in recent if e["path"].endswith("config.json")][-3:] == [429, 0, 200]


def test_stats_and_keepalive(emu):
    u = urlsplit(emu.hub)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        for method in ("HEAD", "GET", "HEAD", "GET"):
            conn.request(method, resolve_url("tinyllama", "main", "config.json"), headers=VALID)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and len(body) == (0 if method == "HEAD" else int(resp.headers["Content-Length"]))
        conn.request("GET", "/api/models/tinyllama/tree/main")
        assert conn.getresponse().read().startswith(b"[")
        conn.request("POST", "/api/models/tinyllama/paths-info/main", body="paths=config.json",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert json.loads(conn.getresponse().read())[0]["path"] == "config.json"
    finally:
        conn.close()
    size = files_of(emu, "tinyllama")["config.json"]["size"]
    stats = emu.control("stats")
    assert stats["requests"] == 6 and stats["by_route"]["resolve"] == 4
    assert stats["by_route"]["tree"] == 1 and stats["by_route"]["paths_info"] == 1
    assert stats["hub_file_bytes"] == 2 * size and stats["cdn_bytes"] == 0
    assert stats["recent"][0] == {"host": "hub", "route": "resolve", "method": "HEAD",
                                  "path": "/tinyllama/resolve/main/config.json", "range": None, "auth": True,
                                  "user": "alice", "status": 200, "bytes": 0}


# ---------------------------------------------------------------------------------------------
# real huggingface_hub client
# ---------------------------------------------------------------------------------------------

CLIENT_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    from huggingface_hub import hf_hub_download, snapshot_download
    def digest(p):
        return hashlib.sha256(open(p, "rb").read()).hexdigest()
    out = {}
    for job in json.loads(sys.argv[1]):
        if job["kind"] == "file":
            p = hf_hub_download(job["repo"], job["path"], revision=job.get("rev"), repo_type=job.get("type"))
            out[job["key"]] = {job["path"]: digest(p)}
        else:
            d = snapshot_download(job["repo"], revision=job.get("rev"), repo_type=job.get("type"))
            out[job["key"]] = {os.path.relpath(os.path.join(r, n), d): digest(os.path.join(r, n))
                               for r, _, ns in os.walk(d) for n in ns}
    print(json.dumps(out))
""")


def run_client(emu, tmp_path, jobs, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=emu.hub, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="10", HF_HUB_DOWNLOAD_TIMEOUT="10", **env_extra)
    proc = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, json.dumps(jobs)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def expected(emu, repo, rev="main"):
    return {p: f["sha256"] for p, f in files_of(emu, repo, rev).items()}


def test_real_huggingface_hub_client(emu, tmp_path):
    pytest.importorskip("huggingface_hub")
    jobs = [{"key": "config", "kind": "file", "repo": "acme/tiny-model", "path": "config.json"},
            {"key": "weights", "kind": "file", "repo": "acme/tiny-model", "path": "model.safetensors"},
            {"key": "weird", "kind": "file", "repo": "acme/tiny-model", "path": "weird name +#%é.txt"},
            {"key": "pr", "kind": "file", "repo": "acme/tiny-model", "path": "config.json", "rev": "refs/pr/1"},
            {"key": "gated", "kind": "file", "repo": "acme/gated-model", "path": "model.safetensors"},
            {"key": "dataset", "kind": "snapshot", "repo": "acme/tiny-dataset", "type": "dataset"}]
    # Xet left enabled: tiny-model's HEADs carry no Xet headers and the dataset tree has no xetHash.
    got = run_client(emu, tmp_path / "a", jobs, HF_TOKEN="hf_valid_token")
    tiny = expected(emu, "acme/tiny-model")
    for key, path in (("config", "config.json"), ("weights", "model.safetensors"), ("weird", "weird name +#%é.txt")):
        assert got[key] == {path: tiny[path]}
    assert got["pr"] == {"config.json": expected(emu, "acme/tiny-model", "refs/pr/1")["config.json"]}
    assert got["gated"] == {"model.safetensors": expected(emu, "acme/gated-model")["model.safetensors"]}
    assert got["dataset"] == expected(emu, "acme/tiny-dataset")
    stats = emu.control("stats")
    assert stats["auth_leaks"] == 0 and stats["by_route"]["cdn"] >= 3 and stats["by_route"]["xet_token"] == 0
    # snapshot of tiny-model: its tree carries xetHash, so hf_xet would take over -> plain HTTP forced here.
    got = run_client(emu, tmp_path / "b", [{"key": "snap", "kind": "snapshot", "repo": "acme/tiny-model"}],
                     HF_HUB_DISABLE_XET="1")
    assert got["snap"] == tiny
    assert emu.control("stats")["by_route"]["tree"] >= 1


def test_gzip_json_only_when_asked_and_accepted(emu, tmp_path):
    plain = emu.req("GET", "/api/models/acme/tiny-model", headers={"Accept-Encoding": "gzip"})
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    e = Emu(tmp_path, "--gzip-json")
    try:
        r = e.req("GET", "/api/models/acme/tiny-model", headers={"Accept-Encoding": "gzip"})
        assert r.headers.get("Content-Encoding") == "gzip"
        assert r.json()["id"] == "acme/tiny-model"          # requests decodes it
        raw = e.req("GET", "/api/models/acme/tiny-model", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in raw.headers and raw.json()["id"] == "acme/tiny-model"
        err = e.req("GET", "/api/models/acme/nothing", headers={"Accept-Encoding": "gzip"})
        assert err.status_code in (401, 404) and err.headers.get("Content-Encoding") == "gzip"
        assert e.control("manifest")["repos"]                # control endpoints stay plain
    finally:
        e.close()


def test_open_gates_and_omit_visibility_play_an_untrusted_mirror(tmp_path):
    leaky = Emu(tmp_path, "--open-gates", "--omit-visibility")
    try:
        r = leaky.req("GET", "/api/models/acme/gated-model")
        assert r.status_code == 200
        info = r.json()
        assert "private" not in info and "gated" not in info
        r = leaky.req("GET", "/api/models/acme/private-model/revision/main", headers=OTHER)
        assert r.status_code == 200
        r = leaky.req("GET", "/api/models/no-such/repo")
        assert r.status_code == 401
        recent = leaky.control("stats")["recent"]
        assert [e["user"] for e in recent] == [None, "bob", None]
    finally:
        leaky.close()


def test_request_log_says_whose_token_came(emu):
    emu.req("GET", "/api/models/acme/tiny-model", headers=VALID)
    emu.req("GET", "/api/models/acme/tiny-model", headers=BAD)
    recent = emu.control("stats")["recent"]
    assert [(e["auth"], e["user"]) for e in recent[-2:]] == [(True, "alice"), (True, "invalid")]
