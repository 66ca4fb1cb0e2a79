"""Runs real huggingface_hub operations in a fresh process (env set by the caller).

Usage: python hf_client.py '<json list of ops>'
Each op is {"op": "download"|"snapshot"|"model_info"|"list_files"|"file_exists", ...kwargs}.
Prints one line "RESULT <json list>" with, per op, either
    {"ok": true, ...}  or  {"ok": false, "error": "<exception class>", "mro": [...], "message": "..."}.
Downloaded files are reported with their sha256 so the test can compare them with the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from pathlib import Path


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def listing(root: str) -> dict:
    out = {}
    base = Path(root)
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base).as_posix()
        if rel == ".cache" or rel.startswith(".cache/") or not path.is_file():
            continue
        out[rel] = file_sha256(path)
    return out


def run(op: dict) -> dict:
    import huggingface_hub as hh

    kind = op.pop("op")
    if kind == "download":
        path = hh.hf_hub_download(**op)
        return {"path": path, "sha256": file_sha256(path), "size": os.path.getsize(path)}
    if kind == "snapshot":
        path = hh.snapshot_download(**op)
        return {"path": path, "files": listing(path)}
    if kind == "model_info":
        info = hh.HfApi().repo_info(**op)
        return {"sha": info.sha, "siblings": sorted(s.rfilename for s in (info.siblings or []))}
    if kind == "list_files":
        return {"files": sorted(hh.HfApi().list_repo_files(**op))}
    if kind == "file_exists":
        return {"exists": hh.file_exists(**op)}
    raise ValueError(f"unknown op {kind}")


def main() -> int:
    ops = json.loads(sys.argv[1])
    results = []
    for op in ops:
        try:
            result = {"ok": True, **run(dict(op))}
        except BaseException as err:  # noqa: BLE001 - reported to the test
            result = {"ok": False, "error": type(err).__name__,
                      "mro": [c.__name__ for c in type(err).__mro__],
                      "message": str(err)[:2000], "traceback": traceback.format_exc()[-3000:]}
        results.append(result)
    print("RESULT " + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
