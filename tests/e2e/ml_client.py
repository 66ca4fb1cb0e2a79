"""Runs `datasets` and `transformers` in a fresh process of the .venv-ml interpreter (env set by
the caller, like hf_client.py).

Usage: python ml_client.py '<json list of ops>'
Ops:
  {"op": "make_dataset", "dir": D}   writes a parquet dataset repo (train: 2 shards, test: 1) into D
  {"op": "make_model", "dir": D}     writes config.json, tokenizer.json (built with `tokenizers`)
                                     and tokenizer_config.json into D
  {"op": "load_dataset", "repo_id": R, ...kwargs}   datasets.load_dataset (also streaming=True)
  {"op": "auto_config", "repo_id": R}               transformers.AutoConfig.from_pretrained
  {"op": "auto_tokenizer", "repo_id": R}            transformers.AutoTokenizer.from_pretrained
Prints one line "RESULT <json list>": per op {"ok": true, ...} or {"ok": false, "error", "message"}.
Datasets are reported as {split: {"rows", "digest"}} (digest: sha256 of the rows as JSON), so a
made dataset and a loaded one compare directly; the files the libraries downloaded are reported
as {repo path: sha256} from the client's hub cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from pathlib import Path

SENTENCE = "the mirror serves every client generation"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "mirror", "serves", "every", "client", "generation",
         "hub", "cache", "model", "dataset"]


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rows_digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def split_rows(n: int, offset: int) -> dict[str, list]:
    ids = list(range(offset, offset + n))
    return {"id": ids, "text": [f"row {i}: " + "lorem ipsum " * (i % 7) for i in ids],
            "label": [i % 3 for i in ids], "score": [i / 7 for i in ids]}


def make_dataset(dir: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(dir)
    (root / "data").mkdir(parents=True, exist_ok=True)
    shards = {"train": [(0, 6000), (6000, 6000)], "test": [(20000, 1500)]}
    out = {}
    for split, parts in shards.items():
        rows: list[dict] = []
        for index, (offset, n) in enumerate(parts):
            table = pa.table(split_rows(n, offset))
            pq.write_table(table, root / "data" / f"{split}-{index:05d}-of-{len(parts):05d}.parquet")
            rows.extend(table.to_pylist())
        out[split] = {"rows": len(rows), "digest": rows_digest(rows)}
    (root / "README.md").write_text("---\nlicense: mit\n---\n# parquet-dataset\n\nMade by the hubcache tests.\n")
    return {"splits": out}


def make_model(dir: str) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers

    root = Path(dir)
    root.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "pad_token": "[PAD]",
        "cls_token": "[CLS]", "sep_token": "[SEP]", "model_max_length": 64}, indent=2))
    (root / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": len(VOCAB), "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 64}, indent=2))
    return {"ids": tok.encode(SENTENCE).ids, "vocab_size": len(VOCAB)}


def hub_cache_files(repo_type: str, repo_id: str) -> dict[str, str]:
    """{repo path: sha256} of every file in the client's hub cache snapshots of one repo."""
    base = Path(os.environ["HF_HUB_CACHE"]) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    out: dict[str, str] = {}
    for snapshot in sorted(base.glob("*")):
        for path in sorted(snapshot.rglob("*")):
            if path.is_file():
                out[path.relative_to(snapshot).as_posix()] = sha256_file(path)
    return out


def load_dataset(repo_id: str, **kwargs) -> dict:
    import datasets

    loaded = datasets.load_dataset(repo_id, **kwargs)
    splits = {}
    for name, ds in loaded.items():
        # streaming=True: an IterableDataset, read with ranged GETs and never stored in the hub cache
        rows = list(ds) if kwargs.get("streaming") else ds.to_list()
        splits[name] = {"rows": len(rows), "digest": rows_digest(rows)}
    return {"splits": splits, "files": hub_cache_files("dataset", repo_id)}


def auto_config(repo_id: str) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(repo_id)
    return {"class": type(config).__name__, "model_type": config.model_type, "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size, "files": hub_cache_files("model", repo_id)}


def auto_tokenizer(repo_id: str) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(repo_id)
    return {"class": type(tok).__name__, "ids": tok(SENTENCE, add_special_tokens=False)["input_ids"],
            "files": hub_cache_files("model", repo_id)}


OPS = {"make_dataset": make_dataset, "make_model": make_model, "load_dataset": load_dataset,
       "auto_config": auto_config, "auto_tokenizer": auto_tokenizer}


def main() -> int:
    results = []
    for op in json.loads(sys.argv[1]):
        op = dict(op)
        try:
            results.append({"ok": True, **OPS[op.pop("op")](**op)})
        except BaseException as err:  # noqa: BLE001 - reported to the test
            results.append({"ok": False, "error": type(err).__name__, "message": str(err)[:2000],
                            "traceback": traceback.format_exc()[-4000:]})
    print("RESULT " + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
