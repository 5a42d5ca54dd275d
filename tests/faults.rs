//! Faults under the operator: the registry (through the fault proxy in front of a real
//! Distribution 2.8) and the Kubernetes API (the real kube-apiserver of tests/support/kube, behind its
//! counting, fault-injecting proxy) misbehave, and the sweep must never delete or downgrade an
//! ImagePosture because of it.
//!
//! After every fault: a resource that rested at a posture keeps it or shows `checking` with the
//! right reason and `checkingSince` (never another resting posture); the next good pass brings
//! the resting posture back; retries are bounded, counted outside the code under test (at the
//! registry proxies, the API proxy, and the verifier's request hook).
//!
//! The in-process tests drive both loops through the same seams as `tests/sweep.rs`
//! (tests/support/harness: a kube reflector store fed with the real Pods as the operator's
//! ServiceAccount lists them, a real `kube::Client` with the RBAC of config/rbac, through the
//! API proxy) with the clock passed in, so TTLs and backoffs cost no wall time. API faults
//! (500, 409, 504, unanswered writes, cut watches, 410 Gone) are the proxy's: the real server
//! cannot give them on demand. Watch drops and 410 Gone need the reflectors, so that scenario
//! runs the `imageposture run` process, as `tests/run.rs` does.
//!
//! Each test starts its own kube-apiserver and skips (with a note) when its binaries are
//! missing, except under `CI=true`.
//!
//! `cargo test --test faults -- --nocapture` prints the counts behind the
//! Reliability table of docs/reliability.md.

#[path = "support/harness/mod.rs"]
mod harness;
#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::runtime::reflector::{self, store::Writer, Store};
use ::kube::runtime::watcher;
use chrono::{DateTime, SecondsFormat, Utc};
use harness::{Operator, Report};
use imageposture::cache::ObserverConfig;
use imageposture::core::image::ImageId;
use imageposture::core::posture::{Posture, Reason};
use imageposture::model::crd::{ImagePosture, ImagePostureStatus};
use imageposture::model::naming::ResourceName as _;
use imageposture::operator::inventory::sweep::SweepConfig;
use imageposture::verify::{Verifier, VerifierConfig};
use k8s_openapi::api::core::v1::Pod;
use kube::cluster::Cluster;
use kube::proxy::{is_list_of, is_watch, is_watch_of, Fault};
use serde_json::{json, Value};
use support::pki::{Identity, WORKFLOW_URI};
use support::proxy::{refused_address, Mode, Proxy};
use support::{unique_repo, via, TestEnv};

/// Simulated: passes are placed in time by `now`, nothing waits for it.
const TTL: Duration = Duration::from_secs(3600);
const GRACE: Duration = Duration::from_secs(600);
/// First registry backoff (doubles per failure up to `MAX_BACKOFF`); simulated too.
const BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Verifications in flight per registry: the bound on requests a failing registry gets in one
/// pass is a multiple of this, not of the number of images.
const PER_REGISTRY: usize = 2;
/// Real time: the per-image budget (`--image-timeout`).
const BUDGET: Duration = Duration::from_millis(600);
/// Real time: the per-write deadline in these tests.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap()
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A pass after the TTL of one at `t`, and after any backoff a failure at `t` started.
fn next_pass(t: DateTime<Utc>) -> DateTime<Utc> {
    after(t, TTL + MAX_BACKOFF + Duration::from_secs(1))
}

fn pod(ns: &str, name: &str, images: &[&ImageId]) -> Pod {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, id)| json!({ "name": format!("c{i}"), "image": id.key() }))
        .collect();
    let statuses: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({ "name": format!("c{i}"), "image": id.key(), "imageID": id.key(),
                    "ready": true, "restartCount": 0 })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}") },
        "spec": { "containers": containers },
        "status": { "phase": "Running", "containerStatuses": statuses },
    }))
    .expect("pod JSON")
}

// ---- the world --------------------------------------------------------------------------------

/// Requests the verifier itself sent, by host (status 0: no response), through its hook.
#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<Vec<(String, u16)>>>);

impl Attempts {
    fn to(&self, host: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _)| h == host)
            .count()
    }
    fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Two registry endpoints (proxies `a` and `b` in front of one Distribution), the real API
/// server (the operator's client through its proxy), a pod reflector store and an operator.
struct World {
    env: TestEnv,
    a: Proxy,
    b: Proxy,
    api: Cluster,
    attempts: Attempts,
    op: Operator,
    pods: Store<Pod>,
    writer: Writer<Pod>,
}

fn config() -> harness::Config {
    harness::Config {
        observer: ObserverConfig {
            ttl: TTL,
            backoff: BACKOFF,
            max_backoff: MAX_BACKOFF,
            per_registry: PER_REGISTRY,
            budget: BUDGET,
        },
        sweep: SweepConfig {
            grace: GRACE,
            ..SweepConfig::default()
        },
        write_timeout: WRITE_TIMEOUT,
        concurrency: 8,
        ..harness::Config::default()
    }
}

impl World {
    async fn new() -> Option<World> {
        let api = Cluster::start().await?;
        let env = TestEnv::new();
        let a = Proxy::start(&env.registry.host).await;
        let b = Proxy::start(&env.registry.host).await;
        let (pods, writer) = reflector::store::<Pod>();
        let attempts = Attempts::default();
        let config = verifier_config(&env, &[&a.host, &b.host]);
        let op = new_operator(&api, &attempts, config).await;
        Some(World {
            env,
            a,
            b,
            api,
            attempts,
            op,
            pods,
            writer,
        })
    }

    /// A restarted operator with another verifier configuration.
    async fn restarted(&self, config: VerifierConfig) -> Operator {
        new_operator(&self.api, &self.attempts, config).await
    }

    async fn signed(&self, name: &str, proxy: &Proxy) -> ImageId {
        let id = self.env.keyless_image(name, &Identity::github()).await;
        via(&id, &proxy.host)
    }

    async fn unsigned(&self, name: &str, proxy: &Proxy) -> ImageId {
        let img = self.env.oci.push_image(&unique_repo(name), "v1").await;
        via(&img.id, &proxy.host)
    }

    /// One pod per image (`prod/p<i>`), real Pods in the cluster: a pod of another image or
    /// not named any more is deleted, a missing one created (spec, then status as the kubelet
    /// writes it). The pod watcher's initial list is the pods as the operator's ServiceAccount
    /// lists them.
    async fn run(&mut self, ids: &[&ImageId]) {
        let wanted: Vec<Pod> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| pod("prod", &format!("p{i}"), &[id]))
            .collect();
        let image = |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
        };
        let listed = self.api.pods().await;
        let mut fresh = Vec::new();
        for want in &wanted {
            let same = listed
                .iter()
                .find(|o| o.metadata.name == want.metadata.name);
            match same {
                Some(old) if image(old) == image(want) => {}
                Some(old) => {
                    self.api.delete_pod(old).await;
                    fresh.push(want.clone());
                }
                None => fresh.push(want.clone()),
            }
        }
        for old in &listed {
            if !wanted.iter().any(|w| w.metadata.name == old.metadata.name) {
                self.api.delete_pod(old).await;
            }
        }
        self.api.put_pods(&fresh).await;
        self.writer.apply_watcher_event(&watcher::Event::Init);
        for p in self.api.pods().await {
            self.writer
                .apply_watcher_event(&watcher::Event::InitApply(p));
        }
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Report {
        self.sweep_with(&self.op, now).await
    }

    async fn sweep_with(&self, op: &Operator, now: DateTime<Utc>) -> Report {
        op.pass(&self.api.client(), &self.pods.state(), now).await
    }

    /// Every stored ImagePosture's status, by name (read by the admin).
    async fn snapshot(&self) -> BTreeMap<String, ImagePostureStatus> {
        self.api
            .image_postures()
            .await
            .into_iter()
            .map(|v| {
                let cr: ImagePosture = serde_json::from_value(v).expect("stored ImagePosture");
                let name = cr.metadata.name.clone().expect("name");
                (name, cr.status.unwrap_or_default())
            })
            .collect()
    }

    async fn status(&self, id: &ImageId) -> ImagePostureStatus {
        self.snapshot()
            .await
            .remove(&id.resource_name())
            .unwrap_or_else(|| panic!("no ImagePosture for {id}"))
    }

    /// How many of `ids` are `checking` now.
    async fn checking(&self, ids: &[&ImageId]) -> usize {
        let now = self.snapshot().await;
        ids.iter()
            .filter(|id| {
                now.get(&id.resource_name())
                    .is_some_and(|s| s.posture == Some(Posture::Checking))
            })
            .count()
    }

    /// The `imageposture.io/posture` label of an image's resource.
    async fn label(&self, id: &ImageId) -> Option<String> {
        let v = self.api.image_posture(&id.resource_name()).await?;
        v["metadata"]["labels"]["imageposture.io/posture"]
            .as_str()
            .map(str::to_string)
    }

    /// Forgets counted requests (registries, API proxy, verifier) and the API faults.
    fn reset_counters(&self) {
        self.a.reset_requests();
        self.b.reset_requests();
        self.api.reset_counters();
        self.api.proxy.clear_faults();
        self.attempts.reset();
    }

    /// ImagePosture writes (main and status endpoints, any method) at the API proxy, answered
    /// or failed.
    fn posture_writes(&self) -> usize {
        ["PATCH", "PUT", "POST", "DELETE"]
            .iter()
            .map(|m| self.api.image_posture_writes(m))
            .sum()
    }

    /// The next `n` writes to a path containing `needle` answer `code` (at the API proxy).
    fn fail_writes_to(&self, needle: &str, code: u16, n: usize) {
        self.api
            .proxy
            .fail_writes(needle, Fault::Status(code), Some(n));
    }

    /// The next `n` writes to a path containing `needle` are held `delay` before they are
    /// forwarded: an API server that does not answer in time.
    fn delay_writes_to(&self, needle: &str, delay: Duration, n: usize) {
        self.api
            .proxy
            .fail_writes(needle, Fault::Delay(delay), Some(n));
    }
}

fn verifier_config(env: &TestEnv, insecure: &[&str]) -> VerifierConfig {
    let mut config = env.config(insecure);
    config.limits.budget = BUDGET;
    config
}

async fn new_operator(api: &Cluster, attempts: &Attempts, config: VerifierConfig) -> Operator {
    let log = attempts.0.clone();
    let verifier = Verifier::with_hook(
        config,
        Some(Box::new(move |host: &str, code: u16| {
            log.lock().unwrap().push((host.to_string(), code))
        })),
    )
    .await
    .expect("verifier setup");
    Operator::new(&api.client(), verifier, self::config()).await
}

// ---- the invariants -------------------------------------------------------------------------

const CHECKING_REASONS: &[Reason] = &[
    Reason::RegistryUnreachable,
    Reason::RegistryError,
    Reason::Timeout,
    Reason::RateLimited,
    Reason::Unauthorized,
];

/// Nothing was deleted; every resting posture is kept or shows `checking` with a checking
/// reason and `checkingSince`, and `lastVerified` never moves backwards or disappears.
#[track_caller]
fn assert_no_harm(
    before: &BTreeMap<String, ImagePostureStatus>,
    now: &BTreeMap<String, ImagePostureStatus>,
) {
    for (name, old) in before {
        let new = now
            .get(name)
            .unwrap_or_else(|| panic!("{name} was deleted by a fault"));
        match (old.posture, new.posture) {
            (_, Some(Posture::Checking)) => {
                assert!(
                    new.reason.is_some_and(|r| CHECKING_REASONS.contains(&r)),
                    "{name}: checking for a wrong reason: {new:#?}"
                );
                assert!(new.checking_since.is_some(), "{name}: {new:#?}");
                assert!(new.signer.is_none(), "{name}: {new:#?}");
            }
            (Some(Posture::Checking), Some(_)) => {}
            (was, is) => assert_eq!(was, is, "{name} was changed by a fault: {new:#?}"),
        }
        if old.last_verified.is_some() {
            assert!(
                new.last_verified >= old.last_verified,
                "{name}: lastVerified went back: {old:#?} -> {new:#?}"
            );
        }
    }
}

#[track_caller]
fn assert_posture(s: &ImagePostureStatus, posture: Posture, reason: Reason) {
    assert_eq!(
        (s.posture, s.reason),
        (Some(posture), Some(reason)),
        "{s:#?}"
    );
}

#[track_caller]
fn assert_signed(s: &ImagePostureStatus) {
    assert_posture(s, Posture::Signed, Reason::Verified);
    assert_eq!(s.signer.as_deref(), Some(WORKFLOW_URI), "{s:#?}");
    assert_eq!(s.checking_since, None, "{s:#?}");
}

#[track_caller]
fn assert_not_signed(s: &ImagePostureStatus) {
    assert_posture(s, Posture::NotSigned, Reason::NoSignature);
    assert_eq!(s.checking_since, None, "{s:#?}");
}

/// One row of the Reliability table, printed with `--nocapture`.
fn row(fault: &str, counts: String) {
    eprintln!("RELIABILITY | {fault} | {counts}");
}

// ---- registry: down for a whole pass ---------------------------------------------------------

#[tokio::test]
async fn registry_down_for_a_whole_pass() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let s1 = w.signed("down-s1", &w.a).await;
    let s2 = w.signed("down-s2", &w.a).await;
    let u1 = w.unsigned("down-u1", &w.a).await;
    w.run(&[&s1, &s2, &u1]).await;
    let t0 = Utc::now();
    let r = w.sweep(t0).await;
    assert_eq!((r.created, r.errors), (3, 0), "{r:#?}");
    let rested = w.snapshot().await;

    // Down after the TTL: connections refused.
    w.a.pause();
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.reset_counters();
    let r = w.sweep(t1).await;
    let (attempts, writes, events) = (w.attempts.to(&w.a.host), w.posture_writes(), r.events);
    assert_eq!((r.deleted, r.errors, r.events), (0, 0, 3), "{r:#?}");
    let now = w.snapshot().await;
    assert_no_harm(&rested, &now);
    for id in [&s1, &s2, &u1] {
        let s = w.status(id).await;
        assert_posture(&s, Posture::Checking, Reason::RegistryUnreachable);
        assert_eq!(s.checking_since, Some(stamp(t1)), "{s:#?}");
        assert_eq!(s.last_verified, Some(stamp(t0)), "{s:#?}");
        assert_eq!(w.label(id).await.as_deref(), Some("checking"));
    }
    // Revalidation (2 HEADs) then verification (2 GETs) per image in flight; once the first
    // failure is noted the other images of the registry are not even tried.
    assert!(attempts <= 4 * PER_REGISTRY, "{attempts} attempts");
    assert_eq!(
        writes,
        6,
        "labels + status per image: {:#?}",
        w.api.writes()
    );

    // Within the backoff: the registry is left alone and no Event or label write happens.
    w.reset_counters();
    let r = w.sweep(after(t1, BACKOFF / 2)).await;
    let backoff_writes = w.posture_writes();
    assert_eq!(w.attempts.to(&w.a.host), 0);
    assert_eq!(
        (r.events, r.metadata_writes, r.deleted),
        (0, 0, 0),
        "{r:#?}"
    );
    // At most one status rewrite per image: see `backoff_pass_rewrites_nothing` (ignored).
    assert!(backoff_writes <= 3, "{:#?}", w.api.writes());
    for id in [&s1, &s2, &u1] {
        assert_eq!(w.status(id).await.checking_since, Some(stamp(t1)));
    }

    // Still down after the backoff: tried again (bounded), `checkingSince` keeps t1.
    w.reset_counters();
    // (Each image that failed doubled the backoff: PER_REGISTRY of them were in flight.)
    let t2 = after(t1, BACKOFF * (1 << PER_REGISTRY) + Duration::from_secs(1));
    let r = w.sweep(t2).await;
    let (attempts2, writes2) = (w.attempts.to(&w.a.host), w.posture_writes());
    assert_eq!((r.deleted, r.events), (0, 0), "{r:#?}");
    assert!(
        (1..=4 * PER_REGISTRY).contains(&attempts2),
        "{attempts2} attempts"
    );
    for id in [&s1, &s2, &u1] {
        let s = w.status(id).await;
        assert_posture(&s, Posture::Checking, Reason::RegistryUnreachable);
        assert_eq!(s.checking_since, Some(stamp(t1)), "{s:#?}");
    }

    // Back: the resting postures return from the unchanged listings (HEADs only).
    w.a.resume().await;
    w.reset_counters();
    let t3 = next_pass(t2);
    let r = w.sweep(t3).await;
    assert_eq!((r.errors, r.events), (0, 3), "{r:#?}");
    assert_signed(&w.status(&s1).await);
    assert_signed(&w.status(&s2).await);
    assert_not_signed(&w.status(&u1).await);
    for id in [&s1, &s2] {
        assert_eq!(w.status(id).await.last_verified, Some(stamp(t0)));
        assert_eq!(w.label(id).await.as_deref(), Some("signed"));
    }
    let back = w.a.requests();
    assert!(back.iter().all(|q| q.method == "HEAD"), "{back:#?}");
    row(
        "registry down (connection refused) for a whole pass, 3 images",
        format!(
            "down pass: {attempts} registry attempts, {writes} ImagePosture writes + {events} Events; \
             within backoff: 0 attempts, {backoff_writes} status rewrites; still down after backoff: {attempts2} attempts, {writes2} writes; \
             recovery: {} requests (all HEAD), {} writes",
            back.len(),
            r.status_writes + r.metadata_writes
        ),
    );
}

/// Within the backoff an image that already shows its own failure keeps it: no image is
/// rewritten with another image's message (naming that image's URL).
#[tokio::test]
async fn backoff_pass_rewrites_nothing() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let s1 = w.signed("backoff-s1", &w.a).await;
    let s2 = w.signed("backoff-s2", &w.a).await;
    w.run(&[&s1, &s2]).await;
    let t0 = Utc::now();
    w.sweep(t0).await;
    w.a.pause();
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.sweep(t1).await;
    w.reset_counters();
    w.sweep(after(t1, BACKOFF / 2)).await;
    assert_eq!(w.posture_writes(), 0, "{:#?}", w.api.writes());
    for id in [&s1, &s2] {
        let s = w.status(id).await;
        assert!(s.message.contains(&id.repository), "{id}: {:?}", s.message);
    }
}

// ---- registry: flapping mid-pass --------------------------------------------------------------

#[tokio::test]
async fn flapping_registry_never_yields_a_false_verdict() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let mut signed = Vec::new();
    for i in 0..4 {
        signed.push(w.signed(&format!("flap-s{i}"), &w.a).await);
    }
    let unsigned = vec![
        w.unsigned("flap-u0", &w.a).await,
        w.unsigned("flap-u1", &w.a).await,
    ];
    let all: Vec<&ImageId> = signed.iter().chain(&unsigned).collect();
    w.run(&all).await;
    let t0 = Utc::now();
    w.sweep(t0).await;
    let rested = w.snapshot().await;

    let faults = [
        (
            "every 3rd request answers 503",
            Mode::Every(3, Box::new(Mode::Status(503))),
        ),
        (
            "every 2nd request: connection closed, no answer",
            Mode::Every(2, Box::new(Mode::Drop)),
        ),
    ];
    let mut t = t0;
    for (what, mode) in faults {
        t = next_pass(t);
        w.a.set_mode(mode);
        w.reset_counters();
        let r = w.sweep(t).await;
        let requests = w.a.requests().len();
        assert_eq!((r.deleted, r.errors), (0, 0), "{what}: {r:#?}");
        assert_no_harm(&rested, &w.snapshot().await);
        let checking = w.checking(&all).await;
        // Each image in flight costs at most revalidation + verification (4 requests) plus a
        // blob; the backoff stops the rest.
        assert!(requests <= 5 * all.len(), "{what}: {requests} requests");
        row(
            &format!("registry flapping mid-pass: {what} (6 images)"),
            format!(
                "{requests} requests, {checking} of 6 images checking, the rest kept; {} ImagePosture writes",
                r.status_writes + r.metadata_writes
            ),
        );
    }

    // Images verified for the first time (full downloads) while every 2nd body is cut in
    // half: each is right or `checking`, never invalid or unsigned.
    let cold_signed = [
        w.signed("flap-cold-s0", &w.a).await,
        w.signed("flap-cold-s1", &w.a).await,
    ];
    let cold_unsigned = w.unsigned("flap-cold-u0", &w.a).await;
    let mut ids = all.clone();
    ids.extend(cold_signed.iter().chain([&cold_unsigned]));
    w.run(&ids).await;
    t = next_pass(t);
    w.a.set_mode(Mode::Every(2, Box::new(Mode::Truncate)));
    w.reset_counters();
    let r = w.sweep(t).await;
    let truncated = w.a.requests().len();
    assert_eq!((r.deleted, r.errors), (0, 0), "{r:#?}");
    assert_no_harm(&rested, &w.snapshot().await);
    for id in &cold_signed {
        let p = w.status(id).await.posture;
        assert!(
            matches!(p, Some(Posture::Signed | Posture::Checking)),
            "{id}: {p:?}"
        );
    }
    let p = w.status(&cold_unsigned).await.posture;
    assert!(
        matches!(p, Some(Posture::NotSigned | Posture::Checking)),
        "{p:?}"
    );
    let cold_checking = w.checking(&ids).await;
    row(
        "registry flapping mid-pass: every 2nd body cut in half (6 known + 3 new images)",
        format!("{truncated} requests, {cold_checking} of 9 images checking, the rest right"),
    );

    // Only the signature blob is cut: deterministic `checking`, never invalid-signature.
    let fresh = w.signed("flap-cold", &w.a).await;
    ids.push(&fresh);
    w.run(&ids).await;
    t = next_pass(t);
    w.a.set_mode_for(Mode::Truncate, "/blobs/");
    w.reset_counters();
    w.sweep(t).await;
    let s = w.status(&fresh).await;
    assert_posture(&s, Posture::Checking, Reason::RegistryUnreachable);

    // Fault removed: every resting posture is back.
    w.a.set_mode(Mode::Pass);
    w.reset_counters();
    let r = w.sweep(next_pass(t)).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    for id in signed.iter().chain(&cold_signed).chain([&fresh]) {
        assert_signed(&w.status(id).await);
    }
    for id in unsigned.iter().chain([&cold_unsigned]) {
        assert_not_signed(&w.status(id).await);
    }
}

// ---- registry: slower than the per-image budget ----------------------------------------------

#[tokio::test]
async fn slow_registry_is_timeout_within_the_budget() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let ids = vec![
        w.signed("slow-s0", &w.a).await,
        w.signed("slow-s1", &w.a).await,
        w.signed("slow-s2", &w.a).await,
        w.unsigned("slow-u0", &w.a).await,
    ];
    let refs: Vec<&ImageId> = ids.iter().collect();
    w.run(&refs).await;
    let t0 = Utc::now();
    w.sweep(t0).await;
    let rested = w.snapshot().await;

    w.a.set_mode(Mode::Delay(BUDGET * 5));
    let t1 = next_pass(t0);
    w.reset_counters();
    let started = Instant::now();
    let r = w.sweep(t1).await;
    let took = started.elapsed();
    let requests = w.a.requests().len();
    assert_eq!((r.deleted, r.errors), (0, 0), "{r:#?}");
    assert_no_harm(&rested, &w.snapshot().await);
    for id in &ids {
        let s = w.status(id).await;
        assert_posture(&s, Posture::Checking, Reason::Timeout);
        assert_eq!(s.checking_since, Some(stamp(t1)), "{s:#?}");
    }
    // The images in flight time out together (one budget, revalidation and verification
    // included); the backoff answers for the others.
    assert!(
        took < BUDGET + Duration::from_millis(900),
        "the pass took {took:?}"
    );
    assert!(requests <= 4 * PER_REGISTRY, "{requests} requests");
    w.a.set_mode(Mode::Pass);
    w.reset_counters();
    let r = w.sweep(next_pass(t1)).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    for id in &ids[..3] {
        assert_signed(&w.status(id).await);
    }
    assert_not_signed(&w.status(&ids[3]).await);
    row(
        "registry slower than --image-timeout (600 ms budget, 3 s delay), 4 images",
        format!(
            "pass took {} ms; {requests} requests; recovery {} requests",
            took.as_millis(),
            w.a.requests().len()
        ),
    );
}

/// `--image-timeout` is "time budget per image, all requests included": revalidation and the
/// verification that follows it share one budget.
#[tokio::test]
async fn slow_registry_costs_at_most_one_budget_per_image() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed("slow-one", &w.a).await;
    w.run(&[&id]).await;
    let t0 = Utc::now();
    w.sweep(t0).await;
    w.a.set_mode(Mode::Delay(BUDGET * 5));
    let started = Instant::now();
    w.sweep(next_pass(t0)).await;
    let took = started.elapsed();
    assert_posture(&w.status(&id).await, Posture::Checking, Reason::Timeout);
    // The pass includes the real API server's lists and writes (tens of ms, more while another
    // test's kube-apiserver starts on the same cores): bounded below two budgets, which is what
    // a budget per request (revalidation, then verification) would cost at least.
    assert!(
        took < BUDGET * 2,
        "one image took {took:?} with a budget of {BUDGET:?}"
    );
}

// ---- registry: 429 storm on one registry, another unaffected ---------------------------------

#[tokio::test]
async fn rate_limited_registry_is_left_alone_and_others_are_unaffected() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let mut on_a = Vec::new();
    for i in 0..5 {
        on_a.push(w.signed(&format!("rl-a{i}"), &w.a).await);
    }
    let b_signed = w.signed("rl-b-signed", &w.b).await;
    let b_unsigned = w.unsigned("rl-b-unsigned", &w.b).await;
    let mut all: Vec<&ImageId> = on_a.iter().collect();
    all.extend([&b_signed, &b_unsigned]);
    w.run(&all).await;
    let t0 = Utc::now();
    w.sweep(t0).await;
    let rested = w.snapshot().await;

    const RETRY_AFTER: u64 = 120;
    w.a.set_mode(Mode::RateLimited(RETRY_AFTER));
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.reset_counters();
    let r = w.sweep(t1).await;
    let (a1, b1) = (w.a.requests().len(), w.b.requests());
    assert_eq!((r.deleted, r.errors), (0, 0), "{r:#?}");
    assert_no_harm(&rested, &w.snapshot().await);
    for id in &on_a {
        let s = w.status(id).await;
        assert_posture(&s, Posture::Checking, Reason::RateLimited);
        assert_eq!(s.checking_since, Some(stamp(t1)), "{s:#?}");
    }
    assert_signed(&w.status(&b_signed).await);
    assert_not_signed(&w.status(&b_unsigned).await);
    assert!(
        a1 <= 4 * PER_REGISTRY,
        "{a1} requests to the rate-limited registry"
    );
    // The other registry: its two images revalidated with 2 HEADs each, as without the storm.
    assert_eq!(b1.len(), 4, "{b1:#?}");
    assert!(b1.iter().all(|q| q.method == "HEAD"), "{b1:#?}");

    // Past our own backoff but within Retry-After: not one request, not one write.
    w.reset_counters();
    let r = w
        .sweep(after(t1, Duration::from_secs(RETRY_AFTER / 2)))
        .await;
    assert_eq!((w.a.requests().len(), w.b.requests().len()), (0, 0));
    assert_eq!((r.api_writes(), w.api.writes().len()), (0, 0), "{r:#?}");

    // Retry-After over, still limited: one bounded round, `checkingSince` unchanged.
    let t2 = after(t1, Duration::from_secs(RETRY_AFTER + 1));
    w.reset_counters();
    w.sweep(t2).await;
    let a2 = w.a.requests().len();
    assert!(a2 <= 4 * PER_REGISTRY, "{a2} requests");
    assert_eq!(w.b.requests().len(), 0, "b is cached");
    for id in &on_a {
        assert_eq!(w.status(id).await.checking_since, Some(stamp(t1)));
    }

    // The storm is over.
    w.a.set_mode(Mode::Pass);
    w.reset_counters();
    let r = w
        .sweep(after(t2, Duration::from_secs(RETRY_AFTER + 1)))
        .await;
    assert_eq!(r.errors, 0, "{r:#?}");
    for id in &on_a {
        assert_signed(&w.status(id).await);
    }
    row(
        "429 storm with Retry-After: 120 on registry A (5 images); registry B (2 images) healthy",
        format!(
            "A: {a1} requests in the first pass, 0 until Retry-After passed, {a2} in the next; \
             B: 4 HEADs, unaffected; recovery {} requests to A",
            w.a.requests().len()
        ),
    );
}

// ---- registry: redirects ----------------------------------------------------------------------

#[tokio::test]
async fn redirect_loop_is_checking_and_bounded() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed("loop", &w.a).await;
    let cold = w.signed("loop-cold", &w.a).await;
    w.run(&[&id]).await;
    let t0 = Utc::now();
    w.sweep(t0).await;
    let rested = w.snapshot().await;

    let me = w.a.host.clone();
    w.a.set_mode(Mode::Redirect(me));
    w.run(&[&id, &cold]).await;
    let t1 = next_pass(t0);
    w.reset_counters();
    let r = w.sweep(t1).await;
    let requests = w.a.requests().len();
    assert_eq!((r.deleted, r.errors), (0, 0), "{r:#?}");
    assert_no_harm(&rested, &w.snapshot().await);
    for id in [&id, &cold] {
        let s = w.status(id).await;
        assert_eq!(s.posture, Some(Posture::Checking), "{s:#?}");
        assert_eq!(s.checking_since, Some(stamp(t1)), "{s:#?}");
    }
    // reqwest follows 3 redirects: 4 requests per logical request, at most 4 logical requests
    // per image in flight.
    assert!(
        requests <= 4 * 4 * PER_REGISTRY,
        "{requests} requests: {:#?}",
        w.a.requests()
    );

    let reason = w
        .status(&id)
        .await
        .reason
        .map(|r| r.to_string())
        .unwrap_or_default();
    w.a.set_mode(Mode::Pass);
    w.reset_counters();
    w.sweep(next_pass(t1)).await;
    assert_signed(&w.status(&id).await);
    assert_signed(&w.status(&cold).await);
    row(
        "redirect loop (registry redirects every request to itself), 2 images",
        format!(
            "{requests} requests (each followed 3 times), checking/{reason}; recovery {} requests",
            w.a.requests().len()
        ),
    );
}

/// A redirect loop is an answer from a registry that is up: `RegistryUnreachable` sends the
/// operator to check the network. The transport classification in src/verify/registry.rs
/// (`classify_transport`) maps every non-timeout reqwest error, `is_redirect()` included, to
/// `Unreachable`.
#[tokio::test]
async fn redirect_loop_is_a_registry_error() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed("loop-reason", &w.a).await;
    let me = w.a.host.clone();
    w.a.set_mode(Mode::Redirect(me));
    w.run(&[&id]).await;
    w.sweep(Utc::now()).await;
    assert_posture(
        &w.status(&id).await,
        Posture::Checking,
        Reason::RegistryError,
    );
}

#[tokio::test]
async fn cross_host_redirect_is_followed_without_the_token() {
    let Some(mut w) = World::new().await else {
        return;
    };
    // Registry `a` wants a bearer token and sends blob downloads to `b` (a CDN).
    let id = w.signed("cdn", &w.a).await;
    let cdn = w.b.host.clone();
    w.a.set_mode(Mode::For(
        "/blobs/".into(),
        Box::new(Mode::Redirect(cdn)),
        Box::new(Mode::Bearer("s3cret".into())),
    ));
    w.run(&[&id]).await;
    let t0 = Utc::now();
    w.reset_counters();
    let r = w.sweep(t0).await;
    assert_eq!((r.created, r.errors), (1, 0), "{r:#?}");
    assert_signed(&w.status(&id).await);
    let at_cdn = w.b.authorizations();
    assert_eq!(at_cdn.len(), 1, "one blob GET at the CDN: {at_cdn:#?}");
    assert!(at_cdn[0].0.path.contains("/blobs/sha256:"), "{at_cdn:#?}");
    assert_eq!(
        at_cdn[0].1, None,
        "the registry's token leaked to another host"
    );
    let at_registry = w.a.requests().len();

    // The CDN is down: the signature is `checking`, not invalid, not unsigned.
    let cold = w.signed("cdn-down", &w.a).await;
    let dead = refused_address().to_string();
    w.a.set_mode(Mode::For(
        "/blobs/".into(),
        Box::new(Mode::Redirect(dead)),
        Box::new(Mode::Bearer("s3cret".into())),
    ));
    w.run(&[&id, &cold]).await;
    w.reset_counters();
    let r = w.sweep(after(t0, Duration::from_secs(60))).await;
    assert_eq!((r.deleted, r.errors), (0, 0), "{r:#?}");
    assert_signed(&w.status(&id).await); // cached, untouched
    assert_posture(
        &w.status(&cold).await,
        Posture::Checking,
        Reason::RegistryUnreachable,
    );
    let down = w.a.requests().len();

    w.a.set_mode(Mode::For(
        "/blobs/".into(),
        Box::new(Mode::Redirect(w.b.host.clone())),
        Box::new(Mode::Bearer("s3cret".into())),
    ));
    w.reset_counters();
    w.sweep(next_pass(t0)).await;
    assert_signed(&w.status(&cold).await);
    row(
        "cross-host redirect of blobs (token registry -> CDN), then the CDN refusing connections",
        format!(
            "followed: {at_registry} requests to the registry + 1 to the CDN, no Authorization \
             sent to the CDN; CDN down: checking/RegistryUnreachable, {down} registry requests"
        ),
    );
}

// ---- registry: TLS errors ---------------------------------------------------------------------

#[tokio::test]
async fn tls_errors_are_checking_and_bounded() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed("tls", &w.a).await;
    w.run(&[&id]).await;
    let t0 = Utc::now();
    w.sweep(t0).await;
    let rested = w.snapshot().await;

    // A restart that forgot `--insecure-registry`: https to a plain-HTTP port.
    let https = w.restarted(verifier_config(&w.env, &[&w.b.host])).await;
    let t1 = next_pass(t0);
    w.reset_counters();
    let (c0, h0) = (w.a.connections(), w.a.tls_hellos());
    let r = w.sweep_with(&https, t1).await;
    let (conns, hellos) = (w.a.connections() - c0, w.a.tls_hellos() - h0);
    assert_eq!((r.deleted, r.errors), (0, 0), "{r:#?}");
    assert_no_harm(&rested, &w.snapshot().await);
    let s = w.status(&id).await;
    assert_posture(&s, Posture::Checking, Reason::RegistryUnreachable);
    assert_eq!(s.checking_since, Some(stamp(t1)));
    assert!(hellos >= 1, "the verifier spoke TLS");
    assert!(conns <= 4, "{conns} connections");
    assert!(w.a.requests().is_empty(), "no HTTP request got through");

    // A peer that answers garbage, over TLS and over plain HTTP.
    w.a.set_mode(Mode::Garbage);
    let cold = w.signed("tls-garbage", &w.a).await;
    w.run(&[&id, &cold]).await;
    let c1 = w.a.connections();
    let t2 = next_pass(t1);
    w.sweep_with(&https, t2).await;
    let garbage_tls = w.a.connections() - c1;
    assert_posture(
        &w.status(&cold).await,
        Posture::Checking,
        Reason::RegistryUnreachable,
    );
    let c2 = w.a.connections();
    w.sweep(t2).await;
    let garbage_http = w.a.connections() - c2;
    assert_posture(
        &w.status(&cold).await,
        Posture::Checking,
        Reason::RegistryUnreachable,
    );
    assert_posture(
        &w.status(&id).await,
        Posture::Checking,
        Reason::RegistryUnreachable,
    );
    assert!(
        garbage_tls <= 4 * PER_REGISTRY && garbage_http <= 4 * PER_REGISTRY,
        "{garbage_tls} / {garbage_http} connections"
    );

    // Fixed: the right configuration and an honest peer.
    w.a.set_mode(Mode::Pass);
    w.reset_counters();
    let r = w.sweep(next_pass(t2)).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    assert_signed(&w.status(&id).await);
    assert_signed(&w.status(&cold).await);
    row(
        "TLS: https to a plain-HTTP port; a peer answering garbage (TLS and plain)",
        format!(
            "checking/RegistryUnreachable; {conns} connections ({hellos} TLS hellos, 0 HTTP \
             requests); garbage: {garbage_tls} connections over TLS, {garbage_http} over HTTP \
             (2 images)"
        ),
    );
}

// ---- API server: 500s, 409s, timeouts on apply ------------------------------------------------

const POSTURES: &str = "/apis/imageposture.io/";

#[tokio::test]
async fn api_500_on_apply_loses_nothing_and_reverifies_nothing() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let ids = vec![
        w.signed("api500-s0", &w.a).await,
        w.signed("api500-s1", &w.a).await,
        w.unsigned("api500-u0", &w.a).await,
    ];
    let refs: Vec<&ImageId> = ids.iter().collect();
    w.run(&refs).await;

    // Cold pass, every ImagePosture write answers 500.
    w.fail_writes_to(POSTURES, 500, 1000);
    let t0 = Utc::now();
    let r = w.sweep(t0).await;
    let cold_writes = w.posture_writes();
    let registry = w.a.requests().len();
    assert_eq!(r.created, 0, "{r:#?}");
    assert!(r.errors >= 1, "{r:#?}");
    assert!(w.api.image_postures().await.is_empty());
    // The first failure stops the pass's writes: the API server is not hammered.
    assert_eq!(cold_writes, 1, "{:#?}", w.api.writes());
    // No verification is spent on a resource that could not be written.
    assert_eq!(registry, 0, "{:#?}", w.a.requests());

    // API back: everything is created and verified.
    w.reset_counters();
    let r = w.sweep(after(t0, Duration::from_secs(30))).await;
    assert_eq!((r.created, r.errors), (3, 0), "{r:#?}");
    assert_signed(&w.status(&ids[0]).await);
    assert_not_signed(&w.status(&ids[2]).await);
    let rested = w.snapshot().await;

    // A posture change whose status write fails: the old status stands, nothing is deleted.
    w.a.set_mode(Mode::Status(500));
    let t1 = after(t0, TTL + Duration::from_secs(31));
    w.reset_counters();
    w.fail_writes_to("/status", 500, 1000);
    let r = w.sweep(t1).await;
    let failing_writes = w.posture_writes();
    assert!(r.errors >= 1 && r.deleted == 0, "{r:#?}");
    assert_eq!(
        w.snapshot().await,
        rested,
        "status changed although every status write failed"
    );
    // One attempt per image, then each backs off on its own (error_policy).
    assert!(failing_writes <= ids.len(), "{:#?}", w.api.writes());

    // API back: the change lands with `checkingSince`.
    w.reset_counters();
    let t2 = after(t1, Duration::from_secs(1));
    let r = w.sweep(t2).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    assert_no_harm(&rested, &w.snapshot().await);
    for id in &ids {
        let s = w.status(id).await;
        assert_eq!(s.posture, Some(Posture::Checking), "{s:#?}");
        assert!(s.checking_since.is_some(), "{s:#?}");
        assert_eq!(w.label(id).await.as_deref(), Some("checking"));
    }

    // Garbage collection with DELETE answering 500: kept, retried next pass.
    w.a.set_mode(Mode::Pass);
    w.run(&[&ids[0], &ids[1]]).await;
    let t3 = next_pass(t2);
    w.sweep(t3).await;
    w.reset_counters();
    w.fail_writes_to(POSTURES, 500, 1000);
    let r = w.sweep(after(t3, GRACE)).await;
    let deletes = w.api.image_posture_writes("DELETE");
    assert_eq!((r.deleted, r.errors), (0, 1), "{r:#?}");
    assert!(w.api.image_posture(&ids[2].resource_name()).await.is_some());
    assert_eq!(deletes, 1);
    w.reset_counters();
    let r = w.sweep(after(t3, GRACE + Duration::from_secs(1))).await;
    assert_eq!((r.deleted, r.errors), (1, 0), "{r:#?}");
    assert!(w.api.image_posture(&ids[2].resource_name()).await.is_none());
    assert_signed(&w.status(&ids[0]).await);
    row(
        "API 500 on every ImagePosture write (cold pass, 3 images); 500 on status writes; 500 on DELETE",
        format!(
            "cold: {cold_writes} write attempt, {registry} registry requests, 0 created; next pass: 3 \
             created and verified; status 500: {failing_writes} writes, status kept; \
             DELETE 500: {deletes} attempt, kept, deleted next pass"
        ),
    );
}

#[tokio::test]
async fn api_409_storm_is_retried_a_bounded_number_of_times() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let ids = [
        w.signed("api409-s0", &w.a).await,
        w.unsigned("api409-u0", &w.a).await,
    ];
    let refs: Vec<&ImageId> = ids.iter().collect();
    w.run(&refs).await;
    w.fail_writes_to(POSTURES, 409, 1000);
    let t0 = Utc::now();
    let r = w.sweep(t0).await;
    let storm = w.posture_writes();
    assert_eq!(r.created, 0, "{r:#?}");
    assert_eq!(r.errors, 2, "{r:#?}");
    // 4 attempts per write (the conflict retries), per image; a conflict is about one object,
    // so the other images are still tried; nothing is verified for a resource not written.
    assert_eq!(storm, 4 * ids.len(), "{:#?}", w.api.writes());
    assert_eq!(w.a.requests().len(), 0);

    w.reset_counters();
    let r = w.sweep(after(t0, Duration::from_secs(30))).await;
    assert_eq!((r.created, r.errors), (2, 0), "{r:#?}");
    assert_signed(&w.status(&ids[0]).await);
    assert_not_signed(&w.status(&ids[1]).await);
    row(
        "API 409 Conflict on every ImagePosture write, 2 images",
        format!(
            "{storm} write attempts (4 per image), 0 registry requests; written and verified next pass"
        ),
    );
}

#[tokio::test]
async fn api_timeouts_on_apply_do_not_stall_the_sweep() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let ids = vec![
        w.signed("apito-s0", &w.a).await,
        w.signed("apito-s1", &w.a).await,
        w.unsigned("apito-u0", &w.a).await,
    ];
    let refs: Vec<&ImageId> = ids.iter().collect();
    w.run(&refs).await;

    // A short burst of 504s (the API server's own request timeout) is absorbed by the client.
    w.fail_writes_to(POSTURES, 504, 2);
    let t0 = Utc::now();
    let r = w.sweep(t0).await;
    let burst = w.posture_writes();
    assert_eq!((r.created, r.errors), (3, 0), "{r:#?}");
    // Per new image: spec and labels, the pending verdict, usage (inventory); the verdict and
    // the posture label (verifier). Plus the two retried by the client.
    assert_eq!(burst, 5 * 3 + 2, "{:#?}", w.api.writes());
    let rested = w.snapshot().await;

    // Every write answers 504: kube's client retries 504 up to 15 times with backoff growing
    // to minutes; the write deadline ends that.
    w.a.set_mode(Mode::Status(500));
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.reset_counters();
    w.fail_writes_to(POSTURES, 504, 1000);
    let started = Instant::now();
    let r = w.sweep(t1).await;
    let storm_took = started.elapsed();
    let storm = w.posture_writes();
    assert!(r.errors >= 1 && r.deleted == 0, "{r:#?}");
    assert_eq!(w.snapshot().await, rested);
    // The images in flight (PER_REGISTRY) time out together, then the rest of them.
    assert!(
        storm_took < WRITE_TIMEOUT * 2 + Duration::from_millis(700),
        "a 504 storm held the pass {storm_took:?}"
    );
    assert!(storm <= 16 * ids.len(), "{storm} write attempts");

    // Writes that get no answer at all.
    w.reset_counters();
    w.delay_writes_to(POSTURES, Duration::from_secs(60), 1000);
    let started = Instant::now();
    let r = w.sweep(after(t1, Duration::from_secs(1))).await;
    let hung_took = started.elapsed();
    assert!(r.errors >= 1 && r.deleted == 0, "{r:#?}");
    assert_eq!(w.snapshot().await, rested);
    assert!(
        hung_took < WRITE_TIMEOUT * 2 + Duration::from_millis(700),
        "an unanswered write held the pass {hung_took:?}"
    );
    let held = w.api.proxy.held();
    assert!(
        held <= ids.len(),
        "at most one unanswered write per image: {held}"
    );

    // The API server answers again.
    w.reset_counters();
    let r = w.sweep(after(t1, Duration::from_secs(2))).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    assert_no_harm(&rested, &w.snapshot().await);
    for id in &ids {
        assert_eq!(w.status(id).await.posture, Some(Posture::Checking));
    }
    w.a.set_mode(Mode::Pass);
    w.reset_counters();
    let r = w.sweep(next_pass(t1)).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    assert_signed(&w.status(&ids[0]).await);
    assert_not_signed(&w.status(&ids[2]).await);
    row(
        "API 504 on apply: a burst of 2; a storm; writes never answered (3 images)",
        format!(
            "burst: {burst} writes (2 retried by kube's client), 0 errors; storm: {storm} \
             attempts, pass ended after {} ms; unanswered: {held} write, pass ended after {} ms; \
             status kept, converged next pass",
            storm_took.as_millis(),
            hung_took.as_millis()
        ),
    );
}

// ---- API server: watches that drop, 410 Gone on re-list (the operator process) -------------

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually<T, F>(what: &str, limit: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored posture of an ImagePosture (read by the admin).
async fn posture_of(api: &Cluster, name: &str) -> Option<String> {
    let cr = api.image_posture(name).await?;
    cr["status"]["posture"].as_str().map(str::to_string)
}

/// Watches `ms` long, sampling every resource: none may disappear or leave its posture.
async fn hold_steady(api: &Cluster, ms: u64, expect: &[(String, &str)]) {
    let deadline = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < deadline {
        for (name, posture) in expect {
            let cr = api
                .image_posture(name)
                .await
                .unwrap_or_else(|| panic!("{name} deleted during watch faults"));
            assert_eq!(cr["status"]["posture"], *posture, "{cr:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RESOURCES: [&str; 2] = ["pods", "imagepostures"];

/// (watches, lists) of pods and ImagePostures the proxy saw since its last reset.
fn reads(api: &Cluster) -> (usize, usize) {
    let seen = api.proxy.seen();
    let count = |f: fn(&str, &str, &str) -> bool| {
        seen.iter()
            .filter(|q| RESOURCES.iter().any(|r| f(&q.method, &q.path, r)))
            .count()
    };
    (count(is_watch_of), count(is_list_of))
}

fn reads_log(api: &Cluster) -> Vec<String> {
    api.proxy
        .seen()
        .iter()
        .filter(|q| !q.is_write())
        .map(|q| format!("{q} -> {}", q.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_drops_and_410_gone_neither_delete_nor_rewrite() {
    let Some(api) = Cluster::start().await else {
        return;
    };
    let env = TestEnv::new();
    let signed = env.keyless_image("watch-signed", &Identity::github()).await;
    let later = env
        .oci
        .push_image(&unique_repo("watch-later"), "v1")
        .await
        .id;
    api.put_pods(&[pod("prod", "web-1", &[&signed])]).await;
    // The operator's ServiceAccount (config/rbac) through the API proxy.
    let config = kube::cluster::write_kubeconfig(
        &env.dir.path().join("kubeconfig"),
        &api.proxy.url,
        &api.token,
    );
    let _operator = Process(
        Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args([
                "run",
                "--install-crd=false",
                "--debounce",
                "100ms",
                "--resync",
                "1s",
            ])
            .args(["--leader-election", "false", "--grace", "1s"])
            .args(["--image-timeout", "2s"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--trusted-root", env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &env.registry.host])
            .env("KUBECONFIG", &config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("the operator starts"),
    );
    let name = signed.resource_name();
    eventually("the signed ImagePosture", Duration::from_secs(30), || {
        let (api, name) = (&api, &name);
        async move { (posture_of(api, name).await.as_deref() == Some("signed")).then_some(()) }
    })
    .await;
    // The baseline loop learns the repository's SignerBaseline once (src/operator/baseline.rs).
    eventually(
        "the learned SignerBaseline",
        Duration::from_secs(20),
        || {
            let api = &api;
            async move {
                let gvk = ::kube::api::GroupVersionKind::gvk(
                    "imageposture.io",
                    "v1alpha1",
                    "SignerBaseline",
                );
                let ar = ::kube::api::ApiResource::from_gvk(&gvk);
                let list: ::kube::Api<::kube::api::DynamicObject> =
                    ::kube::Api::all_with(api.admin(), &ar);
                let items = list.list(&Default::default()).await.ok()?.items;
                let first = serde_json::to_value(items.first()?).ok()?;
                (first["status"]["identityCount"] == 1).then_some(first)
            }
        },
    )
    .await;
    let steady = [(name.clone(), "signed")];
    hold_steady(&api, 300, &steady).await;

    // Every watch is cut after one second (those open now at once).
    api.reset_counters();
    api.proxy
        .inject_where(is_watch, Fault::Cut(Duration::from_secs(1)), None);
    api.proxy.cut_open();
    hold_steady(&api, 3500, &steady).await;
    let (drop_watches, drop_lists) = reads(&api);
    let drop_writes = api.image_posture_writes("PATCH") + api.image_posture_writes("DELETE");
    assert_eq!(drop_writes, 0, "{:#?}", api.writes());
    // Two reflectors re-watching about once a second, from their resourceVersion (no re-list).
    assert!(
        (2..=12).contains(&drop_watches),
        "{drop_watches} watches: {:#?}",
        reads_log(&api)
    );
    assert_eq!(drop_lists, 0, "{:#?}", reads_log(&api));

    // Re-watches answer 410 Gone (an `ERROR` event, as the server does for a resourceVersion
    // it no longer has) and the re-lists fail with 410 too, a few times.
    api.reset_counters();
    api.proxy.inject(kube::proxy::Rule {
        method: Some("GET".into()),
        path_contains: "watch=true".into(),
        fault: Fault::WatchError(410),
        remaining: Some(4),
    });
    api.proxy.inject_where(
        |m, p| RESOURCES.iter().any(|r| is_list_of(m, p, r)),
        Fault::Status(410),
        Some(2),
    );
    api.proxy.cut_open();
    hold_steady(&api, 4000, &steady).await;
    let (gone_watches, gone_lists) = reads(&api);
    let gone_writes = api.image_posture_writes("PATCH") + api.image_posture_writes("DELETE");
    assert_eq!(gone_writes, 0, "{:#?}", api.writes());
    assert!(
        gone_lists >= 2,
        "the reflectors re-listed: {:#?}",
        reads_log(&api)
    );
    assert!(
        gone_lists <= 12 && gone_watches <= 20,
        "{gone_lists} lists, {gone_watches} watches: {:#?}",
        reads_log(&api)
    );

    // Still dropping watches: a new pod is seen through the re-established watch.
    api.put_pods(&[pod("prod", "web-2", &[&later])]).await;
    let later_name = later.resource_name();
    eventually(
        "the new pod's ImagePosture",
        Duration::from_secs(10),
        || {
            let (api, name) = (&api, &later_name);
            async move {
                (posture_of(api, name).await.as_deref() == Some("not-signed")).then_some(())
            }
        },
    )
    .await;
    api.proxy.clear_faults();
    hold_steady(
        &api,
        300,
        &[(name.clone(), "signed"), (later_name, "not-signed")],
    )
    .await;
    row(
        "watches cut every 1 s (3.5 s); then 4 re-watches 410 Gone and 2 re-lists 410 (4 s)",
        format!(
            "drops: {drop_watches} watches, {drop_lists} lists, {drop_writes} ImagePosture writes; \
             410: {gone_watches} watches, {gone_lists} lists, {gone_writes} writes; nothing \
             deleted, a new pod's image recorded through the recovered watch"
        ),
    );
}
