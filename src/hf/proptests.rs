//! Property tests: the HF parsers never panic, on random and on mutated input, and round-trip
//! where a round trip exists. `cargo test` runs proptest's default number of cases (256, a few
//! seconds); `scripts/fuzz` sets `PROPTEST_CASES` for a longer run.

use proptest::prelude::*;

use super::encoding::{
    api_paths_info_path, api_refs_path, api_revision_path, api_tree_path, api_xet_read_token_path,
    resolve_cache_path, resolve_path,
};
use super::links::{parse_link_header, LinkMember, LinkParam, RawMember};
use super::range::{parse_single_range, RangeRequest};
use super::repo::{Repo, RepoId, RepoPath, RepoType, Revision};
use super::route::{parse_route, Route};
use super::safe_path::{check_request_path, PathError};
use super::{find_link, rewrite_link_header, rewrite_location, rewrite_url, LocationKind};

/// Words the route parser treats specially; generated ids and revisions avoid them so that a
/// round trip is unambiguous (the parser documents how it resolves those ambiguities).
const KEYWORDS: [&str; 13] = [
    "api",
    "resolve",
    "resolve-cache",
    "revision",
    "tree",
    "paths-info",
    "refs",
    "xet-read-token",
    "models",
    "datasets",
    "spaces",
    "kernels",
    "commits",
];

/// Bytes and fragments that make paths interesting: separators, escapes, dots, unicode.
fn path_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("%2F".to_string()),
        Just("%2e".to_string()),
        Just("%25".to_string()),
        Just("%".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("\\".to_string()),
        Just("%00".to_string()),
        Just("%c0%ae".to_string()),
        Just("?".to_string()),
        prop::sample::select(KEYWORDS.to_vec()).prop_map(str::to_string),
        "[a-z0-9]{1,8}",
        "\\PC{1,4}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|parts| parts.concat())
}

fn id_segment() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_]{1,12}", "[A-Za-z0-9]{1,5}[-.][A-Za-z0-9]{1,5}",]
        .prop_filter("not a keyword", |s| !KEYWORDS.contains(&s.as_str()))
}

fn repo() -> impl Strategy<Value = Repo> {
    let kind = prop::sample::select(RepoType::ALL.to_vec());
    let id = prop_oneof![
        id_segment(),
        (id_segment(), id_segment()).prop_map(|(a, b)| format!("{a}/{b}")),
    ];
    (kind, id).prop_map(|(kind, id)| Repo::new(kind, RepoId::new(&id).expect("valid id")))
}

/// A file or directory name as found in real repos: anything but `/`, `\`, controls.
fn name() -> impl Strategy<Value = String> {
    "[^/\\\\\\p{Cc}]{1,16}".prop_filter("not a dot segment", |s| s != "." && s != "..")
}

/// A name without `%`, so that decoding the client's encoding twice changes nothing.
fn plain_name() -> impl Strategy<Value = String> {
    "[^/%\\\\\\p{Cc}]{1,16}".prop_filter("not a dot segment", |s| s != "." && s != "..")
}

fn revision() -> impl Strategy<Value = Revision> {
    revisions_of(name())
}

fn revisions_of(names: impl Strategy<Value = String>) -> impl Strategy<Value = Revision> {
    prop_oneof![
        "[a-f0-9]{40}",
        "[A-Za-z0-9._-]{1,20}",
        (1u32..5000).prop_map(|n| format!("refs/pr/{n}")),
        Just("refs/convert/parquet".to_string()),
        prop::collection::vec(names, 1..4).prop_map(|v| v.join("/")),
    ]
    .prop_filter("valid, not a keyword", |r| {
        !KEYWORDS.contains(&r.as_str()) && Revision::new(r).is_ok()
    })
    .prop_map(|r| Revision::new(&r).expect("filtered"))
}

fn repo_path() -> impl Strategy<Value = RepoPath> {
    paths_of(name())
}

fn paths_of(names: impl Strategy<Value = String>) -> impl Strategy<Value = RepoPath> {
    prop::collection::vec(names, 1..5).prop_map(|v| RepoPath::new(&v.join("/")).expect("valid"))
}

proptest! {
    #[test]
    fn route_parser_never_panics(method in "GET|HEAD|POST|PUT|[A-Z]{0,7}", path in path_soup()) {
        let _ = parse_route(&method, &path);
        let _ = parse_route(&method, &format!("/{path}"));
        let _ = parse_route(&method, &format!("/api/{path}"));
    }

    #[test]
    fn route_parser_never_panics_on_arbitrary_text(method in "\\PC{0,8}", path in "\\PC{0,200}") {
        let _ = parse_route(&method, &path);
    }

    #[test]
    fn resolve_urls_round_trip(repo in repo(), rev in revision(), path in repo_path()) {
        let url = resolve_path(&repo, &rev, &path);
        let route = parse_route("GET", &url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(&route, &Route::Resolve { repo: repo.clone(), revision: rev.clone(), path: path.clone() });
        prop_assert_eq!(route.upstream_path(), Some(url.clone()));
        prop_assert_eq!(parse_route("HEAD", &format!("{url}?download=true")).ok(), Some(route));
    }

    #[test]
    fn api_urls_round_trip(
        repo in repo(),
        rev in revision(),
        sub in prop::option::of(repo_path()),
        commit in "[a-f0-9]{40}",
        path in repo_path(),
    ) {
        let commit = Revision::new(&commit).expect("sha");
        let cases = [
            ("GET", api_revision_path(&repo, &rev), Route::RepoInfo { repo: repo.clone(), revision: Some(rev.clone()) }),
            ("GET", api_tree_path(&repo, &rev, sub.as_ref()), Route::Tree { repo: repo.clone(), revision: rev.clone(), path: sub.clone() }),
            ("POST", api_paths_info_path(&repo, &rev), Route::PathsInfo { repo: repo.clone(), revision: rev.clone() }),
            ("GET", api_refs_path(&repo), Route::Refs { repo: repo.clone() }),
            ("GET", api_xet_read_token_path(&repo, &rev), Route::XetReadToken { repo: repo.clone(), revision: rev.clone() }),
            ("GET", resolve_cache_path(&repo, &commit, &path), Route::ResolveCache { repo: repo.clone(), commit: commit.clone(), path: path.clone() }),
        ];
        for (method, url, expected) in cases {
            let route = parse_route(method, &url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
            prop_assert_eq!(&route, &expected, "{}", url);
            prop_assert_eq!(route.upstream_path(), Some(url));
        }
    }

    #[test]
    fn client_encoded_paths_pass_the_path_check(
        repo in repo(),
        rev in revisions_of(plain_name()),
        path in paths_of(plain_name()),
    ) {
        // Names containing '%' could decode to anything a second time; the property is about
        // what the client's encoding guarantees for names that do not.
        let url = resolve_path(&repo, &rev, &path);
        prop_assert_eq!(check_request_path(&url), Ok(()), "{}", url);
    }

    #[test]
    fn every_encoding_of_a_dot_dot_segment_is_refused(
        repo in repo(),
        rev in revisions_of(plain_name()),
        path in paths_of(plain_name()),
        dots in prop::collection::vec(prop::sample::select(vec![".", "%2e", "%2E", "%252e", "%252E", "%25252e"]), 2),
        at in 0usize..4,
        tail in prop::bool::ANY,
    ) {
        let dotdot = dots.concat();
        let url = resolve_path(&repo, &rev, &path);
        prop_assume!(check_request_path(&url).is_ok());
        let mut segs: Vec<&str> = url.split('/').collect();
        let at = 1 + at.min(segs.len() - 1);
        segs.insert(at, &dotdot);
        let mut attack = segs.join("/");
        if tail {
            attack = format!("{url}/{dotdot}");
        }
        prop_assert_eq!(check_request_path(&attack), Err(PathError::DotSegment), "{}", attack);
    }

    #[test]
    fn path_check_never_panics(path in path_soup()) {
        let _ = check_request_path(&path);
        let _ = check_request_path(&format!("/{path}"));
    }

    #[test]
    fn range_parser_never_panics(value in "\\PC{0,40}", size in any::<u64>()) {
        check_range(&value, size)?;
    }

    #[test]
    fn range_parser_never_panics_on_range_like_text(
        unit in "bytes|BYTES|Bytes|byte|",
        sp in "[ \t]{0,2}",
        a in prop::option::of(any::<u64>()),
        b in prop::option::of(any::<u64>()),
        extra in "|,|,0-1|-|=|[0-9]{25}",
        size in prop_oneof![Just(0u64), Just(1), 0u64..10_000, Just(u64::MAX)],
    ) {
        let a = a.map(|n| n.to_string()).unwrap_or_default();
        let b = b.map(|n| n.to_string()).unwrap_or_default();
        check_range(&format!("{unit}{sp}={sp}{a}{sp}-{sp}{b}{extra}"), size)?;
    }

    #[test]
    fn closed_ranges_select_exactly_the_asked_bytes(size in 0u64..1 << 40, a in 0u64..1 << 41, len in 0u64..1 << 30) {
        let b = a + len;
        let got = parse_single_range(&format!("bytes={a}-{b}"), size);
        if a < size {
            prop_assert_eq!(got, RangeRequest::Satisfiable(a..(b + 1).min(size)));
        } else {
            prop_assert_eq!(got, RangeRequest::Unsatisfiable);
        }
    }

    #[test]
    fn suffix_ranges_select_the_last_bytes(size in 0u64..1 << 40, n in 0u64..1 << 41) {
        let got = parse_single_range(&format!("bytes=-{n}"), size);
        if n == 0 || size == 0 {
            prop_assert_eq!(got, RangeRequest::Unsatisfiable);
        } else {
            prop_assert_eq!(got, RangeRequest::Satisfiable(size.saturating_sub(n)..size));
        }
    }

    #[test]
    fn link_functions_never_panic(value in link_soup(), public in "\\PC{0,20}") {
        let upstreams = ["https://huggingface.co", "http://127.0.0.1:9/prefix"];
        let _ = parse_link_header(&value);
        let _ = find_link(&value, "next");
        let _ = rewrite_link_header(&value, &upstreams, &public);
        let _ = rewrite_url(&value, &upstreams, &public);
        let _ = rewrite_location(&value, &upstreams, &public);
        let _ = rewrite_location(&value, &[] as &[&str], &public);
    }

    #[test]
    fn link_members_round_trip_through_their_header_form(members in prop::collection::vec(link_member(), 1..4)) {
        let header = members.iter().map(LinkMember::to_header).collect::<Vec<_>>().join(", ");
        let parsed: Vec<LinkMember> = parse_link_header(&header)
            .into_iter()
            .map(|m| match m {
                RawMember::Parsed(_, m) => Ok(m),
                RawMember::Unparsed(t) => Err(TestCaseError::fail(format!("unparsed {t:?} in {header:?}"))),
            })
            .collect::<Result<_, _>>()?;
        let normalised: Vec<LinkMember> = members.into_iter().map(normalise).collect();
        prop_assert_eq!(parsed.into_iter().map(normalise).collect::<Vec<_>>(), normalised);
    }

    #[test]
    fn upstream_links_are_rewritten_to_the_mirror_keeping_path_and_query(
        path in "(/[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,9}){1,5}",
        query in prop::option::of("[a-zA-Z0-9=&%._-]{1,30}"),
        prefixed in prop::bool::ANY,
    ) {
        let (upstream, prefix) = if prefixed {
            ("http://127.0.0.1:9/hf", "/hf")
        } else {
            ("https://huggingface.co", "")
        };
        let public = "http://mirror.internal:8090";
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        let link = format!("<{upstream}{path}{query}>; rel=\"next\"");
        let rewritten = rewrite_link_header(&link, &[upstream], public);
        prop_assert_eq!(rewritten, format!("<{public}{path}{query}>; rel=\"next\""));
        match rewrite_location(&format!("{prefix}{path}{query}"), &[upstream], public) {
            LocationKind::SameOrigin { public_relative, .. } => prop_assert_eq!(public_relative, format!("{path}{query}")),
            other => prop_assert!(false, "{other:?}"),
        }
        let other = format!("<https://cdn.example.org{path}{query}>; rel=\"next\"");
        prop_assert_eq!(rewrite_link_header(&other, &[upstream], public), other);
    }
}

fn check_range(value: &str, size: u64) -> Result<(), TestCaseError> {
    if let RangeRequest::Satisfiable(r) = parse_single_range(value, size) {
        prop_assert!(
            r.start < r.end && r.end <= size,
            "{value:?} size {size}: {r:?}"
        );
    }
    Ok(())
}

fn link_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<".to_string()),
        Just(">".to_string()),
        Just(";".to_string()),
        Just(",".to_string()),
        Just("=".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just(" ".to_string()),
        Just("rel=\"next\"".to_string()),
        Just("https://huggingface.co/api/x?cursor=1".to_string()),
        Just("http://127.0.0.1:9/prefix/a".to_string()),
        Just("//".to_string()),
        Just("../".to_string()),
        "\\PC{1,6}",
    ];
    prop::collection::vec(piece, 0..20).prop_map(|parts| parts.concat())
}

fn link_member() -> impl Strategy<Value = LinkMember> {
    let param = (
        "[a-zA-Z][a-zA-Z0-9*-]{0,8}",
        prop::option::of("[^\\p{Cc}]{0,12}"),
        prop::bool::ANY,
    )
        .prop_map(|(name, value, quoted)| LinkParam {
            name,
            value,
            quoted,
        });
    (
        "[a-zA-Z0-9:/?&=%._~-]{0,30}",
        prop::collection::vec(param, 0..4),
    )
        .prop_map(|(uri, params)| LinkMember { uri, params })
}

/// Whether a value was quoted is a serialisation detail once the value round-trips.
fn normalise(mut m: LinkMember) -> LinkMember {
    for p in &mut m.params {
        p.quoted = false;
    }
    m
}
