//! Streaming a byte range straight from upstream to a client, without the store: used when
//! the cache cannot take the bytes (disk full), so the client still gets them.
//! The same rules as for fills apply: the answer must be exactly the range asked for, and a
//! stream that ends early is an error, never a short body that looks complete.

use bytes::Bytes;

use super::segment::{check_response, skip_prefix};
use super::{BlobSource, FetchError};
use crate::upstream::UpstreamChain;

pub struct DirectStream {
    response: reqwest::Response,
    /// Leading body bytes to drop (an upstream that answered a range with the whole file).
    skip: u64,
    pos: u64,
    end: u64,
}

impl DirectStream {
    /// Open `[start, end)` of the source's file from the first upstream that has it.
    pub async fn open(
        upstream: &UpstreamChain,
        source: &BlobSource,
        start: u64,
        end: u64,
    ) -> Result<Self, FetchError> {
        let path = source.resolve_path()?;
        let location = match upstream.locate(&path, source.auth.as_deref(), &[]).await? {
            Ok(location) => location,
            Err(response) => {
                return Err(FetchError::Refused {
                    what: path,
                    status: response.status,
                })
            }
        };
        let response = upstream
            .get_range(&location, start, end - 1)
            .await
            .map_err(|f| FetchError::GaveUp {
                start,
                end: end - 1,
                reason: format!("{f:?}"),
            })?;
        let content_range = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok());
        let skip = check_response(
            response.status().as_u16(),
            content_range,
            start,
            end,
            source.size,
            true,
        )
        .map_err(|reason| FetchError::GaveUp {
            start,
            end: end - 1,
            reason,
        })?;
        Ok(Self {
            response,
            skip,
            pos: start,
            end,
        })
    }

    /// The next chunk, `None` at the end of the range.
    pub async fn next(&mut self) -> Result<Option<Bytes>, FetchError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let broke = |reason: String| FetchError::GaveUp {
            start: 0,
            end: 0,
            reason,
        };
        loop {
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    let mut chunk = skip_prefix(chunk, &mut self.skip);
                    if chunk.is_empty() {
                        continue;
                    }
                    let room = (self.end - self.pos) as usize;
                    if chunk.len() > room {
                        chunk.truncate(room);
                    }
                    self.pos += chunk.len() as u64;
                    return Ok(Some(chunk));
                }
                Ok(None) => {
                    return Err(broke(format!(
                        "upstream stream ended at byte {} of {}",
                        self.pos, self.end
                    )))
                }
                Err(e) => return Err(broke(format!("upstream stream broke: {e}"))),
            }
        }
    }
}
