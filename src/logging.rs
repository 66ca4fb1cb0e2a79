//! The process logger (env_logger's format, on stderr) with a filter a config reload can
//! change: `log_level`, unless `RUST_LOG` is set, which then wins at start and on reload.
//!
//! Pingora's own crates are kept at `warn` unless `log_level` names them.

use std::sync::OnceLock;

use arc_swap::ArcSwap;
use log::{Log, Metadata, Record};

use crate::config::LogLevel;

/// Directives put before the configured ones (a directive the config names wins).
const QUIET_DEPENDENCIES: &str = "pingora=warn,pingora_core=warn";

struct Reloadable {
    inner: ArcSwap<env_logger::Logger>,
}

static LOGGER: OnceLock<Reloadable> = OnceLock::new();

fn build(level: &LogLevel) -> env_logger::Logger {
    let filters = format!("{QUIET_DEPENDENCIES},{level}");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filters)).build()
}

fn rust_log_is_set() -> bool {
    std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty())
}

/// Install the logger (once per process; later calls only set `level`, quietly).
pub fn init(level: &LogLevel) {
    let logger = build(level);
    let max = logger.filter();
    if let Err(Reloadable { inner }) = LOGGER.set(Reloadable {
        inner: ArcSwap::from_pointee(logger),
    }) {
        if let Some(installed) = LOGGER.get() {
            installed.inner.store(inner.load_full());
            log::set_max_level(max);
        }
        return;
    }
    if let Some(installed) = LOGGER.get() {
        if log::set_logger(installed).is_ok() {
            log::set_max_level(max);
        }
    }
}

/// Write log lines by `level` from now on (a config reload). Nothing changes when `RUST_LOG`
/// is set or no logger was installed.
pub fn apply(level: &LogLevel) {
    let Some(installed) = LOGGER.get() else {
        return;
    };
    if rust_log_is_set() {
        log::warn!("log_level {level} not applied: RUST_LOG is set and wins");
        return;
    }
    let logger = build(level);
    let max = logger.filter();
    installed.inner.store(std::sync::Arc::new(logger));
    log::set_max_level(max);
    log::info!("log level is now {level}");
}

impl Log for Reloadable {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.load().enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.inner.load().log(record);
    }

    fn flush(&self) {
        self.inner.load().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_level_decides_and_dependencies_stay_quiet() {
        let meta =
            |target: &'static str, level| Metadata::builder().target(target).level(level).build();
        let info = build(&LogLevel::parse("info").unwrap());
        let debug = build(&LogLevel::parse("debug,pingora_core=info").unwrap());
        if rust_log_is_set() {
            return; // RUST_LOG decides in this environment
        }
        assert!(info.enabled(&meta("hubcache::proxy", log::Level::Info)));
        assert!(!info.enabled(&meta("hubcache::proxy", log::Level::Debug)));
        assert!(!info.enabled(&meta("pingora_core::server", log::Level::Info)));
        assert!(debug.enabled(&meta("hubcache::proxy", log::Level::Debug)));
        assert!(debug.enabled(&meta("pingora_core::server", log::Level::Info)));
        assert!(!debug.enabled(&meta("pingora_core::server", log::Level::Debug)));
    }
}
