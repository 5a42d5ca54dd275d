//! Fulcio-issued signing certificates: the path to a trusted CA at the signing time (cached
//! per process), and the identity they carry (SAN URI or email, OIDC issuer extension).

use rustls_pki_types::{CertificateDer, UnixTime};
use sigstore::cosign::signature_layers::CertificateSubject;
use sigstore::crypto::CosignVerificationKey;
use x509_cert::der::asn1::Utf8StringRef;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use super::chains::{chain_key, Window};
use super::trust::TrustMaterial;
use crate::core::posture::{bound, BuildFacts, MAX_TEXT};

/// Fulcio's legacy issuer extension: the raw issuer URL bytes.
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Fulcio's issuer extension: a DER UTF8String.
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
/// Fulcio's CI extensions (DER UTF8String each), per sigstore/fulcio `docs/oid-info.md`.
const OID_BUILD_SIGNER_URI: &str = "1.3.6.1.4.1.57264.1.9";
const OID_BUILD_SIGNER_DIGEST: &str = "1.3.6.1.4.1.57264.1.10";
const OID_RUNNER_ENVIRONMENT: &str = "1.3.6.1.4.1.57264.1.11";
const OID_SOURCE_REPOSITORY_URI: &str = "1.3.6.1.4.1.57264.1.12";
const OID_SOURCE_REPOSITORY_DIGEST: &str = "1.3.6.1.4.1.57264.1.13";
const OID_SOURCE_REPOSITORY_REF: &str = "1.3.6.1.4.1.57264.1.14";
const OID_SOURCE_REPOSITORY_OWNER_URI: &str = "1.3.6.1.4.1.57264.1.16";
const OID_BUILD_TRIGGER: &str = "1.3.6.1.4.1.57264.1.20";
const OID_RUN_INVOCATION_URI: &str = "1.3.6.1.4.1.57264.1.21";
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

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.cert
            .tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// A Fulcio extension holding a DER UTF8String (`.1.8` onwards); anything else is absent.
    fn utf8_extension(&self, oid: &str) -> Option<String> {
        let v = self.extension(oid)?;
        Utf8StringRef::from_der(v)
            .ok()
            .map(|s| s.as_str().to_string())
    }

    fn issuer(&self) -> Option<String> {
        self.utf8_extension(OID_ISSUER_V2).or_else(|| {
            self.extension(OID_ISSUER_V1)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    }

    /// What the certificate says about the build that signed (GitHub Actions, GitLab CI and
    /// other CI providers Fulcio serves), bounded: attacker-influenced text, stored as data.
    /// Empty values are absent.
    pub fn build_facts(&self) -> BuildFacts {
        let get = |oid: &str| {
            self.utf8_extension(oid)
                .map(|s| bound(&s, MAX_TEXT))
                .filter(|s| !s.trim().is_empty())
        };
        BuildFacts {
            build_signer_uri: get(OID_BUILD_SIGNER_URI),
            build_signer_digest: get(OID_BUILD_SIGNER_DIGEST),
            runner_environment: get(OID_RUNNER_ENVIRONMENT),
            source_repository: get(OID_SOURCE_REPOSITORY_URI),
            source_digest: get(OID_SOURCE_REPOSITORY_DIGEST),
            source_ref: get(OID_SOURCE_REPOSITORY_REF),
            owner: get(OID_SOURCE_REPOSITORY_OWNER_URI),
            trigger: get(OID_BUILD_TRIGGER),
            run_url: get(OID_RUN_INVOCATION_URI),
        }
    }

    /// A path from this leaf to a trusted CA, valid at `time` (the signing time: the log's
    /// integrated time or a verified RFC 3161 timestamp; Fulcio certificates live minutes, so
    /// "now" is meaningless). A path already verified in this process is not verified again
    /// when `time` falls within the validity of every certificate it can run through.
    pub fn verify_chain(
        &self,
        trust: &TrustMaterial,
        extra_chain: &[Vec<u8>],
        time: i64,
    ) -> Result<(), ChainError> {
        if trust.anchors.is_empty() {
            return Err(ChainError::other(
                "trusted root has no certificate authority",
            ));
        }
        let key = chain_key(&self.der, extra_chain);
        if trust.chains.covers(&key, time) {
            return Ok(());
        }
        let leaf = CertificateDer::from(self.der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| ChainError::other(format!("leaf: {e}")))?;
        let mut intermediates: Vec<CertificateDer<'_>> = trust.ca_certs.clone();
        intermediates.extend(
            extra_chain
                .iter()
                .map(|c| CertificateDer::from(c.as_slice())),
        );
        let secs = u64::try_from(time).map_err(|_| ChainError::other("negative signing time"))?;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust.anchors,
            &intermediates,
            at,
            webpki::KeyUsage::required(EKU_CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| ChainError {
            // No path to any listed CA: no issuer of that name, or one of that name whose key
            // did not sign it (a new intermediate keeps its predecessor's name) — a CA the
            // trust root may gain; as opposed to a path that is expired or misused.
            unknown_issuer: matches!(
                e,
                webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey
            ),
            message: format!(
                "certificate does not chain to a trusted Fulcio CA at the signing time: {e}"
            ),
        })?;
        if let Some(window) = self.path_window(trust, extra_chain) {
            trust.chains.insert(key, window);
        }
        Ok(())
    }

    /// The times at which every certificate a path from this leaf may run through is valid:
    /// the leaf, then, by issuer name, every candidate issuer up to a self-issued one. Any
    /// doubt (a name loop, an unparsable certificate) answers `None`: nothing is cached.
    fn path_window(&self, trust: &TrustMaterial, extra_chain: &[Vec<u8>]) -> Option<Window> {
        let mut window = Window::of(&self.cert);
        let extra: Vec<Certificate> = extra_chain
            .iter()
            .map(|d| Certificate::from_der(d).ok())
            .collect::<Option<_>>()?;
        let cas = trust.chains.cas(&trust.ca_certs)?;
        let mut issuer = self.cert.tbs_certificate().issuer().clone();
        for _ in 0..MAX_PATH {
            let candidates: Vec<&Certificate> = extra
                .iter()
                .chain(cas.iter())
                .filter(|c| *c.tbs_certificate().subject() == issuer)
                .collect();
            let first = candidates.first()?;
            for c in &candidates {
                window = window.intersect(Window::of(c));
            }
            let next = first.tbs_certificate().issuer().clone();
            if next == issuer {
                return (window.from <= window.to).then_some(window);
            }
            // Candidates with different issuers make the path ambiguous: do not cache.
            if candidates
                .iter()
                .any(|c| *c.tbs_certificate().issuer() != next)
            {
                return None;
            }
            issuer = next;
        }
        None
    }
}

/// Why a certificate path was not verified.
#[derive(Debug)]
pub struct ChainError {
    /// No issuer of the path is a CA of the trust root.
    pub unknown_issuer: bool,
    pub message: String,
}

impl ChainError {
    fn other(message: impl Into<String>) -> Self {
        ChainError {
            unknown_issuer: false,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Longest certificate path walked when computing a cached path's validity.
const MAX_PATH: usize = 8;
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        PublicKeyData as _, SanType, PKCS_ECDSA_P256_SHA256,
    };

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn valid(from: i64, to: i64) -> CertificateParams {
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let mut p = CertificateParams::default();
        p.not_before = epoch + std::time::Duration::from_secs(from as u64);
        p.not_after = epoch + std::time::Duration::from_secs(to as u64);
        p
    }

    /// A trust root of one CA (and one log key, which a root needs), and a leaf it issued,
    /// valid for ten minutes around now.
    fn fixture() -> (TrustMaterial, Leaf) {
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let t = now();
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = valid(t - 86_400, t + 86_400);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut lp = valid(t - 300, t + 300);
        lp.subject_alt_names = vec![SanType::Rfc822Name("a@example.com".try_into().unwrap())];
        lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let leaf = lp
            .signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        let root = serde_json::json!({
            "certificateAuthorities": [{ "certChain": { "certificates": [
                { "rawBytes": b64(ca_cert.der()) }
            ] } }],
            "tlogs": [{
                "publicKey": { "rawBytes": b64(&ca_key.subject_public_key_info()) },
                "logId": { "keyId": b64(&[1u8; 32]) }
            }]
        });
        let trust = TrustMaterial::from_json(&serde_json::to_vec(&root).unwrap()).unwrap();
        (trust, Leaf::from_der(leaf.der()).unwrap())
    }

    #[test]
    fn a_certificate_of_an_unknown_ca_is_told_apart() {
        let (trust, leaf) = fixture();
        let (other, stranger) = fixture();
        let t = now();
        // Issued by a CA the root does not list, under the same name as the CA it does list
        // (as a new Fulcio intermediate is): a CA the root may gain.
        let e = stranger.verify_chain(&trust, &[], t).unwrap_err();
        assert!(e.unknown_issuer, "{e}");
        assert!(
            leaf.verify_chain(&other, &[], t)
                .unwrap_err()
                .unknown_issuer
        );
        // Known CA, expired leaf: not a matter of the root.
        let e = leaf.verify_chain(&trust, &[], t + 3600).unwrap_err();
        assert!(!e.unknown_issuer, "{e}");
    }

    #[test]
    fn a_verified_path_is_cached_for_the_window_it_holds_in() {
        let (trust, leaf) = fixture();
        let t = now();
        assert!(trust.chains.is_empty());
        leaf.verify_chain(&trust, &[], t).unwrap();
        assert_eq!(trust.chains.len(), 1);
        let key = chain_key(leaf.der(), &[]);
        // Within the leaf's validity the cached path answers; outside it, it does not, and
        // the full verification refuses the expired leaf.
        assert!(trust.chains.covers(&key, t + 200));
        assert!(!trust.chains.covers(&key, t + 600));
        assert!(leaf.verify_chain(&trust, &[], t + 600).is_err());
        assert!(leaf.verify_chain(&trust, &[], t - 600).is_err());
        // The same leaf with another supplied chain is another path.
        assert!(!trust.chains.covers(&chain_key(leaf.der(), &[vec![0u8]]), t));
    }

    fn utf8(s: &str) -> Vec<u8> {
        use x509_cert::der::asn1::Utf8StringRef;
        Utf8StringRef::new(s).unwrap().to_der().unwrap()
    }

    #[test]
    fn ci_extensions_are_read_bounded_and_neutralised() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = valid(now() - 60, now() + 60);
        p.subject_alt_names = vec![SanType::URI(
            "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.4.2"
                .try_into()
                .unwrap(),
        )];
        let oid = |n: u64| vec![1, 3, 6, 1, 4, 1, 57264, 1, n];
        let long = "x".repeat(5000);
        p.custom_extensions = vec![
            rcgen::CustomExtension::from_oid_content(
                &oid(8),
                utf8("https://token.actions.githubusercontent.com"),
            ),
            rcgen::CustomExtension::from_oid_content(
                &oid(9),
                utf8("https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.4.2"),
            ),
            rcgen::CustomExtension::from_oid_content(&oid(12), utf8("https://github.com/acme/app")),
            rcgen::CustomExtension::from_oid_content(&oid(14), utf8("refs/tags/v1.4.2")),
            rcgen::CustomExtension::from_oid_content(&oid(20), utf8("push\u{1b}[31m\u{202e}")),
            rcgen::CustomExtension::from_oid_content(&oid(21), utf8(&long)),
            // Not a UTF8String: absent, not garbage.
            rcgen::CustomExtension::from_oid_content(&oid(11), b"raw".to_vec()),
        ];
        let cert = p.self_signed(&key).unwrap();
        let leaf = Leaf::from_der(cert.der()).unwrap();
        let f = leaf.build_facts();
        assert_eq!(
            f.build_signer_uri.as_deref(),
            Some("https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.4.2")
        );
        assert_eq!(
            f.source_repository.as_deref(),
            Some("https://github.com/acme/app")
        );
        assert_eq!(f.source_ref.as_deref(), Some("refs/tags/v1.4.2"));
        assert!(!f.trigger.as_deref().unwrap().contains('\u{1b}'));
        assert!(f.run_url.as_deref().unwrap().len() <= MAX_TEXT + 3);
        assert_eq!(f.runner_environment, None);
        assert_eq!(
            leaf.identity().unwrap().1.as_deref(),
            Some("https://token.actions.githubusercontent.com")
        );
        // No extension at all: nothing.
        assert!(fixture().1.build_facts().is_empty());
    }
}
