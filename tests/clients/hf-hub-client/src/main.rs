//! Test-only driver for the Rust `hf-hub` crate, run by tests/e2e/test_rust_hf_hub.py against
//! hubcache. Both generations of the crate are linked in:
//!
//! - `sync`, `tokio`: hf-hub 0.4 (`api::sync` on ureq, `api::tokio` on reqwest), the version
//!   candle, text-embeddings-inference and mistral.rs pin. Metadata is a `GET` with
//!   `Range: bytes=0-0`; the tokio API downloads in parallel 10 MB ranged chunks.
//! - `async`, `blocking`: hf-hub 1.x (`HFClient`, `HFClientSync`), HEAD metadata, and hf-xet
//!   whenever a response carries `X-Xet-Hash` (no opt-out).
//!
//! Every API reads `HF_ENDPOINT` and `HF_HOME` from the environment, as users configure it.
//!
//! Usage: hf-hub-client <sync|tokio|async|blocking> <model|dataset|space> <repo id> <revision> <op>...
//! An op is a file path in the repo, or `@snapshot` (0.4: repo info, then every sibling;
//! 1.x: `snapshot_download`). One line per op on stdout:
//! `RESULT {"op": .., "ok": true, "files": {"<repo path>": "<local path>"}}` or
//! `RESULT {"op": .., "ok": false, "error": ".."}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

type Files = BTreeMap<String, PathBuf>;
type OpResult = Result<Files, String>;

const SNAPSHOT: &str = "@snapshot";

struct Target {
    repo_type: String,
    repo_id: String,
    revision: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!(
            "usage: hf-hub-client <sync|tokio|async|blocking> <model|dataset|space> <repo id> <revision> <op>..."
        );
        return ExitCode::from(2);
    }
    let target = Target {
        repo_type: args[1].clone(),
        repo_id: args[2].clone(),
        revision: args[3].clone(),
    };
    let ops = &args[4..];
    let results = match args[0].as_str() {
        "sync" => v04_sync::run(&target, ops),
        "tokio" => runtime().and_then(|rt| rt.block_on(v04_tokio::run(&target, ops))),
        "async" => runtime().and_then(|rt| rt.block_on(v1_async::run(&target, ops))),
        "blocking" => v1_blocking::run(&target, ops),
        other => Err(format!("unknown api {other:?}")),
    };
    match results {
        Ok(results) => {
            for (op, result) in ops.iter().zip(results) {
                println!("RESULT {}", result_json(op, result));
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("hf-hub-client: {err}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn result_json(op: &str, result: OpResult) -> serde_json::Value {
    match result {
        Ok(files) => json!({"op": op, "ok": true, "files": files}),
        Err(error) => json!({"op": op, "ok": false, "error": error}),
    }
}

fn one(op: &str, path: PathBuf) -> Files {
    BTreeMap::from([(op.to_string(), path)])
}

/// Every regular file under a 1.x snapshot directory, by repo path.
fn walk(root: &Path) -> OpResult {
    let mut out = Files::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).map_err(|e| e.to_string())?;
                out.insert(rel.to_string_lossy().replace('\\', "/"), path);
            }
        }
    }
    Ok(out)
}

mod v04_sync {
    use super::{one, Files, OpResult, Target, SNAPSHOT};
    use hf_hub_04::api::sync::{ApiBuilder, ApiRepo};

    pub fn run(t: &Target, ops: &[String]) -> Result<Vec<OpResult>, String> {
        let api = ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| format!("ApiBuilder: {e}"))?;
        let repo = api.repo(super::v04_repo(t)?);
        Ok(ops.iter().map(|op| run_op(&repo, op)).collect())
    }

    fn run_op(repo: &ApiRepo, op: &str) -> OpResult {
        if op != SNAPSHOT {
            return repo
                .get(op)
                .map(|p| one(op, p))
                .map_err(|e| format!("{e:?}"));
        }
        let info = repo.info().map_err(|e| format!("info: {e:?}"))?;
        let mut files = Files::new();
        for sibling in info.siblings {
            let path = repo
                .get(&sibling.rfilename)
                .map_err(|e| format!("{}: {e:?}", sibling.rfilename))?;
            files.insert(sibling.rfilename, path);
        }
        Ok(files)
    }
}

mod v04_tokio {
    use super::{one, Files, OpResult, Target, SNAPSHOT};
    use hf_hub_04::api::tokio::{ApiBuilder, ApiRepo};

    pub async fn run(t: &Target, ops: &[String]) -> Result<Vec<OpResult>, String> {
        let api = ApiBuilder::from_env()
            .with_progress(false)
            .build()
            .map_err(|e| format!("ApiBuilder: {e}"))?;
        let repo = api.repo(super::v04_repo(t)?);
        let mut out = Vec::new();
        for op in ops {
            out.push(run_op(&repo, op).await);
        }
        Ok(out)
    }

    async fn run_op(repo: &ApiRepo, op: &str) -> OpResult {
        if op != SNAPSHOT {
            return repo
                .get(op)
                .await
                .map(|p| one(op, p))
                .map_err(|e| format!("{e:?}"));
        }
        let info = repo.info().await.map_err(|e| format!("info: {e:?}"))?;
        let mut files = Files::new();
        for sibling in info.siblings {
            let path = repo
                .get(&sibling.rfilename)
                .await
                .map_err(|e| format!("{}: {e:?}", sibling.rfilename))?;
            files.insert(sibling.rfilename, path);
        }
        Ok(files)
    }
}

fn v04_repo(t: &Target) -> Result<hf_hub_04::Repo, String> {
    use hf_hub_04::RepoType;
    let kind = match t.repo_type.as_str() {
        "model" => RepoType::Model,
        "dataset" => RepoType::Dataset,
        "space" => RepoType::Space,
        other => return Err(format!("unknown repo type {other:?}")),
    };
    Ok(hf_hub_04::Repo::with_revision(
        t.repo_id.clone(),
        kind,
        t.revision.clone(),
    ))
}

mod v1_async {
    use super::{one, walk, OpResult, Target, SNAPSHOT};
    use hf_hub_1::repository::{HFRepository, RepoTypeAny};
    use hf_hub_1::HFClient;

    pub async fn run(t: &Target, ops: &[String]) -> Result<Vec<OpResult>, String> {
        let client = HFClient::new().map_err(|e| format!("HFClient: {e}"))?;
        let repo = super::v1_repo(&client, t)?;
        let mut out = Vec::new();
        for op in ops {
            out.push(run_op(&repo, &t.revision, op).await);
        }
        Ok(out)
    }

    async fn run_op(repo: &HFRepository<RepoTypeAny>, revision: &str, op: &str) -> OpResult {
        if op == SNAPSHOT {
            let dir = repo
                .snapshot_download()
                .revision(revision)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            return walk(&dir);
        }
        repo.download_file()
            .filename(op)
            .revision(revision)
            .send()
            .await
            .map(|p| one(op, p))
            .map_err(|e| format!("{e:?}"))
    }
}

mod v1_blocking {
    use super::{one, walk, OpResult, Target, SNAPSHOT};
    use hf_hub_1::repository::RepoTypeAny;
    use hf_hub_1::{HFClientSync, HFRepositorySync};

    pub fn run(t: &Target, ops: &[String]) -> Result<Vec<OpResult>, String> {
        let client = HFClientSync::new().map_err(|e| format!("HFClientSync: {e}"))?;
        let (owner, name) = hf_hub_1::split_id(&t.repo_id);
        let repo: HFRepositorySync<RepoTypeAny> =
            client.repository(super::v1_kind(&t.repo_type)?, owner, name);
        Ok(ops
            .iter()
            .map(|op| run_op(&repo, &t.revision, op))
            .collect())
    }

    fn run_op(repo: &HFRepositorySync<RepoTypeAny>, revision: &str, op: &str) -> OpResult {
        if op == SNAPSHOT {
            let dir = repo
                .snapshot_download()
                .revision(revision)
                .send()
                .map_err(|e| format!("{e:?}"))?;
            return walk(&dir);
        }
        repo.download_file()
            .filename(op)
            .revision(revision)
            .send()
            .map(|p| one(op, p))
            .map_err(|e| format!("{e:?}"))
    }
}

fn v1_kind(repo_type: &str) -> Result<hf_hub_1::repository::RepoTypeAny, String> {
    use hf_hub_1::repository::RepoTypeAny;
    match repo_type {
        "model" => Ok(RepoTypeAny::Model),
        "dataset" => Ok(RepoTypeAny::Dataset),
        "space" => Ok(RepoTypeAny::Space),
        other => Err(format!("unknown repo type {other:?}")),
    }
}

fn v1_repo(
    client: &hf_hub_1::HFClient,
    t: &Target,
) -> Result<hf_hub_1::repository::HFRepository<hf_hub_1::repository::RepoTypeAny>, String> {
    let (owner, name) = hf_hub_1::split_id(&t.repo_id);
    Ok(client.repository(v1_kind(&t.repo_type)?, owner, name))
}
