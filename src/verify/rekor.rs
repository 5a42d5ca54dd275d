//! Transparency-log entry bodies as real logs wrote them: what each says was signed, with
//! which signature and by which key. Kinds: `hashedrekord` 0.0.1 (Rekor v1) and 0.0.2
//! (Rekor v2, protobuf-JSON; Rekor v2 logs DSSE envelopes this way too, over their PAE),
//! `rekord` 0.0.1 (cosign 1.x, 2021-22) and `dsse` 0.0.1. Rekor v2's withdrawn `dsse` 0.0.2
//! is refused, as cosign refuses it.

use base64::Engine as _;
use serde::Deserialize;

use crate::core::posture::bound;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Entry kinds and versions this verifier reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    HashedRekordV001,
    HashedRekordV002,
    RekordV001,
    DsseV001,
}

impl EntryKind {
    /// Rekor v2 kinds: proof and checkpoint only, the log does not vouch for a time.
    pub fn is_v2(self) -> bool {
        matches!(self, EntryKind::HashedRekordV002)
    }

    pub fn name(self) -> &'static str {
        match self {
            EntryKind::HashedRekordV001 => "hashedrekord 0.0.1",
            EntryKind::HashedRekordV002 => "hashedrekord 0.0.2",
            EntryKind::RekordV001 => "rekord 0.0.1",
            EntryKind::DsseV001 => "dsse 0.0.1",
        }
    }
}

/// The key or certificate an entry records for a signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verifier {
    /// PEM text (v0.0.1 kinds): a certificate or a public key.
    Pem(Vec<u8>),
    /// DER certificate (v0.0.2 kinds).
    Certificate(Vec<u8>),
    /// DER SubjectPublicKeyInfo (v0.0.2 kinds).
    PublicKey(Vec<u8>),
}

impl Verifier {
    /// Whether this verifier is exactly `der` (a certificate or an SPKI).
    pub fn holds(&self, der: &[u8]) -> bool {
        match self {
            Verifier::Pem(p) => pem_holds_der(p, der),
            Verifier::Certificate(d) | Verifier::PublicKey(d) => d == der,
        }
    }

    /// The recorded public key (SPKI DER), when the verifier is a key and not a certificate.
    pub fn public_key(&self) -> Option<Vec<u8>> {
        match self {
            Verifier::Pem(p) => pem::parse(p)
                .ok()
                .filter(|b| b.tag() == "PUBLIC KEY")
                .map(pem::Pem::into_contents),
            Verifier::PublicKey(d) => Some(d.clone()),
            Verifier::Certificate(_) => None,
        }
    }
}

/// What the logged body says was signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `hashedrekord` and `rekord`: one signature over an artifact, by its SHA-256.
    Hashed {
        kind: EntryKind,
        sha256: [u8; 32],
        signature: Vec<u8>,
        verifier: Verifier,
    },
    /// `dsse`: the SHA-256 of the envelope payload, and each signature with its verifier.
    Dsse {
        kind: EntryKind,
        payload_sha256: [u8; 32],
        signatures: Vec<(Vec<u8>, Verifier)>,
    },
}

impl Body {
    pub fn kind(&self) -> EntryKind {
        match self {
            Body::Hashed { kind, .. } | Body::Dsse { kind, .. } => *kind,
        }
    }

    /// Parses a canonicalized entry body (the bytes, not their base64).
    pub fn parse(raw: &[u8]) -> Result<Body, String> {
        let entry: RawBody = serde_json::from_slice(raw).map_err(|e| format!("entry body: {e}"))?;
        let spec = entry.spec;
        let v = |e: serde_json::Error| {
            format!(
                "{} {} entry: {e}",
                short(&entry.kind),
                short(&entry.api_version)
            )
        };
        match (entry.kind.as_str(), entry.api_version.as_str()) {
            ("hashedrekord", "0.0.1") => {
                let s: HashedRekordV1 = serde_json::from_value(spec).map_err(v)?;
                Ok(Body::Hashed {
                    kind: EntryKind::HashedRekordV001,
                    sha256: hex_sha256(&s.data.hash)?,
                    signature: b64(&s.signature.content, "signature")?,
                    verifier: Verifier::Pem(b64(&s.signature.public_key.content, "key")?),
                })
            }
            ("rekord", "0.0.1") => {
                let s: RekordV1 = serde_json::from_value(spec).map_err(v)?;
                if s.signature.format != "x509" {
                    return Err(format!(
                        "rekord signature format {:?} is not x509",
                        short(&s.signature.format)
                    ));
                }
                // The log keeps the hash; an entry as submitted may still carry the content.
                let sha256 = match (&s.data.hash, &s.data.content) {
                    (Some(h), _) => hex_sha256(h)?,
                    (None, Some(c)) => {
                        use sha2::Digest as _;
                        sha2::Sha256::digest(b64(c, "data")?).into()
                    }
                    (None, None) => return Err("rekord entry has no data hash".into()),
                };
                Ok(Body::Hashed {
                    kind: EntryKind::RekordV001,
                    sha256,
                    signature: b64(&s.signature.content, "signature")?,
                    verifier: Verifier::Pem(b64(&s.signature.public_key.content, "key")?),
                })
            }
            ("hashedrekord", "0.0.2") => {
                let s: HashedRekordV2Spec = serde_json::from_value(spec).map_err(v)?;
                let h = s.hashed_rekord_v002;
                Ok(Body::Hashed {
                    kind: EntryKind::HashedRekordV002,
                    sha256: b64_sha256(&h.data)?,
                    signature: b64(&h.signature.content, "signature")?,
                    verifier: h.signature.verifier.decode()?,
                })
            }
            ("dsse", "0.0.1") => {
                let s: DsseV1 = serde_json::from_value(spec).map_err(v)?;
                Ok(Body::Dsse {
                    kind: EntryKind::DsseV001,
                    payload_sha256: hex_sha256(&s.payload_hash)?,
                    signatures: s
                        .signatures
                        .iter()
                        .take(MAX_SIGNATURES)
                        .map(|sig| {
                            Ok((
                                b64(&sig.signature, "signature")?,
                                Verifier::Pem(b64(&sig.verifier, "verifier")?),
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                })
            }
            (kind, version) => Err(format!(
                "unsupported log entry kind {:?} version {:?}",
                short(kind),
                short(version)
            )),
        }
    }
}

/// Signatures read from one DSSE entry.
const MAX_SIGNATURES: usize = 16;

fn short(s: &str) -> String {
    bound(s, 32)
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    B64.decode(s.trim())
        .map_err(|e| format!("entry {what} is not base64: {e}"))
}

fn hex_sha256(h: &HexHash) -> Result<[u8; 32], String> {
    if !h.algorithm.eq_ignore_ascii_case("sha256") {
        return Err(format!("unsupported hash {:?}", short(&h.algorithm)));
    }
    let bytes = hex::decode(h.value.trim()).map_err(|e| format!("entry hash: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| "entry hash is not 32 bytes".into())
}

fn b64_sha256(h: &B64Hash) -> Result<[u8; 32], String> {
    if h.algorithm != "SHA2_256" {
        return Err(format!("unsupported hash {:?}", short(&h.algorithm)));
    }
    let bytes = b64(&h.digest, "digest")?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| "entry digest is not 32 bytes".into())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBody {
    kind: String,
    #[serde(default)]
    api_version: String,
    spec: serde_json::Value,
}

#[derive(Deserialize)]
struct HexHash {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
struct HashedRekordV1 {
    data: HashedData,
    signature: PemSignature,
}

#[derive(Deserialize)]
struct HashedData {
    hash: HexHash,
}

#[derive(Deserialize)]
struct PemSignature {
    content: String,
    #[serde(rename = "publicKey")]
    public_key: Content,
}

#[derive(Deserialize)]
struct Content {
    content: String,
}

#[derive(Deserialize)]
struct RekordV1 {
    data: RekordData,
    signature: RekordSignature,
}

#[derive(Deserialize)]
struct RekordData {
    hash: Option<HexHash>,
    content: Option<String>,
}

#[derive(Deserialize)]
struct RekordSignature {
    format: String,
    content: String,
    #[serde(rename = "publicKey")]
    public_key: Content,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseV1 {
    payload_hash: HexHash,
    signatures: Vec<DsseV1Signature>,
}

#[derive(Deserialize)]
struct DsseV1Signature {
    signature: String,
    verifier: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HashedRekordV2Spec {
    hashed_rekord_v002: HashedRekordV2,
}

#[derive(Deserialize)]
struct HashedRekordV2 {
    data: B64Hash,
    signature: V2Signature,
}

#[derive(Deserialize)]
struct B64Hash {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
struct V2Signature {
    content: String,
    verifier: V2Verifier,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V2Verifier {
    x509_certificate: Option<RawBytes>,
    public_key: Option<RawBytes>,
}

impl V2Verifier {
    fn decode(&self) -> Result<Verifier, String> {
        match (&self.x509_certificate, &self.public_key) {
            (Some(c), None) => Ok(Verifier::Certificate(b64(&c.raw_bytes, "certificate")?)),
            (None, Some(k)) => Ok(Verifier::PublicKey(b64(&k.raw_bytes, "key")?)),
            _ => Err("entry verifier must be one certificate or one key".into()),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

/// Whether a logged key/cert PEM holds this DER (certificate or SPKI).
pub fn pem_holds_der(pem_bytes: &[u8], der: &[u8]) -> bool {
    pem::parse(pem_bytes)
        .map(|p| p.contents() == der)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Body, String> {
        Body::parse(&serde_json::to_vec(&v).unwrap())
    }

    const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn rekord_as_cosign_1_logged_it() {
        let pem = B64.encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let body = parse(json!({
            "apiVersion": "0.0.1", "kind": "rekord",
            "spec": {
                "data": { "hash": { "algorithm": "sha256", "value": HASH } },
                "signature": { "content": "c2ln", "format": "x509", "publicKey": { "content": pem } }
            }
        }))
        .unwrap();
        let Body::Hashed {
            kind,
            sha256,
            signature,
            ..
        } = body
        else {
            panic!()
        };
        assert_eq!(kind, EntryKind::RekordV001);
        assert_eq!(hex::encode(sha256), HASH);
        assert_eq!(signature, b"sig");
        // Another signature format is not a cosign signature.
        assert!(parse(json!({
            "apiVersion": "0.0.1", "kind": "rekord",
            "spec": {
                "data": { "hash": { "algorithm": "sha256", "value": HASH } },
                "signature": { "content": "c2ln", "format": "pgp", "publicKey": { "content": pem } }
            }
        }))
        .is_err());
    }

    #[test]
    fn hashedrekord_v2_as_rekor_tiles_writes_it() {
        let body = parse(json!({
            "apiVersion": "0.0.2", "kind": "hashedrekord",
            "spec": { "hashedRekordV002": {
                "data": { "algorithm": "SHA2_256", "digest": B64.encode([7u8; 32]) },
                "signature": { "content": "c2ln", "verifier": {
                    "publicKey": { "rawBytes": "a2V5" }, "keyDetails": "PKIX_ECDSA_P256_SHA_256"
                } }
            } }
        }))
        .unwrap();
        assert_eq!(
            body,
            Body::Hashed {
                kind: EntryKind::HashedRekordV002,
                sha256: [7u8; 32],
                signature: b"sig".to_vec(),
                verifier: Verifier::PublicKey(b"key".to_vec()),
            }
        );
        assert!(body.kind().is_v2());
    }

    #[test]
    fn withdrawn_and_unknown_kinds_are_refused() {
        let err = parse(json!({ "apiVersion": "0.0.2", "kind": "dsse", "spec": {} })).unwrap_err();
        assert!(err.contains("unsupported"), "{err}");
        let err =
            parse(json!({ "apiVersion": "0.0.1", "kind": "intoto", "spec": {} })).unwrap_err();
        assert!(err.contains("unsupported"), "{err}");
        // A short hash is refused, not truncated or padded.
        assert!(parse(json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": { "data": { "hash": { "algorithm": "sha256", "value": "abcd" } },
                      "signature": { "content": "c2ln", "publicKey": { "content": "a2V5" } } }
        }))
        .is_err());
    }
}
