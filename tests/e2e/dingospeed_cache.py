"""Builds a DingoSpeed cache the way DingoSpeed's code writes it (no DingoSpeed binary is
available): `shared/notes/dingospeed-behaviour.md` §3, checked against
dingodb/dingospeed@0043b2a `internal/dao/file_dao.go` (`GetPathsInfo`,
`ConstructBlobsAndFileFile`, `WriteCacheRequest`), `internal/dao/meta_dao.go`
(`requestAndSaveMeta`), `internal/downloader/file_header.go` + `file.go` (the OLAH v8 blob),
`pkg/util/repo_util.go` (`CreateSymlinkIfNotExists`), `pkg/common/common.go` (`PathsInfo`).

The upstream answers it stores are fetched from the Hub emulator, as DingoSpeed would fetch
them from huggingface.co.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import helpers

BLOCK_SIZE = 8 * helpers.MiB          # download.blockSize default
MASK_BITS = 1 << 20                   # DEFAULT_BLOCK_MASK_MAX
HEADER_LEN = 36 + MASK_BITS // 8      # 131,108


def _marshal(value) -> bytes:
    """sonic.Marshal: compact JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def write_cache_request(path: Path, status: int, headers: dict, content: bytes) -> None:
    """`FileDao.WriteCacheRequest`: CacheContent{version 1, status_code, headers, hex content}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": 1, "status_code": status,
           "headers": {k.lower(): v for k, v in headers.items()}, "content": content.hex()}
    path.write_bytes(_marshal(doc))


def write_blob(path: Path, content: bytes, present=lambda block: True) -> None:
    """The OLAH v8 file (`Resize` + `WriteBlock`): `<4sQQQQ` header (version 8, block size,
    file size, mask size), an LSB-first presence bitmap of MASK_BITS bits, then the data,
    pre-sized (sparse), each block at `HEADER_LEN + i*BLOCK_SIZE` with its bit set."""
    size = len(content)
    blocks = (size + BLOCK_SIZE - 1) // BLOCK_SIZE
    bitmap = bytearray(MASK_BITS // 8)
    for b in range(blocks):
        if present(b):
            bitmap[b // 8] |= 1 << (b % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<4sQQQQ", b"OLAH", 8, BLOCK_SIZE, size, MASK_BITS))
        f.write(bytes(bitmap))
        f.truncate(HEADER_LEN + size)
        for b in range(blocks):
            if present(b):
                f.seek(HEADER_LEN + b * BLOCK_SIZE)
                f.write(content[b * BLOCK_SIZE:(b + 1) * BLOCK_SIZE])


def paths_info_entry(entry: dict) -> dict:
    """`common.PathsInfo` as sonic marshals it: type, oid, size, lfs (always present: no
    omitempty, zero values for a regular file), path; xetHash and the rest dropped."""
    lfs = entry.get("lfs") or {}
    return {"type": entry["type"], "oid": entry["oid"], "size": entry["size"],
            "lfs": {"oid": lfs.get("oid", ""), "size": lfs.get("size", 0),
                    "pointerSize": lfs.get("pointerSize", 0)},
            "path": entry["path"]}


class DingoSpeedCache:
    """`{root}/repos`, filled file by file from an emulator."""

    def __init__(self, root: Path, emu: helpers.Emulator):
        self.repos = Path(root) / "repos"
        self.emu = emu
        self.http = helpers.session()

    def _api(self, repo_type: str, repo: str) -> Path:
        return self.repos / "api" / f"{repo_type}s" / repo

    def _files(self, repo_type: str, repo: str) -> Path:
        return self.repos / "files" / f"{repo_type}s" / repo

    def blob_path(self, repo_type: str, repo: str, etag: str) -> Path:
        return self._files(repo_type, repo) / "blobs" / etag

    def revision(self, repo_type: str, repo: str, rev: str = "main") -> str:
        """`requestAndSaveMeta`: the repo-info answer under `revision/{sha}/` and, for main,
        `revision/main/`. Returns the sha."""
        r = self.http.get(f"{self.emu.hub}/api/{repo_type}s/{repo}/revision/{rev}", timeout=30)
        assert r.status_code == 200, r.text
        sha = r.json()["sha"]
        headers = {k: v for k, v in r.headers.items()}
        for name in {sha, "main"} if rev == "main" else {sha}:
            write_cache_request(self._api(repo_type, repo) / "revision" / name / "meta_get.json",
                                r.status_code, headers, r.content)
        return sha

    def file(self, repo_type: str, repo: str, sha: str, path: str, present=lambda block: True) -> dict:
        """`GetPathsInfo` (POST paths-info, re-marshalled), `ConstructBlobsAndFileFile` (empty
        `blobs/{etag}` + relative symlink `resolve/{sha}/{path}`), then the download into the
        blob (`present`: which blocks it got). Returns the paths-info entry."""
        r = self.http.post(f"{self.emu.hub}/api/{repo_type}s/{repo}/paths-info/{sha}",
                           json={"paths": [path]}, timeout=30)
        assert r.status_code == 200, r.text
        [entry] = r.json()
        marshalled = [paths_info_entry(entry)]
        write_cache_request(self._api(repo_type, repo) / "paths-info" / sha / path / "paths-info_post.json",
                            r.status_code, dict(r.headers), _marshal(marshalled))
        etag = (entry.get("lfs") or {}).get("oid") or entry["oid"]
        blob = self._files(repo_type, repo) / "blobs" / etag
        link = self._files(repo_type, repo) / "resolve" / sha / path
        blob.parent.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.touch()                                        # CreateFileIfNotExist
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(blob, link.parent), link)  # filepath.Rel(dstDir, src)
        if entry["size"] > 0 and blob.stat().st_size == 0:
            content = self.emu.file_bytes(repo, sha, path)
            write_blob(blob, content, present)
        return entry
