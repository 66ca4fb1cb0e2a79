//! Hugging Face Hub protocol knowledge, and nothing else.
//!
//! This module is the one place that knows how the Hub's URLs, headers, error codes and JSON
//! shapes look as the real clients (`huggingface_hub`, `hf-hub`, `transformers`, `datasets`,
//! curl) speak them. It performs no I/O and imports nothing else from the crate, so every part of
//! it is a pure function that can be unit-tested on strings.
//!
//! - [`repo`]: validated [`RepoType`], [`RepoId`], [`Repo`], [`Revision`], [`RepoPath`].
//! - [`route`]: [`parse_route`] classifies a raw (still percent-encoded) request path.
//! - [`encoding`]: percent-encoding exactly like Python's `quote`, and upstream path builders.
//! - [`headers`]: header names, ETag normalisation, Xet header detection.
//! - [`errors`]: [`ErrorCode`] and [`HfError`], the Hub's error answers.
//! - [`xet`]: stripping Xet hints from `Link` headers and JSON bodies.
//! - [`links`]: `Link` header parsing and rewriting, `Location` classification.
//! - [`range`]: reading a single `Range` header to know which bytes a request needs first.
//! - [`forms`]: query and `paths-info` body parsing, canonical cache-key strings.
//! - [`info`]: the few repo-info JSON fields the mirror relies on.
//! - [`listing`]: the files a tree, paths-info or repo-info answer names, as a `HEAD` would
//!   describe them.
//! - [`query`]: the query parameters the Hub reads on cached API routes (the rest is dropped).
//! - [`safe_path`]: [`check_request_path`] refuses `..`, backslashes, NUL and over-long names in any
//!   encoding before a request is routed.

pub mod encoding;
pub mod errors;
pub mod forms;
pub mod headers;
pub mod info;
pub mod links;
pub mod listing;
pub mod query;
pub mod range;
pub mod repo;
pub mod route;
pub mod safe_path;
pub mod xet;

#[cfg(test)]
mod proptests;

pub use encoding::{
    api_paths_info_path, api_refs_path, api_repo_path, api_revision_path, api_tree_path,
    api_xet_read_token_path, decode_path_segment, encode_path_segment, encode_repo_path,
    encode_revision, resolve_cache_path, resolve_path,
};
pub use errors::{ErrorCode, HfError};
pub use forms::{
    canonical_paths_info_key, canonical_query, encode_paths_info_form, parse_bool_param,
    parse_paths_info_body, FormError, PathsInfoRequest,
};
pub use headers::{is_xet_header, normalize_etag, quote_etag};
pub use info::{Gated, InfoError, RepoInfoSummary};
pub use links::{
    find_link, is_hub_cdn_host, rewrite_link_header, rewrite_location, rewrite_url, LocationKind,
};
pub use listing::{listed_in_repo_info, listed_in_tree, ListedFile};
pub use query::{hub_query, ApiQuery, HubQuery};
pub use range::{parse_single_range, RangeRequest};
pub use repo::{is_commit_sha, Repo, RepoId, RepoPath, RepoType, Revision, ValidationError};
pub use route::{parse_route, Route, RouteError};
pub use safe_path::{check_request_path, PathError};
pub use xet::{strip_xet_json, strip_xet_links};
