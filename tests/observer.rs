//! The observer against the real registry: a recorded verdict within its TTL costs nothing,
//! past it a cheap revalidation by digest, a change is verified again, `checking` is never
//! a verdict to keep and puts the registry in backoff. The record is what an ImagePosture's
//! status holds (the operator keeps none in memory). Requests are counted at the proxy.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imageposture::cache::{Busy, Observed, Observer, ObserverConfig, Recorded, Source};
use imageposture::core::image::ImageId;
use imageposture::core::posture::{Posture, Reason};
use support::pki::{Identity, WORKFLOW_URI};
use support::proxy::{Mode, Proxy};
use support::{via, TestEnv};

const TTL: Duration = Duration::from_secs(600);

struct World {
    env: TestEnv,
    proxy: Proxy,
    observer: Observer,
}

fn config() -> ObserverConfig {
    ObserverConfig {
        ttl: TTL,
        ..ObserverConfig::default()
    }
}

impl World {
    async fn new() -> World {
        let env = TestEnv::new();
        let proxy = Proxy::start(&env.registry.host).await;
        let verifier = env.verifier(env.config(&[&proxy.host])).await;
        let observer = Observer::new(Arc::new(verifier), config());
        World {
            env,
            proxy,
            observer,
        }
    }

    /// Observes one image at `now` from `recorded`; returns what it found and the requests.
    async fn observe(
        &self,
        id: &ImageId,
        recorded: Option<&Recorded>,
        now: DateTime<Utc>,
    ) -> (Observed, Vec<String>) {
        self.proxy.reset_requests();
        let o = self.observer.observe(id, recorded, now).await;
        let requests = self
            .proxy
            .requests()
            .iter()
            .map(|r| r.to_string())
            .collect();
        (o, requests)
    }
}

/// What the status records after an observation (a resting one).
fn record(o: &Observed) -> Recorded {
    Recorded {
        verdict: o.verdict.clone(),
        verified_at: o.verified_at.expect("resting"),
        checked_at: o.checked_at.expect("resting"),
        stale: false,
    }
}

fn at(secs: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::seconds(secs as i64)
}

#[tokio::test]
async fn hit_is_free_ttl_revalidates_by_head_and_change_reverifies() {
    let w = World::new().await;
    let id = via(
        &w.env.keyless_image("obs-ttl", &Identity::github()).await,
        &w.proxy.host,
    );

    let (cold, requests) = w.observe(&id, None, at(0)).await;
    assert_eq!(cold.verdict.posture, Posture::Signed);
    assert_eq!(cold.source, Source::Verified);
    assert!(!requests.is_empty());

    let (hit, requests) = w.observe(&id, Some(&record(&cold)), at(1)).await;
    assert_eq!(
        (hit.verdict.posture, hit.source),
        (Posture::Signed, Source::Hit)
    );
    assert!(requests.is_empty(), "a hit makes no request: {requests:?}");

    // Past the TTL, nothing changed: HEAD requests only, no body downloaded.
    let (reval, requests) = w
        .observe(&id, Some(&record(&cold)), at(TTL.as_secs() + 1))
        .await;
    eprintln!("revalidation of an unchanged signed image: {requests:#?}");
    assert_eq!(reval.source, Source::Revalidated);
    assert_eq!(reval.verdict.signer.as_deref(), Some(WORKFLOW_URI));
    assert_eq!(reval.verified_at, Some(at(0)), "lastVerified stays");
    assert_eq!(reval.checked_at, Some(at(TTL.as_secs() + 1)));
    assert!(!requests.is_empty() && requests.len() <= 2, "{requests:?}");
    assert!(
        requests.iter().all(|r| r.starts_with("HEAD ")),
        "{requests:?}"
    );
    assert_eq!(w.observer.stats().revalidated, 1);

    // The TTL now runs from the revalidation.
    let (hit, requests) = w
        .observe(&id, Some(&record(&reval)), at(TTL.as_secs() + 2))
        .await;
    assert_eq!(hit.source, Source::Hit);
    assert!(requests.is_empty(), "{requests:?}");

    // The signature is replaced: the .sig manifest digest changes, so verify again.
    let original = ImageId {
        registry: w.env.registry.host.clone(),
        ..id.clone()
    };
    w.env.sign_keyless(&original, &Identity::google()).await;
    let (changed, requests) = w
        .observe(&id, Some(&record(&reval)), at(3 * TTL.as_secs()))
        .await;
    assert_eq!(changed.verdict.posture, Posture::Signed);
    assert_eq!(changed.source, Source::Verified);
    assert!(
        requests.iter().any(|r| r.starts_with("GET ")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn checking_is_never_kept_and_backs_the_registry_off() {
    let w = World::new().await;
    let a = via(
        &w.env.keyless_image("obs-down-a", &Identity::github()).await,
        &w.proxy.host,
    );
    let b = via(
        &w.env.keyless_image("obs-down-b", &Identity::github()).await,
        &w.proxy.host,
    );
    w.proxy.set_mode(Mode::Status(503));

    let (first, requests) = w.observe(&a, None, at(0)).await;
    assert_eq!(
        (first.verdict.posture, first.verdict.reason),
        (Posture::Checking, Reason::RegistryError)
    );
    assert_eq!((first.verified_at, first.checked_at), (None, None));
    assert!(first.retry_in.is_some());
    assert!(!requests.is_empty());

    // Same registry, inside the backoff: answered without a request, in b's own words.
    let (during, requests) = w.observe(&b, None, at(1)).await;
    assert_eq!(
        (during.verdict.posture, during.source),
        (Posture::Checking, Source::BackedOff)
    );
    assert_eq!(during.verdict.reason, Reason::RegistryError);
    assert!(
        !during.verdict.message.contains(&a.repository),
        "{:?}",
        during.verdict.message
    );
    assert!(requests.is_empty(), "{requests:?}");

    // Registry back, backoff over: verified for real.
    w.proxy.set_mode(Mode::Pass);
    let (after, requests) = w.observe(&a, None, at(60)).await;
    assert_eq!(after.verdict.posture, Posture::Signed);
    assert!(!requests.is_empty());
}

#[tokio::test]
async fn a_recorded_verdict_within_ttl_costs_a_new_observer_nothing() {
    let w = World::new().await;
    let id = via(
        &w.env.keyless_image("obs-seed", &Identity::github()).await,
        &w.proxy.host,
    );
    let (cold, _) = w.observe(&id, None, at(0)).await;
    assert_eq!(cold.verdict.signer.as_deref(), Some(WORKFLOW_URI));

    // A restarted process: a new verifier and observer, the record from the status.
    let restarted = Observer::new(
        Arc::new(w.env.verifier(w.env.config(&[&w.proxy.host])).await),
        config(),
    );
    w.proxy.reset_requests();
    let o = restarted.observe(&id, Some(&record(&cold)), at(5)).await;
    assert_eq!(
        (o.verdict.posture, o.source),
        (Posture::Signed, Source::Hit)
    );
    assert!(w.proxy.requests().is_empty(), "{:?}", w.proxy.requests());

    // A stale record (the status shows `checking` since) is revalidated at once.
    let stale = Recorded {
        stale: true,
        ..record(&cold)
    };
    let o = restarted.observe(&id, Some(&stale), at(6)).await;
    assert_eq!(
        (o.verdict.posture, o.source),
        (Posture::Signed, Source::Revalidated)
    );
    // HEADs, and this new verifier's one probe of the referrers API (404 here).
    assert!(w
        .proxy
        .requests()
        .iter()
        .all(|q| q.method == "HEAD" || q.path.contains("/referrers/")));
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
            per_registry: 1,
            ..ObserverConfig::default()
        },
    ));

    // Slow images first in line, one slot for their registry: the fast registry's image does
    // not wait behind them, and a second slow one is told `Busy` at once, holding nothing.
    let runs: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let observer = observer.clone();
            tokio::spawn(async move { observer.observe(&id, None, at(0)).await })
        })
        .collect();
    let slow_seen_when_fast_started = loop {
        if !fast.requests().is_empty() {
            break slow.requests().len();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        observer.try_observe(&ids[0], None, at(0)).await.err(),
        Some(Busy),
        "the slow registry's one slot is taken"
    );
    for run in runs {
        assert_eq!(run.await.unwrap().verdict.posture, Posture::Signed);
    }
    let slow_total = slow.requests().len();
    assert!(
        slow_seen_when_fast_started < slow_total / 2,
        "the fast registry waited for {slow_seen_when_fast_started} of {slow_total} slow requests"
    );
}
