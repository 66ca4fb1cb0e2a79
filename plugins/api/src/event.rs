//! The events hubcache's core publishes.
//!
//! An event is a kind (what happened), a subject (what it happened to: an upstream's URL, a
//! storage root, a blob id; empty for the node as a whole) and free-form details. Kinds come
//! in three [`Lifecycle`]s:
//!
//! - a condition that **fires** (`upstream_down`) and is later **resolved** by its partner
//!   (`upstream_recovered`); the pair shares one [`Fingerprint`] per subject, so the dispatcher
//!   sends one alert per incident, repeats it while it lasts and sends a resolved message when
//!   it clears;
//! - an **occurrence** (`verify_failed`, `rate_limited`): something happened once; repeats of
//!   the same (kind, subject) are folded together for `repeat_every`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

/// How urgent an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a kind starts a condition, ends one, or stands alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Starts a condition that lasts until the resolving kind is published for the same subject.
    Fires,
    /// Ends the condition started by the given kind.
    Resolves(EventKind),
    /// A single occurrence with no end.
    Occurrence,
}

/// What happened. `#[non_exhaustive]`: new kinds may be added in a minor version, so match
/// with a wildcard arm (or use the methods, which every kind implements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// One upstream stopped answering (connect errors, timeouts, 5xx). Subject: its base URL.
    UpstreamDown,
    /// That upstream answers again.
    UpstreamRecovered,
    /// No upstream answers: the mirror serves only what it has (stale-if-error). Subject: "".
    AllUpstreamsDown,
    /// At least one upstream answers again.
    AllUpstreamsRecovered,
    /// An upstream answered 429 (its request budget is spent). Subject: its base URL.
    RateLimited,
    /// A storage root stays over its high watermark or the cache over `max_size` although
    /// eviction ran (nothing more may be evicted). Subject: the root, or "" for the budget.
    DiskHigh,
    /// Back under the low watermark / the budget.
    DiskOk,
    /// A storage root failed (I/O errors, unmounted). Subject: the root's path.
    RootLost,
    /// That root works again.
    RootRecovered,
    /// A completed file did not match its sha256 / git oid and was discarded. Subject: the blob id.
    VerifyFailed,
    /// Eviction wanted to free space but every candidate was in use or pinned. Subject: the
    /// root, or "" for the budget.
    EvictionBlocked,
    /// A config reload was rejected; the old config stays. Subject: the config file.
    ConfigReloadFailed,
    /// An alert sink rejected a notification for good (a revoked webhook URL, ...). Subject:
    /// the sink's name. Never delivered to the sink it is about.
    SinkFailed,
}

impl EventKind {
    /// Every kind, in documentation order.
    pub const ALL: &'static [EventKind] = &[
        EventKind::UpstreamDown,
        EventKind::UpstreamRecovered,
        EventKind::AllUpstreamsDown,
        EventKind::AllUpstreamsRecovered,
        EventKind::RateLimited,
        EventKind::DiskHigh,
        EventKind::DiskOk,
        EventKind::RootLost,
        EventKind::RootRecovered,
        EventKind::VerifyFailed,
        EventKind::EvictionBlocked,
        EventKind::ConfigReloadFailed,
        EventKind::SinkFailed,
    ];

    /// The event's name, as in `plugins.alerts[].events` and the `event` field of payloads.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::UpstreamDown => "upstream_down",
            EventKind::UpstreamRecovered => "upstream_recovered",
            EventKind::AllUpstreamsDown => "all_upstreams_down",
            EventKind::AllUpstreamsRecovered => "all_upstreams_recovered",
            EventKind::RateLimited => "rate_limited",
            EventKind::DiskHigh => "disk_high",
            EventKind::DiskOk => "disk_ok",
            EventKind::RootLost => "root_lost",
            EventKind::RootRecovered => "root_recovered",
            EventKind::VerifyFailed => "verify_failed",
            EventKind::EvictionBlocked => "eviction_blocked",
            EventKind::ConfigReloadFailed => "config_reload_failed",
            EventKind::SinkFailed => "sink_failed",
        }
    }

    /// The kind with this name.
    pub fn from_name(name: &str) -> Option<EventKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    pub fn lifecycle(self) -> Lifecycle {
        use EventKind::*;
        match self {
            UpstreamDown | AllUpstreamsDown | DiskHigh | RootLost => Lifecycle::Fires,
            UpstreamRecovered => Lifecycle::Resolves(UpstreamDown),
            AllUpstreamsRecovered => Lifecycle::Resolves(AllUpstreamsDown),
            DiskOk => Lifecycle::Resolves(DiskHigh),
            RootRecovered => Lifecycle::Resolves(RootLost),
            RateLimited | VerifyFailed | EvictionBlocked | ConfigReloadFailed | SinkFailed => {
                Lifecycle::Occurrence
            }
        }
    }

    /// The kind that names the incident this event belongs to: the firing kind for a
    /// resolving one (`upstream_recovered` → `upstream_down`), the kind itself otherwise.
    pub fn incident(self) -> EventKind {
        match self.lifecycle() {
            Lifecycle::Resolves(fired) => fired,
            Lifecycle::Fires | Lifecycle::Occurrence => self,
        }
    }

    /// The kind that resolves this one (`disk_high` → `disk_ok`), if it is a condition.
    pub fn resolution(self) -> Option<EventKind> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.lifecycle() == Lifecycle::Resolves(self))
    }

    /// How urgent the incident is. Resolving kinds are `Info`.
    pub fn severity(self) -> Severity {
        use EventKind::*;
        match self {
            AllUpstreamsDown | RootLost => Severity::Critical,
            UpstreamDown | RateLimited | DiskHigh | VerifyFailed | EvictionBlocked
            | ConfigReloadFailed | SinkFailed => Severity::Warning,
            UpstreamRecovered | AllUpstreamsRecovered | DiskOk | RootRecovered => Severity::Info,
        }
    }

    /// What the subject is, as a label name: `upstream`, `root`, `blob`, `file`, `sink` or
    /// `node` (the subject is empty: the whole node).
    pub fn subject_label(self) -> &'static str {
        use EventKind::*;
        match self {
            UpstreamDown | UpstreamRecovered | RateLimited => "upstream",
            DiskHigh | DiskOk | RootLost | RootRecovered | EvictionBlocked => "root",
            VerifyFailed => "blob",
            ConfigReloadFailed => "file",
            SinkFailed => "sink",
            AllUpstreamsDown | AllUpstreamsRecovered => "node",
        }
    }

    /// A short sentence about the subject, e.g. "upstream is unreachable".
    pub fn describe(self) -> &'static str {
        use EventKind::*;
        match self {
            UpstreamDown => "upstream is unreachable",
            UpstreamRecovered => "upstream answers again",
            AllUpstreamsDown => "no upstream answers; serving cached content only",
            AllUpstreamsRecovered => "an upstream answers again",
            RateLimited => "upstream rate limit reached (HTTP 429)",
            DiskHigh => "disk use stays above its limit although eviction ran",
            DiskOk => "disk use is back under its limit",
            RootLost => "storage root failed",
            RootRecovered => "storage root works again",
            VerifyFailed => "file failed verification against its hash and was discarded",
            EvictionBlocked => "eviction blocked: every candidate is in use or pinned",
            ConfigReloadFailed => "config reload rejected; the previous config stays",
            SinkFailed => "alert sink rejects notifications",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one incident: the incident kind and the subject. A firing event and the event
/// that resolves it have the same fingerprint. Stable across processes and versions (64-bit
/// FNV-1a), shown as 16 hex digits like Alertmanager's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    pub fn of(kind: EventKind, subject: &str) -> Fingerprint {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let name = kind.incident().name().as_bytes();
        for &byte in name.iter().chain(&[0xff]).chain(subject.as_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
        Fingerprint(hash)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One thing that happened, as published by the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// What it happened to (an upstream's base URL, a root's path, a blob id); empty for the
    /// node as a whole. Never a secret: URLs are published without credentials or keys.
    pub subject: String,
    /// Extra facts for humans and receivers (`status: "503"`, `used: "93%"`); ordered.
    pub details: BTreeMap<String, String>,
    /// When it happened.
    pub time: SystemTime,
}

impl Event {
    /// An event of `kind` about `subject`, happening now.
    pub fn new(kind: EventKind, subject: impl Into<String>) -> Event {
        Event {
            kind,
            subject: subject.into(),
            details: BTreeMap::new(),
            time: SystemTime::now(),
        }
    }

    /// Adds a detail.
    pub fn with(mut self, key: impl Into<String>, value: impl ToString) -> Event {
        self.details.insert(key.into(), value.to_string());
        self
    }

    /// Sets the time (tests, replays).
    pub fn at(mut self, time: SystemTime) -> Event {
        self.time = time;
        self
    }

    /// The incident this event belongs to.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.kind, &self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for &kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(EventKind::from_name("upstream-down"), None);
        assert_eq!(EventKind::from_name(""), None);
    }

    #[test]
    fn conditions_pair_with_their_resolution() {
        let pairs = [
            (EventKind::UpstreamDown, EventKind::UpstreamRecovered),
            (
                EventKind::AllUpstreamsDown,
                EventKind::AllUpstreamsRecovered,
            ),
            (EventKind::DiskHigh, EventKind::DiskOk),
            (EventKind::RootLost, EventKind::RootRecovered),
        ];
        for (fires, resolves) in pairs {
            assert_eq!(fires.lifecycle(), Lifecycle::Fires);
            assert_eq!(fires.resolution(), Some(resolves));
            assert_eq!(resolves.incident(), fires);
            assert_eq!(resolves.severity(), Severity::Info);
        }
        for &kind in EventKind::ALL {
            if kind.lifecycle() == Lifecycle::Fires {
                assert!(kind.resolution().is_some(), "{kind} never resolves");
            }
        }
        assert_eq!(EventKind::VerifyFailed.resolution(), None);
        assert_eq!(EventKind::VerifyFailed.lifecycle(), Lifecycle::Occurrence);
    }

    #[test]
    fn firing_and_resolving_events_share_a_fingerprint_per_subject() {
        let down = Event::new(EventKind::UpstreamDown, "https://huggingface.co");
        let up = Event::new(EventKind::UpstreamRecovered, "https://huggingface.co");
        let other = Event::new(EventKind::UpstreamDown, "https://hf-mirror.com");
        assert_eq!(down.fingerprint(), up.fingerprint());
        assert_ne!(down.fingerprint(), other.fingerprint());
        assert_ne!(
            Fingerprint::of(EventKind::RootLost, "/a"),
            Fingerprint::of(EventKind::DiskHigh, "/a")
        );
    }

    #[test]
    fn fingerprint_is_stable_and_sixteen_hex_digits() {
        // Fixed value: receivers may store fingerprints, so the hash must never change.
        let fp = Fingerprint::of(EventKind::UpstreamDown, "https://huggingface.co");
        assert_eq!(fp.to_string().len(), 16);
        assert_eq!(
            fp,
            Fingerprint::of(EventKind::UpstreamDown, "https://huggingface.co")
        );
        assert_eq!(Fingerprint::of(EventKind::UpstreamDown, "").to_string(), {
            // FNV-1a of "upstream_down" followed by 0xff, computed independently.
            let mut h: u64 = 0xcbf29ce484222325;
            for b in b"upstream_down\xff" {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x100000001b3);
            }
            format!("{h:016x}")
        });
    }

    #[test]
    fn severity_orders_by_urgency() {
        assert!(Severity::Info < Severity::Warning);
        assert!(Severity::Warning < Severity::Critical);
        assert_eq!(EventKind::AllUpstreamsDown.severity(), Severity::Critical);
    }
}
