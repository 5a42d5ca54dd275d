//! Hostile registries and artifacts: bounded reads, bounded work, bounded text, and a clear
//! reason for each, never a crash and never a clean verdict.

mod support;

use imageposture::core::posture::{Posture, Reason, MAX_TEXT};
use support::cosign::{self, Spoil};
use support::pki::{Identity, Signer};
use support::{unique_repo, TestEnv};

#[tokio::test]
async fn oversized_signature_manifest_is_checking_too_large() {
    let env = TestEnv::new();
    let id = env.keyless_image("hostile-big", &Identity::github()).await;
    let mut config = env.config(&[]);
    config.limits.max_manifest_bytes = 256;
    let v = env.verifier(config).await.observe(&id).await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::Checking, Reason::TooLarge),
        "{v:#?}"
    );
}

#[tokio::test]
async fn oversized_signature_payload_is_invalid_malformed() {
    let env = TestEnv::new();
    let id = env
        .keyless_image("hostile-payload", &Identity::github())
        .await;
    let mut config = env.config(&[]);
    config.limits.max_blob_bytes = 16;
    let v = env.verifier(config).await.observe(&id).await;
    assert_eq!(
        (v.posture, v.reason),
        (Posture::InvalidSignature, Reason::Malformed),
        "{v:#?}"
    );
    assert!(v.message.contains("over the limit"), "{}", v.message);
}

#[tokio::test]
async fn signature_flood_is_capped_and_reported() {
    let env = TestEnv::new();
    let img = env
        .oci
        .push_image(&unique_repo("hostile-flood"), "v1")
        .await;
    let leaf = env.pki.ca.issue(&Identity::github());
    let layers: Vec<_> = (0..20)
        .map(|_| {
            cosign::legacy_layer(
                &img.id,
                &Signer::Keyless(&leaf),
                Some(&env.pki.rekor),
                Spoil::TamperPayload,
            )
        })
        .collect();
    env.oci
        .push_sig(&img.id.repository, &img.id.digest, &layers)
        .await;
    let mut config = env.config(&[]);
    config.limits.max_signatures = 5;
    let v = env.verifier(config).await.observe(&img.id).await;
    assert_eq!(v.posture, Posture::InvalidSignature);
    assert_eq!(v.signatures.len(), 5);
    assert!(v.message.contains("15 more"), "{}", v.message);
}

#[tokio::test]
async fn huge_attacker_chosen_signer_is_bounded_data() {
    let env = TestEnv::new();
    let san = format!("https://evil.example/{}\u{1b}[31m", "a".repeat(4000));
    let identity = Identity::Uri {
        uri: san,
        issuer: "https://issuer.example".into(),
    };
    let id = env.keyless_image("hostile-san", &identity).await;
    let v = env.verifier(env.config(&[])).await.observe(&id).await;
    assert_eq!(v.posture, Posture::Signed, "{v:#?}");
    let signer = v.signer.unwrap();
    assert!(
        signer.len() <= MAX_TEXT + '…'.len_utf8(),
        "{}",
        signer.len()
    );
    assert!(
        !signer.contains('\u{1b}'),
        "control characters are neutralised"
    );
}
