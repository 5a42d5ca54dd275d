//! `kubectl get ipost` as a person sees it: a few realistic ImagePostures, written by the real
//! inventory (`Sweeper`: spec, `shortDigest`, `status.tag`) and by the verifier's status
//! mapping (`verdict_fields`: `shortSigner`), in the real kube-apiserver of tests/support/kube; the table
//! is asked of the server as kubectl asks it (`Accept: application/json;as=Table;v=v1;
//! g=meta.k8s.io`) and printed as kubectl prints it (headers upper-case, the columns of its
//! tabwriter: at least 6 wide, 3 spaces of padding, `<none>` for an empty cell; the server
//! already turns dates into ages). The default columns must fit 120 characters; `-o wide`
//! (the priority-1 columns) carries the full image.
//!
//! `cargo test --test columns -- --nocapture` prints both tables: the README's sample is this
//! output.

#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::sync::Arc;

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::ResourceExt;
use chrono::{Duration, Utc};
use imageposture::cache::{Observer, ObserverConfig};
use imageposture::core::posture::{Posture, Reason, SignerType, Verdict};
use imageposture::model::baseline::FIELD_MANAGER_DRIFT;
use imageposture::model::crd::{self, ImagePosture, ImagePostureStatus};
use imageposture::model::fields::{FIELD_MANAGER_VERIFIER, LABEL_POSTURE, VERDICT_FIELDS};
use imageposture::operator::apply::Writer;
use imageposture::operator::inventory::sweep::{SweepConfig, Sweeper};
use imageposture::operator::inventory::tags::TagResolver;
use k8s_openapi::api::core::v1::Pod;
use kube::KubeApi;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::TestEnv;

const GITHUB: &str = "https://token.actions.githubusercontent.com";
const GOOGLE: &str = "https://accounts.google.com";

/// One image of the population: what pods name it by, how many pods, and its verdict.
struct Image {
    reference: &'static str,
    /// The repository the runtime reports in `imageID` (Docker Hub's long form for `nginx`).
    repository: &'static str,
    pods: usize,
    verdict: Verdict,
    verified_ago: Duration,
}

fn signed(signer: &str, issuer: Option<&str>, signer_type: SignerType) -> Verdict {
    Verdict {
        posture: Posture::Signed,
        reason: Reason::Verified,
        message: "1 of 1 signature artifact(s) verified".into(),
        signer: Some(signer.into()),
        issuer: issuer.map(Into::into),
        signer_type: Some(signer_type),
        signatures: vec![],
        artifact_digests: Default::default(),
        retry_after: None,
    }
}

fn resting(posture: Posture, reason: Reason, message: &str) -> Verdict {
    Verdict {
        posture,
        reason,
        message: message.into(),
        signer: None,
        issuer: None,
        signer_type: None,
        signatures: vec![],
        artifact_digests: Default::default(),
        retry_after: None,
    }
}

fn population() -> Vec<Image> {
    let minutes = Duration::minutes;
    vec![
        Image {
            reference: "ghcr.io/acme/app:v1.4.2",
            repository: "ghcr.io/acme/app",
            pods: 12,
            verdict: signed(
                "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.4.2",
                Some(GITHUB),
                SignerType::Keyless,
            ),
            verified_ago: minutes(4),
        },
        Image {
            reference: "ghcr.io/acme/app:v1.5.0",
            repository: "ghcr.io/acme/app",
            pods: 1,
            verdict: signed("dev@example.com", Some(GOOGLE), SignerType::Keyless),
            verified_ago: minutes(2),
        },
        Image {
            reference: "registry.k8s.io/kube-proxy:v1.37.2",
            repository: "registry.k8s.io/kube-proxy",
            pods: 3,
            verdict: signed(
                "krel-trust@k8s-releng-prod.iam.gserviceaccount.com",
                Some(GOOGLE),
                SignerType::Keyless,
            ),
            verified_ago: minutes(4),
        },
        Image {
            reference: "registry.example/worker:3.0",
            repository: "registry.example/worker",
            pods: 2,
            verdict: signed("release-key", None, SignerType::Key),
            verified_ago: minutes(4),
        },
        Image {
            reference: "nginx:1.27",
            repository: "docker.io/library/nginx",
            pods: 3,
            verdict: resting(
                Posture::NotSigned,
                Reason::NoSignature,
                "no signature artifacts",
            ),
            verified_ago: minutes(4),
        },
        Image {
            reference: "quay.io/team/tool:2.3",
            repository: "quay.io/team/tool",
            pods: 1,
            verdict: resting(
                Posture::InvalidSignature,
                Reason::BadSignature,
                "0 of 1 signature artifact(s) verified",
            ),
            verified_ago: minutes(3),
        },
        Image {
            reference: "registry.internal/api:main",
            repository: "registry.internal/api",
            pods: 2,
            verdict: Verdict::checking(
                Reason::RegistryUnreachable,
                "signature tag: unreachable: connection refused",
            ),
            verified_ago: Duration::zero(),
        },
    ]
}

/// A digest that looks like one, fixed per reference.
fn digest_of(reference: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(reference.as_bytes()))
    )
}

/// A running pod as the kubelet reports it: the reference it names, the digest it runs.
fn pod(ns: &str, name: &str, image: &Image) -> Arc<Pod> {
    let image_id = format!("{}@{}", image.repository, digest_of(image.reference));
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}")},
            "spec": {"containers": [{"name": "c", "image": image.reference}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "c", "image": image.reference, "imageID": image_id,
                    "ready": true, "restartCount": 0,
                }],
            },
        }))
        .expect("pod JSON"),
    )
}

async fn list(api: &Api<ImagePosture>) -> Vec<Arc<ImagePosture>> {
    let list = api.list(&Default::default()).await.expect("list");
    list.items.into_iter().map(Arc::new).collect()
}

/// The server's Table for every ImagePosture, as `kubectl get ipost` asks for it.
async fn table(client: &::kube::Client) -> Value {
    let request = http::Request::get("/apis/imageposture.io/v1alpha1/imagepostures")
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.expect("table");
    serde_json::from_str(&text).expect("Table JSON")
}

/// The table as kubectl prints it: columns of priority 0 (or all, for `-o wide`), headers
/// upper-case, `<none>` for an empty cell, cells aligned by Go's tabwriter as kubectl
/// configures it (minimum width 6, padding 3; the last cell of a line is not padded).
fn render(table: &Value, wide: bool) -> String {
    let columns = table["columnDefinitions"].as_array().expect("columns");
    let shown: Vec<usize> = (0..columns.len())
        .filter(|&i| wide || columns[i]["priority"].as_i64().unwrap_or(0) == 0)
        .collect();
    let mut lines: Vec<Vec<String>> = vec![shown
        .iter()
        .map(|&i| columns[i]["name"].as_str().unwrap().to_uppercase())
        .collect()];
    for row in table["rows"].as_array().expect("rows") {
        let cells = row["cells"].as_array().expect("cells");
        lines.push(
            shown
                .iter()
                .map(|&i| match &cells[i] {
                    Value::Null => "<none>".to_string(),
                    Value::String(s) if s.is_empty() => "<none>".to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    let width = |s: &str| s.chars().count();
    let last = shown.len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|c| lines.iter().map(|l| width(&l[c]) + 3).max().unwrap().max(6))
        .collect();
    let mut out = String::new();
    for line in &lines {
        for (c, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if c < last {
                out.push_str(&" ".repeat(widths[c] - width(cell)));
            }
        }
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_fits_a_terminal_and_wide_carries_the_image() {
    let Some(server) = KubeApi::start().await else {
        return;
    };
    server.install_crd().await;
    let client = server.admin();
    let api: Api<ImagePosture> = Api::all(client.clone());

    // The inventory writes the resources, their identity and the tags, as in the operator.
    let env = TestEnv::new();
    let verifier = env.verifier(env.config(&[])).await;
    let observer = Arc::new(Observer::new(Arc::new(verifier), ObserverConfig::default()));
    let writer = Writer::new(api.clone());
    let tags = TagResolver::new(observer, ObserverConfig::default().ttl);
    let sweeper = Sweeper::new(writer.clone(), tags, SweepConfig::default());
    let images = population();
    let mut pods = Vec::new();
    for (i, image) in images.iter().enumerate() {
        for p in 0..image.pods {
            let ns = if p % 3 == 2 { "staging" } else { "prod" };
            pods.push(pod(ns, &format!("app-{i}-{p}"), image));
        }
    }
    let now = Utc::now();
    let report = sweeper.sweep(&pods, &list(&api).await, now).await;
    assert_eq!(report.created, images.len(), "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");

    // The verifier's part, through the same status mapping and writer as the controller.
    let stored = list(&api).await;
    for image in &images {
        let digest = digest_of(image.reference);
        let cr = stored
            .iter()
            .find(|c| c.spec.digest == digest)
            .unwrap_or_else(|| panic!("no resource for {}", image.reference));
        let verified =
            (image.verdict.posture != Posture::Checking).then(|| now - image.verified_ago);
        let status = ImagePostureStatus::verdict_fields(
            &image.verdict,
            verified,
            verified,
            cr.status.as_ref(),
            now,
        );
        let name = cr.name_any();
        writer
            .sync_status(
                &name,
                Some(cr),
                VERDICT_FIELDS,
                serde_json::to_value(&status).unwrap(),
                FIELD_MANAGER_VERIFIER,
            )
            .await
            .expect("verdict");
        let label = json!({"metadata": {"name": name, "labels": {
            LABEL_POSTURE: image.verdict.posture.as_str(),
        }}});
        writer
            .apply(&name, label, FIELD_MANAGER_VERIFIER)
            .await
            .expect("posture label");
        if image.reference == "ghcr.io/acme/app:v1.5.0" {
            // What the baseline loop writes for a signer its repository has not accepted.
            let drift = json!({
                "apiVersion": "imageposture.io/v1alpha1", "kind": "ImagePosture",
                "status": {"drift": {
                    "kind": "SignerChanged",
                    "baseline": "ghcr-io-acme-app-3b1f0c9e2a",
                    "signer": format!("dev@example.com (issuer {GOOGLE})"),
                    "accepted": [format!(
                        "https://github.com/acme/app/.github/workflows/release.yml (issuer {GITHUB})"
                    )],
                    "message": "signed by dev@example.com; ghcr.io/acme/app accepts the release workflow",
                    "since": crd::rfc3339(now),
                }},
            });
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER_DRIFT),
                &Patch::Apply(drift),
            )
            .await
            .expect("drift");
        }
    }

    let table = table(&client).await;
    assert_eq!(table["kind"], "Table", "{table}");
    let default = render(&table, false);
    let wide = render(&table, true);
    println!("$ kubectl get ipost\n{default}");
    println!("$ kubectl get ipost -o wide\n{wide}");

    let widest = |t: &str| t.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(
        widest(&default) <= 120,
        "the default columns are {} wide:\n{default}",
        widest(&default)
    );
    let header: Vec<&str> = default.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "TAG", "DIGEST", "POSTURE", "SIGNER", "PODS"],
        "{default}"
    );
    // The rows carry what the operator wrote: tag, short digest, short signer, pods.
    let row = |t: &str, needle: &str| {
        t.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle}:\n{t}"))
            .to_string()
    };
    let app = row(&default, "acme/app/release.yml@v1.4.2");
    let short = &digest_of("ghcr.io/acme/app:v1.4.2")["sha256:".len()..][..12];
    for cell in ["v1.4.2", short, "signed", "12"] {
        assert!(app.split_whitespace().any(|c| c == cell), "{cell}: {app}");
    }
    let nginx = row(&default, "not-signed");
    assert!(nginx.contains(" 1.27 "), "{nginx}");
    assert!(nginx.contains("<none>"), "no signer: {nginx}");

    // `-o wide`: the full identity of every image, its issuer, reason, drift and ages.
    for image in &images {
        let full = format!("{}@{}", image.repository, digest_of(image.reference));
        assert!(wide.contains(&full), "{full} not in:\n{wide}");
    }
    let wide_header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    for column in ["DRIFT", "VERIFIED", "ISSUER", "REASON", "IMAGE", "AGE"] {
        assert!(wide_header.contains(&column), "{column}: {wide}");
    }
    assert!(
        row(&wide, "dev@example.com").contains("SignerChanged"),
        "{wide}"
    );
    assert!(
        row(&wide, "acme/app/release.yml").contains(GITHUB),
        "{wide}"
    );
}
