//! The requests this node sends its siblings: ranged block requests and probes, signed
//! (metadata questions: `meta_client`).

use reqwest::header::{AUTHORIZATION, RANGE};

use super::members::{Cluster, Node};
use super::route::{BlobQuery, PING};
use super::sign::{unix_now, Signed, HEADER_SIGNATURE, HEADER_TIME};

impl Cluster {
    /// A signed request (`method`: GET or HEAD) of `path_and_query` on `node`, with `range`
    /// and the client's `auth`.
    pub(super) fn signed(
        &self,
        method: &reqwest::Method,
        node: &Node,
        path_and_query: &str,
        range: Option<&str>,
        auth: Option<&str>,
    ) -> Option<reqwest::RequestBuilder> {
        let signer = self.signer()?;
        let time = unix_now();
        let signature = signer.sign(
            &Signed {
                method: method.as_str(),
                path_and_query,
                range,
                auth,
            },
            time,
        );
        let mut builder = self
            .client
            .request(method.clone(), format!("{}{path_and_query}", node.origin()))
            .header(HEADER_TIME, time.to_string())
            .header(HEADER_SIGNATURE, signature);
        if let Some(range) = range {
            builder = builder.header(RANGE, range);
        }
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        Some(builder)
    }

    pub(super) fn ping_request(&self, node: &Node) -> Option<reqwest::RequestBuilder> {
        self.signed(&reqwest::Method::GET, node, PING, None, None)
    }

    /// Ask `node` for bytes `[start, end]` (inclusive) of blob `id`, on behalf of a client
    /// whose token (`auth`, for gated and private repos) this node verified with the hub.
    /// Returns the response whatever its status (the caller checks it).
    pub async fn get_range(
        &self,
        node: &Node,
        id: &str,
        query: &BlobQuery,
        start: u64,
        end_inclusive: u64,
        auth: Option<&str>,
    ) -> Result<reqwest::Response, String> {
        let path_and_query = query.path_and_query(id);
        let range = format!("bytes={start}-{end_inclusive}");
        let request = self
            .signed(
                &reqwest::Method::GET,
                node,
                &path_and_query,
                Some(&range),
                auth,
            )
            .ok_or_else(|| "no cluster.secret to sign with".to_string())?;
        request
            .send()
            .await
            .map_err(|e| format!("{}: {}", node.origin(), e.without_url()))
    }
}
