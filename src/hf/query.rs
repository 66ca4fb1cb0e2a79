//! The query parameters the Hub reads on the API routes the mirror caches, and nothing else.
//!
//! A cached answer is keyed by its query, so every parameter kept is a way for clients to make
//! the cache grow. Only the parameters the Hub uses are kept (sent upstream and part of the
//! key); any other is dropped, so `?x=1`, `?x=2`, ... all share one answer. In the key,
//! booleans are normalised (`True`, `true` and `1` are one key) and pairs sorted; the query
//! sent upstream keeps the client's spelling.

use percent_encoding::{percent_decode_str, percent_encode};

use super::encoding::QUOTE_SAFE_NONE;
use super::forms::parse_bool_param;

/// An API route whose answers are cached by query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiQuery {
    /// `GET /api/{type}s/{repo}[/revision/{rev}]`.
    RepoInfo,
    /// `GET /api/{type}s/{repo}/tree/{rev}[/{path}]`.
    Tree,
    /// `GET /api/{type}s/{repo}/refs`.
    Refs,
}

/// How a parameter's value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Text,
}

impl ApiQuery {
    /// The parameters the Hub reads on this route (huggingface_hub's `hf_api.py`).
    fn params(self) -> &'static [(&'static str, Kind)] {
        match self {
            ApiQuery::RepoInfo => &[
                ("blobs", Kind::Bool),
                ("securityStatus", Kind::Bool),
                ("expand", Kind::Text),
                ("expand[]", Kind::Text),
            ],
            ApiQuery::Tree => &[
                ("recursive", Kind::Bool),
                ("expand", Kind::Bool),
                ("cursor", Kind::Text),
                ("limit", Kind::Text),
            ],
            ApiQuery::Refs => &[("include_prs", Kind::Bool)],
        }
    }

    fn kind_of(self, name: &str) -> Option<Kind> {
        self.params()
            .iter()
            .find(|(param, _)| *param == name)
            .map(|(_, kind)| *kind)
    }
}

/// A request's query reduced to what the Hub reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HubQuery {
    /// Canonical form for cache keys (empty when nothing is kept).
    pub key: String,
    /// What to send upstream, in the client's spelling (`None` when nothing is kept).
    pub upstream: Option<String>,
}

/// Keep the parameters of `raw` that `route` uses.
pub fn hub_query(route: ApiQuery, raw: Option<&str>) -> HubQuery {
    let Some(raw) = raw else {
        return HubQuery::default();
    };
    let mut kept_raw = Vec::new();
    let mut key_pairs = Vec::new();
    for piece in raw.split('&').filter(|p| !p.is_empty()) {
        let (name_raw, value_raw) = piece.split_once('=').unwrap_or((piece, ""));
        let name = decode(name_raw);
        let Some(kind) = route.kind_of(&name) else {
            continue;
        };
        let value = decode(value_raw);
        let value = match (kind, parse_bool_param(&value)) {
            (Kind::Bool, Some(b)) => b.to_string(),
            _ => percent_encode(value.as_bytes(), QUOTE_SAFE_NONE).to_string(),
        };
        kept_raw.push(piece);
        key_pairs.push(format!(
            "{}={value}",
            percent_encode(name.as_bytes(), QUOTE_SAFE_NONE)
        ));
    }
    key_pairs.sort();
    HubQuery {
        key: key_pairs.join("&"),
        upstream: (!kept_raw.is_empty()).then(|| kept_raw.join("&")),
    }
}

/// Form-decode one query component (`+` is a space).
fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_are_dropped_from_key_and_upstream_query() {
        let q = hub_query(ApiQuery::Tree, Some("recursive=True&x=1&expand=0&utm=abc"));
        assert_eq!(q.key, "expand=false&recursive=true");
        assert_eq!(q.upstream.as_deref(), Some("recursive=True&expand=0"));
        let junk = hub_query(ApiQuery::Tree, Some("random=123"));
        assert_eq!(junk, HubQuery::default());
        assert_eq!(hub_query(ApiQuery::Refs, None), HubQuery::default());
    }

    #[test]
    fn spellings_of_one_question_share_a_key() {
        let a = hub_query(ApiQuery::Refs, Some("include_prs=1"));
        let b = hub_query(ApiQuery::Refs, Some("include_prs=true&cachebuster=9"));
        assert_eq!(a.key, b.key);
        let c = hub_query(ApiQuery::Tree, Some("cursor=a%2Bb&recursive=1"));
        let d = hub_query(ApiQuery::Tree, Some("recursive=true&cursor=a%2bb"));
        assert_eq!(c.key, d.key);
    }

    #[test]
    fn repo_info_keeps_repeated_expand_fields_and_blobs() {
        let q = hub_query(
            ApiQuery::RepoInfo,
            Some("expand[]=sha&expand[]=downloads&blobs=True&recursive=1"),
        );
        assert_eq!(q.key, "blobs=true&expand%5B%5D=downloads&expand%5B%5D=sha");
        assert_eq!(
            q.upstream.as_deref(),
            Some("expand[]=sha&expand[]=downloads&blobs=True")
        );
    }

    #[test]
    fn an_unparsable_boolean_is_kept_as_given() {
        let q = hub_query(ApiQuery::Tree, Some("recursive=maybe"));
        assert_eq!(q.key, "recursive=maybe");
    }
}
