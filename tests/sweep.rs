//! The sweep driven through kube's seams: pods in a real kube-runtime reflector store,
//! ImagePosture writes and Events through a real `kube::Client` against the API double, images
//! in a real registry behind a counting, fault-injecting proxy. Time is passed in as `now`;
//! nothing sleeps to wait for a TTL or a grace period.

mod apidouble;
mod support;

use std::sync::Arc;
use std::time::Duration;

use apidouble::ApiDouble;
use chrono::{DateTime, SecondsFormat, Utc};
use imageposture::crd::{ImagePosture, ImagePostureStatus};
use imageposture::image::ImageId;
use imageposture::observer::{Observer, ObserverConfig};
use imageposture::posture::{Posture, Reason, SignerType};
use imageposture::sweep::{SweepConfig, SweepReport, Sweeper};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::watcher;
use serde_json::{json, Value};
use support::cosign::{self, Spoil};
use support::pki::{Identity, Signer, GITHUB_ISSUER, WORKFLOW_URI};
use support::proxy::{Mode, Proxy};
use support::{unique_repo, via, TestEnv};

const TTL: Duration = Duration::from_secs(3600);
const GRACE: Duration = Duration::from_secs(600);

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap()
}

/// How the operator writes timestamps (RFC 3339, whole seconds).
fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

// ---- pods -----------------------------------------------------------------------------------

/// A container as a pod declares it, and the `imageID` the kubelet reports (empty until pulled).
#[derive(Clone)]
struct Ctr {
    image: String,
    image_id: String,
}

/// Runs `id`, referenced by digest.
fn pinned(id: &ImageId) -> Ctr {
    Ctr {
        image: id.key(),
        image_id: id.key(),
    }
}

/// Runs `id`, referenced by `tag`.
fn tagged(id: &ImageId, tag: &str) -> Ctr {
    Ctr {
        image: format!("{}:{tag}", id.repo_path()),
        image_id: id.key(),
    }
}

/// Declares `image`, not pulled yet: no digest known.
fn pending(image: &str) -> Ctr {
    Ctr {
        image: image.into(),
        image_id: String::new(),
    }
}

fn pod(ns: &str, name: &str, containers: &[Ctr]) -> Pod {
    pod_with(ns, name, containers, &[], &[])
}

/// A running pod with containers, init containers and ephemeral containers.
fn pod_with(ns: &str, name: &str, containers: &[Ctr], init: &[Ctr], ephemeral: &[Ctr]) -> Pod {
    let specs = |prefix: &str, cs: &[Ctr]| -> Vec<Value> {
        cs.iter()
            .enumerate()
            .map(|(i, c)| json!({ "name": format!("{prefix}{i}"), "image": c.image }))
            .collect()
    };
    let statuses = |prefix: &str, cs: &[Ctr]| -> Vec<Value> {
        cs.iter()
            .enumerate()
            .map(|(i, c)| {
                json!({ "name": format!("{prefix}{i}"), "image": c.image, "imageID": c.image_id,
                        "ready": true, "restartCount": 0 })
            })
            .collect()
    };
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}") },
        "spec": {
            "containers": specs("c", containers),
            "initContainers": specs("i", init),
            "ephemeralContainers": specs("e", ephemeral),
        },
        "status": {
            "phase": "Running",
            "containerStatuses": statuses("c", containers),
            "initContainerStatuses": statuses("i", init),
            "ephemeralContainerStatuses": statuses("e", ephemeral),
        },
    }))
    .expect("pod JSON")
}

// ---- the world --------------------------------------------------------------------------------

fn observer_config() -> ObserverConfig {
    ObserverConfig {
        ttl: TTL,
        ..Default::default()
    }
}

/// Registry (through a counting proxy), API double, pod reflector store and a sweeper.
struct World {
    env: TestEnv,
    proxy: Proxy,
    api: ApiDouble,
    sweeper: Sweeper,
    pods: Store<Pod>,
    writer: Writer<Pod>,
}

impl World {
    async fn new() -> World {
        World::with(observer_config()).await
    }

    async fn with(config: ObserverConfig) -> World {
        let env = TestEnv::new();
        let proxy = Proxy::start(&env.registry.host).await;
        let api = ApiDouble::start().await;
        let (pods, writer) = reflector::store::<Pod>();
        let sweeper = new_sweeper(&env, &proxy, &api, config).await;
        World {
            env,
            proxy,
            api,
            sweeper,
            pods,
            writer,
        }
    }

    /// A brand-new verifier, observer and sweeper over the same registry and API (a restart).
    async fn new_sweeper(&self, config: ObserverConfig) -> Sweeper {
        new_sweeper(&self.env, &self.proxy, &self.api, config).await
    }

    /// A new image signed keyless by the GitHub workflow identity, seen through the proxy.
    async fn signed_image(&self, name: &str) -> ImageId {
        let id = self.env.keyless_image(name, &Identity::github()).await;
        via(&id, &self.proxy.host)
    }

    /// A new unsigned image (tag `v1`), seen through the proxy.
    async fn unsigned_image(&self, name: &str) -> ImageId {
        let img = self.env.oci.push_image(&unique_repo(name), "v1").await;
        via(&img.id, &self.proxy.host)
    }

    /// The initial list of the pod watcher.
    fn init_pods(&mut self, pods: &[Pod]) {
        self.writer.apply_watcher_event(&watcher::Event::Init);
        for p in pods {
            self.writer
                .apply_watcher_event(&watcher::Event::InitApply(p.clone()));
        }
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    fn delete_pod(&mut self, pod: &Pod) {
        self.writer
            .apply_watcher_event(&watcher::Event::Delete(pod.clone()));
    }

    /// The ImagePostures as the operator's reflector would hold them now.
    async fn existing(&self) -> Vec<Arc<ImagePosture>> {
        let api: Api<ImagePosture> = Api::all(self.api.client());
        let list = api
            .list(&Default::default())
            .await
            .expect("list ImagePostures");
        list.items.into_iter().map(Arc::new).collect()
    }

    async fn sweep(&self, now: DateTime<Utc>) -> SweepReport {
        self.sweep_with(&self.sweeper, now).await
    }

    async fn sweep_with(&self, sweeper: &Sweeper, now: DateTime<Utc>) -> SweepReport {
        let existing = self.existing().await;
        sweeper.sweep(&self.pods.state(), &existing, now).await
    }

    fn cr(&self, id: &ImageId) -> Option<ImagePosture> {
        let v = self.api.image_posture(&id.resource_name())?;
        Some(serde_json::from_value(v).expect("stored ImagePosture"))
    }

    #[track_caller]
    fn status(&self, id: &ImageId) -> ImagePostureStatus {
        let cr = self
            .cr(id)
            .unwrap_or_else(|| panic!("no ImagePosture for {id}"));
        cr.status.expect("status written")
    }

    /// Forgets counted registry requests and API writes.
    fn reset_counters(&self) {
        self.proxy.reset_requests();
        self.api.reset_counters();
    }

    /// `note` of every Event, in creation order.
    fn event_notes(&self) -> Vec<String> {
        self.api
            .events()
            .iter()
            .map(|e| e["note"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

async fn new_sweeper(
    env: &TestEnv,
    proxy: &Proxy,
    api: &ApiDouble,
    config: ObserverConfig,
) -> Sweeper {
    let verifier = env.verifier(env.config(&[&proxy.host])).await;
    let observer = Observer::new(Arc::new(verifier), config);
    let client = api.client();
    let reporter = Reporter {
        controller: "imageposture".into(),
        instance: None,
    };
    Sweeper::new(
        Api::all(client.clone()),
        Recorder::new(client, reporter),
        Arc::new(observer),
        SweepConfig {
            grace: GRACE,
            namespaces: Default::default(),
        },
    )
}

#[track_caller]
fn assert_signed(s: &ImagePostureStatus) {
    assert_eq!(
        (
            s.posture,
            s.reason,
            s.signer.as_deref(),
            s.issuer.as_deref(),
            s.signer_type
        ),
        (
            Some(Posture::Signed),
            Some(Reason::Verified),
            Some(WORKFLOW_URI),
            Some(GITHUB_ISSUER),
            Some(SignerType::Keyless)
        ),
        "{s:#?}"
    );
}

#[track_caller]
fn assert_posture(s: &ImagePostureStatus, posture: Posture, reason: Reason) {
    assert_eq!(
        (s.posture, s.reason),
        (Some(posture), Some(reason)),
        "{s:#?}"
    );
}

// ---- 1. inventory → one resource per image ----------------------------------------------------

#[tokio::test]
async fn shared_image_is_one_resource_and_every_container_kind_counts() {
    let mut w = World::new().await;
    let app = w.signed_image("shared").await;
    let init = w.unsigned_image("init").await;
    let debug = w.unsigned_image("debug").await;
    w.init_pods(&[
        pod_with("team-a", "web", &[pinned(&app)], &[pinned(&init)], &[]),
        pod_with("team-b", "api", &[pinned(&app)], &[], &[pinned(&debug)]),
    ]);

    let report = w.sweep(Utc::now()).await;
    assert_eq!(
        (report.images, report.created, report.errors, report.invalid),
        (3, 3, 0, 0),
        "{report:#?}"
    );
    assert_eq!(w.api.image_postures().len(), 3);

    let cr = w.cr(&app).unwrap();
    assert_eq!(cr.spec.image, app.key());
    assert_eq!(cr.spec.digest, app.digest);
    let s = cr.status.as_ref().unwrap();
    assert_signed(s);
    let usage = s.usage.as_ref().unwrap();
    assert_eq!(usage.pods, 2);
    assert_eq!(usage.namespaces, ["team-a", "team-b"]);
    assert_eq!(usage.namespace_count, 2);
    let labels = cr.metadata.labels.clone().unwrap();
    let registry_label = w.proxy.host.replace(':', "-");
    let want = [
        ("app.kubernetes.io/managed-by", "imageposture"),
        ("imageposture.io/posture", "signed"),
        ("imageposture.io/registry", registry_label.as_str()),
    ];
    let got: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, want);

    for (id, ns) in [(&init, "team-a"), (&debug, "team-b")] {
        let s = w.status(id);
        assert_posture(&s, Posture::NotSigned, Reason::NoSignature);
        let usage = s.usage.unwrap();
        assert_eq!((usage.pods, usage.namespaces), (1, vec![ns.to_string()]));
    }
}

// ---- 2. tag and digest references of one digest ---------------------------------------------

#[tokio::test]
async fn tag_and_digest_references_share_one_resource() {
    let mut w = World::new().await;
    let id = w.signed_image("refs").await;
    w.init_pods(&[
        pod("a", "by-tag", &[tagged(&id, "v1")]),
        pod("b", "by-digest", &[pinned(&id)]),
    ]);

    let report = w.sweep(Utc::now()).await;
    assert_eq!((report.images, report.created), (1, 1), "{report:#?}");
    assert_eq!(w.api.image_postures().len(), 1);
    let s = w.status(&id);
    assert_signed(&s);
    let mut want = vec![format!("{}:v1", id.repo_path()), id.key()];
    want.sort();
    assert_eq!(s.references, want);
    assert_eq!(s.usage.unwrap().pods, 2);
}

// ---- 3. warm sweep: no registry request, no API write -----------------------------------------

#[tokio::test]
async fn warm_sweep_costs_nothing() {
    let mut w = World::new().await;
    let signed = w.signed_image("warm-signed").await;
    let unsigned = w.unsigned_image("warm-unsigned").await;
    w.init_pods(&[
        pod("a", "p1", &[pinned(&signed), tagged(&unsigned, "v1")]),
        pod("b", "p2", &[tagged(&signed, "v1")]),
    ]);
    let t0 = Utc::now();

    w.reset_counters();
    let cold = w.sweep(t0).await;
    let cold_requests = w.proxy.requests();
    let (cold_registry, cold_api) = (cold_requests.len(), w.api.writes().len());
    assert_eq!((cold.created, cold.errors), (2, 0), "{cold:#?}");
    assert_eq!(cold.api_writes(), cold_api, "report vs writes at the API");

    w.reset_counters();
    let warm = w.sweep(after(t0, Duration::from_secs(60))).await;
    let (warm_registry, warm_api) = (w.proxy.requests().len(), w.api.writes().len());
    eprintln!(
        "cold sweep (2 images, 1 signed): {cold_registry} registry requests, {cold_api} API writes; \
         warm sweep: {warm_registry} registry requests, {warm_api} API writes"
    );
    eprintln!("cold sweep registry requests:");
    for q in &cold_requests {
        eprintln!("  {q}");
    }
    assert_eq!(warm_registry, 0, "{:#?}", w.proxy.requests());
    assert_eq!(warm_api, 0, "{:#?}", w.api.writes());
    assert_eq!(warm.api_writes(), 0, "{warm:#?}");
    assert_eq!(warm.images, 2);
}

// ---- 4. garbage collection after the grace period --------------------------------------------

#[tokio::test]
async fn unused_resource_is_deleted_after_grace() {
    let mut w = World::new().await;
    let id = w.unsigned_image("gc").await;
    let p = pod("a", "p", &[pinned(&id)]);
    w.init_pods(std::slice::from_ref(&p));
    let t0 = Utc::now();
    w.sweep(t0 - chrono::Duration::minutes(1)).await;
    assert!(w.cr(&id).is_some());

    w.delete_pod(&p);
    w.reset_counters();
    for t in [t0, after(t0, GRACE) - chrono::Duration::seconds(1)] {
        let r = w.sweep(t).await;
        assert_eq!(r.deleted, 0, "at {t}: {r:#?}");
        assert!(
            w.cr(&id).is_some(),
            "deleted before the grace period, at {t}"
        );
    }
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());

    let r = w.sweep(after(t0, GRACE)).await;
    assert_eq!((r.deleted, r.errors), (1, 0), "{r:#?}");
    assert!(w.cr(&id).is_none());
    assert_eq!(w.api.image_posture_writes("DELETE"), 1);
    assert_eq!(w.api.writes().len(), 1, "{:#?}", w.api.writes());
    assert!(w.proxy.requests().is_empty(), "GC needs no registry");
}

// ---- 5. registry outage: checking, never deleted, then back -----------------------------------

#[tokio::test]
async fn registry_outage_is_checking_then_recovers() {
    let mut w = World::new().await;
    let id = w.signed_image("outage").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]);
    let t0 = Utc::now();
    w.sweep(t0).await;
    assert_signed(&w.status(&id));

    // The TTL expired and the registry answers 500.
    w.proxy.set_mode(Mode::Status(500));
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.reset_counters();
    let r = w.sweep(t1).await;
    assert_eq!((r.deleted, r.events, r.errors), (0, 1, 0), "{r:#?}");
    assert!(!w.proxy.requests().is_empty(), "the registry was asked");
    let s = w.status(&id);
    assert_posture(&s, Posture::Checking, Reason::RegistryError);
    assert_eq!(s.checking_since, Some(stamp(t1)));
    assert_eq!(s.last_verified, Some(stamp(t0)), "lastVerified keeps t0");
    assert_eq!(s.signer, None);
    let notes = w.event_notes();
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains("signed -> checking"), "{notes:#?}");

    // Within the backoff: the registry is left alone and the CR is not rewritten.
    let backoff = ObserverConfig::default().backoff;
    w.reset_counters();
    let r = w.sweep(after(t1, backoff / 2)).await;
    assert_eq!(r.api_writes(), 0, "{r:#?}");
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());

    // The registry is back and the backoff is over: the signature artifacts are unchanged, so
    // HEAD requests confirm the verdict and `lastVerified` (a full verification) stays t0.
    w.proxy.set_mode(Mode::Pass);
    w.reset_counters();
    let r = w.sweep(after(t1, backoff)).await;
    assert_eq!((r.events, r.errors), (1, 0), "{r:#?}");
    let s = w.status(&id);
    assert_signed(&s);
    assert_eq!(s.checking_since, None);
    assert_eq!(s.last_verified, Some(stamp(t0)));
    let requests = w.proxy.requests();
    assert!(
        !requests.is_empty() && requests.iter().all(|q| q.method == "HEAD"),
        "{requests:#?}"
    );
    let notes = w.event_notes();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(notes[1].contains("checking -> signed"), "{notes:#?}");
}

// ---- 6. restart: warm start from CR status ----------------------------------------------------

#[tokio::test]
async fn restart_warm_starts_from_resource_status() {
    let mut w = World::new().await;
    let signed = w.signed_image("restart-signed").await;
    let unsigned = w.unsigned_image("restart-unsigned").await;
    w.init_pods(&[pod("a", "p", &[pinned(&signed), pinned(&unsigned)])]);
    let t0 = Utc::now();
    let cold = w.sweep(t0).await;
    assert_eq!(cold.created, 2, "{cold:#?}");

    let restarted = w.new_sweeper(observer_config()).await;
    let now = after(t0, Duration::from_secs(120));
    assert_eq!(restarted.warm_start(&w.existing().await, now), 2);
    w.reset_counters();
    let r = w
        .sweep_with(&restarted, after(t0, TTL - Duration::from_secs(60)))
        .await;
    assert_eq!((r.images, r.api_writes(), r.errors), (2, 0, 0), "{r:#?}");
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert_eq!(restarted.observer().stats().misses, 0);
}

// ---- 7. a posture change emits exactly one Event ----------------------------------------------

#[tokio::test]
async fn posture_change_emits_one_event() {
    let mut w = World::new().await;
    let id = w.unsigned_image("becomes-signed").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]);
    let t0 = Utc::now();
    w.sweep(t0).await;
    assert_posture(&w.status(&id), Posture::NotSigned, Reason::NoSignature);
    assert!(w.api.events().is_empty(), "no Event on creation");

    w.env.sign_keyless(&id, &Identity::github()).await;
    // Within the TTL the cached verdict stands.
    let r = w.sweep(after(t0, Duration::from_secs(60))).await;
    assert_eq!(r.api_writes(), 0, "{r:#?}");

    let r = w.sweep(after(t0, TTL + Duration::from_secs(1))).await;
    assert_eq!(r.events, 1, "{r:#?}");
    assert_signed(&w.status(&id));
    let notes = w.event_notes();
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains("not-signed -> signed"), "{notes:#?}");
    assert!(notes[0].contains(WORKFLOW_URI), "{notes:#?}");
    assert_eq!(w.api.events()[0]["reason"], "PostureChanged");
}

// ---- 8. the max-images cap defers visibly -----------------------------------------------------

#[tokio::test]
async fn cap_defers_the_less_used_image_visibly() {
    let mut w = World::with(ObserverConfig {
        max_images: 1,
        ..observer_config()
    })
    .await;
    let popular = w.signed_image("popular").await;
    let rare = w.signed_image("rare").await;
    w.init_pods(&[
        pod("a", "p1", &[pinned(&popular)]),
        pod("b", "p2", &[pinned(&popular)]),
        pod("c", "p3", &[pinned(&rare)]),
    ]);
    let now = Utc::now();
    w.reset_counters();
    let r = w.sweep(now).await;
    assert_eq!(
        (r.images, r.created, r.deferred, r.errors),
        (2, 2, 1, 0),
        "{r:#?}"
    );
    assert_signed(&w.status(&popular));
    let s = w.status(&rare);
    assert_posture(&s, Posture::Checking, Reason::Deferred);
    assert_eq!(s.checking_since, Some(stamp(now)));
    assert_eq!(s.usage.unwrap().pods, 1);
    let asked_rare = w
        .proxy
        .requests()
        .iter()
        .filter(|q| q.path.contains(&rare.repository))
        .count();
    assert_eq!(asked_rare, 0, "a deferred image is not verified");
    assert!(r.by_posture.contains(&(Posture::Signed, 1)), "{r:#?}");
    assert!(r.by_posture.contains(&(Posture::Checking, 1)), "{r:#?}");
}

// ---- 9. 409 Conflict is retried ---------------------------------------------------------------

#[tokio::test]
async fn conflicts_are_retried() {
    let mut w = World::new().await;
    let id = w.signed_image("conflict").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]);
    w.reset_counters();
    w.api.fail_next_writes_with_conflict(2);
    let r = w.sweep(Utc::now()).await;
    assert_eq!((r.created, r.errors), (1, 0), "{r:#?}");
    assert_signed(&w.status(&id));
    let conflicts = w.api.writes().iter().filter(|x| x.status == 409).count();
    assert_eq!(conflicts, 2, "{:#?}", w.api.writes());
}

// ---- 10. the leadership gate ------------------------------------------------------------------

#[tokio::test]
async fn closed_gate_writes_nothing() {
    let mut w = World::new().await;
    let id = w.signed_image("gate").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let gated = w.new_sweeper(observer_config()).await.with_gate(rx);
    w.reset_counters();
    let r = w.sweep_with(&gated, Utc::now()).await;
    assert!(r.aborted, "{r:#?}");
    assert_eq!(r.api_writes(), 0, "{r:#?}");
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert!(w.api.image_postures().is_empty());
}

/// A replica that lost its Lease must not delete either: garbage collection runs after the
/// per-image loop and does not consult the gate, so with no live image (or a gate that closes
/// after the last image) a non-leader deletes resources.
#[tokio::test]

async fn closed_gate_does_not_delete() {
    let mut w = World::new().await;
    let id = w.unsigned_image("gate-gc").await;
    let p = pod("a", "p", &[pinned(&id)]);
    w.init_pods(std::slice::from_ref(&p));
    let (tx, rx) = tokio::sync::watch::channel(true);
    let gated = w.new_sweeper(observer_config()).await.with_gate(rx);
    let t0 = Utc::now();
    w.sweep_with(&gated, t0).await;
    assert!(w.cr(&id).is_some());
    w.delete_pod(&p);
    w.sweep_with(&gated, t0).await; // unused since t0

    tx.send(false).unwrap(); // leadership lost
    w.reset_counters();
    let r = w.sweep_with(&gated, after(t0, GRACE)).await;
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert!(
        w.cr(&id).is_some(),
        "deleted by a replica that does not lead"
    );
    assert!(r.aborted, "{r:#?}");
}

// ---- 11. invalid references and tags not pulled yet -------------------------------------------

#[tokio::test]
async fn invalid_reference_is_counted_and_pending_tag_is_resolved() {
    let mut w = World::new().await;
    let id = w.signed_image("pending").await;
    let tag_ref = format!("{}:v1", id.repo_path());
    w.init_pods(&[
        pod("a", "bad", &[pending("UPPER/Case:1")]),
        pod("a", "starting", &[pending(&tag_ref)]),
    ]);
    w.reset_counters();
    let r = w.sweep(Utc::now()).await;
    assert_eq!(
        (r.invalid, r.unresolved, r.images, r.created, r.errors),
        (1, 0, 1, 1, 0),
        "{r:#?}"
    );
    let cr = w.cr(&id).expect("the tag resolved to the pushed digest");
    assert_eq!(cr.spec.image, id.key());
    let s = cr.status.unwrap();
    assert_signed(&s);
    assert_eq!(s.references, [tag_ref]);
    let resolve = format!("/v2/{}/manifests/v1", id.repository);
    let heads: Vec<_> = w
        .proxy
        .requests()
        .into_iter()
        .filter(|q| q.path == resolve)
        .collect();
    assert_eq!(heads.len(), 1, "{:#?}", w.proxy.requests());
    assert_eq!(heads[0].method, "HEAD");
    assert_eq!(w.api.image_postures().len(), 1);
}

// ---- bug: two posture changes of one EventType within kube's event cache window -------------

/// kube's `Recorder` keys its event cache on (type, reason, action, regarding), not the note:
/// a second posture change of the same type within 6 minutes patches the first Event into a
/// series and keeps its note, so `checking -> invalid-signature` is never told.
#[tokio::test]

async fn each_posture_change_is_told() {
    let mut w = World::new().await;
    let id = w.signed_image("flip").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]);
    let t0 = Utc::now();
    w.sweep(t0).await;

    w.proxy.set_mode(Mode::Status(500));
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.sweep(t1).await; // signed -> checking (Warning)

    // The registry comes back with the signature replaced by a tampered one.
    let leaf = w.env.pki.ca.issue(&Identity::github());
    let layer = cosign::legacy_layer(
        &id,
        &Signer::Keyless(&leaf),
        Some(&w.env.pki.rekor),
        Spoil::TamperPayload,
    );
    w.env
        .oci
        .push_sig(&id.repository, &id.digest, &[layer])
        .await;
    w.proxy.set_mode(Mode::Pass);
    let r = w.sweep(after(t1, ObserverConfig::default().backoff)).await;
    assert_posture(
        &w.status(&id),
        Posture::InvalidSignature,
        Reason::BadSignature,
    );
    assert_eq!(r.events, 1, "{r:#?}");
    let notes = w.event_notes();
    assert_eq!(notes.len(), 2, "{:#?}", w.api.events());
    assert!(
        notes[1].contains("checking -> invalid-signature"),
        "{notes:#?}"
    );
}
