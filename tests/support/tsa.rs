//! A test RFC 3161 timestamp authority: its own root, an intermediate and a TSA leaf, issuing
//! real DER `TimeStampResp` messages (a CMS `SignedData` over a `TSTInfo`) as Sigstore bundles
//! carry them in `timestampVerificationData.rfc3161Timestamps[].signedTimestamp`.
//!
//! The certificates follow what sigstore's timestamp-authority verifier demands: the leaf has
//! exactly one extended key usage, `timeStamping`, marked critical (RFC 3161 2.3), and the
//! intermediate is constrained to `timeStamping` too ("EKU chaining"). The token carries the
//! leaf certificate and the RFC 5816 `signingCertificateV2` attribute naming it.

use std::time::Duration;

use cms::cert::x509::attr::Attribute;
use cms::cert::x509::spki::AlgorithmIdentifierOwned;
use cms::cert::x509::Certificate;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{GeneralizedTime, ObjectIdentifier, OctetString, SetOfVec, Uint};
use der::{Any, Decode, Encode, Sequence};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::pki::{b64, sign, unix_now};

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const ID_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// A policy OID under the "example" arc; verifiers do not pin it unless configured to.
const TEST_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.99.1");
/// `id-ce-extKeyUsage`
const OID_EKU: &[u64] = &[2, 5, 29, 37];
/// DER of `SEQUENCE { id-kp-timeStamping }`, the leaf's only extended key usage.
const EKU_TIME_STAMPING_ONLY: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
];

/// `MessageImprint ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, hashedMessage OCTET STRING }`
#[derive(Clone, Debug, Sequence)]
struct MessageImprint {
    hash_algorithm: AlgorithmIdentifierOwned,
    hashed_message: OctetString,
}

/// RFC 3161 `TSTInfo` (without `accuracy`, `ordering`, `tsa` and `extensions`).
#[derive(Clone, Debug, Sequence)]
struct TstInfo {
    version: u8,
    policy: ObjectIdentifier,
    message_imprint: MessageImprint,
    serial_number: Uint,
    gen_time: GeneralizedTime,
    #[asn1(optional = "true")]
    nonce: Option<Uint>,
}

/// `PKIStatusInfo` with only the status (0 = granted).
#[derive(Clone, Debug, Sequence)]
struct PkiStatusInfo {
    status: u8,
}

/// `TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken TimeStampToken OPTIONAL }`
#[derive(Clone, Debug, Sequence)]
struct TimeStampResp {
    status: PkiStatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<ContentInfo>,
}

/// RFC 5035 `ESSCertIDv2` with the default hash algorithm (SHA-256) omitted.
#[derive(Clone, Debug, Sequence)]
struct EssCertIdV2 {
    cert_hash: OctetString,
}

/// RFC 5035 `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2 }`
#[derive(Clone, Debug, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
}

/// What to put in one timestamp; [`Stamp::over`] gives the honest defaults.
#[derive(Clone, Debug)]
pub struct Stamp {
    /// The bytes the message imprint is computed over (for Sigstore: the signature bytes).
    pub message: Vec<u8>,
    /// `genTime`, unix seconds.
    pub time: i64,
    /// The request nonce to echo, if any.
    pub nonce: Option<u64>,
}

impl Stamp {
    /// A stamp over `message` at "now minus 30 s", without a nonce.
    pub fn over(message: &[u8]) -> Stamp {
        Stamp {
            message: message.to_vec(),
            time: unix_now() - 30,
            nonce: None,
        }
    }
}

/// A timestamp authority: a root CA, an intermediate and the TSA signing leaf (ECDSA P-256).
pub struct Tsa {
    pub name: String,
    pub root_der: Vec<u8>,
    pub intermediate_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    leaf_key: KeyPair,
    leaf: Certificate,
}

fn validity(from: i64, to: i64) -> CertificateParams {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut p = CertificateParams::default();
    p.not_before = epoch + Duration::from_secs(from as u64);
    p.not_after = epoch + Duration::from_secs(to as u64);
    p
}

fn dn(org: &str, cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, org);
    d.push(DnType::CommonName, cn);
    d
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

fn alg(oid: ObjectIdentifier) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Attribute {
    let mut values = SetOfVec::new();
    values.insert(value).expect("attribute value");
    Attribute { oid, values }
}

impl Tsa {
    /// A fresh authority whose certificates are valid from a day ago for a year.
    pub fn new(name: &str) -> Tsa {
        let now = unix_now();
        let mut rp = validity(now - 86_400, now + 365 * 86_400);
        rp.distinguished_name = dn(name, &format!("{name} root"));
        rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_key = p256();
        let root = rp.self_signed(&root_key).expect("TSA root");

        let mut ip = validity(now - 86_400, now + 365 * 86_400);
        ip.distinguished_name = dn(name, &format!("{name} intermediate"));
        ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ip.extended_key_usages = vec![ExtendedKeyUsagePurpose::TimeStamping];
        ip.use_authority_key_identifier_extension = true;
        let intermediate_key = p256();
        let intermediate = ip
            .signed_by(&intermediate_key, &Issuer::from_params(&rp, &root_key))
            .expect("TSA intermediate");

        let mut lp = validity(now - 86_400, now + 365 * 86_400);
        lp.distinguished_name = dn(name, &format!("{name} timestamping"));
        lp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        lp.use_authority_key_identifier_extension = true;
        let mut eku = CustomExtension::from_oid_content(OID_EKU, EKU_TIME_STAMPING_ONLY.to_vec());
        eku.set_criticality(true);
        lp.custom_extensions = vec![eku];
        let leaf_key = p256();
        let leaf_cert = lp
            .signed_by(&leaf_key, &Issuer::from_params(&ip, &intermediate_key))
            .expect("TSA leaf");
        let leaf_der = leaf_cert.der().to_vec();
        Tsa {
            name: name.into(),
            root_der: root.der().to_vec(),
            intermediate_der: intermediate.der().to_vec(),
            leaf: Certificate::from_der(&leaf_der).expect("parse TSA leaf"),
            leaf_der,
            leaf_key,
        }
    }

    /// Leaf, intermediate, root: the order of a trusted root's `certChain`.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        vec![
            self.leaf_der.clone(),
            self.intermediate_der.clone(),
            self.root_der.clone(),
        ]
    }

    /// This authority as an entry of a trusted root's `timestampAuthorities`.
    pub fn trusted_root_entry(&self) -> Value {
        let certs: Vec<_> = self
            .chain_der()
            .iter()
            .map(|d| json!({ "rawBytes": b64(d) }))
            .collect();
        json!({
            "subject": { "organization": self.name, "commonName": format!("{} timestamping", self.name) },
            "uri": format!("https://{}.tsa.test/api/v1/timestamp", self.name),
            "certChain": { "certificates": certs },
            "validFor": { "start": "2020-01-01T00:00:00Z" }
        })
    }

    /// A DER `TimeStampResp` (status granted) over SHA-256 of `message`, dated 30 s ago.
    pub fn stamp(&self, message: &[u8]) -> Vec<u8> {
        self.stamp_with(&Stamp::over(message))
    }

    /// A DER `TimeStampResp` as `stamp` describes.
    pub fn stamp_with(&self, stamp: &Stamp) -> Vec<u8> {
        let resp = TimeStampResp {
            status: PkiStatusInfo { status: 0 },
            time_stamp_token: Some(self.token(stamp)),
        };
        resp.to_der().expect("encode TimeStampResp")
    }

    /// The bare `TimeStampToken` (a CMS `ContentInfo`), DER.
    pub fn token_der(&self, stamp: &Stamp) -> Vec<u8> {
        self.token(stamp).to_der().expect("encode TimeStampToken")
    }

    fn token(&self, stamp: &Stamp) -> ContentInfo {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let gen_time = GeneralizedTime::from_unix_duration(Duration::from_secs(stamp.time as u64))
            .expect("genTime");
        let tst = TstInfo {
            version: 1,
            policy: TEST_POLICY,
            message_imprint: MessageImprint {
                hash_algorithm: alg(ID_SHA256),
                hashed_message: OctetString::new(Sha256::digest(&stamp.message).to_vec())
                    .expect("imprint"),
            },
            serial_number: Uint::new(&serial.to_be_bytes()).expect("serial"),
            gen_time,
            nonce: stamp
                .nonce
                .map(|n| Uint::new(&n.to_be_bytes()).expect("nonce")),
        };
        let tst_der = tst.to_der().expect("encode TSTInfo");

        let any = |der: Vec<u8>| Any::from_der(&der).expect("attribute value DER");
        let ess = SigningCertificateV2 {
            certs: vec![EssCertIdV2 {
                cert_hash: OctetString::new(Sha256::digest(&self.leaf_der).to_vec())
                    .expect("cert hash"),
            }],
        };
        let mut attrs = SetOfVec::new();
        for a in [
            attribute(ID_CONTENT_TYPE, any(ID_CT_TST_INFO.to_der().expect("oid"))),
            attribute(
                ID_MESSAGE_DIGEST,
                any(OctetString::new(Sha256::digest(&tst_der).to_vec())
                    .expect("digest")
                    .to_der()
                    .expect("digest DER")),
            ),
            attribute(ID_SIGNING_TIME, any(gen_time_as_utc(stamp.time))),
            attribute(
                ID_SIGNING_CERTIFICATE_V2,
                any(ess.to_der().expect("ESS DER")),
            ),
        ] {
            attrs.insert(a).expect("signed attribute");
        }
        // The signature covers the DER of the attributes as a SET OF (tag 0x31), not as the
        // [0] IMPLICIT field they are stored in.
        let signature = sign(&self.leaf_key, &attrs.to_der().expect("attributes DER"));

        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: self.leaf.tbs_certificate.issuer.clone(),
                serial_number: self.leaf.tbs_certificate.serial_number.clone(),
            }),
            digest_alg: alg(ID_SHA256),
            signed_attrs: Some(attrs),
            signature_algorithm: alg(ID_ECDSA_WITH_SHA256),
            signature: OctetString::new(signature).expect("signature"),
            unsigned_attrs: None,
        };
        let mut digest_algorithms = SetOfVec::new();
        digest_algorithms
            .insert(alg(ID_SHA256))
            .expect("digest algorithm");
        let mut certs = CertificateSet(SetOfVec::new());
        certs
            .0
            .insert(CertificateChoices::Certificate(self.leaf.clone()))
            .expect("certificate");
        let mut signer_infos = SignerInfos(SetOfVec::new());
        signer_infos.0.insert(signer).expect("signer info");
        let signed = SignedData {
            version: CmsVersion::V3,
            digest_algorithms,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: ID_CT_TST_INFO,
                econtent: Some(any(OctetString::new(tst_der)
                    .expect("eContent")
                    .to_der()
                    .expect("eContent DER"))),
            },
            certificates: Some(certs),
            crls: None,
            signer_infos,
        };
        ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: any(signed.to_der().expect("SignedData DER")),
        }
    }
}

/// `signingTime` as UTCTime (RFC 5652 11.3: UTCTime for dates before 2050).
fn gen_time_as_utc(unix: i64) -> Vec<u8> {
    der::asn1::UtcTime::from_unix_duration(Duration::from_secs(unix as u64))
        .expect("signingTime")
        .to_der()
        .expect("signingTime DER")
}
