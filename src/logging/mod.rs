//! hubcache's logger: every message, and one access-log line per request, to stderr as text
//! or JSON (`log.format`), filtered by `log.level` (changeable at run time through the admin
//! API). `RUST_LOG`, when set, replaces the level with an env_logger filter (for developers).
//!
//! ```text
//! logging::init();                               // first thing in main: text, info
//! logging::configure(config.log.format, config.log.level);   // once the config is read
//! logging::access(&AccessRecord { .. });         // the proxy's logging phase
//! ```
//!
//! Pingora's own messages (targets `pingora*`) are kept at `warn` unless the level is `trace`.

mod access;
mod time;

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use log::{LevelFilter, Log, Metadata, Record};

pub use access::{redact_queries, AccessRecord};

use crate::config::{LogFormat, LogLevel};

/// The target of access-log lines.
pub const ACCESS_TARGET: &str = "access";

struct Logger {
    format: AtomicU8,
    level: AtomicU8,
    /// The `RUST_LOG` filter, when that variable is set.
    env: Option<env_logger::Logger>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

fn level_code(level: LogLevel) -> u8 {
    match level {
        LogLevel::Error => 1,
        LogLevel::Warn => 2,
        LogLevel::Info => 3,
        LogLevel::Debug => 4,
        LogLevel::Trace => 5,
    }
}

fn level_of(code: u8) -> LogLevel {
    match code {
        1 => LogLevel::Error,
        2 => LogLevel::Warn,
        4 => LogLevel::Debug,
        5 => LogLevel::Trace,
        _ => LogLevel::Info,
    }
}

fn filter_of(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}

impl Logger {
    fn format(&self) -> LogFormat {
        if self.format.load(Ordering::Relaxed) == 1 {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }

    fn level(&self) -> LogLevel {
        level_of(self.level.load(Ordering::Relaxed))
    }

    /// The most detailed level written for `target`.
    fn max_for(&self, target: &str) -> LevelFilter {
        let level = self.level();
        let filter = filter_of(level);
        if target.starts_with("pingora") && level != LogLevel::Trace {
            filter.min(LevelFilter::Warn)
        } else {
            filter
        }
    }

    fn update_max_level(&self) {
        let max = match &self.env {
            Some(env) => env.filter(),
            None => filter_of(self.level()),
        };
        log::set_max_level(max);
    }

    fn write_line(&self, line: &str) {
        let mut err = std::io::stderr().lock();
        // One write per line, so lines from different threads never interleave.
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        let _ = err.write_all(buf.as_bytes());
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        match &self.env {
            Some(env) => env.enabled(metadata),
            None => metadata.level() <= self.max_for(metadata.target()),
        }
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = time::utc_timestamp(std::time::SystemTime::now());
        let message = record.args().to_string();
        let line = match self.format() {
            LogFormat::Text => {
                format!("[{ts} {:<5} {}] {message}", record.level(), record.target())
            }
            LogFormat::Json => serde_json::json!({
                "ts": ts,
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": message,
            })
            .to_string(),
        };
        self.write_line(&line);
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| {
        let env = std::env::var_os("RUST_LOG")
            .filter(|v| !v.is_empty())
            .map(|_| env_logger::Builder::from_default_env().build());
        Logger {
            format: AtomicU8::new(0),
            level: AtomicU8::new(level_code(LogLevel::Info)),
            env,
        }
    })
}

/// Install the logger (text, `info`). Call once, first thing; later calls do nothing.
pub fn init() {
    let logger = logger();
    if log::set_logger(logger).is_ok() {
        logger.update_max_level();
    }
}

/// Apply the configured format and level.
pub fn configure(format: LogFormat, level: LogLevel) {
    let logger = logger();
    logger
        .format
        .store(u8::from(format == LogFormat::Json), Ordering::Relaxed);
    set_level(level);
}

/// Change the level at run time (the admin API, a reload).
pub fn set_level(level: LogLevel) {
    let logger = logger();
    logger.level.store(level_code(level), Ordering::Relaxed);
    logger.update_max_level();
}

/// The level in force (`log.level`, or as changed since).
pub fn level() -> LogLevel {
    logger().level()
}

/// Whether `RUST_LOG` overrides the level.
pub fn overridden_by_env() -> bool {
    logger().env.is_some()
}

/// Write one access-log line (at `info`, target [`ACCESS_TARGET`]).
pub fn access(record: &AccessRecord<'_>) {
    let logger = logger();
    let metadata = Metadata::builder()
        .level(log::Level::Info)
        .target(ACCESS_TARGET)
        .build();
    if !logger.enabled(&metadata) {
        return;
    }
    let ts = time::utc_timestamp(std::time::SystemTime::now());
    let line = match logger.format() {
        LogFormat::Text => format!("[{ts} INFO  {ACCESS_TARGET}] {}", record.text()),
        LogFormat::Json => record.json(&ts).to_string(),
    };
    logger.write_line(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_targets_stay_at_warn_below_trace() {
        let logger = Logger {
            format: AtomicU8::new(0),
            level: AtomicU8::new(level_code(LogLevel::Debug)),
            env: None,
        };
        assert_eq!(logger.max_for("hubcache::fetch"), LevelFilter::Debug);
        assert_eq!(logger.max_for("pingora_core::server"), LevelFilter::Warn);
        logger
            .level
            .store(level_code(LogLevel::Error), Ordering::Relaxed);
        assert_eq!(logger.max_for("pingora_proxy"), LevelFilter::Error);
        logger
            .level
            .store(level_code(LogLevel::Trace), Ordering::Relaxed);
        assert_eq!(logger.max_for("pingora_proxy"), LevelFilter::Trace);
    }

    #[test]
    fn level_codes_round_trip() {
        for name in LogLevel::NAMES {
            let level: LogLevel = name.parse().unwrap();
            assert_eq!(level_of(level_code(level)), level);
        }
    }
}
