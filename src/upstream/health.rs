//! The health of one upstream: a circuit breaker fed by the outcome of every request
//! (passive), probes while the circuit is open (active, see `probe`), hysteresis on the way
//! back, `Retry-After` throttling, and "suspect" marking of an upstream that owes answers.
//!
//! ```text
//!            fail_after failures in a row, slow_after slow answers in a row, or one timeout
//!   closed ───────────────────────────────────────────────────────────────────────────► open
//!     ▲                                                                                   │
//!     └──────────────── recover_after passing probes (or answers) in a row ───────────────┘
//! ```
//!
//! While open, requests try the upstreams whose circuit is closed first; the open one is still
//! tried last, so a request is never refused only because every upstream looks down.
//! Independently of the circuit:
//! - an upstream that has a request waiting for longer than `slow_threshold`, with no answer
//!   to any request in between, is *suspect*: new requests try it after the ready ones, so a
//!   hanging upstream costs concurrent requests nothing while the first one waits for its
//!   timeout;
//! - an upstream that answered `429` with `Retry-After` is not asked until then.
//!
//! Pure state: every method takes `now`, nothing here does I/O, so the transitions are tested
//! with a synthetic clock.

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::HealthConfig;

/// Why an exchange with an upstream counts against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection refused or reset, DNS or TLS failure.
    Connect,
    /// No answer (or no progress) within the upstream's `timeout`: opens the circuit at once.
    Timeout,
    /// A 5xx answer.
    ServerError,
    /// A 429 without `Retry-After`.
    TooManyRequests,
    /// A body that broke off or came back wrong after its headers.
    Stream,
}

impl FailureKind {
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::ServerError,
        FailureKind::TooManyRequests,
        FailureKind::Stream,
    ];

    /// The `kind` label of `hubcache_upstream_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::ServerError => "5xx",
            FailureKind::TooManyRequests => "429",
            FailureKind::Stream => "stream",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Connect => "connection failed",
            FailureKind::Timeout => "timed out",
            FailureKind::ServerError => "server error",
            FailureKind::TooManyRequests => "too many requests",
            FailureKind::Stream => "body broke off",
        })
    }
}

/// A change of the circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened, for this reason.
    Down(String),
    /// The circuit closed again.
    Recovered,
}

/// Where an upstream stands for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Circuit closed, nothing owed: ask it in config order.
    Ready,
    /// Circuit closed, but a request has waited `slow_threshold` without any answer since.
    Suspect,
    /// Circuit open.
    Down,
    /// It asked (429 + `Retry-After`) not to be asked before this instant.
    Throttled(Instant),
}

impl Standing {
    /// Sort key: lower is asked first. Throttled upstreams are not asked at all.
    pub fn rank(self) -> u8 {
        match self {
            Standing::Ready => 0,
            Standing::Suspect => 1,
            Standing::Down => 2,
            Standing::Throttled(_) => 3,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    open: bool,
    /// Consecutive failures while closed.
    failures: u32,
    /// Consecutive slow answers while closed.
    slow: u32,
    /// Consecutive passing probes (or answers) while open.
    passes: u32,
    /// When the next probe is due (while open).
    next_probe: Option<Instant>,
    probing: bool,
    throttled_until: Option<Instant>,
    /// Requests sent and not yet answered.
    pending: u32,
    /// Since when the upstream has owed an answer without giving any.
    owed_since: Option<Instant>,
}

/// The health of one upstream.
#[derive(Debug)]
pub struct Health {
    config: HealthConfig,
    state: Mutex<State>,
}

impl Health {
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Whether the circuit is closed (the `hubcache_upstream_up` value).
    pub fn is_up(&self) -> bool {
        !self.state.lock().open
    }

    pub fn standing(&self, now: Instant) -> Standing {
        let state = self.state.lock();
        if let Some(until) = state.throttled_until.filter(|until| *until > now) {
            return Standing::Throttled(until);
        }
        if state.open {
            return Standing::Down;
        }
        let owing = state.owed_since.is_some_and(|since| {
            now.saturating_duration_since(since) >= self.config.slow_threshold
        });
        if state.pending > 0 && owing {
            Standing::Suspect
        } else {
            Standing::Ready
        }
    }

    /// A request was sent.
    pub fn begin(&self, now: Instant) {
        let mut state = self.state.lock();
        state.pending += 1;
        state.owed_since.get_or_insert(now);
    }

    /// A request sent with [`begin`](Self::begin) ended: with an outcome (`heard` = the
    /// upstream reacted, answer or error), or cancelled by the caller.
    pub fn end(&self, heard: bool, now: Instant) {
        let mut state = self.state.lock();
        state.pending = state.pending.saturating_sub(1);
        if state.pending == 0 {
            state.owed_since = None;
        } else if heard {
            state.owed_since = Some(now);
        }
    }

    /// An answer arrived after `latency` (response headers; any status that is not a failure).
    pub fn answered(&self, latency: Duration, now: Instant) -> Option<Transition> {
        let slow = latency >= self.config.slow_threshold;
        let mut state = self.state.lock();
        if state.open {
            return self.count_pass(&mut state, !slow);
        }
        state.failures = 0;
        if !slow {
            state.slow = 0;
            return None;
        }
        state.slow += 1;
        if state.slow >= self.config.slow_after {
            let reason = format!(
                "{} slow answers in a row (the last took {} ms, slow_threshold is {} ms)",
                state.slow,
                latency.as_millis(),
                self.config.slow_threshold.as_millis()
            );
            return Some(self.open(&mut state, reason, now));
        }
        None
    }

    /// An exchange failed.
    pub fn failed(&self, kind: FailureKind, now: Instant) -> Option<Transition> {
        let mut state = self.state.lock();
        if state.open {
            state.passes = 0;
            return None;
        }
        state.slow = 0;
        if kind == FailureKind::Timeout {
            return Some(self.open(&mut state, "a request timed out".to_string(), now));
        }
        state.failures += 1;
        if state.failures >= self.config.fail_after {
            let reason = format!("{} failures in a row (the last: {kind})", state.failures);
            return Some(self.open(&mut state, reason, now));
        }
        None
    }

    /// It answered 429 with `Retry-After`: do not ask it before `until`.
    pub fn throttle(&self, until: Instant) {
        let mut state = self.state.lock();
        if state.throttled_until.is_none_or(|t| t < until) {
            state.throttled_until = Some(until);
        }
    }

    /// Whether a probe is due now; if so it is marked as running (one at a time).
    pub fn start_probe(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        let due = state.next_probe.is_some_and(|at| at <= now);
        if !state.open || state.probing || !due {
            return false;
        }
        state.probing = true;
        state.next_probe = Some(now + self.config.probe_every);
        true
    }

    /// A probe started with [`start_probe`](Self::start_probe) ended.
    pub fn probe_done(&self, passed: bool) -> Option<Transition> {
        let mut state = self.state.lock();
        state.probing = false;
        if !state.open {
            return None;
        }
        self.count_pass(&mut state, passed)
    }

    fn count_pass(&self, state: &mut State, passed: bool) -> Option<Transition> {
        if !passed {
            state.passes = 0;
            return None;
        }
        state.passes += 1;
        if state.passes < self.config.recover_after {
            return None;
        }
        state.open = false;
        state.passes = 0;
        state.failures = 0;
        state.slow = 0;
        state.next_probe = None;
        Some(Transition::Recovered)
    }

    fn open(&self, state: &mut State, reason: String, now: Instant) -> Transition {
        state.open = true;
        state.passes = 0;
        state.failures = 0;
        state.slow = 0;
        state.next_probe = Some(now + self.config.probe_every);
        Transition::Down(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(HealthConfig {
            fail_after: 3,
            slow_threshold: Duration::from_secs(2),
            slow_after: 2,
            probe_every: Duration::from_secs(5),
            probe_path: "/".into(),
            recover_after: 3,
        })
    }

    const FAST: Duration = Duration::from_millis(50);

    fn is_down(t: Option<Transition>) -> bool {
        matches!(t, Some(Transition::Down(_)))
    }

    #[test]
    fn consecutive_failures_open_the_circuit_and_an_answer_resets_the_count() {
        let h = health();
        let now = Instant::now();
        assert_eq!(h.failed(FailureKind::Connect, now), None);
        assert_eq!(h.failed(FailureKind::ServerError, now), None);
        assert_eq!(h.answered(FAST, now), None);
        assert_eq!(h.failed(FailureKind::Connect, now), None);
        assert_eq!(h.failed(FailureKind::Connect, now), None);
        assert!(h.is_up());
        assert!(is_down(h.failed(FailureKind::Stream, now)));
        assert!(!h.is_up());
        assert_eq!(h.standing(now), Standing::Down);
        // Further failures while open are no new transition.
        assert_eq!(h.failed(FailureKind::Connect, now), None);
    }

    #[test]
    fn one_timeout_opens_the_circuit() {
        let h = health();
        let now = Instant::now();
        match h.failed(FailureKind::Timeout, now) {
            Some(Transition::Down(reason)) => assert!(reason.contains("timed out"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(h.standing(now), Standing::Down);
    }

    #[test]
    fn slow_answers_in_a_row_open_the_circuit() {
        let h = health();
        let now = Instant::now();
        assert_eq!(h.answered(Duration::from_secs(3), now), None);
        assert_eq!(h.answered(FAST, now), None);
        assert_eq!(h.answered(Duration::from_secs(3), now), None);
        assert!(is_down(h.answered(Duration::from_secs(2), now)));
    }

    #[test]
    fn traffic_returns_only_after_recover_after_passing_probes_in_a_row() {
        let h = health();
        let t0 = Instant::now();
        assert!(is_down(h.failed(FailureKind::Timeout, t0)));
        assert!(!h.start_probe(t0), "the first probe waits probe_every");
        let mut t = t0 + Duration::from_secs(5);
        let probe = |passed: bool, t: &mut Instant| {
            assert!(h.start_probe(*t), "a probe is due");
            assert!(!h.start_probe(*t), "one probe at a time");
            let result = h.probe_done(passed);
            *t += Duration::from_secs(5);
            result
        };
        assert_eq!(probe(true, &mut t), None);
        assert_eq!(probe(true, &mut t), None);
        assert_eq!(
            probe(false, &mut t),
            None,
            "a failed probe starts the count again"
        );
        assert_eq!(probe(true, &mut t), None);
        assert_eq!(probe(true, &mut t), None);
        assert!(!h.is_up());
        assert_eq!(probe(true, &mut t), Some(Transition::Recovered));
        assert!(h.is_up());
        assert_eq!(h.standing(t), Standing::Ready);
        assert!(
            !h.start_probe(t + Duration::from_secs(60)),
            "no probes while closed"
        );
    }

    #[test]
    fn answers_while_open_count_like_probes_but_slow_ones_do_not() {
        let h = health();
        let now = Instant::now();
        h.failed(FailureKind::Timeout, now);
        assert_eq!(h.answered(FAST, now), None);
        assert_eq!(h.answered(FAST, now), None);
        assert_eq!(h.answered(Duration::from_secs(9), now), None);
        assert_eq!(h.answered(FAST, now), None);
        assert_eq!(h.answered(FAST, now), None);
        assert_eq!(h.answered(FAST, now), Some(Transition::Recovered));
    }

    #[test]
    fn a_request_owed_for_slow_threshold_makes_the_upstream_suspect_until_it_answers() {
        let h = health();
        let t0 = Instant::now();
        h.begin(t0);
        assert_eq!(h.standing(t0 + Duration::from_secs(1)), Standing::Ready);
        h.begin(t0 + Duration::from_secs(1));
        assert_eq!(h.standing(t0 + Duration::from_secs(2)), Standing::Suspect);
        // An answer to one of them: the other is timed from now.
        let t3 = t0 + Duration::from_secs(3);
        h.end(true, t3);
        assert_eq!(h.standing(t3 + Duration::from_secs(1)), Standing::Ready);
        assert_eq!(h.standing(t3 + Duration::from_secs(2)), Standing::Suspect);
        // A cancelled request is no answer; the last one leaving clears the debt.
        h.begin(t3);
        h.end(false, t3 + Duration::from_secs(2));
        assert_eq!(h.standing(t3 + Duration::from_secs(2)), Standing::Suspect);
        h.end(false, t3 + Duration::from_secs(2));
        assert_eq!(h.standing(t3 + Duration::from_secs(9)), Standing::Ready);
    }

    #[test]
    fn retry_after_throttles_until_then_without_opening_the_circuit() {
        let h = health();
        let now = Instant::now();
        let until = now + Duration::from_secs(30);
        h.throttle(until);
        h.throttle(now + Duration::from_secs(10));
        assert_eq!(h.standing(now), Standing::Throttled(until));
        assert!(h.is_up());
        assert_eq!(h.standing(until), Standing::Ready);
    }
}
