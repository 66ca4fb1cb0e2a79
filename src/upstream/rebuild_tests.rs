//! A chain rebuilt for a reloaded config keeps the upstream objects whose config is unchanged
//! (their HTTP clients and health), wherever they moved in the order.

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::{UpstreamChain, UpstreamId};
use crate::config::UpstreamConfig;

fn cfg(url: &str) -> UpstreamConfig {
    UpstreamConfig::new(Url::parse(url).unwrap())
}

#[test]
fn a_rebuilt_chain_reuses_unchanged_upstreams_wherever_they_moved() {
    let (a, b, c) = (cfg("http://a:1"), cfg("http://b:1"), cfg("http://c:1"));
    let old = UpstreamChain::new(&[a.clone(), b.clone()], false).unwrap();
    let slower_a = UpstreamConfig {
        timeout: Duration::from_secs(3),
        ..a.clone()
    };
    let new = UpstreamChain::rebuild(&[c.clone(), b.clone(), slower_a], false, Some(&old)).unwrap();
    let ids: Vec<UpstreamId> = new.all().iter().map(|u| u.id).collect();
    assert_eq!(
        ids,
        [UpstreamId::of(&c), UpstreamId::of(&b), UpstreamId::of(&a)]
    );
    assert!(Arc::ptr_eq(&new.all()[1], &old.all()[1]), "b is kept");
    assert!(
        !Arc::ptr_eq(&new.all()[2], &old.all()[0]),
        "a changed: rebuilt"
    );
    // Lookups are by id: a's id still finds a, now at position 2.
    assert_eq!(
        new.get(UpstreamId::of(&a)).unwrap().base().as_str(),
        "http://a:1/"
    );
    assert!(old.get(UpstreamId::of(&c)).is_none());
}

/// The defect of index-based references: a location found on the origin (with the client's
/// token), used after a reload put a mirror first, went out with the mirror's settings, so the
/// origin got no token (and the mirror's health paid for the origin's failures).
#[tokio::test]
async fn a_location_found_before_a_reorder_still_goes_out_as_its_own_upstream() {
    use super::chain_tests::{Fake, TOKEN};
    use crate::config::Trust;
    let origin = Fake::start(200, &[("etag", "\"abc\"")]).await;
    let mirror = Fake::start(200, &[("etag", "\"abc\"")]).await;
    let (o, m) = (
        origin.config(Trust::Origin, false),
        mirror.config(Trust::Mirror, false),
    );
    let before = UpstreamChain::new(&[o.clone(), m.clone()], false).unwrap();
    let location = before
        .locate("/acme/gated/resolve/main/a.bin", Some(TOKEN), &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(location.upstream, UpstreamId::of(&o));
    let after = UpstreamChain::rebuild(&[m, o], false, Some(&before)).unwrap();
    let response = after.get_range(&location, 0, 1).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].auth.as_deref(),
        Some(TOKEN),
        "the origin's own request kept its token"
    );
    assert!(mirror.seen().is_empty());
}
