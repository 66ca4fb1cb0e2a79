"""`hubcache cache gc [--dry-run]` and `hubcache cache ls` (issue 7), run beside the running
mirror: the dry run says what would go, in policy order, with sizes and what is left out and
why; the real run evicts down to the budget and never deletes a file the mirror is serving;
ls lists the cached repos and files by size or by last read."""

from __future__ import annotations

import json
import subprocess
import threading
import time

from evict_helpers import download, make_repo, on_disk, repo_arg
from helpers import MiB, wait_until

REPO = "acme/cli"


def cli(mirror, *args: str, config=None) -> subprocess.CompletedProcess:
    return subprocess.run([mirror.binary, "cache", *args, "--config", str(config or mirror.config_path)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def with_eviction(mirror, path, **keys):
    """The mirror's config with other eviction settings, written to `path`."""
    config = json.loads(mirror.config_path.read_text())
    config.setdefault("plugins", {})["eviction"] = keys
    path.write_text(json.dumps(config))
    return path


class Holder(threading.Thread):
    """Keeps a download of one file open through the mirror until released."""

    def __init__(self, mirror, path):
        super().__init__(daemon=True)
        self.mirror, self.path = mirror, path
        self.release = threading.Event()
        self.reading = threading.Event()
        self.data = b""

    def run(self):
        with self.mirror.resolve("GET", REPO, "main", self.path, stream=True, timeout=60,
                                 headers={"User-Agent": "holder"}) as r:
            parts = []
            for part in r.iter_content(64 * 1024):
                parts.append(part)
                self.reading.set()
                self.release.wait(60)
            self.data = b"".join(parts)


def test_gc_dry_run_says_what_would_go_and_gc_evicts_beside_the_running_mirror(
        tmp_path, emu_factory, mirror_factory):
    files = make_repo(tmp_path / "repo", {"old.bin": 2 * MiB, "mid.bin": MiB, "new.bin": MiB,
                                          "held.bin": 24 * MiB}, seed=31)
    pinned = make_repo(tmp_path / "pinned", {"keep.bin": MiB}, seed=32)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "repo") + repo_arg("acme/keep", tmp_path / "pinned"))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"})
    assert download(mirror, REPO, "held.bin") == files["held.bin"]
    for name in ["old.bin", "mid.bin", "new.bin"]:
        assert download(mirror, REPO, name) == files[name]
        time.sleep(0.05)
    assert download(mirror, "acme/keep", "keep.bin") == pinned["keep.bin"]
    time.sleep(1)
    # The running mirror serves held.bin (the least recently read) the whole time.
    holder = Holder(mirror, "held.bin")
    holder.start()
    try:
        assert holder.reading.wait(30)
        # 29 MiB cached; 1.5 MiB over. large_first order: held.bin (served: stays), old, ...
        config = with_eviction(mirror, tmp_path / "budget.yaml", policy="large_first",
                               max_size=55 * MiB // 2, pin=["acme/keep"])
        dry = cli(mirror, "gc", "--dry-run", config=config)
        assert dry.returncode == 0, dry.stderr
        out = dry.stdout
        assert "policy large_first" in out and "budget: free 1.5 MiB" in out, out
        assert "(reason budget)" in out, out
        lines = [line for line in out.splitlines() if "would evict" in line]
        assert [line.split("models/acme/cli: ")[1] for line in lines] == ["old.bin"], out
        assert "2.0 MiB" in lines[0] and "2.0 MiB on disk" in lines[0], out
        assert "1 in use" in out and "1 pinned" in out, out
        assert all(on_disk(mirror.cache_dir, d) for d in files.values()), "a dry run deleted"

        real = cli(mirror, "gc", config=config)
        assert real.returncode == 0, (real.stdout, real.stderr)
        assert "evicted" in real.stdout and "1 in use" in real.stdout, real.stdout
        assert not on_disk(mirror.cache_dir, files["old.bin"])
        assert on_disk(mirror.cache_dir, files["mid.bin"]) and on_disk(mirror.cache_dir, files["new.bin"]), \
            "gc evicted more than needed"
        assert on_disk(mirror.cache_dir, files["held.bin"]), "gc deleted a file being served"
        assert on_disk(mirror.cache_dir, pinned["keep.bin"]), "gc deleted a pinned file"
    finally:
        holder.release.set()
        holder.join(60)
    assert holder.data == files["held.bin"]
    # The mirror serves the evicted files again, as normal misses.
    assert download(mirror, REPO, "old.bin") == files["old.bin"]


def test_ls_lists_repos_and_files_by_size_and_by_last_read(tmp_path, emu_factory, mirror_factory):
    files = make_repo(tmp_path / "repo", {"small.bin": MiB, "large.bin": 3 * MiB}, seed=33)
    other = make_repo(tmp_path / "other", {"data.bin": 2 * MiB}, seed=34)
    emu = emu_factory(extra=repo_arg(REPO, tmp_path / "repo")
                      + repo_arg("acme/other", tmp_path / "other", "dataset"))
    mirror = mirror_factory(emu, cache={"block_size": "1MiB"})
    assert download(mirror, REPO, "large.bin") == files["large.bin"]
    r = mirror.resolve("GET", "acme/other", "main", "data.bin", repo_type="dataset")
    assert r.status_code == 200 and r.content == other["data.bin"]
    time.sleep(0.05)
    for agent in ["a", "b"]:              # two downloads
        assert download(mirror, REPO, "small.bin", agent=agent) == files["small.bin"]
    mirror.stop()                         # the index is saved at shutdown; ls reads it
    by_size = cli(mirror, "ls")
    assert by_size.returncode == 0, by_size.stderr
    lines = by_size.stdout.splitlines()
    assert lines[0].startswith("3 files cached, 6.0 MiB on disk"), by_size.stdout
    repos = [line for line in lines if line.endswith(("models/acme/cli", "datasets/acme/other"))]
    assert [line.split()[-1] for line in repos] == ["models/acme/cli", "datasets/acme/other"], \
        by_size.stdout
    assert repos[0].split()[:3] == ["2", "4.0", "MiB"], by_size.stdout
    cli_files = [line.split() for line in lines if ".bin  (commit" in line]
    assert [f[7] for f in cli_files] == ["large.bin", "small.bin", "data.bin"], by_size.stdout
    assert [f[6] for f in cli_files] == ["1", "2", "1"], f"downloads: {by_size.stdout}"
    by_read = cli(mirror, "ls", "--sort", "last-read")
    assert by_read.returncode == 0, by_read.stderr
    read_lines = by_read.stdout.splitlines()
    repos = [line.split()[-1] for line in read_lines
             if line.endswith(("models/acme/cli", "datasets/acme/other"))]
    assert repos == ["models/acme/cli", "datasets/acme/other"], by_read.stdout
    order = [line.split()[7] for line in read_lines if ".bin  (commit" in line]
    assert order == ["small.bin", "large.bin", "data.bin"], by_read.stdout
