//! The two body formats: hubcache's own event JSON and Alertmanager's webhook payload (v4).

use serde_json::{json, Map, Value};

use hubcache_plugin_api::text::rfc3339;
use hubcache_plugin_api::{Alert, AlertStatus, Notification};

/// Alertmanager's "zero time", used as `endsAt` of firing alerts.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// hubcache's format: one alert per request, `event` is the event's name.
///
/// ```json
/// {"event": "upstream_down", "status": "firing", "severity": "warning",
///  "incident": "upstream_down", "node": "node-a", "subject": "https://huggingface.co",
///  "summary": "upstream https://huggingface.co: upstream is unreachable",
///  "time": "2026-12-01T04:54:21Z", "starts_at": "2026-12-01T04:54:21Z", "ends_at": null,
///  "fingerprint": "5f0c...", "repeat": 0, "details": {"error": "connect timeout"}}
/// ```
pub fn event(alert: &Alert) -> Value {
    json!({
        "event": alert.name(),
        "status": alert.status.as_str(),
        "severity": alert.severity.as_str(),
        "incident": alert.incident.name(),
        "node": alert.node,
        "subject": alert.event.subject,
        "summary": alert.summary(),
        "time": rfc3339(alert.event.time),
        "starts_at": rfc3339(alert.starts_at),
        "ends_at": alert.ends_at.map(rfc3339),
        "fingerprint": alert.fingerprint.to_string(),
        "repeat": alert.repeat,
        "details": alert.event.details,
    })
}

/// The labels of an alert: the same while it fires and once resolved, as Alertmanager
/// receivers expect.
fn labels(alert: &Alert) -> Map<String, Value> {
    let mut labels = Map::new();
    labels.insert("alertname".into(), alert.incident.name().into());
    labels.insert("severity".into(), alert.severity.as_str().into());
    labels.insert("node".into(), alert.node.clone().into());
    if !alert.event.subject.is_empty() {
        labels.insert(
            alert.incident.subject_label().into(),
            alert.event.subject.clone().into(),
        );
    }
    labels
}

fn annotations(alert: &Alert) -> Map<String, Value> {
    let mut annotations = Map::new();
    annotations.insert("summary".into(), alert.summary().into());
    annotations.insert("event".into(), alert.name().into());
    let details = alert.details_line();
    if !details.is_empty() {
        annotations.insert("description".into(), details.into());
    }
    annotations
}

/// The key/value pairs every map has in common.
fn common(maps: &[Map<String, Value>]) -> Map<String, Value> {
    let Some((first, rest)) = maps.split_first() else {
        return Map::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Alertmanager's webhook payload (`version: "4"`), so receivers written for Alertmanager work
/// unchanged. The notification's alerts form one group; `groupLabels` is `alertname` when
/// they share one.
pub fn alertmanager(notification: &Notification) -> Value {
    let all_labels: Vec<_> = notification.alerts.iter().map(labels).collect();
    let all_annotations: Vec<_> = notification.alerts.iter().map(annotations).collect();
    let common_labels = common(&all_labels);
    let mut group_labels = Map::new();
    if let Some(name) = common_labels.get("alertname") {
        group_labels.insert("alertname".into(), name.clone());
    }
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let alerts: Vec<Value> = notification
        .alerts
        .iter()
        .zip(all_labels.iter().zip(&all_annotations))
        .map(|(alert, (labels, annotations))| {
            json!({
                "status": alert.status.as_str(),
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(alert.starts_at),
                "endsAt": match (alert.status, alert.ends_at) {
                    (AlertStatus::Resolved, Some(t)) => rfc3339(t),
                    _ => ZERO_TIME.to_string(),
                },
                "generatorURL": "",
                "fingerprint": alert.fingerprint.to_string(),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": notification.status().as_str(),
        "receiver": "hubcache",
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common(&all_annotations),
        "externalURL": "",
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcache_plugin_api::{Event, EventKind};
    use std::time::{Duration, UNIX_EPOCH};

    fn alert(kind: EventKind, subject: &str, status: AlertStatus) -> Alert {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_083_199);
        let event = Event::new(kind, subject).with("error", "timeout").at(t);
        Alert::new(event, status, "node-a", t - Duration::from_secs(60), 0)
    }

    #[test]
    fn event_format_names_the_event_and_carries_the_facts() {
        let a = alert(EventKind::UpstreamDown, "https://h.co", AlertStatus::Firing);
        let v = event(&a);
        assert_eq!(v["event"], "upstream_down");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["subject"], "https://h.co");
        assert_eq!(v["time"], "2026-11-30T23:59:59Z");
        assert_eq!(v["starts_at"], "2026-11-30T23:58:59Z");
        assert_eq!(v["ends_at"], Value::Null);
        assert_eq!(v["details"]["error"], "timeout");
        assert_eq!(v["fingerprint"], a.fingerprint.to_string());
    }

    #[test]
    fn resolved_event_keeps_the_incident_and_gets_an_end() {
        let a = alert(
            EventKind::UpstreamRecovered,
            "https://h.co",
            AlertStatus::Resolved,
        );
        let v = event(&a);
        assert_eq!(v["event"], "upstream_recovered");
        assert_eq!(v["incident"], "upstream_down");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["ends_at"], "2026-11-30T23:59:59Z");
    }

    #[test]
    fn alertmanager_format_matches_the_v4_payload() {
        let n = Notification {
            id: "n1".into(),
            alerts: vec![
                alert(EventKind::UpstreamDown, "https://a", AlertStatus::Firing),
                alert(
                    EventKind::UpstreamRecovered,
                    "https://b",
                    AlertStatus::Resolved,
                ),
            ],
        };
        let v = alertmanager(&n);
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "hubcache");
        assert_eq!(v["truncatedAlerts"], 0);
        assert_eq!(v["groupLabels"]["alertname"], "upstream_down");
        assert_eq!(v["groupKey"], "{}:{alertname=\"upstream_down\"}");
        assert_eq!(v["commonLabels"]["node"], "node-a");
        assert!(v["commonLabels"].get("upstream").is_none());
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0]["labels"]["alertname"], "upstream_down");
        assert_eq!(alerts[0]["labels"]["upstream"], "https://a");
        assert_eq!(alerts[0]["endsAt"], ZERO_TIME);
        assert_eq!(alerts[1]["status"], "resolved");
        assert_eq!(alerts[1]["labels"]["alertname"], "upstream_down");
        assert_eq!(alerts[1]["endsAt"], "2026-11-30T23:59:59Z");
        assert_eq!(alerts[1]["annotations"]["event"], "upstream_recovered");
        assert_eq!(
            alerts[0]["fingerprint"],
            n.alerts[0].fingerprint.to_string()
        );
        for key in ["startsAt", "generatorURL", "annotations"] {
            assert!(alerts[0].get(key).is_some(), "{key}");
        }
    }
}
