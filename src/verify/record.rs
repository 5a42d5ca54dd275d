//! Building the verdict on one signature artifact: what classification needs, how it fails,
//! and the record it fills in.

use super::keys::KeyRing;
use super::trust::TrustMaterial;
use crate::core::posture::{
    bound, BuildFacts, Reason, SignatureFormat, SignatureRecord, SignatureSource, SignerType,
    MAX_MESSAGE,
};

/// Everything one classification needs besides the artifact.
pub(crate) struct Context<'a> {
    pub trust: &'a TrustMaterial,
    pub keys: &'a KeyRing,
}

/// Why an artifact did not verify.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    reason: Reason,
    message: String,
    unknown: Option<Unknown>,
}

/// Trust material an artifact names and the trust root in use does not hold: the artifact
/// is invalid only once a refreshed trust root confirms it (a new log shard or CA otherwise
/// reads as a bad signature until a restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// A log entry names a log ID the trust root does not list.
    Log,
    /// The certificate chains to no CA the trust root lists.
    Ca,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            unknown: None,
        }
    }

    /// A failure that a newer trust root might undo.
    pub fn unknown(reason: Reason, unknown: Unknown, message: impl Into<String>) -> Self {
        Failure {
            unknown: Some(unknown),
            ..Failure::new(reason, message)
        }
    }
}

/// A signature record under construction. An artifact that turned out to be an attestation
/// (an in-toto statement with another predicate) is marked so: it is not a signature. A
/// failure for want of trust material is marked with what was unknown.
pub(crate) struct Checked(SignatureRecord, bool, Option<Unknown>);

impl Checked {
    pub(super) fn new(source: SignatureSource, format: SignatureFormat) -> Self {
        Checked(
            SignatureRecord {
                digest: None,
                via: None,
                source,
                format,
                verified: false,
                signer: None,
                issuer: None,
                signer_type: None,
                reason: Reason::Malformed,
                message: String::new(),
                rekor_log_index: None,
                integrated_time: None,
                signing_time: None,
                signing_time_source: None,
                build: None,
                key_fingerprint: None,
            },
            false,
            None,
        )
    }

    pub(super) fn attestation(mut self) -> Checked {
        self.1 = true;
        self.0.reason = Reason::UnsupportedFormat;
        self.0.message = "attestation (not an image signature)".into();
        self
    }

    /// Whether the artifact is an attestation rather than a signature.
    pub(crate) fn is_attestation(&self) -> bool {
        self.1
    }

    pub(super) fn keyless(
        &mut self,
        signer: String,
        issuer: Option<String>,
        build: Option<BuildFacts>,
    ) {
        self.0.signer = Some(signer);
        self.0.issuer = issuer;
        self.0.signer_type = Some(SignerType::Keyless);
        self.0.build = build;
    }

    pub(super) fn key(&mut self, name: String, fingerprint: Option<String>) {
        self.0.signer = Some(name);
        self.0.signer_type = Some(SignerType::Key);
        self.0.key_fingerprint = fingerprint;
    }

    pub(super) fn finish(mut self, result: Result<(), Failure>) -> Checked {
        match result {
            Ok(()) => {
                self.0.verified = true;
                self.0.reason = Reason::Verified;
            }
            Err(f) => {
                self.0.verified = false;
                self.0.signer = None;
                self.0.issuer = None;
                self.0.signer_type = None;
                self.0.signing_time = None;
                self.0.signing_time_source = None;
                self.0.build = None;
                self.0.key_fingerprint = None;
                self.0.reason = f.reason;
                self.0.message = bound(&f.message, MAX_MESSAGE);
                self.2 = f.unknown;
            }
        }
        self
    }

    pub(super) fn record(self) -> SignatureRecord {
        self.0
    }

    /// What the trust root did not know, when that is why the artifact failed.
    pub(super) fn unknown(&self) -> Option<Unknown> {
        self.2
    }

    pub(super) fn failed(
        source: SignatureSource,
        format: SignatureFormat,
        failure: Failure,
    ) -> Checked {
        Checked::new(source, format).finish(Err(failure))
    }
}

impl std::ops::Deref for Checked {
    type Target = SignatureRecord;
    fn deref(&self) -> &SignatureRecord {
        &self.0
    }
}

impl std::ops::DerefMut for Checked {
    fn deref_mut(&mut self) -> &mut SignatureRecord {
        &mut self.0
    }
}
