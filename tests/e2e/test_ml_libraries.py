"""`datasets` and `transformers` (newest releases, no torch; .venv-ml from
tests/requirements-ml.txt) through the mirror.

The test makes a real parquet dataset repo (pyarrow: two train shards, one test shard) and a
small model repo (a BERT config, a WordLevel tokenizer.json built with `tokenizers`), and the
emulator serves them (`--repo-dir`). Each library runs cold (a fresh mirror) and warm (the same
mirror, a fresh client cache: no file byte moves upstream), sandboxed so that it can reach only
the mirror. The files in the client's cache must equal the emulator's bytes, and the loaded
rows and token ids must equal what was made.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import HERE, REPO_ROOT, client_env, expected_files

ML_PYTHON = REPO_ROOT / ".venv-ml" / "bin" / "python"
ML_CLIENT = HERE / "ml_client.py"
DATASET = "acme/parquet-dataset"
MODEL = "acme/tiny-bert"


def run_ml(endpoint: str, hf_home, ops: list[dict]) -> list[dict]:
    if not ML_PYTHON.exists():
        pytest.fail(f"{ML_PYTHON} is missing: scripts/test creates .venv-ml from tests/requirements-ml.txt")
    env = client_env(endpoint, hf_home)
    p = subprocess.run([str(ML_PYTHON), str(ML_CLIENT), json.dumps(ops)], env=env, capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            results = json.loads(line[len("RESULT "):])
            for op, result in zip(ops, results):
                assert result["ok"], f"{op}: {result['error']}: {result['message']}\n{result['traceback']}"
            return results
    raise AssertionError(f"ml_client.py produced no result (rc={p.returncode})\n{p.stdout[-3000:]}\n{p.stderr[-4000:]}")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """The dataset and model repos on disk, and what they contain."""
    root = tmp_path_factory.mktemp("ml-repos")
    dataset, model = run_ml("http://127.0.0.1:9", root / "hf_home", [
        {"op": "make_dataset", "dir": str(root / "dataset")},
        {"op": "make_model", "dir": str(root / "model")}])
    return {"dataset_dir": root / "dataset", "model_dir": root / "model", "splits": dataset["splits"],
            "ids": model["ids"], "vocab_size": model["vocab_size"]}


@pytest.fixture
def ml_emu(made, emu_factory):
    return emu_factory(extra=("--repo-dir", f"dataset:{DATASET}={made['dataset_dir']}",
                              "--repo-dir", f"model:{MODEL}={made['model_dir']}"))


def assert_byte_exact(files: dict[str, str], want: dict[str, str], required: set[str]) -> None:
    assert required <= set(files), f"missing from the client cache: {sorted(required - set(files))}"
    wrong = sorted(p for p, sha in files.items() if want.get(p) != sha)
    assert not wrong, f"files differ from the emulator's bytes: {wrong}"


def assert_no_file_bytes_upstream(emu) -> None:
    stats = emu.stats()
    assert stats["cdn_bytes"] == 0 and stats["hub_file_bytes"] == 0, \
        f"the warm run fetched file bytes upstream: {[e for e in stats['recent'] if e['bytes']]}"


def test_datasets_load_dataset_of_a_parquet_repo_cold_then_warm(made, ml_emu, mirror_factory, tmp_path):
    mirror = mirror_factory(ml_emu)
    want = expected_files(ml_emu, DATASET, "main")
    shards = {p for p in want if p.endswith(".parquet")}
    assert len(shards) == 3, want
    for phase in ("cold", "warm"):
        ml_emu.reset()
        loaded, streamed = run_ml(mirror.url, tmp_path / phase, [
            {"op": "load_dataset", "repo_id": DATASET},
            {"op": "load_dataset", "repo_id": DATASET, "streaming": True}])
        assert loaded["splits"] == made["splits"], f"{phase}: load_dataset rows differ"
        assert streamed["splits"] == made["splits"], f"{phase}: streamed rows differ"
        assert_byte_exact(loaded["files"], want, shards)
        stats = ml_emu.stats()
        assert stats["by_route"]["xet_token"] == 0 and stats["auth_leaks"] == 0
        if phase == "cold":
            assert stats["cdn_bytes"] >= sum(ml_emu.file(DATASET, "main", p)["size"] for p in shards)
        else:
            assert_no_file_bytes_upstream(ml_emu)


def test_transformers_auto_config_and_tokenizer_cold_then_warm(made, ml_emu, mirror_factory, tmp_path):
    mirror = mirror_factory(ml_emu)
    want = expected_files(ml_emu, MODEL, "main")
    for phase in ("cold", "warm"):
        ml_emu.reset()
        config, tokenizer = run_ml(mirror.url, tmp_path / phase, [
            {"op": "auto_config", "repo_id": MODEL},
            {"op": "auto_tokenizer", "repo_id": MODEL}])
        assert (config["class"], config["model_type"], config["vocab_size"], config["hidden_size"]) == \
            ("BertConfig", "bert", made["vocab_size"], 32), config
        assert tokenizer["ids"] == made["ids"], f"{phase}: the tokenizer encodes differently"
        assert_byte_exact(tokenizer["files"], want, {"config.json", "tokenizer.json", "tokenizer_config.json"})
        stats = ml_emu.stats()
        assert stats["by_route"]["xet_token"] == 0 and stats["auth_leaks"] == 0
        if phase == "cold":
            assert stats["hub_file_bytes"] > 0
        else:
            assert_no_file_bytes_upstream(ml_emu)
