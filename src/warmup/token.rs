//! Hub tokens of warm-up jobs and pins (gated and private repos).
//!
//! A job request (`POST /api/jobs`, an entry of `POST /api/pins`, an entry of a pin manifest)
//! may carry `token`: the hub token the job fetches with. It is split off the request before
//! the rest is read as a [`JobSpec`], so a spec (answered by the jobs and pins API, saved under
//! the cache root) never holds it. The token lives only in memory, as a [`HubToken`], whose
//! `Debug` is redacted; a job saved with one is marked `needs_token`, and after a restart it is
//! failed with [`NEEDS_TOKEN`] rather than run without it.

use hubcache_plugin_api::Secret;

use super::job::JobSpec;
use crate::config::env;

/// Longest token taken (the Hub's are about 40 characters).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a resumed job did not run.
pub const NEEDS_TOKEN: &str = "needs its hub token again: tokens are kept only in memory, so a \
     restarted node does not have it; start the job again with the token (hubcache warm \
     --hf-token, or HF_TOKEN); files already cached are skipped";

/// Why a request's `token` cannot be used. The messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token must be a string")]
    NotAString,
    #[error("token is empty")]
    Empty,
    #[error("token must be printable ASCII without spaces, at most {MAX_TOKEN_LEN} characters")]
    Malformed,
    #[error("token {0}")]
    Env(String),
    #[error("{0}")]
    Spec(String),
}

/// A hub token, held as the `Authorization` value it is sent as (`Bearer <token>`). Never
/// serialized; `Debug` prints no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct HubToken(Secret);

impl HubToken {
    /// A token as a user gives it (`hf_...`), checked to fit in a header.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Malformed);
        }
        Ok(Self(Secret::new(format!("Bearer {token}"))))
    }

    /// The `Authorization` value (only for requests to the upstream chain, which sends it to
    /// `origin` upstreams alone).
    pub fn authorization(&self) -> &str {
        self.0.expose()
    }

    /// The token itself (for `hubcache pin` to send it to the node's admin API).
    pub fn token(&self) -> &str {
        self.authorization()
            .strip_prefix("Bearer ")
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for HubToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubToken(<redacted>)")
    }
}

/// A job request: the spec and the token it came with.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub spec: JobSpec,
    pub token: Option<HubToken>,
}

/// Read a JSON job request (`{repo, ..., token}`).
pub fn from_json(mut body: serde_json::Value) -> Result<JobRequest, TokenError> {
    let token = match body.as_object_mut().and_then(|o| o.remove("token")) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(HubToken::new(&t)?),
        Some(_) => return Err(TokenError::NotAString),
    };
    let spec = serde_json::from_value(body).map_err(|e| TokenError::Spec(e.to_string()))?;
    Ok(JobRequest { spec, token })
}

/// The JSON of a job request (what `hubcache warm` sends).
pub fn to_json(spec: &JobSpec, token: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::to_value(spec).unwrap_or_default();
    if let (Some(object), Some(token)) = (body.as_object_mut(), token) {
        object.insert("token".into(), token.into());
    }
    body
}

/// How a manifest entry's `token` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestTokens {
    /// `${ENV}` references expanded from this process's environment.
    Expand,
    /// Left out (only the specs are wanted, e.g. for eviction pins).
    Drop,
}

/// Read one entry of a YAML pin manifest (`{repo, ..., token: ${HF_TOKEN}}`).
pub fn from_yaml(
    mut entry: serde_yaml::Value,
    tokens: ManifestTokens,
) -> Result<JobRequest, TokenError> {
    let raw = match entry.as_mapping_mut().and_then(|m| m.remove("token")) {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::String(t)) => Some(t),
        Some(_) => return Err(TokenError::NotAString),
    };
    let spec = serde_yaml::from_value(entry).map_err(|e| TokenError::Spec(e.to_string()))?;
    let token = match (raw, tokens) {
        (Some(raw), ManifestTokens::Expand) => {
            let token = env::expand_from_process(&raw).map_err(TokenError::Env)?;
            Some(HubToken::new(&token)?)
        }
        _ => None,
    };
    Ok(JobRequest { spec, token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warmup::job::JobRecord;

    const TOKEN: &str = "hf_S3cretTokenValue";

    #[test]
    fn a_json_request_splits_the_token_off_the_spec() {
        let request = from_json(serde_json::json!({
            "repo": "acme/gated-model", "include": "*.json", "token": TOKEN
        }))
        .unwrap();
        assert_eq!(request.spec.repo, "acme/gated-model");
        let token = request.token.expect("token");
        assert_eq!(token.authorization(), format!("Bearer {TOKEN}"));
        // Neither the spec (shown by the API, saved on disk) nor the Debug output has it.
        let spec_json = serde_json::to_string(&request.spec).unwrap();
        assert!(!spec_json.contains(TOKEN), "{spec_json}");
        assert_eq!(format!("{token:?}"), "HubToken(<redacted>)");
        let target = request.spec.target().unwrap();
        let record = JobRecord::new("j".into(), &target, request.spec.clone(), 0);
        let saved = serde_json::to_string(&record).unwrap();
        assert!(
            !saved.contains(TOKEN) && !saved.contains("S3cret"),
            "{saved}"
        );
        let without = from_json(serde_json::json!({"repo": "acme/x", "token": null})).unwrap();
        assert!(without.token.is_none());
    }

    #[test]
    fn the_client_sends_the_token_beside_the_spec_and_the_node_reads_it_back() {
        let spec = JobSpec::whole("acme/gated-model", crate::hf::RepoType::Model);
        let body = to_json(&spec, Some(TOKEN));
        assert_eq!(body["token"], TOKEN);
        let back = from_json(body).unwrap();
        assert_eq!(back.spec, spec);
        assert!(back.token.is_some());
        assert!(to_json(&spec, None).get("token").is_none());
    }

    #[test]
    fn bad_tokens_are_refused_without_echoing_them() {
        let refused = |token: serde_json::Value| {
            from_json(serde_json::json!({"repo": "acme/x", "token": token})).unwrap_err()
        };
        assert_eq!(refused("".into()), TokenError::Empty);
        assert_eq!(refused(42.into()), TokenError::NotAString);
        let spaced = refused("hf_abc def\r\nX-Evil: 1".into());
        assert_eq!(spaced, TokenError::Malformed);
        assert!(!spaced.to_string().contains("hf_abc"));
        assert_eq!(
            refused("x".repeat(MAX_TOKEN_LEN + 1).into()),
            TokenError::Malformed
        );
        let unknown = from_json(serde_json::json!({"repo": "a/b", "colour": 1})).unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
    }

    #[test]
    fn a_manifest_token_expands_from_the_environment_or_is_dropped() {
        // PATH is set wherever tests run, and is printable without spaces on CI machines.
        let path = std::env::var("PATH").unwrap_or_default();
        let entry: serde_yaml::Value =
            serde_yaml::from_str("{repo: acme/gated-model, token: '${PATH}'}").unwrap();
        let expanded = from_yaml(entry.clone(), ManifestTokens::Expand);
        if !path.is_empty() && path.bytes().all(|b| b.is_ascii_graphic()) {
            let token = expanded.unwrap().token.expect("token");
            assert_eq!(token.authorization(), format!("Bearer {path}"));
        }
        let dropped = from_yaml(entry, ManifestTokens::Drop).unwrap();
        assert!(dropped.token.is_none());
        assert_eq!(dropped.spec.repo, "acme/gated-model");
        let missing: serde_yaml::Value =
            serde_yaml::from_str("{repo: a/b, token: '${HUBCACHE_TEST_NO_SUCH_VAR}'}").unwrap();
        let e = from_yaml(missing.clone(), ManifestTokens::Expand).unwrap_err();
        assert_eq!(
            e.to_string(),
            "token environment variable HUBCACHE_TEST_NO_SUCH_VAR is not set"
        );
        assert!(from_yaml(missing, ManifestTokens::Drop).is_ok());
    }
}
