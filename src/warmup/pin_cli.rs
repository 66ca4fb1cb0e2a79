//! `hubcache pin --manifest FILE`: pin every entry of a manifest on a running node (kept warm
//! and out of eviction, across restarts) and follow the warm-up jobs it starts until they end.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::client::{
    block_on, progress_line, summary, AdminArgs, AdminClient, ClientError, RemoteJob, POLL,
    POLL_FAILURES,
};
use super::job::JobState;
use super::pins::load_manifest_requests;
use super::token::{to_json, HubToken, JobRequest, ManifestTokens};

/// `hubcache pin --manifest FILE ...`.
#[derive(Debug, Clone, clap::Args)]
pub struct PinArgs {
    /// A YAML list of {repo, type, revision, include, exclude, token}.
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(serde::Serialize)]
struct PinsBody {
    pins: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Started {
    jobs: Vec<RemoteJob>,
}

impl AdminClient {
    /// `POST /api/pins` (each spec with its hub token, if any): the jobs started.
    pub async fn add_pins(&self, pins: &[JobRequest]) -> Result<Vec<RemoteJob>, ClientError> {
        let pins = pins
            .iter()
            .map(|r| to_json(&r.spec, r.token.as_ref().map(HubToken::token)))
            .collect();
        let started: Started = self
            .call(reqwest::Method::POST, "/api/pins", Some(&PinsBody { pins }))
            .await?;
        Ok(started.jobs)
    }
}

/// Poll `ids` until every job ended, printing a line when one moves; the worst exit code.
async fn follow(client: &AdminClient, ids: &[String]) -> Result<u8, ClientError> {
    let mut shown: HashMap<String, (JobState, u64)> = HashMap::new();
    let mut done: HashMap<String, RemoteJob> = HashMap::new();
    let mut failures = 0;
    // Bounded by the jobs ending (each poll round asks each unfinished job once).
    while done.len() < ids.len() {
        tokio::time::sleep(POLL).await;
        let pending: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
        for id in pending {
            let job = match client.job(id).await {
                Ok(job) => job,
                Err(e) if failures + 1 < POLL_FAILURES => {
                    failures += 1;
                    log::debug!("polling job {id}: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let key = (job.record.state, job.record.files_done);
            if shown.insert(id.clone(), key) != Some(key) {
                println!("{}", progress_line(&job));
            }
            if job.record.state.is_finished() {
                done.insert(id.clone(), job);
            }
        }
    }
    let mut code = 0;
    for id in ids {
        let (text, c) = summary(&done[id]);
        if c == 0 {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
        code = code.max(c);
    }
    Ok(code)
}

/// Run `hubcache pin`; the exit code (0: every pinned file is cached; 1: files failed; 2: the
/// manifest or the admin API could not be used).
pub fn pin_command(args: PinArgs) -> u8 {
    // Tokens (`token: ${HF_TOKEN}`) are expanded from this command's environment.
    let specs = match load_manifest_requests(&args.manifest, ManifestTokens::Expand) {
        Ok(specs) => specs,
        Err(e) => {
            eprintln!("hubcache pin: {e}");
            return 2;
        }
    };
    let result = block_on(async {
        let client = args.admin.client()?;
        let jobs = client.add_pins(&specs).await?;
        for job in &jobs {
            println!("pinned {}: warm-up job {}", job.record.repo, job.record.id);
        }
        let ids: Vec<String> = jobs.into_iter().map(|j| j.record.id).collect();
        follow(&client, &ids).await
    });
    result.unwrap_or_else(|e| {
        eprintln!("hubcache pin: {e}");
        2
    })
}
