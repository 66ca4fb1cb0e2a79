//! Classifying a request by its raw (still percent-encoded) path.
//!
//! Routing happens on the raw path, and each segment is decoded exactly once, because the clients
//! put `/` inside single segments: revisions arrive as `quote(rev, safe="")` (`refs%2Fpr%2F1`) and
//! tree sub-paths as `quote(path, safe="")` (`a%2Fb`). Decoding the whole path first (as olah
//! does) would split them.
//!
//! Repo ids are one segment (`gpt2`) or two (`org/name`). Where both readings fit, the two-segment
//! one wins (the keyword is looked for at index 2 after the repo type first, then at index 1).

use std::borrow::Cow;

use super::encoding::{
    api_paths_info_path, api_refs_path, api_repo_path, api_revision_path, api_tree_path,
    api_xet_read_token_path, decode_path_segment, resolve_cache_path, resolve_path,
};
use super::repo::{is_commit_sha, Repo, RepoId, RepoPath, RepoType, Revision, ValidationError};

/// A request the mirror understands, with its parts decoded and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `HEAD|GET /{prefix}{repo}/resolve/{rev}/{path...}`: a file.
    Resolve {
        /// The repo.
        repo: Repo,
        /// The revision as asked (branch, tag, ref or sha).
        revision: Revision,
        /// The file.
        path: RepoPath,
    },
    /// `HEAD|GET /api/resolve-cache/{plural}/{repo}/{commit}/{path...}`: the commit-pinned target
    /// the Hub redirects small files to (the query string is ignored; old clients drop it).
    ResolveCache {
        /// The repo.
        repo: Repo,
        /// Always a full commit sha ([`Revision::is_commit`]).
        commit: Revision,
        /// The file.
        path: RepoPath,
    },
    /// `GET /api/{plural}/{repo}` (revision `None`) or `GET /api/{plural}/{repo}/revision/{rev}`.
    RepoInfo {
        /// The repo.
        repo: Repo,
        /// The revision, if one was named.
        revision: Option<Revision>,
    },
    /// `GET /api/{plural}/{repo}/tree/{rev}[/{path}]`: a folder listing (query: `recursive`,
    /// `expand`, `cursor`, `limit`).
    Tree {
        /// The repo.
        repo: Repo,
        /// The revision.
        revision: Revision,
        /// The sub-folder, `None` for the repo root. Arrives as one `%2F`-encoded segment or as
        /// literal segments; a trailing `/` is ignored.
        path: Option<RepoPath>,
    },
    /// `POST /api/{plural}/{repo}/paths-info/{rev}`: entries for the paths in the body.
    PathsInfo {
        /// The repo.
        repo: Repo,
        /// The revision.
        revision: Revision,
    },
    /// `GET /api/{plural}/{repo}/refs`: branches, tags, converts (and PRs with `include_prs=1`).
    Refs {
        /// The repo.
        repo: Repo,
    },
    /// `GET /api/{plural}/{repo}/xet-read-token/{rev}`: a Xet CAS token.
    XetReadToken {
        /// The repo.
        repo: Repo,
        /// The revision.
        revision: Revision,
    },
    /// Anything else (other endpoints, other methods): passed through.
    Other,
}

impl Route {
    /// The repo the route is about, if any.
    pub fn repo(&self) -> Option<&Repo> {
        match self {
            Route::Resolve { repo, .. }
            | Route::ResolveCache { repo, .. }
            | Route::RepoInfo { repo, .. }
            | Route::Tree { repo, .. }
            | Route::PathsInfo { repo, .. }
            | Route::Refs { repo }
            | Route::XetReadToken { repo, .. } => Some(repo),
            Route::Other => None,
        }
    }

    /// The revision named in the route, if any (the commit for `ResolveCache`).
    pub fn revision(&self) -> Option<&Revision> {
        match self {
            Route::Resolve { revision, .. }
            | Route::Tree { revision, .. }
            | Route::PathsInfo { revision, .. }
            | Route::XetReadToken { revision, .. } => Some(revision),
            Route::ResolveCache { commit, .. } => Some(commit),
            Route::RepoInfo { revision, .. } => revision.as_ref(),
            Route::Refs { .. } | Route::Other => None,
        }
    }

    /// A short stable name for logs and metric labels: `resolve`, `resolve_cache`, `repo_info`,
    /// `tree`, `paths_info`, `refs`, `xet_read_token`, `other`.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Resolve { .. } => "resolve",
            Route::ResolveCache { .. } => "resolve_cache",
            Route::RepoInfo { .. } => "repo_info",
            Route::Tree { .. } => "tree",
            Route::PathsInfo { .. } => "paths_info",
            Route::Refs { .. } => "refs",
            Route::XetReadToken { .. } => "xet_read_token",
            Route::Other => "other",
        }
    }

    /// The canonical upstream path for this route, encoded as the Python client would encode it
    /// (no query string); `None` for [`Route::Other`].
    pub fn upstream_path(&self) -> Option<String> {
        Some(match self {
            Route::Resolve {
                repo,
                revision,
                path,
            } => resolve_path(repo, revision, path),
            Route::ResolveCache { repo, commit, path } => resolve_cache_path(repo, commit, path),
            Route::RepoInfo {
                repo,
                revision: None,
            } => api_repo_path(repo),
            Route::RepoInfo {
                repo,
                revision: Some(revision),
            } => api_revision_path(repo, revision),
            Route::Tree {
                repo,
                revision,
                path,
            } => api_tree_path(repo, revision, path.as_ref()),
            Route::PathsInfo { repo, revision } => api_paths_info_path(repo, revision),
            Route::Refs { repo } => api_refs_path(repo),
            Route::XetReadToken { repo, revision } => api_xet_read_token_path(repo, revision),
            Route::Other => return None,
        })
    }
}

/// Why a request that looks like a Hub route was rejected; the proxy answers 400 with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A percent-decoded segment is not UTF-8.
    #[error("path segment {segment:?} is not valid UTF-8 once percent-decoded")]
    InvalidUtf8 {
        /// The raw segment.
        segment: String,
    },
    /// A repo id, revision or path broke the rules.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A `resolve-cache` path without a 40-hex commit after the repo id.
    #[error("resolve-cache path {path:?} has no 40-hex commit after the repo id")]
    MissingCommit {
        /// The raw request path.
        path: String,
    },
}

/// Classifies a request by method and raw path (percent-encoded, as received; a `?query` suffix
/// is ignored). Returns [`Route::Other`] for anything that is not one of the routes, and an error
/// when it is one but carries an invalid repo id, revision or path (e.g. a `..` segment).
pub fn parse_route(method: &str, raw_path: &str) -> Result<Route, RouteError> {
    let path = raw_path.split_once('?').map_or(raw_path, |(p, _)| p);
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(Route::Other);
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let read = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
    let post = method.eq_ignore_ascii_case("POST");
    match segs.split_first() {
        Some((&"api", api)) => parse_api(read, post, api, path),
        _ if read => parse_resolve(&segs),
        _ => Ok(Route::Other),
    }
}

/// `/{prefix}{repo}/resolve/{rev}/{path...}` with `segs` the segments after the leading `/`.
fn parse_resolve(segs: &[&str]) -> Result<Route, RouteError> {
    let (kind, rest) = match segs.split_first() {
        Some((first, rest)) => match RepoType::from_prefix_segment(first) {
            Some(kind) => (kind, rest),
            None => (RepoType::Model, segs),
        },
        None => return Ok(Route::Other),
    };
    for id_len in [2, 1] {
        // repo id, "resolve", revision, at least one path segment
        if rest.len() >= id_len + 3 && rest[id_len] == "resolve" {
            let repo = repo_from(kind, &rest[..id_len])?;
            let revision = Revision::new(&decode(rest[id_len + 1])?)?;
            let path = RepoPath::new(&decode_join(&rest[id_len + 2..])?)?;
            return Ok(Route::Resolve {
                repo,
                revision,
                path,
            });
        }
    }
    Ok(Route::Other)
}

/// `/api/...` with `segs` the segments after `api`.
fn parse_api(read: bool, post: bool, segs: &[&str], raw_path: &str) -> Result<Route, RouteError> {
    let Some((&first, rest)) = segs.split_first() else {
        return Ok(Route::Other);
    };
    if first == "resolve-cache" {
        return parse_resolve_cache(read, rest, raw_path);
    }
    let Some(kind) = RepoType::from_plural(first) else {
        return Ok(Route::Other);
    };
    if rest.first().is_none_or(|s| s.is_empty()) {
        return Ok(Route::Other);
    }
    for id_len in [2, 1] {
        let Some(&keyword) = rest.get(id_len) else {
            continue;
        };
        let after = &rest[id_len + 1..];
        let route = match keyword {
            "revision" if !after.is_empty() => {
                if !read {
                    return Ok(Route::Other);
                }
                Route::RepoInfo {
                    repo: repo_from(kind, &rest[..id_len])?,
                    revision: Some(Revision::new(&decode_join(after)?)?),
                }
            }
            "tree" if !after.is_empty() => {
                if !read {
                    return Ok(Route::Other);
                }
                let revision = Revision::new(&decode(after[0])?)?;
                let sub = decode_join(&after[1..])?;
                let sub = sub.trim_end_matches('/');
                Route::Tree {
                    repo: repo_from(kind, &rest[..id_len])?,
                    revision,
                    path: if sub.is_empty() {
                        None
                    } else {
                        Some(RepoPath::new(sub)?)
                    },
                }
            }
            "paths-info" if !after.is_empty() => {
                if !post {
                    return Ok(Route::Other);
                }
                Route::PathsInfo {
                    repo: repo_from(kind, &rest[..id_len])?,
                    revision: Revision::new(&decode_join(after)?)?,
                }
            }
            "refs" if after.is_empty() => {
                if !read {
                    return Ok(Route::Other);
                }
                Route::Refs {
                    repo: repo_from(kind, &rest[..id_len])?,
                }
            }
            "xet-read-token" if !after.is_empty() => {
                if !read {
                    return Ok(Route::Other);
                }
                Route::XetReadToken {
                    repo: repo_from(kind, &rest[..id_len])?,
                    revision: Revision::new(&decode_join(after)?)?,
                }
            }
            _ => continue,
        };
        return Ok(route);
    }
    if rest.len() <= 2 && read {
        return Ok(Route::RepoInfo {
            repo: repo_from(kind, rest)?,
            revision: None,
        });
    }
    Ok(Route::Other)
}

/// `/api/resolve-cache/{plural}/{repo}/{commit}/{path...}` with `segs` after `resolve-cache`.
fn parse_resolve_cache(read: bool, segs: &[&str], raw_path: &str) -> Result<Route, RouteError> {
    let Some((kind, rest)) = segs
        .split_first()
        .and_then(|(plural, rest)| RepoType::from_plural(plural).map(|k| (k, rest)))
    else {
        return Ok(Route::Other);
    };
    if !read {
        return Ok(Route::Other);
    }
    for id_len in [2, 1] {
        // repo id, commit, at least one path segment
        if rest.len() >= id_len + 2 && is_commit_sha(rest[id_len]) {
            let repo = repo_from(kind, &rest[..id_len])?;
            let commit = Revision::new(rest[id_len])?;
            let path = RepoPath::new(&decode_join(&rest[id_len + 1..])?)?;
            return Ok(Route::ResolveCache { repo, commit, path });
        }
    }
    Err(RouteError::MissingCommit {
        path: raw_path.to_string(),
    })
}

fn repo_from(kind: RepoType, id_segs: &[&str]) -> Result<Repo, RouteError> {
    let id = decode_join(id_segs)?;
    Ok(Repo::new(kind, RepoId::new(&id)?))
}

fn decode(raw: &str) -> Result<Cow<'_, str>, RouteError> {
    decode_path_segment(raw).ok_or_else(|| RouteError::InvalidUtf8 {
        segment: raw.to_string(),
    })
}

/// Decodes each raw segment once and joins them with `/`.
fn decode_join(segs: &[&str]) -> Result<String, RouteError> {
    let mut out = String::new();
    for (i, seg) in segs.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&decode(seg)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn repo(kind: RepoType, id: &str) -> Repo {
        Repo::new(kind, RepoId::new(id).unwrap())
    }

    fn rev(s: &str) -> Revision {
        Revision::new(s).unwrap()
    }

    fn path(s: &str) -> RepoPath {
        RepoPath::new(s).unwrap()
    }

    fn resolve(kind: RepoType, id: &str, r: &str, p: &str) -> Route {
        Route::Resolve {
            repo: repo(kind, id),
            revision: rev(r),
            path: path(p),
        }
    }

    fn get(raw: &str) -> Route {
        parse_route("GET", raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn resolve_model_two_segment_id() {
        assert_eq!(
            get("/openai-community/gpt2/resolve/main/config.json"),
            resolve(
                RepoType::Model,
                "openai-community/gpt2",
                "main",
                "config.json"
            )
        );
    }

    #[test]
    fn resolve_model_one_segment_id() {
        assert_eq!(
            get("/gpt2/resolve/main/config.json"),
            resolve(RepoType::Model, "gpt2", "main", "config.json")
        );
        assert_eq!(
            get("/bert-base-uncased/resolve/main/sub/vocab.txt"),
            resolve(
                RepoType::Model,
                "bert-base-uncased",
                "main",
                "sub/vocab.txt"
            )
        );
    }

    #[test]
    fn resolve_head_is_resolve_too() {
        assert_eq!(
            parse_route("HEAD", "/org/name/resolve/main/a.bin").unwrap(),
            resolve(RepoType::Model, "org/name", "main", "a.bin")
        );
    }

    #[test]
    fn resolve_dataset_and_space_and_kernel_prefixes() {
        assert_eq!(
            get("/datasets/org/name/resolve/main/data/train.parquet"),
            resolve(RepoType::Dataset, "org/name", "main", "data/train.parquet")
        );
        assert_eq!(
            get("/datasets/squad/resolve/main/README.md"),
            resolve(RepoType::Dataset, "squad", "main", "README.md")
        );
        assert_eq!(
            get("/spaces/org/app/resolve/main/app.py"),
            resolve(RepoType::Space, "org/app", "main", "app.py")
        );
        assert_eq!(
            get("/kernels/org/k/resolve/main/build.toml"),
            resolve(RepoType::Kernel, "org/k", "main", "build.toml")
        );
    }

    #[test]
    fn resolve_decodes_pr_and_convert_refs() {
        assert_eq!(
            get("/org/name/resolve/refs%2Fpr%2F1/config.json"),
            resolve(RepoType::Model, "org/name", "refs/pr/1", "config.json")
        );
        assert_eq!(
            get("/datasets/org/name/resolve/refs%2Fconvert%2Fparquet/default/train/0000.parquet"),
            resolve(
                RepoType::Dataset,
                "org/name",
                "refs/convert/parquet",
                "default/train/0000.parquet"
            )
        );
    }

    #[test]
    fn resolve_with_full_sha_is_commit() {
        let route = get(&format!("/org/name/resolve/{SHA}/model.safetensors"));
        assert_eq!(
            route,
            resolve(RepoType::Model, "org/name", SHA, "model.safetensors")
        );
        assert!(route.revision().unwrap().is_commit());
    }

    #[test]
    fn resolve_decodes_weird_file_name_once() {
        assert_eq!(
            get("/org/name/resolve/main/dir/weird%20name%20%2B%23%25%C3%A9.txt"),
            resolve(
                RepoType::Model,
                "org/name",
                "main",
                "dir/weird name +#%é.txt"
            )
        );
        // a literal '+' is a plus, not a space; %2520 decodes once to "%20"
        assert_eq!(
            get("/org/name/resolve/main/a+b%2520c.txt"),
            resolve(RepoType::Model, "org/name", "main", "a+b%20c.txt")
        );
    }

    #[test]
    fn resolve_ignores_query_string() {
        assert_eq!(
            get("/org/name/resolve/main/config.json?download=true"),
            resolve(RepoType::Model, "org/name", "main", "config.json")
        );
    }

    #[test]
    fn resolve_rejects_traversal_and_bad_ids() {
        for raw in [
            "/org/name/resolve/main/../secret",
            "/org/name/resolve/main/a/%2E%2E/b",
            "/org/name/resolve/..%2F..%2Fx/file",
            "/org/name/resolve/main/dir/",
            "/org/name/resolve/main/a//b",
            "/o--rg/name/resolve/main/a",
            "/datasets/org/-name/resolve/main/a",
            "/org/name/resolve/main/%FF.bin",
            "/org/name/resolve/main/a%5Cb",
        ] {
            assert!(parse_route("GET", raw).is_err(), "{raw} should be rejected");
        }
        let err = parse_route("GET", "/org/name/resolve/main/../secret").unwrap_err();
        assert!(err.to_string().contains("\"main/../secret\"") || err.to_string().contains(".."));
    }

    #[test]
    fn resolve_other_methods_are_other() {
        assert_eq!(
            parse_route("POST", "/org/name/resolve/main/a").unwrap(),
            Route::Other
        );
        assert_eq!(
            parse_route("PUT", "/org/name/resolve/main/../a").unwrap(),
            Route::Other
        );
    }

    #[test]
    fn resolve_cache_two_and_one_segment() {
        assert_eq!(
            get(&format!(
                "/api/resolve-cache/models/mlx-community/Qwen3.5-9B-4bit/{SHA}/config.json?%2Fx=&etag=%22a%22"
            )),
            Route::ResolveCache {
                repo: repo(RepoType::Model, "mlx-community/Qwen3.5-9B-4bit"),
                commit: rev(SHA),
                path: path("config.json"),
            }
        );
        assert_eq!(
            get(&format!(
                "/api/resolve-cache/datasets/squad/{SHA}/a%20b/c.json"
            )),
            Route::ResolveCache {
                repo: repo(RepoType::Dataset, "squad"),
                commit: rev(SHA),
                path: path("a b/c.json"),
            }
        );
        assert!(parse_route("GET", "/api/resolve-cache/models/org/name/main/config.json").is_err());
        assert!(parse_route(
            "GET",
            &format!("/api/resolve-cache/models/org/name/{SHA}/../x")
        )
        .is_err());
        assert_eq!(
            parse_route("POST", &format!("/api/resolve-cache/models/a/{SHA}/x")).unwrap(),
            Route::Other
        );
    }

    #[test]
    fn repo_info_without_and_with_revision() {
        assert_eq!(
            get("/api/models/org/name"),
            Route::RepoInfo {
                repo: repo(RepoType::Model, "org/name"),
                revision: None
            }
        );
        assert_eq!(
            get("/api/models/gpt2?blobs=true"),
            Route::RepoInfo {
                repo: repo(RepoType::Model, "gpt2"),
                revision: None
            }
        );
        assert_eq!(
            get("/api/datasets/org/name/revision/refs%2Fconvert%2Fparquet"),
            Route::RepoInfo {
                repo: repo(RepoType::Dataset, "org/name"),
                revision: Some(rev("refs/convert/parquet"))
            }
        );
        assert_eq!(
            get("/api/spaces/gradio/revision/main"),
            Route::RepoInfo {
                repo: repo(RepoType::Space, "gradio"),
                revision: Some(rev("main"))
            }
        );
        // literal slashes in a revision are accepted too
        assert_eq!(
            get("/api/models/org/name/revision/refs/pr/3"),
            Route::RepoInfo {
                repo: repo(RepoType::Model, "org/name"),
                revision: Some(rev("refs/pr/3"))
            }
        );
        assert!(parse_route("GET", "/api/models/org/name/revision/..").is_err());
        assert!(parse_route("GET", "/api/models/or..g/name").is_err());
    }

    #[test]
    fn tree_root_sub_path_and_encoded_slash() {
        assert_eq!(
            get(&format!(
                "/api/models/org/name/tree/{SHA}?recursive=true&expand=false"
            )),
            Route::Tree {
                repo: repo(RepoType::Model, "org/name"),
                revision: rev(SHA),
                path: None
            }
        );
        assert_eq!(
            get("/api/datasets/org/name/tree/main/a%2Fb"),
            Route::Tree {
                repo: repo(RepoType::Dataset, "org/name"),
                revision: rev("main"),
                path: Some(path("a/b"))
            }
        );
        assert_eq!(
            get("/api/datasets/org/name/tree/refs%2Fpr%2F1/a/b"),
            Route::Tree {
                repo: repo(RepoType::Dataset, "org/name"),
                revision: rev("refs/pr/1"),
                path: Some(path("a/b"))
            }
        );
        assert_eq!(
            get("/api/models/gpt2/tree/main/additional_chat_templates"),
            Route::Tree {
                repo: repo(RepoType::Model, "gpt2"),
                revision: rev("main"),
                path: Some(path("additional_chat_templates"))
            }
        );
        assert_eq!(
            get("/api/models/org/name/tree/main/sub%2F"),
            Route::Tree {
                repo: repo(RepoType::Model, "org/name"),
                revision: rev("main"),
                path: Some(path("sub"))
            }
        );
        assert!(parse_route("GET", "/api/models/org/name/tree/main/a%2F..%2Fb").is_err());
    }

    #[test]
    fn paths_info_is_post_only() {
        assert_eq!(
            parse_route("POST", "/api/datasets/org/name/paths-info/refs%2Fpr%2F1").unwrap(),
            Route::PathsInfo {
                repo: repo(RepoType::Dataset, "org/name"),
                revision: rev("refs/pr/1")
            }
        );
        assert_eq!(
            parse_route("POST", "/api/models/gpt2/paths-info/main").unwrap(),
            Route::PathsInfo {
                repo: repo(RepoType::Model, "gpt2"),
                revision: rev("main")
            }
        );
        assert_eq!(
            parse_route("GET", "/api/models/org/name/paths-info/main").unwrap(),
            Route::Other
        );
    }

    #[test]
    fn refs_one_and_two_segment() {
        assert_eq!(
            get("/api/models/org/name/refs?include_prs=1"),
            Route::Refs {
                repo: repo(RepoType::Model, "org/name")
            }
        );
        assert_eq!(
            get("/api/datasets/squad/refs"),
            Route::Refs {
                repo: repo(RepoType::Dataset, "squad")
            }
        );
    }

    #[test]
    fn xet_read_token_route() {
        assert_eq!(
            get(&format!("/api/models/org/name/xet-read-token/{SHA}")),
            Route::XetReadToken {
                repo: repo(RepoType::Model, "org/name"),
                revision: rev(SHA)
            }
        );
        assert_eq!(
            get("/api/spaces/app/xet-read-token/main"),
            Route::XetReadToken {
                repo: repo(RepoType::Space, "app"),
                revision: rev("main")
            }
        );
    }

    #[test]
    fn unknown_paths_are_other() {
        for raw in [
            "/",
            "",
            "relative/path",
            "/api",
            "/api/models",
            "/api/models/",
            "/api/whoami-v2",
            "/api/agent-harnesses",
            "/api/models/org/name/commits/main",
            "/api/models/org/name/tree",
            "/api/datasets/org/name/parquet/default/train",
            "/api/models/org/name/discussions/1",
            "/org/name",
            "/org/name/blob/main/config.json",
            "/org/name/resolve/main",
            "/models/org/name/resolve",
            "/datasets/resolve/main/x",
            "/static/app.js",
        ] {
            assert_eq!(
                parse_route("GET", raw).unwrap_or_else(|e| panic!("{raw}: {e}")),
                Route::Other,
                "{raw}"
            );
        }
    }

    #[test]
    fn read_routes_with_post_are_other() {
        for raw in [
            "/api/models/org/name",
            "/api/models/org/name/revision/main",
            "/api/models/org/name/tree/main",
            "/api/models/org/name/refs",
            "/api/models/org/name/xet-read-token/main",
        ] {
            assert_eq!(parse_route("POST", raw).unwrap(), Route::Other, "{raw}");
        }
    }

    #[test]
    fn upstream_path_re_encodes_like_the_client() {
        for raw in [
            "/datasets/org/name/resolve/refs%2Fpr%2F1/dir/weird%20name%20%2B%23%25%C3%A9.txt",
            "/api/models/org/name/revision/refs%2Fpr%2F1",
            "/api/models/org/name",
            "/api/models/org/name/tree/main/a%2Fb",
            "/api/models/org/name/refs",
            "/api/spaces/a/xet-read-token/main",
        ] {
            assert_eq!(get(raw).upstream_path().as_deref(), Some(raw));
        }
        // a literal-slash tree path comes out in the client's one-segment form
        assert_eq!(
            get("/api/models/org/name/tree/main/a/b")
                .upstream_path()
                .unwrap(),
            "/api/models/org/name/tree/main/a%2Fb"
        );
        let pi = parse_route("POST", "/api/models/gpt2/paths-info/main").unwrap();
        assert_eq!(
            pi.upstream_path().unwrap(),
            "/api/models/gpt2/paths-info/main"
        );
        assert_eq!(pi.name(), "paths_info");
        assert_eq!(Route::Other.upstream_path(), None);
    }
}
