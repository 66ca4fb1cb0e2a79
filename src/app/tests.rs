//! Reloading an [`App`]: one swap, old snapshots untouched, refusals change nothing.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::admin::metrics::RELOAD_RESULTS;
use crate::config::ConfigError;

fn config(dir: &std::path::Path, extra: &str) -> Config {
    config_with_cache(dir, "", extra)
}

fn config_with_cache(dir: &std::path::Path, cache: &str, extra: &str) -> Config {
    let yaml = format!(
        "cache: {{dir: {}{cache}}}\nupstreams: [{{url: 'http://127.0.0.1:9/a'}}, {{url: 'http://127.0.0.1:9/b'}}]\n{extra}",
        dir.display()
    );
    Config::from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

fn invalid() -> ConfigError {
    Config::from_yaml_str("revision_ttl: 60").unwrap_err()
}

#[derive(Default)]
struct Heard(Mutex<Vec<ReloadReport>>);

impl ReloadEvents for Heard {
    fn config_reloaded(&self, report: &ReloadReport) {
        self.0.lock().push(report.clone());
    }
}

#[test]
fn a_reload_changes_new_snapshots_and_leaves_taken_ones_alone() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(config(dir.path(), "")).unwrap();
    let before = app.settings();
    let report = app.reload(None, Ok(config(
        dir.path(),
        "offline: true\nrevision_ttl: 5s\nfill: {connections_total: 9, connections_per_file: 3}",
    )));
    assert_eq!(report.result, ReloadResult::Ok, "{report:?}");
    assert_eq!(report.generation, 1);
    let after = app.settings();
    assert!(after.config.offline && after.upstream.is_offline() && after.meta.offline);
    assert_eq!(after.meta.revision_ttl, Duration::from_secs(5));
    assert_eq!(app.fill.settings().connections_total, 9);
    assert!(app.meta.is_offline(), "the metadata service follows");
    assert!(!before.config.offline && !before.upstream.is_offline());
    assert_eq!(before.generation, 0);
}

#[test]
fn an_invalid_file_changes_nothing_and_is_counted_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(config(dir.path(), "")).unwrap();
    let heard = Arc::new(Heard::default());
    app.on_reload(Arc::clone(&heard) as Arc<dyn ReloadEvents>);
    let before = app.settings();
    let report = app.reload(None, Err(invalid()));
    assert_eq!(report.result, ReloadResult::Invalid);
    assert!(
        report.message.contains("revision_ttl"),
        "{}",
        report.message
    );
    assert!(Arc::ptr_eq(&before, &app.settings()), "nothing was swapped");
    let text = String::from_utf8(app.metrics.render()).unwrap();
    assert!(
        text.contains(r#"hubcache_config_reloads_total{result="invalid"} 1"#),
        "{text}"
    );
    app.reload(None, Ok(config(dir.path(), "auth_ttl: 1m")));
    let heard = heard.0.lock();
    let results: Vec<ReloadResult> = heard.iter().map(|r| r.result).collect();
    assert_eq!(results, [ReloadResult::Invalid, ReloadResult::Ok]);
    assert_eq!(heard[1].changed, ["auth_ttl"]);
    assert_eq!(heard[1].attempt, 2);
}

#[test]
fn keys_that_need_an_upgrade_keep_their_value_and_the_rest_applies() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(config(dir.path(), "")).unwrap();
    let report = app.reload(
        None,
        Ok(config_with_cache(
            dir.path(),
            ", block_size: 1MiB",
            "listen: 127.0.0.1:1\nauth_ttl: 2m",
        )),
    );
    assert_eq!(report.result, ReloadResult::Ok);
    assert_eq!(report.needs_upgrade, ["listen", "cache.block_size"]);
    assert_eq!(report.changed, ["auth_ttl"]);
    let now = app.settings();
    assert_eq!(now.config.cache.block_size, 8 << 20);
    assert_eq!(now.fill.block_size, 8 << 20);
    assert_eq!(now.config.listen.map(|l| l.port()), Some(8090));
    assert_eq!(now.meta.auth_ttl, Duration::from_secs(120));
}

#[test]
fn reordered_upstreams_keep_their_objects_and_other_sections_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(config(dir.path(), "")).unwrap();
    let before = app.settings();
    let swapped = format!(
        "cache: {{dir: {}}}\nupstreams: [{{url: 'http://127.0.0.1:9/b'}}, {{url: 'http://127.0.0.1:9/a'}}]",
        dir.path().display()
    );
    app.reload(None, Ok(Config::from_yaml_str(&swapped).unwrap()));
    let after = app.settings();
    assert!(Arc::ptr_eq(
        &before.upstream.all()[0],
        &after.upstream.all()[1]
    ));
    assert!(Arc::ptr_eq(
        &before.upstream.all()[1],
        &after.upstream.all()[0]
    ));
    assert!(
        Arc::ptr_eq(&before.fill, &after.fill),
        "fill section unchanged"
    );
    assert!(Arc::ptr_eq(&before.meta, &after.meta));
    // Only the log level changes: the chain object itself is kept.
    app.reload(
        None,
        Ok(Config {
            log: crate::config::LogConfig {
                level: crate::config::LogLevel::Debug,
                ..after.config.log
            },
            ..after.config.clone()
        }),
    );
    assert!(Arc::ptr_eq(&after.upstream, &app.settings().upstream));
}

#[test]
fn the_same_file_again_is_ok_and_keeps_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(config(dir.path(), "")).unwrap();
    let before = app.settings();
    let report = app.reload(None, Ok(before.config.clone()));
    assert_eq!((report.result, report.generation), (ReloadResult::Ok, 0));
    assert!(Arc::ptr_eq(&before, &app.settings()));
}

#[test]
fn every_reload_result_is_a_metrics_label() {
    let names: Vec<&str> = ReloadResult::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names, RELOAD_RESULTS);
}
