//! Rekor transparency-log evidence carried offline: the signed entry timestamp (SET, the log's
//! promise of inclusion) and the logged entry body, which must describe the very signature,
//! key and payload being verified.

use base64::Engine as _;
use serde::Deserialize;
use sigstore::cosign::bundle::Payload;
use sigstore::crypto::Signature;

use super::trust::TrustMaterial;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One log entry with its inclusion promise.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Base64 of the canonicalized entry body.
    pub body: String,
    pub integrated_time: i64,
    pub log_index: i64,
    /// Lowercase hex log ID (SHA-256 of the log key).
    pub log_id: String,
    /// Base64 signature of the log over the entry.
    pub signed_entry_timestamp: String,
}

/// What the logged body says was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `hashedrekord`: a signature over an artifact hash, with the key or certificate.
    HashedRekord {
        sha256: String,
        signature: Vec<u8>,
        public_key_pem: Vec<u8>,
    },
    /// `dsse`: a DSSE envelope, its payload hash and signatures with their verifiers.
    Dsse {
        payload_sha256: String,
        signatures: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

impl LogEntry {
    /// Checks the SET with the trusted log key named by the entry's log ID.
    pub fn verify_promise(&self, trust: &TrustMaterial) -> Result<(), String> {
        let key = trust
            .rekor_keys
            .get(&self.log_id)
            .ok_or_else(|| format!("log {} is not in the trusted root", short(&self.log_id)))?;
        let payload = Payload {
            body: self.body.clone(),
            integrated_time: self.integrated_time,
            log_index: self.log_index,
            log_id: self.log_id.clone(),
        };
        let canonical = serde_json_canonicalizer::to_vec(&payload)
            .map_err(|e| format!("cannot canonicalize entry: {e}"))?;
        key.verify_signature(
            Signature::Base64Encoded(self.signed_entry_timestamp.as_bytes()),
            &canonical,
        )
        .map_err(|_| "signed entry timestamp does not verify with the log key".to_string())
    }

    pub fn body(&self) -> Result<Body, String> {
        let raw = B64
            .decode(self.body.as_bytes())
            .map_err(|e| format!("entry body is not base64: {e}"))?;
        let entry: RawBody =
            serde_json::from_slice(&raw).map_err(|e| format!("entry body: {e}"))?;
        let decode = |s: &str, what: &str| {
            B64.decode(s.trim())
                .map_err(|e| format!("entry {what} is not base64: {e}"))
        };
        match (entry.kind.as_str(), entry.spec) {
            ("hashedrekord", spec) => {
                let spec: HashedRekordSpec =
                    serde_json::from_value(spec).map_err(|e| format!("hashedrekord entry: {e}"))?;
                if spec.data.hash.algorithm != "sha256" {
                    return Err(format!("unsupported hash {}", spec.data.hash.algorithm));
                }
                Ok(Body::HashedRekord {
                    sha256: spec.data.hash.value.to_ascii_lowercase(),
                    signature: decode(&spec.signature.content, "signature")?,
                    public_key_pem: decode(&spec.signature.public_key.content, "key")?,
                })
            }
            ("dsse", spec) => {
                let spec: DsseSpec =
                    serde_json::from_value(spec).map_err(|e| format!("dsse entry: {e}"))?;
                let signatures = spec
                    .signatures
                    .iter()
                    .map(|s| {
                        Ok((
                            decode(&s.signature, "signature")?,
                            decode(&s.verifier, "verifier")?,
                        ))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Body::Dsse {
                    payload_sha256: spec.payload_hash.value.to_ascii_lowercase(),
                    signatures,
                })
            }
            (kind, _) => Err(format!(
                "unsupported log entry kind {:?}",
                crate::posture::bound(kind, 32)
            )),
        }
    }
}

/// The first 16 characters of a log ID, for messages. Characters, not bytes: the ID comes
/// from the artifact and may hold anything.
fn short(id: &str) -> String {
    crate::posture::bound(&id.chars().take(16).collect::<String>(), 64)
}

#[derive(Deserialize)]
struct RawBody {
    kind: String,
    spec: serde_json::Value,
}

#[derive(Deserialize)]
struct HashedRekordSpec {
    data: HashedData,
    signature: HashedSignature,
}

#[derive(Deserialize)]
struct HashedData {
    hash: Hash,
}

#[derive(Deserialize)]
struct Hash {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
struct HashedSignature {
    content: String,
    #[serde(rename = "publicKey")]
    public_key: Content,
}

#[derive(Deserialize)]
struct Content {
    content: String,
}

#[derive(Deserialize)]
struct DsseSpec {
    #[serde(rename = "payloadHash")]
    payload_hash: Hash,
    signatures: Vec<DsseSig>,
}

#[derive(Deserialize)]
struct DsseSig {
    signature: String,
    verifier: String,
}

/// Whether a logged key/cert PEM holds this DER (certificate or SPKI).
pub fn pem_holds_der(pem_bytes: &[u8], der: &[u8]) -> bool {
    pem::parse(pem_bytes)
        .map(|p| p.contents() == der)
        .unwrap_or(false)
}
