//! Signer drift against the real kube-apiserver (tests/support/kube): the SignerBaseline CRD installed
//! from `crds/`, the operator's client bound to `config/rbac`, both operator loops driven with
//! a test clock (tests/support/harness) and then the baseline loop ([`Baseliner::pass`]) over the
//! ImagePostures and SignerBaselines as the API server holds them. Images live in a real
//! registry behind a counting proxy; keyless signatures come from the test Fulcio-style CA,
//! whose CI certificates carry Fulcio's extensions (tests/support/pki.rs `Ci`).

#[path = "support/harness/mod.rs"]
mod harness;
#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::sync::Arc;

use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ::kube::runtime::events::{Recorder, Reporter};
use chrono::{DateTime, Utc};
use harness::Operator;
use imageposture::core::image::ImageId;
use imageposture::core::posture::Posture;
use imageposture::metrics::Metrics;
use imageposture::model::baseline::{DriftKind, Mode, SignerBaseline};
use imageposture::model::crd::{ImagePosture, ImagePostureStatus};
use imageposture::model::naming::ResourceName as _;
use imageposture::model::policy_report::{self, Use};
use imageposture::operator::apply::Writer;
use imageposture::operator::baseline::{Baseliner, PassReport};
use imageposture::operator::policy_reports;
use k8s_openapi::api::core::v1::Pod;
use kube::cluster::Cluster;
use serde_json::{json, Value};
use support::cosign;
use support::pki::{Ci, Identity, Signer};
use support::proxy::Proxy;
use support::{unique_repo, via, TestEnv};

struct World {
    env: TestEnv,
    proxy: Proxy,
    api: Cluster,
    op: Operator,
    baseliner: Baseliner,
    metrics: Arc<Metrics>,
    /// The one repository the images of a test belong to (as pushed, not through the proxy).
    repo: String,
    pods: Vec<Pod>,
}

fn baseliner(client: &::kube::Client, metrics: Arc<Metrics>) -> Baseliner {
    Baseliner::new(
        Writer::new(Api::all(client.clone())),
        Api::all(client.clone()),
        Recorder::new(
            client.clone(),
            Reporter {
                controller: "imageposture".into(),
                instance: None,
            },
        ),
        metrics,
    )
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn pod(name: &str, id: &ImageId) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "namespace": "prod", "name": name, "uid": format!("uid-{name}") },
        "spec": { "containers": [{ "name": "c", "image": id.key() }] },
        "status": {
            "phase": "Running",
            "containerStatuses": [{ "name": "c", "image": id.key(), "imageID": id.key(),
                                    "ready": true, "restartCount": 0 }],
        },
    }))
    .expect("pod JSON")
}

impl World {
    async fn new(name: &str) -> Option<World> {
        let api = Cluster::start().await?;
        let env = TestEnv::new();
        let proxy = Proxy::start(&env.registry.host).await;
        let verifier = env.verifier(env.config(&[&proxy.host])).await;
        let op = Operator::new(&api.client(), verifier, harness::Config::default()).await;
        let metrics = Arc::new(Metrics::new());
        Some(World {
            baseliner: baseliner(&api.client(), metrics.clone()),
            metrics,
            env,
            proxy,
            api,
            op,
            repo: unique_repo(name),
            pods: Vec::new(),
        })
    }

    /// The repository as the ImagePostures name it (through the proxy).
    fn repository(&self) -> String {
        format!("{}/{}", self.proxy.host, self.repo)
    }

    async fn image(&self, tag: &str) -> ImageId {
        self.env.oci.push_image(&self.repo, tag).await.id
    }

    /// A new image of the repository signed by a CI identity.
    async fn ci_image(&self, tag: &str, ci: &Ci) -> ImageId {
        let id = self.image(tag).await;
        self.env.sign_ci(&id, ci).await;
        via(&id, &self.proxy.host)
    }

    async fn keyless_image(&self, tag: &str, identity: &Identity) -> ImageId {
        let id = self.image(tag).await;
        self.env.sign_keyless(&id, identity).await;
        via(&id, &self.proxy.host)
    }

    /// Signed with a key no one configured (named by its fingerprint), logged in Rekor.
    async fn key_image(&self, tag: &str) -> ImageId {
        let id = self.image(tag).await;
        let layer = cosign::legacy_layer(
            &id,
            &Signer::Key(&self.env.pki.key),
            Some(&self.env.pki.rekor),
            cosign::Spoil::None,
        );
        self.env
            .oci
            .push_sig(&id.repository, &id.digest, &[layer])
            .await;
        via(&id, &self.proxy.host)
    }

    async fn unsigned_image(&self, tag: &str) -> ImageId {
        via(&self.image(tag).await, &self.proxy.host)
    }

    /// Runs `id` in a new pod.
    async fn run(&mut self, id: &ImageId) {
        let p = pod(&format!("p{}", self.pods.len()), id);
        self.api.put_pods(std::slice::from_ref(&p)).await;
        self.pods.push(p);
    }

    /// Both operator loops (inventory, verification), then the baseline loop.
    async fn pass(&self) -> PassReport {
        let pods: Vec<Arc<Pod>> = self.api.pods().await.into_iter().map(Arc::new).collect();
        let r = self.op.pass(&self.api.client(), &pods, now()).await;
        assert_eq!(r.errors, 0, "{r:?}");
        self.baseline_pass().await
    }

    /// The baseline loop alone.
    async fn baseline_pass(&self) -> PassReport {
        self.baseline_pass_with(&self.baseliner).await
    }

    async fn baseline_pass_with(&self, b: &Baseliner) -> PassReport {
        let postures = harness::list(&self.api.client()).await;
        let baselines = self.baselines().await;
        let r = b
            .pass(
                &postures,
                &baselines.into_iter().map(Arc::new).collect::<Vec<_>>(),
                now(),
            )
            .await;
        assert_eq!(r.errors, 0, "{r:?}");
        r
    }

    async fn baselines(&self) -> Vec<SignerBaseline> {
        Api::<SignerBaseline>::all(self.api.client())
            .list(&ListParams::default())
            .await
            .expect("the operator lists SignerBaselines")
            .items
    }

    async fn baseline(&self) -> SignerBaseline {
        let mut all: Vec<SignerBaseline> = self
            .baselines()
            .await
            .into_iter()
            .filter(|b| b.spec.repository == self.repository())
            .collect();
        assert_eq!(all.len(), 1, "{all:#?}");
        all.remove(0)
    }

    async fn status(&self, id: &ImageId) -> ImagePostureStatus {
        let v = self
            .api
            .image_posture(&id.resource_name())
            .await
            .unwrap_or_else(|| panic!("no ImagePosture for {id}"));
        let cr: ImagePosture = serde_json::from_value(v).expect("ImagePosture");
        cr.status.expect("status")
    }

    async fn drift(&self, id: &ImageId) -> Option<DriftKind> {
        self.status(id).await.drift.map(|d| d.kind)
    }

    /// `SignerDrift` Event notes, oldest first.
    async fn drift_events(&self) -> Vec<String> {
        self.api
            .events()
            .await
            .iter()
            .filter(|e| e["reason"] == "SignerDrift")
            .map(|e| {
                assert_eq!(e["type"], "Warning");
                e["note"].as_str().unwrap_or_default().to_string()
            })
            .collect()
    }

    fn metric(&self, kind: &str) -> i64 {
        let text = self.metrics.encode();
        let needle = format!("imageposture_drift_images{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// What `kubectl get` shows: the server-side Table of a resource (its printer columns).
    async fn table(&self, plural: &str) -> (Vec<String>, Vec<Vec<Value>>) {
        let req = http::Request::get(format!("/apis/imageposture.io/v1alpha1/{plural}"))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap();
        let text = self.api.admin().request_text(req).await.expect("table");
        let t: Value = serde_json::from_str(&text).unwrap();
        let columns = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        let rows = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["cells"].as_array().unwrap().clone())
            .collect();
        (columns, rows)
    }

    /// A person edits the baseline's spec (as admin, `kubectl edit` style merge patch).
    async fn edit_spec(&self, name: &str, spec: Value) {
        Api::<SignerBaseline>::all(self.api.admin())
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": spec })),
            )
            .await
            .expect("edit the SignerBaseline");
    }
}

fn release(git_ref: &str) -> Ci {
    Ci::github("acme/app", "release.yml", git_ref)
}

const RELEASE_WORKFLOW: &str = "https://github.com/acme/app/.github/workflows/release.yml";

/// First signed image → a learned baseline with its identity (and the certificate's facts in
/// the ImagePosture); the next release → no drift; four departing signers → `SignerChanged`,
/// Events naming old and new, the metric; a person accepts one → cleared with no registry
/// request; a fresh operator (restart) rewrites nothing; the baseline deleted → learned again.
#[tokio::test]
async fn learned_on_first_use_and_departures_drift() {
    let Some(mut w) = World::new("drift").await else {
        return;
    };
    let v1 = w.ci_image("v1.4.2", &release("refs/tags/v1.4.2")).await;
    w.run(&v1).await;
    let r = w.pass().await;
    assert_eq!(r.created, 1, "{r:?}");

    // The certificate's facts are kept with the signature.
    let s = w.status(&v1).await;
    assert_eq!(s.posture, Some(Posture::Signed));
    let build = s.signatures[0].build.clone().expect("build facts");
    assert_eq!(
        build.source_repository.as_deref(),
        Some("https://github.com/acme/app")
    );
    assert_eq!(build.source_ref.as_deref(), Some("refs/tags/v1.4.2"));
    assert_eq!(build.trigger.as_deref(), Some("push"));
    assert_eq!(
        build.run_url.as_deref(),
        Some("https://github.com/acme/app/actions/runs/1536140711/attempts/1")
    );
    assert_eq!(
        build.build_signer_uri.as_deref(),
        Some(format!("{RELEASE_WORKFLOW}@refs/tags/v1.4.2").as_str())
    );
    assert_eq!(s.drift, None);

    // The learned baseline: the workflow without its ref, the repository, the ref kind.
    let b = w.baseline().await;
    assert_eq!(b.spec.mode, Mode::Learn);
    assert_eq!(b.spec.identities.len(), 1, "{b:#?}");
    let id = &b.spec.identities[0];
    assert_eq!(id.subject.as_deref(), Some(RELEASE_WORKFLOW));
    assert_eq!(
        id.issuer.as_deref(),
        Some("https://token.actions.githubusercontent.com")
    );
    assert_eq!(
        id.source_repository.as_deref(),
        Some("https://github.com/acme/app")
    );
    let st = b.status.clone().expect("baseline status");
    assert_eq!(st.learned_from, vec![v1.digest.clone()]);
    assert_eq!(st.identity_count, 1);
    // The operator's create is the only spec write: owned by its field manager, by POST.
    let managers: Vec<(String, String)> = b
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("imageposture-drift".into(), "Update".into())),
        "{managers:?}"
    );

    // The next release: same workflow, new tag → no drift.
    let v2 = w.ci_image("v1.5.0", &release("refs/tags/v1.5.0")).await;
    w.run(&v2).await;
    let r = w.pass().await;
    assert_eq!(r.created, 0);
    assert_eq!(w.drift(&v2).await, None);
    let st = w.baseline().await.status.unwrap();
    assert_eq!(st.observed.len(), 1, "{st:#?}");
    assert_eq!(st.observed[0].digests, 2);
    assert!(st.observed[0].accepted);
    assert_eq!(st.drifting_count, 0);

    // Four departures.
    let nightly = w
        .ci_image(
            "nightly",
            &Ci::github("acme/app", "nightly.yml", "refs/tags/v1.5.1"),
        )
        .await;
    let fork = w
        .ci_image(
            "fork",
            &Ci::github("evil/fork", "release.yml", "refs/tags/v1.5.1"),
        )
        .await;
    let email = w.keyless_image("email", &Identity::google()).await;
    let key = w.key_image("key").await;
    for id in [&nightly, &fork, &email, &key] {
        w.run(id).await;
    }
    let r = w.pass().await;
    assert_eq!(r.events, 4, "{r:?}");
    for id in [&nightly, &fork, &email, &key] {
        assert_eq!(w.drift(id).await, Some(DriftKind::SignerChanged), "{id}");
    }
    assert_eq!(w.drift(&v1).await, None);
    assert_eq!(w.metric("SignerChanged"), 4);
    assert_eq!(w.metric("SignatureDropped"), 0);
    let notes = w.drift_events().await;
    assert_eq!(notes.len(), 4, "{notes:#?}");
    for n in &notes {
        assert!(n.contains(RELEASE_WORKFLOW), "the old identity: {n}");
    }
    assert!(
        notes.iter().any(|n| n.contains("nightly.yml")),
        "{notes:#?}"
    );
    assert!(notes.iter().any(|n| n.contains("evil/fork")), "{notes:#?}");
    assert!(
        notes.iter().any(|n| n.contains("dev@example.com")),
        "{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n.contains(&w.env.pki.key.fingerprint)),
        "{notes:#?}"
    );
    let d = w.status(&email).await.drift.unwrap();
    assert_eq!(
        d.signer.as_deref(),
        Some("dev@example.com (issuer https://accounts.google.com)")
    );
    let st = w.baseline().await.status.unwrap();
    assert_eq!(st.drifting_count, 4);
    assert_eq!(st.observed.len(), 5);

    // `kubectl get signerbaselines` and the DRIFT column of `kubectl get ipost`.
    let (columns, rows) = w.table("signerbaselines").await;
    assert_eq!(
        columns,
        [
            "Name",
            "Repository",
            "Mode",
            "Identities",
            "Drifting",
            "Age"
        ]
    );
    let row = rows
        .iter()
        .find(|r| r[1] == w.repository().as_str())
        .expect("the baseline's row");
    assert_eq!(
        (&row[2], &row[3], &row[4]),
        (&json!("learn"), &json!(1), &json!(4))
    );
    let (columns, rows) = w.table("imagepostures").await;
    let drift_col = columns.iter().position(|c| c == "Drift").expect("DRIFT");
    let image_col = columns.iter().position(|c| c == "Image").unwrap();
    let drift_of = |id: &ImageId| {
        rows.iter()
            .find(|r| r[image_col] == id.key().as_str())
            .map(|r| r[drift_col].clone())
            .unwrap()
    };
    assert_eq!(drift_of(&email), "SignerChanged");
    assert_eq!(drift_of(&v1), Value::Null, "no drift: an empty cell");

    // `--policy-reports`: the reports the operator would write from these ImagePostures fail
    // the departing images under rule `signer-drift`.
    let postures = harness::list(&w.api.client()).await;
    let uses: Vec<Use> = w
        .pods
        .iter()
        .map(|p| Use {
            namespace: "prod".into(),
            owner: policy_reports::owner_of(p),
            image: p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap(),
        })
        .collect();
    let reports = policy_report::reports(&uses, &policy_reports::verdicts(&postures));
    let failed: Vec<&str> = reports[0]
        .results
        .iter()
        .filter(|r| r.result == policy_report::Outcome::Fail)
        .map(|r| {
            assert_eq!(r.rule, policy_report::RULE_SIGNER_DRIFT);
            r.properties["image"].as_str()
        })
        .collect();
    assert_eq!(failed.len(), 4, "{:#?}", reports[0].results);
    assert!(failed.contains(&email.key().as_str()));
    assert_eq!(reports[0].summary.pass, 2);

    // Nothing changed: nothing written, no Event repeated.
    w.api.reset_counters();
    let r = w.baseline_pass().await;
    assert_eq!(
        (r.drift_writes, r.baseline_writes, r.events),
        (0, 0, 0),
        "{r:?}"
    );

    // A person accepts the email signer: cleared by the baseline loop alone, with no registry
    // request.
    let name = w.baseline().await.metadata.name.unwrap();
    let mut ids: Vec<Value> = w
        .baseline()
        .await
        .spec
        .identities
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    ids.push(json!({ "issuer": "https://accounts.google.com", "subject": "dev@example.com" }));
    w.edit_spec(&name, json!({ "identities": ids })).await;
    w.proxy.reset_requests();
    let r = w.baseline_pass().await;
    assert!(r.drift_writes >= 1, "{r:?}");
    assert_eq!(w.drift(&email).await, None);
    assert_eq!(w.drift(&key).await, Some(DriftKind::SignerChanged));
    assert_eq!(w.metric("SignerChanged"), 3);
    assert!(
        w.proxy.requests().is_empty(),
        "registry requests: {:?}",
        w.proxy.requests()
    );
    // The operator left the person's spec alone.
    assert_eq!(w.baseline().await.spec.identities.len(), 2);

    // Restart: a fresh baseline loop (and a fresh operator) rewrite nothing, relearn nothing.
    w.api.reset_counters();
    let fresh = baseliner(&w.api.client(), Arc::new(Metrics::new()));
    let r = w.baseline_pass_with(&fresh).await;
    assert_eq!(
        (r.created, r.drift_writes, r.baseline_writes, r.events),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert!(
        w.api.writes().is_empty(),
        "writes after a restart: {:#?}",
        w.api.writes()
    );

    // A person deletes the baseline: learned again from what runs now (every signer running
    // is accepted: the drifts clear). Documented in docs/signer-drift.md.
    Api::<SignerBaseline>::all(w.api.admin())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    let r = w.baseline_pass().await;
    assert_eq!(r.created, 1, "{r:?}");
    let b = w.baseline().await;
    assert_eq!(b.spec.identities.len(), 5, "{b:#?}");
    for id in [&nightly, &fork, &email, &key] {
        assert_eq!(w.drift(id).await, None);
    }
}

/// `pinned`: a person writes the baseline before anything runs; nothing is learned; the
/// accepted workflow from a branch is `SourceRefChanged`; an unsigned digest is
/// `SignatureDropped`; another signer `SignerChanged`.
#[tokio::test]
async fn pinned_baseline_and_dropped_signatures() {
    let Some(mut w) = World::new("pinned").await else {
        return;
    };
    let pinned: SignerBaseline = serde_json::from_value(json!({
        "apiVersion": "imageposture.io/v1alpha1",
        "kind": "SignerBaseline",
        "metadata": { "name": "acme-app" },
        "spec": {
            "repository": w.repository(),
            "mode": "pinned",
            "identities": [{
                "issuer": "https://token.actions.githubusercontent.com",
                "subject": format!("{RELEASE_WORKFLOW}@refs/tags/v1.0.0"),
                "sourceRepository": "https://github.com/acme/app",
            }],
        },
    }))
    .unwrap();
    Api::<SignerBaseline>::all(w.api.admin())
        .create(&PostParams::default(), &pinned)
        .await
        .expect("a person creates the baseline");

    let tag = w.ci_image("v2", &release("refs/tags/v2.0.0")).await;
    let branch = w.ci_image("main", &release("refs/heads/main")).await;
    let unsigned = w.unsigned_image("plain").await;
    let other = w.keyless_image("other", &Identity::google()).await;
    for id in [&tag, &branch, &unsigned, &other] {
        w.run(id).await;
    }
    let r = w.pass().await;
    assert_eq!(r.created, 0, "{r:?}");
    assert_eq!(w.drift(&tag).await, None);
    assert_eq!(w.drift(&branch).await, Some(DriftKind::SourceRefChanged));
    assert_eq!(w.drift(&unsigned).await, Some(DriftKind::SignatureDropped));
    assert_eq!(w.drift(&other).await, Some(DriftKind::SignerChanged));
    let d = w.status(&branch).await.drift.unwrap();
    assert_eq!(d.source_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(d.baseline, "acme-app");
    assert_eq!(w.metric("SourceRefChanged"), 1);
    assert_eq!(w.metric("SignatureDropped"), 1);

    let b = w.baseline().await;
    assert_eq!(b.spec.mode, Mode::Pinned);
    assert_eq!(b.spec.identities.len(), 1, "nothing learned");
    let st = b.status.unwrap();
    assert_eq!(st.drifting_count, 3);
    assert!(st.learned_from.is_empty());
}

/// Two identities present at install are both learned; hostile text in the certificate's
/// extensions is bounded in the status and escaped in the Event.
#[tokio::test]
async fn two_signers_at_install_and_hostile_extensions() {
    let Some(mut w) = World::new("two").await else {
        return;
    };
    let a = w.ci_image("a", &release("refs/tags/v1")).await;
    let b = w
        .ci_image("b", &Ci::gitlab("acme/app", "refs/tags/v1"))
        .await;
    w.run(&a).await;
    w.run(&b).await;
    let r = w.pass().await;
    assert_eq!(r.created, 1, "{r:?}");
    let base = w.baseline().await;
    let subjects: Vec<&str> = base
        .spec
        .identities
        .iter()
        .filter_map(|i| i.subject.as_deref())
        .collect();
    assert_eq!(subjects.len(), 2, "{base:#?}");
    assert!(subjects.contains(&RELEASE_WORKFLOW));
    assert!(subjects.contains(&"https://gitlab.com/acme/app//.gitlab-ci.yml"));
    let mut learned_from = base.status.unwrap().learned_from;
    learned_from.sort();
    let mut want = vec![a.digest.clone(), b.digest.clone()];
    want.sort();
    assert_eq!(learned_from, want);
    assert_eq!(w.drift(&a).await, None);
    assert_eq!(w.drift(&b).await, None);

    // The learned release workflow, built from a branch where only tags were seen: a warning.
    let branch = w.ci_image("main", &release("refs/heads/main")).await;
    w.run(&branch).await;
    let r = w.pass().await;
    assert_eq!(r.events, 1, "{r:?}");
    let d = w.status(&branch).await.drift.expect("drift");
    assert_eq!(d.kind, DriftKind::SourceRefChanged);
    assert_eq!(d.source_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(w.metric("SourceRefChanged"), 1);
    assert_eq!(w.metric("SignerChanged"), 0);

    // A hostile certificate: bidi override, ANSI escape and 5000 characters in its extensions.
    let mut evil = Ci::github("acme/app", "evil.yml", "refs/tags/v9");
    let long = format!(
        "https://github.com/acme/app/.github/workflows/\u{202e}lmy.esaeler\u{1b}[31m{}@refs/tags/v9",
        "x".repeat(5000)
    );
    evil.overrides = vec![
        (9, long),
        (20, "push\u{1b}]8;;https://evil.example\u{7}".into()),
        (21, format!("https://evil.example/{}", "r".repeat(5000))),
    ];
    let e = w.ci_image("evil", &evil).await;
    w.run(&e).await;
    w.pass().await;
    let s = w.status(&e).await;
    assert_eq!(s.posture, Some(Posture::Signed));
    let build = s.signatures[0].build.clone().unwrap();
    for text in [&build.build_signer_uri, &build.trigger, &build.run_url] {
        let t = text.as_deref().unwrap();
        assert!(t.len() <= 259, "{} bytes", t.len());
        assert!(!t.contains('\u{1b}'), "{t:?}");
    }
    let d = s.drift.expect("drift");
    assert_eq!(d.kind, DriftKind::SignerChanged);
    assert!(d.signer.as_deref().unwrap().len() <= 259);
    assert!(d.message.len() <= 515);
    let note = w
        .drift_events()
        .await
        .into_iter()
        .find(|n| n.contains("evil.yml") || n.contains("\\u{202e}"))
        .expect("the Event");
    assert!(note.contains("\\u{202e}"), "escaped: {note}");
    assert!(!note.contains('\u{202e}'), "{note}");
    assert!(note.len() <= 1027, "{} bytes", note.len());
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `observe` and `scan` with `--baseline FILE` judge drift with no cluster: the same
/// judgement as the operator's loop, against the SignerBaselines in the file.
#[tokio::test]
async fn observe_and_scan_judge_drift_from_a_baseline_file() {
    let env = TestEnv::new();
    let repo = unique_repo("offline");
    let usual = env.oci.push_image(&repo, "v1").await.id;
    env.sign_ci(&usual, &release("refs/tags/v1.0.0")).await;
    let other = env.oci.push_image(&repo, "v2").await.id;
    env.sign_keyless(&other, &Identity::google()).await;
    let file = env.dir.path().join("baselines.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: imageposture.io/v1alpha1\nkind: SignerBaseline\nmetadata:\n  name: app\n\
             spec:\n  repository: {}\n  mode: pinned\n  identities:\n  \
             - issuer: https://token.actions.githubusercontent.com\n    \
             subject: {RELEASE_WORKFLOW}\n",
            usual.repo_path()
        ),
    )
    .unwrap();
    let common = [
        "--baseline",
        file.to_str().unwrap(),
        "--trusted-root",
        env.trusted_root.to_str().unwrap(),
        "--insecure-registry",
        &env.registry.host,
    ];

    let mut args = vec!["observe", "-o", "json"];
    args.extend(common);
    let (usual_key, other_key) = (usual.key(), other.key());
    args.extend([usual_key.as_str(), other_key.as_str()]);
    let (ok, out, err) = cli(&args);
    assert!(ok, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["posture"], "signed");
    assert!(rows[0].get("drift").is_none(), "{out}");
    assert_eq!(rows[1]["drift"]["kind"], "SignerChanged", "{out}");
    assert_eq!(rows[1]["drift"]["baseline"], "app");

    let mut args = vec!["observe"];
    args.extend(common);
    args.push(other_key.as_str());
    let (ok, out, err) = cli(&args);
    assert!(ok, "{err}");
    assert!(out.contains("DRIFT SignerChanged"), "{out}");

    // scan: pods as `kubectl get pods -o json` lists them.
    let pods = json!({"apiVersion": "v1", "kind": "List", "items": [
        pod("a", &usual), pod("b", &other)]});
    let pods_file = env.dir.path().join("pods.json");
    std::fs::write(&pods_file, pods.to_string()).unwrap();
    let mut args = vec!["scan", "-o", "json", "-f", pods_file.to_str().unwrap()];
    args.extend(common);
    let (ok, out, err) = cli(&args);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let drift_of = |id: &ImageId| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["spec"]["image"] == id.key())
            .map(|o| o["status"]["drift"]["kind"].clone())
            .unwrap()
    };
    assert_eq!(drift_of(&usual), Value::Null, "{out}");
    assert_eq!(drift_of(&other), "SignerChanged", "{out}");
}

/// The operator process, killed when the test ends.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The real `imageposture run` process against the real API server, as its ServiceAccount
/// (RBAC from `config/rbac`, enforced by the real authorizer): it learns the baseline, raises
/// `SignerChanged` with its Event when another signer's image starts, and clears it when a
/// person accepts that signer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_process_learns_drifts_and_clears() {
    let Some(mut w) = World::new("process").await else {
        return;
    };
    let v1 = w.ci_image("v1", &release("refs/tags/v1.0.0")).await;
    w.run(&v1).await;
    let config = w.api.kube.write_kubeconfig(Some(&w.api.token));
    let _operator = Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args(["run", "--install-crd=false", "--leader-election=false"])
            .args(["--debounce", "100ms", "--resync", "500ms"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--trusted-root", w.env.trusted_root.to_str().unwrap()])
            .args(["--insecure-registry", &w.proxy.host])
            .env("KUBECONFIG", &config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the operator starts"),
    );
    let repository = w.repository();
    let learned = eventually("the learned SignerBaseline", async || {
        w.baselines()
            .await
            .into_iter()
            .find(|b| b.spec.repository == repository && b.status.is_some())
    })
    .await;
    assert_eq!(
        learned.spec.identities[0].subject.as_deref(),
        Some(RELEASE_WORKFLOW)
    );

    let other = w.keyless_image("other", &Identity::google()).await;
    w.run(&other).await;
    eventually("SignerChanged", async || {
        let v = w.api.image_posture(&other.resource_name()).await?;
        (v["status"]["drift"]["kind"] == "SignerChanged").then_some(())
    })
    .await;
    eventually("the SignerDrift Event", async || {
        let notes = w.drift_events().await;
        notes
            .iter()
            .any(|n| n.contains("dev@example.com") && n.contains(RELEASE_WORKFLOW))
            .then_some(())
    })
    .await;

    let name = learned.metadata.name.clone().unwrap();
    let mut ids: Vec<Value> = learned
        .spec
        .identities
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    ids.push(json!({ "issuer": "https://accounts.google.com", "subject": "dev@example.com" }));
    w.edit_spec(&name, json!({ "identities": ids })).await;
    eventually("the drift cleared", async || {
        let v = w.api.image_posture(&other.resource_name()).await?;
        v["status"].get("drift").is_none().then_some(())
    })
    .await;
    // The person's spec stands.
    assert_eq!(w.baseline().await.spec.identities.len(), 2);
}
