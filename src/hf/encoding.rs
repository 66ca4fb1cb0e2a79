//! Percent-encoding exactly like `huggingface_hub`, and builders for upstream request paths.
//!
//! The Python client encodes revisions with `quote(rev, safe="")`, tree sub-paths with
//! `quote(path, safe="")` and file paths with `quote(path)` (`safe="/"`). Python's `quote` keeps
//! only `A-Za-z0-9_.-~` (plus `safe`) and writes everything else as `%XX` of the UTF-8 bytes with
//! uppercase hex; the encoders below produce byte-identical strings. Repo ids are never encoded
//! (their alphabet is already URL-safe).

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::repo::{Repo, RepoPath, Revision};

/// Python's `quote(s, safe="")`: everything but `A-Za-z0-9_.-~` is encoded.
pub(crate) const QUOTE_SAFE_NONE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// Python's `quote(s)` (`safe="/"`): like [`QUOTE_SAFE_NONE`] but `/` is kept.
pub(crate) const QUOTE_SAFE_SLASH: &AsciiSet = &QUOTE_SAFE_NONE.remove(b'/');

/// Encodes one path segment like Python's `quote(s, safe="")` (`/` becomes `%2F`).
pub fn encode_path_segment(segment: &str) -> String {
    utf8_percent_encode(segment, QUOTE_SAFE_NONE).to_string()
}

/// Encodes a revision as the client does: `quote(rev, safe="")`, so `refs/pr/1` → `refs%2Fpr%2F1`.
pub fn encode_revision(revision: &Revision) -> String {
    encode_path_segment(revision.as_str())
}

/// Encodes a file path as the client does in resolve URLs: `quote(path)`, slashes kept,
/// e.g. `weird name +#%é.txt` → `weird%20name%20%2B%23%25%C3%A9.txt`.
pub fn encode_repo_path(path: &RepoPath) -> String {
    utf8_percent_encode(path.as_str(), QUOTE_SAFE_SLASH).to_string()
}

/// Decodes one raw path segment exactly once (`%2F` → `/`, `+` stays `+`).
///
/// Returns `None` when the decoded bytes are not UTF-8. Malformed escapes (`%zz`) are kept
/// literally, as Python's `unquote` does.
pub fn decode_path_segment(raw: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(raw).decode_utf8().ok()
}

/// `/{prefix}{repo}/resolve/{quote(rev, safe="")}/{quote(path)}`,
/// e.g. `/datasets/org/name/resolve/refs%2Fpr%2F1/a%20b/c.txt`.
pub fn resolve_path(repo: &Repo, revision: &Revision, path: &RepoPath) -> String {
    format!(
        "/{}{}/resolve/{}/{}",
        repo.kind.url_prefix(),
        repo.id,
        encode_revision(revision),
        encode_repo_path(path)
    )
}

/// `/api/resolve-cache/{plural}/{repo}/{commit}/{quote(path)}`: the commit-pinned target the Hub
/// redirects non-LFS resolves to.
pub fn resolve_cache_path(repo: &Repo, commit: &Revision, path: &RepoPath) -> String {
    format!(
        "/api/resolve-cache/{}/{}/{}/{}",
        repo.kind.api_plural(),
        repo.id,
        encode_revision(commit),
        encode_repo_path(path)
    )
}

/// `/api/{plural}/{repo}`, e.g. `/api/datasets/org/name` (repo info at the default branch).
pub fn api_repo_path(repo: &Repo) -> String {
    format!("/api/{}/{}", repo.kind.api_plural(), repo.id)
}

/// `/api/{plural}/{repo}/revision/{quote(rev, safe="")}`.
pub fn api_revision_path(repo: &Repo, revision: &Revision) -> String {
    format!(
        "{}/revision/{}",
        api_repo_path(repo),
        encode_revision(revision)
    )
}

/// `/api/{plural}/{repo}/tree/{quote(rev, safe="")}[/{quote(path, safe="")}]`, the sub-path in
/// one segment (`a/b` → `a%2Fb`) as `list_repo_tree` sends it.
pub fn api_tree_path(repo: &Repo, revision: &Revision, path: Option<&RepoPath>) -> String {
    let mut out = format!("{}/tree/{}", api_repo_path(repo), encode_revision(revision));
    if let Some(path) = path {
        out.push('/');
        out.push_str(&encode_path_segment(path.as_str()));
    }
    out
}

/// `/api/{plural}/{repo}/paths-info/{quote(rev, safe="")}` (a POST).
pub fn api_paths_info_path(repo: &Repo, revision: &Revision) -> String {
    format!(
        "{}/paths-info/{}",
        api_repo_path(repo),
        encode_revision(revision)
    )
}

/// `/api/{plural}/{repo}/refs`.
pub fn api_refs_path(repo: &Repo) -> String {
    format!("{}/refs", api_repo_path(repo))
}

/// `/api/{plural}/{repo}/xet-read-token/{quote(rev, safe="")}`.
pub fn api_xet_read_token_path(repo: &Repo, revision: &Revision) -> String {
    format!(
        "{}/xet-read-token/{}",
        api_repo_path(repo),
        encode_revision(revision)
    )
}

#[cfg(test)]
mod tests {
    use super::super::repo::{RepoId, RepoType};
    use super::*;

    fn repo(kind: RepoType, id: &str) -> Repo {
        Repo::new(kind, RepoId::new(id).unwrap())
    }

    fn rev(s: &str) -> Revision {
        Revision::new(s).unwrap()
    }

    fn path(s: &str) -> RepoPath {
        RepoPath::new(s).unwrap()
    }

    #[test]
    fn encode_revision_matches_python_quote_safe_empty() {
        // Expected values from Python: urllib.parse.quote(s, safe="")
        assert_eq!(encode_revision(&rev("main")), "main");
        assert_eq!(encode_revision(&rev("refs/pr/1")), "refs%2Fpr%2F1");
        assert_eq!(
            encode_revision(&rev("refs/convert/parquet")),
            "refs%2Fconvert%2Fparquet"
        );
        assert_eq!(encode_revision(&rev("v1.0~rc_1-x")), "v1.0~rc_1-x");
        assert_eq!(encode_revision(&rev("a b+c")), "a%20b%2Bc");
        assert_eq!(encode_revision(&rev("é")), "%C3%A9");
    }

    #[test]
    fn encode_repo_path_matches_python_quote() {
        // Expected values from Python: urllib.parse.quote(s)  (safe="/")
        assert_eq!(
            encode_repo_path(&path("weird name +#%é.txt")),
            "weird%20name%20%2B%23%25%C3%A9.txt"
        );
        assert_eq!(encode_repo_path(&path("a b/c.txt")), "a%20b/c.txt");
        assert_eq!(
            encode_repo_path(&path("dir/file?x=1&y;z:@!$'()*,=.json")),
            "dir/file%3Fx%3D1%26y%3Bz%3A%40%21%24%27%28%29%2A%2C%3D.json"
        );
        assert_eq!(
            encode_repo_path(&path("日本/語.bin")),
            "%E6%97%A5%E6%9C%AC/%E8%AA%9E.bin"
        );
        assert_eq!(encode_repo_path(&path("~a_b-c.d")), "~a_b-c.d");
    }

    #[test]
    fn encode_path_segment_encodes_slash() {
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn decode_of_encode_round_trips() {
        for s in [
            "weird name +#%é.txt",
            "refs/pr/1",
            "a%2Fb",
            "100%",
            "日本/語 bin",
            "plus+plus",
            "tab\tand\"quote<>",
        ] {
            let enc = encode_path_segment(s);
            assert_eq!(decode_path_segment(&enc).unwrap(), s);
            let p = path(s);
            let enc = encode_repo_path(&p);
            let decoded: Vec<String> = enc
                .split('/')
                .map(|seg| decode_path_segment(seg).unwrap().into_owned())
                .collect();
            assert_eq!(decoded.join("/"), s);
        }
    }

    #[test]
    fn decode_keeps_literal_plus_and_rejects_bad_utf8() {
        assert_eq!(decode_path_segment("a+b").unwrap(), "a+b");
        assert_eq!(decode_path_segment("a%2Bb").unwrap(), "a+b");
        assert_eq!(decode_path_segment("%zz").unwrap(), "%zz");
        assert!(decode_path_segment("%FF%FE").is_none());
    }

    #[test]
    fn builders_produce_client_urls() {
        let ds = repo(RepoType::Dataset, "org/name");
        assert_eq!(
            resolve_path(&ds, &rev("refs/pr/1"), &path("a b/c.txt")),
            "/datasets/org/name/resolve/refs%2Fpr%2F1/a%20b/c.txt"
        );
        let m = repo(RepoType::Model, "gpt2");
        assert_eq!(
            resolve_path(&m, &rev("main"), &path("config.json")),
            "/gpt2/resolve/main/config.json"
        );
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            resolve_cache_path(&m, &rev(sha), &path("a b.json")),
            format!("/api/resolve-cache/models/gpt2/{sha}/a%20b.json")
        );
        assert_eq!(api_repo_path(&ds), "/api/datasets/org/name");
        assert_eq!(
            api_revision_path(&ds, &rev("refs/convert/parquet")),
            "/api/datasets/org/name/revision/refs%2Fconvert%2Fparquet"
        );
        assert_eq!(
            api_tree_path(&ds, &rev("main"), Some(&path("a/b"))),
            "/api/datasets/org/name/tree/main/a%2Fb"
        );
        assert_eq!(
            api_tree_path(&ds, &rev("main"), None),
            "/api/datasets/org/name/tree/main"
        );
        let sp = repo(RepoType::Space, "org/app");
        assert_eq!(
            api_paths_info_path(&sp, &rev("refs/pr/2")),
            "/api/spaces/org/app/paths-info/refs%2Fpr%2F2"
        );
        assert_eq!(api_refs_path(&sp), "/api/spaces/org/app/refs");
        assert_eq!(
            api_xet_read_token_path(&m, &rev(sha)),
            format!("/api/models/gpt2/xet-read-token/{sha}")
        );
    }
}
