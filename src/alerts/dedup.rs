//! From events to alerts: one alert per incident, reminders, resolutions. Pure state, no I/O
//! and no clock of its own (the caller passes `now`), so every rule is tested directly.
//!
//! - A firing event (`upstream_down` for `https://huggingface.co`) opens an incident, keyed by
//!   its [`Fingerprint`] (kind, subject). Each sink that wants it gets one alert. The same event
//!   again while the incident is open is folded into it (suppressed), unless the sink's
//!   `repeat_every` has passed since it was last told: then it gets a reminder. The dispatcher
//!   also asks for due reminders on a timer ([`AlertState::on_tick`]), so an incident reported
//!   once is still repeated while it lasts.
//! - The resolving event (`upstream_recovered`) closes the incident; each sink that wants it
//!   (and `send_resolved`) gets a resolved alert. A resolving event without an open incident
//!   (e.g. after a restart) is ignored.
//! - An occurrence (`verify_failed` for a blob) gets one alert per sink, and repeats of the
//!   same (kind, subject) within `repeat_every` are suppressed.
//! - `sink_failed` about a sink is never sent to that sink.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use hubcache_plugin_api::{Alert, AlertStatus, Event, EventKind, Fingerprint, Lifecycle};

/// What one sink wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The sink's name (`sink_failed` events about it are not sent to it).
    pub name: String,
    /// `None`: every event.
    pub events: Option<BTreeSet<EventKind>>,
    pub repeat_every: Duration,
    pub send_resolved: bool,
}

impl Route {
    fn wants(&self, event: &Event) -> bool {
        let about_itself = event.kind == EventKind::SinkFailed && event.subject == self.name;
        !about_itself
            && self
                .events
                .as_ref()
                .is_none_or(|set| set.contains(&event.kind))
    }
}

/// An alert for the sink with this index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub sink: usize,
    pub alert: Alert,
}

/// What one event or tick produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub outgoing: Vec<Outgoing>,
    /// Sinks for which an event was folded into an alert already sent (one entry per fold).
    pub suppressed: Vec<usize>,
}

#[derive(Debug)]
struct Incident {
    starts_at: SystemTime,
    /// The latest firing event (its details are the freshest).
    event: Event,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    repeat: u32,
}

/// The dispatcher's memory of incidents and of what each sink was told when.
#[derive(Debug)]
pub struct AlertState {
    node: String,
    routes: Vec<Route>,
    open: HashMap<Fingerprint, Incident>,
    sent: HashMap<(usize, Fingerprint), Sent>,
}

impl AlertState {
    pub fn new(node: impl Into<String>, routes: Vec<Route>) -> AlertState {
        AlertState {
            node: node.into(),
            routes,
            open: HashMap::new(),
            sent: HashMap::new(),
        }
    }

    /// Incidents going on now.
    pub fn open_incidents(&self) -> usize {
        self.open.len()
    }

    fn alert(
        &self,
        event: Event,
        status: AlertStatus,
        starts_at: SystemTime,
        repeat: u32,
    ) -> Alert {
        Alert::new(event, status, self.node.clone(), starts_at, repeat)
    }

    /// Folds one event in.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Step {
        match event.kind.lifecycle() {
            Lifecycle::Fires => self.on_firing(event, now),
            Lifecycle::Resolves(_) => self.on_resolved(event),
            Lifecycle::Occurrence => self.on_occurrence(event, now),
        }
    }

    fn on_firing(&mut self, event: Event, now: Instant) -> Step {
        let fp = event.fingerprint();
        let starts_at = self
            .open
            .entry(fp)
            .and_modify(|incident| incident.event = event.clone())
            .or_insert_with(|| Incident {
                starts_at: event.time,
                event: event.clone(),
            })
            .starts_at;
        self.send_due(&event, starts_at, now)
    }

    fn on_occurrence(&mut self, event: Event, now: Instant) -> Step {
        let starts_at = event.time;
        self.send_due(&event, starts_at, now)
    }

    /// Sends `event` to every sink that wants it and was not told within its `repeat_every`.
    fn send_due(&mut self, event: &Event, starts_at: SystemTime, now: Instant) -> Step {
        let fp = event.fingerprint();
        let mut step = Step::default();
        for (sink, route) in self.routes.iter().enumerate() {
            if !route.wants(event) {
                continue;
            }
            let repeat = match self.sent.get(&(sink, fp)) {
                None => 0,
                Some(sent) if now.duration_since(sent.at) >= route.repeat_every => sent.repeat + 1,
                Some(_) => {
                    step.suppressed.push(sink);
                    continue;
                }
            };
            self.sent.insert((sink, fp), Sent { at: now, repeat });
            step.outgoing.push(Outgoing {
                sink,
                alert: self.alert(event.clone(), AlertStatus::Firing, starts_at, repeat),
            });
        }
        step
    }

    fn on_resolved(&mut self, event: Event) -> Step {
        let fp = event.fingerprint();
        let mut step = Step::default();
        let Some(incident) = self.open.remove(&fp) else {
            return step;
        };
        for (sink, route) in self.routes.iter().enumerate() {
            self.sent.remove(&(sink, fp));
            if route.send_resolved && route.wants(&event) {
                step.outgoing.push(Outgoing {
                    sink,
                    alert: self.alert(event.clone(), AlertStatus::Resolved, incident.starts_at, 0),
                });
            }
        }
        step
    }

    /// Reminders that are due, and forgetting occurrences older than `repeat_every`.
    pub fn on_tick(&mut self, now: Instant) -> Step {
        let mut step = Step::default();
        let mut due = Vec::new();
        let routes = &self.routes;
        let open = &self.open;
        self.sent.retain(|&(sink, fp), sent| {
            let expired = now.duration_since(sent.at) >= routes[sink].repeat_every;
            if expired && open.contains_key(&fp) {
                due.push((sink, fp, sent.repeat + 1));
            }
            !expired || open.contains_key(&fp)
        });
        due.sort_unstable_by_key(|&(sink, fp, _)| (sink, fp));
        for (sink, fp, repeat) in due {
            let Some(incident) = self.open.get(&fp) else {
                continue;
            };
            let alert = self.alert(
                incident.event.clone(),
                AlertStatus::Firing,
                incident.starts_at,
                repeat,
            );
            self.sent.insert((sink, fp), Sent { at: now, repeat });
            step.outgoing.push(Outgoing { sink, alert });
        }
        step
    }

    /// When [`on_tick`](Self::on_tick) next has something to do.
    pub fn next_due(&self) -> Option<Instant> {
        self.sent
            .iter()
            .map(|(&(sink, _), sent)| sent.at + self.routes[sink].repeat_every)
            .min()
    }
}

#[cfg(test)]
#[path = "dedup_tests.rs"]
mod tests;
