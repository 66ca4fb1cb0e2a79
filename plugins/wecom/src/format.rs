//! WeCom message bodies: markdown (≤ 4096 bytes) or text (≤ 2048 bytes), one alert or a
//! digest. A digest lists as many alerts as fit and says how many did not.

use hubcache_plugin_api::text::{rfc3339, truncate_utf8};
use hubcache_plugin_api::{Alert, AlertStatus, Notification, Severity};

/// WeCom's limit on `markdown.content`, in bytes of UTF-8.
pub const MARKDOWN_LIMIT: usize = 4096;
/// WeCom's limit on `text.content`, in bytes of UTF-8.
pub const TEXT_LIMIT: usize = 2048;

/// `msgtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Markdown,
    Text,
}

impl MsgType {
    pub fn limit(self) -> usize {
        match self {
            MsgType::Markdown => MARKDOWN_LIMIT,
            MsgType::Text => TEXT_LIMIT,
        }
    }
}

fn markdown_block(alert: &Alert) -> String {
    let (color, status) = match (alert.status, alert.severity) {
        (AlertStatus::Resolved, _) => ("info", "RESOLVED"),
        (AlertStatus::Firing, Severity::Info) => ("comment", "FIRING"),
        (AlertStatus::Firing, _) => ("warning", "FIRING"),
    };
    let mut block = format!(
        "<font color=\"{color}\">**{status}**</font> `{}` · {}\n> {}\n> node `{}` · since {}",
        alert.name(),
        alert.severity,
        alert.summary(),
        alert.node,
        rfc3339(alert.starts_at),
    );
    if alert.repeat > 0 {
        block.push_str(&format!(" · reminder {}", alert.repeat));
    }
    let details = alert.details_line();
    if !details.is_empty() {
        block.push_str(&format!("\n> {details}"));
    }
    block.push('\n');
    block
}

fn text_block(alert: &Alert) -> String {
    let mut block = format!(
        "[{}] {} ({}) on {}\n{}",
        alert.status.as_str().to_uppercase(),
        alert.name(),
        alert.severity,
        alert.node,
        alert.summary()
    );
    let details = alert.details_line();
    if !details.is_empty() {
        block.push('\n');
        block.push_str(&details);
    }
    block.push('\n');
    block
}

/// The `content` for a notification, within the type's byte limit.
pub fn content(notification: &Notification, msgtype: MsgType) -> String {
    let limit = msgtype.limit();
    let block = match msgtype {
        MsgType::Markdown => markdown_block,
        MsgType::Text => text_block,
    };
    let total = notification.alerts.len();
    let mut out = if total > 1 {
        match msgtype {
            MsgType::Markdown => format!("**hubcache: {total} alerts**\n"),
            MsgType::Text => format!("hubcache: {total} alerts\n"),
        }
    } else {
        String::new()
    };
    // Room kept for the "and N more" line.
    let reserve = 40;
    for (shown, alert) in notification.alerts.iter().enumerate() {
        let next = block(alert);
        let last = shown + 1 == total;
        let budget = if last { limit } else { limit - reserve };
        if out.len() + next.len() > budget {
            if shown == 0 {
                // One alert larger than the limit: cut it.
                return truncate_utf8(&format!("{out}{next}"), limit, "\n…(truncated)");
            }
            out.push_str(&format!("…and {} more alerts\n", total - shown));
            return out;
        }
        out.push_str(&next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcache_plugin_api::{Event, EventKind};
    use std::time::UNIX_EPOCH;

    fn alert(kind: EventKind, subject: &str) -> Alert {
        let event = Event::new(kind, subject).with("error", "timeout");
        let mut alert = Alert::first(event, "node-a");
        alert.starts_at = UNIX_EPOCH;
        alert
    }

    fn notification(alerts: Vec<Alert>) -> Notification {
        Notification {
            id: "1".into(),
            alerts,
        }
    }

    #[test]
    fn markdown_shows_status_event_subject_and_details() {
        let text = content(
            &notification(vec![alert(EventKind::UpstreamDown, "https://h.co")]),
            MsgType::Markdown,
        );
        assert!(text.starts_with("<font color=\"warning\">**FIRING**</font> `upstream_down`"));
        assert!(text.contains("> upstream https://h.co: upstream is unreachable"));
        assert!(text.contains("> error=timeout"));
        let resolved = content(
            &notification(vec![alert(EventKind::UpstreamRecovered, "https://h.co")]),
            MsgType::Markdown,
        );
        assert!(resolved.starts_with("<font color=\"info\">**RESOLVED**</font>"));
    }

    #[test]
    fn text_is_plain() {
        let text = content(
            &notification(vec![alert(EventKind::RootLost, "/d1")]),
            MsgType::Text,
        );
        assert_eq!(
            text,
            "[FIRING] root_lost (critical) on node-a\nroot /d1: storage root failed\nerror=timeout\n"
        );
    }

    #[test]
    fn a_digest_that_does_not_fit_lists_what_fits_and_counts_the_rest() {
        let alerts: Vec<Alert> = (0..200)
            .map(|i| alert(EventKind::VerifyFailed, &format!("{i:064x}")))
            .collect();
        for msgtype in [MsgType::Markdown, MsgType::Text] {
            let text = content(&notification(alerts.clone()), msgtype);
            assert!(
                text.len() <= msgtype.limit(),
                "{} > {}",
                text.len(),
                msgtype.limit()
            );
            assert!(text.contains("hubcache: 200 alerts"), "{text}");
            let shown = text.matches("verify_failed").count();
            assert!(shown >= 5, "{shown}");
            assert!(
                text.ends_with(&format!("…and {} more alerts\n", 200 - shown)),
                "{text}"
            );
        }
    }

    #[test]
    fn one_oversized_alert_is_cut_on_a_character_boundary() {
        let mut a = alert(EventKind::VerifyFailed, "x");
        a.event.details.insert("note".into(), "磁盘".repeat(2000));
        for msgtype in [MsgType::Markdown, MsgType::Text] {
            let text = content(&notification(vec![a.clone()]), msgtype);
            assert!(text.len() <= msgtype.limit());
            assert!(text.ends_with("…(truncated)"));
        }
    }
}
