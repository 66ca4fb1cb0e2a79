"""Soak load for hubcache: many concurrent keep-alive connections for a fixed time, mixing
warm and cold files, ranges, HEAD, API routes, the root page and aborted downloads, with every
answer checked (status, length, content hash or exact range bytes). While it runs, the mirror's
RSS and descriptors are sampled; afterwards all client connections are closed and the mirror's
descriptors are counted again.

Used by tests/e2e/test_soak.py (60 s inside scripts/test) and by scripts/soak (10 minutes).
Plain asyncio and raw HTTP/1.1: no dependency beyond the standard library.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

REQUEST_TIMEOUT = 60.0
ABORT_AFTER = 256 * 1024


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file soft limit (children inherit it); returns the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, wanted))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------------------------------
# the mirror process: RSS and descriptors
# ------------------------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _sockets(ports_local: set[int]) -> dict[str, str]:
    """inode -> 'listener' | 'client' | 'other' for TCP sockets, by local port."""
    kinds = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local_port = int(parts[1].rsplit(":", 1)[1], 16)
                    if local_port in ports_local:
                        kinds[parts[9]] = "listener" if parts[3] == "0A" else "client"
                    else:
                        kinds[parts[9]] = "upstream"
        except OSError:
            continue
    return kinds


def descriptors(pid: int, port: int) -> Counter:
    """The mirror's open descriptors by kind: client / listener / upstream sockets, files, other."""
    kinds = _sockets({port})
    out: Counter = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out[kinds.get(link[8:-1], "other-socket")] += 1
        elif link.startswith("/"):
            out["file"] += 1
        else:
            out["other"] += 1
    out["total"] = sum(out.values())
    return out


# ------------------------------------------------------------------------------------------
# what to request
# ------------------------------------------------------------------------------------------

@dataclass
class FileRef:
    path: str
    size: int
    sha256: str


@dataclass
class Workload:
    warm: list[FileRef]
    cold: list[FileRef]
    big: FileRef
    big_bytes: bytes
    api: list[tuple[str, str, bytes]]
    cold_next: int = 0

    @classmethod
    def from_emulator(cls, emu, seed: int = 1) -> "Workload":
        def refs(repo: str) -> list[FileRef]:
            return [FileRef(f"/{repo}/resolve/main/{quote(p)}", f["size"], f["sha256"])
                    for p, f in sorted(emu.files(repo, "main").items())]

        rng = random.Random(seed)
        cold = refs("acme/many-files") + refs("acme/snapshot-300")
        rng.shuffle(cold)
        big_entry = emu.file("acme/big-model", "main", "big.bin")
        big = FileRef("/acme/big-model/resolve/main/big.bin", big_entry["size"], big_entry["sha256"])
        form = b"paths=config.json&paths=README.md&expand=false"
        api = [
            ("GET", "/api/models/acme/tiny-model", b""),
            ("GET", "/api/models/acme/tiny-model/revision/main", b""),
            ("GET", "/api/models/acme/many-files/tree/main/dir0", b""),
            ("GET", "/api/models/acme/tiny-model/refs", b""),
            ("GET", "/api/datasets/acme/tiny-dataset", b""),
            ("POST", "/api/models/acme/tiny-model/paths-info/main", form),
        ]
        return cls(refs("acme/tiny-model"), cold, big, emu.content(big.sha256), api)

    def next_cold(self) -> FileRef:
        ref = self.cold[self.cold_next % len(self.cold)]
        self.cold_next += 1
        return ref


# ------------------------------------------------------------------------------------------
# raw HTTP/1.1 over asyncio streams
# ------------------------------------------------------------------------------------------

class Unexpected(Exception):
    pass


async def send_request(writer, method: str, path: str, headers: dict | None = None,
                       body: bytes = b"") -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: soak", "User-Agent: hubcache-soak"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Content-Type: application/x-www-form-urlencoded")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()


async def read_head(reader) -> tuple[int, dict]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader, headers: dict) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return await reader.readexactly(int(headers.get("content-length", "0")))


# ------------------------------------------------------------------------------------------
# the load
# ------------------------------------------------------------------------------------------

OPS = [("warm", 30), ("cold", 10), ("head", 15), ("range", 15), ("api", 17), ("home", 5),
       ("abort", 8)]


@dataclass
class Stats:
    by_op: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    connects: int = 0
    open_now: int = 0
    open_peak: int = 0

    def error(self, op: str, what: str) -> None:
        self.errors[op] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{op}: {what}")


async def one_op(op: str, w: Workload, rng: random.Random, reader, writer) -> bool:
    """Runs one operation; raises Unexpected on a wrong answer. Returns False when the
    connection must be closed (an aborted download, or the server asked to close)."""
    if op in ("warm", "cold"):
        ref = rng.choice(w.warm) if op == "warm" else w.next_cold()
        await send_request(writer, "GET", ref.path)
        status, headers = await read_head(reader)
        body = await read_body(reader, headers)
        if status != 200 or hashlib.sha256(body).hexdigest() != ref.sha256:
            raise Unexpected(f"GET {ref.path}: {status}, {len(body)} bytes")
    elif op == "head":
        ref = rng.choice(w.warm + [w.big])
        await send_request(writer, "HEAD", ref.path)
        status, headers = await read_head(reader)
        if status != 200 or int(headers.get("content-length", -1)) != ref.size:
            raise Unexpected(f"HEAD {ref.path}: {status} {headers.get('content-length')}")
    elif op == "range":
        start = rng.randrange(w.big.size)
        end = min(w.big.size - 1, start + rng.randrange(1, 256 * 1024))
        await send_request(writer, "GET", w.big.path, {"Range": f"bytes={start}-{end}"})
        status, headers = await read_head(reader)
        body = await read_body(reader, headers)
        if status != 206 or body != w.big_bytes[start:end + 1]:
            raise Unexpected(f"range {start}-{end}: {status}, {len(body)} bytes")
    elif op == "api":
        method, path, form = rng.choice(w.api)
        await send_request(writer, method, path, body=form)
        status, headers = await read_head(reader)
        body = await read_body(reader, headers)
        if status != 200 or not body.startswith((b"{", b"[")):
            raise Unexpected(f"{method} {path}: {status} {body[:80]!r}")
    elif op == "home":
        await send_request(writer, "GET", "/")
        status, headers = await read_head(reader)
        body = await read_body(reader, headers)
        if status != 200 or b"HF_ENDPOINT" not in body:
            raise Unexpected(f"GET /: {status}")
    elif op == "abort":
        await send_request(writer, "GET", w.big.path)
        status, headers = await read_head(reader)
        if status != 200:
            raise Unexpected(f"GET big.bin: {status}")
        await reader.readexactly(min(ABORT_AFTER, w.big.size))
        return False
    return headers.get("connection", "").lower() != "close"


async def worker(host: str, port: int, w: Workload, stats: Stats, deadline: float,
                 think: tuple[float, float], seed: int) -> None:
    rng = random.Random(seed)
    names = [name for name, _ in OPS]
    weights = [weight for _, weight in OPS]
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (OSError, asyncio.TimeoutError) as e:
            stats.error("connect", repr(e))
            await asyncio.sleep(1)
            continue
        stats.connects += 1
        stats.open_now += 1
        stats.open_peak = max(stats.open_peak, stats.open_now)
        try:
            while time.monotonic() < deadline:
                op = rng.choices(names, weights)[0]
                try:
                    keep = await asyncio.wait_for(one_op(op, w, rng, reader, writer), REQUEST_TIMEOUT)
                except Unexpected as e:
                    stats.error(op, str(e))
                    break
                except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        asyncio.TimeoutError, ValueError) as e:
                    stats.error(op, repr(e))
                    break
                stats.by_op[op] += 1
                if not keep:
                    break
                await asyncio.sleep(rng.uniform(*think))
        finally:
            stats.open_now -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


@dataclass
class Report:
    duration: float
    connections: int
    stats: Stats
    rss_mib: list[tuple[float, float]]     # (seconds since start, MiB)
    fds_before: Counter
    fds_after: Counter

    @property
    def requests(self) -> int:
        return sum(self.stats.by_op.values())

    @property
    def error_count(self) -> int:
        return sum(self.stats.errors.values())

    @property
    def final_rss(self) -> float:
        return self.rss_mib[-1][1] if self.rss_mib else 0.0

    def rss_growth_second_half(self) -> float:
        """Max minus min RSS over the second half of the run, in MiB."""
        half = [mib for t, mib in self.rss_mib if t >= self.duration / 2]
        return (max(half) - min(half)) if half else 0.0

    def summary(self) -> str:
        rss = ", ".join(f"{t:.0f}s:{mib:.0f}" for t, mib in self.rss_mib[:: max(1, len(self.rss_mib) // 12)])
        return (f"{self.connections} connections for {self.duration:.0f}s: {self.requests} requests "
                f"({dict(self.stats.by_op)}), {self.error_count} errors {dict(self.stats.errors)} "
                f"{self.stats.examples[:5]}; connects {self.stats.connects}, peak open "
                f"{self.stats.open_peak}; RSS MiB {rss}; final {self.final_rss:.1f} MiB, "
                f"second-half spread {self.rss_growth_second_half():.1f} MiB; descriptors before "
                f"{dict(self.fds_before)}, after {dict(self.fds_after)}")


async def _sample(pid: int, start: float, deadline: float, out: list) -> None:
    while time.monotonic() < deadline:
        try:
            out.append((time.monotonic() - start, rss_kib(pid) / 1024))
        except OSError:
            return
        await asyncio.sleep(2)


async def _run(host: str, port: int, pid: int, w: Workload, connections: int, duration: float,
               think: tuple[float, float], ramp: float) -> tuple[Stats, list]:
    stats = Stats()
    start = time.monotonic()
    deadline = start + duration
    rss: list = []
    sampler = asyncio.create_task(_sample(pid, start, deadline, rss))
    tasks = []
    for i in range(connections):
        tasks.append(asyncio.create_task(worker(host, port, w, stats, deadline, think, seed=i)))
        await asyncio.sleep(ramp / connections)
    await asyncio.gather(*tasks)
    await sampler
    rss.append((time.monotonic() - start, rss_kib(pid) / 1024))
    return stats, rss


def run(mirror, emu, connections: int = 1000, duration: float = 60,
        think: tuple[float, float] = (2.0, 8.0), ramp: float = 10.0,
        settle: float = 15.0) -> Report:
    """Soaks `mirror` (a helpers.Mirror in front of `emu`) and returns the report."""
    raise_nofile(connections * 2 + 1024)
    w = Workload.from_emulator(emu)
    pid = mirror.proc.pid
    fds_before = descriptors(pid, mirror.port)
    stats, rss = asyncio.run(_run("127.0.0.1", mirror.port, pid, w, connections, duration, think, ramp))
    # Every client connection is closed now: the mirror must let go of all of them.
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline and descriptors(pid, mirror.port)["client"] > 0:
        time.sleep(0.2)
    return Report(duration, connections, stats, rss, fds_before, descriptors(pid, mirror.port))


def main() -> int:
    import argparse
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    from helpers import MiB, Emulator, Mirror

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--think-min", type=float, default=1.0)
    p.add_argument("--think-max", type=float, default=4.0)
    p.add_argument("--big-size", type=int, default=256 * MiB)
    p.add_argument("--max-rss-mib", type=float, default=100)
    p.add_argument("--max-rss-spread-mib", type=float, default=16)
    args = p.parse_args()
    raise_nofile(args.connections * 2 + 1024)
    work = Path(tempfile.mkdtemp(prefix="hubcache-soak-"))
    emu = Emulator(work / "emu", big_size=args.big_size)
    mirror = Mirror(args.binary, work / "mirror", [emu.hub], name="soak-mirror")
    ok = False
    try:
        report = run(mirror, emu, args.connections, args.duration,
                     (args.think_min, args.think_max), ramp=min(60, args.duration / 10))
        # Idle upstream connections stay pooled for 90 s (reqwest) plus its eviction interval;
        # after that every descriptor the load opened must be gone.
        print("waiting up to 150 s for idle upstream connections to expire ...", flush=True)
        deadline = time.monotonic() + 150
        after_idle = descriptors(mirror.proc.pid, mirror.port)
        while time.monotonic() < deadline and after_idle["total"] > report.fds_before["total"]:
            time.sleep(5)
            after_idle = descriptors(mirror.proc.pid, mirror.port)
        print(report.summary())
        print(f"descriptors after the idle wait: {dict(after_idle)}")
        failures = []
        if report.error_count:
            failures.append(f"{report.error_count} errors")
        if report.final_rss >= args.max_rss_mib:
            failures.append(f"final RSS {report.final_rss:.1f} MiB")
        if report.rss_growth_second_half() > args.max_rss_spread_mib:
            failures.append(f"RSS not flat ({report.rss_growth_second_half():.1f} MiB spread)")
        if after_idle["client"] or after_idle["total"] > report.fds_before["total"]:
            failures.append("descriptors leaked")
        if not mirror.running:
            failures.append("the mirror died")
        ok = not failures
        print("OK" if ok else "FAIL: " + "; ".join(failures))
        return 0 if ok else 1
    finally:
        mirror.stop()
        emu.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs in {work}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
