"""Both huggingface_hub generations and their CLIs, cold and warm, byte-exact, through the mirror
only: the newest release (.venv, httpx, hf_xet installed) and 0.36 (.venv-legacy, `requests`,
hf_xet and hf_transfer installed, HF_HUB_ENABLE_HF_TRANSFER=1).

Cold: a fresh mirror fetches from the emulator. Warm: the same mirror, a fresh client cache
(and local dir): no file byte moves upstream. Clients are sandboxed (helpers.client_env): every
origin but the mirror's goes to a proxy that refuses connections.
"""

from __future__ import annotations

import subprocess

import pytest

from helpers import LEGACY_VENV_BIN, VENV_BIN, client_env, expected_files, run_client, tree_files

GENERATIONS = {
    "newest": {"bin": VENV_BIN, "env": {}, "clis": ["hf"]},
    # requests (0.x) honours NO_PROXY host:port entries only for names, so the legacy client
    # reaches the mirror as localhost (see test_legacy_clients.py)
    "0.36": {"bin": LEGACY_VENV_BIN, "env": {"HF_HUB_ENABLE_HF_TRANSFER": "1"}, "clis": ["hf", "huggingface-cli"]},
}

# (repo type, repo, revision, path)
FILES = [
    ("model", "acme/tiny-model", "main", "config.json"),
    ("model", "acme/tiny-model", "main", "model.safetensors"),
    ("model", "acme/tiny-model", "refs/pr/1", "config.json"),
    ("model", "acme/tiny-model", "v1.0", "sub/dir/notes.txt"),
    ("model", "acme/xet-model", "main", "model.safetensors"),
    ("model", "tinyllama", "main", "model.bin"),
    ("model", "acme/old-name", "main", "model.safetensors"),
    ("dataset", "acme/tiny-dataset", "refs/convert/parquet", "data/train.parquet"),
    ("space", "acme/tiny-space", "main", "app.py"),
    ("model", "acme/big-model", "main", "big.bin"),     # 48 MiB: hf_transfer splits it (0.36)
]


def generation(name: str) -> dict:
    gen = GENERATIONS[name]
    if not (gen["bin"] / "python").exists():
        pytest.fail(f"{gen['bin'].parent} is missing: scripts/test creates it")
    return gen


def endpoint(name: str, mirror) -> str:
    return f"http://localhost:{mirror.port}" if name == "0.36" else mirror.url


def assert_no_xet(emu) -> None:
    stats = emu.stats()
    assert stats["by_route"]["xet_token"] == 0, "a client asked for a Xet token"
    assert stats["by_route"]["cas"] == 0, "a client reached the Xet CAS"
    assert stats["auth_leaks"] == 0


def assert_no_file_bytes_upstream(emu) -> None:
    stats = emu.stats()
    assert stats["cdn_bytes"] == 0 and stats["hub_file_bytes"] == 0, \
        f"the warm run fetched file bytes upstream: {[e for e in stats['recent'] if e['bytes']]}"


@pytest.mark.parametrize("name", list(GENERATIONS))
def test_hf_xet_is_enabled_yet_never_used_through_the_mirror(name, emu, mirror_factory, tmp_path):
    gen = generation(name)
    check = subprocess.run(
        [str(gen["bin"] / "python"), "-c",
         "import hf_xet; from huggingface_hub.utils._runtime import is_xet_available; print(is_xet_available())"],
        env=client_env("http://127.0.0.1:9", tmp_path / "check", extra=gen["env"]), capture_output=True, text=True,
        timeout=60)
    assert check.stdout.strip() == "True", f"hf_xet is not installed or not enabled:\n{check.stderr[-2000:]}"
    op = {"op": "download", "repo_id": "acme/xet-model", "filename": "model.safetensors"}
    # Control: straight from the emulator (Xet headers intact) the same client goes to Xet.
    [direct] = run_client(emu.hub, tmp_path / "direct", [op], sandbox=False, extra_env=gen["env"],
                          python=gen["bin"] / "python")
    assert not direct["ok"], "the emulator has no CAS: a Xet download cannot succeed"
    assert emu.stats()["by_route"]["xet_token"] >= 1, f"the client did not try Xet: {direct}"
    emu.reset()
    mirror = mirror_factory(emu)
    results = run_client(endpoint(name, mirror), tmp_path / "mirror", [
        op, {"op": "snapshot", "repo_id": "acme/xet-model"}], extra_env=gen["env"], python=gen["bin"] / "python")
    for result in results:
        assert result["ok"], result
    assert results[0]["sha256"] == emu.file("acme/xet-model", "main", "model.safetensors")["sha256"]
    assert results[1]["files"] == expected_files(emu, "acme/xet-model", "main")
    assert_no_xet(emu)


@pytest.mark.parametrize("name", list(GENERATIONS))
def test_hf_hub_download_cold_then_warm(name, emu, mirror_factory, tmp_path):
    gen = generation(name)
    mirror = mirror_factory(emu)
    ops = [{"op": "download", "repo_type": t, "repo_id": r, "revision": rev, "filename": p} for t, r, rev, p in FILES]
    for phase in ("cold", "warm"):
        emu.reset()
        results = run_client(endpoint(name, mirror), tmp_path / phase, ops, extra_env=gen["env"],
                             python=gen["bin"] / "python", timeout=240)
        failures = []
        for (repo_type, repo, rev, path), result in zip(FILES, results):
            source = "acme/new-name" if repo == "acme/old-name" else repo
            what = f"{phase} {repo_type}:{repo}@{rev}/{path}"
            if not result["ok"]:
                failures.append(f"{what}: {result['error']}: {result['message'][:300]}")
            elif result["sha256"] != emu.file(source, rev, path)["sha256"]:
                failures.append(f"{what}: wrong bytes")
        assert not failures, "\n".join(failures)
        assert_no_xet(emu)
        if phase == "warm":
            assert_no_file_bytes_upstream(emu)


@pytest.mark.parametrize("name,cli", [(n, c) for n, g in GENERATIONS.items() for c in g["clis"]])
def test_cli_download_cold_then_warm(name, cli, emu, mirror_factory, tmp_path):
    gen = generation(name)
    mirror = mirror_factory(emu)
    jobs = [  # (args, local dir name, expected files)
        (["acme/xet-model"], "xet", expected_files(emu, "acme/xet-model", "main")),
        (["acme/tiny-dataset", "--repo-type", "dataset"], "dataset", expected_files(emu, "acme/tiny-dataset", "main")),
        # one pattern: 2.x takes --include once per value, 0.36 several values after one --include
        (["acme/tiny-model", "--revision", "v1.0", "--include", "*.safetensors"], "v1",
         {p: s for p, s in expected_files(emu, "acme/tiny-model", "v1.0").items() if p.endswith(".safetensors")}),
    ]
    for phase in ("cold", "warm"):
        emu.reset()
        env = client_env(endpoint(name, mirror), tmp_path / phase / "hf_home", extra=gen["env"])
        for args, dirname, want in jobs:
            dest = tmp_path / phase / dirname
            p = subprocess.run([str(gen["bin"] / cli), "download", *args, "--local-dir", str(dest)], env=env,
                               capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
            assert p.returncode == 0, f"{phase} {cli} download {args}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
            assert tree_files(dest) == want, f"{phase} {cli} download {args}: wrong files or bytes"
        assert_no_xet(emu)
        if phase == "warm":
            assert_no_file_bytes_upstream(emu)
