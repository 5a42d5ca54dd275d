//! The real cosign CLI as the oracle for the transparency-log and timestamp fixtures
//! (`tests/support/{tlog,tsa,bundles}.rs`): every good bundle must be accepted by
//! `cosign verify-blob` against the test trusted root, every broken twin rejected. If cosign
//! rejects a good fixture, the fixture is wrong, not cosign.
//!
//! cosign runs fully offline: `--trusted-root` (no TUF), an empty `HOME` and `TUF_ROOT`, and
//! every proxy variable pointing at a closed port on 127.0.0.1, so any network attempt fails
//! fast instead of reaching the internet. Without `/usr/bin/cosign` these tests are skipped
//! (with a message naming the Debian package `cosign`); with `CI=true` they fail.
//! `IMAGEPOSTURE_KEEP_FIXTURES=DIR` also writes each bundle and its trusted root to `DIR`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use imageposture::core::image::ImageId;
use support::bundles::{self, expired_leaf, Sigstore, Twist};
use support::cosign::{cosign_statement, simple_signing_payload, COSIGN_SIGN_PREDICATE};
use support::pki::{Identity, Pki, Signer};
use support::tlog::{self, audit_path, leaf_hash, root, verify_inclusion};
use support::tsa::{Stamp, Tsa};

const COSIGN: &str = "/usr/bin/cosign";

/// cosign's verdict on one fixture.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Rejected(String),
}

/// `None` (after saying why) when cosign is missing locally; panics when it is missing in CI.
fn cosign_available() -> bool {
    if Path::new(COSIGN).exists() {
        return true;
    }
    let msg = format!(
        "{COSIGN} not found: the cosign oracle tests need the Debian package `cosign` (3.x, \
         from the sid suite: apt-get install -t sid cosign)"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    false
}

/// How cosign is told whom to trust.
enum Trust<'a> {
    /// `--certificate-identity-regexp '.*' --certificate-oidc-issuer-regexp '.*'` (and
    /// `--insecure-ignore-sct`: the test Fulcio has no CT log).
    AnyIdentity,
    /// `--key FILE`
    Key(&'a Path),
}

/// A world: the Fulcio-style PKI, the logs and TSAs, the trusted root, a scratch directory.
struct World {
    pki: Pki,
    sigstore: Sigstore,
    trusted_root: PathBuf,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path());
        let sigstore = Sigstore::new();
        let trusted_root = sigstore.write_trusted_root(&pki, dir.path());
        World {
            pki,
            sigstore,
            trusted_root,
            dir,
        }
    }

    /// Runs `cosign <args> --bundle B --trusted-root T <trust flags> [<blob>]` offline and
    /// returns its verdict. `signed_timestamps` adds `--use-signed-timestamps` (require a
    /// verified RFC 3161 timestamp).
    fn cosign(&self, run: Run, bundle: &[u8], trust: Trust) -> Verdict {
        let bundle_path = self.dir.path().join(format!("{}.sigstore.json", run.name));
        std::fs::write(&bundle_path, bundle).unwrap();
        if let Ok(d) = std::env::var("IMAGEPOSTURE_KEEP_FIXTURES") {
            std::fs::write(format!("{d}/{}.sigstore.json", run.name), bundle).unwrap();
            std::fs::copy(&self.trusted_root, format!("{d}/{}.root.json", run.name)).unwrap();
        }
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let closed = format!("http://127.0.0.1:{}", support::registry::free_port());
        let mut cmd = Command::new(COSIGN);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &home)
            .env("TUF_ROOT", home.join("tuf"))
            .env("HTTPS_PROXY", &closed)
            .env("HTTP_PROXY", &closed)
            .env("https_proxy", &closed)
            .env("http_proxy", &closed)
            .env("NO_PROXY", "")
            .args(run.args)
            .arg("--bundle")
            .arg(&bundle_path)
            .arg("--trusted-root")
            .arg(&self.trusted_root);
        if run.signed_timestamps {
            cmd.arg("--use-signed-timestamps");
        }
        match trust {
            Trust::AnyIdentity => {
                cmd.args([
                    "--certificate-identity-regexp",
                    ".*",
                    "--certificate-oidc-issuer-regexp",
                    ".*",
                    "--insecure-ignore-sct",
                ]);
            }
            Trust::Key(k) => {
                cmd.arg("--key").arg(k);
            }
        }
        if let Some(blob) = run.blob {
            let blob_path = self.dir.path().join(format!("{}.blob", run.name));
            std::fs::write(&blob_path, blob).unwrap();
            cmd.arg(&blob_path);
        }
        let out = cmd.output().expect("run cosign");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "cosign {} on {}: {}\n{text}",
            run.args.join(" "),
            run.name,
            out.status
        );
        if out.status.success() {
            Verdict::Accepted
        } else {
            Verdict::Rejected(text)
        }
    }

    /// `cosign verify-blob` of a message-signature bundle over `blob`; bundles that carry an
    /// RFC 3161 timestamp are verified with `--use-signed-timestamps`.
    fn verify_blob(&self, name: &str, bundle: &[u8], blob: &[u8], trust: Trust) -> Verdict {
        let signed_timestamps = has_timestamp(bundle);
        self.cosign(
            Run {
                name,
                args: &["verify-blob"],
                blob: Some(blob),
                signed_timestamps,
            },
            bundle,
            trust,
        )
    }

    /// `cosign verify-blob-attestation` of a DSSE bundle whose statement names `image()`.
    fn verify_attestation(&self, name: &str, bundle: &[u8], trust: Trust) -> Verdict {
        let id = image();
        let digest = id.digest_hex().to_string();
        let args = [
            "verify-blob-attestation",
            "--type",
            COSIGN_SIGN_PREDICATE,
            "--digestAlg",
            "sha256",
            "--digest",
            &digest,
        ];
        self.cosign(
            Run {
                name,
                args: &args,
                blob: None,
                signed_timestamps: has_timestamp(bundle),
            },
            bundle,
            trust,
        )
    }
}

/// One cosign invocation.
struct Run<'a> {
    name: &'a str,
    args: &'a [&'a str],
    blob: Option<&'a [u8]>,
    signed_timestamps: bool,
}

fn has_timestamp(bundle: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(bundle).unwrap();
    !v["verificationMaterial"]["timestampVerificationData"].is_null()
}

/// The image whose simple-signing payload the message-signature fixtures sign.
fn image() -> ImageId {
    ImageId {
        registry: "registry.test".into(),
        repository: "acme/app".into(),
        digest: format!("sha256:{}", "ab".repeat(32)),
    }
}

#[track_caller]
fn accepted(v: Verdict) {
    assert_eq!(v, Verdict::Accepted, "cosign must accept this good fixture");
}

/// Rejected, and cosign's message names the reason (a loose keyword, case-insensitive), so a
/// twin cannot pass by failing for an unrelated reason.
#[track_caller]
fn rejected(v: Verdict, any_of: &[&str]) {
    match v {
        Verdict::Accepted => panic!("cosign accepted a broken twin"),
        Verdict::Rejected(text) => {
            let lower = text.to_lowercase();
            assert!(
                any_of.iter().any(|k| lower.contains(k)),
                "cosign rejected it, but not for the expected reason ({any_of:?}):\n{text}"
            );
        }
    }
}

// ---- the fixtures' own arithmetic (no cosign needed) --------------------------------------

/// RFC 6962 roots of the first 1..=8 leaves of the Certificate Transparency test vectors.
#[test]
fn merkle_roots_match_rfc6962_test_vectors() {
    let leaves: Vec<Vec<u8>> = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect();
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let hashes: Vec<_> = leaves.iter().map(|l| leaf_hash(l)).collect();
    for (n, want) in roots.iter().enumerate() {
        assert_eq!(
            hex::encode(root(&hashes[..=n])),
            *want,
            "root of {} leaves",
            n + 1
        );
    }
}

/// Every audit path of every tree up to 20 leaves verifies, and no flipped path does.
#[test]
fn audit_paths_verify_and_tampered_ones_do_not() {
    let hashes: Vec<_> = (0..20u8).map(|i| leaf_hash(&[i])).collect();
    for n in 1..=hashes.len() {
        let r = root(&hashes[..n]);
        for m in 0..n {
            let mut path = audit_path(m, &hashes[..n]);
            assert!(
                verify_inclusion(m as u64, n as u64, &hashes[m], &path, &r),
                "{m}/{n}"
            );
            if let Some(h) = path.first_mut() {
                h[5] ^= 0x80;
                assert!(!verify_inclusion(m as u64, n as u64, &hashes[m], &path, &r));
            }
        }
    }
}

#[test]
fn log_ids_and_key_hints_follow_each_log_generation() {
    use sha2::{Digest, Sha256};
    let v1 = tlog::Log::rekor_v1("rekor.test");
    let id: [u8; 32] = Sha256::digest(&v1.key.spki_der).into();
    assert_eq!(v1.log_id, id);
    assert_eq!(v1.key_hint, id[..4]);
    assert!(v1.origin.starts_with("rekor.test - "));
    let v2 = tlog::Log::rekor_v2("log.test", tlog::KeyKind::Ed25519);
    let mut pre = b"log.test\n\x01".to_vec();
    pre.extend_from_slice(&v2.key.spki_der[v2.key.spki_der.len() - 32..]);
    let id: [u8; 32] = Sha256::digest(&pre).into();
    assert_eq!(v2.log_id, id);
    assert_eq!(v2.key_hint, id[..4]);
    let e = v2.log("hashedrekord", "0.0.2", b"{}");
    assert!(e.proof.checkpoint.starts_with("log.test\n"));
    assert!(e.integrated_time.is_none() && e.set_b64.is_none());
    let cp = &e.proof;
    assert!(verify_inclusion(
        cp.log_index,
        cp.tree_size,
        &leaf_hash(&e.body),
        &cp.hashes,
        &cp.root_hash
    ));
}

#[test]
fn timestamp_response_is_well_formed_der() {
    let tsa = Tsa::new("t");
    let resp = tsa.stamp_with(&Stamp {
        nonce: Some(42),
        ..Stamp::over(b"sig")
    });
    // SEQUENCE { SEQUENCE { INTEGER 0 } ... }: status granted first.
    assert_eq!(&resp[..1], &[0x30]);
    assert!(resp.windows(3).any(|w| w == [0x02, 0x01, 0x00]));
    let token = tsa.token_der(&Stamp::over(b"sig"));
    assert!(resp.len() > token.len());
}

// ---- cosign's verdicts ----------------------------------------------------------------------

macro_rules! needs_cosign {
    () => {
        if !cosign_available() {
            return;
        }
    };
}

#[test]
fn rekor_v2_keyless_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_keyless(&w.sigstore, &payload, &leaf, Twist::None);
    accepted(w.verify_blob("v2-keyless", &b, &payload, Trust::AnyIdentity));
}

#[test]
fn rekor_v2_key_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_key(&w.sigstore, &payload, &w.pki.key, Twist::None);
    accepted(w.verify_blob("v2-key", &b, &payload, Trust::Key(&w.pki.key.path)));
}

#[test]
fn rekor_v2_ecdsa_log_keyless_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::google());
    let payload = simple_signing_payload(&image());
    let b = bundles::message_bundle(
        &w.sigstore,
        &w.sigstore.rekor_v2_ecdsa,
        &payload,
        &Signer::Keyless(&leaf),
        true,
        Twist::None,
    );
    accepted(w.verify_blob("v2-ecdsa-keyless", &b, &payload, Trust::AnyIdentity));
}

#[test]
fn rekor_v1_keyless_with_set_and_proof_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v1_keyless(&w.sigstore, &payload, &leaf, Twist::None);
    accepted(w.verify_blob("v1-keyless", &b, &payload, Trust::AnyIdentity));
}

#[test]
fn rekor_v1_key_with_set_and_proof_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v1_key(&w.sigstore, &payload, &w.pki.key, Twist::None);
    accepted(w.verify_blob("v1-key", &b, &payload, Trust::Key(&w.pki.key.path)));
}

#[test]
fn rekor_v2_keyless_bad_proof_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_keyless(&w.sigstore, &payload, &leaf, Twist::BadProof);
    rejected(
        w.verify_blob("v2-bad-proof", &b, &payload, Trust::AnyIdentity),
        &["calculated root"],
    );
}

#[test]
fn rekor_v2_key_bad_proof_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_key(&w.sigstore, &payload, &w.pki.key, Twist::BadProof);
    rejected(
        w.verify_blob(
            "v2-key-bad-proof",
            &b,
            &payload,
            Trust::Key(&w.pki.key.path),
        ),
        &["calculated root"],
    );
}

#[test]
fn rekor_v1_bad_proof_with_valid_set_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v1_keyless(&w.sigstore, &payload, &leaf, Twist::BadProof);
    rejected(
        w.verify_blob("v1-bad-proof", &b, &payload, Trust::AnyIdentity),
        &["calculated root"],
    );
}

#[test]
fn rekor_v2_checkpoint_by_another_key_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_keyless(&w.sigstore, &payload, &leaf, Twist::ForeignCheckpoint);
    rejected(
        w.verify_blob("v2-foreign-checkpoint", &b, &payload, Trust::AnyIdentity),
        &["checkpoint"],
    );
}

#[test]
fn rekor_v2_ecdsa_checkpoint_by_another_key_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::message_bundle(
        &w.sigstore,
        &w.sigstore.rekor_v2_ecdsa,
        &payload,
        &Signer::Keyless(&leaf),
        true,
        Twist::ForeignCheckpoint,
    );
    rejected(
        w.verify_blob(
            "v2-ecdsa-foreign-checkpoint",
            &b,
            &payload,
            Trust::AnyIdentity,
        ),
        &["checkpoint"],
    );
}

#[test]
fn rekor_v1_checkpoint_by_another_key_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v1_keyless(&w.sigstore, &payload, &leaf, Twist::ForeignCheckpoint);
    rejected(
        w.verify_blob("v1-foreign-checkpoint", &b, &payload, Trust::AnyIdentity),
        &["checkpoint"],
    );
}

/// A Rekor v2 checkpoint signed by the right log key for another origin (under the log's
/// signer name, and under the other name), and one of the right origin under another signer
/// name: cosign binds a Rekor v2 checkpoint to the host of the log's `baseUrl`.
#[test]
fn rekor_v2_checkpoint_of_another_origin_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    for log in [&w.sigstore.rekor_v2, &w.sigstore.rekor_v2_ecdsa] {
        let good = bundles::message_bundle(
            &w.sigstore,
            log,
            &payload,
            &Signer::Keyless(&leaf),
            true,
            Twist::None,
        );
        for (name, origin, signer, why) in [
            (
                "v2-other-origin",
                "log2099-1.rekor.test",
                log.key_name.as_str(),
                "got origin",
            ),
            (
                "v2-other-origin-and-name",
                "log2099-1.rekor.test",
                "log2099-1.rekor.test",
                "no verifiable signatures",
            ),
            (
                "v2-other-signer-name",
                log.origin.as_str(),
                "log2099-1.rekor.test",
                "no verifiable signatures",
            ),
        ] {
            let b = bundles::with_checkpoint(&good, |cp| {
                log.checkpoint_with_origin(cp, origin, signer)
            });
            rejected(
                w.verify_blob(name, &b, &payload, Trust::AnyIdentity),
                &[why],
            );
        }
        // Re-signed unchanged: still accepted (the rewrite itself breaks nothing).
        let b = bundles::with_checkpoint(&good, |cp| {
            log.checkpoint_with_origin(cp, &log.origin, &log.key_name)
        });
        accepted(w.verify_blob("v2-resigned", &b, &payload, Trust::AnyIdentity));
    }
}

/// Rekor v1: a `<host> - <tree ID>` checkpoint naming another host, signed by the right key,
/// is accepted (sigstore-go binds a v1 checkpoint by key only); a checkpoint of another shape
/// is bound to the `baseUrl` host.
#[test]
fn rekor_v1_checkpoint_origin_is_bound_by_shape() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let log = &w.sigstore.rekor_v1;
    let good = bundles::rekor_v1_keyless(&w.sigstore, &payload, &leaf, Twist::None);
    let b = bundles::with_checkpoint(&good, |cp| {
        log.checkpoint_with_origin(cp, "rekor.internal.example - 42", &log.key_name)
    });
    accepted(w.verify_blob("v1-other-host", &b, &payload, Trust::AnyIdentity));
    let b = bundles::with_checkpoint(&good, |cp| {
        log.checkpoint_with_origin(cp, "rekor.internal.example", &log.key_name)
    });
    rejected(
        w.verify_blob("v1-other-shape", &b, &payload, Trust::AnyIdentity),
        &["got origin"],
    );
}

#[test]
fn rekor_v2_timestamp_from_untrusted_tsa_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_keyless(&w.sigstore, &payload, &leaf, Twist::UntrustedTimestamp);
    rejected(
        w.verify_blob("v2-untrusted-tsa", &b, &payload, Trust::AnyIdentity),
        &["verified signed timestamps"],
    );
}

/// cosign requires a verified timestamp of a key-based bundle only when told to
/// (`--use-signed-timestamps`); by default it ignores the untrusted one and accepts.
#[test]
fn rekor_v2_key_timestamp_from_untrusted_tsa_is_rejected_when_timestamps_are_required() {
    needs_cosign!();
    let w = World::new();
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_key(&w.sigstore, &payload, &w.pki.key, Twist::UntrustedTimestamp);
    rejected(
        w.verify_blob(
            "v2-key-untrusted-tsa",
            &b,
            &payload,
            Trust::Key(&w.pki.key.path),
        ),
        &["verified signed timestamps"],
    );
    let lenient = w.cosign(
        Run {
            name: "v2-key-untrusted-tsa-lenient",
            args: &["verify-blob"],
            blob: Some(&payload),
            signed_timestamps: false,
        },
        &b,
        Trust::Key(&w.pki.key.path),
    );
    assert_eq!(
        lenient,
        Verdict::Accepted,
        "cosign without --use-signed-timestamps ignores a key-based bundle's timestamp"
    );
}

#[test]
fn rekor_v2_timestamp_imprint_over_other_bytes_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_keyless(&w.sigstore, &payload, &leaf, Twist::ImprintOverOtherBytes);
    rejected(
        w.verify_blob("v2-other-imprint", &b, &payload, Trust::AnyIdentity),
        &["hashed messages don't match"],
    );
}

#[test]
fn rekor_v2_certificate_expired_at_the_timestamp_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = expired_leaf(&w.pki.ca, &Identity::github());
    let payload = simple_signing_payload(&image());
    let b = bundles::rekor_v2_keyless(&w.sigstore, &payload, &leaf, Twist::None);
    rejected(
        w.verify_blob("v2-expired-cert", &b, &payload, Trust::AnyIdentity),
        &["leaf certificate verification failed"],
    );
}

#[test]
fn rekor_v2_dsse_keyless_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let b = bundles::dsse_bundle(
        &w.sigstore,
        &w.sigstore.rekor_v2,
        &cosign_statement(&image()),
        &Signer::Keyless(&leaf),
        true,
        Twist::None,
    );
    accepted(w.verify_attestation("v2-dsse-keyless", &b, Trust::AnyIdentity));
}

#[test]
fn rekor_v2_dsse_key_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let b = bundles::dsse_bundle(
        &w.sigstore,
        &w.sigstore.rekor_v2,
        &cosign_statement(&image()),
        &Signer::Key(&w.pki.key),
        true,
        Twist::None,
    );
    accepted(w.verify_attestation("v2-dsse-key", &b, Trust::Key(&w.pki.key.path)));
}

#[test]
fn rekor_v1_dsse_keyless_with_set_and_proof_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let b = bundles::dsse_bundle(
        &w.sigstore,
        &w.sigstore.rekor_v1,
        &cosign_statement(&image()),
        &Signer::Keyless(&leaf),
        false,
        Twist::None,
    );
    accepted(w.verify_attestation("v1-dsse-keyless", &b, Trust::AnyIdentity));
}

#[test]
fn rekor_v2_dsse_bad_proof_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let b = bundles::dsse_bundle(
        &w.sigstore,
        &w.sigstore.rekor_v2,
        &cosign_statement(&image()),
        &Signer::Keyless(&leaf),
        true,
        Twist::BadProof,
    );
    rejected(
        w.verify_attestation("v2-dsse-bad-proof", &b, Trust::AnyIdentity),
        &["calculated root"],
    );
}

/// Rekor v2 has no `dsse` kind any more; cosign 3.1 does not even load such a bundle.
#[test]
fn rekor_v2_obsolete_dsse_v002_entry_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let leaf = w.pki.ca.issue(&Identity::github());
    let b = bundles::dsse_bundle(
        &w.sigstore,
        &w.sigstore.rekor_v2,
        &cosign_statement(&image()),
        &Signer::Keyless(&leaf),
        true,
        Twist::ObsoleteDsseV002,
    );
    rejected(
        w.verify_attestation("v2-obsolete-dsse-v002", &b, Trust::AnyIdentity),
        &["new-bundle-format"],
    );
}

// ---- legacy `.sig` layers with a `rekord` entry, through the real registry ------------------

/// cosign 1.x keyless signatures logged as `rekord` 0.0.1: `cosign verify` of the image in
/// the real registry, the log key and Fulcio root given the legacy way (the
/// `SIGSTORE_REKOR_PUBLIC_KEY` / `SIGSTORE_ROOT_FILE` variables), `--insecure-ignore-sct`.
fn verify_legacy(w: &World, id: &ImageId, trust: Trust) -> Verdict {
    let home = w.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let rekor_pub = w.dir.path().join("rekor_v1.pub");
    std::fs::write(
        &rekor_pub,
        pem::encode(&pem::Pem::new(
            "PUBLIC KEY",
            w.sigstore.rekor_v1.key.spki_der.clone(),
        )),
    )
    .unwrap();
    let fulcio = w.dir.path().join("fulcio_chain.pem");
    std::fs::write(&fulcio, w.pki.ca.chain_pem()).unwrap();
    let closed = format!("http://127.0.0.1:{}", support::registry::free_port());
    let mut cmd = Command::new(COSIGN);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("TUF_ROOT", home.join("tuf"))
        .env("SIGSTORE_REKOR_PUBLIC_KEY", &rekor_pub)
        .env("SIGSTORE_ROOT_FILE", &fulcio)
        .env("HTTPS_PROXY", &closed)
        .env("https_proxy", &closed)
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .args(["verify", "--allow-http-registry", "--insecure-ignore-sct"]);
    match trust {
        Trust::AnyIdentity => {
            cmd.args([
                "--certificate-identity-regexp",
                ".*",
                "--certificate-oidc-issuer-regexp",
                ".*",
            ]);
        }
        Trust::Key(k) => {
            cmd.arg("--key").arg(k);
        }
    }
    cmd.arg(format!("{}/{}@{}", id.registry, id.repository, id.digest));
    let out = cmd.output().expect("run cosign");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "cosign verify (legacy) {}: {}\n{text}",
        id.repository, out.status
    );
    if out.status.success() {
        Verdict::Accepted
    } else {
        Verdict::Rejected(text)
    }
}

#[tokio::test]
async fn legacy_keyless_rekord_entry_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let registry = support::registry::shared();
    let oci = support::cosign::Oci::new(&registry.host);
    let img = oci
        .push_image(&support::unique_repo("rekord-keyless"), "v1")
        .await;
    let leaf = w.pki.ca.issue(&Identity::github());
    let layer =
        bundles::legacy_rekord_layer(&img.id, &Signer::Keyless(&leaf), &w.sigstore.rekor_v1);
    oci.push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    accepted(verify_legacy(&w, &img.id, Trust::AnyIdentity));
}

#[tokio::test]
async fn legacy_key_rekord_entry_is_accepted() {
    needs_cosign!();
    let w = World::new();
    let registry = support::registry::shared();
    let oci = support::cosign::Oci::new(&registry.host);
    let img = oci
        .push_image(&support::unique_repo("rekord-key"), "v1")
        .await;
    let layer =
        bundles::legacy_rekord_layer(&img.id, &Signer::Key(&w.pki.key), &w.sigstore.rekor_v1);
    oci.push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    accepted(verify_legacy(&w, &img.id, Trust::Key(&w.pki.key.path)));
}

#[tokio::test]
async fn legacy_rekord_entry_for_other_bytes_is_rejected() {
    needs_cosign!();
    let w = World::new();
    let registry = support::registry::shared();
    let oci = support::cosign::Oci::new(&registry.host);
    let img = oci
        .push_image(&support::unique_repo("rekord-other"), "v1")
        .await;
    let leaf = w.pki.ca.issue(&Identity::github());
    let layer = bundles::legacy_rekord_layer_logging(
        &img.id,
        &Signer::Keyless(&leaf),
        &w.sigstore.rekor_v1,
        b"some other payload",
    );
    oci.push_sig(&img.id.repository, &img.id.digest, &[layer])
        .await;
    rejected(
        verify_legacy(&w, &img.id, Trust::AnyIdentity),
        &["matching bundle to payload"],
    );
}

/// The production verifier loads the extended trusted root (Rekor v2 Ed25519 and ECDSA logs,
/// a timestamp authority) without error.
#[tokio::test]
async fn production_verifier_loads_the_extended_trusted_root() {
    let env = support::TestEnv::new();
    let config = Sigstore::new().config(&env, &[]);
    imageposture::verify::Verifier::new(config)
        .await
        .expect("the extended trusted root loads");
}
