//! Query strings and `paths-info` bodies: parsing and canonical forms for cache keys.
//!
//! Booleans arrive as `true`/`false` (huggingface_hub ≥1.0, httpx), `True`/`False` (0.x,
//! requests) or `1`/`0`; all are accepted.

use percent_encoding::{percent_decode, percent_encode, AsciiSet};

use super::encoding::QUOTE_SAFE_NONE;

/// Python's `quote_plus` alphabet (as used by `urlencode`): like `quote(safe="")` but space is
/// written `+`, so `+` itself must be encoded.
const FORM_SAFE: &AsciiSet = QUOTE_SAFE_NONE;

/// Why a query or `paths-info` body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The body has a content type that is neither form nor JSON.
    #[error("unsupported paths-info content type {0:?}")]
    ContentType(String),
    /// A field is not UTF-8 once decoded.
    #[error("paths-info field {field:?} is not valid UTF-8 once decoded")]
    Utf8 {
        /// The field name.
        field: String,
    },
    /// A boolean field holds something else.
    #[error("invalid boolean {value:?} for {field:?}")]
    Bool {
        /// The field name.
        field: String,
        /// The rejected value.
        value: String,
    },
    /// The JSON body does not parse or has the wrong shape.
    #[error("invalid paths-info JSON: {0}")]
    Json(String),
}

/// Parses a boolean parameter: `true`/`True`/`1` → `Some(true)`, `false`/`False`/`0` →
/// `Some(false)` (case-insensitive, surrounding whitespace ignored), anything else `None`.
pub fn parse_bool_param(value: &str) -> Option<bool> {
    let v = value.trim();
    if v == "1" || v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v == "0" || v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Form-decodes one component: `+` is a space, `%XX` decoded, result as raw bytes.
fn form_decode_bytes(s: &str) -> Vec<u8> {
    let spaced = s.replace('+', " ");
    percent_decode(spaced.as_bytes()).collect()
}

/// Encodes bytes like Python's `quote_plus(s, safe="")`.
fn form_encode(bytes: &[u8]) -> String {
    percent_encode(bytes, FORM_SAFE)
        .to_string()
        .replace("%20", "+")
}

/// Splits `a=1&b&c=` into decoded `(key, value)` byte pairs (a key without `=` has an empty
/// value; empty pieces are skipped).
fn form_pairs(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode_bytes(k), form_decode_bytes(v))
        })
        .collect()
}

/// A canonical form of a raw query string, for use in cache keys: pairs decoded (form rules,
/// `+` = space), re-encoded in one fixed way (`%20` for space, uppercase hex), sorted by key then
/// value, joined with `&`. `a` and `a=` are the same. Empty when there is no query.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(raw) = raw_query else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = form_pairs(raw)
        .into_iter()
        .map(|(k, v)| {
            (
                percent_encode(&k, QUOTE_SAFE_NONE).to_string(),
                percent_encode(&v, QUOTE_SAFE_NONE).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The body of a `POST …/paths-info/{rev}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathsInfoRequest {
    /// Requested paths, in the order given.
    pub paths: Vec<String>,
    /// Whether `lastCommit` / `securityFileStatus` are wanted.
    pub expand: bool,
}

/// Parses a `paths-info` body: `application/x-www-form-urlencoded` (repeated `paths`, also
/// `paths[]`; `+` is a space; `expand` optional, default false) or `application/json`
/// (`{"paths": [...] | "...", "expand": bool}`). Without a content type, a body starting with
/// `{` is JSON and anything else a form. Unknown fields are ignored.
pub fn parse_paths_info_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<PathsInfoRequest, FormError> {
    let mime = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let is_json = match mime.as_deref() {
        Some("application/json") => true,
        Some("application/x-www-form-urlencoded") => false,
        Some(m) if m.ends_with("+json") => true,
        None | Some("") => body.trim_ascii_start().starts_with(b"{"),
        Some(_) => {
            return Err(FormError::ContentType(
                content_type.unwrap_or_default().to_string(),
            ))
        }
    };
    if is_json {
        parse_json_body(body)
    } else {
        parse_form_body(body)
    }
}

fn parse_form_body(body: &[u8]) -> Result<PathsInfoRequest, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::Utf8 {
        field: "<body>".to_string(),
    })?;
    let mut req = PathsInfoRequest::default();
    for (k, v) in form_pairs(text) {
        let key = String::from_utf8_lossy(&k);
        match key.as_ref() {
            "paths" | "paths[]" => {
                let path = String::from_utf8(v).map_err(|_| FormError::Utf8 {
                    field: key.to_string(),
                })?;
                req.paths.push(path);
            }
            "expand" => {
                let value = String::from_utf8_lossy(&v);
                req.expand = parse_bool_param(&value).ok_or_else(|| FormError::Bool {
                    field: "expand".to_string(),
                    value: value.to_string(),
                })?;
            }
            _ => {}
        }
    }
    Ok(req)
}

fn parse_json_body(body: &[u8]) -> Result<PathsInfoRequest, FormError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| FormError::Json(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| FormError::Json(format!("expected an object, got {value}")))?;
    let paths = match obj.get("paths") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| FormError::Json(format!("path {i} is not a string")))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(FormError::Json(format!("paths {other} is not a list"))),
    };
    let expand = match obj.get("expand") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => {
            parse_bool_param(s).ok_or_else(|| FormError::Bool {
                field: "expand".to_string(),
                value: s.clone(),
            })?
        }
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(0) => false,
            Some(1) => true,
            _ => {
                return Err(FormError::Bool {
                    field: "expand".to_string(),
                    value: n.to_string(),
                })
            }
        },
        Some(other) => {
            return Err(FormError::Bool {
                field: "expand".to_string(),
                value: other.to_string(),
            })
        }
    };
    Ok(PathsInfoRequest { paths, expand })
}

/// A cache-key string for a request: paths sorted and deduplicated, in the form encoding of
/// [`encode_paths_info_form`]. Two requests for the same set of paths get the same key.
pub fn canonical_paths_info_key(req: &PathsInfoRequest) -> String {
    let mut paths = req.paths.clone();
    paths.sort();
    paths.dedup();
    encode_paths_info_form(&PathsInfoRequest {
        paths,
        expand: req.expand,
    })
}

/// The form body the Python client sends: `paths=a&paths=b&expand=false` (paths in the given
/// order, `quote_plus` encoding, lowercase boolean).
pub fn encode_paths_info_form(req: &PathsInfoRequest) -> String {
    let mut parts: Vec<String> = req
        .paths
        .iter()
        .map(|p| format!("paths={}", form_encode(p.as_bytes())))
        .collect();
    parts.push(format!("expand={}", req.expand));
    parts.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(paths: &[&str], expand: bool) -> PathsInfoRequest {
        PathsInfoRequest {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            expand,
        }
    }

    #[test]
    fn bool_params_accept_all_client_spellings() {
        for t in ["true", "True", "TRUE", "1", " true "] {
            assert_eq!(parse_bool_param(t), Some(true), "{t}");
        }
        for f in ["false", "False", "0"] {
            assert_eq!(parse_bool_param(f), Some(false), "{f}");
        }
        for x in ["", "yes", "2", "tru"] {
            assert_eq!(parse_bool_param(x), None, "{x}");
        }
    }

    #[test]
    fn canonical_query_sorts_and_normalizes() {
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("")), "");
        assert_eq!(
            canonical_query(Some("recursive=true&expand=false")),
            "expand=false&recursive=true"
        );
        assert_eq!(
            canonical_query(Some("expand=false&recursive=true")),
            "expand=false&recursive=true"
        );
        // percent-normalised: %7e == ~, lower/upper hex, + == %20 == space
        assert_eq!(
            canonical_query(Some("a=%7e&b=x+y&c=x%20y&d=%2f")),
            "a=~&b=x%20y&c=x%20y&d=%2F"
        );
        // repeated keys sorted by value; `k` == `k=`
        assert_eq!(
            canonical_query(Some("expand[]=b&expand[]=a&blobs&&x=")),
            "blobs=&expand%5B%5D=a&expand%5B%5D=b&x="
        );
    }

    #[test]
    fn paths_info_form_with_python_booleans() {
        let r = parse_paths_info_body(
            Some("application/x-www-form-urlencoded"),
            b"paths=config.json&paths=sub%2Fa+b.txt&expand=False",
        )
        .unwrap();
        assert_eq!(r, req(&["config.json", "sub/a b.txt"], false));
        let r = parse_paths_info_body(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"paths=x&expand=True",
        )
        .unwrap();
        assert_eq!(r, req(&["x"], true));
        let r = parse_paths_info_body(None, b"paths=x&expand=1").unwrap();
        assert_eq!(r, req(&["x"], true));
        let r = parse_paths_info_body(None, b"paths%5B%5D=a%2Bb&other=1").unwrap();
        assert_eq!(r, req(&["a+b"], false));
    }

    #[test]
    fn paths_info_form_rejects_bad_values() {
        let err = parse_paths_info_body(None, b"paths=x&expand=maybe").unwrap_err();
        assert!(err.to_string().contains("\"maybe\""), "{err}");
        assert!(parse_paths_info_body(None, b"paths=%FF").is_err());
        let err = parse_paths_info_body(Some("multipart/form-data; boundary=x"), b"").unwrap_err();
        assert!(err.to_string().contains("multipart/form-data"), "{err}");
    }

    #[test]
    fn paths_info_json_body() {
        let r = parse_paths_info_body(
            Some("application/json"),
            br#"{"paths": ["a.txt", "dir/b c.bin"], "expand": true}"#,
        )
        .unwrap();
        assert_eq!(r, req(&["a.txt", "dir/b c.bin"], true));
        let r = parse_paths_info_body(None, br#" {"paths": "one", "expand": "False"}"#).unwrap();
        assert_eq!(r, req(&["one"], false));
        let r = parse_paths_info_body(Some("application/json"), br#"{"paths": []}"#).unwrap();
        assert_eq!(r, req(&[], false));
        for bad in [
            &br#"{"paths": [1]}"#[..],
            br#"{"paths": {}}"#,
            br#"[]"#,
            br#"{"paths": ["a"], "expand": "maybe"}"#,
            br#"{"paths": ["a"], "expand": 2}"#,
            b"{not json",
        ] {
            assert!(
                parse_paths_info_body(Some("application/json"), bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn paths_info_form_encoding_matches_python_urlencode() {
        // urllib.parse.urlencode({"paths": [...], "expand": False}, doseq=True) with lowercased bool
        assert_eq!(
            encode_paths_info_form(&req(&["sub/a b.txt", "x+y~é"], false)),
            "paths=sub%2Fa+b.txt&paths=x%2By~%C3%A9&expand=false"
        );
        assert_eq!(encode_paths_info_form(&req(&[], true)), "expand=true");
    }

    #[test]
    fn paths_info_form_round_trips() {
        let original = req(&["a b/c+d.txt", "weird name +#%é.txt", "x&y=z"], true);
        let body = encode_paths_info_form(&original);
        let parsed =
            parse_paths_info_body(Some("application/x-www-form-urlencoded"), body.as_bytes())
                .unwrap();
        assert_eq!(parsed, original);
    }

    #[test]
    fn paths_info_key_is_sorted_and_deduplicated() {
        let a = canonical_paths_info_key(&req(&["b", "a", "b"], false));
        let b = canonical_paths_info_key(&req(&["a", "b"], false));
        assert_eq!(a, b);
        assert_eq!(a, "paths=a&paths=b&expand=false");
        assert_ne!(a, canonical_paths_info_key(&req(&["a", "b"], true)));
    }
}
