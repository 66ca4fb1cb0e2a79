use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn route(name: &str, events: Option<&[EventKind]>) -> Route {
    Route {
        name: name.into(),
        events: events.map(|list| list.iter().copied().collect::<BTreeSet<_>>()),
        repeat_every: HOUR,
        send_resolved: true,
    }
}

fn down(upstream: &str) -> Event {
    Event::new(EventKind::UpstreamDown, upstream)
}

fn up(upstream: &str) -> Event {
    Event::new(EventKind::UpstreamRecovered, upstream)
}

/// (sink, event name, status, repeat) of each outgoing alert.
fn summary(step: &Step) -> Vec<(usize, &'static str, AlertStatus, u32)> {
    step.outgoing
        .iter()
        .map(|o| (o.sink, o.alert.name(), o.alert.status, o.alert.repeat))
        .collect()
}

#[test]
fn a_firing_event_gives_one_alert_per_sink_and_repeats_are_folded_in() {
    let mut state = AlertState::new("n1", vec![route("a", None), route("b", None)]);
    let t0 = Instant::now();
    let step = state.on_event(down("https://h.co"), t0);
    assert_eq!(
        summary(&step),
        [
            (0, "upstream_down", AlertStatus::Firing, 0),
            (1, "upstream_down", AlertStatus::Firing, 0)
        ]
    );
    let alert = &step.outgoing[0].alert;
    assert_eq!(alert.node, "n1");
    assert_eq!(alert.incident, EventKind::UpstreamDown);
    assert_eq!(alert.fingerprint, down("https://h.co").fingerprint());
    for i in 1..5 {
        let step = state.on_event(down("https://h.co"), t0 + Duration::from_secs(i * 60));
        assert!(step.outgoing.is_empty());
        assert_eq!(step.suppressed, [0, 1]);
    }
    assert_eq!(state.open_incidents(), 1);
}

#[test]
fn each_subject_is_its_own_incident() {
    let mut state = AlertState::new("n1", vec![route("a", None)]);
    let t0 = Instant::now();
    assert_eq!(state.on_event(down("https://a"), t0).outgoing.len(), 1);
    assert_eq!(state.on_event(down("https://b"), t0).outgoing.len(), 1);
    assert_eq!(state.open_incidents(), 2);
}

#[test]
fn an_open_incident_is_repeated_every_repeat_every_by_the_timer() {
    let mut state = AlertState::new("n1", vec![route("a", None)]);
    let t0 = Instant::now();
    state.on_event(down("https://h.co").with("error", "first"), t0);
    state.on_event(
        down("https://h.co").with("error", "latest"),
        t0 + Duration::from_secs(5),
    );
    assert_eq!(state.next_due(), Some(t0 + HOUR));
    assert!(state
        .on_tick(t0 + HOUR - Duration::from_secs(1))
        .outgoing
        .is_empty());
    let step = state.on_tick(t0 + HOUR);
    assert_eq!(
        summary(&step),
        [(0, "upstream_down", AlertStatus::Firing, 1)]
    );
    assert_eq!(step.outgoing[0].alert.event.details["error"], "latest");
    assert_eq!(state.next_due(), Some(t0 + 2 * HOUR));
    let step = state.on_tick(t0 + 2 * HOUR);
    assert_eq!(
        summary(&step),
        [(0, "upstream_down", AlertStatus::Firing, 2)]
    );
}

#[test]
fn a_republished_firing_event_after_repeat_every_is_a_reminder_not_a_new_incident() {
    let mut state = AlertState::new("n1", vec![route("a", None)]);
    let t0 = Instant::now();
    let first = state.on_event(down("u"), t0);
    let later = state.on_event(down("u"), t0 + HOUR);
    assert_eq!(
        summary(&later),
        [(0, "upstream_down", AlertStatus::Firing, 1)]
    );
    assert_eq!(
        later.outgoing[0].alert.starts_at,
        first.outgoing[0].alert.starts_at
    );
    assert!(
        state.on_tick(t0 + HOUR).outgoing.is_empty(),
        "no double reminder"
    );
}

#[test]
fn resolving_closes_the_incident_with_a_resolved_alert() {
    let mut state = AlertState::new("n1", vec![route("a", None)]);
    let t0 = Instant::now();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let end = start + Duration::from_secs(300);
    state.on_event(down("u").at(start), t0);
    let step = state.on_event(up("u").at(end), t0 + Duration::from_secs(300));
    assert_eq!(
        summary(&step),
        [(0, "upstream_recovered", AlertStatus::Resolved, 0)]
    );
    let alert = &step.outgoing[0].alert;
    assert_eq!(alert.incident, EventKind::UpstreamDown);
    assert_eq!(alert.starts_at, start);
    assert_eq!(alert.ends_at, Some(end));
    assert_eq!(alert.fingerprint, down("u").fingerprint());
    assert_eq!(state.open_incidents(), 0);
    assert_eq!(state.next_due(), None);
    assert!(state.on_tick(t0 + 10 * HOUR).outgoing.is_empty());
    // The next outage is a new incident, announced at once.
    let again = state.on_event(down("u"), t0 + Duration::from_secs(400));
    assert_eq!(
        summary(&again),
        [(0, "upstream_down", AlertStatus::Firing, 0)]
    );
}

#[test]
fn a_resolution_without_an_open_incident_is_ignored() {
    let mut state = AlertState::new("n1", vec![route("a", None)]);
    let step = state.on_event(up("u"), Instant::now());
    assert_eq!(step, Step::default());
    let mut state = AlertState::new("n1", vec![route("a", None)]);
    state.on_event(down("a"), Instant::now());
    assert!(state.on_event(up("b"), Instant::now()).outgoing.is_empty());
}

#[test]
fn send_resolved_false_and_event_filters_apply_per_sink() {
    let quiet = Route {
        send_resolved: false,
        ..route("quiet", None)
    };
    let downs_only = route("downs", Some(&[EventKind::UpstreamDown]));
    let roots_only = route(
        "roots",
        Some(&[EventKind::RootLost, EventKind::RootRecovered]),
    );
    let mut state = AlertState::new("n1", vec![quiet, downs_only, roots_only]);
    let t0 = Instant::now();
    let fired = state.on_event(down("u"), t0);
    assert_eq!(
        summary(&fired),
        [
            (0, "upstream_down", AlertStatus::Firing, 0),
            (1, "upstream_down", AlertStatus::Firing, 0)
        ]
    );
    assert!(state.on_event(up("u"), t0).outgoing.is_empty());
    let lost = state.on_event(Event::new(EventKind::RootLost, "/d1"), t0);
    assert_eq!(lost.outgoing.len(), 2, "quiet (all events) and roots");
    let back = state.on_event(Event::new(EventKind::RootRecovered, "/d1"), t0);
    assert_eq!(
        summary(&back),
        [(2, "root_recovered", AlertStatus::Resolved, 0)]
    );
}

#[test]
fn occurrences_are_folded_for_repeat_every_then_forgotten() {
    let mut state = AlertState::new("n1", vec![route("a", None)]);
    let t0 = Instant::now();
    let blob = "ab".repeat(32);
    let verify = || Event::new(EventKind::VerifyFailed, blob.clone());
    assert_eq!(state.on_event(verify(), t0).outgoing.len(), 1);
    let folded = state.on_event(verify(), t0 + Duration::from_secs(60));
    assert!(folded.outgoing.is_empty());
    assert_eq!(folded.suppressed, [0]);
    // Another blob is another alert.
    let other = Event::new(EventKind::VerifyFailed, "cd".repeat(32));
    assert_eq!(state.on_event(other, t0).outgoing.len(), 1);
    // Occurrences are never repeated by the timer, only forgotten.
    assert!(state.on_tick(t0 + HOUR).outgoing.is_empty());
    assert_eq!(state.next_due(), None);
    let again = state.on_event(verify(), t0 + HOUR + Duration::from_secs(1));
    assert_eq!(
        summary(&again),
        [(0, "verify_failed", AlertStatus::Firing, 0)]
    );
}

#[test]
fn sink_failed_is_not_sent_to_the_sink_it_is_about() {
    let mut state = AlertState::new("n1", vec![route("slack", None), route("wecom", None)]);
    let step = state.on_event(
        Event::new(EventKind::SinkFailed, "slack").with("reason", "HTTP 404"),
        Instant::now(),
    );
    assert_eq!(summary(&step), [(1, "sink_failed", AlertStatus::Firing, 0)]);
}

#[test]
fn repeat_every_is_per_sink() {
    let fast = Route {
        repeat_every: Duration::from_secs(60),
        ..route("fast", None)
    };
    let mut state = AlertState::new("n1", vec![fast, route("slow", None)]);
    let t0 = Instant::now();
    state.on_event(Event::new(EventKind::RootLost, "/d"), t0);
    assert_eq!(state.next_due(), Some(t0 + Duration::from_secs(60)));
    let step = state.on_tick(t0 + Duration::from_secs(60));
    assert_eq!(summary(&step), [(0, "root_lost", AlertStatus::Firing, 1)]);
}
