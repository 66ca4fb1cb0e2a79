//! Stripping Xet hints so Xet-enabled clients download over plain HTTP through the mirror.
//!
//! A client switches to Xet (and then fetches bytes straight from HF's CAS, bypassing the
//! mirror) when it sees `X-Xet-Hash` plus a refresh route (`Link rel="xet-auth"` or
//! `X-Xet-Refresh-Route`) on a resolve, or a `xetHash` in a tree / paths-info entry. Headers are
//! recognised with [`is_xet_header`]; this module handles `Link`
//! values and JSON bodies.

use serde_json::Value;

use super::links::{parse_link_header, LinkParam, RawMember};

pub use super::headers::is_xet_header;

/// `Link` relation types that point Xet clients at HF's token endpoint and CAS.
pub const XET_LINK_RELS: [&str; 2] = ["xet-auth", "xet-reconstruction-info"];

/// The JSON key holding a file's Xet hash in tree and paths-info entries.
pub const XET_HASH_KEY: &str = "xetHash";

/// Removes the `xet-auth` and `xet-reconstruction-info` relations from a `Link` header value,
/// keeping every other member (and other relation types of a member that has several).
/// Returns `None` when nothing remains; the value unchanged when there was nothing to remove.
/// Commas inside `<...>` and quoted strings, and unquoted `rel` values, are handled.
pub fn strip_xet_links(value: &str) -> Option<String> {
    let members = parse_link_header(value);
    let mut changed = false;
    let mut kept = Vec::with_capacity(members.len());
    for m in members {
        let RawMember::Parsed(text, mut member) = m else {
            kept.push(m.text().to_string());
            continue;
        };
        let rels = member.rel_types();
        let remaining: Vec<&String> = rels
            .iter()
            .filter(|r| !XET_LINK_RELS.contains(&r.as_str()))
            .collect();
        if remaining.len() == rels.len() {
            kept.push(text.to_string());
            continue;
        }
        changed = true;
        if remaining.is_empty() {
            continue;
        }
        let new_rel = remaining
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(p) = member
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case("rel"))
        {
            *p = LinkParam {
                name: p.name.clone(),
                value: Some(new_rel),
                quoted: true,
            };
        }
        kept.push(member.to_header());
    }
    if kept.is_empty() {
        None
    } else if changed {
        Some(kept.join(", "))
    } else {
        Some(value.to_string())
    }
}

/// Removes every `xetHash` key from every object in `value`, recursively (tree and paths-info
/// arrays, nested objects). Returns how many were removed; `lfs` objects are left intact.
pub fn strip_xet_json(value: &mut Value) -> usize {
    match value {
        Value::Object(map) => {
            // `retain` keeps key order with or without serde_json's `preserve_order`.
            let mut n = 0;
            if map.contains_key(XET_HASH_KEY) {
                map.retain(|k, _| k != XET_HASH_KEY);
                n += 1;
            }
            for v in map.values_mut() {
                n += strip_xet_json(v);
            }
            n
        }
        Value::Array(items) => items.iter_mut().map(strip_xet_json).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xet_links_are_removed_and_others_kept() {
        let v = r#"<https://huggingface.co/api/datasets/o/n/xet-read-token/79e9>; rel="xet-auth", <https://cas-server.xethub.hf.co/v1/reconstructions/1379>; rel="xet-reconstruction-info""#;
        assert_eq!(strip_xet_links(v), None);

        let v = r#"<https://huggingface.co/api/x/xet-read-token/a?x=1,2>; rel="xet-auth", <https://huggingface.co/api/models/a/tree/main?cursor=a,b>; rel="next", <https://cas/v1/r/1,2>; rel=xet-reconstruction-info"#;
        assert_eq!(
            strip_xet_links(v).as_deref(),
            Some(r#"<https://huggingface.co/api/models/a/tree/main?cursor=a,b>; rel="next""#)
        );
    }

    #[test]
    fn xet_rel_is_matched_case_insensitively_and_unquoted() {
        assert_eq!(strip_xet_links("<https://x/t>; rel=XET-AUTH"), None);
        assert_eq!(strip_xet_links("<https://x/t>;rel=xet-auth;foo=bar"), None);
    }

    #[test]
    fn member_with_several_rels_keeps_the_others() {
        assert_eq!(
            strip_xet_links(r#"<https://x/t>; rel="xet-auth next"; title="t""#).as_deref(),
            Some(r#"<https://x/t>; rel="next"; title="t""#)
        );
    }

    #[test]
    fn links_without_xet_are_returned_unchanged() {
        let v = "<https://a/b>;rel=next ,  <https://c/d>; rel=\"prev\"";
        assert_eq!(strip_xet_links(v).as_deref(), Some(v));
        assert_eq!(strip_xet_links(""), None);
    }

    #[test]
    fn xet_hash_is_removed_from_nested_json() {
        let mut v = json!([
            {"type":"file","oid":"3099","size":236568045,
             "lfs":{"oid":"55ba","size":236568045,"pointerSize":134},
             "xetHash":"9aed","path":"data/train.parquet"},
            {"type":"file","oid":"aa","size":519,"path":"config.json"},
            {"type":"directory","oid":"bb","size":0,"path":"data"},
            {"nested":{"deeper":[{"xetHash":"****"}]}}
        ]);
        assert_eq!(strip_xet_json(&mut v), 2);
        assert_eq!(
            v,
            json!([
                {"type":"file","oid":"3099","size":236568045,
                 "lfs":{"oid":"55ba","size":236568045,"pointerSize":134},
                 "path":"data/train.parquet"},
                {"type":"file","oid":"aa","size":519,"path":"config.json"},
                {"type":"directory","oid":"bb","size":0,"path":"data"},
                {"nested":{"deeper":[{}]}}
            ])
        );
        assert_eq!(strip_xet_json(&mut v), 0);
        let mut s = json!("xetHash");
        assert_eq!(strip_xet_json(&mut s), 0);
    }

    #[test]
    fn xet_header_reexport_works() {
        assert!(is_xet_header("X-Xet-Hash"));
        assert!(!is_xet_header("ETag"));
    }
}
