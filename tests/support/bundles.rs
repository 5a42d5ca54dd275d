//! Complete Sigstore bundles (v0.3, `application/vnd.dev.sigstore.bundle.v0.3+json`) as cosign
//! writes them, over real logs ([`super::tlog`]) and a real timestamp authority
//! ([`super::tsa`]), plus the trusted root naming all of it. Each good bundle has broken twins
//! ([`Twist`]); `tests/tlog_matrix.rs` has the real cosign CLI judge every one, and
//! `tests/support/FIXTURES.md` lists its verdicts.

use std::path::{Path, PathBuf};

use imageposture::core::image::ImageId;
use imageposture::verify::{TrustSource, VerifierConfig};
use rcgen::PublicKeyData as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::cosign::{
    pae, simple_signing_payload, SigLayer, ANN_BUNDLE, ANN_CERTIFICATE, ANN_CHAIN, ANN_SIGNATURE,
    BUNDLE_V03, IN_TOTO,
};
use super::pki::{b64, unix_now, Ca, Identity, Leaf, Pki, Signer};
use super::tlog::{self, Entry, KeyKind, Log, Verifier};
use super::tsa::Tsa;

/// One thing wrong with an otherwise good bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Twist {
    None,
    /// The first audit-path hash is flipped (a Rekor v1 entry keeps its valid SET).
    BadProof,
    /// The checkpoint is signed by another key under the log's name and key hint.
    ForeignCheckpoint,
    /// The RFC 3161 timestamp comes from an authority the trusted root does not list.
    UntrustedTimestamp,
    /// The timestamp's message imprint is over other bytes than the signature.
    ImprintOverOtherBytes,
    /// DSSE bundles in a Rekor v2 log only: log the envelope as the obsolete `dsse` 0.0.2
    /// kind instead of `hashedrekord` 0.0.2 over the PAE (what Rekor v2 really accepts).
    ObsoleteDsseV002,
}

/// The test Sigstore instance beyond [`Pki`]: a Rekor v1 log with proofs, Rekor v2 logs
/// (Ed25519 like `log2025-1`, and ECDSA P-256), a trusted timestamp authority and an untrusted one.
pub struct Sigstore {
    pub rekor_v1: Log,
    pub rekor_v2: Log,
    pub rekor_v2_ecdsa: Log,
    pub tsa: Tsa,
    pub untrusted_tsa: Tsa,
}

impl Default for Sigstore {
    fn default() -> Self {
        Sigstore::new()
    }
}

impl Sigstore {
    pub fn new() -> Sigstore {
        Sigstore {
            rekor_v1: Log::rekor_v1("rekor.test"),
            rekor_v2: Log::rekor_v2("log2025-1.rekor.test", KeyKind::Ed25519),
            rekor_v2_ecdsa: Log::rekor_v2("log2025-ec.rekor.test", KeyKind::EcdsaP256),
            tsa: Tsa::new("test-tsa"),
            untrusted_tsa: Tsa::new("rogue-tsa"),
        }
    }

    /// The trusted root: `pki`'s Fulcio CA and SET-only Rekor log (so existing fixtures
    /// still verify), this instance's Rekor v1 and v2 logs, and the trusted TSA.
    pub fn trusted_root(&self, pki: &Pki) -> Value {
        let certs: Vec<_> = pki
            .ca
            .chain_der()
            .iter()
            .map(|d| json!({ "rawBytes": b64(d) }))
            .collect();
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [
                {
                    "baseUrl": "https://rekor.test",
                    "hashAlgorithm": "SHA2_256",
                    "publicKey": {
                        "rawBytes": b64(&pki.rekor.public_der),
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                        "validFor": { "start": "2020-01-01T00:00:00Z" }
                    },
                    "logId": { "keyId": b64(pki.rekor.log_id) }
                },
                self.rekor_v1.trusted_root_entry(),
                self.rekor_v2.trusted_root_entry(),
                self.rekor_v2_ecdsa.trusted_root_entry(),
            ],
            "certificateAuthorities": [{
                "subject": { "organization": "test", "commonName": "test-fulcio" },
                "uri": "https://fulcio.test",
                "certChain": { "certificates": certs },
                "validFor": { "start": "2020-01-01T00:00:00Z" }
            }],
            "ctlogs": [],
            "timestampAuthorities": [self.tsa.trusted_root_entry()]
        })
    }

    /// Writes [`Sigstore::trusted_root`] to `dir/trusted_root_tlog.json`.
    pub fn write_trusted_root(&self, pki: &Pki, dir: &Path) -> PathBuf {
        let path = dir.join("trusted_root_tlog.json");
        let text = serde_json::to_vec_pretty(&self.trusted_root(pki)).expect("trusted root JSON");
        std::fs::write(&path, text).expect("write trusted root");
        path
    }

    /// `env`'s verifier configuration with this instance's trusted root (written to `env.dir`)
    /// in place of the plain one, so bundles from here verify through the production path.
    pub fn config(&self, env: &super::TestEnv, hosts: &[&str]) -> VerifierConfig {
        let mut config = env.config(hosts);
        config.trust = TrustSource::File(self.write_trusted_root(&env.pki, env.dir.path()));
        config
    }

    /// The authority a twist stamps with, and the bytes it stamps.
    fn timestamp(&self, signature: &[u8], twist: Twist) -> Vec<u8> {
        match twist {
            Twist::UntrustedTimestamp => self.untrusted_tsa.stamp(signature),
            Twist::ImprintOverOtherBytes => self.tsa.stamp(b"some other bytes"),
            _ => self.tsa.stamp(signature),
        }
    }
}

/// A leaf from `ca` that was valid from an hour ago until 30 minutes ago: expired at any
/// timestamp or integrated time these fixtures produce.
pub fn expired_leaf(ca: &Ca, identity: &Identity) -> Leaf {
    let now = unix_now();
    ca.issue_valid(identity, now - 3600, now - 1800)
}

/// What the log records as the verifier, DER.
fn verifier_der(signer: &Signer) -> (Vec<u8>, bool) {
    match signer {
        Signer::Keyless(l) => (l.der.clone(), true),
        Signer::Key(k) => (k.key.subject_public_key_info(), false),
    }
}

fn verifier<'a>(der: &'a [u8], is_cert: bool) -> Verifier<'a> {
    if is_cert {
        Verifier::Certificate(der)
    } else {
        Verifier::PublicKey(der)
    }
}

/// Applies the log-side twists to an entry.
fn spoil_entry(log: &Log, entry: &mut Entry, twist: Twist) {
    match twist {
        Twist::BadProof => {
            let h = entry
                .proof
                .hashes
                .first_mut()
                .expect("a proof with at least one hash");
            h[0] ^= 0x01;
        }
        Twist::ForeignCheckpoint => {
            let body = entry
                .proof
                .checkpoint
                .split_once("\n\n")
                .expect("signed note")
                .0
                .to_string()
                + "\n";
            entry.proof.checkpoint = log.impostor().sign_note(&body);
        }
        _ => {}
    }
}

/// `verificationMaterial` for a signer, its log entry and optional timestamp.
fn material(signer: &Signer, entry: &Entry, timestamp: Option<Vec<u8>>) -> Value {
    let mut m = match signer {
        Signer::Keyless(l) => json!({ "certificate": { "rawBytes": b64(&l.der) } }),
        Signer::Key(k) => json!({
            "publicKey": { "hint": b64(Sha256::digest(k.key.subject_public_key_info())) }
        }),
    };
    m["tlogEntries"] = json!([entry.json()]);
    if let Some(ts) = timestamp {
        m["timestampVerificationData"] =
            json!({ "rfc3161Timestamps": [{ "signedTimestamp": b64(ts) }] });
    }
    m
}

/// A message-signature bundle over `payload` (for an image: its simple-signing payload),
/// logged in `log` as `hashedrekord` (0.0.1 in a Rekor v1 log, 0.0.2 in a Rekor v2 log).
/// Rekor v2 bundles always get an RFC 3161 timestamp (their only signing time); Rekor v1
/// bundles get one when `timestamped`.
pub fn message_bundle(
    sigstore: &Sigstore,
    log: &Log,
    payload: &[u8],
    signer: &Signer,
    timestamped: bool,
    twist: Twist,
) -> Vec<u8> {
    let signature = signer.sign(payload);
    let (der, is_cert) = verifier_der(signer);
    let v = verifier(&der, is_cert);
    let mut entry = match log.version {
        tlog::Version::V1 => log.log(
            "hashedrekord",
            "0.0.1",
            &tlog::hashedrekord_v001(payload, &signature, v),
        ),
        tlog::Version::V2 => log.log(
            "hashedrekord",
            "0.0.2",
            &tlog::hashedrekord_v002(payload, &signature, v),
        ),
    };
    spoil_entry(log, &mut entry, twist);
    let stamp = (timestamped || log.version == tlog::Version::V2)
        .then(|| sigstore.timestamp(&signature, twist));
    serde_json::to_vec(&json!({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": material(signer, &entry, stamp),
        "messageSignature": {
            "messageDigest": { "algorithm": "SHA2_256", "digest": b64(Sha256::digest(payload)) },
            "signature": b64(&signature)
        }
    }))
    .expect("bundle JSON")
}

/// A DSSE bundle over an in-toto `statement`, logged as Rekor logs it: `dsse` 0.0.1 in a
/// Rekor v1 log; in a Rekor v2 log `hashedrekord` 0.0.2 over SHA-256 of the envelope's PAE
/// with the envelope signature (Rekor v2 dropped its `dsse` 0.0.2 kind; sigstore-go and
/// sigstore-rust verify DSSE that way). Timestamped as [`message_bundle`] is.
pub fn dsse_bundle(
    sigstore: &Sigstore,
    log: &Log,
    statement: &[u8],
    signer: &Signer,
    timestamped: bool,
    twist: Twist,
) -> Vec<u8> {
    let signature = signer.sign(&pae(IN_TOTO, statement));
    let envelope = json!({
        "payload": b64(statement),
        "payloadType": IN_TOTO,
        "signatures": [{ "sig": b64(&signature), "keyid": "" }]
    });
    let (der, is_cert) = verifier_der(signer);
    let v = verifier(&der, is_cert);
    let mut entry = match log.version {
        tlog::Version::V1 => log.log(
            "dsse",
            "0.0.1",
            &tlog::dsse_v001(
                &serde_json::to_vec(&envelope).expect("envelope JSON"),
                statement,
                &signature,
                v,
            ),
        ),
        tlog::Version::V2 if twist == Twist::ObsoleteDsseV002 => {
            log.log("dsse", "0.0.2", &tlog::dsse_v002(statement, &signature, v))
        }
        tlog::Version::V2 => log.log(
            "hashedrekord",
            "0.0.2",
            &tlog::hashedrekord_v002(&pae(IN_TOTO, statement), &signature, v),
        ),
    };
    spoil_entry(log, &mut entry, twist);
    let stamp = (timestamped || log.version == tlog::Version::V2)
        .then(|| sigstore.timestamp(&signature, twist));
    serde_json::to_vec(&json!({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": material(signer, &entry, stamp),
        "dsseEnvelope": envelope
    }))
    .expect("bundle JSON")
}

/// Rekor v2 (Ed25519 log), keyless: Fulcio-style certificate, inclusion proof + checkpoint,
/// RFC 3161 timestamp, no SET, no integrated time.
pub fn rekor_v2_keyless(s: &Sigstore, payload: &[u8], leaf: &Leaf, twist: Twist) -> Vec<u8> {
    message_bundle(s, &s.rekor_v2, payload, &Signer::Keyless(leaf), true, twist)
}

/// Rekor v2 (Ed25519 log), key-based: `publicKey` hint, proof + checkpoint, timestamp.
pub fn rekor_v2_key(
    s: &Sigstore,
    payload: &[u8],
    key: &super::pki::TestKey,
    twist: Twist,
) -> Vec<u8> {
    message_bundle(s, &s.rekor_v2, payload, &Signer::Key(key), true, twist)
}

/// Rekor v1, keyless: certificate, SET + inclusion proof + checkpoint, integrated time.
pub fn rekor_v1_keyless(s: &Sigstore, payload: &[u8], leaf: &Leaf, twist: Twist) -> Vec<u8> {
    message_bundle(
        s,
        &s.rekor_v1,
        payload,
        &Signer::Keyless(leaf),
        false,
        twist,
    )
}

/// Rekor v1, key-based: `publicKey` hint, SET + inclusion proof + checkpoint.
pub fn rekor_v1_key(
    s: &Sigstore,
    payload: &[u8],
    key: &super::pki::TestKey,
    twist: Twist,
) -> Vec<u8> {
    message_bundle(s, &s.rekor_v1, payload, &Signer::Key(key), false, twist)
}

/// A legacy cosign `.sig` layer over `id`'s simple-signing payload whose Rekor entry is
/// `rekord` 0.0.1, as cosign 1.x (2021-22) made them: signature, certificate and chain
/// annotations (keyless), and the SET-bearing bundle annotation from the Rekor v1 `log`.
pub fn legacy_rekord_layer(id: &ImageId, signer: &Signer, log: &Log) -> SigLayer {
    legacy_rekord_layer_logging(id, signer, log, &simple_signing_payload(id))
}

/// As [`legacy_rekord_layer`], but the log entry hashes `logged` instead of the payload (a
/// genuine SET over an entry that describes other bytes).
pub fn legacy_rekord_layer_logging(
    id: &ImageId,
    signer: &Signer,
    log: &Log,
    logged: &[u8],
) -> SigLayer {
    let payload = simple_signing_payload(id);
    let signature = signer.sign(&payload);
    let (der, is_cert) = verifier_der(signer);
    let entry = log.log(
        "rekord",
        "0.0.1",
        &tlog::rekord_v001(logged, &signature, verifier(&der, is_cert)),
    );
    let mut annotations = Map::new();
    annotations.insert(ANN_SIGNATURE.into(), json!(b64(&signature)));
    if let Signer::Keyless(leaf) = signer {
        annotations.insert(ANN_CERTIFICATE.into(), json!(leaf.pem));
        annotations.insert(ANN_CHAIN.into(), json!(leaf.chain_pem));
    }
    annotations.insert(
        ANN_BUNDLE.into(),
        json!(entry.legacy_annotation().to_string()),
    );
    SigLayer {
        payload,
        annotations,
    }
}

/// `bundle` with its (first) log entry's checkpoint replaced by what `checkpoint` makes of it.
pub fn with_checkpoint(bundle: &[u8], checkpoint: impl Fn(&str) -> String) -> Vec<u8> {
    let mut b: Value = serde_json::from_slice(bundle).expect("bundle JSON");
    let envelope = &mut b["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]
        ["envelope"];
    let new = checkpoint(envelope.as_str().expect("a checkpoint"));
    *envelope = Value::String(new);
    serde_json::to_vec(&b).expect("bundle JSON")
}
