#!/usr/bin/env python3
"""Test-only Hugging Face Hub emulator for hubcache (Python 3.11 standard library only).

It shares no code with the mirror: it is an independent re-statement of what huggingface.co
and its LFS CDN return (see shared notes "hf-protocol.md", sections 3-5, 8-10).

Start:
    python3 tests/hub_emulator/hub.py --port 0 --cdn-port 0 [--data-dir DIR] [--seed N]
        [--big-size BYTES] [--cdn-rate BYTES_PER_SEC] [--url-ttl SECONDS] [--page-size N] [--quiet]
        [--repo-dir TYPE:ID=DIR ...] [--gzip-json] [--open-gates] [--omit-visibility]
When both listeners are up it prints ONE JSON line to stdout:
    {"hub": "http://127.0.0.1:PORT", "cdn": "http://127.0.0.1:PORT2", "pid": PID}
and logs one line per request to stderr (redirect or drain stderr!). SIGINT/SIGTERM stop it.

Hub routes (port "hub"); {t} is models|datasets|spaces, {prefix} is ""|"datasets/"|"spaces/":
    HEAD|GET /{prefix}{repo}/resolve/{rev}/{path}
        regular file, public two-segment repo, size > 0 -> 307 to /api/resolve-cache/...
        regular file otherwise (gated/private/single-segment/0-byte) -> 200 (+Range)
        LFS file -> 302 to the signed CDN URL (+X-Linked-Etag/X-Linked-Size; Xet markers on acme/xet-model)
    HEAD|GET /api/resolve-cache/{t}/{repo}/{commit}/{path}   (query ignored) -> 200 file (+Range)
    GET  /api/{t}/{repo}[/revision/{rev}][?blobs=true]        repo info
    GET  /api/{t}/{repo}/tree/{rev}[/{path}]?recursive=&expand=&cursor=   paginated (Link rel="next")
    POST /api/{t}/{repo}/paths-info/{rev}                     form or JSON body
    GET  /api/{t}/{repo}/refs[?include_prs=1]
    GET  /api/{t}/{repo}/commits/{rev}
    GET  /api/{t}/{repo}/xet-read-token/{rev}
    GET  /api/whoami-v2
    acme/old-name (any route) -> 307 relative Location with acme/new-name; case mismatches likewise.
    Anything else -> 404 text/plain.
CDN routes (port "cdn"):
    HEAD|GET /repos/{aa}/{bb}/{sha256}?Expires=..&Signature=..   (400 if Authorization is sent)
    Multi-range requests are answered with the FIRST range only (206).
Control routes (hub port only, never counted in stats):
    GET  /_emulator/manifest       every repo, its refs and per-commit files (+content_url)
    GET  /_emulator/content/{key}  raw bytes by sha256 (any file) or git blob oid (regular files, LFS pointers)
    GET  /_emulator/stats          counters since last reset
    POST /_emulator/reset          zero counters, clear faults; {"refs": true} also restores moved branches
    GET|POST /_emulator/faults     list / append one fault rule (see Faults)
    POST /_emulator/branch         {"repo","type","branch","commit"} move (or create) a branch
    GET  /_emulator/health         {"ok": true}
Tokens (Authorization: Bearer ...): hf_valid_token = alice (authorized for gated/private),
hf_other_token = bob (valid, not authorized), anything else = invalid credentials.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote

KiB = 1024
MiB = 1024 * 1024
TOKENS = {"hf_valid_token": "alice", "hf_other_token": "bob"}
AUTHORIZED_USER = "alice"
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PLURAL = {v: k for k, v in TYPES.items()}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API_KEYWORDS = {"revision", "tree", "paths-info", "refs", "commits", "xet-read-token"}
HEX40 = re.compile(r"[0-9a-f]{40}")
MAX_BODY = 10 * MiB
SEND_CHUNK = 8 * MiB
EXPOSE = ("X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,"
          "Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag,X-Xet-Hash")
LOG_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Deterministic content
# --------------------------------------------------------------------------------------------

def sha1_hex(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def prng_bytes(seed: int, label: str, n: int) -> bytes:
    return random.Random(f"{seed}:{label}").randbytes(n)


def iso_date(day: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(1704067200 + day * 86400))


@dataclass
class Blob:
    path: str          # file on disk
    size: int
    sha256: str


class BlobStore:
    """Content files on disk, indexed by sha256 and (for non-LFS content) git blob oid."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
        self.by_key: dict[str, Blob] = {}

    def put(self, data: bytes, index_git_oid: bool) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.root, "blobs", sha)
        if sha not in self.by_key:
            with open(path, "wb") as f:
                f.write(data)
        blob = Blob(path, len(data), sha)
        self.by_key[sha] = blob
        if index_git_oid:
            self.by_key[git_blob_oid(data)] = blob
        return blob

    def put_big(self, seed: int, size: int) -> Blob:
        """Big pseudo-random file: a 1 MiB pattern rotated and stamped per block (fast, distinct blocks)."""
        path = os.path.join(self.root, f"big-{seed}-{size}.bin")
        marker = path + ".sha256"
        if os.path.exists(marker) and os.path.exists(path) and os.path.getsize(path) == size:
            with open(marker) as f:
                sha = f.read().strip()
        else:
            sha = self._write_big(path, seed, size)
            with open(marker, "w") as f:
                f.write(sha)
        blob = Blob(path, size, sha)
        self.by_key[sha] = blob
        return blob

    @staticmethod
    def _write_big(path: str, seed: int, size: int) -> str:
        pattern = prng_bytes(seed, "big-pattern", MiB)
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for index in range((size + MiB - 1) // MiB):
                rot = (index * 4099) % MiB
                block = index.to_bytes(8, "little") + pattern[rot + 8:] + pattern[:rot]
                block = block[: min(MiB, size - index * MiB)]
                digest.update(block)
                f.write(block)
        return digest.hexdigest()

    def get(self, key: str) -> Blob | None:
        return self.by_key.get(key.lower())


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    oid: str                      # git blob oid of the content (regular) or of the LFS pointer
    lfs: bool
    sha256: str                   # sha256 of the real content
    pointer_size: int = 0
    xet_hash: str | None = None   # emitted as "xetHash" in tree/paths-info JSON
    xet_headers: bool = False     # emit X-Xet-* / Link headers on resolve

    @property
    def content_key(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    sha: str
    title: str
    date: str
    parent: "Commit | None"
    files: dict[str, FileEntry]
    dirs: dict[str, str] = field(default_factory=dict)          # dir path ("" = root) -> tree oid
    last_commit: dict[str, "Commit"] = field(default_factory=dict)

    def history(self) -> list["Commit"]:
        chain, node = [], self
        while node is not None and len(chain) < 10000:
            chain.append(node)
            node = node.parent
        return chain


def compute_dirs(files: dict[str, FileEntry]) -> dict[str, str]:
    """Real git tree oids for every directory (root = "")."""
    children: dict[str, dict[str, tuple[bytes, str]]] = {"": {}}
    for path, entry in files.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            children.setdefault("/".join(parts[:depth]), {})
        parent = "/".join(parts[:-1])
        children[parent][parts[-1]] = (b"100644", entry.oid)
    for d in children:
        if d:
            parent, _, name = d.rpartition("/")
            children[parent][name] = (b"40000", "")
    oids: dict[str, str] = {}
    for d in sorted(children, key=lambda p: -p.count("/") - (1 if p else 0)):
        body = b""
        items = children[d]
        for name in sorted(items, key=lambda n: n + "/" if items[n][0] == b"40000" else n):
            mode, oid = items[name]
            if mode == b"40000":
                oid = oids[f"{d}/{name}" if d else name]
            body += mode + b" " + name.encode() + b"\0" + bytes.fromhex(oid)
        oids[d] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
    return oids


def compute_last_commits(commit: Commit) -> None:
    """For each file and directory: the newest commit in history that changed it."""
    for node in reversed(commit.history()):
        parent = node.parent
        for path, entry in node.files.items():
            if parent is None or parent.files.get(path) != entry:
                commit.last_commit[path] = node
        for d, oid in node.dirs.items():
            if parent is None or parent.dirs.get(d) != oid:
                commit.last_commit[d] = node


@dataclass
class Repo:
    type: str
    id: str
    private: bool = False
    gated: bool | str = False
    xet_enabled: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[str, str] = field(default_factory=dict)         # "refs/pr/1" -> sha
    converts: dict[str, str] = field(default_factory=dict)    # "refs/convert/parquet" -> sha
    initial_branches: dict[str, str] = field(default_factory=dict)

    @property
    def namespaced(self) -> bool:
        return "/" in self.id

    @property
    def public(self) -> bool:
        return not self.private and not self.gated

    def resolve(self, rev: str) -> Commit | None:
        sha = None
        if rev.startswith("refs/heads/"):
            sha = self.branches.get(rev[len("refs/heads/"):])
        elif rev.startswith("refs/tags/"):
            sha = self.tags.get(rev[len("refs/tags/"):])
        elif rev.startswith("refs/"):
            sha = self.prs.get(rev) or self.converts.get(rev)
        else:
            sha = self.branches.get(rev) or self.tags.get(rev)
            if sha is None and HEX40.fullmatch(rev):
                sha = rev
        return self.commits.get(sha) if sha else None

    def head(self) -> Commit:
        return self.commits[self.branches["main"]]


class RepoBuilder:
    """Helpers to create deterministic commits and files for one repo."""

    def __init__(self, world: "World", repo: Repo):
        self.world, self.repo = world, repo
        self.store, self.seed = world.store, world.seed

    def regular(self, path: str, data: bytes) -> FileEntry:
        blob = self.store.put(data, index_git_oid=True)
        return FileEntry(path, len(data), git_blob_oid(data), False, blob.sha256)

    def lfs(self, path: str, size: int | None = None, blob: Blob | None = None,
            xet_hash: bool = False, xet_headers: bool = False) -> FileEntry:
        if blob is None:
            blob = self.store.put(prng_bytes(self.seed, f"{self.repo.id}:{path}:{size}", size), False)
        pointer = lfs_pointer(blob.sha256, blob.size)
        self.store.put(pointer, index_git_oid=True)
        xet = hashlib.sha256(b"xet:" + blob.sha256.encode()).hexdigest() if (xet_hash or xet_headers) else None
        return FileEntry(path, blob.size, git_blob_oid(pointer), True, blob.sha256, len(pointer), xet, xet_headers)

    def text(self, path: str, body: str) -> FileEntry:
        return self.regular(path, body.encode())

    def commit(self, label: str, title: str, files: list[FileEntry], parent: str | None = None,
               day: int = 0) -> str:
        parent_commit = self.repo.commits[parent] if parent else None
        tree = dict(parent_commit.files) if parent_commit else {}
        tree.update({f.path: f for f in files})
        sha = sha1_hex(f"commit:{self.seed}:{self.repo.type}:{self.repo.id}:{label}")
        commit = Commit(sha, title, iso_date(day), parent_commit, tree)
        commit.dirs = compute_dirs(tree)
        compute_last_commits(commit)
        self.repo.commits[sha] = commit
        return sha


class World:
    """All repos, plus renames (old id -> new id)."""

    def __init__(self, store: BlobStore, seed: int):
        self.store, self.seed = store, seed
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lower: dict[tuple[str, str], str] = {}
        self.renames: dict[tuple[str, str], str] = {}

    def add(self, rtype: str, repo_id: str, **flags) -> RepoBuilder:
        repo = Repo(rtype, repo_id, **flags)
        self.repos[(rtype, repo_id)] = repo
        self.lower[(rtype, repo_id.lower())] = repo_id
        return RepoBuilder(self, repo)

    def find(self, rtype: str, repo_id: str) -> tuple[Repo | None, str | None]:
        """(repo, canonical id). canonical != repo_id means "answer 307"."""
        if (rtype, repo_id) in self.renames:
            return None, self.renames[(rtype, repo_id)]
        canonical = self.lower.get((rtype, repo_id.lower()))
        if canonical is None:
            renamed = {k[1].lower(): v for k, v in self.renames.items() if k[0] == rtype}
            return None, renamed.get(repo_id.lower())
        return self.repos[(rtype, canonical)], canonical

    def finish(self) -> None:
        for repo in self.repos.values():
            repo.initial_branches = dict(repo.branches)


def build_world(store: BlobStore, seed: int, big_size: int, repo_dirs: tuple[str, ...] = ()) -> World:
    world = World(store, seed)
    _tiny_model(world)
    _small_repos(world)
    _many_files(world)
    b = world.add("model", "acme/big-model")
    sha = b.commit("c1", "Add big model", [b.text("config.json", '{"model_type":"big"}\n'),
                                           b.lfs("big.bin", blob=store.put_big(seed, big_size))])
    b.repo.branches["main"] = sha
    _snapshot_300(world)
    for spec in repo_dirs:
        _dir_repo(world, spec)
    world.finish()
    return world


# Files with these suffixes are stored as LFS files in a --repo-dir repo (302 to the CDN, like
# the Hub's default .gitattributes); every other file is a regular git file (307 to resolve-cache).
LFS_SUFFIXES = (".parquet", ".arrow", ".safetensors", ".bin", ".pt", ".h5", ".onnx", ".gguf", ".msgpack",
                ".zip", ".gz", ".tar")


def parse_repo_dir(spec: str) -> tuple[str, str, str]:
    """"TYPE:ID=DIR" -> (type, id, dir); raises ValueError."""
    head, sep, directory = spec.partition("=")
    rtype, colon, repo_id = head.partition(":")
    if not sep or not colon or rtype not in PLURAL or not repo_id or not os.path.isdir(directory):
        raise ValueError(f"--repo-dir {spec!r}: expected TYPE:ID=DIR with TYPE model|dataset|space "
                         f"and an existing DIR")
    return rtype, repo_id, directory


def _dir_repo(world: World, spec: str) -> None:
    """A public repo whose single commit (`main`) holds every file under a directory."""
    rtype, repo_id, directory = parse_repo_dir(spec)
    b = world.add(rtype, repo_id)
    files = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, directory).replace(os.sep, "/")
            with open(full, "rb") as f:
                data = f.read()
            if rel.endswith(LFS_SUFFIXES):
                files.append(b.lfs(rel, blob=world.store.put(data, index_git_oid=False)))
            else:
                files.append(b.regular(rel, data))
    b.repo.branches["main"] = b.commit("c1", f"Add files of {os.path.basename(directory)}", files)


def _tokenizer_json(seed: int) -> str:
    vocab, i = {}, 0
    while len(json.dumps(vocab)) < 20 * KiB and i < 100000:
        vocab[f"tok{seed}_{i}"] = i
        i += 1
    return json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab}}, indent=1)


def _tiny_model(world: World) -> None:
    b, seed = world.add("model", "acme/tiny-model"), world.seed
    weights = b.lfs("model.safetensors", 5 * MiB, xet_hash=True)
    c1 = b.commit("c1", "Initial commit", [
        b.text(".gitattributes", "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                                 "*.bin filter=lfs diff=lfs merge=lfs -text\n"),
        b.text("config.json", '{"model_type":"tiny","v":1}'),
        b.text("README.md", f"---\nlicense: mit\n---\n# tiny-model\n\nEmulator model (seed {seed}).\n"),
        weights,
        b.text("sub/dir/notes.txt", f"nested notes, seed {seed}\n"),
        b.text("weird name +#%é.txt", f"weird file name, seed {seed}\n"),
        b.regular("empty.txt", b""),
    ], day=0)
    c2 = b.commit("c2", "Update config, add tokenizer", [
        b.text("config.json", '{"model_type":"tiny","v":2}'),
        b.text("tokenizer.json", _tokenizer_json(seed)),
    ], parent=c1, day=1)
    c3 = b.commit("c3", "Add extra.bin", [b.lfs("extra.bin", 3 * MiB)], parent=c2, day=2)
    c4 = b.commit("c4", "PR: config v4", [b.text("config.json", '{"model_type":"tiny","v":4}')],
                  parent=c2, day=3)
    b.repo.branches.update(main=c2, dev=c3)
    b.repo.tags["v1.0"] = c1
    b.repo.prs["refs/pr/1"] = c4


def _small_repos(world: World) -> None:
    seed = world.seed
    b = world.add("model", "tinyllama")
    b.repo.branches["main"] = b.commit("c1", "Initial commit", [
        b.text("config.json", '{"model_type":"llama","hidden_size":8}'), b.lfs("model.bin", 2 * MiB)])

    b = world.add("dataset", "acme/tiny-dataset")
    sha = b.commit("c1", "Initial commit", [
        b.text("README.md", f"---\nlicense: mit\n---\n# tiny-dataset (seed {seed})\n"),
        b.lfs("data/train.parquet", 4 * MiB),
        b.text("data/test.csv", "id,text\n" + "".join(f"{i},row {i} seed {seed}\n" for i in range(50)))])
    b.repo.branches["main"] = sha
    b.repo.converts["refs/convert/parquet"] = sha

    b = world.add("model", "acme/gated-model", gated="auto")
    b.repo.branches["main"] = b.commit("c1", "Initial commit", [
        b.text("config.json", '{"model_type":"gated"}'), b.lfs("model.safetensors", 2 * MiB)])

    b = world.add("model", "acme/private-model", private=True)
    b.repo.branches["main"] = b.commit("c1", "Initial commit", [
        b.text("config.json", '{"model_type":"private"}'), b.lfs("weights.bin", 1 * MiB)])

    b = world.add("model", "acme/new-name")
    b.repo.branches["main"] = b.commit("c1", "Initial commit", [
        b.text("config.json", '{"model_type":"renamed"}'), b.lfs("model.safetensors", 1 * MiB)])
    world.renames[("model", "acme/old-name")] = "acme/new-name"

    b = world.add("model", "acme/xet-model", xet_enabled=True)
    b.repo.branches["main"] = b.commit("c1", "Initial commit", [
        b.text("config.json", '{"model_type":"xet"}'),
        b.lfs("model.safetensors", 3 * MiB, xet_hash=True, xet_headers=True)])

    b = world.add("space", "acme/tiny-space")
    b.repo.branches["main"] = b.commit("c1", "Initial commit", [
        b.text("app.py", f"print('hello from the emulator space, seed {seed}')\n"),
        b.text("README.md", "---\nsdk: gradio\n---\n# tiny-space\n")])


def _many_files(world: World) -> None:
    b = world.add("model", "acme/many-files")
    files = []
    for i in range(350):
        d = f"dir{i % 7}"
        if i % 5 == 0:
            d += f"/sub{i % 3}"
        if i % 25 == 0:
            d += "/deep"
        files.append(b.text(f"{d}/file_{i:03d}.txt", f"many-files seed={world.seed} file {i}\n"))
    b.repo.branches["main"] = b.commit("c1", "Add 350 files", files)


def _snapshot_300(world: World) -> None:
    b = world.add("model", "acme/snapshot-300")
    files = [b.lfs(f"weights/shard_{j:02d}.bin", 64 * KiB) for j in range(20)]
    for i in range(280):
        size = 2048 + (i * 97) % 4096
        body = prng_bytes(world.seed, f"snap:{i}", size // 2).hex()
        files.append(b.text(f"data/part{i % 10}/chunk_{i:03d}.txt", body))
    b.repo.branches["main"] = b.commit("c1", "Add 300 files", files)


# --------------------------------------------------------------------------------------------
# Stats and faults
# --------------------------------------------------------------------------------------------

class Stats:
    ROUTES = ("resolve", "resolve_cache", "api_info", "tree", "paths_info", "refs", "cdn", "other",
              "commits", "whoami", "xet_token", "cas")
    MAX_RECENT = 500
    MAX_CDN = 20000

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.by_route = {r: 0 for r in self.ROUTES}
            self.cdn_bytes = 0
            self.hub_file_bytes = 0
            self.cdn_requests: list[dict] = []
            self.auth_leaks = 0
            self.recent: list[dict] = []

    def record(self, host: str, route: str, method: str, path: str, rng: str | None,
               auth: str | None, status: int) -> dict:
        entry = {"host": host, "route": route, "method": method, "path": path, "range": rng,
                 "auth": auth is not None, "user": auth_user(auth), "status": status, "bytes": 0}
        with self.lock:
            self.requests += 1
            self.by_route[route] = self.by_route.get(route, 0) + 1
            self.recent.append(entry)
            del self.recent[:-self.MAX_RECENT]
            if host == "cdn" and len(self.cdn_requests) < self.MAX_CDN:
                self.cdn_requests.append(entry)
        return entry

    def add_bytes(self, entry: dict | None, n: int, counter: str | None) -> None:
        with self.lock:
            if entry is not None:
                entry["bytes"] += n
            if counter == "cdn":
                self.cdn_bytes += n
            elif counter == "hub":
                self.hub_file_bytes += n

    def auth_leak(self) -> None:
        with self.lock:
            self.auth_leaks += 1

    def snapshot(self) -> dict:
        with self.lock:
            cdn = [{k: e[k] for k in ("method", "path", "range", "status", "bytes")} for e in self.cdn_requests]
            recent = [{k: e[k] for k in ("host", "route", "method", "path", "range", "auth", "user", "status",
                                         "bytes")}
                      for e in self.recent]
            return {"requests": self.requests, "by_route": dict(self.by_route), "cdn_bytes": self.cdn_bytes,
                    "hub_file_bytes": self.hub_file_bytes, "cdn_requests": cdn,
                    "auth_leaks": self.auth_leaks, "recent": recent}


class Faults:
    """Ordered fault rules. Request-level kinds (status/down/delay) apply when a request arrives;
    body kinds (cut/bad_content_range/ignore_range) apply when a file body is about to be sent
    (GET only; range kinds only to satisfiable single-range requests). A rule's count is spent
    only when it is actually applied."""

    KINDS = {"status", "cut", "bad_content_range", "ignore_range", "delay", "down", "hang"}
    BODY_KINDS = {"cut", "bad_content_range", "ignore_range"}

    def __init__(self):
        self.lock = threading.Lock()
        self.rules: list[dict] = []
        self.next_id = 1

    def add(self, spec: dict) -> dict:
        kind = spec.get("kind")
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {sorted(self.KINDS)}")
        host = spec.get("host", "any")
        if host not in ("hub", "cdn", "any"):
            raise ValueError("host must be hub, cdn or any")
        rule = {"id": 0, "kind": kind, "match": str(spec.get("match", "")), "host": host,
                "method": spec.get("method"), "count": spec.get("count"), "applied": 0,
                "status": int(spec.get("status", 503)), "after_bytes": int(spec.get("after_bytes", 0)),
                "ms": int(spec.get("ms", 0)), "shift": int(spec.get("shift", 1000)),
                "retry_after": spec.get("retry_after")}
        if rule["retry_after"] is not None:
            rule["retry_after"] = str(rule["retry_after"])
        if kind == "hang" and rule["ms"] == 0:
            rule["ms"] = 600000
        if rule["count"] is not None:
            rule["count"] = int(rule["count"])
        if rule["ms"] < 0 or rule["ms"] > 600000 or rule["after_bytes"] < 0:
            raise ValueError("ms must be 0..600000 and after_bytes >= 0")
        with self.lock:
            rule["id"] = self.next_id
            self.next_id += 1
            self.rules.append(rule)
        return dict(rule)

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()

    def present(self, rule_id: int) -> bool:
        with self.lock:
            return any(r["id"] == rule_id for r in self.rules)

    def listing(self) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.rules]

    def matching(self, host: str, method: str, path: str, kinds: set[str]) -> list[dict]:
        decoded = unquote(path)
        with self.lock:
            return [r for r in self.rules if r["kind"] in kinds and self._live(r)
                    and r["host"] in ("any", host)
                    and (not r["method"] or r["method"].upper() == method)
                    and (r["match"] in path or r["match"] in decoded)]

    def consume(self, rule: dict) -> bool:
        with self.lock:
            if not self._live(rule):
                return False
            rule["applied"] += 1
            return True

    @staticmethod
    def _live(rule: dict) -> bool:
        return rule["count"] is None or rule["applied"] < rule["count"]


# --------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------

def parse_range(header: str | None, size: int):
    """None = no/ignored Range (serve 200); "unsat" = 416; (start, end) inclusive = 206.
    Multi-range: only the first range is honoured."""
    if not header:
        return None
    header = header.strip()
    if not header.lower().startswith("bytes="):
        return None
    first = header[6:].split(",")[0].strip()
    m = re.fullmatch(r"(\d*)\s*-\s*(\d*)", first)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    a, b = m.group(1), m.group(2)
    if a == "":                                   # suffix: last n bytes
        n = int(b)
        if n == 0 or size == 0:
            return "unsat"
        return max(0, size - n), size - 1
    start = int(a)
    end = int(b) if b != "" else size - 1
    if b != "" and end < start:
        return None                               # syntactically invalid -> ignore
    if start >= size:
        return "unsat"
    return start, min(end, size - 1)


def truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def content_type(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if ext == "json":
        return "application/json; charset=utf-8"
    if ext in ("txt", "md", "py", "csv", "gitattributes", "yaml", "yml"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def classify(role: str, raw: str) -> str:
    """Stats route name, from the raw path only."""
    if role == "cdn":
        return "cdn"
    segs = raw.split("/")
    if raw.startswith("/api/resolve-cache/"):
        return "resolve_cache"
    if raw.startswith("/cas/"):
        return "cas"
    if raw.startswith("/api/whoami"):
        return "whoami"
    if len(segs) > 2 and segs[1] == "api" and segs[2] in TYPES:
        for key, route in (("tree", "tree"), ("paths-info", "paths_info"), ("refs", "refs"),
                           ("commits", "commits"), ("xet-read-token", "xet_token")):
            if key in segs[4:6]:
                return route
        return "api_info"
    if "resolve" in segs[2:5]:
        return "resolve"
    return "other"


def split_rev(segs: list[str]) -> tuple[str | None, list[str]]:
    """First element(s) of raw segments = revision ("refs%2Fpr%2F1" or raw "refs/pr/1"); rest = path."""
    if not segs or segs[0] == "":
        return None, []
    if segs[0] == "refs" and len(segs) >= 3 and segs[1] in ("pr", "convert", "heads", "tags"):
        return "/".join(unquote(s) for s in segs[:3]), segs[3:]
    return unquote(segs[0]), segs[1:]


def decode_path(segs: list[str]) -> str:
    return "/".join(unquote(s) for s in segs).strip("/")


def encode_cursor(commit: str, offset: int) -> str:
    raw = json.dumps({"c": commit, "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        return str(data["c"]), int(data["o"])
    except (ValueError, KeyError, TypeError):
        return None


def auth_user(auth: str | None) -> str | None:
    """Who an Authorization header names: a user, "invalid", or None without the header."""
    if auth is None:
        return None
    scheme, _, token = auth.strip().partition(" ")
    return (TOKENS.get(token.strip()) if scheme.lower() == "bearer" else None) or "invalid"


def emit_log(line: str) -> None:
    with LOG_LOCK:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class HFError(Exception):
    """A Hub-style error answer (X-Error-Code / X-Error-Message + JSON body)."""

    def __init__(self, status: int, code: str | None, message: str, headers: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or []


class Redirect(Exception):
    def __init__(self, location: str):
        super().__init__(location)
        self.location = location


# --------------------------------------------------------------------------------------------
# Emulator state and request handler
# --------------------------------------------------------------------------------------------

@dataclass
class Emulator:
    world: World
    store: BlobStore
    seed: int
    big_size: int
    cdn_rate: int
    url_ttl: int
    page_size: int
    quiet: bool = False
    gzip_json: bool = False
    open_gates: bool = False
    omit_visibility: bool = False
    hub_url: str = ""
    cdn_url: str = ""
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    stats: Stats = field(default_factory=Stats)
    faults: Faults = field(default_factory=Faults)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sign(self, path: str, expires: int) -> str:
        return hmac.new(self.key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def cdn_location(self, sha256: str) -> str:
        path = f"/repos/{sha256[:2]}/{sha256[2:4]}/{sha256}"
        expires = int(time.time()) + self.url_ttl
        return f"{self.cdn_url}{path}?Expires={expires}&Signature={self.sign(path, expires)}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hub-emulator/1"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120
    role = "hub"
    emu: Emulator

    def version_string(self) -> str:
        return self.server_version

    # ---- plumbing --------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def log_request(self, code="-", size="-"):
        pass                                          # we log once per request ourselves

    def log_message(self, fmt, *args):
        emit_log(f"{self.role} {fmt % args}")

    def dispatch(self) -> None:
        raw, _, query = self.path.partition("?")
        self.raw_path, self.query = raw or "/", query
        self.qs = parse_qs(query, keep_blank_values=True)
        self.is_control = self.role == "hub" and raw.startswith("/_emulator/")
        self.route = classify(self.role, raw)
        self.rec, self.headers_done, self.status_sent, self.sent_bytes = None, False, 0, 0
        try:
            self.body = self.read_body()
            if self.body is None:
                return
            if self.is_control:
                self.handle_control()
            elif self.apply_request_faults():
                self.handle_cdn() if self.role == "cdn" else self.handle_hub()
        except HFError as err:
            self.send_hf_error(err)
        except Redirect as red:
            self.send_bytes(307, [("Location", red.location), ("Content-Type", "text/plain; charset=utf-8")],
                            f"Temporary Redirect. Redirecting to {red.location}".encode())
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - report, never kill the server
            emit_log(traceback.format_exc())
            if not self.headers_done:
                self.send_json(500, {"error": "emulator internal error"})
            self.close_connection = True
        finally:
            if not self.emu.quiet:
                emit_log(f"{self.role} {self.command} {self.path} range={self.headers.get('Range')} "
                         f"auth={auth_user(self.headers.get('Authorization')) or 'no'} "
                         f"{self.status_sent} {self.sent_bytes}B")

    def read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self.read_chunked()
        if not length:
            return b""
        n = int(length)
        if n > MAX_BODY:
            self.close_connection = True
            self.send_json(413, {"error": "request body too large"})
            return None
        return self.rfile.read(n)

    def read_chunked(self) -> bytes:
        data = b""
        for _ in range(100000):
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return data
            data += self.rfile.read(size)
            self.rfile.readline()
            if len(data) > MAX_BODY:
                break
        self.close_connection = True
        return data

    # ---- response writers ------------------------------------------------------------------

    def start_response(self, status: int, headers: list, length: int) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        if not self.is_control:
            self.rec = self.emu.stats.record(self.role, self.route, self.command, self.raw_path,
                                             self.headers.get("Range"), self.headers.get("Authorization"), status)
        self.end_headers()
        self.headers_done, self.status_sent = True, status

    def send_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.start_response(status, headers, len(body))
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.sent_bytes += len(body)

    def send_json(self, status: int, obj, headers: list | None = None) -> None:
        body = json.dumps(obj).encode()
        extra = list(headers or [])
        # --gzip-json: like huggingface.co, compress JSON for clients that accept gzip.
        if self.emu.gzip_json and not self.is_control and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body)
            extra.append(("Content-Encoding", "gzip"))
        self.send_bytes(status, [("Content-Type", "application/json; charset=utf-8")] + extra, body)

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, [("Content-Type", "text/plain; charset=utf-8")], text.encode())

    def send_hf_error(self, err: HFError) -> None:
        headers = list(err.headers)
        if err.code:
            headers.append(("X-Error-Code", err.code))
        headers.append(("X-Error-Message", err.message))
        if err.status in (429, 503):
            headers.append(("Retry-After", "1"))
        self.send_json(err.status, {"error": err.message}, headers)

    def serve_blob(self, blob: Blob, headers: list, counter: str, rate: int = 0) -> None:
        """200/206/416 for a stored file, honouring Range and body faults."""
        size, is_get = blob.size, self.command == "GET"
        rng = parse_range(self.headers.get("Range"), size)
        faults = self.body_faults() if is_get and not self.is_control else []
        if rng == "unsat":
            return self.send_bytes(416, headers + [("Content-Range", f"bytes */{size}")], b"")
        status, start, end = 200, 0, size - 1
        if rng is not None:
            status, (start, end) = 206, rng
            if self.take_fault(faults, "ignore_range"):
                status, start, end = 200, 0, size - 1
            else:
                shift_rule = self.take_fault(faults, "bad_content_range")
                if shift_rule:
                    start, end = self.shifted(start, end, size, shift_rule["shift"])
        extra = [("Content-Range", f"bytes {start}-{end}/{size}")] if status == 206 else []
        length = max(0, end - start + 1)
        self.start_response(status, headers + extra, length)
        if not is_get:
            return
        cut = self.take_fault(faults, "cut")
        self.stream_file(blob.path, start, length, counter, rate, cut["after_bytes"] if cut else None)

    @staticmethod
    def shifted(start: int, end: int, size: int, shift: int) -> tuple[int, int]:
        new_start = start + shift if start + shift < size else max(0, start - shift)
        if new_start == start:
            new_start = (start + 1) % size
        return new_start, min(size - 1, new_start + (end - start))

    def stream_file(self, path: str, start: int, length: int, counter: str, rate: int,
                    cut_after: int | None) -> None:
        todo = length if cut_after is None else min(length, cut_after)
        chunk = SEND_CHUNK if rate <= 0 else max(4 * KiB, min(MiB, rate // 20))
        began, sent = time.monotonic(), 0
        with open(path, "rb") as f:
            while sent < todo:
                n = self.connection.sendfile(f, start + sent, min(chunk, todo - sent))
                if n <= 0:
                    break
                sent += n
                self.sent_bytes += n
                self.emu.stats.add_bytes(self.rec, n, counter)
                if rate > 0:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(min(ahead, 5.0))
        if cut_after is not None:
            self.abort_connection()

    def abort_connection(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- faults ----------------------------------------------------------------------------

    def apply_request_faults(self) -> bool:
        """Handle status/down/delay/hang rules; False when the request was answered or dropped."""
        kinds = {"status", "down", "delay", "hang"}
        for rule in self.emu.faults.matching(self.role, self.command, self.raw_path, kinds):
            if not self.emu.faults.consume(rule):
                continue
            if rule["kind"] == "delay":
                time.sleep(rule["ms"] / 1000.0)
            elif rule["kind"] == "hang":
                self.rec = self.emu.stats.record(self.role, self.route, self.command, self.raw_path,
                                                 self.headers.get("Range"), self.headers.get("Authorization"), 0)
                deadline = time.monotonic() + rule["ms"] / 1000.0
                while time.monotonic() < deadline and self.emu.faults.present(rule["id"]):
                    time.sleep(0.05)
                self.abort_connection()
                return False
            elif rule["kind"] == "down":
                self.rec = self.emu.stats.record(self.role, self.route, self.command, self.raw_path,
                                                 self.headers.get("Range"), self.headers.get("Authorization"), 0)
                self.abort_connection()
                return False
            else:
                st = rule["status"]
                retry_after = rule["retry_after"] or ("1" if st in (429, 503) else None)
                headers = [("Retry-After", retry_after)] if retry_after else []
                self.send_json(st, {"error": f"injected fault: status {st}"}, headers)
                return False
        return True

    def body_faults(self) -> list[dict]:
        return self.emu.faults.matching(self.role, self.command, self.raw_path, Faults.BODY_KINDS)

    def take_fault(self, faults: list[dict], kind: str) -> dict | None:
        for rule in faults:
            if rule["kind"] == kind and self.emu.faults.consume(rule):
                return rule
        return None

    # ---- CDN -------------------------------------------------------------------------------

    def handle_cdn(self) -> None:
        if self.command not in ("GET", "HEAD"):
            return self.send_json(405, {"error": "method not allowed"})
        if "Authorization" in self.headers:
            self.emu.stats.auth_leak()
            return self.send_json(400, {"error": "Authorization header must not be sent to the CDN"})
        m = re.fullmatch(r"/repos/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})", self.raw_path)
        if not m or m.group(3)[:4] != m.group(1) + m.group(2):
            return self.send_json(404, {"error": "not found"})
        expires = (self.qs.get("Expires") or [""])[0]
        signature = (self.qs.get("Signature") or [""])[0]
        if not expires.isdigit() or not hmac.compare_digest(signature, self.emu.sign(self.raw_path, int(expires))):
            return self.send_json(403, {"error": "invalid signature"})
        if int(expires) < time.time():
            return self.send_json(403, {"error": "Request has expired"})
        blob = self.emu.store.get(m.group(3))
        if blob is None:
            return self.send_json(404, {"error": "not found"})
        headers = [("ETag", f'"{blob.sha256}"'), ("Accept-Ranges", "bytes"),
                   ("Content-Type", "application/octet-stream")]
        self.serve_blob(blob, headers, "cdn", self.emu.cdn_rate)

    # ---- hub routing -----------------------------------------------------------------------

    def handle_hub(self) -> None:
        segs = self.raw_path.split("/")[1:]
        if segs[0] == "api" and len(segs) >= 2:
            if segs[1] == "whoami-v2" and len(segs) == 2:
                return self.handle_whoami()
            if segs[1] == "resolve-cache" and len(segs) >= 3 and segs[2] in TYPES:
                return self.handle_resolve_cache(TYPES[segs[2]], segs[3:])
            if segs[1] in TYPES and len(segs) >= 3:
                return self.handle_api(TYPES[segs[1]], segs[2:])
            return self.send_text(404, "Not Found")
        rtype, rest = "model", segs
        if segs[0] in ("datasets", "spaces"):
            rtype, rest = TYPES[segs[0]], segs[1:]
        repo_raw, remainder = self.split_repo(rtype, rest, {"resolve"})
        if not remainder or remainder[0] != "resolve":
            return self.send_text(404, "Not Found")
        return self.handle_resolve(rtype, repo_raw, remainder[1:])

    def split_repo(self, rtype: str, rest: list[str], keywords: set[str]) -> tuple[str, list[str]]:
        if len(rest) >= 2:
            two = unquote(rest[0]) + "/" + unquote(rest[1])
            repo, canonical = self.emu.world.find(rtype, two)
            if repo is not None or canonical is not None:
                return two, rest[2:]
            if rest[1] in keywords:
                return unquote(rest[0]), rest[1:]
            return two, rest[2:]
        return (unquote(rest[0]) if rest else ""), []

    def current_user(self) -> str | None:
        """None for anonymous; raises 401 for invalid credentials."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        scheme, _, token = auth.strip().partition(" ")
        user = TOKENS.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HFError(401, None, "Invalid credentials in Authorization header")
        return user

    def authorize(self, rtype: str, repo_id: str) -> Repo:
        """Access control shared by every repo route; raises HFError/Redirect."""
        user = self.current_user()
        repo, canonical = self.emu.world.find(rtype, repo_id)
        if canonical is not None and canonical != repo_id:
            raise Redirect(self.redirect_target(repo_id, canonical))
        anon = user is None
        if repo is not None and self.emu.open_gates:
            return repo                               # a leaky mirror: everything to anyone
        if repo is None or (repo.private and user != AUTHORIZED_USER):
            raise HFError(401 if anon else 404, "RepoNotFound", "Repository not found")
        if repo.gated and user != AUTHORIZED_USER:
            word, url = rtype, f"https://huggingface.co/{URL_PREFIX[rtype]}{repo.id}"
            if anon:
                raise HFError(401, "GatedRepo", f"Access to {word} {repo.id} is restricted. You must have access "
                                                f"to it and be authenticated to access it. Please log in.")
            raise HFError(403, "GatedRepo", f"Access to {word} {repo.id} is restricted and you are not in the "
                                            f"authorized list. Visit {url} to ask for access.")
        return repo

    def redirect_target(self, old: str, new: str) -> str:
        """Same raw path and query with the repo id segments replaced (relative Location)."""
        segs, width = self.raw_path.split("/"), len(old.split("/"))
        for i in range(1, len(segs) - width + 1):
            if "/".join(unquote(s) for s in segs[i:i + width]) == old:
                segs[i:i + width] = new.split("/")
                break
        return "/".join(segs) + (f"?{self.query}" if self.query else "")

    def resolve_commit(self, repo: Repo, rev: str | None) -> Commit:
        commit = repo.resolve(rev or "")
        if commit is None:
            raise HFError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    # ---- resolve ---------------------------------------------------------------------------

    def handle_resolve(self, rtype: str, repo_id: str, rest: list[str]) -> None:
        if self.command not in ("GET", "HEAD"):
            return self.send_text(405, "Method Not Allowed")
        repo = self.authorize(rtype, repo_id)
        rev, path_segs = split_rev(rest)
        commit = self.resolve_commit(repo, rev)
        path = decode_path(path_segs)
        entry = commit.files.get(path)
        if entry is None:
            raise HFError(404, "EntryNotFound", "Entry not found", [("X-Repo-Commit", commit.sha)])
        if entry.lfs:
            return self.send_lfs_redirect(repo, commit, entry)
        if repo.public and repo.namespaced and entry.size > 0:
            return self.send_resolve_cache_redirect(repo, commit, entry, rev)
        return self.send_hub_file(commit, entry)

    def send_resolve_cache_redirect(self, repo: Repo, commit: Commit, entry: FileEntry, rev: str) -> None:
        original = f"/{URL_PREFIX[repo.type]}{repo.id}/resolve/{rev}/{entry.path}"
        location = (f"/api/resolve-cache/{PLURAL[repo.type]}/{repo.id}/{commit.sha}/{quote(entry.path)}"
                    f"?{quote(original, safe='')}=&etag={quote(chr(34) + entry.oid + chr(34), safe='')}")
        headers = [("Location", location), ("Content-Type", "text/plain; charset=utf-8"),
                   ("Access-Control-Expose-Headers", EXPOSE), ("Vary", "Origin, Accept")]
        self.send_bytes(307, headers, f"Temporary Redirect. Redirecting to {location}".encode())

    def send_lfs_redirect(self, repo: Repo, commit: Commit, entry: FileEntry) -> None:
        location = self.emu.cdn_location(entry.sha256)
        headers = [("Location", location), ("Content-Type", "text/plain; charset=utf-8"),
                   ("X-Repo-Commit", commit.sha), ("X-Linked-Etag", f'"{entry.sha256}"'),
                   ("X-Linked-Size", str(entry.size)), ("ETag", f'"{entry.oid}"'),
                   ("Accept-Ranges", "bytes"), ("Access-Control-Expose-Headers", EXPOSE)]
        if entry.xet_headers:
            hub, plural = self.emu.hub_url, PLURAL[repo.type]
            token_url = f"{hub}/api/{plural}/{repo.id}/xet-read-token/{commit.sha}"
            headers += [("X-Xet-Hash", entry.xet_hash),
                        ("X-Xet-Refresh-Route", token_url),
                        ("Link", f'<{token_url}>; rel="xet-auth", '
                                 f'<{hub}/cas/reconstructions/{entry.xet_hash}>; rel="xet-reconstruction-info"')]
        self.send_bytes(302, headers, f"Found. Redirecting to {location}".encode())

    def send_hub_file(self, commit: Commit, entry: FileEntry) -> None:
        blob = self.emu.store.get(entry.content_key)
        headers = [("X-Repo-Commit", commit.sha), ("ETag", f'"{entry.oid}"'), ("Accept-Ranges", "bytes"),
                   ("Content-Type", content_type(entry.path)), ("Access-Control-Expose-Headers", EXPOSE)]
        inm = self.headers.get("If-None-Match")
        if inm and entry.oid in inm and not self.headers.get("Range"):
            self.start_response(304, headers, entry.size)   # 304: no body, same length as the 200
            return
        self.serve_blob(blob, headers, "hub")

    def handle_resolve_cache(self, rtype: str, rest: list[str]) -> None:
        if self.command not in ("GET", "HEAD"):
            return self.send_text(405, "Method Not Allowed")
        if len(rest) >= 3 and HEX40.fullmatch(rest[2]) and any(self.emu.world.find(rtype, unquote(f"{rest[0]}/{rest[1]}"))):
            repo_id, sha, path_segs = f"{rest[0]}/{rest[1]}", rest[2], rest[3:]
        elif len(rest) >= 2 and HEX40.fullmatch(rest[1]):
            repo_id, sha, path_segs = rest[0], rest[1], rest[2:]
        elif len(rest) >= 3 and HEX40.fullmatch(rest[2]):
            repo_id, sha, path_segs = f"{rest[0]}/{rest[1]}", rest[2], rest[3:]
        else:
            return self.send_text(404, "Not Found")
        repo = self.authorize(rtype, unquote(repo_id))
        commit = repo.commits.get(sha)
        if commit is None:
            raise HFError(404, "RevisionNotFound", f"Invalid rev id: {sha}")
        entry = commit.files.get(decode_path(path_segs))
        if entry is None:
            raise HFError(404, "EntryNotFound", "Entry not found", [("X-Repo-Commit", commit.sha)])
        if entry.lfs:
            return self.send_lfs_redirect(repo, commit, entry)
        self.send_hub_file(commit, entry)

    # ---- API -------------------------------------------------------------------------------

    def handle_whoami(self) -> None:
        user = self.current_user()
        if user is None:
            raise HFError(401, None, "Invalid username or password.")
        self.send_json(200, {"type": "user", "id": sha1_hex(user)[:24], "name": user,
                             "fullname": user.capitalize(), "email": f"{user}@example.invalid",
                             "emailVerified": True, "isPro": False, "orgs": [{"name": "acme", "type": "org"}],
                             "auth": {"type": "access_token",
                                      "accessToken": {"displayName": "emulator", "role": "read"}}})

    def handle_api(self, rtype: str, rest: list[str]) -> None:
        repo_id, rem = self.split_repo(rtype, rest, API_KEYWORDS)
        kind = rem[0] if rem else None
        if kind is not None and kind not in API_KEYWORDS:
            return self.send_text(404, "Not Found")
        wanted = "POST" if kind == "paths-info" else "GET"
        if self.command not in (wanted, "HEAD") or (self.command == "HEAD" and wanted == "POST"):
            return self.send_json(405, {"error": "method not allowed"})
        repo = self.authorize(rtype, repo_id)
        if kind is None:
            return self.send_json(200, self.repo_info(repo, repo.head()))
        if kind == "refs":
            return self.send_json(200, self.refs_json(repo))
        rev, tail = split_rev(rem[1:])
        commit = self.resolve_commit(repo, rev)
        if kind == "revision":
            return self.send_json(200, self.repo_info(repo, commit))
        if kind == "tree":
            return self.handle_tree(repo, commit, rem[1:], tail)
        if kind == "paths-info":
            return self.handle_paths_info(commit)
        if kind == "commits":
            return self.send_json(200, [self.commit_json(c) for c in commit.history()])
        return self.handle_xet_token(commit)

    def repo_info(self, repo: Repo, commit: Commit) -> dict:
        blobs = truthy((self.qs.get("blobs") or ["false"])[0])
        siblings = []
        for path in sorted(commit.files):
            entry = commit.files[path]
            sib: dict = {"rfilename": path}
            if blobs:
                sib.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sib["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            siblings.append(sib)
        info = {"_id": sha1_hex(f"id:{repo.type}:{repo.id}")[:24], "id": repo.id}
        if repo.type == "model":
            info["modelId"] = repo.id
        info.update({"author": repo.id.split("/")[0] if repo.namespaced else None, "sha": commit.sha,
                     "lastModified": commit.date, "createdAt": iso_date(0), "private": repo.private,
                     "gated": repo.gated, "disabled": False, "tags": [], "downloads": 0, "likes": 0})
        if self.emu.omit_visibility:
            del info["private"], info["gated"]
        if repo.type == "model":
            info["library_name"] = "transformers"
        if repo.type == "space":
            info.update(sdk="gradio", subdomain=repo.id.replace("/", "-"))
        if repo.xet_enabled:
            info["xetEnabled"] = True
        info["siblings"] = siblings
        info["usedStorage"] = sum(e.size for e in commit.files.values())
        return info

    def refs_json(self, repo: Repo) -> dict:
        def ref(name: str, full: str, sha: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": sha}
        branches = sorted(repo.branches.items(), key=lambda kv: (kv[0] != "main", kv[0]))
        out = {"branches": [ref(n, f"refs/heads/{n}", s) for n, s in branches],
               "converts": [ref(n.rsplit("/", 1)[1], n, s) for n, s in sorted(repo.converts.items())],
               "tags": [ref(n, f"refs/tags/{n}", s) for n, s in sorted(repo.tags.items())]}
        if truthy((self.qs.get("include_prs") or ["0"])[0]):
            out["pullRequests"] = [ref(n.rsplit("/", 1)[1], n, s) for n, s in sorted(repo.prs.items())]
        return out

    @staticmethod
    def commit_json(c: Commit) -> dict:
        return {"id": c.sha, "title": c.title, "message": c.title + "\n", "date": c.date,
                "authors": [{"user": "alice", "avatar": ""}]}

    def tree_entry(self, commit: Commit, path: str, expand: bool) -> dict:
        entry = commit.files.get(path)
        if entry is None:
            item = {"type": "directory", "oid": commit.dirs[path], "size": 0}
        else:
            item = {"type": "file", "oid": entry.oid, "size": entry.size}
            if entry.lfs:
                item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": entry.pointer_size}
            if entry.xet_hash:
                item["xetHash"] = entry.xet_hash
        if expand:
            last = commit.last_commit.get(path, commit)
            item["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        item["path"] = path
        return item

    def list_tree(self, commit: Commit, base: str, recursive: bool) -> list[str]:
        prefix = base + "/" if base else ""
        paths = [p for p in list(commit.files) + [d for d in commit.dirs if d] if p.startswith(prefix)]
        if not recursive:
            paths = [p for p in paths if "/" not in p[len(prefix):]]
        return sorted(paths)

    def handle_tree(self, repo: Repo, commit: Commit, raw_after: list[str], tail: list[str]) -> None:
        base = decode_path(tail)
        if base and base not in commit.dirs:
            raise HFError(404, "EntryNotFound", "Entry not found", [("X-Repo-Commit", commit.sha)])
        recursive = truthy((self.qs.get("recursive") or ["false"])[0])
        expand = truthy((self.qs.get("expand") or ["false"])[0])
        offset = 0
        cursor = (self.qs.get("cursor") or [None])[0]
        if cursor:
            decoded = decode_cursor(cursor)
            if decoded is None or decoded[0] not in repo.commits:
                return self.send_json(400, {"error": "invalid cursor"})
            commit, offset = repo.commits[decoded[0]], decoded[1]
        paths = self.list_tree(commit, base, recursive)
        page = paths[offset: offset + self.emu.page_size]
        headers = []
        if offset + self.emu.page_size < len(paths):
            url = (f"{self.emu.hub_url}/api/{PLURAL[repo.type]}/{repo.id}/tree/{'/'.join(raw_after)}"
                   f"?recursive={str(recursive).lower()}&expand={str(expand).lower()}"
                   f"&cursor={encode_cursor(commit.sha, offset + self.emu.page_size)}")
            headers.append(("Link", f'<{url}>; rel="next"'))
        self.send_json(200, [self.tree_entry(commit, p, expand) for p in page], headers)

    def handle_paths_info(self, commit: Commit) -> None:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            try:
                data = json.loads(self.body or b"{}")
            except ValueError:
                return self.send_json(400, {"error": "invalid JSON body"})
            paths, expand = data.get("paths") or [], truthy(data.get("expand", False))
        else:
            form = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
            paths, expand = form.get("paths", []), truthy((form.get("expand") or ["false"])[0])
        if isinstance(paths, str):
            paths = [paths]
        out, seen = [], set()
        for p in paths:
            p = str(p).strip("/")
            if p in seen or not (p in commit.files or (p and p in commit.dirs)):
                continue
            seen.add(p)
            out.append(self.tree_entry(commit, p, expand))
        self.send_json(200, out)

    def handle_xet_token(self, commit: Commit) -> None:
        exp = int(time.time()) + 3600
        token = "xet_emulator_" + hashlib.sha256(f"{commit.sha}{exp}".encode()).hexdigest()[:32]
        cas = f"{self.emu.hub_url}/cas"
        self.send_json(200, {"accessToken": token, "exp": exp, "casUrl": cas},
                       [("X-Xet-Cas-Url", cas), ("X-Xet-Access-Token", token), ("X-Xet-Token-Expiration", str(exp))])

    # ---- control ---------------------------------------------------------------------------

    def handle_control(self) -> None:
        name = self.raw_path[len("/_emulator/"):]
        method = self.command
        if name == "health":
            return self.send_json(200, {"ok": True})
        if name == "manifest" and method in ("GET", "HEAD"):
            return self.send_json(200, manifest(self.emu))
        if name == "stats" and method in ("GET", "HEAD"):
            return self.send_json(200, self.emu.stats.snapshot())
        if name.startswith("content/") and method in ("GET", "HEAD"):
            blob = self.emu.store.get(name[len("content/"):])
            if blob is None:
                return self.send_json(404, {"error": "unknown content key"})
            return self.serve_blob(blob, [("Content-Type", "application/octet-stream"),
                                          ("ETag", f'"{blob.sha256}"'), ("Accept-Ranges", "bytes")], "")
        if name == "reset" and method == "POST":
            return self.control_reset()
        if name == "faults" and method in ("GET", "HEAD"):
            return self.send_json(200, {"rules": self.emu.faults.listing()})
        if name == "faults" and method == "DELETE":
            self.emu.faults.clear()
            return self.send_json(200, {"ok": True})
        if name == "faults" and method == "POST":
            try:
                rule = self.emu.faults.add(json.loads(self.body or b"{}"))
            except (ValueError, TypeError, AttributeError) as err:
                return self.send_json(400, {"error": str(err)})
            return self.send_json(200, {"ok": True, "rule": rule})
        if name == "branch" and method == "POST":
            return self.control_branch()
        self.send_json(404, {"error": "unknown control endpoint"})

    def control_reset(self) -> None:
        try:
            opts = json.loads(self.body) if self.body else {}
        except ValueError:
            opts = {}
        self.emu.stats.reset()
        self.emu.faults.clear()
        if isinstance(opts, dict) and opts.get("refs"):
            with self.emu.lock:
                for repo in self.emu.world.repos.values():
                    repo.branches = dict(repo.initial_branches)
        self.send_json(200, {"ok": True})

    def control_branch(self) -> None:
        try:
            spec = json.loads(self.body or b"{}")
            repo = self.emu.world.repos.get((spec.get("type", "model"), spec["repo"]))
            branch, sha = spec.get("branch", "main"), spec["commit"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return self.send_json(400, {"error": 'expected {"repo","type","branch","commit"}'})
        if repo is None or sha not in repo.commits:
            return self.send_json(400, {"error": "unknown repo or commit"})
        with self.emu.lock:
            previous = repo.branches.get(branch)
            repo.branches = {**repo.branches, branch: sha}
        self.send_json(200, {"ok": True, "repo": repo.id, "type": repo.type, "branch": branch,
                             "commit": sha, "previous": previous})


def manifest(emu: Emulator) -> dict:
    repos = {}
    for (rtype, repo_id), repo in emu.world.repos.items():
        revisions = {**repo.branches, **repo.tags, **repo.prs, **repo.converts}
        commits = {}
        for sha, c in repo.commits.items():
            files = []
            for path in sorted(c.files):
                e = c.files[path]
                item = {"path": path, "size": e.size, "oid": e.oid, "lfs": e.lfs, "sha256": e.sha256,
                        "content_url": f"/_emulator/content/{e.content_key}"}
                if e.lfs:
                    item["pointer_size"] = e.pointer_size
                if e.xet_hash:
                    item["xet_hash"] = e.xet_hash
                files.append(item)
            commits[sha] = {"title": c.title, "date": c.date, "parent": c.parent.sha if c.parent else None,
                            "files": files}
        repos[repo_id] = {"type": rtype, "id": repo_id, "private": repo.private, "gated": repo.gated,
                          "xet": repo.xet_enabled, "default_branch": "main", "revisions": revisions,
                          "refs": {"branches": dict(repo.branches), "tags": dict(repo.tags),
                                   "prs": dict(repo.prs), "converts": dict(repo.converts)},
                          "commits": commits}
    return {"hub": emu.hub_url, "cdn": emu.cdn_url, "seed": emu.seed, "big_size": emu.big_size,
            "page_size": emu.page_size, "url_ttl": emu.url_ttl,
            "renames": {old: new for (_, old), new in emu.world.renames.items()},
            "tokens": {"hf_valid_token": "alice (authorized)", "hf_other_token": "bob (not authorized)"},
            "repos": repos}


# --------------------------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)      # skip getfqdn() reverse lookups
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request, client_address):
        emit_log(f"connection error from {client_address}: {sys.exc_info()[1]!r}")


def make_server(emu: Emulator, role: str, port: int) -> Server:
    handler = type(f"{role.capitalize()}Handler", (Handler,), {"role": role, "emu": emu})
    return Server(("127.0.0.1", port), handler)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Hugging Face Hub emulator for tests")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cdn-port", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--big-size", type=int, default=64 * MiB)
    p.add_argument("--cdn-rate", type=int, default=0, help="CDN body bytes/s per connection, 0 = unlimited")
    p.add_argument("--url-ttl", type=int, default=60)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.add_argument("--repo-dir", action="append", default=[], metavar="TYPE:ID=DIR",
                   help="also serve a public repo (branch main, one commit) with every file under DIR; "
                        "repeatable")
    p.add_argument("--gzip-json", action="store_true",
                   help="gzip JSON answers for clients sending Accept-Encoding: gzip")
    p.add_argument("--open-gates", action="store_true",
                   help="play a leaky mirror: serve gated and private repos to anyone")
    p.add_argument("--omit-visibility", action="store_true",
                   help="leave \"private\" and \"gated\" out of repo info")
    args = p.parse_args(argv)
    for spec in args.repo_dir:
        try:
            parse_repo_dir(spec)
        except ValueError as err:
            p.error(str(err))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="hub-emulator-")
    os.makedirs(data_dir, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        store = BlobStore(data_dir)
        world = build_world(store, args.seed, max(0, args.big_size), tuple(args.repo_dir))
        emu = Emulator(world, store, args.seed, args.big_size, args.cdn_rate, args.url_ttl,
                       max(1, args.page_size), args.quiet, args.gzip_json, args.open_gates,
                       args.omit_visibility)
        servers = [make_server(emu, "hub", args.port), make_server(emu, "cdn", args.cdn_port)]
        emu.hub_url = f"http://127.0.0.1:{servers[0].server_address[1]}"
        emu.cdn_url = f"http://127.0.0.1:{servers[1].server_address[1]}"
        threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
                   for s in servers]
        for t in threads:
            t.start()
        print(json.dumps({"hub": emu.hub_url, "cdn": emu.cdn_url, "pid": os.getpid()}), flush=True)
        while not stop.wait(0.5):
            pass
        for s in servers:
            s.shutdown()
            s.server_close()
        return 0
    finally:
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
