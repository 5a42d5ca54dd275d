//! A test transparency log that behaves like Rekor: an RFC 6962 Merkle tree over the entries
//! appended to it, C2SP signed-note checkpoints signed by the log key, inclusion proofs, and
//! (for a Rekor v1 log) signed entry timestamps. Entry bodies of every kind real logs hold:
//! Rekor v1 `hashedrekord` 0.0.1, `rekord` 0.0.1 (cosign 1.x), `dsse` 0.0.1, and Rekor v2
//! `hashedrekord` 0.0.2 (also how Rekor v2 logs DSSE: over the PAE) in the protobuf-JSON shape
//! the tile log writes, plus the obsolete `dsse` 0.0.2.
//!
//! Conventions, as cosign 3.1 (sigstore-go) checks them:
//! - Rekor v1: log ID = SHA-256 of the key's SPKI DER; checkpoint origin `<host> - <tree id>`,
//!   a `Timestamp: <ns>` extension line, signature key hint = first 4 bytes of the log ID.
//! - Rekor v2: origin = the host of the log's `baseUrl`. Ed25519 key: log ID =
//!   SHA-256(origin ‖ `\n` ‖ 0x01 ‖ raw key) (the C2SP key ID), key hint = its first 4 bytes.
//!   ECDSA key: log ID = SHA-256 of the SPKI DER, key hint = its first 4 bytes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::pki::{b64, sha256_hex, unix_now};

/// A SHA-256 Merkle tree hash.
pub type Hash = [u8; 32];

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// RFC 6962 `MTH` over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// RFC 6962 `PATH(m, D[n])`: the audit path for leaf `m`, ordered from the leaf up.
pub fn audit_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return vec![];
    }
    let k = split(n);
    if m < k {
        let mut p = audit_path(m, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = audit_path(m - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// Checks an inclusion proof the RFC 9162 2.1.3.2 way (used by the self-tests).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && &r == root
}

/// The signature algorithm of a log key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    EcdsaP256,
}

/// A log's signing key.
pub struct LogKey {
    pub kind: KeyKind,
    key: KeyPair,
    /// SubjectPublicKeyInfo DER.
    pub spki_der: Vec<u8>,
}

impl LogKey {
    pub fn new(kind: KeyKind) -> LogKey {
        let alg = match kind {
            KeyKind::Ed25519 => &PKCS_ED25519,
            KeyKind::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
        };
        let key = KeyPair::generate_for(alg).expect("log key");
        let spki_der = key.subject_public_key_info();
        LogKey {
            kind,
            key,
            spki_der,
        }
    }

    /// Ed25519: the raw 64-byte signature over `msg`; ECDSA: DER over SHA-256(`msg`).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.key.sign(msg).expect("log signature")
    }

    /// The raw 32-byte Ed25519 public key (the SPKI's last 32 bytes).
    fn ed25519_raw(&self) -> &[u8] {
        let n = self.spki_der.len();
        &self.spki_der[n - 32..]
    }

    /// `keyDetails` as a trusted root names it.
    pub fn key_details(&self) -> &'static str {
        match self.kind {
            KeyKind::Ed25519 => "PKIX_ED25519",
            KeyKind::EcdsaP256 => "PKIX_ECDSA_P256_SHA_256",
        }
    }
}

/// Which generation of Rekor a log imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Rekor v1 (Trillian): SETs, `<host> - <tree id>` checkpoints with a timestamp line.
    V1,
    /// Rekor v2 (tiles): no SET, no integrated time, checkpoints with the host as origin.
    V2,
}

/// An inclusion proof of one entry against a signed checkpoint of the whole tree.
#[derive(Clone, Debug)]
pub struct InclusionProof {
    pub log_index: u64,
    pub tree_size: u64,
    pub root_hash: Hash,
    /// Audit path, leaf first.
    pub hashes: Vec<Hash>,
    /// The signed note (checkpoint envelope).
    pub checkpoint: String,
}

impl InclusionProof {
    /// The bundle's protobuf-JSON `inclusionProof`.
    pub fn json(&self) -> Value {
        json!({
            "logIndex": self.log_index.to_string(),
            "rootHash": b64(self.root_hash),
            "treeSize": self.tree_size.to_string(),
            "hashes": self.hashes.iter().map(b64).collect::<Vec<_>>(),
            "checkpoint": { "envelope": self.checkpoint }
        })
    }
}

/// One logged entry, ready to be put in a bundle.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: String,
    pub version: String,
    /// The canonicalized body, exactly the bytes whose leaf hash is in the tree.
    pub body: Vec<u8>,
    pub log_index: u64,
    pub log_id: [u8; 32],
    /// Rekor v1 only.
    pub integrated_time: Option<i64>,
    /// Rekor v1 only: base64 DER signature over the canonical
    /// `{body, integratedTime, logID, logIndex}`.
    pub set_b64: Option<String>,
    pub proof: InclusionProof,
}

impl Entry {
    /// The bundle's protobuf-JSON `TransparencyLogEntry`.
    pub fn json(&self) -> Value {
        let mut e = json!({
            "logIndex": self.log_index.to_string(),
            "logId": { "keyId": b64(self.log_id) },
            "kindVersion": { "kind": self.kind, "version": self.version },
            "inclusionProof": self.proof.json(),
            "canonicalizedBody": b64(&self.body),
        });
        if let Some(t) = self.integrated_time {
            e["integratedTime"] = json!(t.to_string());
        }
        if let Some(set) = &self.set_b64 {
            e["inclusionPromise"] = json!({ "signedEntryTimestamp": set });
        }
        e
    }

    /// The cosign `dev.sigstore.cosign/bundle` annotation of a legacy `.sig` layer
    /// (Rekor v1 only: it carries the SET, not the proof).
    pub fn legacy_annotation(&self) -> Value {
        json!({
            "SignedEntryTimestamp": self.set_b64,
            "Payload": {
                "body": b64(&self.body),
                "integratedTime": self.integrated_time,
                "logIndex": self.log_index,
                "logID": hex::encode(self.log_id),
            }
        })
    }
}

/// A transparency log: key, identity and the tree of every body appended so far.
pub struct Log {
    pub version: Version,
    pub key: LogKey,
    /// `https://<host>`.
    pub base_url: String,
    /// The checkpoint's first line.
    pub origin: String,
    /// The signer name on checkpoint signature lines.
    pub key_name: String,
    /// The ID entries carry in `logId.keyId` and the trusted root lists.
    pub log_id: [u8; 32],
    /// Key hint on checkpoint signature lines.
    pub key_hint: [u8; 4],
    /// Leaf hashes; behind a lock so fixtures can log through `&Log`.
    leaves: Mutex<Vec<Hash>>,
}

fn first4(h: &[u8; 32]) -> [u8; 4] {
    [h[0], h[1], h[2], h[3]]
}

impl Log {
    /// A Rekor v1 log with an ECDSA P-256 key, as `rekor.sigstore.dev` is; it starts with a few
    /// unrelated entries so a proof has a real path.
    pub fn rekor_v1(host: &str) -> Log {
        static TREE: AtomicI64 = AtomicI64::new(1_193_050_959_916_656_506);
        let key = LogKey::new(KeyKind::EcdsaP256);
        let log_id: [u8; 32] = Sha256::digest(&key.spki_der).into();
        let log = Log {
            version: Version::V1,
            base_url: format!("https://{host}"),
            origin: format!("{host} - {}", TREE.fetch_add(1, Ordering::Relaxed)),
            key_name: host.into(),
            log_id,
            key_hint: first4(&log_id),
            key,
            leaves: Mutex::new(vec![]),
        };
        log.prefill();
        log
    }

    /// A Rekor v2 (tile) log with an Ed25519 or ECDSA P-256 key, e.g. host
    /// `log2025-1.rekor.test`.
    pub fn rekor_v2(host: &str, kind: KeyKind) -> Log {
        let key = LogKey::new(kind);
        let log_id: [u8; 32] = match kind {
            KeyKind::Ed25519 => {
                let mut h = Sha256::new();
                h.update(host.as_bytes());
                h.update(b"\n\x01");
                h.update(key.ed25519_raw());
                h.finalize().into()
            }
            KeyKind::EcdsaP256 => Sha256::digest(&key.spki_der).into(),
        };
        let log = Log {
            version: Version::V2,
            base_url: format!("https://{host}"),
            origin: host.into(),
            key_name: host.into(),
            log_id,
            key_hint: first4(&log_id),
            key,
            leaves: Mutex::new(vec![]),
        };
        log.prefill();
        log
    }

    /// A log with a fresh key of the same kind that claims this log's name, ID and key hint:
    /// what it signs must not verify with this log's key.
    pub fn impostor(&self) -> Log {
        Log {
            version: self.version,
            key: LogKey::new(self.key.kind),
            base_url: self.base_url.clone(),
            origin: self.origin.clone(),
            key_name: self.key_name.clone(),
            log_id: self.log_id,
            key_hint: self.key_hint,
            leaves: Mutex::new(self.leaves()),
        }
    }

    /// Three unrelated entries, so that a first real entry is not at index 0 (sigstore-go
    /// rejects log index 0 in some versions) and its proof has siblings.
    fn prefill(&self) {
        for i in 0..3 {
            self.append(format!("{{\"prefill\":{i}}}").as_bytes());
        }
    }

    /// A snapshot of the leaf hashes.
    pub fn leaves(&self) -> Vec<Hash> {
        self.leaves.lock().unwrap().clone()
    }

    pub fn size(&self) -> u64 {
        self.leaves.lock().unwrap().len() as u64
    }

    /// Appends a canonicalized body; returns its index.
    pub fn append(&self, body: &[u8]) -> u64 {
        let mut leaves = self.leaves.lock().unwrap();
        leaves.push(leaf_hash(body));
        leaves.len() as u64 - 1
    }

    /// The inclusion proof of entry `index` against a checkpoint of the current tree.
    pub fn prove(&self, index: u64) -> InclusionProof {
        let leaves = self.leaves();
        let root_hash = root(&leaves);
        InclusionProof {
            log_index: index,
            tree_size: leaves.len() as u64,
            root_hash,
            hashes: audit_path(index as usize, &leaves),
            checkpoint: self.checkpoint(leaves.len() as u64, &root_hash),
        }
    }

    /// The unsigned checkpoint body (the note text, ending in a newline).
    pub fn checkpoint_body(&self, size: u64, root_hash: &Hash) -> String {
        let mut s = format!("{}\n{size}\n{}\n", self.origin, b64(root_hash));
        if self.version == Version::V1 {
            s.push_str(&format!(
                "Timestamp: {}\n",
                unix_now() as i128 * 1_000_000_000
            ));
        }
        s
    }

    /// A C2SP signed note: body, blank line, `— <name> base64(key hint ‖ signature)`.
    pub fn checkpoint(&self, size: u64, root_hash: &Hash) -> String {
        self.sign_note(&self.checkpoint_body(size, root_hash))
    }

    /// Signs any note text with this log's key (for checkpoints with a twist).
    pub fn sign_note(&self, body: &str) -> String {
        self.sign_note_as(body, &self.key_name)
    }

    /// Signs note text with this log's key and key hint, under another signer `name`.
    pub fn sign_note_as(&self, body: &str, name: &str) -> String {
        let mut sig = self.key_hint.to_vec();
        sig.extend(self.key.sign(body.as_bytes()));
        format!("{body}\n\u{2014} {name} {}\n", b64(sig))
    }

    /// `checkpoint` (one of this log's) naming `origin` on its first line instead, signed again
    /// by this very log key, on a signature line under `name`: a checkpoint of another log
    /// that this log's key signed.
    pub fn checkpoint_with_origin(&self, checkpoint: &str, origin: &str, name: &str) -> String {
        let body = checkpoint.split_once("\n\n").expect("signed note").0;
        let rest = body.split_once('\n').expect("checkpoint lines").1;
        self.sign_note_as(&format!("{origin}\n{rest}\n"), name)
    }

    /// Rekor v1 signed entry timestamp over the canonical JSON payload.
    pub fn set(&self, body: &[u8], integrated_time: i64, log_index: u64) -> String {
        let canonical = serde_json_canonicalizer::to_vec(&json!({
            "body": b64(body),
            "integratedTime": integrated_time,
            "logIndex": log_index,
            "logID": hex::encode(self.log_id),
        }))
        .expect("canonical SET payload");
        b64(self.key.sign(&canonical))
    }

    /// Appends `body` (kind and version as the entry declares them) and returns the entry
    /// with its proof; Rekor v1 entries also get an integrated time a minute ago and a SET.
    /// The entry is followed by two unrelated leaves, so its proof has siblings on both sides
    /// and the tree size is no power of two.
    pub fn log(&self, kind: &str, version: &str, body: &[u8]) -> Entry {
        let index = self.append(body);
        for i in 0..2 {
            self.append(format!("{{\"after\":{index},\"n\":{i}}}").as_bytes());
        }
        let (integrated_time, set_b64) = match self.version {
            Version::V1 => {
                let t = unix_now() - 60;
                (Some(t), Some(self.set(body, t, index)))
            }
            Version::V2 => (None, None),
        };
        Entry {
            kind: kind.into(),
            version: version.into(),
            body: body.to_vec(),
            log_index: index,
            log_id: self.log_id,
            integrated_time,
            set_b64,
            proof: self.prove(index),
        }
    }

    /// This log as an entry of a trusted root's `tlogs`.
    pub fn trusted_root_entry(&self) -> Value {
        json!({
            "baseUrl": self.base_url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": b64(&self.key.spki_der),
                "keyDetails": self.key.key_details(),
                "validFor": { "start": "2020-01-01T00:00:00Z" }
            },
            "logId": { "keyId": b64(self.log_id) }
        })
    }
}

// ---- entry bodies ------------------------------------------------------------------------

/// What Rekor records as the verifier of a signature.
#[derive(Clone, Copy, Debug)]
pub enum Verifier<'a> {
    /// A Fulcio-style certificate, DER.
    Certificate(&'a [u8]),
    /// A public key, SPKI DER.
    PublicKey(&'a [u8]),
}

impl Verifier<'_> {
    /// PEM, as Rekor v1 bodies carry it (base64 of the PEM text).
    pub fn pem(&self) -> String {
        match self {
            Verifier::Certificate(d) => pem_lf("CERTIFICATE", d),
            Verifier::PublicKey(d) => pem_lf("PUBLIC KEY", d),
        }
    }

    /// The protobuf-JSON `Verifier` of Rekor v2 bodies.
    fn v2_json(&self) -> Value {
        match self {
            Verifier::Certificate(d) => json!({
                "x509Certificate": { "rawBytes": b64(d) },
                "keyDetails": "PKIX_ECDSA_P256_SHA_256"
            }),
            Verifier::PublicKey(d) => json!({
                "publicKey": { "rawBytes": b64(d) },
                "keyDetails": "PKIX_ECDSA_P256_SHA_256"
            }),
        }
    }
}

/// PEM with `\n` line endings, as cosign and Rekor write it (the `pem` crate defaults to CRLF).
pub fn pem_lf(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der.to_vec()), config)
}

fn canonical(v: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(v).expect("canonical JSON")
}

/// Rekor v1 `hashedrekord` 0.0.1 body: SHA-256 (hex) of the signed bytes.
pub fn hashedrekord_v001(signed: &[u8], signature: &[u8], verifier: Verifier) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": { "hash": { "algorithm": "sha256", "value": sha256_hex(signed) } },
            "signature": {
                "content": b64(signature),
                "publicKey": { "content": b64(verifier.pem()) }
            }
        }
    }))
}

/// Rekor v1 `rekord` 0.0.1 body as cosign 1.x left it in the log: Rekor replaced the uploaded
/// `data.content` by its hash and records the signature format `x509`.
pub fn rekord_v001(signed: &[u8], signature: &[u8], verifier: Verifier) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.1",
        "kind": "rekord",
        "spec": {
            "data": { "hash": { "algorithm": "sha256", "value": sha256_hex(signed) } },
            "signature": {
                "content": b64(signature),
                "format": "x509",
                "publicKey": { "content": b64(verifier.pem()) }
            }
        }
    }))
}

/// Rekor v1 `dsse` 0.0.1 body for an envelope (its JSON bytes) over `payload`.
pub fn dsse_v001(
    envelope_json: &[u8],
    payload: &[u8],
    signature: &[u8],
    verifier: Verifier,
) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": { "algorithm": "sha256", "value": sha256_hex(envelope_json) },
            "payloadHash": { "algorithm": "sha256", "value": sha256_hex(payload) },
            "signatures": [{ "signature": b64(signature), "verifier": b64(verifier.pem()) }]
        }
    }))
}

/// Rekor v2 `hashedrekord` 0.0.2 body: SHA-256 (base64) of the signed bytes, protobuf-JSON.
pub fn hashedrekord_v002(signed: &[u8], signature: &[u8], verifier: Verifier) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.2",
        "kind": "hashedrekord",
        "spec": {
            "hashedRekordV002": {
                "data": { "algorithm": "SHA2_256", "digest": b64(Sha256::digest(signed)) },
                "signature": { "content": b64(signature), "verifier": verifier.v2_json() }
            }
        }
    }))
}

/// Rekor v2 `dsse` 0.0.2 body for a DSSE envelope over `payload`: the shape rekor-tiles once
/// wrote. Rekor v2 dropped the kind (DSSE goes in as `hashedrekord` 0.0.2 over the PAE) and
/// cosign 3.1 refuses to load a bundle carrying it; kept for "unsupported entry" fixtures.
pub fn dsse_v002(payload: &[u8], signature: &[u8], verifier: Verifier) -> Vec<u8> {
    canonical(&json!({
        "apiVersion": "0.0.2",
        "kind": "dsse",
        "spec": {
            "dsseV002": {
                "payloadHash": { "algorithm": "SHA2_256", "digest": b64(Sha256::digest(payload)) },
                "signatures": [{ "content": b64(signature), "verifier": verifier.v2_json() }]
            }
        }
    }))
}
