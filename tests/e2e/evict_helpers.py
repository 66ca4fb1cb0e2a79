"""Helpers of the eviction and alerting tests: repos of test-made files served by the emulator,
what the cache holds on disk, the mirror's metrics, and a loopback webhook receiver."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import helpers
from helpers import MiB, blob_path, sha256, wait_until


def make_repo(root: Path, files: dict[str, int], seed: int) -> dict[str, bytes]:
    """Writes `files` (name -> size; `.bin` names are LFS files) under `root` with
    deterministic content; returns name -> bytes."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, size) in enumerate(sorted(files.items())):
        block = sha256(f"{seed}/{name}/{i}".encode()).encode()
        data = (block * (size // len(block) + 1))[:size]
        # Make every 4 KiB distinct so no two files share content.
        data = bytearray(data)
        for off in range(0, size, 4096):
            data[off:off + 8] = (off + seed * 7919 + i).to_bytes(8, "little")
        (root / name).write_bytes(bytes(data))
        out[name] = bytes(data)
    return out


def repo_arg(repo: str, directory: Path, repo_type: str = "model") -> tuple[str, str]:
    return ("--repo-dir", f"{repo_type}:{repo}={directory}")


def on_disk(cache_dir: Path, data: bytes) -> bool:
    """Whether the cache holds a blob file for this (LFS) content."""
    return blob_path(cache_dir, sha256(data)).exists()


def cache_bytes(cache_dir: Path) -> int:
    """Bytes every blob file under the cache occupies on disk (st_blocks)."""
    total = 0
    for path in (Path(cache_dir) / "blobs").rglob("*"):
        if path.is_file():
            total += path.stat().st_blocks * 512
    return total


def download(mirror, repo: str, path: str, agent: str = "e2e", timeout: float = 60) -> bytes:
    """GET a file through the mirror as one client (its User-Agent identifies the download)."""
    r = mirror.resolve("GET", repo, "main", path, headers={"User-Agent": agent}, timeout=timeout)
    assert r.status_code == 200, f"{repo}/{path}: HTTP {r.status_code} {r.text[:200]}"
    return r.content


def metrics(mirror) -> str:
    return mirror.metrics_text()


def metric(mirror, name: str, labels: str = "") -> float:
    """A metric's value (0 when absent); `labels` like 'policy="lru",reason="budget"'."""
    text = metrics(mirror)
    pattern = rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$" if labels else \
        rf"^{re.escape(name)} (\S+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def wait_quiet(mirror, seconds: float = 1.0) -> None:
    """Give the mirror's background work a moment (eviction runs off the request path)."""
    time.sleep(seconds)


class Receiver:
    """A loopback HTTP receiver for webhooks: records every POST (headers, JSON body) and
    answers from a script: an int status, or "hang" (no answer until stopped)."""

    def __init__(self, script: list | None = None):
        self.requests: list[dict] = []
        self.script = list(script or [])
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "body": parsed})
                    reply = receiver.script.pop(0) if receiver.script else 200
                if reply == "hang":
                    receiver.stopping.wait(120)
                    return
                self.send_response(reply)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self, name: str | None = None) -> list[dict]:
        with self.lock:
            bodies = [r["body"] for r in self.requests if r["body"] is not None]
        return [b for b in bodies if name is None or b.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 60) -> list[dict]:
        wait_until(lambda: len(self.events(name)) >= count, timeout, interval=0.1,
                   what=f"{count} {name} alert(s) at the webhook")
        return self.events(name)

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def eviction(policy: str = "lru", **keys) -> dict:
    """A `plugins:` override with an eviction section."""
    return {"plugins": {"eviction": {"policy": policy, **keys}}}


def webhook(url: str, **keys) -> dict:
    return {"kind": "webhook", "url": url, **keys}


def evict_log(mirror) -> str:
    return helpers.tail(mirror.log_path, 400)

