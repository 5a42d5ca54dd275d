//! Both loops (the inventory pass and the verification controller's reconciles, see
//! tests/support/harness) driven through kube's seams against the real kube-apiserver (tests/support/kube):
//! pods are real Pod objects, listed by the operator's ServiceAccount (RBAC from config/rbac)
//! into a real kube-runtime reflector store; ImagePosture writes and Events go through a real
//! `kube::Client` and a counting, fault-injecting proxy in front of the server, which applies
//! them as a cluster does (server-side apply, managedFields, the status subresource); images
//! live in a real registry behind a counting, fault-injecting proxy. Time is passed in as
//! `now`; nothing sleeps to wait for a TTL or a grace period.

#[path = "support/harness/mod.rs"]
mod harness;
#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::time::Duration;

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::runtime::reflector::{self, store::Writer, Store};
use ::kube::runtime::watcher;
use chrono::{DateTime, SecondsFormat, Utc};
use harness::{Operator, Report};
use imageposture::cache::ObserverConfig;
use imageposture::core::image::ImageId;
use imageposture::core::posture::{Posture, Reason, SignerType};
use imageposture::model::crd::{ImagePosture, ImagePostureStatus};
use imageposture::model::naming::ResourceName as _;
use imageposture::operator::inventory::sweep::SweepConfig;
use imageposture::operator::leader::Gate;
use k8s_openapi::api::core::v1::Pod;
use kube::cluster::Cluster;
use kube::proxy::{Fault, Rule};
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

fn config() -> harness::Config {
    harness::Config {
        observer: ObserverConfig {
            ttl: TTL,
            ..Default::default()
        },
        sweep: SweepConfig {
            grace: GRACE,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Registry (through a counting proxy), API double, pod reflector store and an operator.
struct World {
    env: TestEnv,
    proxy: Proxy,
    api: Cluster,
    op: Operator,
    pods: Store<Pod>,
    writer: Writer<Pod>,
}

impl World {
    async fn new() -> Option<World> {
        World::with(config()).await
    }

    async fn with(config: harness::Config) -> Option<World> {
        let api = Cluster::start().await?;
        let env = TestEnv::new();
        let proxy = Proxy::start(&env.registry.host).await;
        let (pods, writer) = reflector::store::<Pod>();
        let verifier = env.verifier(env.config(&[&proxy.host])).await;
        let op = Operator::new(&api.client(), verifier, config).await;
        Some(World {
            env,
            proxy,
            api,
            op,
            pods,
            writer,
        })
    }

    /// A brand-new operator over the same registry and API (a restart, or another replica).
    async fn new_operator(&self, config: harness::Config) -> Operator {
        let verifier = self
            .env
            .verifier(self.env.config(&[&self.proxy.host]))
            .await;
        Operator::new(&self.api.client(), verifier, config).await
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

    /// A new image whose only signature is a keyless one over a tampered payload.
    async fn invalid_image(&self, name: &str) -> ImageId {
        let id = self.unsigned_image(name).await;
        let leaf = self.env.pki.ca.issue(&Identity::github());
        let original = ImageId {
            registry: self.env.registry.host.clone(),
            ..id.clone()
        };
        let layer = cosign::legacy_layer(
            &original,
            &Signer::Keyless(&leaf),
            Some(&self.env.pki.rekor),
            Spoil::TamperPayload,
        );
        self.env
            .oci
            .push_sig(&id.repository, &id.digest, &[layer])
            .await;
        id
    }

    /// Creates `pods` in the cluster (spec, then status as the kubelet writes it), and gives
    /// the reflector store the initial list of every pod not created before, as the
    /// operator's ServiceAccount lists them. Pods created before and not named again are
    /// deleted (the world is what `pods` says).
    async fn init_pods(&mut self, pods: &[Pod]) {
        let listed = self.api.pods().await;
        let wanted: std::collections::BTreeSet<(String, String)> = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        for old in &listed {
            let key = (
                old.metadata.namespace.clone().unwrap_or_default(),
                old.metadata.name.clone().unwrap_or_default(),
            );
            if !wanted.contains(&key) {
                self.api.delete_pod(old).await;
            }
        }
        let fresh: Vec<Pod> = pods
            .iter()
            .filter(|p| {
                !listed.iter().any(|o| {
                    o.metadata.namespace == p.metadata.namespace
                        && o.metadata.name == p.metadata.name
                })
            })
            .cloned()
            .collect();
        self.api.put_pods(&fresh).await;
        self.writer.apply_watcher_event(&watcher::Event::Init);
        for p in self.api.pods().await {
            self.writer
                .apply_watcher_event(&watcher::Event::InitApply(p));
        }
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    async fn delete_pod(&mut self, pod: &Pod) {
        self.api.delete_pod(pod).await;
        self.writer
            .apply_watcher_event(&watcher::Event::Delete(pod.clone()));
    }

    async fn pass(&self, now: DateTime<Utc>) -> Report {
        self.pass_with(&self.op, now).await
    }

    async fn pass_with(&self, op: &Operator, now: DateTime<Utc>) -> Report {
        op.pass(&self.api.client(), &self.pods.state(), now).await
    }

    async fn cr(&self, id: &ImageId) -> Option<ImagePosture> {
        let v = self.api.image_posture(&id.resource_name()).await?;
        Some(serde_json::from_value(v).expect("stored ImagePosture"))
    }

    async fn status(&self, id: &ImageId) -> ImagePostureStatus {
        let cr = self
            .cr(id)
            .await
            .unwrap_or_else(|| panic!("no ImagePosture for {id}"));
        cr.status.expect("status written")
    }

    /// The operator's writes to ImagePostures counted at the API proxy.
    fn writes_to_imagepostures(&self) -> usize {
        self.api
            .writes()
            .iter()
            .filter(|s| s.path.contains("/imagepostures"))
            .count()
    }

    /// Forgets counted registry requests and API writes.
    fn reset_counters(&self) {
        self.proxy.reset_requests();
        self.api.reset_counters();
    }

    /// `note` of every Event, in creation order.
    async fn event_notes(&self) -> Vec<String> {
        self.api
            .events()
            .await
            .iter()
            .map(|e| e["note"].as_str().unwrap_or_default().to_string())
            .collect()
    }
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
    let Some(mut w) = World::new().await else {
        return;
    };
    let app = w.signed_image("shared").await;
    let init = w.unsigned_image("init").await;
    let debug = w.unsigned_image("debug").await;
    w.init_pods(&[
        pod_with("team-a", "web", &[pinned(&app)], &[pinned(&init)], &[]),
        pod_with("team-b", "api", &[pinned(&app)], &[], &[pinned(&debug)]),
    ])
    .await;

    let report = w.pass(Utc::now()).await;
    assert_eq!(
        (report.images, report.created, report.errors, report.invalid),
        (3, 3, 0, 0),
        "{report:#?}"
    );
    assert_eq!(w.api.image_postures().await.len(), 3);

    let cr = w.cr(&app).await.unwrap();
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
        let s = w.status(id).await;
        assert_posture(&s, Posture::NotSigned, Reason::NoSignature);
        let usage = s.usage.unwrap();
        assert_eq!((usage.pods, usage.namespaces), (1, vec![ns.to_string()]));
    }
}

// ---- 2. tag and digest references of one digest ---------------------------------------------

#[tokio::test]
async fn tag_and_digest_references_share_one_resource() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("refs").await;
    w.init_pods(&[
        pod("a", "by-tag", &[tagged(&id, "v1")]),
        pod("b", "by-digest", &[pinned(&id)]),
    ])
    .await;

    let report = w.pass(Utc::now()).await;
    assert_eq!((report.images, report.created), (1, 1), "{report:#?}");
    assert_eq!(w.api.image_postures().await.len(), 1);
    let s = w.status(&id).await;
    assert_signed(&s);
    let mut want = vec![format!("{}:v1", id.repo_path()), id.key()];
    want.sort();
    assert_eq!(s.references, want);
    assert_eq!(s.usage.unwrap().pods, 2);
}

// ---- 3. warm sweep: no registry request, no API write -----------------------------------------

#[tokio::test]
async fn warm_sweep_costs_nothing() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let signed = w.signed_image("warm-signed").await;
    let unsigned = w.unsigned_image("warm-unsigned").await;
    w.init_pods(&[
        pod("a", "p1", &[pinned(&signed), tagged(&unsigned, "v1")]),
        pod("b", "p2", &[tagged(&signed, "v1")]),
    ])
    .await;
    let t0 = Utc::now();

    w.reset_counters();
    let cold = w.pass(t0).await;
    let cold_requests = w.proxy.requests();
    let (cold_registry, cold_api) = (cold_requests.len(), w.api.writes().len());
    assert_eq!((cold.created, cold.errors), (2, 0), "{cold:#?}");
    assert_eq!(cold.api_writes(), cold_api, "report vs writes at the API");

    w.reset_counters();
    let warm = w.pass(after(t0, Duration::from_secs(60))).await;
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
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.unsigned_image("gc").await;
    let p = pod("a", "p", &[pinned(&id)]);
    w.init_pods(std::slice::from_ref(&p)).await;
    let t0 = Utc::now();
    w.pass(t0 - chrono::Duration::minutes(1)).await;
    assert!(w.cr(&id).await.is_some());

    w.delete_pod(&p).await;
    // The last pod is gone: until deletion the resource says so (0 pods), in one write.
    w.reset_counters();
    let r = w.pass(t0).await;
    assert_eq!(
        (r.deleted, r.status_writes, r.api_writes()),
        (0, 1, 1),
        "{r:#?}"
    );
    let s = w.status(&id).await;
    let usage = s.usage.clone().unwrap();
    assert_eq!((usage.pods, usage.namespace_count), (0, 0), "{s:#?}");
    assert!(
        usage.namespaces.is_empty() && s.references.is_empty(),
        "{s:#?}"
    );
    assert_posture(&s, Posture::NotSigned, Reason::NoSignature);
    w.reset_counters();
    let t = after(t0, GRACE) - chrono::Duration::seconds(1);
    let r = w.pass(t).await;
    assert_eq!(r.deleted, 0, "at {t}: {r:#?}");
    assert!(w.cr(&id).await.is_some(), "deleted before the grace period");
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());

    let r = w.pass(after(t0, GRACE)).await;
    assert_eq!((r.deleted, r.errors), (1, 0), "{r:#?}");
    assert!(w.cr(&id).await.is_none());
    assert_eq!(w.api.image_posture_writes("DELETE"), 1);
    assert_eq!(w.api.writes().len(), 1, "{:#?}", w.api.writes());
    assert!(w.proxy.requests().is_empty(), "GC needs no registry");
}

// ---- 5. registry outage: checking, never deleted, then back -----------------------------------

#[tokio::test]
async fn registry_outage_is_checking_then_recovers() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("outage").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let t0 = Utc::now();
    w.pass(t0).await;
    assert_signed(&w.status(&id).await);

    // The TTL expired and the registry answers 500.
    w.proxy.set_mode(Mode::Status(500));
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.reset_counters();
    let r = w.pass(t1).await;
    assert_eq!((r.deleted, r.events, r.errors), (0, 1, 0), "{r:#?}");
    assert!(!w.proxy.requests().is_empty(), "the registry was asked");
    let s = w.status(&id).await;
    assert_posture(&s, Posture::Checking, Reason::RegistryError);
    assert_eq!(s.checking_since, Some(stamp(t1)));
    assert_eq!(s.last_verified, Some(stamp(t0)), "lastVerified keeps t0");
    assert_eq!(s.signer, None);
    let notes = w.event_notes().await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains("signed -> checking"), "{notes:#?}");

    // Within the backoff: the registry is left alone and the CR is not rewritten.
    let backoff = ObserverConfig::default().backoff;
    w.reset_counters();
    let r = w.pass(after(t1, backoff / 2)).await;
    assert_eq!(r.api_writes(), 0, "{r:#?}");
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());

    // The registry is back and the backoff is over: the signature artifacts are unchanged, so
    // HEAD requests confirm the verdict and `lastVerified` (a full verification) stays t0.
    w.proxy.set_mode(Mode::Pass);
    w.reset_counters();
    let r = w.pass(after(t1, backoff)).await;
    assert_eq!((r.events, r.errors), (1, 0), "{r:#?}");
    let s = w.status(&id).await;
    assert_signed(&s);
    assert_eq!(s.checking_since, None);
    assert_eq!(s.last_verified, Some(stamp(t0)));
    let requests = w.proxy.requests();
    assert!(
        !requests.is_empty() && requests.iter().all(|q| q.method == "HEAD"),
        "{requests:#?}"
    );
    let notes = w.event_notes().await;
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(notes[1].contains("checking -> signed"), "{notes:#?}");
}

// ---- 6. restart: the status is the cache ----------------------------------------------------

#[tokio::test]
async fn restart_within_ttl_costs_nothing() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let signed = w.signed_image("restart-signed").await;
    let unsigned = w.unsigned_image("restart-unsigned").await;
    w.init_pods(&[pod("a", "p", &[pinned(&signed), pinned(&unsigned)])])
        .await;
    let t0 = Utc::now();
    let cold = w.pass(t0).await;
    assert_eq!(cold.created, 2, "{cold:#?}");

    // A new process: no memory of its own, only the ImagePosture status.
    let restarted = w.new_operator(config()).await;
    w.reset_counters();
    let r = w
        .pass_with(&restarted, after(t0, TTL - Duration::from_secs(60)))
        .await;
    assert_eq!((r.images, r.api_writes(), r.errors), (2, 0, 0), "{r:#?}");
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert_eq!(restarted.observer().stats().misses, 0);
    assert_eq!(restarted.observer().stats().hits, 2);

    // Past the TTL the restarted process revalidates by digest: HEADs, and `lastChecked`.
    w.reset_counters();
    let t1 = after(t0, TTL + Duration::from_secs(1));
    let r = w.pass_with(&restarted, t1).await;
    assert_eq!((r.status_writes, r.events, r.errors), (2, 0, 0), "{r:#?}");
    // HEADs, and the new process's one probe of the referrers API (404 here): no download.
    let requests = w.proxy.requests();
    assert!(
        requests
            .iter()
            .all(|q| q.method == "HEAD" || q.path.contains("/referrers/")),
        "{requests:#?}"
    );
    let s = w.status(&signed).await;
    assert_signed(&s);
    assert_eq!(s.last_verified, Some(stamp(t0)));
    assert_eq!(s.last_checked, Some(stamp(t1)));
}

// ---- 7. a posture change emits exactly one Event ----------------------------------------------

#[tokio::test]
async fn posture_change_emits_one_event() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.unsigned_image("becomes-signed").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let t0 = Utc::now();
    w.pass(t0).await;
    assert_posture(
        &w.status(&id).await,
        Posture::NotSigned,
        Reason::NoSignature,
    );
    assert!(w.api.events().await.is_empty(), "no Event on creation");

    w.env.sign_keyless(&id, &Identity::github()).await;
    // Within the TTL the cached verdict stands.
    let r = w.pass(after(t0, Duration::from_secs(60))).await;
    assert_eq!(r.api_writes(), 0, "{r:#?}");

    let r = w.pass(after(t0, TTL + Duration::from_secs(1))).await;
    assert_eq!(r.events, 1, "{r:#?}");
    assert_signed(&w.status(&id).await);
    let notes = w.event_notes().await;
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(notes[0].contains("not-signed -> signed"), "{notes:#?}");
    assert!(notes[0].contains(WORKFLOW_URI), "{notes:#?}");
    assert_eq!(w.api.events().await[0]["reason"], "PostureChanged");
}

// ---- 8. the max-images cap: most-used images first, the overflow counted ----------------

#[tokio::test]
async fn cap_records_the_most_used_images_and_counts_the_rest() {
    let Some(mut w) = World::with(harness::Config {
        sweep: SweepConfig {
            grace: GRACE,
            max_images: 1,
            ..Default::default()
        },
        ..config()
    })
    .await
    else {
        return;
    };
    let popular = w.signed_image("popular").await;
    let rare = w.signed_image("rare").await;
    w.init_pods(&[
        pod("a", "p1", &[pinned(&popular)]),
        pod("b", "p2", &[pinned(&popular)]),
        pod("c", "p3", &[pinned(&rare)]),
    ])
    .await;
    let now = Utc::now();
    w.reset_counters();
    let r = w.pass(now).await;
    assert_eq!(
        (r.images, r.created, r.deferred, r.errors),
        (2, 1, 1, 0),
        "{r:#?}"
    );
    assert_signed(&w.status(&popular).await);
    assert!(w.cr(&rare).await.is_none(), "the overflow is not recorded");
    let asked_rare = w
        .proxy
        .requests()
        .iter()
        .filter(|q| q.path.contains(&rare.repository))
        .count();
    assert_eq!(asked_rare, 0, "a deferred image is not verified");
    assert!(r.by_posture.contains(&(Posture::Signed, 1)), "{r:#?}");

    // Still over the cap on the next pass: counted again, nothing written.
    w.reset_counters();
    let r = w.pass(after(now, Duration::from_secs(60))).await;
    assert_eq!((r.deferred, r.api_writes()), (1, 0), "{r:#?}");

    // The popular image's pods go away: its resource still holds a slot until deleted.
    w.init_pods(&[pod("c", "p3", &[pinned(&rare)])]).await;
    let r = w.pass(after(now, Duration::from_secs(120))).await;
    assert_eq!(r.deferred, 1, "{r:#?}");
    let r = w.pass(after(now, GRACE + Duration::from_secs(120))).await;
    assert_eq!(r.deleted, 1, "{r:#?}");
    let r = w.pass(after(now, GRACE + Duration::from_secs(180))).await;
    assert_eq!((r.created, r.deferred), (1, 0), "{r:#?}");
    assert_signed(&w.status(&rare).await);
}

// ---- 9. 409 Conflict is retried ---------------------------------------------------------------

#[tokio::test]
async fn conflicts_are_retried() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("conflict").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    w.reset_counters();
    w.api.proxy.inject(Rule {
        method: Some("PATCH".into()),
        path_contains: "/imagepostures/".into(),
        fault: Fault::Status(409),
        remaining: Some(2),
    });
    let r = w.pass(Utc::now()).await;
    assert_eq!((r.created, r.errors), (1, 0), "{r:#?}");
    assert_signed(&w.status(&id).await);
    let conflicts = w.api.writes().iter().filter(|x| x.status == 409).count();
    assert_eq!(conflicts, 2, "{:#?}", w.api.writes());
}

// ---- 10. the leadership gate ------------------------------------------------------------------

#[tokio::test]
async fn closed_gate_writes_nothing() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("gate").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let gated = w
        .new_operator(harness::Config {
            gate: Gate::flag(rx),
            ..config()
        })
        .await;
    w.reset_counters();
    let r = w.pass_with(&gated, Utc::now()).await;
    assert!(r.aborted, "{r:#?}");
    assert_eq!(r.api_writes(), 0, "{r:#?}");
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert!(w.api.image_postures().await.is_empty());
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
}

/// A replica that lost its Lease must not delete either.
#[tokio::test]
async fn closed_gate_does_not_delete() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.unsigned_image("gate-gc").await;
    let p = pod("a", "p", &[pinned(&id)]);
    w.init_pods(std::slice::from_ref(&p)).await;
    let (tx, rx) = tokio::sync::watch::channel(true);
    let gated = w
        .new_operator(harness::Config {
            gate: Gate::flag(rx),
            ..config()
        })
        .await;
    let t0 = Utc::now();
    w.pass_with(&gated, t0).await;
    assert!(w.cr(&id).await.is_some());
    w.delete_pod(&p).await;
    w.pass_with(&gated, t0).await; // unused since t0

    tx.send(false).unwrap(); // leadership lost
    w.reset_counters();
    let r = w.pass_with(&gated, after(t0, GRACE)).await;
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert!(
        w.cr(&id).await.is_some(),
        "deleted by a replica that does not lead"
    );
    assert!(r.aborted, "{r:#?}");
}

// ---- 11. invalid references and tags not pulled yet -------------------------------------------

#[tokio::test]
async fn invalid_reference_is_counted_and_pending_tag_is_resolved_in_the_background() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("pending").await;
    let other = w.unsigned_image("pending-other").await;
    let tag_ref = format!("{}:v1", id.repo_path());
    w.init_pods(&[
        pod("a", "bad", &[pending("UPPER/Case:1")]),
        pod("a", "starting", &[pending(&tag_ref)]),
        pod("a", "other", &[pinned(&other)]),
    ])
    .await;
    w.reset_counters();
    let t0 = Utc::now();
    let r = w.pass(t0).await;
    assert_eq!(
        (r.invalid, r.unresolved, r.images, r.created, r.errors),
        (1, 1, 1, 1, 0),
        "the tag resolves in the background, the other image is written at once: {r:#?}"
    );
    w.op.sweeper.tags().settled().await;
    let r = w.pass(after(t0, Duration::from_secs(1))).await;
    assert_eq!(
        (r.unresolved, r.images, r.created, r.errors),
        (0, 2, 1, 0),
        "{r:#?}"
    );
    let cr = w
        .cr(&id)
        .await
        .expect("the tag resolved to the pushed digest");
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
    assert_eq!(w.api.image_postures().await.len(), 2);

    // Cached: later passes resolve nothing again.
    w.reset_counters();
    w.pass(after(t0, Duration::from_secs(2))).await;
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
}

/// A tag whose registry never answers delays no other image: the pass writes at once.
#[tokio::test]
async fn slow_tag_resolution_delays_no_other_image() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let slow = Proxy::start(&w.env.registry.host).await;
    slow.set_mode(Mode::Delay(Duration::from_secs(5)));
    let fast = w.signed_image("tag-fast").await;
    let img = w.env.oci.push_image(&unique_repo("tag-slow"), "v1").await;
    let slow_tag = format!("{}:v1", via(&img.id, &slow.host).repo_path());
    w.init_pods(&[
        pod("a", "slow", &[pending(&slow_tag)]),
        pod("a", "fast", &[pinned(&fast)]),
    ])
    .await;
    let verifier = w
        .env
        .verifier(w.env.config(&[&w.proxy.host, &slow.host]))
        .await;
    let op = Operator::new(&w.api.client(), verifier, config()).await;
    let started = std::time::Instant::now();
    let r = w.pass_with(&op, Utc::now()).await;
    let took = started.elapsed();
    assert_eq!((r.created, r.unresolved), (1, 1), "{r:#?}");
    assert_signed(&w.status(&fast).await);
    assert!(
        took < Duration::from_secs(3),
        "the pass waited {took:?} for a tag"
    );
}

// ---- bug: two posture changes of one EventType within kube's event cache window -------------

/// kube's `Recorder` keys its event cache on (type, reason, action, regarding), not the note:
/// the action names the transition, so a second change of the same type is told too.
#[tokio::test]
async fn each_posture_change_is_told() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("flip").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let t0 = Utc::now();
    w.pass(t0).await;

    w.proxy.set_mode(Mode::Status(500));
    let t1 = after(t0, TTL + Duration::from_secs(1));
    w.pass(t1).await; // signed -> checking (Warning)

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
    let r = w.pass(after(t1, ObserverConfig::default().backoff)).await;
    assert_posture(
        &w.status(&id).await,
        Posture::InvalidSignature,
        Reason::BadSignature,
    );
    assert_eq!(r.events, 1, "{r:#?}");
    let notes = w.event_notes().await;
    assert_eq!(notes.len(), 2, "{:#?}", w.api.events().await);
    assert!(
        notes[1].contains("checking -> invalid-signature"),
        "{notes:#?}"
    );
}

// ---- field ownership, as a real API server applies it ----------------------------------------

/// Another manager's status edit: a forged `signed` with a signer on an invalid image.
async fn forge(w: &World, id: &ImageId, fields: serde_json::Value) {
    let api: Api<ImagePosture> = Api::all(w.api.admin());
    let body = json!({
        "apiVersion": "imageposture.io/v1alpha1",
        "kind": "ImagePosture",
        "status": fields,
    });
    api.patch_status(
        &id.resource_name(),
        &PatchParams::apply("intruder").force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("the intruder's apply");
}

#[tokio::test]
async fn a_foreign_signer_does_not_survive_on_an_invalid_image() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.invalid_image("forged").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let t0 = Utc::now();
    w.pass(t0).await;
    assert_posture(
        &w.status(&id).await,
        Posture::InvalidSignature,
        Reason::BadSignature,
    );

    forge(
        &w,
        &id,
        json!({"posture": "signed", "signer": "mallory@example.com"}),
    )
    .await;
    assert_eq!(
        w.status(&id).await.signer.as_deref(),
        Some("mallory@example.com")
    );

    // Within the TTL: the forged verdict is not trusted as the cache; the image is verified
    // again and every verdict field is ours once more, the foreign signer gone.
    let r = w.pass(after(t0, Duration::from_secs(60))).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    let s = w.status(&id).await;
    assert_posture(&s, Posture::InvalidSignature, Reason::BadSignature);
    assert_eq!(s.signer, None, "{s:#?}");
    let cr = w.cr(&id).await.unwrap();
    let managers: Vec<String> = cr
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(!managers.iter().any(|m| m == "intruder"), "{managers:?}");

    // And then nothing more to write.
    w.reset_counters();
    let r = w.pass(after(t0, Duration::from_secs(120))).await;
    assert_eq!(r.api_writes(), 0, "{r:#?}");
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
}

#[tokio::test]
async fn a_foreign_field_we_do_not_own_causes_no_rewrites() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("foreign-note").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let t0 = Utc::now();
    w.pass(t0).await;
    // The status schema is closed (the real server refuses an undeclared status field), so
    // another tool's own fields live in metadata: a label and an annotation of its own.
    let api: Api<ImagePosture> = Api::all(w.api.admin());
    let body = json!({
        "apiVersion": "imageposture.io/v1alpha1",
        "kind": "ImagePosture",
        "metadata": {
            "name": id.resource_name(),
            "labels": { "team": "platform" },
            "annotations": { "audit.example.com/note": "audited by the platform team" },
        },
    });
    api.patch(
        &id.resource_name(),
        &PatchParams::apply("auditor"),
        &Patch::Apply(&body),
    )
    .await
    .expect("the auditor's apply");
    w.reset_counters();
    for n in 1..=3 {
        let r = w.pass(after(t0, Duration::from_secs(60 * n))).await;
        assert_eq!(r.api_writes(), 0, "{r:#?}");
    }
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    let cr = w.api.image_posture(&id.resource_name()).await.unwrap();
    assert_eq!(cr["metadata"]["labels"]["team"], "platform");
    assert_eq!(
        cr["metadata"]["annotations"]["audit.example.com/note"],
        "audited by the platform team"
    );
    assert_signed(&w.status(&id).await);
}

#[tokio::test]
async fn each_manager_owns_its_fields() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("owners").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    w.pass(Utc::now()).await;
    let cr = w.api.image_posture(&id.resource_name()).await.unwrap();
    let owned = |manager: &str, sub: &str| -> serde_json::Value {
        cr["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager && e["subresource"].as_str().unwrap_or("") == sub)
            .map(|e| e["fieldsV1"].clone())
            .unwrap_or_default()
    };
    let inv_status = owned("imageposture-inventory", "status");
    assert!(inv_status["f:status"]["f:usage"].is_object(), "{cr:#}");
    assert!(inv_status["f:status"]["f:references"].is_object(), "{cr:#}");
    assert!(inv_status["f:status"].get("f:posture").is_none(), "{cr:#}");
    let ver_status = owned("imageposture-verifier", "status");
    for f in ["f:posture", "f:signer", "f:lastVerified", "f:conditions"] {
        assert!(ver_status["f:status"][f].is_object(), "{f}: {cr:#}");
    }
    let inv_main = owned("imageposture-inventory", "");
    assert!(inv_main["f:spec"]["f:image"].is_object(), "{cr:#}");
    assert!(inv_main["f:metadata"]["f:labels"]["f:app.kubernetes.io/managed-by"].is_object());
    let ver_main = owned("imageposture-verifier", "");
    assert!(ver_main["f:metadata"]["f:labels"]["f:imageposture.io/posture"].is_object());
}

// ---- leadership: no write lands after the claim on the Lease ends -----------------------------

/// A write held up by a slow API server is abandoned when this replica's claim on the Lease
/// ends, so it cannot land after another replica may have taken over.
#[tokio::test]
async fn no_write_lands_after_the_lease_claim_ends() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.unsigned_image("claim").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let (tx, rx) = tokio::sync::watch::channel(Some(far));
    let op = w
        .new_operator(harness::Config {
            gate: Gate::claim(rx),
            ..config()
        })
        .await;
    w.api.proxy.inject(Rule {
        method: Some("PATCH".into()),
        path_contains: "/apis/imageposture.io/".into(),
        fault: Fault::Delay(Duration::from_secs(3)),
        remaining: None,
    });
    // The claim runs out 1 s from now, while the first write is held (the inventory pass is
    // driven directly, so the time the pass takes to list is not counted against the claim).
    let existing = harness::list(&w.api.client()).await;
    tx.send(Some(
        tokio::time::Instant::now() + Duration::from_millis(1000),
    ))
    .unwrap();
    let started = std::time::Instant::now();
    let r = op
        .sweeper
        .sweep(&w.pods.state(), &existing, Utc::now())
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "the pass took {took:?}");
    assert_eq!((r.created, r.errors), (0, 1), "{r:#?}");
    assert_eq!(w.api.proxy.held(), 1, "one write was in flight");
    // Past the API server's delay: the abandoned write was never applied.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert!(
        w.api.image_postures().await.is_empty(),
        "a write landed after the claim ended"
    );
    // And nothing more is even tried once the claim is over.
    w.reset_counters();
    let r = w.pass_with(&op, Utc::now()).await;
    assert!(r.aborted, "{r:#?}");
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
}

// ---- issue 14: what a real API server showed -------------------------------------------------

/// `kubectl edit --subresource=status` (a JSON merge patch under another field manager) forges
/// `signed` and a signer on an invalid image. The real server gives the editor those fields;
/// an apply that states the editor's value would only *share* them. The operator must restore
/// its verdict, remove the foreign signer, and then stop writing (it once re-applied its status
/// 20 times a second, without end).
#[tokio::test]
async fn a_merge_patched_status_is_restored_once_and_then_left_alone() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.invalid_image("edited").await;
    w.init_pods(&[pod("a", "p", &[pinned(&id)])]).await;
    let t0 = Utc::now();
    w.pass(t0).await;
    assert_posture(
        &w.status(&id).await,
        Posture::InvalidSignature,
        Reason::BadSignature,
    );

    let api: Api<ImagePosture> = Api::all(w.api.admin());
    let edit = json!({ "status": { "posture": "signed", "signer": "mallory@example.com" } });
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..PatchParams::default()
    };
    api.patch_status(&id.resource_name(), &params, &Patch::Merge(&edit))
        .await
        .expect("the editor's merge patch");
    assert_eq!(
        w.status(&id).await.signer.as_deref(),
        Some("mallory@example.com")
    );

    w.reset_counters();
    let r = w.pass(after(t0, Duration::from_secs(60))).await;
    assert_eq!(r.errors, 0, "{r:#?}");
    let s = w.status(&id).await;
    assert_posture(&s, Posture::InvalidSignature, Reason::BadSignature);
    assert_eq!(s.signer, None, "the foreign signer survived: {s:#?}");
    let cr = w.api.image_posture(&id.resource_name()).await.unwrap();
    for entry in cr["metadata"]["managedFields"].as_array().unwrap() {
        let manager = entry["manager"].as_str().unwrap_or_default();
        if manager.starts_with("imageposture-") {
            continue;
        }
        let status = &entry["fieldsV1"]["f:status"];
        for f in imageposture::model::fields::VERDICT_FIELDS {
            assert!(
                status.get(format!("f:{f}")).is_none(),
                "{manager} still owns {f}: {cr:#}"
            );
        }
    }
    let restored = w.writes_to_imagepostures();
    assert!(
        restored <= 3,
        "{restored} writes to restore: {:#?}",
        w.api.writes()
    );

    // And then quiet: the next passes (each what a watch event would trigger) write nothing.
    w.reset_counters();
    for n in 2..=5 {
        let r = w.pass(after(t0, Duration::from_secs(60 * n))).await;
        assert_eq!(r.api_writes(), 0, "pass {n}: {r:#?}");
    }
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
}

/// A pod whose image is given by tag and not pulled yet: after a restart within the TTL the
/// tag is resolved again (one HEAD), and since it agrees with the stored resource nothing is
/// written — before the resolution the resource is not taken for unused either.
#[tokio::test]
async fn restart_within_ttl_with_a_tag_not_pulled_writes_nothing() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("restart-tag").await;
    let tag_ref = format!("{}:v1", id.repo_path());
    w.init_pods(&[pod("a", "starting", &[pending(&tag_ref)])])
        .await;
    let t0 = Utc::now();
    w.pass(t0).await;
    w.op.sweeper.tags().settled().await;
    let r = w.pass(after(t0, Duration::from_secs(1))).await;
    assert_eq!((r.created, r.errors), (1, 0), "{r:#?}");
    assert_signed(&w.status(&id).await);

    let restarted = w.new_operator(config()).await;
    w.reset_counters();
    let t1 = after(t0, Duration::from_secs(120));
    let r = w.pass_with(&restarted, t1).await;
    assert_eq!((r.unresolved, r.api_writes()), (1, 0), "{r:#?}");
    restarted.sweeper.tags().settled().await;
    let r = w
        .pass_with(&restarted, after(t1, Duration::from_secs(1)))
        .await;
    assert_eq!(
        (r.unresolved, r.images, r.api_writes()),
        (0, 1, 0),
        "{r:#?}"
    );
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    let requests = w.proxy.requests();
    let resolve = format!("/v2/{}/manifests/v1", id.repository);
    assert!(
        requests
            .iter()
            .all(|q| q.method == "HEAD" && q.path == resolve),
        "{requests:#?}"
    );
}

/// A container whose runtime reports a bare config digest that nothing behind the pod's tag has
/// (the tag moved, or the image never came from there): its own resource, `checking` /
/// `DigestUnknown` naming the tag, never verified (no signature lookup), and left alone after.
#[tokio::test]
async fn an_untied_config_digest_is_checking_digest_unknown() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let id = w.signed_image("untied").await;
    let tag_ref = format!("{}:v1", id.repo_path());
    let config = "sha256:00000000000000000000000000000000000000000000000000000000000000aa";
    let ctr = Ctr {
        image: tag_ref.clone(),
        image_id: config.into(),
    };
    w.init_pods(&[pod("a", "loaded", &[ctr])]).await;
    let t0 = Utc::now();
    w.pass(t0).await;
    w.op.sweeper.tags().settled().await;
    w.reset_counters();
    let r = w.pass(after(t0, Duration::from_secs(1))).await;
    assert_eq!(
        (r.inventory.untied, r.created, r.errors),
        (1, 1, 0),
        "{r:#?}"
    );
    let crs = w.api.image_postures().await;
    assert_eq!(crs.len(), 1, "{crs:#?}");
    let cr: ImagePosture = serde_json::from_value(crs[0].clone()).unwrap();
    assert_eq!(
        cr.spec.untied,
        Some(imageposture::model::crd::UntiedKind::Config),
        "{cr:#?}"
    );
    assert_eq!(cr.spec.digest, config);
    let s = cr.status.clone().unwrap();
    assert_posture(&s, Posture::Checking, Reason::DigestUnknown);
    assert!(s.message.contains("tag \"v1\" now points to"), "{s:#?}");
    assert_eq!(s.signer, None);
    assert_eq!(s.usage.unwrap().pods, 1);
    assert_eq!(
        cr.metadata.labels.unwrap()["imageposture.io/posture"],
        "checking"
    );
    assert!(
        !w.proxy.requests().iter().any(|q| q.path.contains(".sig")),
        "an untied digest is never verified: {:#?}",
        w.proxy.requests()
    );

    // Nothing changed: nothing written, nothing asked.
    w.reset_counters();
    let r = w.pass(after(t0, Duration::from_secs(60))).await;
    assert_eq!(r.api_writes(), 0, "{r:#?}");
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());
    assert!(w.proxy.requests().is_empty(), "{:#?}", w.proxy.requests());
}

// ---- the first pages of the pod list -------------------------------------------------------

/// While the first pod list is still arriving, a pass over the pods listed so far creates the
/// resources of images not recorded yet, and nothing else: an existing resource whose other
/// users are not listed yet keeps its usage, and a resource no listed pod uses is not counted
/// unused.
#[tokio::test]
async fn the_first_pages_create_and_touch_nothing_else() {
    let Some(mut w) = World::new().await else {
        return;
    };
    let (a, b, c) = (
        w.unsigned_image("page-a").await,
        w.unsigned_image("page-b").await,
        w.unsigned_image("page-c").await,
    );
    let pa = pod("a", "pa", &[pinned(&a)]);
    let pa2 = pod("b", "pa2", &[pinned(&a)]);
    let pc = pod("a", "pc", &[pinned(&c)]);
    w.init_pods(&[pa.clone(), pa2.clone(), pc.clone()]).await;
    let t0 = Utc::now();
    w.pass(t0).await;
    assert_eq!(w.status(&a).await.usage.unwrap().pods, 2);
    // A restart: the first page lists only `pa` (a's other pod and c's pod come later) and a
    // new image's pod.
    let pb = pod("a", "pb", &[pinned(&b)]);
    let listed = [pa.clone(), pb.clone()];
    let inv = imageposture::operator::inventory::Inventory::from_pods(&listed, &Default::default());
    let op = w.new_operator(config()).await;
    w.reset_counters();
    let existing = harness::list(&w.api.client()).await;
    let r = op.sweeper.create_listed(inv, &existing, t0).await;
    assert_eq!((r.created, r.deleted, r.errors), (1, 0, 0), "{r:#?}");
    assert!(
        w.cr(&b).await.is_some(),
        "the new image's resource is created"
    );
    assert_eq!(
        w.status(&a).await.usage.unwrap().pods,
        2,
        "an existing resource's usage is not lowered from a partial list"
    );
    assert_eq!(
        w.status(&c).await.usage.unwrap().pods,
        1,
        "nor marked unused"
    );
    assert!(
        w.api
            .writes()
            .iter()
            .all(|wr| wr.path.contains(&b.resource_name())),
        "only the new resource is written: {:#?}",
        w.api.writes()
    );
    assert!(
        w.proxy.requests().is_empty(),
        "no registry on the inventory's path"
    );
}
