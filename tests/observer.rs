//! The observer cache against the real registry: hits cost nothing, the TTL leads to a cheap
//! revalidation by digest, a change is verified again, `checking` is never cached and puts the
//! registry in backoff. Requests are counted at the proxy, outside our code.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imageposture::image::ImageId;
use imageposture::observer::{Observer, ObserverConfig};
use imageposture::posture::{Posture, Reason};
use support::pki::{Identity, WORKFLOW_URI};
use support::proxy::{Mode, Proxy};
use support::{unique_repo, via, TestEnv};

const TTL: Duration = Duration::from_secs(600);

struct World {
    env: TestEnv,
    proxy: Proxy,
    observer: Observer,
}

impl World {
    async fn new(max_images: usize) -> World {
        let env = TestEnv::new();
        let proxy = Proxy::start(&env.registry.host).await;
        let verifier = env.verifier(env.config(&[&proxy.host])).await;
        let observer = Observer::new(
            Arc::new(verifier),
            ObserverConfig {
                ttl: TTL,
                max_images,
                ..ObserverConfig::default()
            },
        );
        World {
            env,
            proxy,
            observer,
        }
    }

    /// Observes one image at `now`; returns its posture and the requests it cost.
    async fn observe(&self, id: &ImageId, now: DateTime<Utc>) -> (Posture, Reason, Vec<String>) {
        self.proxy.reset_requests();
        let mut out = self
            .observer
            .observe_all(std::slice::from_ref(id), now)
            .await;
        let o = out.remove(id).expect("every image gets an answer");
        let requests = self
            .proxy
            .requests()
            .iter()
            .map(|r| r.to_string())
            .collect();
        (o.verdict.posture, o.verdict.reason, requests)
    }
}

fn at(secs: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::seconds(secs as i64)
}

#[tokio::test]
async fn hit_is_free_ttl_revalidates_by_head_and_change_reverifies() {
    let w = World::new(100).await;
    let id = via(
        &w.env.keyless_image("obs-ttl", &Identity::github()).await,
        &w.proxy.host,
    );

    let (p, _, cold) = w.observe(&id, at(0)).await;
    assert_eq!(p, Posture::Signed);
    assert!(!cold.is_empty());

    let (p, _, hit) = w.observe(&id, at(1)).await;
    assert_eq!(p, Posture::Signed);
    assert!(hit.is_empty(), "a cache hit makes no request: {hit:?}");

    // Past the TTL, nothing changed: HEAD requests only, no body downloaded.
    let (p, _, reval) = w.observe(&id, at(TTL.as_secs() + 1)).await;
    eprintln!("revalidation of an unchanged signed image: {reval:#?}");
    assert_eq!(p, Posture::Signed);
    assert!(!reval.is_empty() && reval.len() <= 2, "{reval:?}");
    assert!(reval.iter().all(|r| r.starts_with("HEAD ")), "{reval:?}");
    assert_eq!(w.observer.stats().revalidated, 1);

    // The signature is replaced: the .sig manifest digest changes, so verify again.
    let original = ImageId {
        registry: w.env.registry.host.clone(),
        ..id.clone()
    };
    w.env.sign_keyless(&original, &Identity::google()).await;
    let (p, _, changed) = w.observe(&id, at(2 * TTL.as_secs() + 2)).await;
    assert_eq!(p, Posture::Signed);
    assert!(changed.iter().any(|r| r.starts_with("GET ")), "{changed:?}");
}

#[tokio::test]
async fn checking_is_never_cached_and_backs_the_registry_off() {
    let w = World::new(100).await;
    let a = via(
        &w.env.keyless_image("obs-down-a", &Identity::github()).await,
        &w.proxy.host,
    );
    let b = via(
        &w.env.keyless_image("obs-down-b", &Identity::github()).await,
        &w.proxy.host,
    );
    w.proxy.set_mode(Mode::Status(503));

    let (p, r, first) = w.observe(&a, at(0)).await;
    assert_eq!((p, r), (Posture::Checking, Reason::RegistryError));
    assert!(!first.is_empty());

    // Same registry, inside the backoff: answered without a request, still `checking`.
    let (p, _, during) = w.observe(&b, at(1)).await;
    assert_eq!(p, Posture::Checking);
    assert!(during.is_empty(), "{during:?}");

    // Registry back, backoff over: verified for real (nothing was cached meanwhile).
    w.proxy.set_mode(Mode::Pass);
    let (p, _, after) = w.observe(&a, at(60)).await;
    assert_eq!(p, Posture::Signed);
    assert!(!after.is_empty());
}

#[tokio::test]
async fn warm_start_within_ttl_costs_nothing() {
    let w = World::new(100).await;
    let id = via(
        &w.env.keyless_image("obs-seed", &Identity::github()).await,
        &w.proxy.host,
    );
    let (_, _, _) = w.observe(&id, at(0)).await;
    let verdict = w
        .observer
        .observe_all(std::slice::from_ref(&id), at(0))
        .await[&id]
        .verdict
        .clone();
    assert_eq!(verdict.signer.as_deref(), Some(WORKFLOW_URI));

    let fresh = World::new(100).await;
    let restarted = Observer::new(
        Arc::new(fresh.env.verifier(w.env.config(&[&w.proxy.host])).await),
        ObserverConfig {
            ttl: TTL,
            ..ObserverConfig::default()
        },
    );
    restarted.seed(id.clone(), verdict, at(0), at(5));
    w.proxy.reset_requests();
    let out = restarted
        .observe_all(std::slice::from_ref(&id), at(5))
        .await;
    assert_eq!(out[&id].verdict.posture, Posture::Signed);
    assert!(w.proxy.requests().is_empty(), "{:?}", w.proxy.requests());
}

#[tokio::test]
async fn the_cap_defers_new_images_visibly() {
    let w = World::new(1).await;
    let first = via(
        &w.env.keyless_image("obs-cap-a", &Identity::github()).await,
        &w.proxy.host,
    );
    let img = w.env.oci.push_image(&unique_repo("obs-cap-b"), "v1").await;
    let second = via(&img.id, &w.proxy.host);
    let out = w
        .observer
        .observe_all(&[first.clone(), second.clone()], at(0))
        .await;
    assert_eq!(out[&first].verdict.posture, Posture::Signed);
    assert_eq!(
        (out[&second].verdict.posture, out[&second].verdict.reason),
        (Posture::Checking, Reason::Deferred)
    );
    assert_eq!(w.observer.stats().deferred, 1);
    assert_eq!(w.observer.cached(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_registry_does_not_starve_the_others() {
    let env = TestEnv::new();
    let slow = Proxy::start(&env.registry.host).await;
    let fast = Proxy::start(&env.registry.host).await;
    slow.set_mode(Mode::Delay(Duration::from_millis(300)));
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = env
            .keyless_image(&format!("obs-slow-{n}"), &Identity::github())
            .await;
        ids.push(via(&id, &slow.host));
    }
    let quick = env.keyless_image("obs-fast", &Identity::github()).await;
    ids.push(via(&quick, &fast.host));
    let verifier = env.verifier(env.config(&[&slow.host, &fast.host])).await;
    let observer = Arc::new(Observer::new(
        Arc::new(verifier),
        ObserverConfig {
            ttl: TTL,
            concurrency: 2,
            per_registry: 1,
            ..ObserverConfig::default()
        },
    ));

    // Slow images first in line: with one global slot per registry at most, the fast
    // registry still gets the other slot at once.
    let run = tokio::spawn({
        let observer = observer.clone();
        let ids = ids.clone();
        async move { observer.observe_all(&ids, at(0)).await }
    });
    let slow_seen_when_fast_started = loop {
        if !fast.requests().is_empty() {
            break slow.requests().len();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let out = run.await.unwrap();
    assert!(out.values().all(|o| o.verdict.posture == Posture::Signed));
    let slow_total = slow.requests().len();
    assert!(
        slow_seen_when_fast_started < slow_total / 2,
        "the fast registry waited for {slow_seen_when_fast_started} of {slow_total} slow requests"
    );
}
