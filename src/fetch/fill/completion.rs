//! Completing a started file in the background (`fill.mode: complete`), at most
//! `background_fills` at a time.
//!
//! Each blob that wants completing gets one task that holds the fill (a started file is
//! completed even when every client went away) and waits for a background slot on a fair
//! semaphore: first come, first served, and a slot freed by anyone wakes the next waiter, so
//! nothing spins and nothing waits beside a free slot. With the slot, the task lets the
//! scheduler fetch every missing block, and gives the slot back once nothing is left to
//! fetch or the completion was called off (cache full, content kept mismatching).

use std::sync::Arc;

use super::BlobFill;
use crate::fetch::context::spawn;
use crate::fetch::FillMode;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    /// The completion task waits for a background slot.
    Waiting,
    /// The completion task holds a slot: the scheduler fetches the whole file.
    Running,
}

#[derive(Debug, Default)]
pub(super) struct Completion {
    phase: Phase,
    called_off: bool,
}

impl Completion {
    /// Someone wants the whole file (the slot may still be awaited).
    pub(super) fn is_wanted(&self) -> bool {
        self.phase != Phase::Idle && !self.called_off
    }

    /// The whole file is being fetched now.
    pub(super) fn is_running(&self) -> bool {
        self.phase == Phase::Running && !self.called_off
    }

    /// Stop completing (the running segments finish; no new ones start for it).
    pub(super) fn call_off(&mut self) {
        self.called_off = true;
    }
}

impl BlobFill {
    /// A client started downloading: in `complete` mode, fetch the rest in the background.
    pub fn want_completion(self: &Arc<Self>) {
        let settings = self.ctx.settings();
        if settings.mode != FillMode::Complete
            || !self.ctx.may_complete()
            || !self.locator.has_source()
        {
            return;
        }
        {
            let mut st = self.state.lock();
            if st.completion.phase != Phase::Idle
                || st.blocks.is_complete()
                || st.out_of_space().is_some()
            {
                return;
            }
            st.completion = Completion {
                phase: Phase::Waiting,
                called_off: false,
            };
        }
        spawn(Arc::clone(self).complete_in_background());
    }

    async fn complete_in_background(self: Arc<Self>) {
        let slot = self.ctx.background.acquire().await;
        if slot.is_ok() {
            self.state.lock().completion.phase = Phase::Running;
            self.schedule();
            let mut changes = self.version.subscribe();
            loop {
                changes.borrow_and_update();
                if self.completion_done() || changes.changed().await.is_err() {
                    break;
                }
            }
        }
        self.state.lock().completion.phase = Phase::Idle;
        drop(slot);
    }

    /// Nothing left for the completion to fetch or wait for (or it is paused: offline, or
    /// the process is shutting down; a later reader starts it again).
    fn completion_done(&self) -> bool {
        let paused = !self.ctx.may_complete();
        let st = self.state.lock();
        st.running == 0 && (st.completion.called_off || paused || st.blocks.is_settled())
    }

    #[cfg(test)]
    pub(in crate::fetch) fn is_completing(&self) -> bool {
        self.state.lock().completion.phase != Phase::Idle
    }
}
