//! The Sigstore bundle (v0.1–v0.3) that cosign v3 attaches as an OCI referrer: a DSSE envelope
//! over an in-toto statement whose subject is the image digest, with the certificate and the
//! Rekor entry in its verification material.

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use sigstore::crypto::Signature;

use super::cert::Leaf;
use super::rekor::{pem_holds_der, Body, LogEntry};
use super::{Checked, Context, Failure, Signer};
use crate::posture::{bound, Reason, SignatureFormat, SignatureSource};

pub const BUNDLE_MEDIA_TYPES: &[&str] = &[
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];
/// The predicate cosign v3 uses for an image signature (other predicates are attestations).
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
const IN_TOTO: &str = "application/vnd.in-toto+json";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn is_bundle_type(media_type: &str) -> bool {
    BUNDLE_MEDIA_TYPES.contains(&media_type)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigstoreBundle {
    media_type: String,
    verification_material: Material,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    certificate: Option<RawBytes>,
    x509_certificate_chain: Option<Chain>,
    public_key: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<TlogEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct Chain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogEntry {
    log_index: Int64,
    log_id: LogId,
    kind_version: Option<KindVersion>,
    integrated_time: Int64,
    inclusion_promise: Option<Promise>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogId {
    key_id: String,
}

#[derive(Deserialize)]
struct KindVersion {
    kind: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Promise {
    signed_entry_timestamp: String,
}

/// Protobuf-JSON int64: a string, though some writers emit a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Str(String),
    Num(i64),
}

impl Int64 {
    fn get(&self) -> Result<i64, String> {
        match self {
            Int64::Num(n) => Ok(*n),
            Int64::Str(s) => s
                .parse()
                .map_err(|_| format!("{:?} is not an integer", bound(s, 24))),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(rename = "predicateType", default)]
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE pre-authentication encoding: what the envelope signature covers.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Verifies one bundle referrer for `image_digest`.
pub fn classify(raw: &[u8], image_digest: &str, ctx: &Context<'_>) -> Checked {
    let mut checked = Checked::new(SignatureSource::Referrer, SignatureFormat::Bundle);
    let result = verify(raw, image_digest, ctx, &mut checked);
    checked.finish(result)
}

fn verify(
    raw: &[u8],
    image_digest: &str,
    ctx: &Context<'_>,
    out: &mut Checked,
) -> Result<(), Failure> {
    let malformed = |m: String| Failure::new(Reason::Malformed, m);
    let unsupported = |m: String| Failure::new(Reason::UnsupportedFormat, m);
    let tlog_bad = |m: String| Failure::new(Reason::BadTransparencyLogEntry, m);

    let bundle: SigstoreBundle =
        serde_json::from_slice(raw).map_err(|e| malformed(format!("bundle: {e}")))?;
    if !is_bundle_type(&bundle.media_type) {
        return Err(unsupported(format!(
            "bundle media type {:?}",
            bound(&bundle.media_type, 80)
        )));
    }
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(unsupported(if bundle.message_signature.is_some() {
            "message-signature bundles are not image signatures".into()
        } else {
            "bundle has no DSSE envelope".into()
        }));
    };
    let payload = B64
        .decode(envelope.payload.as_bytes())
        .map_err(|e| malformed(format!("envelope payload is not base64: {e}")))?;
    let sig = envelope
        .signatures
        .first()
        .ok_or_else(|| malformed("envelope has no signature".into()))?;
    let signature = Signature::Base64Encoded(sig.sig.as_bytes())
        .decode_bytes()
        .map_err(|e| malformed(format!("envelope signature is not base64: {e}")))?;
    let material = bundle.verification_material;
    let (leaf, chain) = match (material.certificate, material.x509_certificate_chain) {
        (Some(c), _) => (
            Some(decode_cert(&c.raw_bytes).map_err(malformed)?),
            Vec::new(),
        ),
        (None, Some(chain)) => {
            let mut certs = chain.certificates.iter();
            let leaf = certs
                .next()
                .ok_or_else(|| malformed("empty certificate chain".into()))?;
            let rest = certs
                .take(8)
                .map(|c| {
                    B64.decode(c.raw_bytes.as_bytes())
                        .map_err(|e| malformed(format!("chain: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (Some(decode_cert(&leaf.raw_bytes).map_err(malformed)?), rest)
        }
        (None, None) if material.public_key.is_some() => (None, Vec::new()),
        (None, None) => return Err(malformed("bundle has no certificate or key".into())),
    };

    let entry = match material.tlog_entries.first() {
        Some(e) => {
            if e.kind_version.as_ref().is_some_and(|k| k.kind != "dsse") {
                return Err(unsupported("log entry kind is not dsse".into()));
            }
            let promise = e.inclusion_promise.as_ref().ok_or_else(|| {
                unsupported("log entry has no inclusion promise (inclusion proofs alone are not verified yet)".into())
            })?;
            let key_id = B64
                .decode(e.log_id.key_id.as_bytes())
                .map_err(|err| malformed(format!("log id: {err}")))?;
            Some(LogEntry {
                body: e.canonicalized_body.clone(),
                integrated_time: e.integrated_time.get().map_err(malformed)?,
                log_index: e.log_index.get().map_err(malformed)?,
                log_id: hex::encode(key_id),
                signed_entry_timestamp: promise.signed_entry_timestamp.clone(),
            })
        }
        None => None,
    };
    if let Some(e) = &entry {
        out.rekor_log_index = Some(e.log_index);
        out.integrated_time = Some(e.integrated_time);
    }
    let logged = entry.as_ref().map(|e| e.body()).transpose();

    // 1. The envelope signature.
    let message = pae(&envelope.payload_type, &payload);
    let signer = match &leaf {
        Some(leaf) => {
            let key = leaf.key().map_err(malformed)?;
            key.verify_signature(Signature::Raw(&signature), &message)
                .map_err(|_| {
                    Failure::new(
                        Reason::BadSignature,
                        "envelope signature does not verify with the certificate key",
                    )
                })?;
            Signer::Certificate
        }
        None => {
            let logged_key = match logged.as_ref() {
                Ok(Some(Body::Dsse { signatures, .. })) => signatures
                    .iter()
                    .find(|(s, _)| *s == signature)
                    .map(|(_, v)| v.as_slice()),
                _ => None,
            };
            ctx.keys.signer_for(&signature, &message, logged_key)?
        }
    };

    // 2. The statement must be a cosign signature naming this image.
    if envelope.payload_type != IN_TOTO {
        return Err(unsupported(format!(
            "payload type {:?}",
            bound(&envelope.payload_type, 64)
        )));
    }
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| malformed(format!("in-toto statement: {e}")))?;
    if statement.predicate_type != SIGN_PREDICATE {
        return Err(unsupported(format!(
            "predicate {:?} is not an image signature",
            bound(&statement.predicate_type, 80)
        )));
    }
    let (alg, hex_digest) = image_digest.split_once(':').unwrap_or(("", ""));
    if !statement.subject.iter().any(|s| {
        s.digest
            .get(alg)
            .is_some_and(|d| d.eq_ignore_ascii_case(hex_digest))
    }) {
        return Err(Failure::new(
            Reason::DigestMismatch,
            "statement subject is not this image",
        ));
    }

    // 3. Transparency log.
    let entry = match (entry, &signer) {
        (Some(e), _) => Some(e),
        (None, Signer::Certificate) => {
            return Err(tlog_bad("keyless bundle has no Rekor entry".into()))
        }
        (None, _) => None,
    };
    if let Some(entry) = &entry {
        entry.verify_promise(ctx.trust).map_err(tlog_bad)?;
        match logged.map_err(tlog_bad)? {
            Some(Body::Dsse {
                payload_sha256,
                signatures,
            }) => {
                if payload_sha256 != hex::encode(Sha256::digest(&payload)) {
                    return Err(tlog_bad("logged payload hash is not the envelope's".into()));
                }
                let want_der: &[u8] = match (&leaf, &signer) {
                    (Some(leaf), _) => leaf.der(),
                    (None, Signer::Key { spki, .. }) => spki,
                    (None, Signer::Certificate) => &[],
                };
                if !signatures
                    .iter()
                    .any(|(s, v)| *s == signature && pem_holds_der(v, want_der))
                {
                    return Err(tlog_bad(
                        "log entry does not hold this signature and key".into(),
                    ));
                }
            }
            _ => return Err(tlog_bad("log entry is not a dsse entry".into())),
        }
    }

    // 4. Identity.
    match signer {
        Signer::Certificate => {
            let (Some(leaf), Some(entry)) = (leaf, entry) else {
                return Err(Failure::new(
                    Reason::Malformed,
                    "keyless signature without a certificate or a log entry",
                ));
            };
            leaf.verify_chain(ctx.trust, &chain, entry.integrated_time)
                .map_err(|m| Failure::new(Reason::UntrustedCertificate, m))?;
            let (signer, issuer) = leaf
                .identity()
                .map_err(|m| Failure::new(Reason::UntrustedCertificate, m))?;
            out.keyless(signer, issuer);
        }
        Signer::Key { name, .. } => out.key(name),
    }
    Ok(())
}

fn decode_cert(b64: &str) -> Result<Leaf, String> {
    let der = B64
        .decode(b64.as_bytes())
        .map_err(|e| format!("certificate is not base64: {e}"))?;
    Leaf::from_der(&der)
}
