//! Log entries and formats as real signers published them, verified end to end against a real
//! Distribution 2.8 registry: cosign 1.x `rekord` entries, and (with the transparency-log and
//! timestamp fixtures of `tests/support/{tlog,tsa,bundles}.rs`) Rekor v1 bundles with SET and
//! inclusion proof, Rekor v2 bundles (proof + checkpoint, RFC 3161 timestamp, no SET), keyless
//! and key-based, and their broken twins.

mod support;

use imageposture::core::image::ImageId;
use imageposture::core::posture::{Posture, Reason, SignerType, TimeSource, Verdict};
use serde_json::{json, Map};
use support::cosign::{self, SigLayer, ANN_BUNDLE, ANN_CERTIFICATE, ANN_CHAIN, ANN_SIGNATURE};
use support::pki::{b64, sha256_hex, Identity, Signer, WORKFLOW_URI};
use support::{unique_repo, TestEnv};

/// A cosign 1.x `rekord` 0.0.1 entry body: the payload hash, the signature and the verifier
/// (certificate or key PEM, base64), signature format `x509`.
fn rekord_body(payload: &[u8], signature_b64: &str, verifier_pem: &str, format: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "0.0.1",
        "kind": "rekord",
        "spec": {
            "data": { "hash": { "algorithm": "sha256", "value": sha256_hex(payload) } },
            "signature": {
                "content": signature_b64,
                "format": format,
                "publicKey": { "content": b64(verifier_pem) }
            }
        }
    }))
    .unwrap()
}

/// A legacy `.sig` layer whose Rekor bundle annotation holds `body` (made by `body_of` from
/// the payload and the signature), SET by the test log.
fn legacy_with_body(
    env: &TestEnv,
    id: &ImageId,
    signer: &Signer,
    body_of: impl Fn(&[u8], &str) -> Vec<u8>,
) -> SigLayer {
    let payload = cosign::simple_signing_payload(id);
    let signature = b64(signer.sign(&payload));
    let mut ann = Map::new();
    ann.insert(ANN_SIGNATURE.into(), json!(signature));
    if let Signer::Keyless(leaf) = signer {
        ann.insert(ANN_CERTIFICATE.into(), json!(leaf.pem));
        ann.insert(ANN_CHAIN.into(), json!(leaf.chain_pem));
    }
    let entry = env.pki.rekor.entry(&body_of(&payload, &signature));
    ann.insert(
        ANN_BUNDLE.into(),
        json!(cosign::legacy_bundle(&entry).to_string()),
    );
    SigLayer {
        payload,
        annotations: ann,
    }
}

async fn observe_layer(env: &TestEnv, name: &str, layer: impl Fn(&ImageId) -> SigLayer) -> Verdict {
    let img = env.oci.push_image(&unique_repo(name), "v1").await;
    let l = layer(&img.id);
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &[l])
        .await;
    env.verifier(env.config(&[])).await.observe(&img.id).await
}

fn assert_verdict(v: &Verdict, posture: Posture, reason: Reason) {
    assert_eq!((v.posture, v.reason), (posture, reason), "{v:#?}");
}

#[tokio::test]
async fn cosign_1_keyless_rekord_entry_is_signed() {
    let env = TestEnv::new();
    let leaf = env.pki.ca.issue(&Identity::github());
    let v = observe_layer(&env, "rekord-keyless", |id| {
        legacy_with_body(&env, id, &Signer::Keyless(&leaf), |p, s| {
            rekord_body(p, s, &leaf.pem, "x509")
        })
    })
    .await;
    assert_verdict(&v, Posture::Signed, Reason::Verified);
    assert_eq!(v.signer.as_deref(), Some(WORKFLOW_URI));
    assert_eq!(v.signer_type, Some(SignerType::Keyless));
    let rec = &v.signatures[0];
    assert_eq!(rec.signing_time_source, Some(TimeSource::Tlog));
    assert_eq!(rec.signing_time, rec.integrated_time);
}

#[tokio::test]
async fn rekord_entry_with_a_key_is_signed_by_fingerprint() {
    let env = TestEnv::new();
    let v = observe_layer(&env, "rekord-key", |id| {
        legacy_with_body(&env, id, &Signer::Key(&env.pki.key), |p, s| {
            rekord_body(p, s, &env.pki.key.public_pem, "x509")
        })
    })
    .await;
    assert_verdict(&v, Posture::Signed, Reason::Verified);
    assert_eq!(v.signer.as_deref(), Some(env.pki.key.fingerprint.as_str()));
    assert_eq!(v.signer_type, Some(SignerType::Key));
}

#[tokio::test]
async fn rekord_entry_for_another_payload_is_a_bad_log_entry() {
    let env = TestEnv::new();
    let leaf = env.pki.ca.issue(&Identity::github());
    let v = observe_layer(&env, "rekord-other", |id| {
        legacy_with_body(&env, id, &Signer::Keyless(&leaf), |_, s| {
            rekord_body(b"another payload", s, &leaf.pem, "x509")
        })
    })
    .await;
    assert_verdict(
        &v,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
}

#[tokio::test]
async fn rekord_entry_with_another_certificate_is_a_bad_log_entry() {
    let env = TestEnv::new();
    let leaf = env.pki.ca.issue(&Identity::github());
    let other = env.pki.ca.issue(&Identity::github());
    let v = observe_layer(&env, "rekord-othercert", |id| {
        legacy_with_body(&env, id, &Signer::Keyless(&leaf), |p, s| {
            rekord_body(p, s, &other.pem, "x509")
        })
    })
    .await;
    assert_verdict(
        &v,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
}

#[tokio::test]
async fn rekord_entry_of_another_signature_format_is_a_bad_log_entry() {
    let env = TestEnv::new();
    let leaf = env.pki.ca.issue(&Identity::github());
    let v = observe_layer(&env, "rekord-pgp", |id| {
        legacy_with_body(&env, id, &Signer::Keyless(&leaf), |p, s| {
            rekord_body(p, s, &leaf.pem, "pgp")
        })
    })
    .await;
    assert_verdict(
        &v,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
}

#[tokio::test]
async fn legacy_keyless_certificate_chain_is_verified_once_per_process() {
    // Two images signed in one CI run share the Fulcio certificate: the second is verified
    // without rebuilding the path, and both are signed.
    let env = TestEnv::new();
    let leaf = env.pki.ca.issue(&Identity::github());
    let verifier = env.verifier(env.config(&[])).await;
    for name in ["cache-a", "cache-b"] {
        let img = env.oci.push_image(&unique_repo(name), "v1").await;
        let layer = cosign::legacy_layer(
            &img.id,
            &Signer::Keyless(&leaf),
            Some(&env.pki.rekor),
            cosign::Spoil::None,
        );
        env.oci
            .push_sig(&img.id.repository, &img.id.digest, &[layer])
            .await;
        let v = verifier.observe(&img.id).await;
        assert_verdict(&v, Posture::Signed, Reason::Verified);
    }
}
