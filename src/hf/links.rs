//! `Link` header parsing and rewriting, and `Location` classification.
//!
//! Clients follow a pagination `Link: <url>; rel="next"` verbatim (no `HF_ENDPOINT`
//! substitution, no `urljoin`), so every link that points at an upstream must be rewritten to the
//! mirror's public **absolute** base URL, keeping the path, the query (the `cursor`) and all
//! parameters. Redirect `Location`s are classified so the proxy knows whether the target is the
//! Hub itself (rewrite or re-dispatch) or another host such as a CDN (follow server-side).

use url::Url;

/// Hub origins that are always treated as upstream, whatever the configuration says.
pub const HUB_ORIGINS: [&str; 2] = ["https://huggingface.co", "https://hf.co"];

/// Host suffixes of the Hub's CDNs and Xet bridges (`cdn-lfs.hf.co`, `us.aws.cdn.hf.co`,
/// `cas-bridge.xethub.hf.co`, ...). Match by suffix, never by a fixed host list.
pub const HUB_CDN_SUFFIXES: [&str; 2] = [".hf.co", ".huggingface.co"];

/// True when `host` is a Hub CDN or bridge host (a subdomain of `hf.co` or `huggingface.co`).
pub fn is_hub_cdn_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    HUB_CDN_SUFFIXES.iter().any(|s| host.ends_with(s))
}

/// One `<uri>; params` member of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkMember {
    /// The target, as written between `<` and `>`.
    pub uri: String,
    /// Parameters in order.
    pub params: Vec<LinkParam>,
}

/// One `name=value` parameter of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkParam {
    pub name: String,
    pub value: Option<String>,
    pub quoted: bool,
}

impl LinkMember {
    /// The value of the first `rel` parameter, if any.
    pub fn rel(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case("rel"))
            .and_then(|p| p.value.as_deref())
    }

    /// The whitespace-separated relation types in `rel`, lowercased.
    pub fn rel_types(&self) -> Vec<String> {
        self.rel()
            .map(|r| r.split_whitespace().map(str::to_ascii_lowercase).collect())
            .unwrap_or_default()
    }

    /// Serialises back to `<uri>; name="value"; ...`.
    pub fn to_header(&self) -> String {
        let mut out = format!("<{}>", self.uri);
        for p in &self.params {
            out.push_str("; ");
            out.push_str(&p.name);
            if let Some(v) = &p.value {
                out.push('=');
                if p.quoted || v.is_empty() || !v.bytes().all(is_token_byte) {
                    out.push('"');
                    for c in v.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str(v);
                }
            }
        }
        out
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A member as found in the header: parsed, or kept verbatim when it does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawMember<'a> {
    Parsed(&'a str, LinkMember),
    Unparsed(&'a str),
}

impl RawMember<'_> {
    pub fn text(&self) -> &str {
        match self {
            RawMember::Parsed(t, _) | RawMember::Unparsed(t) => t,
        }
    }
}

/// Splits a `Link` value into members at commas outside `<...>` and quoted strings.
pub(crate) fn parse_link_header(value: &str) -> Vec<RawMember<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_angle = false;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '<' if !in_angle => in_angle = true,
            '>' if in_angle => in_angle = false,
            '"' if !in_angle => in_quote = true,
            ',' if !in_angle => {
                push_member(&mut out, &value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push_member(&mut out, &value[start..]);
    out
}

fn push_member<'a>(out: &mut Vec<RawMember<'a>>, text: &'a str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    match parse_member(text) {
        Some(m) => out.push(RawMember::Parsed(text, m)),
        None => out.push(RawMember::Unparsed(text)),
    }
}

fn parse_member(text: &str) -> Option<LinkMember> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>')?;
    let uri = rest[..end].trim().to_string();
    let mut params = Vec::new();
    let mut chars = rest[end + 1..].chars().peekable();
    loop {
        // skip whitespace, expect ';' or end
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(';') => {}
            Some(_) => return None,
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' || c.is_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let (mut value, mut quoted) = (None, false);
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                quoted = true;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => v.push(chars.next()?),
                        '"' => {
                            closed = true;
                            break;
                        }
                        _ => v.push(c),
                    }
                }
                if !closed {
                    return None;
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' || c.is_whitespace() {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
            }
            value = Some(v);
        }
        if name.is_empty() {
            if value.is_none() {
                continue; // a stray ';'
            }
            return None;
        }
        params.push(LinkParam {
            name,
            value,
            quoted,
        });
    }
    Some(LinkMember { uri, params })
}

/// The target of the first link whose `rel` contains `rel` (case-insensitive), e.g. the `next`
/// page of a paginated listing.
pub fn find_link(value: &str, rel: &str) -> Option<String> {
    let rel = rel.to_ascii_lowercase();
    parse_link_header(value).into_iter().find_map(|m| match m {
        RawMember::Parsed(_, m) if m.rel_types().contains(&rel) => Some(m.uri),
        _ => None,
    })
}

/// An upstream base: origin plus optional path prefix (`https://nexus/repository/hf`).
struct Base {
    scheme: String,
    host: String,
    port: Option<u16>,
    prefix: String,
}

impl Base {
    fn parse(s: &str) -> Option<Base> {
        let url = Url::parse(s.trim()).ok()?;
        Some(Base {
            scheme: url.scheme().to_string(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default(),
            prefix: url.path().trim_end_matches('/').to_string(),
        })
    }

    /// `url`'s path with this base's prefix removed, if `url` is under this base.
    fn strip<'u>(&self, url: &'u Url) -> Option<&'u str> {
        if url.scheme() != self.scheme
            || url.host_str().map(str::to_ascii_lowercase).as_deref() != Some(self.host.as_str())
            || url.port_or_known_default() != self.port
        {
            return None;
        }
        let path = url.path();
        let rest = path.strip_prefix(self.prefix.as_str())?;
        if rest.is_empty() {
            Some("/")
        } else if rest.starts_with('/') {
            Some(rest)
        } else {
            None
        }
    }
}

/// Configured upstreams plus the Hub origins, longest path prefix first.
fn bases<S: AsRef<str>>(upstream_origins: &[S]) -> Vec<Base> {
    let mut out: Vec<Base> = upstream_origins
        .iter()
        .map(AsRef::as_ref)
        .chain(HUB_ORIGINS)
        .filter_map(Base::parse)
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.prefix.len()));
    out
}

/// Resolves `reference` the way a client would: absolute as is, anything else relative to the
/// first configured upstream (or `https://huggingface.co`).
fn resolve_reference<S: AsRef<str>>(reference: &str, upstream_origins: &[S]) -> Option<Url> {
    match Url::parse(reference) {
        Ok(url) => Some(url),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            let base = upstream_origins
                .first()
                .map(AsRef::as_ref)
                .unwrap_or(HUB_ORIGINS[0]);
            let mut base = Url::parse(base).ok()?;
            if !base.path().ends_with('/') {
                let p = format!("{}/", base.path());
                base.set_path(&p);
            }
            base.join(reference).ok()
        }
        Err(_) => None,
    }
}

/// The hub-relative `path?query#fragment` of `url` if it points at an upstream, else `None`.
fn hub_path(url: &Url, bases: &[Base]) -> Option<String> {
    let path = bases.iter().find_map(|b| b.strip(url))?;
    let mut out = path.to_string();
    if let Some(q) = url.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = url.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// Rewrites one URL: if it points at one of `upstream_origins` (or the Hub origins), the result
/// is `public_base` + the path without the upstream's prefix + query; otherwise `None`.
/// Relative references are resolved against the first upstream first.
pub fn rewrite_url<S: AsRef<str>>(
    url: &str,
    upstream_origins: &[S],
    public_base: &str,
) -> Option<String> {
    let resolved = resolve_reference(url, upstream_origins)?;
    let path = hub_path(&resolved, &bases(upstream_origins))?;
    Some(format!("{}{}", public_base.trim_end_matches('/'), path))
}

/// Rewrites every `<URL>` in a `Link` header value that points at an upstream (the configured
/// `upstream_origins`, plus always `https://huggingface.co` and `https://hf.co`) to an absolute
/// URL under `public_base`, keeping the query (cursor) and every parameter. Other links and
/// members that do not parse are kept verbatim.
pub fn rewrite_link_header<S: AsRef<str>>(
    value: &str,
    upstream_origins: &[S],
    public_base: &str,
) -> String {
    let members: Vec<String> = parse_link_header(value)
        .into_iter()
        .map(|m| match m {
            RawMember::Parsed(text, mut member) => {
                match rewrite_url(&member.uri, upstream_origins, public_base) {
                    Some(new) => {
                        member.uri = new;
                        member.to_header()
                    }
                    None => text.to_string(),
                }
            }
            RawMember::Unparsed(text) => text.to_string(),
        })
        .collect();
    members.join(", ")
}

/// Where a redirect `Location` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationKind {
    /// The target is on an upstream (or the Hub): the proxy may pass the redirect back with
    /// `public_relative` (preferred: clients up to 1.29 follow only relative redirects) or
    /// `public_absolute`, or re-dispatch `hub_path` through its own routes.
    SameOrigin {
        /// `path?query` relative to the Hub root, upstream prefix removed, e.g.
        /// `/api/resolve-cache/models/org/name/<sha>/config.json?etag=...`.
        hub_path: String,
        /// `hub_path` under the public base's own path prefix (a path-absolute reference).
        public_relative: String,
        /// `public_base` + `hub_path`.
        public_absolute: String,
    },
    /// Another host (a CDN, an S3 or Xet bridge): follow it server-side, without
    /// `Authorization`. Holds the absolute URL.
    OffHost(String),
    /// The value could not be parsed as a URL reference.
    Invalid(String),
}

/// Classifies and rewrites a `Location` value. Relative references are resolved against the
/// first entry of `upstream_origins` (pass the upstream that answered first), as the client's
/// `urljoin` would.
pub fn rewrite_location<S: AsRef<str>>(
    value: &str,
    upstream_origins: &[S],
    public_base: &str,
) -> LocationKind {
    let value = value.trim();
    let Some(resolved) = resolve_reference(value, upstream_origins) else {
        return LocationKind::Invalid(value.to_string());
    };
    match hub_path(&resolved, &bases(upstream_origins)) {
        Some(hub_path) => {
            let base = public_base.trim_end_matches('/');
            let prefix = Url::parse(base)
                .map(|u| u.path().trim_end_matches('/').to_string())
                .unwrap_or_default();
            LocationKind::SameOrigin {
                public_relative: format!("{prefix}{hub_path}"),
                public_absolute: format!("{base}{hub_path}"),
                hub_path,
            }
        }
        None if matches!(resolved.scheme(), "http" | "https") => {
            LocationKind::OffHost(resolved.to_string())
        }
        None => LocationKind::Invalid(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "http://mirror.internal:8090";
    const NONE: [&str; 0] = [];

    #[test]
    fn next_link_is_rewritten_absolute_with_cursor() {
        let v = r#"<https://huggingface.co/api/models/org/name/tree/abc?recursive=true&expand=false&cursor=ZXlKbWFXeGxYMjVoYldVaU9pSmhJbjA9>; rel="next""#;
        assert_eq!(
            rewrite_link_header(v, &NONE, PUBLIC),
            r#"<http://mirror.internal:8090/api/models/org/name/tree/abc?recursive=true&expand=false&cursor=ZXlKbWFXeGxYMjVoYldVaU9pSmhJbjA9>; rel="next""#
        );
        assert_eq!(
            find_link(&rewrite_link_header(v, &NONE, "http://m/"), "next").unwrap(),
            "http://m/api/models/org/name/tree/abc?recursive=true&expand=false&cursor=ZXlKbWFXeGxYMjVoYldVaU9pSmhJbjA9"
        );
    }

    #[test]
    fn configured_upstream_with_path_prefix_is_stripped() {
        let ups = ["https://nexus.corp/repository/hf/"];
        let v = "<https://nexus.corp/repository/hf/api/datasets/a/b/tree/main?cursor=x%3D%3D>; rel=\"next\"";
        assert_eq!(
            rewrite_link_header(v, &ups, "https://mirror/hub"),
            "<https://mirror/hub/api/datasets/a/b/tree/main?cursor=x%3D%3D>; rel=\"next\""
        );
        // same host, outside the prefix: not ours
        let v = "<https://nexus.corp/other/api/x>; rel=\"next\"";
        assert_eq!(rewrite_link_header(v, &ups, "https://mirror"), v);
        // prefix must end on a segment boundary
        let v = "<https://nexus.corp/repository/hfx/api>; rel=\"next\"";
        assert_eq!(rewrite_link_header(v, &ups, "https://mirror"), v);
    }

    #[test]
    fn hf_co_and_configured_hosts_match_by_origin() {
        let ups = ["https://hf-mirror.com"];
        let v = "<https://hf.co/api/x?cursor=1>; rel=\"next\", <https://hf-mirror.com/api/y?cursor=2>; rel=\"prev\", <https://example.com/z>; rel=\"other\"";
        assert_eq!(
            rewrite_link_header(v, &ups, PUBLIC),
            "<http://mirror.internal:8090/api/x?cursor=1>; rel=\"next\", <http://mirror.internal:8090/api/y?cursor=2>; rel=\"prev\", <https://example.com/z>; rel=\"other\""
        );
        // different port or scheme is a different origin
        let v = "<http://huggingface.co/api/x>; rel=\"next\", <https://huggingface.co:8443/api/x>; rel=\"next\"";
        assert_eq!(rewrite_link_header(v, &NONE, PUBLIC), v);
        // explicit default port is the same origin; host case does not matter
        let v = "<https://HuggingFace.co:443/api/x>; rel=\"next\"";
        assert_eq!(
            rewrite_link_header(v, &NONE, PUBLIC),
            "<http://mirror.internal:8090/api/x>; rel=\"next\""
        );
    }

    #[test]
    fn relative_links_become_absolute() {
        let v = "</api/models/a/tree/main?cursor=abc>; rel=\"next\"";
        assert_eq!(
            rewrite_link_header(v, &NONE, PUBLIC),
            "<http://mirror.internal:8090/api/models/a/tree/main?cursor=abc>; rel=\"next\""
        );
    }

    #[test]
    fn commas_in_urls_and_params_are_kept() {
        let v = r#"<https://huggingface.co/api/x?a=1,2&cursor=q>; rel="next"; title="a, b", <https://cdn.example/x,y>; rel=prev"#;
        let out = rewrite_link_header(v, &NONE, PUBLIC);
        assert_eq!(
            out,
            r#"<http://mirror.internal:8090/api/x?a=1,2&cursor=q>; rel="next"; title="a, b", <https://cdn.example/x,y>; rel=prev"#
        );
        assert_eq!(find_link(v, "prev").unwrap(), "https://cdn.example/x,y");
    }

    #[test]
    fn unparsable_members_are_kept_verbatim() {
        let v = "garbage, <https://huggingface.co/api/x>; rel=\"next\"";
        assert_eq!(
            rewrite_link_header(v, &NONE, PUBLIC),
            "garbage, <http://mirror.internal:8090/api/x>; rel=\"next\""
        );
    }

    #[test]
    fn location_relative_resolve_cache_is_same_origin() {
        let loc = "/api/resolve-cache/models/org/name/0123/config.json?%2Forg%2Fname%2Fresolve%2Fmain%2Fconfig.json=&etag=%22abc%22";
        match rewrite_location(loc, &["https://huggingface.co"], "http://m:8090/hf/") {
            LocationKind::SameOrigin {
                hub_path,
                public_relative,
                public_absolute,
            } => {
                assert_eq!(hub_path, loc);
                assert_eq!(public_relative, format!("/hf{loc}"));
                assert_eq!(public_absolute, format!("http://m:8090/hf{loc}"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn location_canonical_repo_redirect_is_same_origin() {
        assert_eq!(
            rewrite_location(
                "/openai-community/gpt2/resolve/main/config.json",
                &NONE,
                PUBLIC
            ),
            LocationKind::SameOrigin {
                hub_path: "/openai-community/gpt2/resolve/main/config.json".into(),
                public_relative: "/openai-community/gpt2/resolve/main/config.json".into(),
                public_absolute:
                    "http://mirror.internal:8090/openai-community/gpt2/resolve/main/config.json"
                        .into(),
            }
        );
        match rewrite_location("https://hf.co/a/b", &NONE, PUBLIC) {
            LocationKind::SameOrigin { hub_path, .. } => assert_eq!(hub_path, "/a/b"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn location_cdn_is_off_host() {
        let loc =
            "https://cas-bridge.xethub.hf.co/xet-bridge-us/abc/def?X-Amz-Signature=s&Expires=1";
        assert_eq!(
            rewrite_location(loc, &["https://huggingface.co"], PUBLIC),
            LocationKind::OffHost(loc.to_string())
        );
        assert!(is_hub_cdn_host("cas-bridge.xethub.hf.co"));
        assert!(is_hub_cdn_host("us.aws.cdn.hf.co"));
        assert!(is_hub_cdn_host("CDN-LFS.HuggingFace.co"));
        assert!(!is_hub_cdn_host("hf.co.evil.com"));
        assert!(!is_hub_cdn_host("nothf.co"));
    }

    #[test]
    fn location_garbage_is_invalid() {
        assert!(matches!(
            rewrite_location("http://[::1", &NONE, PUBLIC),
            LocationKind::Invalid(_)
        ));
        assert!(matches!(
            rewrite_location("mailto:x@y", &NONE, PUBLIC),
            LocationKind::Invalid(_)
        ));
    }

    #[test]
    fn rewrite_url_returns_none_for_foreign_hosts() {
        assert_eq!(rewrite_url("https://example.com/a", &NONE, PUBLIC), None);
        assert_eq!(
            rewrite_url("https://huggingface.co", &NONE, PUBLIC).as_deref(),
            Some("http://mirror.internal:8090/")
        );
    }

    #[test]
    fn link_params_parse_quoted_and_unquoted() {
        let ms = parse_link_header(r#"<u1>; rel=next; foo="a\"b;c", <u2>;rel="xet-auth other""#);
        assert_eq!(ms.len(), 2);
        let RawMember::Parsed(_, m1) = &ms[0] else {
            panic!()
        };
        assert_eq!(m1.rel(), Some("next"));
        assert_eq!(m1.params[1].value.as_deref(), Some("a\"b;c"));
        assert_eq!(m1.to_header(), r#"<u1>; rel=next; foo="a\"b;c""#);
        let RawMember::Parsed(_, m2) = &ms[1] else {
            panic!()
        };
        assert_eq!(m2.rel_types(), ["xet-auth", "other"]);
        assert_eq!(ms[1].text(), r#"<u2>;rel="xet-auth other""#);
    }
}
