//! The registry edge against a real Debian `docker-registry` on 127.0.0.1, with images pushed
//! by `skopeo`: tag → digest, index children, `:*`, missing tags, the bearer-token flow, and
//! the cache keeping its last good set when the registry goes down.

use std::{collections::HashSet, sync::Arc, sync::atomic::Ordering};

use eci_agent::{
    policy::image_ref::{Digest, ImagePattern},
    registry::{DigestCache, DigestSource, RegistryClient, RegistryConfig},
};
use eci_tests::registry::{Registry, TokenServer};

/// Settings whose imageList is `entry` alone.
fn listing(entry: &ImagePattern) -> Arc<eci_agent::settings::Settings> {
    let json = serde_json::json!({
        "configurationFileVersion": 2,
        "enhancedContainerIsolation": {"value": true, "dockerSocketMount": {
            "imageList": {"images": [entry.to_string()]}}},
    });
    Arc::new(eci_tests::sidecar::settings(&json.to_string()))
}

fn client(addr: &str) -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        insecure: HashSet::from([addr.to_owned()]),
        ..Default::default()
    })
    .unwrap()
}

fn pattern(s: &str) -> ImagePattern {
    ImagePattern::parse(s).unwrap()
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

#[tokio::test]
async fn tag_resolves_to_index_and_platform_digests() {
    let reg = Registry::start().unwrap();
    let (index, manifest) = reg.push_index("team/app:1.0", "one").unwrap();
    let single = reg.push_image("team/single:2", "two").unwrap();
    let c = client(&reg.addr);

    let got = c
        .resolve(&pattern(&format!("{}/team/app:1.0", reg.addr)))
        .await
        .unwrap();
    assert_eq!(
        got,
        [digest(&index), digest(&manifest)].into_iter().collect()
    );

    let got = c
        .resolve(&pattern(&format!("{}/team/single:2", reg.addr)))
        .await
        .unwrap();
    assert_eq!(got, [digest(&single)].into_iter().collect());

    // An unknown tag or repository resolves to nothing (the registry answered).
    assert!(
        c.resolve(&pattern(&format!("{}/team/app:nope", reg.addr)))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.resolve(&pattern(&format!("{}/team/none:*", reg.addr)))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn any_tag_resolves_every_tag() {
    let reg = Registry::start().unwrap();
    let a = reg.push_image("team/multi:1", "first").unwrap();
    let b = reg.push_image("team/multi:2", "second").unwrap();
    let (idx, plat) = reg.push_index("team/multi:3", "third").unwrap();
    let c = client(&reg.addr);
    let got = c
        .resolve(&pattern(&format!("{}/team/multi:*", reg.addr)))
        .await
        .unwrap();
    assert_eq!(
        got,
        [&a, &b, &idx, &plat]
            .into_iter()
            .map(|d| digest(d))
            .collect()
    );
    let mut tags = c
        .tags(
            &pattern(&format!("{}/team/multi:*", reg.addr))
                .repo()
                .unwrap()
                .clone(),
        )
        .await
        .unwrap();
    tags.sort();
    assert_eq!(tags, ["1", "2", "3"]);
}

#[tokio::test]
async fn bearer_token_flow() {
    let tokens = TokenServer::start().unwrap();
    let reg = Registry::start_with_auth(Some(&tokens.realm)).unwrap();
    let pushed = reg.push_image("team/private:1", "secret").unwrap();
    let before = tokens.requests.load(Ordering::Relaxed);
    let c = client(&reg.addr);
    let got = c
        .resolve(&pattern(&format!("{}/team/private:1", reg.addr)))
        .await
        .unwrap();
    assert_eq!(got, [digest(&pushed)].into_iter().collect());
    assert!(
        tokens.requests.load(Ordering::Relaxed) > before,
        "the client fetched a token"
    );
}

#[tokio::test]
async fn cache_keeps_last_good_set_when_registry_goes_down() {
    let mut reg = Registry::start().unwrap();
    let pushed = reg.push_image("team/keep:1", "kept").unwrap();
    let entry = pattern(&format!("{}/team/keep:1", reg.addr));
    let cache = Arc::new(DigestCache::new(listing(&entry)));
    let c = client(&reg.addr);

    let report = cache.refresh(&c).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(cache.allowed().entry_for(&digest(&pushed)), Some(&entry));

    reg.stop();
    let report = cache.refresh(&c).await;
    assert_eq!(report.failed.len(), 1);
    assert_eq!(
        cache.allowed().entry_for(&digest(&pushed)),
        Some(&entry),
        "last good set kept"
    );
}

#[tokio::test]
async fn registry_never_reached_allows_nothing() {
    let mut reg = Registry::start().unwrap();
    let addr = reg.addr.clone();
    reg.stop();
    let entry = pattern(&format!("{addr}/team/never:1"));
    let cache = DigestCache::new(listing(&entry));
    let report = cache.refresh(&client(&addr)).await;
    assert_eq!(report.failed.len(), 1);
    assert!(cache.allowed().is_empty());
    assert_eq!(cache.allowed().unresolved(), std::slice::from_ref(&entry));
}
