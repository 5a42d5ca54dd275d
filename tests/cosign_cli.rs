//! Artifacts made by the real `cosign` CLI (3.x, key-based, offline) in the real registry, and
//! imageposture's verdict beside `cosign verify --key`'s on each: both formats, attestations,
//! several signatures on one image, and the fallback-index entry cosign labels as empty.
//!
//! Distribution 2.8 has no referrers API, so cosign's new-format signatures land in the
//! `sha256-<hex>` fallback index: exactly the GHCR situation of issue 8. Without cosign
//! installed these tests are skipped with a note (they fail under `CI=true`).

mod support;

use imageposture::core::image::ImageId;
use imageposture::core::posture::{
    Posture, Reason, SignatureFormat, SignatureSource, SignerType, Verdict,
};
use serde_json::{json, Value};
use support::cosign::{Pushed, BUNDLE_V03, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};
use support::cosign_cli::{Cosign, KeyPair};
use support::{unique_repo, TestEnv};

/// imageposture's verdict on `id` with these `--trusted-key NAME=FILE`s.
async fn observe(env: &TestEnv, id: &ImageId, keys: &[(&str, &KeyPair)]) -> Verdict {
    let mut config = env.config(&[]);
    config.trusted_keys = keys
        .iter()
        .map(|(name, k)| (name.to_string(), k.public.clone()))
        .collect();
    env.verifier(config).await.observe(id).await
}

/// One row of the cosign-CLI table in docs/postures.md, printed so a run shows both verdicts.
fn row(case: &str, cosign: &str, ours: &Verdict) {
    eprintln!(
        "| {case} | {cosign} | `{}` / `{}`: {} |",
        ours.posture.as_str(),
        ours.reason.as_str(),
        ours.message
    );
}

fn cosign_verdict(ok: bool) -> &'static str {
    if ok {
        "verified"
    } else {
        "error"
    }
}

fn assert_signed_by_key(v: &Verdict, name: &str) {
    assert_eq!(
        (v.posture, v.reason, v.signer.as_deref(), v.signer_type),
        (
            Posture::Signed,
            Reason::Verified,
            Some(name),
            Some(SignerType::Key)
        ),
        "{v:#?}"
    );
}

fn assert_unverifiable(v: &Verdict) {
    assert_eq!(
        (v.posture, v.reason),
        (Posture::InvalidSignature, Reason::UnverifiableKey),
        "{v:#?}"
    );
    assert!(v.signer.is_none(), "{v:#?}");
}

async fn image(env: &TestEnv, name: &str) -> Pushed {
    env.oci.push_image(&unique_repo(name), "v1").await
}

/// A key-signed image in one format: cosign and imageposture agree, with the key trusted, with
/// no key, and with another key.
async fn one_signature(new_bundle_format: bool) {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let (me, other) = (
        cosign.generate_key_pair("me"),
        cosign.generate_key_pair("other"),
    );
    let name = if new_bundle_format {
        "cli-bundle"
    } else {
        "cli-legacy"
    };
    let img = image(&env, name).await;
    let reference = img.id.key();
    cosign.sign(&me, &reference, new_bundle_format);

    let theirs = cosign.verify(&me.public, &reference);
    assert!(theirs.ok, "cosign verify --key me.pub: {theirs:?}");
    assert_eq!(
        theirs.verified_types().len(),
        1,
        "one signature: {theirs:?}"
    );
    let ours = observe(&env, &img.id, &[("me", &me)]).await;
    row(
        &format!("`cosign sign --new-bundle-format={new_bundle_format}`, key trusted"),
        cosign_verdict(theirs.ok),
        &ours,
    );
    assert_signed_by_key(&ours, "me");
    let (source, format) = if new_bundle_format {
        (SignatureSource::Referrer, SignatureFormat::Bundle)
    } else {
        (SignatureSource::Tag, SignatureFormat::Simplesigning)
    };
    assert_eq!(ours.signatures.len(), 1, "{ours:#?}");
    assert_eq!(
        (ours.signatures[0].source, ours.signatures[0].format),
        (source, format)
    );

    let ours = observe(&env, &img.id, &[]).await;
    row("same image, no key configured", "(needs a key)", &ours);
    assert_unverifiable(&ours);

    let theirs = cosign.verify(&other.public, &reference);
    let ours = observe(&env, &img.id, &[("other", &other)]).await;
    row(
        "same image, only another key trusted",
        cosign_verdict(theirs.ok),
        &ours,
    );
    assert!(!theirs.ok, "cosign must reject another key: {theirs:?}");
    assert_unverifiable(&ours);
}

#[tokio::test]
async fn new_bundle_format_signature_agrees_with_cosign() {
    one_signature(true).await;
}

#[tokio::test]
async fn legacy_format_signature_agrees_with_cosign() {
    one_signature(false).await;
}

#[tokio::test]
async fn unsigned_image_agrees_with_cosign() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let img = image(&env, "cli-unsigned").await;
    let theirs = cosign.verify(&me.public, &img.id.key());
    let ours = observe(&env, &img.id, &[("me", &me)]).await;
    row("unsigned image", cosign_verdict(theirs.ok), &ours);
    assert!(!theirs.ok, "{theirs:?}");
    assert_eq!(
        (ours.posture, ours.reason),
        (Posture::NotSigned, Reason::NoSignature)
    );
}

/// GET a manifest or index as JSON, straight from the registry.
async fn get_json(env: &TestEnv, repo: &str, reference: &str) -> Value {
    let url = format!(
        "{}/v2/{repo}/manifests/{reference}",
        env.registry.base_url()
    );
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .header("accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{repo}:{reference}");
    resp.json().await.unwrap()
}

/// The fallback index as cosign 3.1 writes it, and its entry relabelled every way the wild
/// has it (empty type, no type, an empty string): the signature is found each time, because
/// it is judged from the referrer manifest, not from the entry's label.
#[tokio::test]
async fn fallback_index_entries_are_judged_by_their_manifest() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let me = cosign.generate_key_pair("me");
    let img = image(&env, "cli-fallback").await;
    let repo = img.id.repository.clone();
    cosign.sign(&me, &img.id.key(), true);

    let index = get_json(&env, &repo, &img.id.referrers_tag()).await;
    eprintln!("fallback index as cosign wrote it: {index}");
    let entries = index["manifests"].as_array().expect("an index").clone();
    assert_eq!(entries.len(), 1, "{index}");
    let entry = &entries[0];
    let label = entry["artifactType"].as_str().unwrap_or("");
    // cosign 3.1 (go-containerregistry before its 2026 fix) labels the bundle as empty.
    assert!(
        label == OCI_EMPTY || label == BUNDLE_V03,
        "unexpected label {label:?}: {index}"
    );
    let referrer = get_json(&env, &repo, entry["digest"].as_str().unwrap()).await;
    assert_eq!(referrer["artifactType"], BUNDLE_V03, "{referrer}");
    assert_eq!(referrer["layers"][0]["mediaType"], BUNDLE_V03, "{referrer}");
    assert_eq!(
        referrer["annotations"]["dev.sigstore.bundle.predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    let ours = observe(&env, &img.id, &[("me", &me)]).await;
    row(
        &format!("fallback index entry as cosign 3.1 writes it (`artifactType: {label}`)"),
        cosign_verdict(cosign.verify(&me.public, &img.id.key()).ok),
        &ours,
    );
    assert_signed_by_key(&ours, "me");

    for relabel in [json!(OCI_EMPTY), Value::Null, json!("")] {
        let mut entry = entry.clone();
        match &relabel {
            Value::Null => {
                entry.as_object_mut().unwrap().remove("artifactType");
            }
            label => entry["artifactType"] = label.clone(),
        }
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
        env.oci
            .put_manifest(
                &repo,
                &img.id.referrers_tag(),
                OCI_INDEX,
                &serde_json::to_vec(&index).unwrap(),
            )
            .await;
        let theirs = cosign.verify(&me.public, &img.id.key());
        let ours = observe(&env, &img.id, &[("me", &me)]).await;
        row(
            &format!("fallback entry relabelled `artifactType: {relabel}`"),
            cosign_verdict(theirs.ok),
            &ours,
        );
        assert_signed_by_key(&ours, "me");
    }
}

/// Attestations alone: not signed, counted in the message, never invalid. cosign 3.1's
/// `verify` accepts a new-format attestation bundle as if it were a signature (its output names
/// the SLSA predicate); imageposture does not count it.
#[tokio::test]
async fn attestations_alone_are_not_signed() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let (me, other) = (
        cosign.generate_key_pair("me"),
        cosign.generate_key_pair("other"),
    );
    let img = image(&env, "cli-attest").await;
    let reference = img.id.key();
    cosign.attest(&me, &reference, true);

    let attested = cosign.verify_attestation(&me.public, &reference);
    assert!(attested.ok, "the attestation verifies: {attested:?}");
    let theirs = cosign.verify(&me.public, &reference);
    eprintln!("cosign verify on an attestation-only image: {theirs:?}");
    for keys in [vec![("me", &me)], vec![], vec![("other", &other)]] {
        let ours = observe(&env, &img.id, &keys).await;
        row(
            &format!(
                "`cosign attest --new-bundle-format=true` only, {} key(s) trusted",
                keys.len()
            ),
            &format!(
                "{} (accepted types: {:?})",
                cosign_verdict(theirs.ok),
                theirs.verified_types()
            ),
            &ours,
        );
        assert_eq!(
            (ours.posture, ours.reason),
            (Posture::NotSigned, Reason::NoSignature),
            "{ours:#?}"
        );
        assert!(ours.signatures.is_empty(), "{ours:#?}");
        assert!(ours.message.contains("1 attestation"), "{}", ours.message);
    }

    // The legacy format puts attestations at the `.att` tag, which imageposture does not
    // fetch (a request per image for no verdict): plain not-signed, as cosign verify says.
    let old = image(&env, "cli-attest-legacy").await;
    cosign.attest(&me, &old.id.key(), false);
    let theirs = cosign.verify(&me.public, &old.id.key());
    let ours = observe(&env, &old.id, &[("me", &me)]).await;
    row(
        "`cosign attest --new-bundle-format=false` only (`.att` tag)",
        cosign_verdict(theirs.ok),
        &ours,
    );
    assert!(!theirs.ok, "{theirs:?}");
    assert_eq!(
        (ours.posture, ours.reason),
        (Posture::NotSigned, Reason::NoSignature)
    );
}

/// Three signatures by three keys (two bundles, one legacy layer) and an attestation on one
/// image: each key that cosign accepts, imageposture accepts; unknown keys are unverifiable.
#[tokio::test]
async fn several_signatures_on_one_image() {
    let Some(cosign) = Cosign::find() else { return };
    let env = TestEnv::new();
    let (a, b, c) = (
        cosign.generate_key_pair("a"),
        cosign.generate_key_pair("b"),
        cosign.generate_key_pair("c"),
    );
    let img = image(&env, "cli-several").await;
    let reference = img.id.key();
    cosign.sign(&a, &reference, true);
    cosign.sign(&b, &reference, true);
    cosign.sign(&c, &reference, false);
    cosign.attest(&a, &reference, true);

    let index = get_json(&env, &img.id.repository, &img.id.referrers_tag()).await;
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(3),
        "two signatures and an attestation in the fallback index: {index}"
    );

    for (name, key) in [("a", &a), ("b", &b), ("c", &c)] {
        let theirs = cosign.verify(&key.public, &reference);
        let legacy = cosign.verify_legacy(&key.public, &reference);
        let ours = observe(&env, &img.id, &[(name, key)]).await;
        row(
            &format!("two bundle signatures (a, b), a legacy one (c), an attestation (a); only {name} trusted"),
            &format!(
                "{} (`--new-bundle-format=false`: {})",
                cosign_verdict(theirs.ok),
                cosign_verdict(legacy.ok)
            ),
            &ours,
        );
        assert!(
            theirs.ok || legacy.ok,
            "cosign verify --key {name}.pub, either format: {theirs:?} {legacy:?}"
        );
        assert_signed_by_key(&ours, name);
        assert_eq!(ours.signatures.len(), 3, "{ours:#?}");
        assert_eq!(
            ours.signatures.iter().filter(|s| s.verified).count(),
            1,
            "{ours:#?}"
        );
        assert!(ours.message.contains("1 attestation"), "{}", ours.message);
    }

    let ours = observe(&env, &img.id, &[("a", &a), ("b", &b), ("c", &c)]).await;
    row("same image, all three keys trusted", "verified", &ours);
    assert_eq!(ours.posture, Posture::Signed);
    assert!(ours.signatures.iter().all(|s| s.verified), "{ours:#?}");

    let ours = observe(&env, &img.id, &[]).await;
    row("same image, no key trusted", "(needs a key)", &ours);
    assert_unverifiable(&ours);
    assert_eq!(ours.signatures.len(), 3);
}
