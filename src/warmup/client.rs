//! `hubcache warm` and `hubcache jobs`: a client of a node's admin API that starts a warm-up
//! job and shows its progress until it ends, lists jobs, or cancels one.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::job::{JobRecord, JobSpec, JobState};

/// How often the progress is asked for.
pub(super) const POLL: Duration = Duration::from_millis(500);
/// Without a terminal, a progress line is printed at most this often (and on each change of
/// state or files done).
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Consecutive failed polls before giving up.
pub(super) const POLL_FAILURES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("admin API at {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("admin API at {url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
}

/// A job as the admin API answers it.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteJob {
    #[serde(flatten)]
    pub record: JobRecord,
    #[serde(default)]
    pub rate_bytes_per_sec: f64,
    #[serde(default)]
    pub eta_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct JobList {
    jobs: Vec<RemoteJob>,
}

/// A client of one node's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// `base`: the admin listener's URL (`http://127.0.0.1:8091`); `token`: `admin.token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Http {
                url: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    pub(super) async fn call<T: serde::de::DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Http {
                url: url.clone(),
                reason: e.to_string(),
            })?;
            request = request
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let http = |e: reqwest::Error| ClientError::Http {
            url: url.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Http {
            url,
            reason: format!("unexpected answer: {e}"),
        })
    }

    /// `POST /api/jobs`, with the hub token the job fetches with (gated and private repos).
    pub async fn start(
        &self,
        spec: &JobSpec,
        hf_token: Option<&str>,
    ) -> Result<RemoteJob, ClientError> {
        let body = super::token::to_json(spec, hf_token);
        self.call(reqwest::Method::POST, "/api/jobs", Some(&body))
            .await
    }

    pub async fn job(&self, id: &str) -> Result<RemoteJob, ClientError> {
        self.call(
            reqwest::Method::GET,
            &format!("/api/jobs/{id}"),
            None::<&()>,
        )
        .await
    }

    pub async fn list(&self) -> Result<Vec<RemoteJob>, ClientError> {
        let list: JobList = self
            .call(reqwest::Method::GET, "/api/jobs", None::<&()>)
            .await?;
        Ok(list.jobs)
    }

    pub async fn cancel(&self, id: &str) -> Result<RemoteJob, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/jobs/{id}"),
            None::<&()>,
        )
        .await
    }
}

/// `1.5 GiB`, `320.0 KiB`, `12 B`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024.0 {
        return format!("{n:.0} B");
    }
    let mut value = n / 1024.0;
    for unit in UNITS {
        if value < 1024.0 || unit == "PiB" {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{n:.0} B")
}

fn human_secs(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One progress line: `models/acme/x running: files 3/10, 12.0 MiB / 48.0 MiB, 4.0 MiB/s,
/// ETA 9s`.
pub fn progress_line(job: &RemoteJob) -> String {
    let r = &job.record;
    let eta = job
        .eta_seconds
        .map(human_secs)
        .unwrap_or_else(|| "-".to_string());
    let mut line = format!(
        "{} {}: files {}/{}, {} / {}, {}/s, ETA {eta}",
        r.repo,
        r.state.as_str(),
        r.files_done,
        r.files_total,
        human_bytes(r.bytes_done as f64),
        human_bytes(r.bytes_total as f64),
        human_bytes(job.rate_bytes_per_sec),
    );
    if r.files_failed > 0 {
        line.push_str(&format!(", {} failed", r.files_failed));
    }
    line
}

/// One line per job for `hubcache jobs list`.
pub fn list_line(job: &RemoteJob) -> String {
    format!("{}  {}", job.record.id, progress_line(job))
}

/// What `hubcache warm` ends with, and its exit code: 0 when every file is cached.
pub fn summary(job: &RemoteJob) -> (String, u8) {
    let r = &job.record;
    match r.state {
        JobState::Done => (
            format!(
                "{}: all {} files cached ({}, {} already present) at {}",
                r.repo,
                r.files_done,
                human_bytes(r.bytes_total as f64),
                r.files_present,
                r.commit.as_deref().unwrap_or("?"),
            ),
            0,
        ),
        JobState::Cancelled => (format!("{}: job {} was cancelled", r.repo, r.id), 1),
        _ => {
            let mut text = match &r.error {
                Some(error) => format!("{}: {error}", r.repo),
                None => format!(
                    "{}: {} of {} files failed:",
                    r.repo, r.files_failed, r.files_total
                ),
            };
            for failed in &r.failed {
                text.push_str(&format!("\n  {}: {}", failed.path, failed.reason));
            }
            let unlisted = r.files_failed.saturating_sub(r.failed.len() as u64);
            if unlisted > 0 {
                text.push_str(&format!("\n  ... and {unlisted} more"));
            }
            (text, 1)
        }
    }
}

/// Start a job and show its progress until it ends. The exit code: 0 when every file is
/// cached, 1 when files failed or the job was cancelled.
pub async fn warm(
    client: &AdminClient,
    spec: &JobSpec,
    hf_token: Option<&str>,
) -> Result<u8, ClientError> {
    let started = client.start(spec, hf_token).await?;
    let id = started.record.id.clone();
    println!(
        "warm-up job {id}: {} at {}",
        started.record.repo,
        spec.revision.as_deref().unwrap_or("main")
    );
    let terminal = std::io::stdout().is_terminal();
    let mut shown: Option<(JobState, u64)> = None;
    let mut shown_at = Instant::now();
    let mut failures = 0;
    let job = loop {
        tokio::time::sleep(POLL).await;
        let job = match client.job(&id).await {
            Ok(job) => {
                failures = 0;
                job
            }
            Err(e) if failures + 1 < POLL_FAILURES => {
                failures += 1;
                log::debug!("polling job {id}: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let line = progress_line(&job);
        let key = (job.record.state, job.record.files_done);
        let mut out = std::io::stdout().lock();
        if terminal {
            let _ = write!(out, "\r\x1b[2K{line}");
        } else if shown != Some(key) || shown_at.elapsed() >= PLAIN_EVERY {
            let _ = writeln!(out, "{line}");
            shown = Some(key);
            shown_at = Instant::now();
        }
        let _ = out.flush();
        if job.record.state.is_finished() {
            if terminal {
                let _ = writeln!(out);
            }
            break job;
        }
    };
    let (text, code) = summary(&job);
    if code == 0 {
        println!("{text}");
    } else {
        eprintln!("{text}");
    }
    Ok(code)
}

/// The admin API to talk to (shared by `warm` and `jobs`).
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The node's admin listener, e.g. http://127.0.0.1:8091.
    #[arg(long, value_name = "URL")]
    pub admin: String,
    /// The admin token (admin.token); HUBCACHE_ADMIN_TOKEN otherwise.
    #[arg(long)]
    pub token: Option<String>,
}

impl AdminArgs {
    pub(super) fn client(&self) -> Result<AdminClient, ClientError> {
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("HUBCACHE_ADMIN_TOKEN").ok());
        AdminClient::new(&self.admin, token)
    }
}

/// `hubcache warm REPO ...`.
#[derive(Debug, Clone, clap::Args)]
pub struct WarmArgs {
    /// The repo id (`org/name`).
    pub repo: String,
    /// model, dataset, space or kernel.
    #[arg(long = "type", default_value = "model", value_name = "TYPE")]
    pub kind: crate::hf::RepoType,
    /// Branch, tag or commit (default: main).
    #[arg(long)]
    pub revision: Option<String>,
    /// Only files matching this glob (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// No files matching this glob (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// At most this many bytes per second (e.g. 50MiB).
    #[arg(long, value_name = "SIZE")]
    pub rate_limit: Option<crate::config::ByteSize>,
    /// The hub token the node fetches a gated or private repo with; HF_TOKEN otherwise (as
    /// huggingface_hub; preferred: a flag shows in the process list). Kept only in the node's
    /// memory.
    #[arg(long, value_name = "TOKEN")]
    pub hf_token: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The hub token of `hubcache warm`: `--hf-token`, else `HF_TOKEN` (an empty one is none).
pub fn hf_token(flag: Option<String>, env: Option<String>) -> Option<String> {
    flag.or(env).filter(|t| !t.is_empty())
}

/// `hubcache jobs list|cancel`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobsCommand {
    /// Every job the node knows, with its progress.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cancel a job.
    Cancel {
        /// The job id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub(super) fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(work).map_err(|e| e.to_string())
}

/// Run `hubcache warm`; the exit code.
pub fn warm_command(args: WarmArgs) -> u8 {
    let spec = JobSpec {
        repo: args.repo,
        kind: args.kind,
        revision: args.revision,
        include: args.include,
        exclude: args.exclude,
        rate_limit: args.rate_limit.map(|r| r.0),
    };
    let token = hf_token(args.hf_token, std::env::var("HF_TOKEN").ok());
    let result = block_on(async {
        let client = args.admin.client()?;
        warm(&client, &spec, token.as_deref()).await
    });
    result.unwrap_or_else(|e| {
        eprintln!("hubcache warm: {e}");
        2
    })
}

/// Run `hubcache jobs ...`; the exit code.
pub fn jobs_command(args: JobsArgs) -> u8 {
    let result = match args.command {
        JobsCommand::List { admin } => block_on(async {
            let jobs = admin.client()?.list().await?;
            for job in &jobs {
                println!("{}", list_line(job));
            }
            if jobs.is_empty() {
                println!("no warm-up jobs");
            }
            Ok(0)
        }),
        JobsCommand::Cancel { id, admin } => block_on(async {
            let job = admin.client()?.cancel(&id).await?;
            println!("{}", list_line(&job));
            Ok(0)
        }),
    };
    result.unwrap_or_else(|e| {
        eprintln!("hubcache jobs: {e}");
        2
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::RepoType;

    fn job(state: JobState) -> RemoteJob {
        let spec = JobSpec::whole("acme/x", RepoType::Model);
        let target = spec.target().unwrap();
        let mut record = JobRecord::new("j1".into(), &target, spec, 0);
        record.state = state;
        record.files_total = 10;
        record.files_done = 3;
        record.bytes_total = 48 << 20;
        record.bytes_done = 12 << 20;
        RemoteJob {
            record,
            rate_bytes_per_sec: 4.0 * 1024.0 * 1024.0,
            eta_seconds: Some(9.2),
        }
    }

    #[test]
    fn the_progress_line_shows_files_bytes_rate_and_eta() {
        assert_eq!(
            progress_line(&job(JobState::Running)),
            "models/acme/x running: files 3/10, 12.0 MiB / 48.0 MiB, 4.0 MiB/s, ETA 9s"
        );
        assert_eq!(human_bytes(12.0), "12 B");
        assert_eq!(human_secs(3725.0), "1h02m");
    }

    #[test]
    fn the_hub_token_comes_from_the_flag_then_hf_token() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(hf_token(some("hf_flag"), some("hf_env")), some("hf_flag"));
        assert_eq!(hf_token(None, some("hf_env")), some("hf_env"));
        assert_eq!(hf_token(None, some("")), None);
        assert_eq!(hf_token(None, None), None);
    }

    #[test]
    fn the_summary_lists_failed_files_and_exits_non_zero() {
        let (text, code) = summary(&job(JobState::Done));
        assert_eq!(code, 0, "{text}");
        let mut failed = job(JobState::Failed);
        failed
            .record
            .add_failure("big.bin", "upstream refused: HTTP 403".into());
        let (text, code) = summary(&failed);
        assert_eq!(code, 1);
        assert!(text.contains("big.bin: upstream refused"), "{text}");
        assert_eq!(summary(&job(JobState::Cancelled)).1, 1);
    }
}
