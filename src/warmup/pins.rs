//! Pins (issue 17): repos that must always be cached. A pin manifest is a YAML list of
//! `{repo, type, revision, include, exclude, token}` (job specs; `token`, for a gated or
//! private repo, is a hub token, `${ENV}` references expanded, kept only in memory: see
//! `token`); manifests come from the `pins:`
//! config key (read again at each round, so a reload or an edited file applies) and from
//! `POST /api/pins` (`hubcache pin --manifest FILE`; kept under the first cache root).
//!
//! Each round (at start, every `pin_refresh`, and when pins are added) the pin loop:
//! - gives the eviction index the pinned repos (pinned against eviction, every revision);
//! - resolves each pin's revision again (a branch follows upstream once its mapping is older
//!   than `revision_ttl`), and starts a warm-up job when the commit changed or the last job
//!   did not finish `done`. A job still running is left to finish.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::job::{JobSpec, JobState, SpecError};
use super::token::{self, HubToken, JobRequest, ManifestTokens, TokenError};
use super::{JobView, SubmitError, Warmup};
use crate::app::App;
use crate::config::RepoGlob;
use crate::hf::RepoType;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("pin manifest {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("pin manifest {path}: entry {index}: {error}")]
    Entry {
        path: PathBuf,
        index: usize,
        error: SpecError,
    },
    #[error("pin manifest {path}: entry {index}: {error}")]
    Token {
        path: PathBuf,
        index: usize,
        error: TokenError,
    },
}

/// The entries of a manifest, each checked; their tokens read as `tokens` says.
pub fn parse_manifest_requests(
    path: &Path,
    text: &str,
    tokens: ManifestTokens,
) -> Result<Vec<JobRequest>, ManifestError> {
    let entries: Vec<serde_yaml::Value> =
        serde_yaml::from_str(text).map_err(|e| ManifestError::Read {
            path: path.to_path_buf(),
            reason: format!(
                "not a YAML list of {{repo, type, revision, include, exclude, token}}: {e}"
            ),
        })?;
    let mut requests = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let request = token::from_yaml(entry, tokens).map_err(|error| ManifestError::Token {
            path: path.to_path_buf(),
            index,
            error,
        })?;
        request
            .spec
            .target()
            .map_err(|error| ManifestError::Entry {
                path: path.to_path_buf(),
                index,
                error,
            })?;
        requests.push(request);
    }
    Ok(requests)
}

/// The specs of a manifest, each checked (tokens left out, not expanded).
pub fn parse_manifest(path: &Path, text: &str) -> Result<Vec<JobSpec>, ManifestError> {
    let requests = parse_manifest_requests(path, text, ManifestTokens::Drop)?;
    Ok(requests.into_iter().map(|r| r.spec).collect())
}

/// Read and check a manifest file; its tokens read as `tokens` says.
pub fn load_manifest_requests(
    path: &Path,
    tokens: ManifestTokens,
) -> Result<Vec<JobRequest>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_manifest_requests(path, &text, tokens)
}

/// Read and check a manifest file (its specs only).
pub fn load_manifest(path: &Path) -> Result<Vec<JobSpec>, ManifestError> {
    let requests = load_manifest_requests(path, ManifestTokens::Drop)?;
    Ok(requests.into_iter().map(|r| r.spec).collect())
}

/// The eviction pin of a spec's repo (`org/name`, `datasets/org/name`, ...).
pub fn pin_glob(spec: &JobSpec) -> Option<RepoGlob> {
    let pattern = match spec.kind {
        RepoType::Model => spec.repo.clone(),
        kind => format!("{}/{}", kind.api_plural(), spec.repo),
    };
    RepoGlob::parse(&pattern).ok()
}

/// The eviction pins of `app`'s pins: the `pins:` manifests and those added through the admin
/// API (for `hubcache cache gc` / `cache ls`, which run beside the mirror). A manifest that
/// cannot be read is logged and left out.
pub fn configured_globs(app: &App) -> Vec<RepoGlob> {
    let root = super::state_root(app);
    let mut specs = Warmup::load_api_pins(&super::JobStore::new(&root).pins_file());
    for path in &app.settings().config.pins {
        match load_manifest(path) {
            Ok(more) => specs.extend(more),
            Err(e) => log::warn!("{e}"),
        }
    }
    specs.iter().filter_map(pin_glob).collect()
}

/// What the pin loop knows about one pin.
#[derive(Debug, Clone, Default)]
pub(super) struct PinProgress {
    commit: Option<String>,
    job: Option<String>,
}

/// One pin as `GET /api/pins` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinView {
    pub spec: JobSpec,
    /// The manifest it comes from, or `api`.
    pub source: String,
    /// The commit of the last job started for it.
    pub commit: Option<String>,
    pub job: Option<String>,
    pub job_state: Option<JobState>,
}

fn key(spec: &JobSpec) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

impl Warmup {
    /// The pins added through the admin API (read from disk at start).
    pub(super) fn load_api_pins(path: &Path) -> Vec<JobSpec> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!("pins {}: {e}; ignored", path.display());
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Pin the specs of `requests` (kept across restarts; their tokens only in memory) and
    /// start their jobs now; the jobs started. A token the hub refuses refuses them all.
    pub async fn add_pins(
        self: &Arc<Self>,
        requests: Vec<JobRequest>,
    ) -> Result<Vec<JobView>, SubmitError> {
        for request in &requests {
            let target = request.spec.target()?;
            if let Some(token) = &request.token {
                self.check_token(&target, token.authorization()).await?;
            }
        }
        let saved = {
            let mut pins = self.api_pins.lock();
            let mut tokens = self.api_pin_tokens.lock();
            for request in &requests {
                if !pins.contains(&request.spec) {
                    pins.push(request.spec.clone());
                }
                match &request.token {
                    Some(token) => tokens.insert(key(&request.spec), token.clone()),
                    None => tokens.remove(&key(&request.spec)),
                };
            }
            pins.clone()
        };
        let path = self.store.pins_file();
        let written = std::fs::create_dir_all(self.store.dir()).and_then(|()| {
            std::fs::write(&path, serde_json::to_vec_pretty(&saved).unwrap_or_default())
        });
        if let Err(e) = written {
            log::warn!("pins {}: cannot save them: {e}", path.display());
        }
        let mut started = Vec::new();
        for JobRequest { spec, token } in requests {
            let view = self.submit_with(spec.clone(), token)?;
            self.pin_progress.lock().insert(
                key(&spec),
                PinProgress {
                    commit: None,
                    job: Some(view.record.id.clone()),
                },
            );
            started.push(view);
        }
        self.pin_wake.notify_one();
        Ok(started)
    }

    /// Every pin (its spec, source and token): from the manifests of `manifests`, then those
    /// added through the API.
    fn all_pins(&self, manifests: &[PathBuf]) -> Vec<(JobSpec, String, Option<HubToken>)> {
        let mut pins = Vec::new();
        for path in manifests {
            let read = match load_manifest_requests(path, ManifestTokens::Expand) {
                // Its repos stay pinned against eviction; their jobs go without a token.
                Err(e @ ManifestError::Token { .. }) => {
                    log::warn!("{e}; its entries are warmed without tokens this round");
                    load_manifest_requests(path, ManifestTokens::Drop)
                }
                read => read,
            };
            match read {
                Ok(requests) => {
                    let source = path.display().to_string();
                    pins.extend(
                        requests
                            .into_iter()
                            .map(|r| (r.spec, source.clone(), r.token)),
                    );
                }
                Err(e) => log::warn!("{e}"),
            }
        }
        let api = self.api_pins.lock().clone();
        let tokens = self.api_pin_tokens.lock().clone();
        pins.extend(api.into_iter().map(|s| {
            let token = tokens.get(&key(&s)).cloned();
            (s, "api".to_string(), token)
        }));
        pins
    }

    /// `GET /api/pins`: the pins of the manifests the last round read, and the API's.
    pub fn pin_views(&self) -> Vec<PinView> {
        let progress = self.pin_progress.lock().clone();
        let manifests = self.manifests.lock().clone();
        self.all_pins(&manifests)
            .into_iter()
            .map(|(spec, source, _)| {
                let p = progress.get(&key(&spec)).cloned().unwrap_or_default();
                let job_state = p
                    .job
                    .as_deref()
                    .and_then(|id| self.find(id))
                    .map(|j| j.state());
                PinView {
                    spec,
                    source,
                    commit: p.commit,
                    job: p.job,
                    job_state,
                }
            })
            .collect()
    }

    /// One round of the pin loop.
    pub async fn pin_round(self: &Arc<Self>, app: &App) {
        let manifests = app.settings().config.pins.clone();
        let pins = self.all_pins(&manifests);
        *self.manifests.lock() = manifests;
        let globs: Vec<RepoGlob> = pins.iter().filter_map(|(s, ..)| pin_glob(s)).collect();
        if let Some(cache) = app.cache_service.get() {
            cache.index().set_extra_pins(&globs);
        }
        let mut seen: HashMap<String, ()> = HashMap::new();
        for (spec, _, token) in pins {
            let k = key(&spec);
            if seen.insert(k.clone(), ()).is_some() {
                continue;
            }
            if let Err(e) = self.refresh_pin(&spec, token, k).await {
                log::warn!("pin {}: {e}", spec.repo);
            }
        }
    }

    async fn refresh_pin(
        self: &Arc<Self>,
        spec: &JobSpec,
        token: Option<HubToken>,
        k: String,
    ) -> Result<(), String> {
        let mut progress = self
            .pin_progress
            .lock()
            .get(&k)
            .cloned()
            .unwrap_or_default();
        if progress.job.is_none() {
            // A job resumed after a restart counts as this pin's.
            progress.job = self
                .jobs
                .lock()
                .iter()
                .rev()
                .find(|j| j.record.lock().spec == *spec)
                .map(|j| j.id.clone());
        }
        let last = progress.job.as_deref().and_then(|id| self.find(id));
        let last_state = last.as_ref().map(|j| j.state());
        if last_state.is_some_and(|s| !s.is_finished()) {
            return Ok(());
        }
        let target = spec.target().map_err(|e| e.to_string())?;
        let auth = token.as_ref().map(HubToken::authorization);
        let commit = self
            .meta
            .commit_for(&target.repo, Some(&target.revision), auth)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", target.revision.as_str()))?;
        let last_commit = last.as_ref().and_then(|j| j.record.lock().commit.clone());
        if last_state == Some(JobState::Done) && last_commit.as_deref() == Some(commit.as_str()) {
            return Ok(());
        }
        let view = self
            .submit_with(spec.clone(), token)
            .map_err(|e| e.to_string())?;
        log::info!(
            "pin {}: warm-up job {} for {}",
            spec.repo,
            view.record.id,
            &commit[..commit.len().min(12)]
        );
        progress.commit = Some(commit);
        progress.job = Some(view.record.id);
        self.pin_progress.lock().insert(k, progress);
        Ok(())
    }

    /// The pin loop: a round at start, every `pin_refresh`, and when pins are added; until
    /// `stop` resolves.
    pub async fn pin_loop(
        self: Arc<Self>,
        app: Arc<App>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        // Bounded: one round per wake-up, until shutdown.
        loop {
            self.pin_round(&app).await;
            let every = app.settings().config.pin_refresh;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.pin_wake.notified() => {}
                _ = &mut stop => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_a_list_of_checked_specs() {
        let path = Path::new("pins.yaml");
        let specs = parse_manifest(
            path,
            "- repo: acme/tiny-model\n  revision: main\n  include: ['*.json']\n\
             - {repo: acme/data, type: dataset, exclude: raw/}\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].kind, RepoType::Dataset);
        assert_eq!(specs[1].exclude, ["raw/"]);
        let globs: Vec<String> = specs
            .iter()
            .filter_map(pin_glob)
            .map(|g| g.to_string())
            .collect();
        assert_eq!(globs, ["acme/tiny-model", "datasets/acme/data"]);
        let bad = parse_manifest(path, "- {repo: acme/x}\n- {repo: '../y'}\n").unwrap_err();
        assert!(bad.to_string().contains("entry 1"), "{bad}");
        let unknown = parse_manifest(path, "- {repo: acme/x, colour: red}\n").unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        assert!(parse_manifest(path, "repo: acme/x\n").is_err());
    }

    #[test]
    fn a_manifest_entry_may_carry_a_token_from_the_environment() {
        let path = Path::new("pins.yaml");
        let text = "- {repo: acme/public}\n- {repo: acme/gated-model, token: '${HUBCACHE_NO_SUCH_VAR_PIN}'}\n";
        // For eviction pins the token is neither needed nor expanded.
        let specs = parse_manifest(path, text).unwrap();
        assert_eq!(specs[1].repo, "acme/gated-model");
        let missing = parse_manifest_requests(path, text, ManifestTokens::Expand).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "pin manifest pins.yaml: entry 1: token environment variable \
             HUBCACHE_NO_SUCH_VAR_PIN is not set"
        );
        let literal = "- {repo: acme/gated-model, token: hf_literal}\n";
        let [request] =
            &parse_manifest_requests(path, literal, ManifestTokens::Expand).unwrap()[..]
        else {
            panic!("one entry");
        };
        let token = request.token.as_ref().expect("token");
        assert_eq!(token.authorization(), "Bearer hf_literal");
        let bad =
            parse_manifest_requests(path, "- {repo: a/b, token: [x]}\n", ManifestTokens::Expand);
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("entry 0: token must be a string"));
    }
}
