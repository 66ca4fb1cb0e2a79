//! Applying a reloaded config file: validated whole, then built whole, then swapped in with
//! one `store()`; a file that fails either step changes nothing. Every attempt is counted
//! (`hubcache_config_reloads_total{result}`), logged, and handed to the [`ReloadEvents`]
//! hooks (the alert plugins' event bus).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::diff;
use super::settings::Settings;
use super::App;
use crate::config::{Config, ConfigError};

/// How a reload attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// The file was applied (possibly with keys left for an upgrade, see the report).
    Ok,
    /// The file could not be read or is not a valid config: nothing changed.
    Invalid,
    /// The file is valid but what it describes could not be built: nothing changed.
    Failed,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 3] = [
        ReloadResult::Ok,
        ReloadResult::Invalid,
        ReloadResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Failed => "failed",
        }
    }
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub result: ReloadResult,
    /// The file that was read (`None`: the embedded default).
    pub file: Option<PathBuf>,
    /// Reload attempts in this process so far, this one included.
    pub attempt: u64,
    /// The settings generation in effect afterwards (0 = as started).
    pub generation: u64,
    /// Why the file was refused (names the file, the key path and the reason), or a summary.
    pub message: String,
    /// Live keys that changed (dotted paths).
    pub changed: Vec<String>,
    /// Keys the file changes that need a binary upgrade; their old values stay in effect.
    pub needs_upgrade: Vec<String>,
}

/// Told about every reload attempt, whatever its result (wired to the event bus that alert
/// plugins listen on). Called on the reloading thread: hand the work off, do not block.
pub trait ReloadEvents: Send + Sync {
    fn config_reloaded(&self, report: &ReloadReport);
}

impl App {
    /// Register a hook told about every reload attempt.
    pub fn on_reload(&self, hook: Arc<dyn ReloadEvents>) {
        self.reload_hooks.write().push(hook);
    }

    /// Apply a reloaded config `file` (`loaded` is the result of reading and validating it).
    /// Reloads are serialised; the report says what happened.
    pub fn reload(&self, file: Option<&Path>, loaded: Result<Config, ConfigError>) -> ReloadReport {
        let mut attempts = self.reloads.lock();
        *attempts += 1;
        let report = ReloadReport {
            file: file.map(Path::to_path_buf),
            ..self.apply(*attempts, loaded)
        };
        drop(attempts);
        self.metrics.record_reload(report.result.as_str());
        log_report(&report);
        for hook in self.reload_hooks.read().iter() {
            hook.config_reloaded(&report);
        }
        report
    }

    fn apply(&self, attempt: u64, loaded: Result<Config, ConfigError>) -> ReloadReport {
        let current = self.settings.load_full();
        let refused = |result, message: String| ReloadReport {
            result,
            file: None,
            attempt,
            generation: current.generation,
            message,
            changed: Vec::new(),
            needs_upgrade: Vec::new(),
        };
        let file = match loaded {
            Ok(file) => file,
            Err(e) => return refused(ReloadResult::Invalid, e.to_string()),
        };
        let plan = diff::plan(&current.config, file);
        let needs_upgrade: Vec<String> = plan.needs_upgrade.iter().map(|k| k.to_string()).collect();
        let mut changed: Vec<String> = plan.changed.iter().map(|k| k.to_string()).collect();
        // The certificate files are read again on every reload (a renewed certificate keeps
        // its paths); a pair that fails its checks refuses the whole file.
        let certificate = match (self.tls.get(), &plan.applied.tls) {
            (Some(certs), Some(tls)) => match certs.stage(tls) {
                Ok(pair) => Some((certs, pair)),
                Err(e) => return refused(ReloadResult::Failed, e.to_string()),
            },
            _ => None,
        };
        let generation = if changed.is_empty() {
            current.generation
        } else {
            let next = match Settings::build(plan.applied, Some(&current)) {
                Ok(next) => Arc::new(next),
                Err(e) => return refused(ReloadResult::Failed, e.to_string()),
            };
            self.settings.store(Arc::clone(&next));
            self.follow(&current, &next);
            next.generation
        };
        if let Some((certs, pair)) = certificate {
            if certs.install(pair) && !changed.iter().any(|k| k == "tls.cert") {
                changed.push("tls.cert".to_string());
            }
        }
        let message = if changed.is_empty() {
            "no live setting changed".to_string()
        } else {
            format!("applied: {}", changed.join(", "))
        };
        ReloadReport {
            result: ReloadResult::Ok,
            file: None,
            attempt,
            generation,
            message,
            changed,
            needs_upgrade,
        }
    }

    /// What cannot ride in the swapped settings alone: budgets sized from them, the logger.
    fn follow(&self, before: &Settings, now: &Settings) {
        if before.config.plugins.eviction != now.config.plugins.eviction {
            if let Some(cache) = self.cache_service.get() {
                cache.reconfigure(&now.config.plugins.eviction);
            }
        }
        if !Arc::ptr_eq(&before.fill, &now.fill) {
            self.fill.follow_settings();
        }
        if before.config.log != now.config.log {
            crate::logging::configure(now.config.log.format, now.config.log.level);
        }
    }
}

fn log_report(report: &ReloadReport) {
    match report.result {
        ReloadResult::Ok => log::info!(
            "config reload #{}: {} (generation {})",
            report.attempt,
            report.message,
            report.generation
        ),
        ReloadResult::Invalid | ReloadResult::Failed => log::error!(
            "config reload #{} refused, the running config is kept: {}",
            report.attempt,
            report.message
        ),
    }
    if !report.needs_upgrade.is_empty() {
        log::warn!(
            "config reload #{}: {} changed in the file but needs an upgrade (hubcache upgrade); \
             the running values stay in effect until then",
            report.attempt,
            report.needs_upgrade.join(", ")
        );
    }
}
