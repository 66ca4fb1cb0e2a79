//! Alert sinks: where alerts go (a webhook, a chat robot, the log).
//!
//! The core's dispatcher does everything but the formatting and the sending: it folds events
//! into one alert per incident, repeats and resolves them, queues them per sink (a bounded
//! queue), keeps each sink to its [`SinkLimits::rate`], batches what piled up into a digest of
//! at most [`SinkLimits::max_batch`] alerts, times every delivery out, and retries with
//! backoff when the sink answers [`Delivery::Retry`]. A sink formats one [`Notification`] and
//! sends it once.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::event::{Event, EventKind, Fingerprint, Severity};

/// Whether an incident is going on or over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One incident, as told to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The event that caused this notification: the firing event (also for repeats) or the
    /// resolving one. `event.kind.name()` is the payloads' `event` field.
    pub event: Event,
    /// The incident's kind: the firing kind, also in a resolved alert (`upstream_down`).
    pub incident: EventKind,
    pub status: AlertStatus,
    /// The incident's severity (that of its firing kind).
    pub severity: Severity,
    pub fingerprint: Fingerprint,
    /// The hubcache node that raised it.
    pub node: String,
    /// When the incident started.
    pub starts_at: SystemTime,
    /// When it ended (resolved alerts only).
    pub ends_at: Option<SystemTime>,
    /// 0 for the first notification of an incident, n for the n-th reminder.
    pub repeat: u32,
}

impl Alert {
    /// The alert `event` raises on `node`: incident, severity and fingerprint follow from the
    /// event, and a resolved alert ends at the event's time. `repeat`: 0 for the first
    /// notification of the incident, n for the n-th reminder.
    pub fn new(
        event: Event,
        status: AlertStatus,
        node: impl Into<String>,
        starts_at: SystemTime,
        repeat: u32,
    ) -> Alert {
        let incident = event.kind.incident();
        Alert {
            fingerprint: event.fingerprint(),
            incident,
            status,
            severity: incident.severity(),
            node: node.into(),
            starts_at,
            ends_at: (status == AlertStatus::Resolved).then_some(event.time),
            repeat,
            event,
        }
    }

    /// The first notification `event` raises: firing for an incident's own kind, resolved for
    /// the kind that ends one; starting at the event.
    pub fn first(event: Event, node: impl Into<String>) -> Alert {
        let kind = event.kind;
        let status = if kind.incident() == kind {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        };
        let starts_at = event.time;
        Alert::new(event, status, node, starts_at, 0)
    }

    /// The payload's event name (`upstream_down`, `upstream_recovered`, ...).
    pub fn name(&self) -> &'static str {
        self.event.kind.name()
    }

    /// One line for humans: `upstream https://huggingface.co: upstream is unreachable`.
    pub fn summary(&self) -> String {
        let what = self.event.kind.describe();
        if self.event.subject.is_empty() {
            what.to_string()
        } else {
            format!(
                "{} {}: {what}",
                self.event.kind.subject_label(),
                self.event.subject
            )
        }
    }

    /// The details as `key=value` pairs separated by `, ` (empty when there are none).
    pub fn details_line(&self) -> String {
        self.event
            .details
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a sink is asked to deliver: one alert, or a digest of several that piled up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Unique per notification and the same on every retry of it: an idempotency key for
    /// receivers (Standard Webhooks' `webhook-id`).
    pub id: String,
    /// Never empty; at most the sink's [`SinkLimits::max_batch`].
    pub alerts: Vec<Alert>,
}

impl Notification {
    /// More than one alert.
    pub fn is_digest(&self) -> bool {
        self.alerts.len() > 1
    }

    /// `Firing` if any alert is firing.
    pub fn status(&self) -> AlertStatus {
        if self.alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }

    /// The highest severity of a firing alert, `Info` if all are resolved.
    pub fn severity(&self) -> Severity {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Info)
    }
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver took it.
    Delivered,
    /// A transient failure (5xx, 429, a timeout, a connection error): try again, after `after`
    /// if the receiver said so (`Retry-After`), else with the dispatcher's backoff.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The receiver refused it for good (a revoked URL, a bad request): do not retry.
    Permanent { reason: String },
}

impl Delivery {
    pub fn retry(reason: impl Into<String>) -> Delivery {
        Delivery::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Delivery {
        Delivery::Permanent {
            reason: reason.into(),
        }
    }
}

/// At most `messages` notifications per `per`, with bursts up to `messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub messages: u32,
    pub per: Duration,
}

/// What a sink can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkLimits {
    /// Alerts in one notification (1: never a digest).
    pub max_batch: usize,
    /// The receiver's rate limit; alerts that arrive faster are coalesced into digests.
    pub rate: Option<Rate>,
}

impl Default for SinkLimits {
    fn default() -> Self {
        SinkLimits {
            max_batch: 1,
            rate: None,
        }
    }
}

/// Delivers notifications somewhere.
///
/// `Debug` must not print secrets (a webhook URL with a key, a signing secret): wrap them in
/// [`Secret`](crate::Secret). Reasons in [`Delivery`] must not contain them either (strip the
/// URL from HTTP client errors).
#[async_trait]
pub trait AlertSink: Send + Sync + fmt::Debug {
    /// What the sink can take; the dispatcher batches and paces accordingly.
    fn limits(&self) -> SinkLimits {
        SinkLimits::default()
    }

    /// Sends one notification once. The dispatcher applies the timeout and the retries.
    async fn deliver(&self, notification: &Notification) -> Delivery;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: EventKind, subject: &str, status: AlertStatus) -> Alert {
        let event = Event::new(kind, subject).with("status", 503);
        Alert::new(event, status, "n1", SystemTime::UNIX_EPOCH, 0)
    }

    #[test]
    fn summary_names_the_subject_and_what_happened() {
        let a = alert(EventKind::UpstreamDown, "https://h.co", AlertStatus::Firing);
        assert_eq!(
            a.summary(),
            "upstream https://h.co: upstream is unreachable"
        );
        assert_eq!(a.details_line(), "status=503");
        let node = alert(EventKind::AllUpstreamsDown, "", AlertStatus::Firing);
        assert_eq!(
            node.summary(),
            "no upstream answers; serving cached content only"
        );
    }

    #[test]
    fn notification_status_and_severity_follow_firing_alerts() {
        let firing = alert(EventKind::RootLost, "/d1", AlertStatus::Firing);
        let resolved = alert(EventKind::UpstreamRecovered, "u", AlertStatus::Resolved);
        let n = Notification {
            id: "x".into(),
            alerts: vec![resolved.clone(), firing],
        };
        assert!(n.is_digest());
        assert_eq!(n.status(), AlertStatus::Firing);
        assert_eq!(n.severity(), Severity::Critical);
        let n = Notification {
            id: "y".into(),
            alerts: vec![resolved],
        };
        assert_eq!(n.status(), AlertStatus::Resolved);
        assert_eq!(n.severity(), Severity::Info);
    }
}
