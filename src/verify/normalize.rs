//! The one form every signature artifact is turned into before it is verified: what was
//! signed and the signature, the verification material (a certificate and its chain, or a
//! key to be found), the log entries and the RFC 3161 timestamps. `legacy` and `bundle` build
//! it from their formats; [`super::classify`] verifies it.

use std::borrow::Cow;

use super::cert::Leaf;
use super::tlog::LogEntry;

/// Log entries examined per artifact (real ones carry one).
pub const MAX_ENTRIES: usize = 8;

/// A signature artifact in normal form.
pub struct Artifact {
    pub content: Content,
    pub material: Material,
    pub entries: Vec<LogEntry>,
    /// DER RFC 3161 timestamp tokens over the signature bytes.
    pub timestamps: Vec<Vec<u8>>,
}

/// What was signed, and the signature.
pub enum Content {
    /// A cosign simple-signing payload, signed as is.
    SimpleSigning {
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
    /// A DSSE envelope: the signature covers the pre-authentication encoding.
    Dsse {
        payload_type: String,
        payload: Vec<u8>,
        signature: Vec<u8>,
    },
}

/// What verifies the signature.
pub enum Material {
    /// A Fulcio-style certificate, with the chain the artifact carries (DER).
    Certificate {
        leaf: Box<Leaf>,
        chain: Vec<Vec<u8>>,
    },
    /// No certificate: a configured key, or the key a verified log entry recorded.
    Key,
}

impl Content {
    pub fn signature(&self) -> &[u8] {
        match self {
            Content::SimpleSigning { signature, .. } | Content::Dsse { signature, .. } => signature,
        }
    }

    pub fn payload(&self) -> &[u8] {
        match self {
            Content::SimpleSigning { payload, .. } | Content::Dsse { payload, .. } => payload,
        }
    }

    /// The bytes the signature is over.
    pub fn signed_message(&self) -> Cow<'_, [u8]> {
        match self {
            Content::SimpleSigning { payload, .. } => Cow::Borrowed(payload),
            Content::Dsse {
                payload_type,
                payload,
                ..
            } => Cow::Owned(pae(payload_type, payload)),
        }
    }
}

/// DSSE pre-authentication encoding: what an envelope signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsse_signs_the_pae_and_simple_signing_the_payload() {
        let d = Content::Dsse {
            payload_type: "t".into(),
            payload: b"hi".to_vec(),
            signature: vec![1],
        };
        assert_eq!(&*d.signed_message(), b"DSSEv1 1 t 2 hi");
        let s = Content::SimpleSigning {
            payload: b"{}".to_vec(),
            signature: vec![2],
        };
        assert_eq!(&*s.signed_message(), b"{}");
        assert_eq!(s.signature(), [2]);
    }
}
