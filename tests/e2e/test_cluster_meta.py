"""Metadata once (issue 9): in a cluster, the metadata questions for a repo (its revision, repo
info, each file's resolve HEAD) are answered by one node, the repo's owner, so N nodes do not
multiply calls against the hub; losing the owner never blocks metadata; the sibling metadata
route answers only signed requests; gated repos stay the hub's decision.

Three `hubcache serve` processes in one cluster in front of the emulator, whose request log
(`/_emulator/stats` `recent`) shows every question that reached the hub.
"""

from __future__ import annotations

import collections
import signal
import threading
import time

import requests

from cluster_helpers import SECRET, rendezvous_order, sibling_get, sign
from helpers import VALID, run_client, sha256

REPO = "acme/tiny-model"
GATED = "acme/gated-model"
# Routes whose every request is a metadata question (the resolve route counts only as HEAD).
META_ROUTES = {"api_info", "tree", "paths_info", "refs"}


def repo_owner(nodes, repo: str, repo_type: str = "model"):
    """The node that answers `repo`'s metadata (rendezvous over `{type}s/{repo}`)."""
    urls = [n.url for n in nodes]
    first = rendezvous_order(urls, f"{repo_type}s/{repo}")[0]
    return nodes[urls.index(first)]


def hub_questions(emu, repo: str) -> collections.Counter:
    """(method, path) -> how often the hub was asked it, for `repo`'s metadata questions."""
    asked = collections.Counter()
    for r in emu.stats()["recent"]:
        if r["host"] == "cdn" or repo not in r["path"]:
            continue
        if r["route"] in META_ROUTES or (r["route"] == "resolve" and r["method"] == "HEAD"):
            asked[(r["method"], r["path"])] += 1
    return asked


def run_on(node, tmp_path, name: str, ops: list[dict], token: str | None = None) -> list[dict]:
    results = run_client(node.url, tmp_path / name, ops, token=token)
    for op, result in zip(ops, results):
        assert result["ok"], f"{op} on {node.url}: {result}"
    return results


def test_each_metadata_question_reaches_the_hub_once_across_three_nodes(
        emu, cluster_factory, tmp_path):
    nodes = cluster_factory(emu, 3)
    files = emu.files(REPO, "main")
    wanted = ["config.json", "model.safetensors", "tokenizer.json"]
    wanted = [p for p in wanted if p in files] or sorted(files)[:3]
    results: dict = {}

    def client(i: int) -> None:
        ops = [{"op": "download", "repo_id": REPO, "filename": p, "revision": "main"}
               for p in wanted]
        try:
            results[i] = run_on(nodes[i], tmp_path, f"client{i}", ops)
        except AssertionError as e:
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "a client did not finish within 240 s"
    for i, res in results.items():
        assert not isinstance(res, Exception), res
        for path, r in zip(wanted, res):
            assert r["sha256"] == files[path]["sha256"], (i, path)
    # A whole snapshot on a node that is not the repo's owner.
    owner = repo_owner(nodes, REPO)
    other = next(n for n in nodes if n is not owner)
    snap = run_on(other, tmp_path, "snapshot",
                  [{"op": "snapshot", "repo_id": REPO, "revision": "main"}])[0]
    assert snap["files"] == {p: f["sha256"] for p, f in files.items()}
    asked = hub_questions(emu, REPO)
    print("metadata questions the hub saw:", dict(asked))
    assert asked, "no metadata question reached the hub"
    commit = emu.commit(REPO, "main")
    for (method, path), n in asked.items():
        if method == "HEAD" and f"/resolve/{commit}/" in path:
            # A HEAD at the commit is also how the blob's owner locates an LFS file's bytes
            # (a fill, once per cluster): one metadata question plus one locate at most.
            assert n <= 2, f"{method} {path} reached the hub {n} times"
        else:
            assert n == 1, f"{method} {path} reached the hub {n} times"
    # The non-owners asked the owner, which served them.
    served = owner.metric("hubcache_sibling_meta_requests_total", 'outcome="served",role="owner"')
    asked_ok = sum(n.metric("hubcache_sibling_meta_requests_total", 'outcome="ok",role="client"')
                   for n in nodes if n is not owner)
    assert served >= asked_ok > 0, (served, asked_ok)


def test_paths_info_from_every_node_reaches_the_hub_once(emu, cluster_factory):
    nodes = cluster_factory(emu, 3)
    commit = emu.commit(REPO, "main")
    for n in nodes:
        r = n.post(f"/api/models/{REPO}/paths-info/{commit}",
                   data={"paths": ["config.json", "model.safetensors"]})
        assert r.status_code == 200, r.text
        assert sorted(e["path"] for e in r.json()) == ["config.json", "model.safetensors"]
    posts = [r for r in emu.stats()["recent"] if r["route"] == "paths_info"]
    assert len(posts) == 1, posts


def test_with_the_owner_killed_the_other_nodes_answer_metadata_from_the_chain(
        emu, cluster_factory):
    nodes = cluster_factory(emu, 3)
    owner = repo_owner(nodes, REPO)
    others = [n for n in nodes if n is not owner]
    entry = emu.file(REPO, "main", "config.json")
    commit = emu.commit(REPO, "main")
    owner.stop(sig=signal.SIGKILL)
    for n in others:
        started = time.monotonic()
        r = n.resolve("HEAD", REPO, "main", "config.json")
        assert r.status_code == 200, r.text
        assert r.headers["x-repo-commit"] == commit
        info = n.get(f"/api/models/{REPO}/revision/main")
        assert info.status_code == 200 and info.json()["sha"] == commit
        body = n.resolve("GET", REPO, "main", "config.json")
        assert sha256(body.content) == entry["sha256"]
        assert time.monotonic() - started < 30
    fallbacks = sum(n.metric("hubcache_sibling_meta_requests_total",
                             'outcome="fallback",role="client"') for n in others)
    assert fallbacks >= 1


def test_sibling_metadata_requests_must_be_signed(emu, cluster_factory):
    nodes = cluster_factory(emu, 2)
    node = nodes[0]
    commit = emu.commit(REPO, "main")
    pq = f"/_hubcache/sibling/meta/api/models/{REPO}/revision/main"
    ok = sibling_get(node, pq, sign(SECRET, "GET", pq, None, None))
    assert ok.status_code == 200, ok.text
    assert ok.json()["sha"] == commit
    assert ok.headers["x-hubcache-sibling-trust"] == "origin"
    head_pq = f"/_hubcache/sibling/meta/{REPO}/resolve/main/config.json"
    head = requests.head(node.url + head_pq, headers=sign(SECRET, "HEAD", head_pq, None, None),
                         timeout=30)
    assert head.status_code == 200
    assert head.headers["x-repo-commit"] == commit
    assert int(head.headers["x-linked-size"]) == emu.file(REPO, "main", "config.json")["size"]
    # paths-info (a POST): the body's sha256 is in the signed query; another body is refused.
    form = b"paths=config.json"
    post_pq = (f"/_hubcache/sibling/meta/api/models/{REPO}/paths-info/{commit}"
               f"?hubcache_body_sha256={sha256(form)}")
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    posted = requests.post(node.url + post_pq, data=form, timeout=30,
                           headers={**sign(SECRET, "POST", post_pq, None, None), **form_type})
    assert posted.status_code == 200, posted.text
    assert [e["path"] for e in posted.json()] == ["config.json"]
    swapped = requests.post(node.url + post_pq, data=b"paths=model.safetensors", timeout=30,
                            headers={**sign(SECRET, "POST", post_pq, None, None), **form_type})
    assert swapped.status_code == 403, swapped.text
    now = int(time.time())
    cases = {
        "unsigned": {},
        "forged (another secret)": sign("not-the-cluster-secret-0000", "GET", pq, None, None),
        "stale (2 minutes old)": sign(SECRET, "GET", pq, None, None, at=now - 120),
        "signed as a HEAD": sign(SECRET, "HEAD", pq, None, None),
        "signed for another token": {**sign(SECRET, "GET", pq, None, "Bearer hf_a"),
                                     "Authorization": "Bearer hf_b"},
    }
    for what, headers in cases.items():
        r = sibling_get(node, pq, headers)
        assert r.status_code == 403, f"{what}: {r.status_code} {r.text}"
        assert "x-hubcache-sibling-trust" not in r.headers


def test_a_siblings_question_is_never_forwarded_to_another_sibling(emu, cluster_factory):
    nodes = cluster_factory(emu, 3)
    owner = repo_owner(nodes, REPO)
    other = next(n for n in nodes if n is not owner)
    # Asked as a sibling of a node that does not own the repo: it asks the hub itself.
    pq = f"/_hubcache/sibling/meta/api/models/{REPO}/revision/main"
    r = sibling_get(other, pq, sign(SECRET, "GET", pq, None, None))
    assert r.status_code == 200, r.text
    assert r.json()["sha"] == emu.commit(REPO, "main")
    head_pq = f"/_hubcache/sibling/meta/{REPO}/resolve/main/config.json"
    head = requests.head(other.url + head_pq, timeout=30,
                         headers=sign(SECRET, "HEAD", head_pq, None, None))
    assert head.status_code == 200
    for n in nodes:
        assert n.metric("hubcache_sibling_meta_requests_total", 'outcome="ok",role="client"') == 0
    assert owner.metric("hubcache_sibling_meta_requests_total",
                        'outcome="served",role="owner"') == 0
    assert other.metric("hubcache_sibling_meta_requests_total",
                        'outcome="served",role="owner"') == 2
    assert hub_questions(emu, REPO)[("GET", f"/api/models/{REPO}/revision/main")] == 1
    # Its own client's question goes to the owner as usual.
    assert other.resolve("HEAD", REPO, "main", "tokenizer.json").status_code == 200
    assert other.metric("hubcache_sibling_meta_requests_total", 'outcome="ok",role="client"') >= 1


def test_a_gated_repo_through_a_non_owner_is_the_hubs_decision(emu, cluster_factory, tmp_path):
    nodes = cluster_factory(emu, 3)
    owner = repo_owner(nodes, GATED)
    other = next(n for n in nodes if n is not owner)
    path = "config.json"
    files = emu.files(GATED, "main")
    if path not in files:
        path = sorted(files)[0]
    # Without a token: the hub's refusal, through the owner.
    anonymous = other.resolve("HEAD", GATED, "main", path)
    assert anonymous.status_code in (401, 403), anonymous.status_code
    # The owner's refusal is the hub's answer: the non-owner did not ask the hub again.
    refusals = [r for r in emu.stats()["recent"]
                if r["route"] == "resolve" and GATED in r["path"] and not r["auth"]]
    assert len(refusals) == 1, refusals
    # Alice's token: huggingface_hub downloads it byte-exact through the non-owner.
    got = run_on(other, tmp_path, "alice",
                 [{"op": "download", "repo_id": GATED, "filename": path, "revision": "main"}],
                 token=VALID["Authorization"].split()[-1])[0]
    assert got["sha256"] == files[path]["sha256"]
    # Bob (a valid user without access) is still refused after Alice was served.
    bob = other.resolve("HEAD", GATED, "main", path,
                        headers={"Authorization": "Bearer hf_other_token"})
    assert bob.status_code in (401, 403), bob.status_code
    assert owner.metric("hubcache_sibling_meta_requests_total",
                        'outcome="served",role="owner"') >= 2
