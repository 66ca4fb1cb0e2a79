//! Blocks another process is filling (old and new process during a graceful upgrade share
//! the cache directory): watched until they are on disk, or until their claim is released
//! without them (then they are fetched here).

use std::time::Duration;

use super::BlobFill;
use crate::fetch::context::{blocking, spawn};
use crate::store::StoreError;

/// How often blocks being filled elsewhere are checked.
const POLL_EVERY: Duration = Duration::from_millis(200);

impl BlobFill {
    /// Watch blocks another process is filling until none is left.
    pub(super) fn watch_elsewhere(&self) {
        {
            let mut st = self.state.lock();
            if st.polling {
                return;
            }
            st.polling = true;
        }
        let Some(this) = self.this() else { return };
        spawn(async move { this.poll_elsewhere().await });
    }

    async fn poll_elsewhere(&self) {
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let (copy, waiting) = {
                let mut st = self.state.lock();
                if !st.polling {
                    return; // the copy was replaced; its poller is gone
                }
                let waiting = st.blocks.elsewhere();
                if waiting.is_empty() {
                    st.polling = false;
                    return;
                }
                (st.copy(), waiting)
            };
            let file = std::sync::Arc::clone(&copy.file);
            let checked = blocking(move || {
                file.reload_bitmap()?;
                let mut done = Vec::new();
                let mut abandoned = Vec::new();
                for block in waiting {
                    if file.is_present(block) {
                        done.push(block);
                    } else if file.try_claim_block(block)?.is_some() {
                        // The other process let go without committing it: ours to fetch.
                        abandoned.push(block);
                    }
                }
                Ok::<_, StoreError>((done, abandoned))
            })
            .await;
            let (done, abandoned) = match checked {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => {
                    log::warn!("{}: watching blocks filled elsewhere: {e}", self.id);
                    continue;
                }
                Err(e) => {
                    log::warn!("{}: watching blocks filled elsewhere: {e}", self.id);
                    continue;
                }
            };
            if done.is_empty() && abandoned.is_empty() {
                continue;
            }
            self.with_current(&copy, |st| st.blocks.resolve_elsewhere(&done, &abandoned));
            self.notify();
            self.schedule();
            self.check_completed();
        }
    }
}
