//! When eviction raises an alarm, and when it clears it: `disk_high` / `disk_ok` per subject
//! (the budget, or one root), `eviction_blocked` with it, and `root_lost` / `root_recovered`
//! from the roots' health. Pure state machines; the service publishes what they answer.
//!
//! `disk_high` fires when a pass could not get back under the limit. If what kept it over is
//! only pinned data (or nothing evictable at all), that is at once; if blobs in use or too
//! young to evict were in the way (which change by themselves: a download ends), only once
//! the condition has lasted [`TRANSIENT_GRACE`], so a large download passing through a small
//! budget does not page anyone. It clears (`disk_ok`) once usage is back under the budget, or
//! under a root's low watermark.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::plan::Blocked;

/// How long the cache may stay over its limit because of blobs in use before `disk_high`.
pub const TRANSIENT_GRACE: Duration = Duration::from_secs(60);

/// What an alarm wants published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `disk_high` (and `eviction_blocked` when something blocked eviction).
    Raise,
    /// `disk_ok`.
    Clear,
}

#[derive(Debug, Default, Clone)]
struct State {
    raised: bool,
    /// Since when passes have ended over the limit.
    over_since: Option<Instant>,
}

/// The `disk_high` alarms, by subject ("" = the budget, else a root's path).
#[derive(Debug, Default)]
pub struct Alarms {
    subjects: BTreeMap<String, State>,
}

impl Alarms {
    /// After evicting for `subject`: still `over` its limit or not, `recovered` (back under
    /// the budget or the low watermark), and what blocked.
    pub fn after_pass(
        &mut self,
        subject: &str,
        over: bool,
        recovered: bool,
        blocked: &Blocked,
        now: Instant,
    ) -> Option<Signal> {
        let state = self.subjects.entry(subject.to_string()).or_default();
        if !over {
            state.over_since = None;
            if recovered && std::mem::take(&mut state.raised) {
                return Some(Signal::Clear);
            }
            return None;
        }
        let since = *state.over_since.get_or_insert(now);
        let transient = blocked.in_use.0 > 0 || blocked.too_young.0 > 0;
        if state.raised || (transient && now.duration_since(since) < TRANSIENT_GRACE) {
            return None;
        }
        state.raised = true;
        Some(Signal::Raise)
    }

    /// A periodic look at `subject`: `recovered` when usage is back under the budget or the
    /// root's low watermark.
    pub fn check(&mut self, subject: &str, recovered: bool) -> Option<Signal> {
        let state = self.subjects.get_mut(subject)?;
        if !recovered {
            return None;
        }
        state.over_since = None;
        if std::mem::take(&mut state.raised) {
            return Some(Signal::Clear);
        }
        None
    }

    /// The subjects whose `disk_high` is raised.
    pub fn raised(&self) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| s.raised)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Root health transitions: which roots are lost.
#[derive(Debug, Default)]
pub struct RootHealth {
    lost: BTreeSet<usize>,
}

impl RootHealth {
    /// Root `root` is `healthy` now: `Some(false)` when it was just lost, `Some(true)` when it
    /// just recovered.
    pub fn update(&mut self, root: usize, healthy: bool) -> Option<bool> {
        match (healthy, self.lost.contains(&root)) {
            (false, false) => {
                self.lost.insert(root);
                Some(false)
            }
            (true, true) => {
                self.lost.remove(&root);
                Some(true)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(in_use: u64, pinned: u64) -> Blocked {
        Blocked {
            in_use: (in_use, in_use * 10),
            pinned: (pinned, pinned * 10),
            too_young: (0, 0),
        }
    }

    #[test]
    fn pinned_data_over_the_limit_raises_at_once_and_only_once() {
        let mut alarms = Alarms::default();
        let t = Instant::now();
        assert_eq!(
            alarms.after_pass("", true, false, &blocked(0, 3), t),
            Some(Signal::Raise)
        );
        assert_eq!(alarms.after_pass("", true, false, &blocked(0, 3), t), None);
        assert_eq!(alarms.raised(), [""]);
        assert_eq!(alarms.check("", false), None);
        assert_eq!(alarms.check("", true), Some(Signal::Clear));
        assert_eq!(alarms.check("", true), None, "one disk_ok per incident");
        assert!(alarms.raised().is_empty());
    }

    #[test]
    fn blobs_in_use_raise_only_when_the_condition_lasts() {
        let mut alarms = Alarms::default();
        let t = Instant::now();
        assert_eq!(
            alarms.after_pass("/d1", true, false, &blocked(1, 0), t),
            None
        );
        let later = t + TRANSIENT_GRACE / 2;
        assert_eq!(
            alarms.after_pass("/d1", true, false, &blocked(1, 0), later),
            None
        );
        // The download ended and eviction got under the limit: nothing was ever sent.
        assert_eq!(
            alarms.after_pass("/d1", false, false, &blocked(0, 0), later),
            None
        );
        assert_eq!(alarms.check("/d1", true), None);
        // Over again for good.
        let t2 = later + Duration::from_secs(1);
        assert_eq!(
            alarms.after_pass("/d1", true, false, &blocked(1, 0), t2),
            None
        );
        let t3 = t2 + TRANSIENT_GRACE;
        assert_eq!(
            alarms.after_pass("/d1", true, false, &blocked(1, 0), t3),
            Some(Signal::Raise)
        );
        // Subjects are independent.
        assert_eq!(alarms.raised(), ["/d1"]);
    }

    #[test]
    fn a_pass_that_gets_back_under_the_limit_clears_the_alarm() {
        let mut alarms = Alarms::default();
        let t = Instant::now();
        let pinned = blocked(0, 1);
        assert_eq!(
            alarms.after_pass("", true, false, &pinned, t),
            Some(Signal::Raise)
        );
        // Under the high watermark but not yet the low one: still raised.
        assert_eq!(alarms.after_pass("", false, false, &pinned, t), None);
        assert_eq!(
            alarms.after_pass("", false, true, &pinned, t),
            Some(Signal::Clear)
        );
        assert_eq!(alarms.after_pass("", false, true, &pinned, t), None);
    }

    #[test]
    fn nothing_left_to_evict_raises_at_once() {
        let mut alarms = Alarms::default();
        let raised = alarms.after_pass("/d2", true, false, &Blocked::default(), Instant::now());
        assert_eq!(raised, Some(Signal::Raise));
    }

    #[test]
    fn roots_are_reported_lost_and_recovered_once_each() {
        let mut health = RootHealth::default();
        assert_eq!(health.update(0, true), None);
        assert_eq!(health.update(1, false), Some(false));
        assert_eq!(health.update(1, false), None);
        assert_eq!(health.update(1, true), Some(true));
        assert_eq!(health.update(1, true), None);
    }
}
