//! Integration-test harness: a real CNCF Distribution registry, a counting and fault-injecting
//! proxy in front of it, a test Fulcio/Rekor PKI and a pusher of real cosign-format artifacts.
//!
//! Included from each test file with `mod support;`. Not every test binary uses every helper.
#![allow(dead_code)]

pub mod bundles;
pub mod cosign;
pub mod cosign_cli;
pub mod evil;
pub mod multiarch;
pub mod pki;
pub mod proxy;
pub mod registry;
pub mod tlog;
pub mod tsa;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use imageposture::core::image::ImageId;
use imageposture::verify::{Limits, TrustSource, Verifier, VerifierConfig};

/// Unique repository name, so tests sharing one registry never see each other's artifacts.
pub fn unique_repo(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "test/{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Per-test world: the shared registry, a fresh PKI and a `trusted_root.json` naming it.
pub struct TestEnv {
    pub registry: &'static registry::Registry,
    pub oci: cosign::Oci,
    pub pki: pki::Pki,
    pub trusted_root: PathBuf,
    /// Owns the trust-root and key files; removed when the test ends.
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with_registry(registry::shared())
    }

    /// A world around another registry of this binary's own.
    pub fn with_registry(registry: &'static registry::Registry) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki::Pki::new(dir.path());
        let trusted_root = pki.write_trusted_root(dir.path());
        TestEnv {
            registry,
            oci: cosign::Oci::new(&registry.host),
            pki,
            trusted_root,
            dir,
        }
    }

    /// The verifier configuration the tests use: the test trust root through the production
    /// `TrustSource::File` path, plain HTTP to the registry and to any extra `hosts` (proxies).
    pub fn config(&self, hosts: &[&str]) -> VerifierConfig {
        let mut insecure = vec![self.registry.host.clone()];
        insecure.extend(hosts.iter().map(|h| h.to_string()));
        VerifierConfig {
            trust: TrustSource::File(self.trusted_root.clone()),
            trust_refresh: imageposture::verify::DEFAULT_REFRESH,
            trusted_keys: vec![],
            registry_config: None,
            credential_helper_dir: None,
            credential_provider_config: None,
            credential_provider_bin_dir: None,
            insecure_registries: insecure,
            limits: Limits::default(),
        }
    }

    pub async fn verifier(&self, config: VerifierConfig) -> Verifier {
        Verifier::new(config).await.expect("verifier setup")
    }

    /// Publishes a legacy cosign keyless signature of `id` by `identity` from the trusted CA
    /// (at its `.sig` tag, replacing any earlier one).
    pub async fn sign_keyless(&self, id: &ImageId, identity: &pki::Identity) {
        let leaf = self.pki.ca.issue(identity);
        let layer = cosign::legacy_layer(
            id,
            &pki::Signer::Keyless(&leaf),
            Some(&self.pki.rekor),
            cosign::Spoil::None,
        );
        self.oci
            .push_sig(&id.repository, &id.digest, &[layer])
            .await;
    }

    /// Publishes a legacy cosign keyless signature of `id` by a CI identity, its certificate
    /// carrying Fulcio's CI extensions (replacing any earlier signature).
    pub async fn sign_ci(&self, id: &ImageId, ci: &pki::Ci) {
        let leaf = self.pki.ca.issue_ci(ci);
        let layer = cosign::legacy_layer(
            id,
            &pki::Signer::Keyless(&leaf),
            Some(&self.pki.rekor),
            cosign::Spoil::None,
        );
        self.oci
            .push_sig(&id.repository, &id.digest, &[layer])
            .await;
    }

    /// Attaches a cosign v3 Sigstore bundle (keyless, GitHub Actions identity) to `img` as an
    /// OCI referrer, listed in the referrers tag-schema index.
    pub async fn sign_bundle(&self, img: &cosign::Pushed) {
        let leaf = self.pki.ca.issue(&pki::Identity::github());
        let statement = cosign::cosign_statement(&img.id);
        let bundle = cosign::sigstore_bundle(&statement, &leaf, &self.pki.rekor);
        self.oci.push_bundle_referrer(img, &bundle).await;
    }

    /// A fresh image (tag `v1`) with one legacy keyless signature by `identity`.
    pub async fn keyless_image(&self, name: &str, identity: &pki::Identity) -> ImageId {
        let img = self.oci.push_image(&unique_repo(name), "v1").await;
        self.sign_keyless(&img.id, identity).await;
        img.id
    }
}

/// The same image seen through another host (a proxy, or an address where nothing listens).
pub fn via(id: &ImageId, host: &str) -> ImageId {
    ImageId {
        registry: host.to_string(),
        ..id.clone()
    }
}
