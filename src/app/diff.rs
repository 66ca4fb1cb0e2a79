//! What a reloaded config file changes: which keys apply live, which need a binary upgrade
//! (new sockets, a new store, Pingora's own `ServerConf`), and the config that is actually
//! applied (the file, with upgrade-only keys kept at their running values). Pure.
//!
//! Every field is destructured by name, so a new config key does not compile until it is
//! classified here as live or upgrade-only.

use crate::config::{
    CacheConfig, Config, EvictionConfig, FillConfig, PluginsConfig, ServerConfig, TlsConfig,
};

/// The outcome of comparing the running config with a reloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to apply: the file's live keys, the running values of the others.
    pub applied: Config,
    /// Live keys whose value changes (dotted paths).
    pub changed: Vec<&'static str>,
    /// Keys the file changes that only a binary upgrade can apply (dotted paths).
    pub needs_upgrade: Vec<&'static str>,
}

/// Compare `running` with `file` (both valid).
pub fn plan(running: &Config, file: Config) -> Plan {
    let mut plan = Plan {
        applied: running.clone(),
        changed: Vec::new(),
        needs_upgrade: Vec::new(),
    };
    let Config {
        listen,
        tls,
        public_url,
        offline,
        revision_ttl,
        auth_ttl,
        cache,
        upstreams,
        fill,
        server,
        watch_config,
        plugins,
        admin,
        log,
        cluster,
        pins,
        pin_refresh,
    } = file;
    let applied = &mut plan.applied;
    let (changed, upgrade) = (&mut plan.changed, &mut plan.needs_upgrade);
    // New sockets.
    keep("listen", &running.listen, &listen, upgrade);
    tls_keys(&mut applied.tls, tls, changed, upgrade);
    // Live.
    take("public_url", &mut applied.public_url, public_url, changed);
    take("offline", &mut applied.offline, offline, changed);
    take(
        "revision_ttl",
        &mut applied.revision_ttl,
        revision_ttl,
        changed,
    );
    take("auth_ttl", &mut applied.auth_ttl, auth_ttl, changed);
    take("upstreams", &mut applied.upstreams, upstreams, changed);
    take("log", &mut applied.log, log, changed);
    // The cluster membership is rebuilt with the settings (nodes keep their health).
    take("cluster", &mut applied.cluster, cluster, changed);
    // Read by the warm-up pin loop at each round.
    take("pins", &mut applied.pins, pins, changed);
    take(
        "pin_refresh",
        &mut applied.pin_refresh,
        pin_refresh,
        changed,
    );
    // The admin listener is a socket; its token is read by the admin service at start.
    keep("admin", &running.admin, &admin, upgrade);
    plugin_keys(&mut applied.plugins, plugins, changed, upgrade);
    take(
        "watch_config",
        &mut applied.watch_config,
        watch_config,
        changed,
    );
    cache_keys(&running.cache, cache, upgrade);
    fill_keys(&mut applied.fill, fill, changed);
    server_keys(&running.server, server, upgrade);
    plan
}

/// `tls`: adding or removing it, or moving `tls.listen`, needs new sockets; the certificate
/// files are re-read on every reload anyway, so new paths apply live.
fn tls_keys(
    applied: &mut Option<TlsConfig>,
    file: Option<TlsConfig>,
    changed: &mut Vec<&'static str>,
    upgrade: &mut Vec<&'static str>,
) {
    match (applied.as_mut(), file) {
        (Some(running), Some(file)) => {
            let TlsConfig { listen, cert, key } = file;
            keep("tls.listen", &running.listen, &listen, upgrade);
            take("tls.cert", &mut running.cert, cert, changed);
            take("tls.key", &mut running.key, key, changed);
        }
        (None, None) => {}
        (_, _) => upgrade.push("tls"),
    }
}

/// The store is opened once: every `cache` key needs an upgrade.
fn cache_keys(running: &CacheConfig, file: CacheConfig, upgrade: &mut Vec<&'static str>) {
    let CacheConfig {
        dir,
        roots,
        replicas,
        block_size,
        durability,
    } = file;
    keep("cache.dir", &running.dir, &dir, upgrade);
    keep("cache.roots", &running.roots, &roots, upgrade);
    keep("cache.replicas", &running.replicas, &replicas, upgrade);
    keep(
        "cache.block_size",
        &running.block_size,
        &block_size,
        upgrade,
    );
    keep(
        "cache.durability",
        &running.durability,
        &durability,
        upgrade,
    );
}

/// Every `fill` key is read by the fill engine for each piece of work (the connection
/// budgets are resized).
fn fill_keys(applied: &mut FillConfig, file: FillConfig, changed: &mut Vec<&'static str>) {
    let FillConfig {
        mode,
        segment,
        connections_per_file,
        connections_total,
        read_ahead,
        background_fills,
        prefetch,
    } = file;
    take("fill.prefetch", &mut applied.prefetch, prefetch, changed);
    take("fill.mode", &mut applied.mode, mode, changed);
    take("fill.segment", &mut applied.segment, segment, changed);
    take(
        "fill.connections_per_file",
        &mut applied.connections_per_file,
        connections_per_file,
        changed,
    );
    take(
        "fill.connections_total",
        &mut applied.connections_total,
        connections_total,
        changed,
    );
    take(
        "fill.read_ahead",
        &mut applied.read_ahead,
        read_ahead,
        changed,
    );
    take(
        "fill.background_fills",
        &mut applied.background_fills,
        background_fills,
        changed,
    );
}

/// `plugins`: the eviction limits and pins apply live (the cache service follows them); the
/// policy and the alert sinks are built once at start, with their state (the index's order,
/// open incidents, queues), so changing them needs an upgrade.
fn plugin_keys(
    applied: &mut PluginsConfig,
    file: PluginsConfig,
    changed: &mut Vec<&'static str>,
    upgrade: &mut Vec<&'static str>,
) {
    let PluginsConfig { eviction, alerts } = file;
    keep("plugins.alerts", &applied.alerts, &alerts, upgrade);
    let EvictionConfig {
        policy,
        max_size,
        high_watermark,
        low_watermark,
        max_idle,
        min_age,
        pin,
    } = eviction;
    keep(
        "plugins.eviction.policy",
        &applied.eviction.policy,
        &policy,
        upgrade,
    );
    let e = &mut applied.eviction;
    take(
        "plugins.eviction.max_size",
        &mut e.max_size,
        max_size,
        changed,
    );
    take(
        "plugins.eviction.high_watermark",
        &mut e.high_watermark,
        high_watermark,
        changed,
    );
    take(
        "plugins.eviction.low_watermark",
        &mut e.low_watermark,
        low_watermark,
        changed,
    );
    take(
        "plugins.eviction.max_idle",
        &mut e.max_idle,
        max_idle,
        changed,
    );
    take("plugins.eviction.min_age", &mut e.min_age, min_age, changed);
    take("plugins.eviction.pin", &mut e.pin, pin, changed);
}

/// `server` is Pingora's `ServerConf` and the files both processes of an upgrade agree on.
fn server_keys(running: &ServerConfig, file: ServerConfig, upgrade: &mut Vec<&'static str>) {
    let ServerConfig {
        threads,
        grace_period,
        runtime_dir,
        upgrade_sock,
        pid_file,
        max_connections,
        header_timeout,
        idle_timeout,
        body_timeout,
        send_timeout,
        tcp_keepalive,
        sendfile,
    } = file;
    keep("server.threads", &running.threads, &threads, upgrade);
    keep(
        "server.grace_period",
        &running.grace_period,
        &grace_period,
        upgrade,
    );
    keep(
        "server.runtime_dir",
        &running.runtime_dir,
        &runtime_dir,
        upgrade,
    );
    keep(
        "server.upgrade_sock",
        &running.upgrade_sock,
        &upgrade_sock,
        upgrade,
    );
    keep("server.pid_file", &running.pid_file, &pid_file, upgrade);
    // Read by the connection gate and the listener, built once at start.
    keep(
        "server.max_connections",
        &running.max_connections,
        &max_connections,
        upgrade,
    );
    keep(
        "server.header_timeout",
        &running.header_timeout,
        &header_timeout,
        upgrade,
    );
    keep(
        "server.idle_timeout",
        &running.idle_timeout,
        &idle_timeout,
        upgrade,
    );
    keep(
        "server.body_timeout",
        &running.body_timeout,
        &body_timeout,
        upgrade,
    );
    keep(
        "server.send_timeout",
        &running.send_timeout,
        &send_timeout,
        upgrade,
    );
    keep(
        "server.tcp_keepalive",
        &running.tcp_keepalive,
        &tcp_keepalive,
        upgrade,
    );
    keep("server.sendfile", &running.sendfile, &sendfile, upgrade);
}

/// A live key: apply the file's value, noting a change.
fn take<T: PartialEq>(
    key: &'static str,
    applied: &mut T,
    file: T,
    changed: &mut Vec<&'static str>,
) {
    if *applied != file {
        *applied = file;
        changed.push(key);
    }
}

/// An upgrade-only key: keep the running value, noting that the file differs.
fn keep<T: PartialEq>(key: &'static str, running: &T, file: &T, upgrade: &mut Vec<&'static str>) {
    if running != file {
        upgrade.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(yaml: &str) -> Config {
        Config::from_yaml_str(yaml).unwrap()
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let running = parse("offline: true\nupstreams: []");
        let plan = plan(&running, running.clone());
        assert_eq!(plan.applied, running);
        assert!(plan.changed.is_empty() && plan.needs_upgrade.is_empty());
    }

    #[test]
    fn live_keys_are_applied_and_listed() {
        let running = parse("upstreams: [{url: http://a:1}, {url: http://b:1}]");
        let file = parse(
            "offline: true\nrevision_ttl: 5s\nauth_ttl: 1m\npublic_url: http://m:1\n\
             log: {level: debug}\nwatch_config: true\nupstreams: [{url: http://b:1}, {url: http://a:1, timeout: 2s}]\n\
             fill: {mode: on_demand, segment: 1MiB, connections_per_file: 2, \
             connections_total: 3, read_ahead: 0, background_fills: 1}",
        );
        let plan = plan(&running, file.clone());
        assert_eq!(plan.applied, file, "every key of this file applies live");
        assert_eq!(
            plan.changed,
            [
                "public_url",
                "offline",
                "revision_ttl",
                "auth_ttl",
                "upstreams",
                "log",
                "watch_config",
                "fill.mode",
                "fill.segment",
                "fill.connections_per_file",
                "fill.connections_total",
                "fill.read_ahead",
                "fill.background_fills",
            ]
        );
        assert!(plan.needs_upgrade.is_empty());
    }

    #[test]
    fn upgrade_only_keys_keep_their_running_value_and_the_rest_still_applies() {
        let running = parse("cache: {dir: /srv/a}");
        let file = parse(
            "listen: 127.0.0.1:9999\nrevision_ttl: 5s\n\
             cache: {roots: [/srv/b, /srv/c], replicas: 2, block_size: 1MiB, durability: fsync}\n\
             server: {threads: 3, grace_period: 1s, runtime_dir: /run/x, upgrade_sock: /run/x/u, \
             pid_file: /run/x/p}",
        );
        let plan = plan(&running, file);
        assert_eq!(
            plan.needs_upgrade,
            [
                "listen",
                "cache.dir",
                "cache.roots",
                "cache.replicas",
                "cache.block_size",
                "cache.durability",
                "server.threads",
                "server.grace_period",
                "server.runtime_dir",
                "server.upgrade_sock",
                "server.pid_file",
            ]
        );
        assert_eq!(plan.changed, ["revision_ttl"]);
        let expected = Config {
            revision_ttl: Duration::from_secs(5),
            ..running.clone()
        };
        assert_eq!(plan.applied, expected);
    }

    #[test]
    fn tls_files_apply_live_and_its_sockets_need_an_upgrade() {
        let tls = |listen: &str, cert: &str| {
            parse(&format!(
                "tls: {{listen: '{listen}', cert: {cert}, key: k.pem}}"
            ))
        };
        let running = tls("0.0.0.0:8443", "a.pem");
        let p = plan(&running, tls("0.0.0.0:8443", "b.pem"));
        assert_eq!(p.changed, vec!["tls.cert"]);
        assert!(p.needs_upgrade.is_empty());
        assert_eq!(
            p.applied.tls.as_ref().map(|t| t.cert.clone()),
            Some("b.pem".into())
        );

        let p = plan(&running, tls("0.0.0.0:9443", "a.pem"));
        assert_eq!(p.needs_upgrade, vec!["tls.listen"]);
        assert_eq!(p.applied.tls, running.tls);

        let plain = parse("offline: false");
        assert_eq!(plan(&plain, running.clone()).needs_upgrade, vec!["tls"]);
        assert_eq!(plan(&running, plain.clone()).needs_upgrade, vec!["tls"]);
        assert_eq!(plan(&running, plain).applied.tls, running.tls);
    }
}
