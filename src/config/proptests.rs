//! Property tests: the config loader never panics, on random text and on mutations of the
//! default config, every error names a key path (or is a syntax error), and sizes and durations
//! round-trip through their written form.

use proptest::prelude::*;

use super::units::{ByteSize, HumanDuration};
use super::{Config, ConfigError, DEFAULT_CONFIG_YAML};

/// Values that stress the loader: wrong types, edge numbers, odd units, YAML specials.
fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("~".to_string()),
        Just("''".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[1, 2]".to_string()),
        Just("{a: 1}".to_string()),
        Just("true".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("1.5".to_string()),
        Just("18446744073709551616".to_string()),
        Just("99999999999999999999d".to_string()),
        Just("18446744073709551615TiB".to_string()),
        Just("0s".to_string()),
        Just("500ms".to_string()),
        Just("auto".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
        Just("*alias".to_string()),
        Just("&anchor x".to_string()),
        Just("http://[::1".to_string()),
        Just("https://u:p@h/x?q#f".to_string()),
        "[0-9]{1,25}(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB|ms|s|m|h|d|x|)",
        "\\PC{0,12}",
    ]
}

/// The default config with one value replaced, one line dropped or some bytes inserted.
fn mutated_default() -> impl Strategy<Value = String> {
    let lines: Vec<String> = DEFAULT_CONFIG_YAML.lines().map(str::to_string).collect();
    let n = lines.len();
    let replace = (0..n, yaml_value()).prop_map({
        let lines = lines.clone();
        move |(i, value)| {
            let mut out = lines.clone();
            if let Some((key, _)) = out[i].split_once(": ") {
                out[i] = format!("{key}: {value}");
            }
            out.join("\n")
        }
    });
    let drop = (0..n).prop_map({
        let lines = lines.clone();
        move |i| {
            let mut out = lines.clone();
            out.remove(i);
            out.join("\n")
        }
    });
    let insert = (0..DEFAULT_CONFIG_YAML.len(), "\\PC{1,8}").prop_map(|(at, junk)| {
        let mut text = DEFAULT_CONFIG_YAML.as_bytes().to_vec();
        text.splice(at..at, junk.into_bytes());
        String::from_utf8_lossy(&text).into_owned()
    });
    prop_oneof![replace, drop, insert]
}

/// Loads `text`; an error must name a key path, or be about the YAML as a whole.
fn load(text: &str) -> Result<Option<Config>, TestCaseError> {
    match Config::from_yaml_str(text) {
        Ok(config) => Ok(Some(config)),
        Err(ConfigError::Syntax { .. }) => Ok(None),
        Err(e) => {
            prop_assert!(e.key_path().is_some(), "no key path: {e}");
            let path = e.key_path().unwrap_or_default();
            prop_assert!(
                e.to_string().starts_with(&format!("{path}: ")),
                "message does not start with the key: {e}"
            );
            Ok(None)
        }
    }
}

/// The rules `docs/configuration.md` promises for every accepted config.
fn check_invariants(c: &Config) -> Result<(), TestCaseError> {
    prop_assert!(c.cache.block_size.is_power_of_two());
    prop_assert!(c.cache.replicas >= 1 && c.cache.replicas <= c.cache_roots().len());
    prop_assert!(c.fill.connections_total >= c.fill.connections_per_file);
    prop_assert!(c.fill.connections_per_file >= 1 && c.fill.background_fills >= 1);
    prop_assert!(c.offline || !c.upstreams.is_empty());
    prop_assert!(c.upstreams.iter().all(|u| !u.timeout.is_zero()));
    let s = &c.server;
    prop_assert!(s.threads >= 1 && s.max_connections >= 1);
    prop_assert!(s.idle_timeout_secs() >= 1);
    for d in [
        s.header_timeout,
        s.body_timeout,
        s.send_timeout,
        s.tcp_keepalive,
    ] {
        prop_assert!(!d.is_zero());
    }
    Ok(())
}

proptest! {
    #[test]
    fn loader_never_panics_on_random_text(text in "\\PC{0,300}") {
        if let Some(c) = load(&text)? {
            check_invariants(&c)?;
        }
    }

    #[test]
    fn loader_never_panics_on_mutated_default_config(text in mutated_default()) {
        if let Some(c) = load(&text)? {
            check_invariants(&c)?;
        }
    }

    #[test]
    fn every_server_key_takes_any_value_without_panicking(
        key in prop::sample::select(vec![
            "threads", "grace_period", "upgrade_sock", "pid_file", "max_connections",
            "header_timeout", "idle_timeout", "body_timeout", "send_timeout", "tcp_keepalive",
        ]),
        value in yaml_value(),
    ) {
        if let Some(c) = load(&format!("server:\n  {key}: {value}\n"))? {
            check_invariants(&c)?;
        }
    }

    #[test]
    fn sizes_round_trip_through_their_written_form(n in any::<u64>()) {
        let text = ByteSize(n).to_string();
        let back: ByteSize = text.parse().map_err(TestCaseError::fail)?;
        prop_assert_eq!(back.0, n, "{}", text);
    }

    #[test]
    fn durations_round_trip_through_their_written_form(ms in 0u64..1 << 50) {
        let d = std::time::Duration::from_millis(ms);
        let text = HumanDuration(d).to_string();
        let back: HumanDuration = text.parse().map_err(TestCaseError::fail)?;
        prop_assert_eq!(back.0, d, "{}", text);
        let c = load(&format!("server: {{send_timeout: {text}}}"))?;
        if ms > 0 {
            prop_assert_eq!(c.map(|c| c.server.send_timeout), Some(d));
        }
    }
}
