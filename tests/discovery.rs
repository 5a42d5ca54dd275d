//! Discovery against the real registry, with listings shaped as registries and tools really
//! write them: GitLab answering the fallback tag with the image itself, other artifacts beside
//! a signature, and more referrers than `--max-signatures`.

mod support;

use imageposture::core::posture::{Posture, Reason};
use imageposture::verify::Limits;
use serde_json::json;
use support::cosign::{Desc, Pushed, BUNDLE_V03, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use support::pki::{Identity, WORKFLOW_URI};
use support::{unique_repo, TestEnv};

/// An SBOM-like referrer of `img` (not a Sigstore bundle); returns its index entry, labelled
/// `artifact_type` (None: no label at all).
async fn other_referrer(
    env: &TestEnv,
    img: &Pushed,
    n: usize,
    artifact_type: Option<&str>,
) -> serde_json::Value {
    let repo = &img.id.repository;
    let empty = env.oci.push_blob(repo, OCI_EMPTY, b"{}").await;
    let sbom = env
        .oci
        .push_blob(
            repo,
            "application/spdx+json",
            format!("{{\"n\":{n}}}").as_bytes(),
        )
        .await;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": empty.json(), "layers": [sbom.json()], "subject": img.manifest.json(),
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let digest = Desc::of(OCI_MANIFEST, &body).digest;
    let mut entry = env
        .oci
        .put_manifest(repo, &digest, OCI_MANIFEST, &body)
        .await
        .json();
    if let Some(t) = artifact_type {
        entry["artifactType"] = json!(t);
    }
    entry
}

async fn put_index(env: &TestEnv, img: &Pushed, entries: Vec<serde_json::Value>) {
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
    env.oci
        .put_manifest(
            &img.id.repository,
            &img.id.referrers_tag(),
            OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        )
        .await;
}

/// GitLab answers `sha256-<hex>` with the image manifest itself: no referrers list, not an
/// error, not a signature (before, it read as a malformed referrers index: invalid-signature).
#[tokio::test]
async fn fallback_tag_answered_with_the_image_itself() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("gitlab"), "v1").await;
    let url = format!(
        "{}/v2/{}/manifests/{}",
        env.registry.base_url(),
        img.id.repository,
        img.id.digest
    );
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    env.oci
        .put_manifest(
            &img.id.repository,
            &img.id.referrers_tag(),
            OCI_MANIFEST,
            &body,
        )
        .await;
    let v = env.verifier(env.config(&[])).await.observe(&img.id).await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::NotSigned, Reason::NoSignature),
        "{v:#?}"
    );

    env.sign_keyless(&img.id, &Identity::github()).await;
    let v = env.verifier(env.config(&[])).await.observe(&img.id).await;
    assert_eq!(v.posture, Posture::Signed, "{v:#?}");
    assert_eq!(v.signer.as_deref(), Some(WORKFLOW_URI));
}

/// Other artifacts (unlabelled, empty-labelled, labelled) are examined and are not signatures.
#[tokio::test]
async fn other_referrers_are_not_signatures() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("sbom"), "v1").await;
    let entries = vec![
        other_referrer(&env, &img, 0, None).await,
        other_referrer(&env, &img, 1, Some(OCI_EMPTY)).await,
        other_referrer(&env, &img, 2, Some("application/spdx+json")).await,
    ];
    put_index(&env, &img, entries).await;
    let v = env.verifier(env.config(&[])).await.observe(&img.id).await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::NotSigned, Reason::NoSignature),
        "{v:#?}"
    );
    assert!(v.signatures.is_empty());
}

/// Many other artifacts listed first cannot push a labelled signature past the limit; the
/// ones left over are counted in the message.
#[tokio::test]
async fn labelled_signatures_are_examined_first() {
    let env = TestEnv::new();
    let img = env.oci.push_image(&unique_repo("crowded"), "v1").await;
    let signature = {
        // The bundle referrer as the harness pushes it, then listed last among six others.
        env.sign_bundle(&img).await;
        let index: serde_json::Value = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!(
                "{}/v2/{}/manifests/{}",
                env.registry.base_url(),
                img.id.repository,
                img.id.referrers_tag()
            ))
            .header("accept", OCI_INDEX)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        index["manifests"][0].clone()
    };
    assert_eq!(signature["artifactType"], BUNDLE_V03);
    let mut entries = Vec::new();
    for n in 0..6 {
        entries.push(other_referrer(&env, &img, n, None).await);
    }
    entries.push(signature);
    put_index(&env, &img, entries).await;
    let mut config = env.config(&[]);
    config.limits = Limits {
        max_signatures: 4,
        ..Limits::default()
    };
    let v = env.verifier(config).await.observe(&img.id).await;
    assert_eq!(v.posture, Posture::Signed, "{v:#?}");
    assert!(
        v.message.contains("3 more artifact(s) over the limit"),
        "{}",
        v.message
    );
}
