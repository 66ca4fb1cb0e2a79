//! `hubcache cache gc [--dry-run]` and `hubcache cache ls`: the index as the running mirror
//! sees it (its snapshot, reconciled with the disk, repos and paths from the metadata), and
//! eviction down to the limits with the same policy, pins and locks as the mirror, so both
//! are safe while it runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use hubcache_plugin_api::EvictionPolicy;

use super::pass::{goals, run_goal, Limits, Outcome, Pace, Remover, RootSpace};
use super::service::snapshot_paths;
use super::{disk_blobs, now_millis, BlobInfo, EvictionIndex, Target};
use crate::app::App;
use crate::store::{BlobId, Removal, Store, StoreError};

/// Deletes through the store only (no fill engine in this process): a blob the running
/// mirror (or anyone) has open is refused by its in-use lock.
struct StoreRemover<'a> {
    store: &'a Store,
    dry_run: bool,
}

impl Remover for StoreRemover<'_> {
    fn in_use(&self, _id: &BlobId) -> bool {
        false
    }

    fn remove(&self, id: &BlobId) -> Result<Removal, StoreError> {
        if !self.dry_run {
            return self.store.remove_unused(id);
        }
        if self.store.is_in_use(id)? {
            return Ok(Removal::InUse { root: 0 });
        }
        Ok(Removal::Removed {
            freed: self.store.allocations(id),
        })
    }
}

/// The cache as the mirror sees it, with every blob's repos and files.
pub struct CacheView {
    pub index: EvictionIndex,
    /// blob → (repo, path, commit) of the files it holds.
    pub names: HashMap<BlobId, Vec<(String, String, String)>>,
}

/// Loads the index from its snapshot, reconciles it with the disk and names the files.
pub fn view(app: &App, policy: Arc<dyn EvictionPolicy>) -> Result<CacheView, String> {
    let index = EvictionIndex::new(policy, &app.settings().config.plugins.eviction.pin);
    index.load(&snapshot_paths(&app.store));
    let listed_at = now_millis();
    let (listed, _) = app.store.list_allocated().map_err(|e| e.to_string())?;
    index.reconcile(disk_blobs(listed), listed_at);
    let mut names: HashMap<BlobId, Vec<(String, String, String)>> = HashMap::new();
    for entry in app.meta.catalog() {
        let Ok(id) = BlobId::parse(&entry.blob) else {
            continue;
        };
        index.add_repo(&id, &entry.repo);
        if index.contains(&id) {
            names
                .entry(id)
                .or_default()
                .push((entry.repo, entry.path, entry.commit));
        }
    }
    Ok(CacheView { index, names })
}

/// `1.5 GiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3d 4h ago`, `12s ago`.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s ago"),
        (0, 0, m) => format!("{m}m ago"),
        (0, h, m) => format!("{h}h {m}m ago"),
        (d, h, _) => format!("{d}d {h}h ago"),
    }
}

/// What ranks a blob under `policy`, in words.
fn why(policy: &str, info: &BlobInfo, now: u64) -> String {
    let s = &info.stats;
    match policy {
        "lru" => format!("last read {}", ago(s.last_read, now)),
        "fifo" => format!("first filled {}", ago(s.first_fill, now)),
        "large_first" => format!("{} on disk", bytes(s.allocated)),
        "lfuda" => format!(
            "{} download(s), last read {}",
            s.hits,
            ago(s.last_read, now)
        ),
        _ => format!(
            "last read {}, first filled {}, {} download(s)",
            ago(s.last_read, now),
            ago(s.first_fill, now),
            s.hits
        ),
    }
}

fn names_of(view: &CacheView, info: &BlobInfo) -> String {
    match view.names.get(&info.id) {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|(repo, path, _)| format!("{repo}: {path}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ if !info.repos.is_empty() => info.repos.join(", "),
        _ => "(no repo known)".to_string(),
    }
}

/// Evicts down to the limits (or, `dry_run`, says what would go); the report and whether
/// every goal was met.
pub fn gc(app: &App, view: &CacheView, dry_run: bool) -> (String, bool) {
    let limits = Limits::of(&app.settings().config.plugins.eviction);
    let index = &view.index;
    let now = now_millis();
    let usage = index.usage();
    let mut out = String::new();
    let policy = index.policy_kind();
    let budget = limits.max_size.map_or("none".to_string(), bytes);
    let _ = writeln!(
        out,
        "policy {policy}; budget {budget}; {} files cached, {} on disk",
        usage.blobs,
        bytes(usage.allocated)
    );
    let goals = goals(
        &limits,
        usage.allocated,
        0,
        &RootSpace::of_store(&app.store, &[]),
        true,
        now,
    );
    let remover = StoreRemover {
        store: &app.store,
        dry_run,
    };
    let pace = if dry_run {
        Pace::URGENT
    } else {
        Pace::BACKGROUND
    };
    let mut all_met = true;
    let mut acted = false;
    for goal in &goals {
        let infos: HashMap<BlobId, BlobInfo> = index
            .list()
            .into_iter()
            .map(|info| (info.id.clone(), info))
            .collect();
        let outcome = run_goal(index, &remover, goal, pace, dry_run);
        if outcome.evicted.is_empty() && matches!(goal.request.target, Target::Idle { .. }) {
            continue;
        }
        acted = true;
        all_met &= outcome.reached();
        report_goal(&mut out, view, &infos, &outcome, dry_run, now);
    }
    if !acted {
        let _ = writeln!(out, "nothing to evict: every limit is kept");
    }
    (out, all_met)
}

fn report_goal(
    out: &mut String,
    view: &CacheView,
    infos: &HashMap<BlobId, BlobInfo>,
    outcome: &Outcome,
    dry_run: bool,
    now: u64,
) {
    let goal = &outcome.goal;
    let what = match goal.request.target {
        Target::Free {
            bytes: b,
            root: None,
        } => format!("budget: free {}", bytes(b)),
        Target::Free {
            bytes: b,
            root: Some(_),
        } => {
            format!("watermark of {}: free {}", goal.subject, bytes(b))
        }
        Target::Idle { max_idle } => format!("idle: unread for {}s", max_idle.as_secs()),
    };
    let _ = writeln!(out, "{what} (reason {})", goal.reason.as_str());
    let verb = if dry_run { "would evict" } else { "evicted" };
    let policy = view.index.policy_kind();
    for evicted in &outcome.evicted {
        let Some(info) = infos.get(&evicted.victim.id) else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {verb} {:>10}  {}  blob {}  {}",
            bytes(evicted.victim.stats.allocated),
            why(policy, info, now),
            &info.id.as_str()[..12.min(info.id.as_str().len())],
            names_of(view, info),
        );
    }
    let b = &outcome.blocked;
    let _ = writeln!(
        out,
        "  {} {} of {}; left out: {} in use ({}), {} pinned ({}), {} too young ({})",
        if dry_run { "would free" } else { "freed" },
        bytes(outcome.freed),
        if outcome.wanted > 0 {
            bytes(outcome.wanted)
        } else {
            "what is idle".to_string()
        },
        b.in_use.0,
        bytes(b.in_use.1),
        b.pinned.0,
        bytes(b.pinned.1),
        b.too_young.0,
        bytes(b.too_young.1),
    );
    if !outcome.reached() {
        let _ = writeln!(out, "  short of the goal: nothing else may be evicted");
    }
}

/// How `cache ls` sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Largest on disk first.
    Size,
    /// Most recently read first.
    LastRead,
}

/// One line of `cache ls`.
struct Line {
    label: String,
    files: usize,
    size: u64,
    allocated: u64,
    last_read: u64,
    hits: u64,
    pinned: bool,
}

fn sort_lines(lines: &mut [Line], sort: SortBy) {
    lines.sort_by(|a, b| match sort {
        SortBy::Size => b.allocated.cmp(&a.allocated).then(a.label.cmp(&b.label)),
        SortBy::LastRead => b.last_read.cmp(&a.last_read).then(a.label.cmp(&b.label)),
    });
}

/// Cached repos and their files, by size or last read.
pub fn ls(view: &CacheView, sort: SortBy) -> String {
    let now = now_millis();
    let mut repos: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for info in view.index.list() {
        let s = &info.stats;
        let line = |label: String| Line {
            label,
            files: 1,
            size: s.size,
            allocated: s.allocated,
            last_read: s.last_read,
            hits: s.hits,
            pinned: info.pinned,
        };
        let blob = &info.id.as_str()[..12.min(info.id.as_str().len())];
        match view.names.get(&info.id) {
            Some(names) if !names.is_empty() => {
                let mut seen = std::collections::HashSet::new();
                for (repo, path, commit) in names {
                    if seen.insert((repo, path)) {
                        let label = format!(
                            "{path}  (commit {}, blob {blob})",
                            &commit[..7.min(commit.len())]
                        );
                        repos.entry(repo.clone()).or_default().push(line(label));
                    }
                }
            }
            _ if !info.repos.is_empty() => {
                for repo in &info.repos {
                    repos
                        .entry(repo.clone())
                        .or_default()
                        .push(line(format!("(path unknown, blob {blob})")));
                }
            }
            _ => repos
                .entry("(no repo known)".to_string())
                .or_default()
                .push(line(format!("blob {}", info.id))),
        }
    }
    let mut groups: Vec<(Line, Vec<Line>)> = repos
        .into_iter()
        .map(|(repo, mut files)| {
            sort_lines(&mut files, sort);
            let total = Line {
                label: repo,
                files: files.len(),
                size: files.iter().map(|f| f.size).sum(),
                allocated: files.iter().map(|f| f.allocated).sum(),
                last_read: files.iter().map(|f| f.last_read).max().unwrap_or(0),
                hits: files.iter().map(|f| f.hits).sum(),
                pinned: files.iter().any(|f| f.pinned),
            };
            (total, files)
        })
        .collect();
    groups.sort_by(|(a, _), (b, _)| match sort {
        SortBy::Size => b.allocated.cmp(&a.allocated).then(a.label.cmp(&b.label)),
        SortBy::LastRead => b.last_read.cmp(&a.last_read).then(a.label.cmp(&b.label)),
    });
    let usage = view.index.usage();
    let mut out = format!(
        "{} files cached, {} on disk (policy {})\n{:<10} {:>10} {:>10} {:>14} {:>9}  REPO / FILE\n",
        usage.blobs,
        bytes(usage.allocated),
        view.index.policy_kind(),
        "FILES",
        "SIZE",
        "ON DISK",
        "LAST READ",
        "DOWNLOADS",
    );
    for (repo, files) in groups {
        let pinned = if repo.pinned { "  [pinned]" } else { "" };
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>10} {:>14} {:>9}  {}{pinned}",
            repo.files,
            bytes(repo.size),
            bytes(repo.allocated),
            ago(repo.last_read, now),
            repo.hits,
            repo.label
        );
        for file in files {
            let _ = writeln!(
                out,
                "{:<10} {:>10} {:>10} {:>14} {:>9}    {}",
                "",
                bytes(file.size),
                bytes(file.allocated),
                ago(file.last_read, now),
                file.hits,
                file.label
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_human_wrote_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(1536 << 20), "1.5 GiB");
        assert_eq!(ago(0, 12_000), "12s ago");
        assert_eq!(ago(0, 5 * 60_000 + 1), "5m ago");
        assert_eq!(ago(0, 3_600_000 * 26), "1d 2h ago");
        assert_eq!(ago(10, 0), "0s ago");
    }
}
