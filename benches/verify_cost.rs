//! One-off measurement: CPU (user + sys, all threads) per verified image, per signature format,
//! through `Verifier::observe` against a real Distribution 2.8 on 127.0.0.1 (the registry is
//! another process: its CPU is not counted). `cargo bench --bench verify_cost` (release).
//!
//! Each format gets its own images (fresh Fulcio-style certificate per image, as CI signing
//! produces), verified 8 at a time; a second pass over images that share one certificate shows
//! what the per-process certificate-path cache saves. Prints a markdown table on stdout.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use imageposture::core::image::ImageId;
use imageposture::core::posture::Posture;
use imageposture::verify::TrustSource;
use support::bundles::{self, Sigstore, Twist};
use support::cosign::{self, Spoil};
use support::pki::{Identity, Signer};
use support::{unique_repo, TestEnv};

const CONCURRENCY: usize = 8;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of this process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[derive(Clone, Copy, Debug)]
enum Format {
    LegacyKeyless,
    LegacyKeylessSharedCert,
    LegacyRekord,
    BundleV1Set,
    BundleV1SetProof,
    BundleV2Keyless,
    BundleV2Key,
}

impl Format {
    fn describe(self) -> &'static str {
        match self {
            Format::LegacyKeyless => "legacy `.sig`, keyless, `hashedrekord` 0.0.1 + SET",
            Format::LegacyKeylessSharedCert => {
                "legacy `.sig`, keyless, one certificate for all images (path cache)"
            }
            Format::LegacyRekord => "legacy `.sig`, keyless, `rekord` 0.0.1 + SET (cosign 1.x)",
            Format::BundleV1Set => "bundle v0.3 referrer, keyless, `dsse` 0.0.1 + SET",
            Format::BundleV1SetProof => {
                "bundle v0.3 referrer, keyless, Rekor v1 `dsse` 0.0.1 + SET + proof + checkpoint"
            }
            Format::BundleV2Keyless => {
                "bundle v0.3 referrer, keyless, Rekor v2 `hashedrekord` 0.0.2, proof + Ed25519 checkpoint + RFC 3161"
            }
            Format::BundleV2Key => {
                "bundle v0.3 referrer, key, Rekor v2 `hashedrekord` 0.0.2, proof + Ed25519 checkpoint + RFC 3161"
            }
        }
    }
}

async fn push(
    env: &TestEnv,
    sigstore: &Sigstore,
    format: Format,
    i: usize,
    shared: &support::pki::Leaf,
) -> ImageId {
    let img = env
        .oci
        .push_image(&unique_repo(&format!("cost-{i:04}")), "v1")
        .await;
    match format {
        Format::LegacyKeyless => env.sign_keyless(&img.id, &Identity::github()).await,
        Format::LegacyKeylessSharedCert => {
            let layer = cosign::legacy_layer(
                &img.id,
                &Signer::Keyless(shared),
                Some(&env.pki.rekor),
                Spoil::None,
            );
            env.oci
                .push_sig(&img.id.repository, &img.id.digest, &[layer])
                .await;
        }
        Format::LegacyRekord => {
            let leaf = env.pki.ca.issue(&Identity::github());
            let layer = rekord_layer(env, &img.id, &leaf);
            env.oci
                .push_sig(&img.id.repository, &img.id.digest, &[layer])
                .await;
        }
        Format::BundleV1Set => env.sign_bundle(&img).await,
        Format::BundleV1SetProof | Format::BundleV2Keyless | Format::BundleV2Key => {
            let leaf = env.pki.ca.issue(&Identity::github());
            let (log, signer) = match format {
                Format::BundleV1SetProof => (&sigstore.rekor_v1, Signer::Keyless(&leaf)),
                Format::BundleV2Keyless => (&sigstore.rekor_v2, Signer::Keyless(&leaf)),
                _ => (&sigstore.rekor_v2, Signer::Key(&env.pki.key)),
            };
            let statement = cosign::cosign_statement(&img.id);
            let bundle =
                bundles::dsse_bundle(sigstore, log, &statement, &signer, false, Twist::None);
            env.oci.push_bundle_referrer(&img, &bundle).await;
        }
    }
    img.id
}

fn rekord_layer(env: &TestEnv, id: &ImageId, leaf: &support::pki::Leaf) -> cosign::SigLayer {
    use support::pki::{b64, sha256_hex};
    let mut layer = cosign::legacy_layer(id, &Signer::Keyless(leaf), None, Spoil::None);
    let signature = layer.annotations[cosign::ANN_SIGNATURE]
        .as_str()
        .unwrap()
        .to_string();
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "0.0.1", "kind": "rekord",
        "spec": {
            "data": { "hash": { "algorithm": "sha256", "value": sha256_hex(&layer.payload) } },
            "signature": { "content": signature, "format": "x509",
                           "publicKey": { "content": b64(&leaf.pem) } }
        }
    }))
    .unwrap();
    let entry = env.pki.rekor.entry(&body);
    layer.annotations.insert(
        cosign::ANN_BUNDLE.into(),
        serde_json::json!(cosign::legacy_bundle(&entry).to_string()),
    );
    layer
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let n = env_usize("IMAGEPOSTURE_BENCH_IMAGES", 400).max(1);
    let env = TestEnv::new();
    let sigstore = Sigstore::new();
    let trusted_root = sigstore.write_trusted_root(&env.pki, env.dir.path());
    let shared = env.pki.ca.issue(&Identity::github());
    let formats = [
        Format::LegacyKeyless,
        Format::LegacyKeylessSharedCert,
        Format::LegacyRekord,
        Format::BundleV1Set,
        Format::BundleV1SetProof,
        Format::BundleV2Keyless,
        Format::BundleV2Key,
    ];
    println!("| format | images | CPU per image (user + sys) | wall per image |");
    println!("|---|---:|---:|---:|");
    for format in formats {
        eprintln!("pushing {n} images: {format:?} ...");
        let ids: Vec<ImageId> = stream::iter(0..n)
            .map(|i| push(&env, &sigstore, format, i, &shared))
            .buffer_unordered(16)
            .collect()
            .await;
        // A fresh verifier per format: its trust root and caches start cold.
        let mut config = env.config(&[]);
        config.trust = TrustSource::File(trusted_root.clone());
        let verifier = Arc::new(env.verifier(config).await);
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        let verdicts: Vec<_> = stream::iter(ids.iter())
            .map(|id| {
                let v = Arc::clone(&verifier);
                async move { v.observe_task(id).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed());
        let signed = verdicts
            .iter()
            .filter(|v| v.posture == Posture::Signed)
            .count();
        assert_eq!(signed, n, "{format:?}: {:#?}", verdicts.first());
        println!(
            "| {} | {n} | {:.2} ms | {:.2} ms |",
            format.describe(),
            cpu * 1000.0 / n as f64,
            wall.as_secs_f64() * 1000.0 / n as f64
        );
    }
}
