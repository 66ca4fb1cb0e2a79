"""hubcache benchmark driver (run through scripts/bench, which builds the mirror first).

Starts the project's Hub emulator, the release mirror and a static file server (nginx) on
127.0.0.1, measures each metric of issue 3 against a baseline measured in the same run, prints a
table and writes the same as JSON. curl processes are the load generator. Every process this
script starts is stopped by PID in a `finally`; every wait is bounded.

Method and how to read the results: docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import bench_cluster
import bench_nginx_cache
import nginx_conf

KiB, MiB, GiB = 1024, 1024**2, 1024**3
REPO_ROOT = Path(__file__).resolve().parents[2]
HUB_PY = REPO_ROOT / "tests" / "hub_emulator" / "hub.py"
BIG_REPO, BIG_FILE = "acme/big-model", "big.bin"
SNAP_REPO = "acme/snapshot-300"
CURL_FMT = "%{stderr}\nBENCH %{http_code} %{time_starttransfer} %{time_total} %{size_download} %{num_redirects}\n"
CURL_MAX_TIME = 600  # seconds, per curl process
# The private CA curl trusts for the TLS rows (set by make_pki).
CURL_CA: str | None = None


def make_pki(workdir: Path) -> dict | None:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI); None without openssl."""
    global CURL_CA
    if shutil.which("openssl") is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    (workdir / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                     "extendedKeyUsage=serverAuth\n")
    for cmd in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", "/CN=hubcache bench CA"],
                ["req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
                ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-set_serial", "1001", "-days", "1", "-extfile", "ext.cnf", "-out", "server.crt"]):
        if subprocess.run(["openssl", *cmd], cwd=workdir, capture_output=True).returncode != 0:
            return None
    CURL_CA = str(workdir / "ca.crt")
    return {"cert": str(workdir / "server.crt"), "key": str(workdir / "server.key")}
STOP_TIMEOUT = 15  # seconds between SIGINT and SIGKILL
SHUTDOWN_MARK = "===== bench: SIGINT sent ====="

PHASES = ("cold", "warm", "range", "cold16", "nginxcache", "snapshot", "throttled", "far")
TARGETS = {
    "cold": 0.9,  # mirror / direct throughput, at least
    "warm": 1.0,  # mirror / static server throughput, at least (issue 11)
    "warm_cpu": 1.5,  # mirror / static server CPU seconds per GiB served, warm, at most (issue 11)
    "throttled_cold": 5.0,  # mirror / direct throughput with a throttled CDN, at least (issue 11)
    "range_first_byte_ms": 50.0,  # first byte of a cold range, at most this much after direct (issue 11)
    "amplification": 1.02,  # upstream bytes / distinct bytes served, at most
    "rss": 64 * MiB,  # peak RSS, below (issue 11)
    "far_cold": 0.5,  # cold snapshot_download, mirror / direct time with the hub 50 ms away, at most
}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 1GiB, 256MiB, 1048576)")
    unit = {None: 1, "B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "KB": 1000, "MB": 1000**2,
            "GB": 1000**3}[m.group(2)]
    return int(m.group(1)) * unit


def human_size(n: float) -> str:
    for unit, f in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= f:
            v = n / f
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.1f}{unit}"
    return f"{int(n)}B"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    return inodes


def pid_listens_on(pid: int, port: int) -> bool:
    """True if process `pid` itself holds a listening socket on `port`."""
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


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of one process (all its threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process and its descendants (nginx master + workers)."""
    if pid is None:
        return 0.0
    total = proc_cpu(pid)
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        total += sum(tree_cpu(int(k)) for k in kids)
    return total


def proc_status(pid: int, keys=("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")) -> dict[str, int]:
    """Memory fields of /proc/<pid>/status, bytes."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0]) * KiB
    except (OSError, ValueError):
        pass
    return out


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = Path(path).read_bytes()[-64 * KiB:].decode("utf-8", "replace")
    except OSError as err:
        return f"<cannot read {path}: {err}>"
    return "\n".join(text.splitlines()[-lines:])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def http_json(url: str, body=None, timeout: float = 30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as r:
        return json.loads(r.read())


class PhaseError(RuntimeError):
    """A measurement failed (wrong status, wrong size, wrong bytes, a process died)."""


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------

class Procs:
    """Every long-running process this script started, so `finally` can stop them by PID."""

    def __init__(self):
        self.live: list[subprocess.Popen] = []

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen | None, sig=signal.SIGINT) -> tuple[int | None, bool]:
        """Signal one process we started, wait (bounded), SIGKILL if needed.
        Returns (exit code, killed)."""
        if proc is None:
            return None, False
        killed = False
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                killed = True
                proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
        if proc in self.live:
            self.live.remove(proc)
        return proc.returncode, killed

    def stop_all(self) -> None:
        for proc in list(reversed(self.live)):
            self.stop(proc)


class Emulator:
    def __init__(self, procs: Procs, workdir: Path, big_size: int, cdn_rate: int, name: str):
        self.procs, self.name = procs, name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        args = [sys.executable, str(HUB_PY), "--port", "0", "--cdn-port", "0", "--big-size", str(big_size),
                "--data-dir", str(workdir / "data"), "--quiet"]
        if cdn_rate:
            args += ["--cdn-rate", str(cdn_rate)]
        with open(self.log_path, "ab") as log:
            self.proc = procs.add(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                                   stdin=subprocess.DEVNULL))
        ready, _, _ = select.select([self.proc.stdout], [], [], 300)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            procs.stop(self.proc)
            raise RuntimeError(f"{name} did not start:\n{tail(self.log_path)}")
        info = json.loads(line)
        self.hub, self.cdn, self.pid = info["hub"], info["cdn"], info["pid"]
        self.manifest = http_json(f"{self.hub}/_emulator/manifest")
        repo = self.manifest["repos"][BIG_REPO]
        self.big_commit = repo["revisions"]["main"]
        self.big = next(f for f in repo["commits"][self.big_commit]["files"] if f["path"] == BIG_FILE)
        snap = self.manifest["repos"][SNAP_REPO]
        self.snap_commit = snap["revisions"]["main"]
        self.snap_files = {f["path"]: f["sha256"] for f in snap["commits"][self.snap_commit]["files"]}

    def stats(self) -> dict:
        return http_json(f"{self.hub}/_emulator/stats")

    def reset(self) -> None:
        http_json(f"{self.hub}/_emulator/reset", {"refs": True})

    def cdn_bytes_settled(self, settle: float = 1.0, limit: float = 120.0) -> tuple[int, float]:
        """cdn_bytes once it stopped changing for `settle` s (bounded by `limit`)."""
        start = time.monotonic()
        last, since = self.stats()["cdn_bytes"], time.monotonic()
        while time.monotonic() - start < limit:
            time.sleep(0.2)
            now = self.stats()["cdn_bytes"]
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= settle:
                break
        return last, time.monotonic() - start

    def stop(self) -> None:
        self.procs.stop(self.proc)


class Mirror:
    """`hubcache serve` (release) with a generated config; one process per `start`."""

    def __init__(self, procs: Procs, binary: Path, workdir: Path, upstream: str, overrides: dict):
        self.procs, self.binary, self.workdir, self.upstream = procs, binary, workdir, upstream
        self.overrides = overrides
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.tls: dict | None = None  # {"cert", "key"}: also serve HTTPS on tls_port
        self.tls_port = 0
        self.fixed_port = 0  # listen here rather than on a free port (cluster nodes)
        self.cache_dir: Path | None = None
        self.starts = 0
        self.events: list[str] = []  # abnormal exits, kills

    def config(self) -> dict:
        cfg = {
            "listen": f"127.0.0.1:{self.port}",
            "cache": {"dir": str(self.cache_dir)},
            # The emulator plays huggingface.co, which is trust: origin by default (another URL
            # would default to mirror, whose answers never make cached metadata servable).
            "upstreams": [{"url": self.upstream, "trust": "origin"}],
            "server": {"threads": 2, "grace_period": "1s",
                       "runtime_dir": str(self.workdir / "run")},
        }
        if self.tls:
            cfg["tls"] = {"listen": f"127.0.0.1:{self.tls_port}", **self.tls}
        return deep_merge(cfg, self.overrides)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str | None:
        return f"https://127.0.0.1:{self.tls_port}" if self.tls else None

    def start(self, cache_dir: Path, log_path: Path, label: str = "") -> None:
        assert self.proc is None
        self.cache_dir = cache_dir
        self.log_path = log_path
        for _attempt in range(3):
            self.port = self.fixed_port or free_port()
            self.tls_port = free_port() if self.tls else 0
            cfg_path = self.workdir / "hubcache.yaml"
            cfg_path.write_text(json.dumps(self.config(), indent=2))  # JSON is valid YAML
            with open(log_path, "ab") as log:
                log.write(f"\n===== start {label} on port {self.port}, cache {cache_dir} =====\n".encode())
                log.flush()
                self.proc = self.procs.add(subprocess.Popen(
                    [str(self.binary), "serve", "--config", str(cfg_path)], stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                    env={**os.environ, "RUST_BACKTRACE": "1"}))
            self.starts += 1
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if pid_listens_on(self.proc.pid, self.port) and (
                        not self.tls or pid_listens_on(self.proc.pid, self.tls_port)):
                    return
                time.sleep(0.02)
            if self.proc.poll() is not None and "in use" not in tail(log_path, 5):
                rc = self.proc.returncode
                self.procs.stop(self.proc)
                self.proc = None
                raise PhaseError(f"hubcache exited with {rc} at start:\n{tail(log_path)}")
            self.procs.stop(self.proc, signal.SIGKILL)
            self.proc = None
        raise PhaseError(f"hubcache did not start listening:\n{tail(log_path)}")

    def vmhwm(self) -> int | None:
        """Peak resident set size (VmHWM) of the running mirror, bytes."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return proc_status(self.proc.pid).get("VmHWM")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """Stop with SIGINT; returns VmHWM read just before."""
        if self.proc is None:
            return None
        hwm = self.vmhwm()
        died = self.proc.poll()
        with open(self.log_path, "ab") as log:  # log lines after this are shutdown noise
            log.write(f"{SHUTDOWN_MARK}\n".encode())
        rc, killed = self.procs.stop(self.proc)
        if died is not None:
            self.events.append(f"mirror exited on its own with code {died} (see {self.log_path})")
        elif killed:
            self.events.append(f"mirror did not exit within {STOP_TIMEOUT}s of SIGINT; killed")
        elif rc not in (0, -signal.SIGINT, 130):
            self.events.append(f"mirror exited with code {rc} after SIGINT")
        self.proc = None
        return hwm


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Nginx:
    """nginx as an unprivileged foreground process with a generated config."""

    def __init__(self, procs: Procs, binary: str, workdir: Path, root: Path, tls: dict | None = None):
        self.procs = procs
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.tls_url = f"https://127.0.0.1:{self.tls_port}" if tls else None
        tls_server = f"""
    server {{
        listen 127.0.0.1:{self.tls_port} ssl http2;
        ssl_certificate {tls['cert']};
        ssl_certificate_key {tls['key']};
        root {root};
        location / {{ }}
    }}""" if tls else ""
        tmp = workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        conf = nginx_conf.preamble(workdir, tmp) + f"""    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        location / {{ }}
    }}{tls_server}
}}
"""
        (workdir / "nginx.conf").write_text(conf)
        self.log_path = workdir / "nginx.out"
        with open(self.log_path, "ab") as log:
            self.proc = procs.add(subprocess.Popen(
                [binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", str(workdir / "error.log")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _listening_inodes(self.port):
                self.url = f"http://127.0.0.1:{self.port}"
                return
            time.sleep(0.02)
        procs.stop(self.proc)
        raise RuntimeError(f"nginx did not start:\n{tail(self.log_path)}\n{tail(workdir / 'error.log')}")

    def stop(self) -> None:
        self.procs.stop(self.proc, signal.SIGINT)


# --------------------------------------------------------------------------------------------
# curl load generator
# --------------------------------------------------------------------------------------------

def curl_args(url: str, range_header: str | None = None, out: str = "/dev/null") -> list[str]:
    args = ["curl", "-sS", "-L", "--noproxy", "*", "--max-time", str(CURL_MAX_TIME), "-o", out,
            "-w", CURL_FMT]
    if CURL_CA and url.startswith("https://"):
        args += ["--cacert", CURL_CA]  # HTTP/2 is negotiated by ALPN
    if range_header:
        args += ["-H", f"Range: {range_header}"]
    return args + [url]


def parse_curl(stderr: bytes, rc: int) -> dict:
    text = stderr.decode("utf-8", "replace")
    for line in reversed(text.splitlines()):
        if line.startswith("BENCH "):
            code, ttfb, total, size, redirects = line.split()[1:6]
            return {"status": int(code), "ttfb": float(ttfb), "total": float(total),
                    "bytes": int(float(size)), "redirects": int(redirects), "rc": rc,
                    "error": text.replace(line, "").strip()[:300] if rc else ""}
    return {"status": 0, "ttfb": None, "total": None, "bytes": 0, "redirects": 0, "rc": rc,
            "error": text.strip()[:300] or f"curl exited {rc}"}


def run_curls(urls_and_ranges: list[tuple[str, str | None]], hash_index: int | None = None) -> tuple[list[dict], float, str | None]:
    """Start one curl per entry at once; returns (results, wall seconds from first start to last
    exit, sha256 of the body of entry `hash_index` or None)."""
    procs, hasher = [], None
    t0 = time.monotonic()
    try:
        for i, (url, rng) in enumerate(urls_and_ranges):
            if i == hash_index:
                p = subprocess.Popen(curl_args(url, rng, out="-"), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
                hasher = subprocess.Popen(["sha256sum"], stdin=p.stdout, stdout=subprocess.PIPE)
                p.stdout.close()
            else:
                p = subprocess.Popen(curl_args(url, rng), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            procs.append(p)
        results = []
        deadline = time.monotonic() + CURL_MAX_TIME + 30
        for p in procs:
            try:
                _, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate(timeout=10)
            results.append(parse_curl(err or b"", p.returncode))
        wall = time.monotonic() - t0
        digest = None
        if hasher is not None:
            out, _ = hasher.communicate(timeout=120)
            digest = out.decode().split()[0] if out else None
        return results, wall, digest
    finally:
        for p in procs + ([hasher] if hasher else []):
            if p.poll() is None:
                p.kill()
                p.wait(10)


def check(results: list[dict], status: int, size: int, what: str) -> None:
    for r in results:
        if r["rc"] != 0 or r["status"] != status or r["bytes"] != size:
            raise PhaseError(f"{what}: expected HTTP {status} with {size} bytes, got HTTP {r['status']} "
                             f"with {r['bytes']} bytes (curl exit {r['rc']}) {r['error']}")


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.procs = Procs()
        self.tmp = Path(tempfile.mkdtemp(prefix="hubcache-bench-", dir=args.tmp_dir))
        self.logs_dir = Path(args.json).resolve().parent / "logs"
        self.rows: list[dict] = []
        self.raw: dict = {}
        self.rss: dict[str, int] = {}
        self.rss_per_process: dict[str, list[int]] = {}
        self.rss_sampled: dict[str, dict[str, int]] = {}
        self.current_phase = "setup"
        self.sampler_stop = threading.Event()
        self.verifications: list[dict] = []
        self.failures: list[dict] = []
        self.anomalies: list[str] = []
        self.notes: list[str] = []
        self.mirror_logs: list[Path] = []
        self.baseline_name = ""
        self.emu: Emulator | None = None
        self.nginx: Nginx | None = None
        self.mirror: Mirror | None = None
        self.cache_counter = 0
        # TLS rows: the mirror's HTTPS listener and nginx's, with a throwaway CA.
        self.pki = make_pki(self.tmp / "pki")
        self.baseline_tls_url: str | None = None
        # run a private copy, so a rebuild of target/ during the run cannot change the binary
        self.binary = self.tmp / "hubcache"
        shutil.copy2(args.binary, self.binary)

    # ---- plumbing --------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def row(self, section, metric, unit, mirror, baseline, ratio, target=None, ok=None, note=""):
        self.rows.append({"section": section, "metric": metric, "unit": unit, "mirror": mirror,
                          "baseline": baseline, "ratio": ratio, "target": target, "ok": ok, "note": note})

    def new_cache(self) -> Path:
        self.cache_counter += 1
        return self.tmp / f"cache-{self.cache_counter}"

    def drop_cache(self, path: Path | None) -> None:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def start_mirror(self, phase: str, cache_dir: Path) -> Mirror:
        m = Mirror(self.procs, self.binary, self.tmp / "mirror", self.emu.hub, self.args.mirror_overrides)
        m.tls = self.pki
        log_path = self.tmp / f"mirror-{phase}.log"
        if log_path not in self.mirror_logs:
            self.mirror_logs.append(log_path)
        m.start(cache_dir, log_path, label=f"{phase} #{len(self.rss_per_process.get(phase, [])) + 1}")
        self.mirror = m
        return m

    def sample_rss(self) -> None:
        """Thread: every 50 ms, the mirror's current RssAnon/RssFile/VmRSS; keeps the max per phase."""
        while not self.sampler_stop.wait(0.05):
            m = self.mirror
            proc = m.proc if m is not None else None
            if proc is None or proc.poll() is not None:
                continue
            st = proc_status(proc.pid)
            peak = self.rss_sampled.setdefault(self.current_phase, {})
            for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                if k in st:
                    peak[k] = max(peak.get(k, 0), st[k])

    def stop_mirror(self, phase: str) -> None:
        m = self.mirror
        if m is None:
            return
        hwm = m.stop()
        self.mirror = None
        if hwm:
            self.rss[phase] = max(self.rss.get(phase, 0), hwm)
            self.rss_per_process.setdefault(phase, []).append(hwm)
        for ev in m.events:
            self.anomalies.append(f"{phase}: {ev}")

    def record_verification(self, phase: str, what: str, expected: str, got: str | None) -> None:
        ok = got == expected
        self.verifications.append({"phase": phase, "what": what, "ok": ok, "expected": expected, "got": got})
        self.log(f"  verify {what}: {'OK' if ok else 'MISMATCH'}")
        if not ok:
            raise PhaseError(f"{what}: sha256 {got} != manifest {expected}")

    def phase(self, name: str, fn) -> None:
        self.log(f"== {name}")
        self.current_phase = name
        t0 = time.monotonic()
        try:
            fn()
        except PhaseError as err:
            self.failures.append({"phase": name, "error": str(err)})
            self.log(f"  FAILED: {err}")
            if self.mirror is not None:
                self.log(f"  mirror log tail:\n{tail(self.mirror.log_path)}")
        finally:
            self.stop_mirror(name)
        self.raw.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t0, 1)

    def timed(self, pid: int | None, items, hash_index=None):
        """run_curls plus the CPU seconds process `pid` (and its children) used meanwhile."""
        c0 = tree_cpu(pid)
        res, wall, digest = run_curls(items, hash_index)
        cpu = tree_cpu(pid) - c0
        return res, wall, digest, cpu

    def big_url(self, base: str) -> str:
        return f"{base}/{BIG_REPO}/resolve/main/{BIG_FILE}"

    # ---- set-up ----------------------------------------------------------------------------

    def start_emulator(self, size: int, rate: int, name: str) -> Emulator:
        self.log(f"starting hub emulator ({name}: big.bin {human_size(size)}"
                 f"{', CDN rate ' + human_size(rate) + '/s per connection' if rate else ', CDN unthrottled'})")
        return Emulator(self.procs, self.tmp / "emulator", size, rate, name)

    def start_baseline(self) -> None:
        big = self.emu.big
        www = self.tmp / "www"
        www.mkdir(exist_ok=True)
        target = www / BIG_FILE
        self.log(f"writing big.bin ({human_size(big['size'])}) into the static server's root from /_emulator/content")
        subprocess.run(["curl", "-sS", "--noproxy", "*", "--fail", "-o", str(target),
                        f"{self.emu.hub}{big['content_url']}"], check=True, timeout=CURL_MAX_TIME)
        got = file_sha256(target)
        if got != big["sha256"]:
            raise RuntimeError(f"static copy of big.bin has sha256 {got}, manifest says {big['sha256']}")
        os.sync()
        nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
        if nginx_bin and not self.args.no_nginx:
            version = subprocess.run([nginx_bin, "-v"], capture_output=True, text=True).stderr.strip()
            self.nginx = Nginx(self.procs, nginx_bin, self.tmp / "nginx", www, tls=self.pki)
            self.baseline_url = f"{self.nginx.url}/{BIG_FILE}"
            if self.nginx.tls_url:
                self.baseline_tls_url = f"{self.nginx.tls_url}/{BIG_FILE}"
            self.baseline_pid = self.nginx.proc.pid
            self.baseline_name = (f"{version.replace('nginx version: ', '')} (sendfile on, worker_processes auto,"
                                  f" access_log off), file on the same disk")
        else:
            self.baseline_url = f"{self.emu.hub}{big['content_url']}"
            self.baseline_pid = self.emu.proc.pid
            why = "--no-nginx given" if self.args.no_nginx else "nginx is not installed"
            self.baseline_name = ("FALLBACK: the hub emulator's /_emulator/content endpoint (Python "
                                  f"ThreadingHTTPServer + sendfile), because {why}")
            self.log(f"  WARNING: {self.baseline_name}")
        res, _, digest = run_curls([(self.baseline_url, None)], hash_index=0)
        check(res, 200, big["size"], "static server")
        if digest != big["sha256"]:
            raise RuntimeError("static server serves the wrong bytes")
        self.log(f"  static server: {self.baseline_name} at {self.baseline_url}")

    # ---- phases ----------------------------------------------------------------------------

    def phase_cold(self, section: str, reps: int, key: str) -> Path:
        """Cold download of big.bin: mirror on an empty cache vs direct (hub 302 -> CDN)."""
        size = self.emu.big["size"]
        direct, mirror, amplification = [], [], []
        for i in range(reps):
            res, _, _, cpu = self.timed(self.emu.proc.pid, [(self.big_url(self.emu.hub), None)])
            check(res, 200, size, "direct download")
            direct.append({**res[0], "server_cpu_s": cpu})
            cache = self.new_cache()
            m = self.start_mirror(key, cache)
            self.emu.reset()
            e0 = tree_cpu(self.emu.proc.pid)
            res, _, _, cpu = self.timed(m.proc.pid, [(self.big_url(m.url), None)])
            ecpu = tree_cpu(self.emu.proc.pid) - e0
            check(res, 200, size, "cold download through the mirror")
            up, _ = self.emu.cdn_bytes_settled(settle=0.5, limit=30)
            amplification.append(up / size)
            mirror.append({**res[0], "server_cpu_s": cpu, "emulator_cpu_s": ecpu})
            self.stop_mirror(key)
            self.drop_cache(cache)
            self.log(f"  rep {i + 1}/{reps}: direct {size / direct[-1]['total'] / 1e6:8.1f} MB/s   "
                     f"mirror cold {size / mirror[-1]['total'] / 1e6:8.1f} MB/s  (upstream/file {up / size:.3f}, "
                     f"CPU s: mirror {cpu:.2f} + emulator {ecpu:.2f}; direct: emulator "
                     f"{direct[-1]['server_cpu_s']:.2f})")
        # one more cold download, its bytes hashed (not timed); leaves a warm cache for the warm phase
        cache = self.new_cache()
        m = self.start_mirror(key, cache)
        res, _, digest = run_curls([(self.big_url(m.url), None)], hash_index=0)
        check(res, 200, size, "cold download through the mirror (verified)")
        self.record_verification(key, f"{section}: cold download through the mirror", self.emu.big["sha256"], digest)
        self.stop_mirror(key)
        d_mbs = median([size / r["total"] / 1e6 for r in direct])
        m_mbs = median([size / r["total"] / 1e6 for r in mirror])
        self.raw[key] = {"direct": direct, "mirror": mirror, "upstream_per_file": amplification}
        target = TARGETS["throttled_cold" if key.startswith("throttled") else "cold"]
        self.row(section, f"cold download, 1 client ({human_size(size)})", "MB/s", m_mbs, d_mbs, m_mbs / d_mbs,
                 f">= {target}", m_mbs / d_mbs >= target, "baseline: direct from the emulator (302 -> CDN)")
        self.cpu_row(section, "cold download, 1 client", mirror, direct, "baseline: the emulator serving directly")
        amp = median(amplification)
        self.row(section, "cold download, 1 client: upstream bytes / file size", "ratio", amp, 1.0, amp, None, None,
                 "incl. background completion")
        if key == "cold":
            dt, mt = median([r["ttfb"] for r in direct]), median([r["ttfb"] for r in mirror])
            self.row(section, "TTFB, cold full GET", "ms", mt * 1e3, dt * 1e3, mt / dt, None, None,
                     "baseline: direct; lower is better")
        return cache

    def cpu_row(self, section: str, what: str, mirror: list[dict], baseline: list[dict] | None, note: str,
                per_gib_target: float | None = None) -> None:
        """Server CPU while serving: CPU seconds / wall seconds (2.0 = both cores of a 2-core machine),
        and CPU seconds per GiB served (what the serving costs, whatever the speed)."""
        def cores(x):
            return x["server_cpu_s"] / (x["wall"] if "wall" in x else x["total"])

        def per_gib(x):
            served = x.get("bytes", x.get("served", 0))
            return x["server_cpu_s"] / (served / GiB) if served else 0.0
        mc = median([cores(x) for x in mirror])
        bc = median([cores(x) for x in baseline]) if baseline else None
        self.row(section, f"{what}: server CPU (cores busy)", "cores", mc, bc, mc / bc if bc else None, None, None,
                 f"CPU s / wall s; {note}")
        mg = median([per_gib(x) for x in mirror])
        bg = median([per_gib(x) for x in baseline]) if baseline else None
        ratio = mg / bg if bg else None
        self.row(section, f"{what}: server CPU seconds per GiB served", "s", mg, bg, ratio,
                 f"<= {per_gib_target}" if per_gib_target else None,
                 (ratio is not None and ratio <= per_gib_target) if per_gib_target else None,
                 f"utime+stime / GiB; lower is better; {note}")

    def phase_warm(self, warm_cache: Path) -> None:
        size = self.emu.big["size"]
        reps, reps_multi, n = self.args.reps, self.args.reps_multi, self.args.clients
        m = self.start_mirror("warm", warm_cache)  # restarted on the cache the cold phase filled
        res, _, digest = run_curls([(self.big_url(m.url), None)], hash_index=0)
        check(res, 200, size, "warm download through the mirror (verified)")
        self.record_verification("warm", "warm download through the mirror", self.emu.big["sha256"], digest)
        one_m, one_b = [], []
        for i in range(reps):
            res, _, _, cpu = self.timed(m.proc.pid, [(self.big_url(m.url), None)])
            check(res, 200, size, "warm download through the mirror")
            one_m.append({**res[0], "server_cpu_s": cpu})
            res, _, _, cpu = self.timed(self.baseline_pid, [(self.baseline_url, None)])
            check(res, 200, size, "static server download")
            one_b.append({**res[0], "server_cpu_s": cpu})
            self.log(f"  rep {i + 1}/{reps}: 1 client  mirror {size / one_m[-1]['total'] / 1e6:8.1f} MB/s   "
                     f"static {size / one_b[-1]['total'] / 1e6:8.1f} MB/s")
        multi_m, multi_b = [], []
        for i in range(reps_multi):
            res, wall, digest, cpu = self.timed(m.proc.pid, [(self.big_url(m.url), None)] * n,
                                                hash_index=0 if i == 0 else None)
            check(res, 200, size, f"{n} concurrent warm downloads through the mirror")
            if i == 0:
                self.record_verification("warm", f"1 of {n} concurrent warm downloads", self.emu.big["sha256"], digest)
            multi_m.append({"wall": wall, "bytes": sum(r["bytes"] for r in res), "server_cpu_s": cpu, "clients": res})
            res, wall, _, cpu = self.timed(self.baseline_pid, [(self.baseline_url, None)] * n)
            check(res, 200, size, f"{n} concurrent static server downloads")
            multi_b.append({"wall": wall, "bytes": sum(r["bytes"] for r in res), "server_cpu_s": cpu, "clients": res})
            self.log(f"  rep {i + 1}/{reps_multi}: {n} clients mirror {multi_m[-1]['bytes'] / multi_m[-1]['wall'] / 1e6:8.1f} MB/s   "
                     f"static {multi_b[-1]['bytes'] / multi_b[-1]['wall'] / 1e6:8.1f} MB/s (aggregate)")
        self.raw["warm"] = {"one_mirror": one_m, "one_static": one_b, "multi_mirror": multi_m, "multi_static": multi_b}
        sec = "full-speed upstream"
        m1, b1 = median([size / r["total"] / 1e6 for r in one_m]), median([size / r["total"] / 1e6 for r in one_b])
        self.row(sec, "warm download, 1 client", "MB/s", m1, b1, m1 / b1, f">= {TARGETS['warm']}",
                 m1 / b1 >= TARGETS["warm"], "baseline: static server")
        self.cpu_row(sec, "warm download, 1 client", one_m, one_b, "baseline: static server", TARGETS["warm_cpu"])
        mn = median([x["bytes"] / x["wall"] / 1e6 for x in multi_m])
        bn = median([x["bytes"] / x["wall"] / 1e6 for x in multi_b])
        self.row(sec, f"warm download, {n} concurrent clients (aggregate)", "MB/s", mn, bn, mn / bn,
                 f">= {TARGETS['warm']}", mn / bn >= TARGETS["warm"], "baseline: static server")
        self.cpu_row(sec, f"warm download, {n} clients", multi_m, multi_b, "baseline: static server",
                     TARGETS["warm_cpu"])
        mt, bt = median([r["ttfb"] for r in one_m]), median([r["ttfb"] for r in one_b])
        self.row(sec, "TTFB, warm full GET", "ms", mt * 1e3, bt * 1e3, mt / bt, None, None,
                 "baseline: static server; lower is better")
        self.warm_tls(m, reps, m1)

    def warm_tls(self, m: Mirror, reps: int, plain_mbs: float) -> None:
        """Warm throughput over HTTPS (HTTP/2 by ALPN), 1 client, next to plain HTTP; nginx over
        TLS is the baseline when it is available."""
        if not m.tls_url:
            self.notes.append("no TLS row: the openssl command line tool is missing")
            return
        size = self.emu.big["size"]
        res, _, digest = run_curls([(self.big_url(m.tls_url), None)], hash_index=0)
        check(res, 200, size, "warm download through the mirror over TLS (verified)")
        self.record_verification("warm", "warm download over TLS", self.emu.big["sha256"], digest)
        tls_m, tls_b = [], []
        for i in range(reps):
            res, _, _, cpu = self.timed(m.proc.pid, [(self.big_url(m.tls_url), None)])
            check(res, 200, size, "warm download through the mirror over TLS")
            tls_m.append({**res[0], "server_cpu_s": cpu})
            if self.baseline_tls_url:
                res, _, _, cpu = self.timed(self.baseline_pid, [(self.baseline_tls_url, None)])
                check(res, 200, size, "static server download over TLS")
                tls_b.append({**res[0], "server_cpu_s": cpu})
            self.log(f"  rep {i + 1}/{reps}: 1 client over TLS  mirror "
                     f"{size / tls_m[-1]['total'] / 1e6:8.1f} MB/s"
                     + (f"   nginx {size / tls_b[-1]['total'] / 1e6:8.1f} MB/s" if tls_b else ""))
        self.raw["warm_tls"] = {"one_mirror": tls_m, "one_static": tls_b}
        sec = "full-speed upstream"
        mm = median([size / r["total"] / 1e6 for r in tls_m])
        if tls_b:
            bb = median([size / r["total"] / 1e6 for r in tls_b])
            self.row(sec, "warm download over TLS (HTTP/2), 1 client", "MB/s", mm, bb, mm / bb, None,
                     None, f"baseline: nginx over TLS (HTTP/2); plain HTTP through the mirror: {plain_mbs:.1f} MB/s")
        else:
            self.row(sec, "warm download over TLS (HTTP/2), 1 client", "MB/s", mm, plain_mbs,
                     mm / plain_mbs, None, None, "baseline: the mirror over plain HTTP (no nginx with TLS)")

    def phase_range(self, section: str = "full-speed upstream", key: str = "range") -> None:
        """A 1 MiB range at the end of a cold file (the last page of the last block): the mirror
        fetches from the range's page first, so its first byte comes about as fast as direct."""
        size = self.emu.big["size"]
        start = max(0, size - MiB)
        rng = f"bytes={start}-"
        want = size - start
        expected = hashlib.sha256(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            urllib.request.Request(f"{self.emu.hub}{self.emu.big['content_url']}", headers={"Range": rng}),
            timeout=60).read()).hexdigest()
        direct, mirror = [], []
        for i in range(self.args.reps):
            res, _, _ = run_curls([(self.big_url(self.emu.hub), rng)])
            check(res, 206, want, "direct ranged request")
            direct.append(res[0])
            cache = self.new_cache()
            m = self.start_mirror(key, cache)
            res, _, digest = run_curls([(self.big_url(m.url), rng)], hash_index=0 if i == 0 else None)
            check(res, 206, want, "ranged request at the end of a cold file through the mirror")
            if i == 0:
                self.record_verification(key, f"{section}: range {rng} of a cold file through the mirror",
                                         expected, digest)
            mirror.append(res[0])
            self.stop_mirror(key)
            self.drop_cache(cache)
            self.log(f"  rep {i + 1}/{self.args.reps}: TTFB direct {direct[-1]['ttfb'] * 1e3:7.1f} ms   "
                     f"mirror cold {mirror[-1]['ttfb'] * 1e3:7.1f} ms  (total {mirror[-1]['total'] * 1e3:.1f} ms)")
        self.raw[key] = {"range": rng, "direct": direct, "mirror": mirror}
        dt, mt = median([r["ttfb"] for r in direct]), median([r["ttfb"] for r in mirror])
        slack = TARGETS["range_first_byte_ms"]
        self.row(section, f"TTFB, range {human_size(want)} at the end of a cold file", "ms",
                 mt * 1e3, dt * 1e3, mt / dt, f"<= direct + {slack:.0f}", (mt - dt) * 1e3 <= slack,
                 "range-first: the fetch starts at the range's page; baseline: direct; lower is better")
        dt, mt = median([r["total"] for r in direct]), median([r["total"] for r in mirror])
        self.row(section, f"time to last byte, same range", "ms", mt * 1e3, dt * 1e3, mt / dt,
                 None, None, "baseline: direct; lower is better")

    def phase_cold_multi(self, section: str, reps: int, key: str) -> None:
        size, n = self.emu.big["size"], self.args.clients
        samples = []
        for i in range(reps):
            cache = self.new_cache()
            m = self.start_mirror(key, cache)
            self.emu.reset()
            res, wall, digest, cpu = self.timed(m.proc.pid, [(self.big_url(m.url), None)] * n,
                                                hash_index=0 if i == 0 else None)
            check(res, 200, size, f"{n} concurrent cold downloads through the mirror")
            if i == 0:
                self.record_verification(key, f"{section}: 1 of {n} concurrent cold downloads", self.emu.big["sha256"], digest)
            st = self.emu.stats()
            at_done, cdn_reqs = st["cdn_bytes"], len(st["cdn_requests"])
            settled, _ = self.emu.cdn_bytes_settled(settle=1.0, limit=120)
            served = sum(r["bytes"] for r in res)
            samples.append({"wall": wall, "served": served, "upstream_at_done": at_done, "server_cpu_s": cpu,
                            "upstream_settled": settled, "cdn_requests": cdn_reqs,
                            "ttfb": [r["ttfb"] for r in res], "total": [r["total"] for r in res]})
            self.stop_mirror(key)
            self.drop_cache(cache)
            self.log(f"  rep {i + 1}/{reps}: {n} cold clients, aggregate {served / wall / 1e6:8.1f} MB/s, "
                     f"upstream {human_size(at_done)} at done / {human_size(settled)} settled "
                     f"({cdn_reqs} CDN requests), served {human_size(served)}")
        self.raw[key] = samples
        served = samples[0]["served"]
        a = median([s["upstream_at_done"] / s["served"] for s in samples])
        b = median([s["upstream_settled"] / s["served"] for s in samples])
        amp = median([s["upstream_settled"] / size for s in samples])
        agg = median([s["served"] / s["wall"] / 1e6 for s in samples])
        ideal = 1 / n
        self.row(section, f"{n} cold clients: upstream bytes / served bytes", "ratio", a, ideal, a / ideal, None, None,
                 f"at the moment the last client finished; baseline = ideal 1/{n}")
        self.row(section, f"{n} cold clients: same, background completion counted", "ratio", b, ideal, b / ideal,
                 None, None, f"baseline = ideal 1/{n}")
        self.row(section, f"{n} cold clients: upstream bytes / file size", "ratio", amp, 1.0, amp,
                 f"<= {TARGETS['amplification']}", amp <= TARGETS["amplification"],
                 "each byte fetched once = 1.0")
        self.row(section, f"{n} cold clients: aggregate throughput", "MB/s", agg, None, None, None, None,
                 f"{human_size(served)} served; no baseline")
        self.cpu_row(section, f"{n} cold clients", samples, None, "no baseline")
        slow = median([max(s["ttfb"]) for s in samples])
        self.row(section, f"{n} cold clients: TTFB of the slowest-to-start client", "ms", slow * 1e3, None, None,
                 None, None, "no baseline")

    def phase_snapshot(self) -> None:
        reps = self.args.reps_snapshot
        direct, cold, warm = [], [], []
        for i in range(reps):
            direct.append(self.snapshot(self.emu.hub, "direct"))
            cache = self.new_cache()
            m = self.start_mirror("snapshot", cache)
            cold.append(self.snapshot(m.url, "mirror cold"))
            warm.append(self.snapshot(m.url, "mirror warm"))
            self.stop_mirror("snapshot")
            self.drop_cache(cache)
            self.log(f"  rep {i + 1}/{reps}: direct {direct[-1]['seconds']:.2f} s   mirror cold "
                     f"{cold[-1]['seconds']:.2f} s   mirror warm {warm[-1]['seconds']:.2f} s")
        self.raw["snapshot"] = {"direct": direct, "mirror_cold": cold, "mirror_warm": warm}
        d = median([r["seconds"] for r in direct])
        c = median([r["seconds"] for r in cold])
        w = median([r["seconds"] for r in warm])
        nfiles = len(self.emu.snap_files)
        self.row("full-speed upstream", f"snapshot_download {SNAP_REPO} ({nfiles} files), cold mirror", "s", c, d, c / d,
                 None, None, "baseline: direct; empty client cache; lower is better")
        self.row("full-speed upstream", f"snapshot_download {SNAP_REPO}, warm mirror", "s", w, d, w / d,
                 None, None, "baseline: direct; empty client cache; lower is better")

    def snapshot(self, endpoint: str, what: str) -> dict:
        hf_home = Path(tempfile.mkdtemp(prefix="hf-home-", dir=self.tmp))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGINGFACE_")) and k.lower() not in
               ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1",
                    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                    "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
        code = ("import json, sys, time\n"
                "from huggingface_hub import snapshot_download\n"
                "t = time.perf_counter()\n"
                f"p = snapshot_download(repo_id={SNAP_REPO!r})\n"
                "print('RESULT ' + json.dumps({'seconds': time.perf_counter() - t, 'path': p}))\n")
        t0 = time.monotonic()
        try:
            proc = subprocess.run([str(self.args.python), "-c", code], env=env, capture_output=True,
                                  timeout=300, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PhaseError(f"snapshot_download ({what}) did not finish within 300 s")
        wall = time.monotonic() - t0
        out = proc.stdout.decode("utf-8", "replace")
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise PhaseError(f"snapshot_download ({what}) failed (exit {proc.returncode}):\n"
                             f"{proc.stderr.decode('utf-8', 'replace')[-3000:]}")
        result = json.loads(line[len("RESULT "):])
        root = Path(result["path"])
        got = {p.relative_to(root).as_posix(): file_sha256(p) for p in root.rglob("*")
               if p.is_file() and not p.relative_to(root).as_posix().startswith(".cache/")}
        bad = sorted(k for k, v in self.emu.snap_files.items() if got.get(k) != v)
        extra = sorted(set(got) - set(self.emu.snap_files))
        ok = not bad and not extra
        self.verifications.append({"phase": "snapshot", "what": f"snapshot_download {what}: "
                                   f"{len(self.emu.snap_files) - len(bad)}/{len(self.emu.snap_files)} files match",
                                   "ok": ok})
        if not ok:
            raise PhaseError(f"snapshot_download ({what}): {len(bad)} files differ from the manifest "
                             f"(e.g. {bad[:3]}), {len(extra)} unexpected files")
        shutil.rmtree(hf_home, ignore_errors=True)
        return {"seconds": result["seconds"], "wall_incl_python_start": wall}

    # ---- far from the hub (issue 13) --------------------------------------------------------

    def set_hub_delay(self, ms: int) -> None:
        """Every hub and CDN request waits `ms` before it is handled (0: no delay)."""
        req = urllib.request.Request(f"{self.emu.hub}/_emulator/faults", method="DELETE")
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=30).read()
        if ms > 0:
            http_json(f"{self.emu.hub}/_emulator/faults", {"kind": "delay", "ms": ms, "host": "any"})

    def phase_far(self) -> None:
        reps = self.args.reps_far
        nfiles = len(self.emu.snap_files)
        for delay in self.args.far_delays:
            self.set_hub_delay(delay)
            try:
                direct, cold, warm = [], [], []
                for i in range(reps):
                    direct.append(self.snapshot(self.emu.hub, f"direct, hub {delay} ms away"))
                    cache = self.new_cache()
                    m = self.start_mirror(f"far{delay}", cache)
                    cold.append(self.snapshot(m.url, f"mirror cold, hub {delay} ms away"))
                    warm.append(self.snapshot(m.url, f"mirror warm, hub {delay} ms away"))
                    self.stop_mirror(f"far{delay}")
                    self.drop_cache(cache)
                    self.log(f"  {delay} ms rep {i + 1}/{reps}: direct {direct[-1]['seconds']:.2f} s   "
                             f"mirror cold {cold[-1]['seconds']:.2f} s   mirror warm {warm[-1]['seconds']:.2f} s")
            finally:
                self.set_hub_delay(0)
            self.raw.setdefault("far", {})[str(delay)] = {"direct": direct, "mirror_cold": cold,
                                                          "mirror_warm": warm}
            secs = {k: [r["seconds"] for r in v] for k, v in
                    (("direct", direct), ("cold", cold), ("warm", warm))}
            d, c, w = (median(secs[k]) for k in ("direct", "cold", "warm"))

            def spread(k):
                return f"{min(secs[k]):.2f}-{max(secs[k]):.2f} s"

            sec = f"far from the hub ({delay} ms per hub/CDN request)"
            note = (f"{reps} rep(s); spread mirror {{}}, direct {spread('direct')}; "
                    f"snapshot_download of {SNAP_REPO} ({nfiles} files), 8 workers, empty client cache")
            target = TARGETS["far_cold"] if delay == 50 else None
            self.row(sec, "snapshot_download, cold mirror", "s", c, d, c / d,
                     f"<= {target}" if target else None, (c / d <= target) if target else None,
                     note.format(spread("cold")))
            self.row(sec, "snapshot_download, warm mirror", "s", w, d, w / d, None, None,
                     note.format(spread("warm")))

    # ---- driver ----------------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        sampler = threading.Thread(target=self.sample_rss, daemon=True)
        sampler.start()
        want = a.only
        try:
            self.emu = self.start_emulator(a.size, 0, "emulator")
            if "warm" in want:
                self.start_baseline()
            sec = "full-speed upstream"
            holder = {}
            if want & {"cold", "warm"}:  # warm uses the cache the cold phase filled
                self.phase("cold", lambda: holder.update(cache=self.phase_cold(sec, a.reps, "cold")))
            if "warm" in want:
                if holder.get("cache") and holder["cache"].exists():
                    self.phase("warm", lambda: self.phase_warm(holder["cache"]))
                else:
                    self.failures.append({"phase": "warm", "error": "skipped: the cold phase left no warm cache"})
            self.drop_cache(holder.get("cache"))
            if self.nginx:
                self.nginx.stop()
                self.nginx = None
            if "range" in want:
                self.phase("range", self.phase_range)
            if "cold16" in want:
                self.phase("cold16", lambda: self.phase_cold_multi(sec, a.reps_multi, "cold16"))
            if "nginxcache" in want and a.no_nginx:
                self.notes.append("nginxcache phase skipped: --no-nginx given")
            elif "nginxcache" in want:
                self.phase("nginxcache", lambda: bench_nginx_cache.phase_nginx_cache(
                    self, sys.modules[__name__], a.reps, a.reps_multi))
            if "snapshot" in want:
                self.phase("snapshot", self.phase_snapshot)
            if "far" in want:
                self.phase("far", self.phase_far)
            if a.cluster:
                self.phase("cluster", lambda: bench_cluster.phase_cluster(
                    self, sys.modules[__name__], a.cluster, a.reps_cluster))
            if a.cdn_rate > 0 and "throttled" in want:
                self.emu.stop()
                self.emu = self.start_emulator(a.throttled_size, a.cdn_rate, "emulator-throttled")
                tsec = f"throttled upstream ({human_size(a.cdn_rate)}/s per CDN connection)"
                self.phase("throttled_cold", lambda: self.drop_cache(
                    self.phase_cold(tsec, a.reps_throttled, "throttled_cold")))
                if "range" in want:
                    self.phase("throttled_range", lambda: self.phase_range(tsec, "throttled_range"))
                self.phase("throttled_cold16", lambda: self.phase_cold_multi(tsec, a.reps_throttled_multi,
                                                                             "throttled_cold16"))
            self.rss_rows()
        finally:
            self.sampler_stop.set()
            sampler.join(5)
            if self.mirror is not None:
                self.stop_mirror("aborted")
            self.procs.stop_all()
            self.collect_logs()
            if a.keep:
                self.log(f"kept {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        return self.report()

    def rss_rows(self) -> None:
        for phase, hwm in self.rss.items():
            sampled = self.rss_sampled.get(phase, {})
            note = (f"{len(self.rss_per_process.get(phase, []))} mirror process(es); sampled max RssAnon "
                    f"{sampled.get('RssAnon', 0) / MiB:.1f} MiB, RssFile {sampled.get('RssFile', 0) / MiB:.1f} MiB")
            self.row("memory", f"peak RSS (VmHWM), phase {phase}", "MiB", hwm / MiB, None, None,
                     f"< {TARGETS['rss'] // MiB}", hwm < TARGETS["rss"], note)
        if self.rss:
            top = max(self.rss.values())
            self.row("memory", "peak RSS (VmHWM), max over phases", "MiB", top / MiB, None, None,
                     f"< {TARGETS['rss'] // MiB}", top < TARGETS["rss"])

    def collect_logs(self) -> None:
        """Copy the mirror logs next to the JSON and note ERROR/WARN/panic lines."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for old in self.logs_dir.glob("mirror-*.log"):
            old.unlink()
        self.log_summary = {}
        for path in self.mirror_logs:
            if not path.exists():
                continue
            shutil.copy(path, self.logs_dir / path.name)
            text = path.read_text("utf-8", "replace").splitlines()
            bad, at_stop, stopping = [], [], False
            for ln in text:
                if ln.startswith("===== start"):
                    stopping = False
                elif ln == SHUTDOWN_MARK:
                    stopping = True
                elif re.search(r"\b(ERROR|WARN)\b|panicked", ln):
                    (at_stop if stopping else bad).append(ln)
            self.log_summary[path.name] = {"lines": len(text), "error_or_warn": len(bad), "samples": bad[:8],
                                           "after_sigint": len(at_stop), "after_sigint_samples": at_stop[:4]}
            if bad:
                self.anomalies.append(f"{path.name}: {len(bad)} ERROR/WARN/panic lines while serving, "
                                      f"e.g. {bad[0][:240]}")
            if at_stop:
                self.notes.append(f"{path.name}: {len(at_stop)} WARN/ERROR lines after the benchmark's SIGINT "
                                  f"(shutdown), e.g. {at_stop[0][:240]}")

    # ---- report ----------------------------------------------------------------------------

    def report(self) -> int:
        def fmt(v, unit):
            if v is None:
                return "-"
            if unit == "ratio":
                return f"{v:.3f}"
            if unit == "cores":
                return f"{v:.2f}"
            if unit in ("MB/s", "MiB"):
                return f"{v:.1f}"
            if unit == "ms":
                return f"{v:.1f}"
            if unit == "s":
                return f"{v:.2f}"
            return f"{v}"

        print()
        if self.baseline_name:
            print(f"static-file baseline: {self.baseline_name}")
        header = ("metric", "unit", "mirror", "baseline", "ratio", "target", "ok", "note")
        table = []
        section = None
        for r in self.rows:
            if r["section"] != section:
                if section is not None:
                    table.append(None)
                section = r["section"]
                table.append((f"[{section}]", "", "", "", "", "", "", ""))
            table.append((r["metric"], r["unit"], fmt(r["mirror"], r["unit"]), fmt(r["baseline"], r["unit"]),
                          "-" if r["ratio"] is None else f"{r['ratio']:.3f}", r["target"] or "",
                          "" if r["ok"] is None else ("yes" if r["ok"] else "NO"), r["note"]))
        widths = [max([len(header[i])] + [len(t[i]) for t in table if t]) for i in range(len(header))]

        def line(cells):
            return "  ".join(c.ljust(widths[i]) if i in (0, len(cells) - 1) else c.rjust(widths[i])
                             for i, c in enumerate(cells)).rstrip()

        print(line(header))
        print("  ".join("-" * w for w in widths[:-1]) + "  ----")
        for t in table:
            print("" if t is None else line(t))
        print()
        print("ratio = mirror / baseline (throughput: higher is better; times: lower is better).")
        seen: dict[str, list[bool]] = {}
        for v in self.verifications:
            seen.setdefault(v["what"], []).append(v["ok"])
        print("sha256 checks against the manifest: " + "; ".join(
            f"{what}: {'OK' if all(oks) else 'MISMATCH'}{f' (x{len(oks)})' if len(oks) > 1 else ''}"
            for what, oks in seen.items()))
        for f in self.failures:
            lines = [ln for ln in f["error"].strip().splitlines() if ln.strip()] or ["?"]
            print(f"FAILED phase {f['phase']}: {lines[0]}" + (f" ... {lines[-1][:300]}" if len(lines) > 1 else ""))
        for an in self.anomalies:
            print(f"anomaly: {an}")
        for note in self.notes:
            print(f"note: {note}")
        result = {
            "command": self.args.cmdline,
            "machine": machine_info(),
            "versions": versions(self.args),
            "settings": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
                         for k, v in vars(self.args).items()},
            "static_baseline": self.baseline_name,
            "rows": self.rows,
            "peak_rss_bytes": self.rss,
            "peak_rss_bytes_per_process": self.rss_per_process,
            "rss_sampled_max_bytes": self.rss_sampled,
            "verifications": self.verifications,
            "failures": self.failures,
            "anomalies": self.anomalies,
            "notes": self.notes,
            "mirror_logs": getattr(self, "log_summary", {}),
            "raw": self.raw,
        }
        out = Path(self.args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"JSON: {out}   mirror logs: {self.logs_dir}")
        return 1 if self.failures else 0


def machine_info() -> dict:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * KiB
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model, "memory_bytes": mem,
            "memory": human_size(mem), "kernel": platform.release()}


def versions(args) -> dict:
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO_ROOT).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    rev = run(["git", "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"])
    curl = run(["curl", "--version"]).split()
    return {"hubcache_git": (rev + ("+dirty" if dirty else "")) if rev else "unknown commit (not a git checkout)",
            "curl": " ".join(curl[:2]) if curl else "",
            "huggingface_hub": run([str(args.python), "-c", "import huggingface_hub as h; print(h.__version__)"]),
            "python": platform.python_version()}


def parse_set(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not _:
            raise SystemExit(f"--mirror-set {item!r}: expected KEY=VALUE, e.g. fill.connections_per_file=16")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = int(value) if value.isdigit() else value
    return out


def _interrupted(*_):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description="Benchmark hubcache against the hub "
                                "emulator (direct) and nginx (static files; proxy_cache in the nginxcache phase). "
                                "See docs/benchmark.md.")
    p.add_argument("--quick", action="store_true", help="short run: 128MiB file, fewer snapshot/throttled repetitions (~1 min)")
    p.add_argument("--size", type=parse_size, help="size of big.bin (default 1GiB, --quick 128MiB)")
    p.add_argument("--reps", type=int, help="repetitions of single-client measurements (default 7, quick 5)")
    p.add_argument("--reps-multi", type=int, help="repetitions of 16-client measurements (default 5, quick 3)")
    p.add_argument("--reps-snapshot", type=int, help="repetitions of snapshot_download (default 5, quick 2)")
    p.add_argument("--reps-far", type=int, help="repetitions of each far-from-the-hub snapshot_download (default 3, quick 1)")
    p.add_argument("--far-delays", default="0,50,150",
                   help="far phase: comma-separated delays in ms added to every hub/CDN request (default 0,50,150)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--cdn-rate", type=parse_size, default=40 * MiB,
                   help="CDN bytes/s per connection in the throttled run (default 40MiB; 0 skips it)")
    p.add_argument("--throttled-size", type=parse_size,
                   help="size of big.bin in the throttled run (default min(size, 256MiB); quick 128MiB)")
    p.add_argument("--cluster", type=int, default=0, metavar="N",
                   help="N nodes in one cluster, --clients cold clients spread over them (only this phase "
                        "unless --only is given; --quick: 1 repetition, else 3)")
    p.add_argument("--only", default=None,
                   help=f"comma-separated phases to run (default all: {','.join(PHASES)}; warm runs cold too)")
    p.add_argument("--mirror-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a mirror config key, e.g. fill.connections_per_file=16 (repeatable)")
    p.add_argument("--json", default=str(REPO_ROOT / "bench-results" / "latest.json"), help="JSON output file")
    p.add_argument("--binary", type=Path, default=REPO_ROOT / "target" / "release" / "hubcache")
    p.add_argument("--python", type=Path, default=REPO_ROOT / ".venv" / "bin" / "python",
                   help="python with huggingface_hub, for snapshot_download")
    p.add_argument("--tmp-dir", help="where the temporary run directory goes (default: system temp dir)")
    p.add_argument("--no-nginx", action="store_true", help="use the emulator's content endpoint as the static server; skips the nginxcache phase")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    p.add_argument("--cmdline", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.size = args.size or (128 * MiB if q else GiB)
    args.reps = args.reps or (5 if q else 7)
    args.reps_multi = args.reps_multi or (3 if q else 5)
    args.reps_snapshot = args.reps_snapshot or (2 if q else 5)
    args.reps_far = args.reps_far or (1 if q else 3)
    try:
        args.far_delays = [int(x) for x in args.far_delays.split(",") if x.strip()]
    except ValueError:
        p.error("--far-delays: comma-separated whole numbers of milliseconds")
    args.reps_throttled = 1 if q else 3
    args.reps_throttled_multi = 1
    args.throttled_size = args.throttled_size or min(args.size, 128 * MiB if q else 256 * MiB)
    args.mirror_overrides = parse_set(args.mirror_set)
    if args.cluster and args.cluster < 2:
        p.error("--cluster: at least 2 nodes")
    args.reps_cluster = 1 if q else 3
    if args.only is None:
        args.only = "" if args.cluster else ",".join(PHASES)
    args.only = set(filter(None, args.only.split(",")))
    if args.only - set(PHASES):
        p.error(f"--only: unknown phase(s) {', '.join(sorted(args.only - set(PHASES)))} (choose from {', '.join(PHASES)})")
    args.cmdline = args.cmdline or " ".join(["scripts/bench", *argv])
    if args.size < 2 * MiB:
        p.error("--size must be at least 2MiB")
    if not args.binary.exists():
        p.error(f"{args.binary} not found (scripts/bench builds it)")

    mi, ver = machine_info(), versions(args)
    print(f"command: {args.cmdline}   (in {REPO_ROOT})")
    print(f"machine: {mi['nproc']} CPUs ({mi['cpu']}), {mi['memory']} RAM, Linux {mi['kernel']}")
    print(f"hubcache {ver['hubcache_git']} ({args.binary}), {ver['curl']}, huggingface_hub {ver['huggingface_hub']}")
    print(f"big.bin {human_size(args.size)}; reps: {args.reps} single-client, {args.reps_multi} x "
          f"{args.clients} clients, {args.reps_snapshot} snapshot; throttled run: "
          + (f"{human_size(args.throttled_size)} at {human_size(args.cdn_rate)}/s per CDN connection"
             if args.cdn_rate else "off")
          + (f"; mirror overrides {json.dumps(args.mirror_overrides)}" if args.mirror_overrides else ""))
    signal.signal(signal.SIGTERM, _interrupted)
    t0 = time.monotonic()
    rc = Bench(args).run()
    print(f"total {time.monotonic() - t0:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
