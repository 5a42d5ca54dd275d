//! The one verification path: an artifact in normal form ([`Artifact`]) against an image
//! digest and the trust root, with typed outcomes mapped onto the posture reasons.
//!
//! Order: (0) an in-toto statement with another predicate is an attestation, not a signature;
//! (1) the signature over the signed bytes, with the certified, configured or logged key;
//! (2) the content names this image; (3) every log entry verifies (SET and/or inclusion
//! proof + checkpoint) and records this very signature, key and payload; (4) every RFC 3161
//! timestamp verifies; (5) keyless: the certificate chains to a trusted CA at every verified
//! signing time, and the identity is read from it.

use sha2::{Digest as _, Sha256};

use super::keys::Signer;
use super::normalize::{Artifact, Content, Material, MAX_ENTRIES};
use super::record::{Checked, Context, Failure, Unknown};
use super::rekor::{Body, EntryKind, Verifier};
use super::timestamp;
use crate::core::posture::{bound, Reason, SignatureFormat, SignatureSource, TimeSource};

/// The predicate cosign v3 uses for an image signature (other predicates are attestations).
pub const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

/// Who a verified signature names.
#[derive(Debug, PartialEq, Eq)]
pub enum Identity {
    Keyless {
        signer: String,
        issuer: Option<String>,
        /// The certificate's CI extensions, when it carries any.
        build: Option<Box<crate::core::posture::BuildFacts>>,
    },
    Key {
        name: String,
        /// `sha256:` of the key's SPKI, when `name` is a configured name (else it is the
        /// fingerprint itself).
        fingerprint: Option<String>,
    },
}

/// A verified image signature.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    pub log_index: Option<i64>,
    pub integrated_time: Option<i64>,
    pub signing_time: Option<(i64, TimeSource)>,
}

/// What an artifact turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Signature(Verified),
    /// An in-toto statement with another predicate: neither a signature nor a failure.
    Attestation,
}

/// Verifies a normalized artifact for `image_digest`, and fills the record.
pub(crate) fn classify(
    artifact: Result<Artifact, Failure>,
    source: SignatureSource,
    format: SignatureFormat,
    image_digest: &str,
    ctx: &Context<'_>,
) -> Checked {
    let checked = Checked::new(source, format);
    let artifact = match artifact {
        Ok(a) => a,
        Err(f) => return checked.finish(Err(f)),
    };
    // The entry the record names, even when verification fails further on.
    let mut checked = checked;
    if let Some(e) = artifact.entries.first() {
        checked.rekor_log_index = Some(e.log_index);
        checked.integrated_time = e.integrated_time;
    }
    match verify(&artifact, image_digest, ctx) {
        Ok(Outcome::Attestation) => checked.attestation(),
        Ok(Outcome::Signature(v)) => {
            match v.identity {
                Identity::Keyless {
                    signer,
                    issuer,
                    build,
                } => checked.keyless(signer, issuer, build.map(|b| *b)),
                Identity::Key { name, fingerprint } => checked.key(name, fingerprint),
            }
            checked.rekor_log_index = v.log_index;
            checked.integrated_time = v.integrated_time;
            if let Some((t, src)) = v.signing_time {
                checked.signing_time = Some(t);
                checked.signing_time_source = Some(src);
            }
            checked.finish(Ok(()))
        }
        Err(f) => checked.finish(Err(f)),
    }
}

/// The verification itself, one path for every format.
pub(crate) fn verify(
    a: &Artifact,
    image_digest: &str,
    ctx: &Context<'_>,
) -> Result<Outcome, Failure> {
    let tlog_bad = |m: String| Failure::new(Reason::BadTransparencyLogEntry, m);

    // 0. What the content is: a cosign signature naming an image, or an attestation.
    let named = match &a.content {
        Content::SimpleSigning { payload, .. } => simple_signing_digest(payload)?,
        Content::Dsse {
            payload_type,
            payload,
            ..
        } => {
            if payload_type != IN_TOTO {
                return Err(Failure::new(
                    Reason::UnsupportedFormat,
                    format!("payload type {:?}", bound(payload_type, 64)),
                ));
            }
            match statement_subjects(payload)? {
                Some(subjects) => subjects,
                None => return Ok(Outcome::Attestation),
            }
        }
    };

    // 1. The signature, with the key this artifact claims.
    let signature = a.content.signature();
    let message = a.content.signed_message();
    if a.entries.len() > MAX_ENTRIES {
        return Err(Failure::new(
            Reason::Malformed,
            format!("more than {MAX_ENTRIES} log entries"),
        ));
    }
    let signer = match &a.material {
        Material::Certificate { leaf, .. } => {
            let key = leaf.key().map_err(|m| Failure::new(Reason::Malformed, m))?;
            key.verify_signature(sigstore::crypto::Signature::Raw(signature), &message)
                .map_err(|_| {
                    Failure::new(
                        Reason::BadSignature,
                        "signature does not verify with the certificate key",
                    )
                })?;
            Signer::Certificate
        }
        Material::Key => {
            // The key a log entry recorded for this signature (the entry is verified below).
            let logged = a
                .entries
                .iter()
                .filter_map(|e| e.body().ok())
                .find_map(|b| logged_key(&b, signature));
            ctx.keys
                .signer_for(signature, &message, logged.as_deref())?
        }
    };
    let signer_der: &[u8] = match (&a.material, &signer) {
        (Material::Certificate { leaf, .. }, _) => leaf.der(),
        (Material::Key, Signer::Key { spki, .. }) => spki,
        (Material::Key, Signer::Certificate) => &[],
    };

    // 2. The content names this image.
    if !named.matches(image_digest) {
        return Err(Failure::new(
            Reason::DigestMismatch,
            format!("signature is for {}, not this image", named.describe()),
        ));
    }

    // 3. The log: every entry verifies and records this signature, key and payload.
    if a.entries.is_empty() && matches!(a.material, Material::Certificate { .. }) {
        return Err(tlog_bad(
            "keyless signature has no transparency log entry".into(),
        ));
    }
    let payload_sha256: [u8; 32] = Sha256::digest(a.content.payload()).into();
    let mut log_times = Vec::new();
    for entry in &a.entries {
        if ctx.trust.log(&entry.log_id).is_none() {
            return Err(Failure::unknown(
                Reason::BadTransparencyLogEntry,
                Unknown::Log,
                format!(
                    "log {} is not in the trusted root",
                    hex::encode(entry.log_id.iter().take(8).copied().collect::<Vec<u8>>())
                ),
            ));
        }
        let included = entry.verify(ctx.trust).map_err(tlog_bad)?;
        describes(&included.body, &a.content, &payload_sha256, signer_der).map_err(tlog_bad)?;
        if let Some(t) = included.integrated_time {
            log_times.push(t);
        }
    }

    // 4. Timestamps over the signature.
    let tsa_times = timestamp::verify(&a.timestamps, signature, ctx.trust)
        .map_err(|m| Failure::new(Reason::BadTimestamp, m))?;

    let signing_time = log_times
        .iter()
        .map(|t| (*t, TimeSource::Tlog))
        .chain(tsa_times.iter().map(|t| (*t, TimeSource::Timestamp)))
        .min_by_key(|(t, _)| *t);
    let first = a.entries.first();
    let verified = |identity| Verified {
        identity,
        log_index: first.map(|e| e.log_index),
        integrated_time: log_times.first().copied(),
        signing_time,
    };

    // 5. Identity.
    match (signer, &a.material) {
        (Signer::Certificate, Material::Certificate { leaf, chain }) => {
            if signing_time.is_none() {
                return Err(Failure::new(
                    Reason::BadTimestamp,
                    "keyless signature has no verified signing time (no signed entry timestamp, no RFC 3161 timestamp)",
                ));
            }
            for t in log_times.iter().chain(tsa_times.iter()) {
                leaf.verify_chain(ctx.trust, chain, *t).map_err(|e| {
                    if e.unknown_issuer {
                        Failure::unknown(Reason::UntrustedCertificate, Unknown::Ca, e.message)
                    } else {
                        Failure::new(Reason::UntrustedCertificate, e.message)
                    }
                })?;
            }
            let (signer, issuer) = leaf
                .identity()
                .map_err(|m| Failure::new(Reason::UntrustedCertificate, m))?;
            let build = Some(Box::new(leaf.build_facts())).filter(|b| !b.is_empty());
            Ok(Outcome::Signature(verified(Identity::Keyless {
                signer,
                issuer,
                build,
            })))
        }
        (Signer::Key { name, spki }, _) => {
            let fingerprint = super::keys::fingerprint(&spki);
            let fingerprint = (fingerprint != name).then_some(fingerprint);
            Ok(Outcome::Signature(verified(Identity::Key {
                name,
                fingerprint,
            })))
        }
        (Signer::Certificate, Material::Key) => Err(Failure::new(
            Reason::Malformed,
            "keyless signature without a certificate",
        )),
    }
}

/// The public key a log body records for `signature`, when it is a key (not a certificate).
fn logged_key(body: &Body, signature: &[u8]) -> Option<Vec<u8>> {
    match body {
        Body::Hashed {
            signature: s,
            verifier,
            ..
        } if s == signature => verifier.public_key(),
        Body::Dsse { signatures, .. } => signatures
            .iter()
            .find(|(s, _)| s == signature)
            .and_then(|(_, v)| v.public_key()),
        _ => None,
    }
}

/// Whether a logged body describes this very signature over this payload, by this key.
fn describes(
    body: &Body,
    content: &Content,
    payload_sha256: &[u8; 32],
    signer_der: &[u8],
) -> Result<(), String> {
    let holds = |v: &Verifier| !signer_der.is_empty() && v.holds(signer_der);
    match (content, body) {
        (
            Content::SimpleSigning { signature, .. },
            Body::Hashed {
                sha256,
                signature: logged,
                verifier,
                ..
            },
        ) => {
            if sha256 != payload_sha256 {
                return Err("logged hash is not the payload's".into());
            }
            if logged != signature {
                return Err("logged signature is not this signature".into());
            }
            if !holds(verifier) {
                return Err("logged key is not the signing key".into());
            }
            Ok(())
        }
        (
            Content::Dsse { signature, .. },
            Body::Dsse {
                payload_sha256: logged,
                signatures,
                ..
            },
        ) => {
            if logged != payload_sha256 {
                return Err("logged payload hash is not the envelope's".into());
            }
            if !signatures.iter().any(|(s, v)| s == signature && holds(v)) {
                return Err("log entry does not hold this signature and key".into());
            }
            Ok(())
        }
        // Rekor v2 logs a DSSE envelope as `hashedrekord` 0.0.2 over its PAE (it has no
        // `dsse` kind), with the envelope signature.
        (
            Content::Dsse {
                payload_type,
                payload,
                signature,
            },
            Body::Hashed {
                kind: EntryKind::HashedRekordV002,
                sha256,
                signature: logged,
                verifier,
            },
        ) => {
            let pae_sha256: [u8; 32] =
                Sha256::digest(super::normalize::pae(payload_type, payload)).into();
            if *sha256 != pae_sha256 {
                return Err("logged hash is not the envelope's".into());
            }
            if logged != signature || !holds(verifier) {
                return Err("log entry does not hold this signature and key".into());
            }
            Ok(())
        }
        (Content::SimpleSigning { .. }, b) => Err(format!(
            "a {} entry cannot describe a simple-signing signature",
            b.kind().name()
        )),
        (Content::Dsse { .. }, b) => Err(format!(
            "a {} entry cannot describe a DSSE envelope",
            b.kind().name()
        )),
    }
}

/// Rekor kinds a bundle's `kindVersion` may name, for a consistency check with the body.
pub fn kind_named(kind: &str, version: &str) -> Option<EntryKind> {
    Some(match (kind, version) {
        ("hashedrekord", "0.0.1") => EntryKind::HashedRekordV001,
        ("hashedrekord", "0.0.2") => EntryKind::HashedRekordV002,
        ("rekord", "0.0.1") => EntryKind::RekordV001,
        ("dsse", "0.0.1") => EntryKind::DsseV001,
        _ => return None,
    })
}

/// The image(s) a signature names.
enum Named {
    /// The simple-signing `docker-manifest-digest`.
    Digest(String),
    /// The in-toto subjects' digests (algorithm, hex).
    Subjects(Vec<(String, String)>),
}

impl Named {
    fn matches(&self, image_digest: &str) -> bool {
        match self {
            Named::Digest(d) => d == image_digest,
            Named::Subjects(subjects) => {
                let (alg, hex) = image_digest.split_once(':').unwrap_or(("", ""));
                subjects
                    .iter()
                    .any(|(a, d)| a == alg && d.eq_ignore_ascii_case(hex))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Named::Digest(d) => bound(d, 80),
            Named::Subjects(_) => "another subject".into(),
        }
    }
}

#[derive(serde::Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(serde::Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(serde::Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

fn simple_signing_digest(payload: &[u8]) -> Result<Named, Failure> {
    let ss: SimpleSigning = serde_json::from_slice(payload).map_err(|e| {
        Failure::new(
            Reason::Malformed,
            format!("payload is not simple-signing JSON: {e}"),
        )
    })?;
    if !ss
        .critical
        .kind
        .eq_ignore_ascii_case("cosign container image signature")
    {
        return Err(Failure::new(
            Reason::Malformed,
            format!("unexpected payload type {:?}", bound(&ss.critical.kind, 64)),
        ));
    }
    Ok(Named::Digest(ss.critical.image.digest))
}

#[derive(serde::Deserialize)]
struct Statement {
    #[serde(default)]
    subject: Vec<Subject>,
    #[serde(rename = "predicateType", default)]
    predicate_type: String,
}

#[derive(serde::Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// The subjects of a cosign signing statement; `None` for another predicate (an attestation).
fn statement_subjects(payload: &[u8]) -> Result<Option<Named>, Failure> {
    let statement: Statement = serde_json::from_slice(payload)
        .map_err(|e| Failure::new(Reason::Malformed, format!("in-toto statement: {e}")))?;
    if statement.predicate_type != SIGN_PREDICATE {
        return Ok(None);
    }
    Ok(Some(Named::Subjects(
        statement
            .subject
            .into_iter()
            .take(64)
            .flat_map(|s| s.digest.into_iter())
            .collect(),
    )))
}
