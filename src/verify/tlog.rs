//! Transparency-log entries carried offline and the evidence that they are in the log: the
//! signed entry timestamp (SET, Rekor v1's promise of inclusion, which also vouches for the
//! integrated time) and the RFC 6962 inclusion proof up to a checkpoint (a C2SP signed note)
//! signed by the log. Whatever evidence an entry carries must verify; an entry with none is
//! not evidence of anything.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use sigstore::crypto::{CosignVerificationKey, Signature};
use sigstore_types::{Checkpoint, Sha256Hash};

use super::rekor::Body;
use super::trust::{Log, TrustMaterial};
use crate::core::posture::bound;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Hashes in an inclusion proof: a tree of 2^64 leaves needs 64.
const MAX_PROOF_HASHES: usize = 64;
/// A checkpoint is a few lines; witness cosignatures add a line each.
const MAX_CHECKPOINT: usize = 16 << 10;

/// One log entry as an artifact carries it.
#[derive(Clone, Debug, Default)]
pub struct LogEntry {
    /// The canonicalized body as carried (base64): the SET covers this text.
    pub body_b64: String,
    pub log_index: i64,
    /// The log ID (raw bytes; SHA-256 of the log key for Rekor v1).
    pub log_id: Vec<u8>,
    /// Rekor v1's integrated time. Authenticated only by the SET.
    pub integrated_time: Option<i64>,
    /// The SET: the log's signature over the entry (raw signature bytes).
    pub promise: Option<Vec<u8>>,
    pub proof: Option<InclusionProof>,
}

/// An RFC 6962 inclusion proof with the checkpoint it leads to.
#[derive(Clone, Debug, Default)]
pub struct InclusionProof {
    pub log_index: i64,
    /// The root the proof claims; must be the checkpoint's (Rekor v1 repeats it).
    pub root_hash: Vec<u8>,
    pub tree_size: i64,
    pub hashes: Vec<Vec<u8>>,
    /// The signed note text. Bundles v0.1 carried proofs without one: such a proof is
    /// checked against its own root, and the entry then rests on its SET.
    pub checkpoint: Option<String>,
}

/// What verifying an entry established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Included {
    /// The integrated time, when a verified SET vouches for it.
    pub integrated_time: Option<i64>,
    pub body: Body,
}

impl LogEntry {
    /// The entry body bytes.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        B64.decode(self.body_b64.trim())
            .map_err(|e| format!("entry body is not base64: {e}"))
    }

    /// The body, parsed by kind.
    pub fn body(&self) -> Result<Body, String> {
        Body::parse(&self.body_bytes()?)
    }

    /// Checks every piece of inclusion evidence the entry carries against the trust root:
    /// the SET and/or the inclusion proof with its checkpoint. At least one is required.
    pub fn verify(&self, trust: &TrustMaterial) -> Result<Included, String> {
        let log = trust
            .log(&self.log_id)
            .ok_or_else(|| format!("log {} is not in the trusted root", short_id(&self.log_id)))?;
        let raw = self.body_bytes()?;
        let body = Body::parse(&raw)?;
        if self.promise.is_none() && self.proof.is_none() {
            return Err("log entry has neither an inclusion promise nor an inclusion proof".into());
        }
        let mut integrated_time = None;
        if let Some(set) = &self.promise {
            let time = self
                .integrated_time
                .ok_or("log entry has an inclusion promise but no integrated time")?;
            if !log.valid_at(time) {
                return Err("the log key was not in service at the integrated time".into());
            }
            self.verify_promise(log, set, time)?;
            integrated_time = Some(time);
        }
        if let Some(proof) = &self.proof {
            if proof.checkpoint.is_none() && self.promise.is_none() {
                return Err("inclusion proof has no checkpoint and the entry no promise".into());
            }
            proof.verify(log, &raw, self.log_index, body.kind().is_v2())?;
        }
        Ok(Included {
            integrated_time,
            body,
        })
    }

    fn verify_promise(&self, log: &Log, set: &[u8], time: i64) -> Result<(), String> {
        let payload = sigstore::cosign::bundle::Payload {
            body: self.body_b64.clone(),
            integrated_time: time,
            log_index: self.log_index,
            log_id: hex::encode(&self.log_id),
        };
        let canonical = serde_json_canonicalizer::to_vec(&payload)
            .map_err(|e| format!("cannot canonicalize entry: {e}"))?;
        log.key
            .verify_signature(Signature::Raw(set), &canonical)
            .map_err(|_| "signed entry timestamp does not verify with the log key".to_string())
    }
}

impl InclusionProof {
    /// The leaf (RFC 6962: SHA-256 of 0x00 and the body) is in the tree the checkpoint signs.
    fn verify(&self, log: &Log, body: &[u8], entry_index: i64, v2: bool) -> Result<(), String> {
        let (root, tree_size) = match &self.checkpoint {
            Some(text) => {
                let checkpoint = verify_checkpoint(log, text, bound_origin(log, text, v2)?)?;
                let root = *checkpoint.root_hash();
                // Rekor v1 repeats the root beside the checkpoint; Rekor v2 leaves it
                // unauthenticated.
                if !v2 && self.root_hash != root.as_bytes() {
                    return Err("inclusion proof root is not the checkpoint's root".into());
                }
                let tree_size = checkpoint.tree_size();
                if !v2 && u64::try_from(self.tree_size).ok() != Some(tree_size) {
                    return Err("inclusion proof tree size is not the checkpoint's".into());
                }
                (root, tree_size)
            }
            None => (
                Sha256Hash::try_from(self.root_hash.as_slice())
                    .map_err(|_| "proof root hash is not 32 bytes")?,
                u64::try_from(self.tree_size).map_err(|_| "negative tree size")?,
            ),
        };
        // Rekor v1's proof index is within the shard; Rekor v2 has one index.
        let index = if v2 { entry_index } else { self.log_index };
        let index = u64::try_from(index).map_err(|_| "negative log index")?;
        if self.hashes.len() > MAX_PROOF_HASHES {
            return Err("inclusion proof is too long".into());
        }
        let hashes = self
            .hashes
            .iter()
            .map(|h| Sha256Hash::try_from(h.as_slice()).map_err(|_| "proof hash is not 32 bytes"))
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = sigstore_merkle::hash_leaf(body);
        sigstore_merkle::verify_inclusion_proof(&leaf, index, tree_size, &hashes, &root)
            .map_err(|e| format!("inclusion proof does not verify: {e}"))
    }
}

/// The origin a checkpoint must name, as sigstore-go (cosign 3) decides it: a checkpoint of
/// Rekor v1's shape (`<host> - <tree ID>` on its first line) for a Rekor v1 entry is bound to
/// its log by the key alone (sigstore-go checks no v1 origin: Rekor v1 writes whatever host
/// name its server was given, which a private deployment need not have put in `baseUrl`);
/// any other checkpoint, and every Rekor v2 entry's, must name the host of the log's
/// `baseUrl` as its origin and as the signer of the signature that verifies.
fn bound_origin<'a>(log: &'a Log, text: &str, v2: bool) -> Result<Option<&'a str>, String> {
    if !v2 && text.lines().count() >= 4 && is_v1_origin(text.lines().next().unwrap_or("")) {
        return Ok(None);
    }
    match log.origin.as_deref() {
        Some(origin) => Ok(Some(origin)),
        None => Err(
            "the trusted root gives no baseUrl for this log: its checkpoint origin cannot be checked"
                .into(),
        ),
    }
}

/// `<anything> - <decimal tree ID>`: a Rekor v1 signed tree head's origin.
fn is_v1_origin(line: &str) -> bool {
    line.rsplit_once(" - ")
        .is_some_and(|(_, tree)| !tree.is_empty() && tree.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses a checkpoint and requires a signature by `log`'s key. The signature line's key ID
/// must name the log: the first four bytes of its log ID (Rekor v1: SHA-256 of the key;
/// Rekor v2: the C2SP key ID), or the C2SP Ed25519 key ID computed from the line's name.
/// With an `origin`, the checkpoint must name it on its first line, and the signature must
/// be the one signed under that name (a C2SP note verifier is named after the log's origin).
pub fn verify_checkpoint(
    log: &Log,
    text: &str,
    origin: Option<&str>,
) -> Result<Checkpoint, String> {
    if text.len() > MAX_CHECKPOINT {
        return Err("checkpoint is too large".into());
    }
    let checkpoint = Checkpoint::from_text(text)
        .map_err(|e| format!("checkpoint: {}", bound(&e.to_string(), 120)))?;
    if let Some(origin) = origin {
        if checkpoint.origin() != origin {
            return Err(format!(
                "checkpoint origin {:?} is not the log's origin {:?}",
                bound(checkpoint.origin(), 80),
                bound(origin, 80)
            ));
        }
    }
    let mut named = false;
    for sig in checkpoint.signatures() {
        if origin.is_some_and(|o| sig.name != o) {
            continue;
        }
        let hint = sig.key_id.as_bytes();
        let ours = log.id.get(..4) == Some(hint.as_slice())
            || ed25519_key_id(&sig.name, &log.spki)
                .as_ref()
                .and_then(|id| id.get(..4))
                == Some(hint.as_slice());
        if !ours {
            continue;
        }
        named = true;
        if verify_note(&log.key, checkpoint.signed_data(), sig.signature.as_bytes()) {
            return Ok(checkpoint);
        }
    }
    Err(if named {
        "checkpoint signature does not verify with the log key".into()
    } else {
        "checkpoint is not signed by the log".into()
    })
}

fn verify_note(key: &CosignVerificationKey, note: &[u8], signature: &[u8]) -> bool {
    key.verify_signature(Signature::Raw(signature), note)
        .is_ok()
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// C2SP signed-note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key).
fn ed25519_key_id(name: &str, spki: &[u8]) -> Option<[u8; 32]> {
    let raw = spki.strip_prefix(ED25519_SPKI_PREFIX.as_slice())?;
    if raw.len() != 32 {
        return None;
    }
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, 0x01]);
    h.update(raw);
    Some(h.finalize().into())
}

/// The first eight bytes of a log ID in hex, for messages.
fn short_id(id: &[u8]) -> String {
    hex::encode(id.iter().take(8).copied().collect::<Vec<u8>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(data);
        h.finalize().into()
    }

    fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }

    #[test]
    fn ed25519_key_ids_follow_c2sp() {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend([9u8; 32]);
        let id = ed25519_key_id("log.example", &spki).unwrap();
        let mut h = Sha256::new();
        h.update(b"log.example\n\x01");
        h.update([9u8; 32]);
        assert_eq!(id, <[u8; 32]>::from(h.finalize()));
        assert!(ed25519_key_id("log.example", &[0u8; 91]).is_none());
    }

    #[test]
    fn merkle_inclusion_of_three_leaves() {
        // Tree of 3: root = node(node(l0, l1), l2).
        let (l0, l1, l2) = (leaf(b"a"), leaf(b"b"), leaf(b"c"));
        let root = node(&node(&l0, &l1), &l2);
        let hashes = [Sha256Hash::new(l0), Sha256Hash::new(l2)];
        let ok = sigstore_merkle::verify_inclusion_proof(
            &sigstore_merkle::hash_leaf(b"b"),
            1,
            3,
            &hashes,
            &Sha256Hash::new(root),
        );
        assert!(ok.is_ok());
        let bad = sigstore_merkle::verify_inclusion_proof(
            &sigstore_merkle::hash_leaf(b"x"),
            1,
            3,
            &hashes,
            &Sha256Hash::new(root),
        );
        assert!(bad.is_err());
    }

    fn log() -> Log {
        use rcgen::PublicKeyData as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = key.subject_public_key_info();
        Log {
            key: CosignVerificationKey::try_from_der(&spki).unwrap(),
            id: Sha256::digest(&spki).to_vec(),
            spki,
            origin: Some("log.example".into()),
            valid_from: None,
            valid_to: None,
        }
    }

    #[test]
    fn a_proof_without_checkpoint_is_checked_against_its_own_root() {
        // Bundle v0.1: the proof carries its root, no checkpoint; the SET authenticates.
        let (l0, l1) = (leaf(b"entry"), leaf(b"other"));
        let proof = |root: [u8; 32]| InclusionProof {
            log_index: 0,
            root_hash: root.to_vec(),
            tree_size: 2,
            hashes: vec![l1.to_vec()],
            checkpoint: None,
        };
        let log = log();
        assert!(proof(node(&l0, &l1))
            .verify(&log, b"entry", 0, false)
            .is_ok());
        assert!(proof(node(&l1, &l0))
            .verify(&log, b"entry", 0, false)
            .is_err());
        assert!(proof(node(&l0, &l1))
            .verify(&log, b"tampered", 0, false)
            .is_err());
    }

    #[test]
    fn rekor_v1_origins_are_recognised_by_their_tree_id() {
        assert!(is_v1_origin("rekor.sigstore.dev - 1193050959916656506"));
        assert!(is_v1_origin("rekor.test - 7"));
        assert!(!is_v1_origin("log2025-1.rekor.sigstore.dev"));
        assert!(!is_v1_origin("rekor.test - "));
        assert!(!is_v1_origin("rekor.test - 12a"));
        // A v1-shaped checkpoint of a Rekor v1 entry is bound by key only; a v2 entry's
        // always by origin, and a log without a baseUrl cannot bind it.
        let mut log = log();
        let v1 = "rekor.test - 7\n1\nAAAA\nTimestamp: 1\n\n\u{2014} x AAAA\n";
        assert_eq!(bound_origin(&log, v1, false), Ok(None));
        assert_eq!(bound_origin(&log, v1, true), Ok(Some("log.example")));
        let v2 = "log.example\n1\nAAAA\n\n\u{2014} x AAAA\n";
        assert_eq!(bound_origin(&log, v2, false), Ok(Some("log.example")));
        log.origin = None;
        assert!(bound_origin(&log, v2, true).is_err());
        assert_eq!(bound_origin(&log, v1, false), Ok(None));
    }

    #[test]
    fn checkpoints_need_the_log_signature() {
        let log = log();
        let note = "log.example\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
        let sign = |hint: &[u8]| {
            use base64::Engine as _;
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut sig = hint.to_vec();
            sig.extend(rcgen::SigningKey::sign(&kp, note.as_bytes()).unwrap());
            format!("{note}\n\u{2014} log.example {}\n", B64.encode(sig))
        };
        // Right hint, wrong key; wrong hint.
        let err = verify_checkpoint(&log, &sign(log.id.get(..4).unwrap()), None).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let err = verify_checkpoint(&log, &sign(&[0, 0, 0, 0]), None).unwrap_err();
        assert!(err.contains("not signed by the log"), "{err}");
        assert!(verify_checkpoint(&log, "garbage", None).is_err());
        assert!(verify_checkpoint(&log, &"x".repeat(MAX_CHECKPOINT + 1), None).is_err());
        let err = verify_checkpoint(&log, &sign(log.id.get(..4).unwrap()), Some("other.example"))
            .unwrap_err();
        assert!(err.contains("is not the log's origin"), "{err}");
    }
}
