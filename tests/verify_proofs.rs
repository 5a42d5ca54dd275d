//! Proof-based verification end to end, over a real Distribution 2.8 registry: cosign v3
//! image-signature bundles (DSSE over the cosign signing statement) logged in the test Rekor v1
//! log (SET + inclusion proof + checkpoint) and in the test Rekor v2 logs (proof + checkpoint,
//! RFC 3161 timestamp, no SET), keyless and key-based, and their broken twins. The fixtures are
//! `tests/support/{tlog,tsa,bundles}.rs`; `tests/tlog_matrix.rs` has the real cosign CLI judge
//! the same bundles.

mod support;

use imageposture::core::image::ImageId;
use imageposture::core::posture::{Posture, Reason, SignerType, TimeSource, Verdict};
use imageposture::verify::{TrustSource, VerifierConfig};
use support::bundles::{self, expired_leaf, Sigstore, Twist};
use support::cosign::{self, Pushed};
use support::pki::{Identity, Leaf, Signer, WORKFLOW_URI};
use support::tlog::Log;
use support::{unique_repo, TestEnv};

struct World {
    env: TestEnv,
    sigstore: Sigstore,
    config: VerifierConfig,
}

impl World {
    fn new() -> World {
        let env = TestEnv::new();
        let sigstore = Sigstore::new();
        let mut config = env.config(&[]);
        config.trust = TrustSource::File(sigstore.write_trusted_root(&env.pki, env.dir.path()));
        World {
            env,
            sigstore,
            config,
        }
    }

    async fn image(&self, name: &str) -> Pushed {
        self.env.oci.push_image(&unique_repo(name), "v1").await
    }

    /// Attaches `bundle` to `img` and observes it.
    async fn observe(&self, img: &Pushed, bundle: &[u8]) -> Verdict {
        self.env.oci.push_bundle_referrer(img, bundle).await;
        let verifier = self.env.verifier(self.config.clone()).await;
        verifier.observe(&img.id).await
    }

    /// A cosign v3 image-signature bundle for `id` in `log`.
    fn bundle(&self, log: &Log, id: &ImageId, signer: &Signer, twist: Twist) -> Vec<u8> {
        let statement = cosign::cosign_statement(id);
        bundles::dsse_bundle(&self.sigstore, log, &statement, signer, false, twist)
    }
}

fn assert_verdict(v: &Verdict, posture: Posture, reason: Reason) {
    assert_eq!((v.posture, v.reason), (posture, reason), "{v:#?}");
}

/// The failure is the one the fixture was broken for, not another on the way.
fn assert_says(v: &Verdict, what: &str) {
    assert!(
        v.message.contains(what),
        "{:?} does not say {what:?}",
        v.message
    );
}

fn assert_keyless(v: &Verdict, source: TimeSource) {
    assert_verdict(v, Posture::Signed, Reason::Verified);
    assert_eq!(v.signer.as_deref(), Some(WORKFLOW_URI));
    assert_eq!(v.signer_type, Some(SignerType::Keyless));
    assert_eq!(v.signatures[0].signing_time_source, Some(source), "{v:#?}");
}

fn github(w: &World) -> Leaf {
    w.env.pki.ca.issue(&Identity::github())
}

#[tokio::test]
async fn rekor_v2_keyless_bundle_without_set_is_signed_at_the_timestamp() {
    let w = World::new();
    let img = w.image("v2-keyless").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::None,
    );
    let v = w.observe(&img, &b).await;
    assert_keyless(&v, TimeSource::Timestamp);
    assert_eq!(v.signatures[0].integrated_time, None);
}

#[tokio::test]
async fn rekor_v2_ecdsa_log_keyless_bundle_is_signed() {
    let w = World::new();
    let img = w.image("v2-ecdsa").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v2_ecdsa,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::None,
    );
    assert_keyless(&w.observe(&img, &b).await, TimeSource::Timestamp);
}

#[tokio::test]
async fn rekor_v2_key_bundle_is_signed_by_fingerprint() {
    let w = World::new();
    let img = w.image("v2-key").await;
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Key(&w.env.pki.key),
        Twist::None,
    );
    let v = w.observe(&img, &b).await;
    assert_verdict(&v, Posture::Signed, Reason::Verified);
    assert_eq!(
        v.signer.as_deref(),
        Some(w.env.pki.key.fingerprint.as_str())
    );
    assert_eq!(v.signer_type, Some(SignerType::Key));
}

#[tokio::test]
async fn rekor_v1_keyless_bundle_with_set_and_proof_is_signed() {
    let w = World::new();
    let img = w.image("v1-proof").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v1,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::None,
    );
    assert_keyless(&w.observe(&img, &b).await, TimeSource::Tlog);
}

#[tokio::test]
async fn rekor_v1_bad_proof_with_a_good_set_is_invalid() {
    let w = World::new();
    let img = w.image("v1-badproof").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v1,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::BadProof,
    );
    let v = w.observe(&img, &b).await;
    assert_verdict(
        &v,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
    assert_says(&v, "inclusion proof does not verify");
}

#[tokio::test]
async fn rekor_v2_bad_proof_is_invalid() {
    let w = World::new();
    for (name, signer) in [
        ("v2-badproof-keyless", Signer::Keyless(&github(&w))),
        ("v2-badproof-key", Signer::Key(&w.env.pki.key)),
    ] {
        let img = w.image(name).await;
        let b = w.bundle(&w.sigstore.rekor_v2, &img.id, &signer, Twist::BadProof);
        let v = w.observe(&img, &b).await;
        assert_verdict(
            &v,
            Posture::InvalidSignature,
            Reason::BadTransparencyLogEntry,
        );
        assert_says(&v, "inclusion proof does not verify");
    }
}

#[tokio::test]
async fn checkpoint_signed_by_another_key_is_invalid() {
    let w = World::new();
    for (name, log) in [
        ("cp-v1", &w.sigstore.rekor_v1),
        ("cp-v2", &w.sigstore.rekor_v2),
        ("cp-v2-ecdsa", &w.sigstore.rekor_v2_ecdsa),
    ] {
        let img = w.image(name).await;
        let leaf = github(&w);
        let b = w.bundle(
            log,
            &img.id,
            &Signer::Keyless(&leaf),
            Twist::ForeignCheckpoint,
        );
        let v = w.observe(&img, &b).await;
        assert_verdict(
            &v,
            Posture::InvalidSignature,
            Reason::BadTransparencyLogEntry,
        );
        assert_says(&v, "checkpoint signature does not verify with the log key");
    }
}

#[tokio::test]
async fn timestamp_from_an_untrusted_authority_is_invalid() {
    let w = World::new();
    for (name, signer) in [
        ("tsa-rogue-keyless", Signer::Keyless(&github(&w))),
        ("tsa-rogue-key", Signer::Key(&w.env.pki.key)),
    ] {
        let img = w.image(name).await;
        let b = w.bundle(
            &w.sigstore.rekor_v2,
            &img.id,
            &signer,
            Twist::UntrustedTimestamp,
        );
        let v = w.observe(&img, &b).await;
        assert_verdict(&v, Posture::InvalidSignature, Reason::BadTimestamp);
        assert_says(&v, "trusted timestamp authority");
    }
}

#[tokio::test]
async fn timestamp_over_other_bytes_is_invalid() {
    let w = World::new();
    let img = w.image("tsa-imprint").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::ImprintOverOtherBytes,
    );
    let v = w.observe(&img, &b).await;
    assert_verdict(&v, Posture::InvalidSignature, Reason::BadTimestamp);
}

#[tokio::test]
async fn certificate_expired_at_the_timestamp_is_untrusted() {
    let w = World::new();
    let img = w.image("tsa-expired").await;
    let leaf = expired_leaf(&w.env.pki.ca, &Identity::github());
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::None,
    );
    let v = w.observe(&img, &b).await;
    assert_verdict(&v, Posture::InvalidSignature, Reason::UntrustedCertificate);
    assert_says(&v, "at the signing time");
}

#[tokio::test]
async fn withdrawn_dsse_v002_entry_is_invalid() {
    let w = World::new();
    let img = w.image("v2-dsse002").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::ObsoleteDsseV002,
    );
    let v = w.observe(&img, &b).await;
    assert_verdict(
        &v,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
    assert_says(&v, "unsupported log entry kind");
}

#[tokio::test]
async fn rekor_v2_keyless_bundle_for_another_image_is_a_digest_mismatch() {
    let w = World::new();
    let img = w.image("v2-other").await;
    let other = w.image("v2-other-2").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &other.id,
        &Signer::Keyless(&leaf),
        Twist::None,
    );
    let v = w.observe(&img, &b).await;
    assert_verdict(&v, Posture::InvalidSignature, Reason::DigestMismatch);
}

/// The bundle without its RFC 3161 timestamps.
fn without_timestamps(bundle: &[u8]) -> Vec<u8> {
    let mut b: serde_json::Value = serde_json::from_slice(bundle).unwrap();
    b["verificationMaterial"]
        .as_object_mut()
        .unwrap()
        .remove("timestampVerificationData")
        .expect("a timestamped fixture");
    serde_json::to_vec(&b).unwrap()
}

#[tokio::test]
async fn rekor_v2_keyless_bundle_without_a_timestamp_has_no_signing_time() {
    let w = World::new();
    let img = w.image("v2-notime").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::None,
    );
    let v = w.observe(&img, &without_timestamps(&b)).await;
    assert_verdict(&v, Posture::InvalidSignature, Reason::BadTimestamp);
    assert_says(&v, "no verified signing time");
}

#[tokio::test]
async fn rekor_v2_key_bundle_needs_no_timestamp() {
    // A key-based signature is not bound to a certificate's validity: the inclusion proof is
    // the log evidence, and no signing time is needed.
    let w = World::new();
    let img = w.image("v2-key-notime").await;
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Key(&w.env.pki.key),
        Twist::None,
    );
    let v = w.observe(&img, &without_timestamps(&b)).await;
    assert_verdict(&v, Posture::Signed, Reason::Verified);
    assert_eq!(v.signatures[0].signing_time, None);
}

/// h8c's cosign 1.x fixtures (`bundles::legacy_rekord_layer`), which `tests/tlog_matrix.rs` has
/// `cosign verify` judge: a legacy `.sig` layer with a `rekord` 0.0.1 entry and its SET.
async fn observe_rekord_layer(
    w: &World,
    name: &str,
    layer: impl Fn(&ImageId) -> cosign::SigLayer,
) -> Verdict {
    let img = w.image(name).await;
    let l = layer(&img.id);
    w.env
        .oci
        .push_sig(&img.id.repository, &img.id.digest, &[l])
        .await;
    w.env
        .verifier(w.config.clone())
        .await
        .observe(&img.id)
        .await
}

#[tokio::test]
async fn cosign_1_rekord_layers_agree_with_cosign() {
    let w = World::new();
    let leaf = github(&w);
    let v = observe_rekord_layer(&w, "rekord-h8c-keyless", |id| {
        bundles::legacy_rekord_layer(id, &Signer::Keyless(&leaf), &w.sigstore.rekor_v1)
    })
    .await;
    assert_verdict(&v, Posture::Signed, Reason::Verified);
    assert_eq!(v.signer.as_deref(), Some(WORKFLOW_URI));

    let v = observe_rekord_layer(&w, "rekord-h8c-key", |id| {
        bundles::legacy_rekord_layer(id, &Signer::Key(&w.env.pki.key), &w.sigstore.rekor_v1)
    })
    .await;
    assert_verdict(&v, Posture::Signed, Reason::Verified);
    assert_eq!(
        v.signer.as_deref(),
        Some(w.env.pki.key.fingerprint.as_str())
    );

    let v = observe_rekord_layer(&w, "rekord-h8c-other", |id| {
        bundles::legacy_rekord_layer_logging(
            id,
            &Signer::Keyless(&leaf),
            &w.sigstore.rekor_v1,
            b"other bytes",
        )
    })
    .await;
    assert_verdict(
        &v,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
    assert_says(&v, "logged hash is not the payload's");
}

#[tokio::test]
async fn rekor_v2_checkpoint_of_another_origin_is_invalid() {
    // Signed by the right log key, but naming another log as its origin: sigstore-go (cosign
    // 3) verifies a Rekor v2 checkpoint with a note verifier named after the host of the
    // log's `baseUrl`, and requires that origin on the checkpoint's first line.
    let w = World::new();
    for (name, log) in [
        ("origin-v2", &w.sigstore.rekor_v2),
        ("origin-v2-ecdsa", &w.sigstore.rekor_v2_ecdsa),
    ] {
        let img = w.image(name).await;
        let leaf = github(&w);
        let good = w.bundle(log, &img.id, &Signer::Keyless(&leaf), Twist::None);
        // Another origin, signed under the log's own name; and under the other name too.
        for signer in [log.key_name.as_str(), "log2099-1.rekor.test"] {
            let b = bundles::with_checkpoint(&good, |cp| {
                log.checkpoint_with_origin(cp, "log2099-1.rekor.test", signer)
            });
            let v = w.observe(&img, &b).await;
            assert_verdict(
                &v,
                Posture::InvalidSignature,
                Reason::BadTransparencyLogEntry,
            );
            assert_says(&v, "is not the log's origin");
        }
        // The right origin, but the signature line names another signer: no verifier named
        // after the log's origin signed it.
        let b = bundles::with_checkpoint(&good, |cp| {
            log.checkpoint_with_origin(cp, &log.origin, "log2099-1.rekor.test")
        });
        let v = w.observe(&img, &b).await;
        assert_verdict(
            &v,
            Posture::InvalidSignature,
            Reason::BadTransparencyLogEntry,
        );
        assert_says(&v, "checkpoint is not signed by the log");
        // The fixture itself, re-signed unchanged, still verifies.
        let b = bundles::with_checkpoint(&good, |cp| {
            log.checkpoint_with_origin(cp, &log.origin, &log.key_name)
        });
        assert_keyless(&w.observe(&img, &b).await, TimeSource::Timestamp);
    }
}

#[tokio::test]
async fn rekor_v1_checkpoint_is_bound_by_key_as_sigstore_go_binds_it() {
    // Rekor v1 checkpoints (`<host> - <tree ID>`) carry the host name the server was given,
    // which a private deployment need not have put in `baseUrl`: sigstore-go checks the key
    // and not the origin of a v1-shaped checkpoint, and so does imageposture.
    let w = World::new();
    let log = &w.sigstore.rekor_v1;
    let img = w.image("origin-v1").await;
    let leaf = github(&w);
    let good = w.bundle(log, &img.id, &Signer::Keyless(&leaf), Twist::None);
    assert!(log.origin.starts_with("rekor.test - "), "{}", log.origin);
    let b = bundles::with_checkpoint(&good, |cp| {
        log.checkpoint_with_origin(cp, "rekor.internal.example - 42", &log.key_name)
    });
    assert_keyless(&w.observe(&img, &b).await, TimeSource::Tlog);
    // A checkpoint not of Rekor v1's shape is bound to the `baseUrl` host, whatever the entry.
    let b = bundles::with_checkpoint(&good, |cp| {
        log.checkpoint_with_origin(cp, "rekor.internal.example", &log.key_name)
    });
    let v = w.observe(&img, &b).await;
    assert_verdict(
        &v,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
    assert_says(&v, "is not the log's origin");
}

/// The test trusted root without the log whose ID is `log_id`, and with the CA chains of
/// `extra_cas` added.
fn trusted_root_without(
    w: &World,
    log_id: Option<&[u8; 32]>,
    extra_cas: &[&support::pki::Ca],
) -> Vec<u8> {
    let mut root = w.sigstore.trusted_root(&w.env.pki);
    if let Some(id) = log_id {
        let id = support::pki::b64(id);
        root["tlogs"]
            .as_array_mut()
            .unwrap()
            .retain(|l| l["logId"]["keyId"] != id.as_str());
    }
    for ca in extra_cas {
        let certs: Vec<_> = ca
            .chain_der()
            .iter()
            .map(|d| serde_json::json!({ "rawBytes": support::pki::b64(d) }))
            .collect();
        root["certificateAuthorities"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "certChain": { "certificates": certs },
                "validFor": { "start": "2020-01-01T00:00:00Z" }
            }));
    }
    serde_json::to_vec_pretty(&root).unwrap()
}

#[tokio::test]
async fn trust_root_that_gains_a_log_or_a_ca_verifies_without_restart() {
    let w = World::new();
    let path = w.env.dir.path().join("trusted_root_refresh.json");
    std::fs::write(
        &path,
        trusted_root_without(&w, Some(&w.sigstore.rekor_v2.log_id), &[]),
    )
    .unwrap();
    let mut config = w.config.clone();
    config.trust = TrustSource::File(path.clone());
    // One verifier for the whole test: one process, never restarted.
    let verifier = w.env.verifier(config).await;

    // An entry in a log the root does not list: the file is read again, still without it,
    // which confirms the log unknown: invalid.
    let img = w.image("refresh-log").await;
    let leaf = github(&w);
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img.id,
        &Signer::Keyless(&leaf),
        Twist::None,
    );
    w.env.oci.push_bundle_referrer(&img, &b).await;
    let before = verifier.observe(&img.id).await;
    assert_verdict(
        &before,
        Posture::InvalidSignature,
        Reason::BadTransparencyLogEntry,
    );
    assert_says(&before, "is not in the trusted root");
    assert!(verifier.unchanged(&img.id, &before.artifact_digests).await);

    // The root gains the log (a new shard): the same verifier verifies it, and the verdict
    // judged under the old root is no longer taken as unchanged.
    std::fs::write(&path, trusted_root_without(&w, None, &[])).unwrap();
    let after = verifier.observe(&img.id).await;
    assert_keyless(&after, TimeSource::Timestamp);
    assert!(!verifier.unchanged(&img.id, &before.artifact_digests).await);
    assert!(verifier.unchanged(&img.id, &after.artifact_digests).await);

    // A certificate from a CA the root does not list: invalid once confirmed; signed after the
    // root gains the CA (a new Fulcio intermediate).
    let img2 = w.image("refresh-ca").await;
    let other = w.env.pki.untrusted.issue(&Identity::github());
    let b = w.bundle(
        &w.sigstore.rekor_v2,
        &img2.id,
        &Signer::Keyless(&other),
        Twist::None,
    );
    w.env.oci.push_bundle_referrer(&img2, &b).await;
    let v = verifier.observe(&img2.id).await;
    assert_verdict(&v, Posture::InvalidSignature, Reason::UntrustedCertificate);
    std::fs::write(
        &path,
        trusted_root_without(&w, None, &[&w.env.pki.untrusted]),
    )
    .unwrap();
    assert_keyless(&verifier.observe(&img2.id).await, TimeSource::Timestamp);

    // The root cannot be read again (a half-written file): an entry of an unknown log is
    // `checking`, not invalid; what the last good root knows still verifies.
    let shard = Log::rekor_v2("log2026-1.rekor.test", support::tlog::KeyKind::Ed25519);
    let img3 = w.image("refresh-broken").await;
    let b = w.bundle(&shard, &img3.id, &Signer::Keyless(&leaf), Twist::None);
    w.env.oci.push_bundle_referrer(&img3, &b).await;
    std::fs::write(&path, b"{ \"tlogs\": [").unwrap();
    let v = verifier.observe(&img3.id).await;
    assert_verdict(&v, Posture::Checking, Reason::TrustRootUnavailable);
    assert_says(&v, "could not be refreshed");
    assert_keyless(&verifier.observe(&img.id).await, TimeSource::Timestamp);
}
