"""The Rust `hf-hub` crate through the mirror: 0.4 (`api::sync` on ureq, `api::tokio` on reqwest,
the version candle, text-embeddings-inference and mistral.rs pin) and 1.x (`HFClient`,
`HFClientSync`, with hf-xet linked in). Each API downloads the same files twice through a fresh
mirror, into two fresh client caches: cold (the mirror fetches from the emulator) and warm (no
file byte moves upstream). Every file must equal the emulator's bytes.

The client is tests/clients/hf-hub-client, a separate Cargo project built here with its own
target dir (the first build takes a few minutes; it needs only the crates.io registry).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers import REPO_ROOT, client_env, file_sha256

CLIENT_DIR = REPO_ROOT / "tests" / "clients" / "hf-hub-client"
CLIENT_TARGET = CLIENT_DIR / "target"

# (repo type, repo id, revision, ops); an op is a file path or "@snapshot". Revision "@dev" is
# replaced by the commit sha of `dev`.
COMMON = [
    ("model", "acme/tiny-model", "main", ["config.json", "model.safetensors", "sub/dir/notes.txt",
                                          "tokenizer.json"]),
    ("model", "acme/tiny-model", "refs/pr/1", ["config.json"]),
    ("model", "acme/tiny-model", "v1.0", ["config.json", "model.safetensors"]),
    ("model", "acme/tiny-model", "@dev", ["extra.bin"]),
    ("model", "tinyllama", "main", ["@snapshot"]),
    ("model", "acme/xet-model", "main", ["@snapshot"]),
    ("model", "acme/old-name", "main", ["config.json"]),
    ("dataset", "acme/tiny-dataset", "refs/convert/parquet", ["data/train.parquet", "data/test.csv"]),
    ("space", "acme/tiny-space", "main", ["app.py"]),
    # 48 MiB: hf-hub 0.4's tokio API fetches it in parallel 10 MB ranged chunks (the last one
    # asks for a byte past the end)
    ("model", "acme/big-model", "main", ["big.bin"]),
]
# hf-hub 0.4 cannot fetch these from any server, huggingface.co included (docs/clients.md): it
# puts file names into URLs without percent-encoding them, and probes a file's size with
# `Range: bytes=0-0`, which a 0-byte file cannot satisfy (416).
V1_ONLY = [
    ("model", "acme/tiny-model", "main", ["@snapshot", "weird name +#%é.txt", "empty.txt"]),
]
APIS = {"sync": COMMON, "tokio": COMMON, "async": COMMON + V1_ONLY, "blocking": COMMON + V1_ONLY}


@pytest.fixture(scope="session")
def hf_hub_client() -> str:
    """Build tests/clients/hf-hub-client (a no-op when it is up to date)."""
    env = {**os.environ, "CARGO_TARGET_DIR": str(CLIENT_TARGET)}
    p = subprocess.run(["cargo", "build", "--locked", "--quiet", "--manifest-path", str(CLIENT_DIR / "Cargo.toml")],
                       env=env, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        pytest.fail(f"building {CLIENT_DIR} failed:\n{p.stderr[-6000:]}")
    binary = CLIENT_TARGET / "debug" / "hf-hub-client"
    assert binary.is_file(), binary
    return str(binary)


def run_rust_client(binary: str, endpoint: str, hf_home, api: str, repo_type: str, repo: str, rev: str,
                    ops: list[str]) -> list[dict]:
    # ureq (hf-hub 0.4's sync API) sends every request to ALL_PROXY/HTTPS_PROXY/HTTP_PROXY and
    # ignores NO_PROXY, so the refusing-proxy sandbox cannot apply to it; it only ever learns
    # the mirror's address. reqwest matches NO_PROXY entries by host name only.
    sandbox = api != "sync"
    extra = {"NO_PROXY": "localhost", "no_proxy": "localhost"} if sandbox else None
    env = client_env(endpoint, hf_home, extra=extra, sandbox=sandbox)
    p = subprocess.run([binary, api, repo_type, repo, rev, *ops], env=env, capture_output=True, text=True,
                       timeout=180, stdin=subprocess.DEVNULL)
    results = [json.loads(line[len("RESULT "):]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert p.returncode == 0 and len(results) == len(ops), \
        f"hf-hub-client {api} {repo}@{rev} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return results


def expected_for(emu, repo: str, rev: str, op: str) -> dict[str, str]:
    source = "acme/new-name" if repo == "acme/old-name" else repo
    files = emu.files(source, rev)
    if op == "@snapshot":
        return {path: f["sha256"] for path, f in files.items()}
    return {op: files[op]["sha256"]}


def download_everything(binary: str, endpoint: str, hf_home, api: str, emu) -> list[str]:
    """Run every op of `api`; returns the mismatches (empty when every file is byte-exact)."""
    failures = []
    for repo_type, repo, rev, ops in APIS[api]:
        if rev == "@dev":
            rev = emu.commit(repo, "dev")
        for op, result in zip(ops, run_rust_client(binary, endpoint, hf_home, api, repo_type, repo, rev, ops)):
            what = f"{api} {repo_type}:{repo}@{rev} {op}"
            if not result["ok"]:
                failures.append(f"{what}: {result['error'][:400]}")
                continue
            got = {path: file_sha256(local) for path, local in result["files"].items()}
            if got != expected_for(emu, repo, rev, op):
                failures.append(f"{what}: wrong files or bytes: {sorted(got)}")
    return failures


@pytest.mark.parametrize("api", list(APIS))
def test_rust_hf_hub_cold_then_warm_byte_exact(api, hf_hub_client, emu, mirror_factory, tmp_path):
    mirror = mirror_factory(emu)
    endpoint = f"http://localhost:{mirror.port}"
    cold = download_everything(hf_hub_client, endpoint, tmp_path / "cold", api, emu)
    assert not cold, "cold:\n" + "\n".join(cold)
    stats = emu.stats()
    assert stats["cdn_bytes"] > 0, "the cold run moved no bytes from the upstream CDN"
    assert stats["by_route"]["xet_token"] == 0 and stats["by_route"]["cas"] == 0, "a client went to Xet"
    assert stats["auth_leaks"] == 0

    emu.reset()
    warm = download_everything(hf_hub_client, endpoint, tmp_path / "warm", api, emu)
    assert not warm, "warm:\n" + "\n".join(warm)
    stats = emu.stats()
    assert stats["cdn_bytes"] == 0 and stats["hub_file_bytes"] == 0, \
        f"the warm run fetched file bytes upstream: {[e for e in stats['recent'] if e['bytes']]}"
    assert stats["by_route"]["xet_token"] == 0 and stats["by_route"]["cas"] == 0
