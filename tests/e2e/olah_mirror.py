"""The real Olah mirror (PyPI `olah`, pinned in tests/requirements-olah.txt, installed into
.venv-olah by scripts/test), run against the Hub emulator on a free loopback port.

Olah 0.5.4 reads everything but the listener from its TOML config when started with `-c`
(`olah/server.py`): the upstream hub (`hf-scheme`/`hf-netloc`), the host the hub redirects
LFS files to (`hf-lfs-netloc`), its own public address (`mirror-*`), where it caches
(`repos-path`) and how (`cache-compression`, `cache-block-size`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import helpers

OLAH_VENV_BIN = helpers.REPO_ROOT / ".venv-olah" / "bin"
OLAH_CLI = OLAH_VENV_BIN / "olah-cli"


class Olah:
    """One `olah-cli` process caching into `self.repos`."""

    START_TIMEOUT = 60.0

    def __init__(self, workdir: Path, upstream: helpers.Emulator, compression: str = "none",
                 block_size: int | None = None, name: str = "olah"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.upstream = upstream
        self.compression = compression
        self.block_size = block_size
        self.repos = self.workdir / "repos"
        self.log_path = self.workdir / f"{name}.log"
        self.config_path = self.workdir / f"{name}.toml"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.http = helpers.session()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        hub, cdn = urlsplit(self.upstream.hub), urlsplit(self.upstream.cdn)
        lines = [
            "[basic]",
            'host = "127.0.0.1"',
            f"port = {self.port}",
            f'repos-path = "{self.repos}"',
            'cache-size-limit = ""',
            f'cache-compression = "{self.compression}"',
            'hf-scheme = "http"',
            f'hf-netloc = "{hub.netloc}"',
            f'hf-lfs-netloc = "{cdn.netloc}"',
            'mirror-scheme = "http"',
            f'mirror-netloc = "127.0.0.1:{self.port}"',
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"',
        ]
        if self.block_size is not None:
            lines.append(f"cache-block-size = {self.block_size}")
        lines += ["", "[accessibility]", "offline = false", ""]
        return "\n".join(lines)

    def start(self) -> None:
        assert OLAH_CLI.exists(), f"{OLAH_CLI} is missing: scripts/test creates .venv-olah"
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
               and not k.startswith(("HF_", "HUGGINGFACE_"))}
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        last = ""
        for _attempt in range(3):
            self.port = helpers.free_port()
            self.config_path.write_text(self.config())
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [str(OLAH_CLI), "-c", str(self.config_path), "--log-path", str(self.workdir / "logs")],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                    env=env)
            finally:
                log.close()
            if self not in helpers.ACTIVE:
                helpers.ACTIVE.append(self)
            if self not in helpers.STARTED:
                helpers.STARTED.append(self)
            deadline = time.monotonic() + self.START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"exited with {self.proc.returncode}"
                    break
                if helpers.pid_listens_on(self.proc.pid, self.port):
                    return
                time.sleep(0.1)
            else:
                last = "no listening socket"
            helpers.stop_process(self.proc, signal.SIGKILL)
        raise RuntimeError(f"olah did not start ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        self.http.close()  # uvicorn's graceful shutdown waits for open keep-alive connections
        if self.proc is not None:
            helpers.stop_process(self.proc, signal.SIGINT)
        if self in helpers.ACTIVE:
            helpers.ACTIVE.remove(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return helpers.tail(self.log_path, lines)

    def get(self, path: str, **kw):
        kw.setdefault("timeout", 60)
        return self.http.get(self.url + path, **kw)

    def entry(self, repo_type: str, repo: str, commit: str, path: str) -> Path:
        """The cache directory Olah 0.5 keeps a file in."""
        return self.repos / "files" / f"{repo_type}s" / repo / "resolve" / commit / path

    def present_blocks(self, repo_type: str, repo: str, commit: str, path: str) -> set[int]:
        """Olah's `has_block`: block files that exist and are not empty."""
        blocks = self.entry(repo_type, repo, commit, path) / "blocks"
        out = set()
        for name in os.listdir(blocks):
            p = blocks / name
            if name.startswith("block_") and name.endswith(".bin") and p.stat().st_size > 0:
                out.add(int(name[len("block_"):-len(".bin")]))
        return out
