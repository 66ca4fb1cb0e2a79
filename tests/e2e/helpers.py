"""Process and HTTP helpers shared by the end-to-end tests (imported by conftest.py and tests).

Nothing here imports huggingface_hub: the real client always runs in a subprocess
(see hf_client.py) so that its import-time environment is isolated per test.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
HUB_PY = REPO_ROOT / "tests" / "hub_emulator" / "hub.py"
CLIENT_PY = HERE / "hf_client.py"
VENV_BIN = REPO_ROOT / ".venv" / "bin"

KiB = 1024
MiB = 1024 * KiB
VALID = {"Authorization": "Bearer hf_valid_token"}
OTHER = {"Authorization": "Bearer hf_other_token"}

# Processes still running, and every process ever started (used to print log tails on failure).
ACTIVE: list = []
STARTED: list = []


# --------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll predicate() until it returns a truthy value; bounded in time and iterations."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def tail(path: str | os.PathLike, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * KiB))
            text = f.read().decode("utf-8", "replace")
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    return "\n".join(text.splitlines()[-lines:])


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            continue
    return inodes


def pid_listens_on(pid: int, port: int) -> bool:
    """True if process `pid` itself holds a listening socket on `port` (not some other process)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def stop_process(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 15) -> int | None:
    """Signal one process we started (by PID), wait, then SIGKILL it if it is still alive."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (any process, not only our children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def stop_pid(pid: int) -> None:
    """Stop a process a test started indirectly (e.g. by `hubcache upgrade`; not our child), by
    PID: SIGINT, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
        if not pid_alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False          # never route 127.0.0.1 through a proxy from the environment
    return s


def raw_request(base_url: str, method: str, raw_path: str, headers: dict | None = None,
                body: bytes | None = None, timeout: float = 30):
    """Send `raw_path` exactly as given (no normalisation, no re-encoding). -> (status, headers, body)."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, raw_path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def stream_sha256(url: str, headers: dict | None = None, stop_after: int | None = None,
                  timeout: float = 120) -> tuple[int, str, int]:
    """GET `url` streaming; (status, sha256 of the body read, bytes read). With `stop_after`,
    the connection is dropped once that many bytes were read."""
    digest, read = hashlib.sha256(), 0
    with requests.get(url, headers=headers or {}, stream=True, timeout=timeout) as r:
        for part in r.iter_content(1 << 20):
            digest.update(part)
            read += len(part)
            if stop_after is not None and read >= stop_after:
                break
        return r.status_code, digest.hexdigest(), read


def resolve_path(repo: str, rev: str, path: str, repo_type: str = "model") -> str:
    """The resolve URL path exactly as huggingface_hub builds it."""
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    return f"/{prefix}{repo}/resolve/{quote(rev, safe='')}/{quote(path)}"


# --------------------------------------------------------------------------------------------
# the Hub emulator
# --------------------------------------------------------------------------------------------

class Emulator:
    """One tests/hub_emulator/hub.py process (hub + CDN listeners on free ports)."""

    def __init__(self, workdir: Path, big_size: int = 8 * MiB, page_size: int = 100,
                 extra: tuple = (), name: str = "emulator"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = self.workdir / f"{name}.log"
        self.big_size, self.page_size, self.extra = big_size, page_size, extra
        self.proc: subprocess.Popen | None = None
        self.hub = self.cdn = ""
        self.http = session()
        self._manifest = None
        self.start()

    def start(self, same_ports: bool = False) -> None:
        """Start the emulator; `same_ports`: again on the hub and CDN ports it had (a hub that
        was down comes back at the same URL)."""
        ports = ["0", "0"]
        if same_ports:
            ports = [self.hub.rsplit(":", 1)[1], self.cdn.rsplit(":", 1)[1]]
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(HUB_PY), "--port", ports[0], "--cdn-port", ports[1],
                 "--big-size", str(self.big_size), "--page-size", str(self.page_size),
                 "--data-dir", str(self.workdir / "data"), *self.extra],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        if self not in ACTIVE:
            ACTIVE.append(self)
        if self not in STARTED:
            STARTED.append(self)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        if not ready:
            self.stop()
            raise RuntimeError(f"emulator did not start within 60 s:\n{tail(self.log_path)}")
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"emulator exited at start:\n{tail(self.log_path)}")
        info = json.loads(line)
        self.hub, self.cdn, self.pid = info["hub"], info["cdn"], info["pid"]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT)
            if self.proc.stdout:
                self.proc.stdout.close()
        if self in ACTIVE:
            ACTIVE.remove(self)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # ---- control endpoints -----------------------------------------------------------------

    def control(self, name: str, body=None) -> dict:
        method = "POST" if body is not None else "GET"
        r = self.http.request(method, f"{self.hub}/_emulator/{name}", json=body, timeout=30)
        assert r.status_code == 200, f"/_emulator/{name}: {r.status_code} {r.text}"
        return r.json()

    def reset(self, refs: bool = True) -> None:
        self.control("reset", {"refs": refs})

    def stats(self) -> dict:
        return self.control("stats")

    def fault(self, **rule) -> dict:
        return self.control("faults", rule)["rule"]

    def faults(self) -> list[dict]:
        return self.control("faults")["rules"]

    def clear_faults(self) -> None:
        """Remove every fault rule (ends hangs), keeping the stats."""
        r = self.http.delete(f"{self.hub}/_emulator/faults", timeout=30)
        assert r.status_code == 200, r.text

    def move_branch(self, repo: str, branch: str, commit: str, repo_type: str = "model") -> dict:
        return self.control("branch", {"repo": repo, "type": repo_type, "branch": branch, "commit": commit})

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            self._manifest = self.control("manifest")
        return self._manifest

    def content(self, key: str) -> bytes:
        r = self.http.get(f"{self.hub}/_emulator/content/{key}", timeout=60)
        assert r.status_code == 200, r.text
        return r.content

    # ---- manifest lookups ------------------------------------------------------------------

    def commit(self, repo: str, rev: str) -> str:
        """The commit a revision points at in the (unmoved) manifest."""
        repo_info = self.manifest["repos"][repo]
        if rev in repo_info["commits"]:
            return rev
        return repo_info["revisions"][rev]

    def files(self, repo: str, rev: str) -> dict[str, dict]:
        sha = self.commit(repo, rev)
        return {f["path"]: f for f in self.manifest["repos"][repo]["commits"][sha]["files"]}

    def file(self, repo: str, rev: str, path: str) -> dict:
        return self.files(repo, rev)[path]

    def file_bytes(self, repo: str, rev: str, path: str) -> bytes:
        entry = self.file(repo, rev, path)
        return self.content(entry["sha256"] if entry["lfs"] else entry["oid"])

    def cdn_bytes_for(self, sha: str, stats: dict | None = None) -> int:
        stats = stats or self.stats()
        return sum(e["bytes"] for e in stats["cdn_requests"] if sha in e["path"])


# --------------------------------------------------------------------------------------------
# the mirror
# --------------------------------------------------------------------------------------------

def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def upstream_entry(upstream) -> dict:
    """A config entry for one upstream: an Emulator, a URL, or a dict whose "url" is either.
    The emulator stands in for huggingface.co, so entries default to `trust: origin` (applied
    in Mirror.config); a dict may say `"trust": "mirror"` and `"forward_token": True`."""
    if isinstance(upstream, dict):
        entry = dict(upstream)
        entry["url"] = upstream_entry(entry["url"])["url"]
        return entry
    return {"url": upstream.hub if isinstance(upstream, Emulator) else upstream}


class Mirror:
    """One `hubcache serve` process with a generated config (JSON is valid YAML). Its admin
    listener (metrics, status, admin API) gets a free port of its own (`admin_url`), unless the
    overrides say `admin={"listen": None}`."""

    START_TIMEOUT = 20.0

    def __init__(self, binary: str, workdir: Path, upstreams: list[str], cache_dir: Path | None = None,
                 name: str = "mirror", env: dict | None = None, **overrides):
        self.binary = binary
        self.env = dict(env or {})
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cache_dir = Path(cache_dir) if cache_dir else self.workdir / f"{name}-cache"
        self.log_path = self.workdir / f"{name}.log"
        self.config_path = self.workdir / f"{name}.yaml"
        # Private (0700, created by hubcache): the upgrade socket, pid file and status file.
        self.runtime_dir = self.workdir / "run"
        self.upstreams = list(upstreams)
        self.overrides = overrides
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0
        self.http = session()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_enabled(self) -> bool:
        admin = self.overrides.get("admin") or {}
        return not ("listen" in admin and admin["listen"] is None)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def config(self) -> dict:
        base = {
            "listen": f"127.0.0.1:{self.port}",
            "cache": {"dir": str(self.cache_dir)},
            "upstreams": [{"timeout": "10s", "trust": "origin", **upstream_entry(u)}
                          for u in self.upstreams],
            "offline": False,
            "revision_ttl": "60s",
            "server": {"threads": 2, "grace_period": "1s",
                       "runtime_dir": str(self.runtime_dir)},
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            # Prefetching (on by default) fetches listed files in the background, which would
            # leak hub requests into later tests' counts; the tests that need it turn it on.
            "fill": {"prefetch": {"enabled": False}},
        }
        return deep_merge(base, self.overrides)

    def start(self, port: int | None = None, **overrides) -> None:
        """Start (or start again, on the same cache dir, with extra config overrides).
        `port`: listen on this port (e.g. the previous one) instead of a fresh free port."""
        assert self.proc is None or self.proc.poll() is not None, "mirror already running"
        self.overrides = deep_merge(self.overrides, overrides)
        last_error = ""
        for _attempt in range(3):
            self.port = port or free_port()
            self.admin_port = free_port() if self.admin_enabled else 0
            if self.admin_enabled and (self.overrides.get("admin") or {}).get("listen"):
                self.admin_port = int(str(self.overrides["admin"]["listen"]).rsplit(":", 1)[1])
            self.config_path.write_text(json.dumps(self.config(), indent=2))
            log = open(self.log_path, "ab")
            log.write(f"\n===== start {self.name} on port {self.port} =====\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    [self.binary, "serve", "--config", str(self.config_path)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.workdir, env={**os.environ, "RUST_BACKTRACE": "1", **self.env})
            finally:
                log.close()
            if self not in ACTIVE:
                ACTIVE.append(self)
            if self not in STARTED:
                STARTED.append(self)
            deadline = time.monotonic() + self.START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hubcache exited with {self.proc.returncode} at start:\n"
                                       f"{tail(self.log_path)}")
                if pid_listens_on(self.proc.pid, self.port) and (
                        not self.admin_enabled or pid_listens_on(self.proc.pid, self.admin_port)):
                    return
                if "is in use" in tail(self.log_path, 5):
                    last_error = f"port {self.port} in use"
                    break
                time.sleep(0.05)
            else:
                last_error = "no listening socket"
            stop_process(self.proc, signal.SIGKILL)
        raise RuntimeError(f"hubcache did not start within {self.START_TIMEOUT}s ({last_error}):\n"
                           f"{tail(self.log_path)}")

    def stop(self, sig=signal.SIGINT) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)
        if self in ACTIVE:
            ACTIVE.remove(self)

    # ---- reload and upgrade ----------------------------------------------------------------

    def write_config(self, **overrides) -> None:
        """Rewrite the config file (what a reload reads) with more overrides; `self.upstreams`
        may have been changed too."""
        self.overrides = deep_merge(self.overrides, overrides)
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "hubcache.pid"

    def serving_pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def command(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `hubcache ARGS` (e.g. reload, upgrade) next to this mirror."""
        return subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir, stdin=subprocess.DEVNULL,
                              env={**os.environ, **self.env})

    def restart(self, same_port: bool = False, **overrides) -> None:
        port = self.port if same_port else None
        self.stop()
        self.start(port=port, **overrides)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # ---- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 60)
        return self.http.request(method, self.url + path, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw) -> requests.Response:
        return self.request("HEAD", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def resolve(self, method: str, repo: str, rev: str, path: str, repo_type: str = "model",
                **kw) -> requests.Response:
        return self.request(method, resolve_path(repo, rev, path, repo_type), **kw)

    def raw(self, method: str, raw_path: str, headers: dict | None = None, body: bytes | None = None):
        return raw_request(self.url, method, raw_path, headers, body)

    # ---- the admin listener ----------------------------------------------------------------

    def admin(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("allow_redirects", False)
        kw.setdefault("timeout", 30)
        return self.http.request(method, self.admin_url + path, **kw)

    def metrics_text(self) -> str:
        r = self.admin("GET", "/metrics")
        assert r.status_code == 200, f"admin /metrics: {r.status_code} {r.text[:300]}"
        return r.text

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample: `metric("hubcache_served_bytes_total", 'source="cache"')`;
        0 when the series does not exist (yet)."""
        return metrics_sample(self.metrics_text(), name, labels)

    def status(self) -> dict:
        r = self.admin("GET", "/api/status")
        assert r.status_code == 200, f"admin /api/status: {r.status_code} {r.text[:300]}"
        return r.json()


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """{(name, labels as written): value} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        out[(name, labels.rstrip("}"))] = float(value)
    return out


def metrics_sample(text: str, name: str, labels: str = "") -> float:
    return parse_metrics(text).get((name, labels), 0.0)


# --------------------------------------------------------------------------------------------
# the real huggingface_hub client, in a subprocess
# --------------------------------------------------------------------------------------------

# A port that is bound for the whole session but never listens (so connections are refused and
# no other process can take it): the client's "proxy" for every origin but the mirror, so a
# client that tried to reach the emulator's hub or CDN (or any other host) directly would fail.
_BLACKHOLE = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_BLACKHOLE.bind(("127.0.0.1", 0))
_BLACKHOLE_PORT = _BLACKHOLE.getsockname()[1]


def client_env(endpoint: str, hf_home: Path, token: str | None = None, extra: dict | None = None,
               sandbox: bool = True) -> dict:
    """Environment for a client subprocess. sandbox=True: the client can reach only `endpoint`
    (every other origin goes through a proxy that refuses connections)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "transformers_offline")}
    env.update({
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(Path(hf_home) / "hub"),
        "HF_XET_CACHE": str(Path(hf_home) / "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ETAG_TIMEOUT": "20",
        "HF_HUB_DOWNLOAD_TIMEOUT": "20",
        "PYTHONUNBUFFERED": "1",
    })
    if sandbox:
        blackhole = f"http://127.0.0.1:{_BLACKHOLE_PORT}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env[name] = blackhole
        # httpx (huggingface_hub 1.x/2.x) matches the URL form; requests (0.x) host:port.
        host_port = endpoint.rstrip("/").split("://", 1)[-1]
        env["NO_PROXY"] = env["no_proxy"] = f"{endpoint.rstrip('/')},{host_port}"
    else:
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if token:
        env["HF_TOKEN"] = token
    env.update(extra or {})
    return env


class ClientError(AssertionError):
    pass


LEGACY_VENV_BIN = REPO_ROOT / ".venv-legacy" / "bin"


def run_client(endpoint: str, hf_home: Path, ops: list[dict], token: str | None = None,
               timeout: float = 180, extra_env: dict | None = None, sandbox: bool = True,
               python: Path | None = None) -> list[dict]:
    """Run hf_client.py with a list of operations; returns one result dict per operation.
    `python`: another interpreter (e.g. the legacy venv's), default the test venv's."""
    env = client_env(endpoint, hf_home, token, extra_env, sandbox)
    interpreter = python or VENV_BIN / "python"
    proc = subprocess.run([str(interpreter), str(CLIENT_PY), json.dumps(ops)],
                          env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise ClientError(f"client produced no result (rc={proc.returncode})\nstdout:\n{out[-4000:]}\n"
                      f"stderr:\n{err[-4000:]}")


def run_cli(endpoint: str, hf_home: Path, args: list[str], token: str | None = None,
            timeout: float = 180, sandbox: bool = True) -> subprocess.CompletedProcess:
    env = client_env(endpoint, hf_home, token, sandbox=sandbox)
    return subprocess.run([str(VENV_BIN / "hf"), *args], env=env, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, text=True)


def tree_files(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root (symlinks followed), skipping .cache/."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".cache/") or rel == ".cache" or not path.is_file():
            continue
        out[rel] = file_sha256(path)
    return out


def expected_files(emu: Emulator, repo: str, rev: str) -> dict[str, str]:
    return {p: f["sha256"] for p, f in emu.files(repo, rev).items()}


# --------------------------------------------------------------------------------------------
# hubcache blob files on disk (docs/storage-format.md), for fault-injection tests
# --------------------------------------------------------------------------------------------

BLOB_MAGIC = b"HUBCBLK1"
BLOB_FIXED_HEADER = 120
BLOB_FLAG_VERIFIED = 1


def blob_path(root: str | os.PathLike, blob_id: str) -> Path:
    """`{root}/blobs/{hex[0..2]}/{hex[2..4]}/{hex}`."""
    return Path(root) / "blobs" / blob_id[0:2] / blob_id[2:4] / blob_id


class BlobHeader:
    """The header of one blob file (format version 1), as read from disk."""

    def __init__(self, path: str | os.PathLike):
        import struct
        self.path = Path(path)
        with open(self.path, "rb") as f:
            fixed = f.read(BLOB_FIXED_HEADER)
            assert len(fixed) == BLOB_FIXED_HEADER, f"{path}: {len(fixed)}-byte header"
            (magic, self.version, self.flags, self.block_size, self.page_size, self.size,
             self.block_count, self.data_offset) = struct.unpack("<8sIIQQQQQ", fixed[:56])
            assert magic == BLOB_MAGIC, f"{path}: magic {magic!r}"
            self.id = fixed[56:120].rstrip(b"\0").decode()
            bitmap = f.read((self.block_count + 7) // 8)
        self.file_len = os.path.getsize(self.path)
        self.present = {i for i in range(self.block_count) if bitmap[i // 8] & (1 << (i % 8))}

    @property
    def complete(self) -> bool:
        return len(self.present) == self.block_count

    @property
    def verified(self) -> bool:
        return bool(self.flags & BLOB_FLAG_VERIFIED)

    def block_span(self, block: int) -> tuple[int, int]:
        """Content bytes [start, end) of `block`."""
        start = block * self.block_size
        return start, min(start + self.block_size, self.size)

    def content(self) -> bytes:
        """The content area as stored (whatever the bitmap says)."""
        with open(self.path, "rb") as f:
            f.seek(self.data_offset)
            return f.read(self.size)

    def __repr__(self) -> str:
        return (f"BlobHeader({self.path.name[:12]}…, size={self.size}, block_size={self.block_size}, "
                f"present={len(self.present)}/{self.block_count}, flags={self.flags}, "
                f"file_len={self.file_len})")


def read_blob_header(path: str | os.PathLike) -> BlobHeader | None:
    """The header of the blob file at `path`, or None if there is no (readable) file."""
    try:
        return BlobHeader(path)
    except (FileNotFoundError, AssertionError):
        return None


def flip_byte(path: str | os.PathLike, offset: int) -> None:
    """XOR the byte at file offset `offset` with 0xFF, in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        assert len(b) == 1, f"{path} has no byte at {offset}"
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())


def rendezvous_order(roots: list, blob_id: str) -> list[Path]:
    """Storage roots in a blob's placement order (docs/storage-format.md §4.1): by decreasing
    first 8 bytes (big-endian) of sha256("hubcache-rendezvous-v1\\0" + root path + "\\0" + id)."""
    def weight(root) -> int:
        p = os.path.normpath(os.path.abspath(str(root))).encode()
        digest = hashlib.sha256(b"hubcache-rendezvous-v1\0" + p + b"\0" + blob_id.encode()).digest()
        return int.from_bytes(digest[:8], "big")
    indexed = list(enumerate(roots))
    indexed.sort(key=lambda ir: (-weight(ir[1]), ir[0]))
    return [Path(r) for _, r in indexed]


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as the blob format's page checksums (pure Python: keep pages small)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def fill_up(directory: Path) -> Path:
    """Writes a file until the file system is full (unbuffered); returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (4 * MiB, 64 * 1024, 4096):
            data = b"\xa5" * chunk
            for _ in range(1 << 20):
                try:
                    if os.write(fd, data) < len(data):
                        break
                except OSError as e:
                    assert e.errno in (28, 122), e      # ENOSPC, EDQUOT
                    break
    finally:
        os.close(fd)
    return filler


def start_raw_get(mirror, path: str) -> socket.socket:
    """A raw GET of `path` with a small receive buffer, read up to the end of its 200 header:
    the client then reads the body at its own pace (the mirror stalls when it stops)."""
    sock = socket.create_connection(("127.0.0.1", mirror.port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        part = sock.recv(1)
        assert part, "no response header"
        head += part
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock
