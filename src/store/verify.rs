//! `hubcache cache verify [--repair]`: check every copy of every blob (each present block's
//! page checksums, complete files against their content hash) and each blob's replica count;
//! with `repair`, invalidate bad blocks (they are fetched again on demand), delete copies whose
//! content does not match their hash, and make missing replicas.

use std::fmt;

use super::{BlobId, ContentCheck, Found, Store, StoreError};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A present block whose page fails its checksum.
    CorruptBlock {
        id: BlobId,
        root: usize,
        block: u64,
        page: u64,
    },
    /// A complete copy whose content does not hash to its id.
    HashMismatch {
        id: BlobId,
        root: usize,
        actual: String,
    },
    /// A copy (or a whole root) that cannot be read.
    Unreadable {
        id: BlobId,
        root: usize,
        reason: String,
    },
    /// Fewer complete copies than `cache.replicas` (and than there are usable roots).
    UnderReplicated {
        id: BlobId,
        complete: usize,
        wanted: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptBlock {
                id,
                root,
                block,
                page,
            } => {
                write!(
                    f,
                    "{id} on root {root}: block {block} (page {page}) fails its checksum"
                )
            }
            Problem::HashMismatch { id, root, actual } => {
                write!(f, "{id} on root {root}: content hashes to {actual}")
            }
            Problem::Unreadable { id, root, reason } => {
                write!(f, "{id} on root {root}: unreadable: {reason}")
            }
            Problem::UnderReplicated {
                id,
                complete,
                wanted,
            } => {
                write!(f, "{id}: {complete} complete copies, {wanted} wanted")
            }
        }
    }
}

/// What `verify` found and did.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blobs: usize,
    pub copies: usize,
    pub blocks_checked: u64,
    pub files_hashed: usize,
    pub problems: Vec<Problem>,
    /// Repairs done (with `repair`).
    pub blocks_invalidated: u64,
    pub copies_removed: usize,
    pub replicas_made: usize,
    /// Repairs that failed.
    pub repair_errors: Vec<String>,
}

impl VerifyReport {
    /// Whether the cache is healthy now (no problems, or every problem repaired).
    pub fn is_clean(&self, repaired: bool) -> bool {
        if repaired {
            self.repair_errors.is_empty()
                && !self
                    .problems
                    .iter()
                    .any(|p| matches!(p, Problem::Unreadable { .. }))
        } else {
            self.problems.is_empty()
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} blobs, {} copies, {} blocks checked, {} complete files hashed",
            self.blobs, self.copies, self.blocks_checked, self.files_hashed
        )?;
        for problem in &self.problems {
            writeln!(f, "problem: {problem}")?;
        }
        if self.blocks_invalidated + self.copies_removed as u64 + self.replicas_made as u64 > 0 {
            writeln!(
                f,
                "repaired: {} blocks invalidated (fetched again on demand), {} copies removed, {} replicas made",
                self.blocks_invalidated, self.copies_removed, self.replicas_made
            )?;
        }
        for error in &self.repair_errors {
            writeln!(f, "repair failed: {error}")?;
        }
        Ok(())
    }
}

impl Store {
    /// Check every copy of every blob; with `repair`, fix what can be fixed.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for id in self.list_blobs()? {
            report.blobs += 1;
            self.verify_blob(&id, repair, &mut report);
        }
        Ok(report)
    }

    fn verify_blob(&self, id: &BlobId, repair: bool, report: &mut VerifyReport) {
        let all: Vec<usize> = (0..self.roots.len()).collect();
        let survey = {
            let _stripe = self.stripe(id).lock();
            self.survey(id, &all)
        };
        let mut complete = 0;
        let usable = survey
            .iter()
            .filter(|(_, found)| !matches!(found, Found::Unreadable(_)))
            .count();
        for (root, found) in survey {
            let blob = match found {
                Found::Copy(blob) => blob,
                Found::Missing => continue,
                Found::Unreadable(reason) => {
                    report.problems.push(Problem::Unreadable {
                        id: id.clone(),
                        root,
                        reason,
                    });
                    continue;
                }
            };
            report.copies += 1;
            let mut bad_blocks = Vec::new();
            let mut unreadable = None;
            for block in (0..blob.block_count()).filter(|b| blob.is_present(*b)) {
                report.blocks_checked += 1;
                match blob.scan_block(block) {
                    Ok(None) => {}
                    Ok(Some(page)) => {
                        report.problems.push(Problem::CorruptBlock {
                            id: id.clone(),
                            root,
                            block,
                            page,
                        });
                        bad_blocks.push(block);
                    }
                    Err(e) => {
                        unreadable = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(reason) = unreadable {
                report.problems.push(Problem::Unreadable {
                    id: id.clone(),
                    root,
                    reason,
                });
                continue;
            }
            if repair {
                for block in &bad_blocks {
                    match blob.invalidate_block(*block) {
                        Ok(()) => report.blocks_invalidated += 1,
                        Err(e) => report.repair_errors.push(format!("{id}: {e}")),
                    }
                }
            }
            if !bad_blocks.is_empty() || !blob.is_complete() {
                continue;
            }
            report.files_hashed += 1;
            match blob.verify_content() {
                Ok(ContentCheck::Match) => {
                    complete += 1;
                    if !blob.is_verified() {
                        if let Err(e) = blob.mark_verified() {
                            report.repair_errors.push(format!("{id}: {e}"));
                        }
                    }
                }
                Ok(ContentCheck::NotApplicable) => complete += 1,
                Ok(ContentCheck::Mismatch { actual }) => {
                    report.problems.push(Problem::HashMismatch {
                        id: id.clone(),
                        root,
                        actual,
                    });
                    if repair {
                        match self.remove_copy(root, id) {
                            Ok(()) => report.copies_removed += 1,
                            Err(e) => report.repair_errors.push(format!("{id}: {e}")),
                        }
                    }
                }
                Err(e) => report.problems.push(Problem::Unreadable {
                    id: id.clone(),
                    root,
                    reason: e.to_string(),
                }),
            }
        }
        let wanted = self.replicas.min(usable.max(1));
        if complete > 0 && complete < wanted {
            report.problems.push(Problem::UnderReplicated {
                id: id.clone(),
                complete,
                wanted,
            });
            if repair {
                match self.replicate(id) {
                    Ok(made) => report.replicas_made += made,
                    Err(e) => report.repair_errors.push(format!("{id}: {e}")),
                }
            }
        }
    }

    /// Delete the copy of `id` on one root.
    fn remove_copy(&self, root: usize, id: &BlobId) -> Result<(), StoreError> {
        let _stripe = self.stripe(id).lock();
        let Some(root) = self.roots.get(root) else {
            return Ok(());
        };
        root.forget(id);
        let path = root.blob_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove blob", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;
    use sha2::{Digest, Sha256};
    use std::io::{Seek, SeekFrom, Write};

    const BLOCK: u64 = 64 << 10;

    fn content() -> Vec<u8> {
        (0..(3 * BLOCK + 100))
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    fn put(store: &Store, data: &[u8]) -> BlobId {
        let id = BlobId::parse(&hex::encode(Sha256::digest(data))).unwrap();
        let blob = store
            .create_blob(&id, data.len() as u64, BLOCK, true)
            .unwrap();
        for (i, chunk) in data.chunks(BLOCK as usize).enumerate() {
            blob.put_block(i as u64, chunk).unwrap();
        }
        id
    }

    fn flip_byte(store: &Store, root: usize, id: &BlobId, content_offset: u64) {
        let blob = store.open_blob(id).unwrap().unwrap();
        let data_offset = blob.layout().data_offset();
        let path = store.blob_path(root, id).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        file.seek(SeekFrom::Start(data_offset + content_offset))
            .unwrap();
        file.write_all(&[0xff ^ content()[content_offset as usize]])
            .unwrap();
    }

    #[test]
    fn healthy_cache_verifies_clean() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Os).unwrap();
        put(&store, &content());
        let report = store.verify(false).unwrap();
        assert!(report.is_clean(false), "{report}");
        assert_eq!(
            (report.blobs, report.blocks_checked, report.files_hashed),
            (1, 4, 1)
        );
    }

    #[test]
    fn flipped_byte_is_reported_and_repair_invalidates_only_that_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Os).unwrap();
        let id = put(&store, &content());
        flip_byte(&store, 0, &id, BLOCK + 5);
        let report = store.verify(false).unwrap();
        assert!(
            matches!(
                report.problems[..],
                [Problem::CorruptBlock { block: 1, .. }]
            ),
            "{report}"
        );
        let blob = store.open_blob(&id).unwrap().unwrap();
        assert!(
            blob.is_present(1),
            "verify without --repair changed the blob"
        );
        let repaired = store.verify(true).unwrap();
        assert_eq!(repaired.blocks_invalidated, 1);
        let blob = store.open_blob(&id).unwrap().unwrap();
        assert!(!blob.is_present(1) && blob.is_present(0) && blob.is_present(2));
        assert!(store.verify(false).unwrap().is_clean(false));
    }

    #[test]
    fn content_not_matching_its_id_is_removed_by_repair() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Os).unwrap();
        let data = content();
        let wrong_id = BlobId::parse(&"ab".repeat(32)).unwrap();
        let blob = store
            .create_blob(&wrong_id, data.len() as u64, BLOCK, true)
            .unwrap();
        for (i, chunk) in data.chunks(BLOCK as usize).enumerate() {
            blob.put_block(i as u64, chunk).unwrap();
        }
        let report = store.verify(false).unwrap();
        assert!(
            matches!(report.problems[..], [Problem::HashMismatch { .. }]),
            "{report}"
        );
        let repaired = store.verify(true).unwrap();
        assert_eq!(repaired.copies_removed, 1);
        assert!(store.open_blob(&wrong_id).unwrap().is_none());
    }

    #[test]
    fn missing_replica_is_reported_and_remade() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let roots = [a.path().to_path_buf(), b.path().to_path_buf()];
        let store = Store::open_roots(&roots, 2, Durability::Os).unwrap();
        let id = put(&store, &content());
        store.replicate(&id).unwrap();
        let other = store.placement(&id)[1];
        std::fs::remove_file(store.blob_path(other, &id).unwrap()).unwrap();
        let report = store.verify(false).unwrap();
        assert!(
            matches!(
                report.problems[..],
                [Problem::UnderReplicated {
                    complete: 1,
                    wanted: 2,
                    ..
                }]
            ),
            "{report}"
        );
        let repaired = store.verify(true).unwrap();
        assert_eq!(repaired.replicas_made, 1);
        assert!(store.verify(false).unwrap().is_clean(false));
    }
}
