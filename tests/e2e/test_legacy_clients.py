"""The previous client generation (huggingface_hub 0.36, `requests`-based) and hf_transfer.

0.36 follows only relative redirects on HEAD, lists snapshot files from repo-info `siblings`,
and with `HF_HUB_ENABLE_HF_TRANSFER=1` downloads through hf_transfer: many parallel ranged
GETs over one file. Runs with `.venv-legacy` (created by scripts/test).
"""

from __future__ import annotations

import pytest

from helpers import LEGACY_VENV_BIN, MiB, expected_files, run_client

LEGACY_PYTHON = LEGACY_VENV_BIN / "python"


def endpoint(mirror) -> str:
    """The mirror by host name: `requests` (0.x) honours NO_PROXY host:port entries only for
    names, not IP addresses, and the client sandbox relies on NO_PROXY."""
    return f"http://localhost:{mirror.port}"


@pytest.fixture(autouse=True)
def _legacy_venv_present():
    """A missing venv fails the tests instead of skipping them."""
    if not LEGACY_PYTHON.exists():
        pytest.fail(f"{LEGACY_PYTHON} is missing: scripts/test creates .venv-legacy")


def test_hf_transfer_parallel_ranges_over_a_cold_file_fill_it_once(emu_factory, mirror_factory, hf_home):
    emu = emu_factory(big_size=48 * MiB)
    mirror = mirror_factory(emu)
    entry = emu.file("acme/big-model", "main", "big.bin")
    [result] = run_client(endpoint(mirror), hf_home,
                          [{"op": "download", "repo_id": "acme/big-model", "filename": "big.bin"}],
                          extra_env={"HF_HUB_ENABLE_HF_TRANSFER": "1"}, python=LEGACY_PYTHON)
    assert result["ok"], result
    assert (result["sha256"], result["size"]) == (entry["sha256"], entry["size"])
    fetched = emu.cdn_bytes_for(entry["sha256"])
    assert fetched <= entry["size"] * 1.02, f"upstream sent {fetched} bytes for {entry['size']}"
    assert emu.stats()["auth_leaks"] == 0


def test_legacy_snapshot_download_through_the_mirror(emu, mirror_factory, hf_home):
    mirror = mirror_factory(emu)
    [result] = run_client(endpoint(mirror), hf_home,
                          [{"op": "snapshot", "repo_id": "acme/tiny-model"}], python=LEGACY_PYTHON)
    assert result["ok"], result
    assert result["files"] == expected_files(emu, "acme/tiny-model", "main")


def test_legacy_client_downloads_every_revision_form(emu, mirror_factory, hf_home):
    mirror = mirror_factory(emu)
    ops = [{"op": "download", "repo_id": "acme/tiny-model", "filename": "config.json", "revision": rev}
           for rev in ("main", "v1.0", "refs/pr/1", emu.commit("acme/tiny-model", "dev"))]
    ops.append({"op": "download", "repo_id": "acme/tiny-dataset", "filename": "data/train.parquet",
                "repo_type": "dataset"})
    results = run_client(endpoint(mirror), hf_home, ops, python=LEGACY_PYTHON)
    for op, result in zip(ops, results):
        assert result["ok"], (op, result)
        repo_type = "dataset" if op.get("repo_type") == "dataset" else "model"
        rev = op.get("revision", "main")
        wanted = emu.file(op["repo_id"], rev, op["filename"])
        assert result["sha256"] == wanted["sha256"], (op, repo_type)
