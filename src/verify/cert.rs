//! Fulcio-issued signing certificates: the path to a trusted CA at the Rekor integrated time,
//! and the identity they carry (SAN URI or email, OIDC issuer extension).

use rustls_pki_types::{CertificateDer, UnixTime};
use sigstore::cosign::signature_layers::CertificateSubject;
use sigstore::crypto::CosignVerificationKey;
use x509_cert::der::asn1::Utf8StringRef;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use super::trust::TrustMaterial;
use crate::posture::{bound, MAX_TEXT};

/// Fulcio's legacy issuer extension: the raw issuer URL bytes.
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Fulcio's issuer extension: a DER UTF8String.
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER value bytes.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// A parsed leaf certificate.
pub struct Leaf {
    der: Vec<u8>,
    cert: Certificate,
}

impl Leaf {
    pub fn from_pem(pem_bytes: &[u8]) -> Result<Self, String> {
        let p = pem::parse(pem_bytes).map_err(|e| format!("certificate is not PEM: {e}"))?;
        if p.tag() != "CERTIFICATE" {
            return Err(format!(
                "PEM block is {:?}, not CERTIFICATE",
                bound(p.tag(), 32)
            ));
        }
        Self::from_der(p.contents())
    }

    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("certificate: {e}"))?;
        Ok(Leaf {
            der: der.to_vec(),
            cert,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certified public key.
    pub fn key(&self) -> Result<CosignVerificationKey, String> {
        let spki = self
            .cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| format!("certificate key: {e}"))?;
        CosignVerificationKey::try_from_der(&spki).map_err(|e| format!("certificate key: {e}"))
    }

    /// Signer (SAN URI or email) and OIDC issuer, bounded; both are attacker-influenced text.
    pub fn identity(&self) -> Result<(String, Option<String>), String> {
        let signer = match CertificateSubject::from_certificate(&self.cert) {
            Ok(CertificateSubject::Email(e)) => e,
            Ok(CertificateSubject::Uri(u)) => u,
            Err(e) => return Err(format!("certificate has no URI or email SAN: {e}")),
        };
        Ok((
            bound(&signer, MAX_TEXT),
            self.issuer().map(|i| bound(&i, MAX_TEXT)),
        ))
    }

    fn issuer(&self) -> Option<String> {
        let exts = self.cert.tbs_certificate().extensions()?;
        let find = |oid: &str| {
            exts.iter()
                .find(|e| e.extn_id.to_string() == oid)
                .map(|e| e.extn_value.as_bytes())
        };
        if let Some(v) = find(OID_ISSUER_V2) {
            if let Ok(s) = Utf8StringRef::from_der(v) {
                return Some(s.as_str().to_string());
            }
        }
        find(OID_ISSUER_V1).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// A path from this leaf to a trusted CA, valid at `integrated_time` (the moment Rekor
    /// witnessed the signature: Fulcio certificates live minutes, so "now" is meaningless).
    pub fn verify_chain(
        &self,
        trust: &TrustMaterial,
        extra_chain: &[Vec<u8>],
        integrated_time: i64,
    ) -> Result<(), String> {
        if trust.anchors.is_empty() {
            return Err("trusted root has no certificate authority".into());
        }
        let leaf = CertificateDer::from(self.der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("leaf: {e}"))?;
        let mut intermediates: Vec<CertificateDer<'_>> = trust.ca_certs.clone();
        intermediates.extend(
            extra_chain
                .iter()
                .map(|c| CertificateDer::from(c.as_slice())),
        );
        let secs = u64::try_from(integrated_time).map_err(|_| "negative integrated time")?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust.anchors,
            &intermediates,
            time,
            webpki::KeyUsage::required(EKU_CODE_SIGNING),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| {
            format!("certificate does not chain to a trusted Fulcio CA at the integrated time: {e}")
        })
    }
}

/// Parses a PEM bundle of certificates (the cosign `chain` annotation) to DER.
pub fn chain_from_pem(pem_bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(pem_bytes).map_err(|e| format!("chain is not PEM: {e}"))?;
    if blocks.len() > 8 {
        return Err("certificate chain longer than 8".into());
    }
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}
