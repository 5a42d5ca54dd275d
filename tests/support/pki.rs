//! A test Fulcio-style CA, a test Rekor log and a key-based signing key, plus the Sigstore
//! `trusted_root.json` that names them. Leaf certificates look like Fulcio's: empty subject,
//! SAN URI or email, EKU codeSigning, short validity and the OIDC issuer extensions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SigningKey as _, PKCS_ECDSA_P256_SHA256,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
pub const WORKFLOW_URI: &str =
    "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";
pub const EMAIL: &str = "dev@example.com";
/// Fulcio's legacy issuer extension: the raw issuer string as the extension value.
const OID_ISSUER_V1: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 1];
/// Fulcio's issuer extension: a DER UTF8String.
const OID_ISSUER_V2: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 8];

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Parameters valid between two unix times. rcgen's time type is reached through
/// `date_time_ymd`, so the tests need no direct dependency on the `time` crate.
fn validity(from: i64, to: i64) -> CertificateParams {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let mut p = CertificateParams::default();
    p.not_before = epoch + Duration::from_secs(from as u64);
    p.not_after = epoch + Duration::from_secs(to as u64);
    p
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

/// ECDSA P-256 SHA-256, DER-encoded signature (what cosign and Rekor produce).
pub fn sign(key: &KeyPair, msg: &[u8]) -> Vec<u8> {
    key.sign(msg).expect("sign")
}

pub fn b64(data: impl AsRef<[u8]>) -> String {
    B64.encode(data)
}

pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(data))
}

/// A signing identity the Fulcio-style CA can certify.
#[derive(Clone, Debug)]
pub enum Identity {
    Uri { uri: String, issuer: String },
    Email { email: String, issuer: String },
}

impl Identity {
    /// A GitHub Actions workflow identity (URI SAN).
    pub fn github() -> Self {
        Identity::Uri {
            uri: WORKFLOW_URI.into(),
            issuer: GITHUB_ISSUER.into(),
        }
    }

    /// A Google account identity (email SAN).
    pub fn google() -> Self {
        Identity::Email {
            email: EMAIL.into(),
            issuer: GOOGLE_ISSUER.into(),
        }
    }

    pub fn san(&self) -> &str {
        match self {
            Identity::Uri { uri, .. } => uri,
            Identity::Email { email, .. } => email,
        }
    }

    pub fn issuer(&self) -> &str {
        match self {
            Identity::Uri { issuer, .. } | Identity::Email { issuer, .. } => issuer,
        }
    }
}

/// A CI identity as Fulcio certifies it: GitHub Actions or GitLab CI, the workflow (path in
/// its repository) and the repository it runs in, the source repository and ref it built.
#[derive(Clone, Debug)]
pub struct Ci {
    pub issuer: String,
    /// `https://github.com` or `https://gitlab.com`.
    pub server: String,
    /// Repository holding the workflow (`acme/app`; another one for a reusable workflow).
    pub workflow_repo: String,
    /// Path of the workflow in it (`.github/workflows/release.yml`).
    pub workflow: String,
    /// Repository built (`acme/app`).
    pub source_repo: String,
    /// `refs/tags/v1.4.2`, `refs/heads/main`, ...
    pub git_ref: String,
    pub trigger: String,
    pub run: u64,
    /// Extra extension values that replace the usual ones (hostile text).
    pub overrides: Vec<(u64, String)>,
}

pub const GITLAB_ISSUER: &str = "https://gitlab.com";

impl Ci {
    /// `acme/app`'s `release.yml` workflow building `git_ref` on GitHub Actions.
    pub fn github(repo: &str, workflow: &str, git_ref: &str) -> Ci {
        Ci {
            issuer: GITHUB_ISSUER.into(),
            server: "https://github.com".into(),
            workflow_repo: repo.into(),
            workflow: format!(".github/workflows/{workflow}"),
            source_repo: repo.into(),
            git_ref: git_ref.into(),
            trigger: if git_ref.starts_with("refs/tags/") {
                "push"
            } else {
                "workflow_dispatch"
            }
            .into(),
            run: 1536140711,
            overrides: Vec::new(),
        }
    }

    /// A GitLab CI pipeline of `repo` (`.gitlab-ci.yml`) building `git_ref`.
    pub fn gitlab(repo: &str, git_ref: &str) -> Ci {
        Ci {
            issuer: GITLAB_ISSUER.into(),
            server: "https://gitlab.com".into(),
            workflow_repo: repo.into(),
            // GitLab's ci_config_ref_uri has a double slash before the file.
            workflow: "/.gitlab-ci.yml".into(),
            source_repo: repo.into(),
            git_ref: git_ref.into(),
            trigger: "push".into(),
            run: 42,
            overrides: Vec::new(),
        }
    }

    /// The Build Signer URI, which is also the SAN: workflow URI `@` ref.
    pub fn signer_uri(&self) -> String {
        format!(
            "{}/{}/{}@{}",
            self.server, self.workflow_repo, self.workflow, self.git_ref
        )
    }

    /// The workflow URI without the ref (what the baseline keeps).
    pub fn workflow_uri(&self) -> String {
        format!("{}/{}/{}", self.server, self.workflow_repo, self.workflow)
    }

    pub fn source_uri(&self) -> String {
        format!("{}/{}", self.server, self.source_repo)
    }

    pub fn identity(&self) -> Identity {
        Identity::Uri {
            uri: self.signer_uri(),
            issuer: self.issuer.clone(),
        }
    }

    pub fn extensions(&self) -> Vec<(u64, String)> {
        let owner = self.source_repo.split('/').next().unwrap_or_default();
        let runs = if self.server.contains("gitlab") {
            "-/jobs"
        } else {
            "actions/runs"
        };
        let mut ext = vec![
            (9, self.signer_uri()),
            (10, "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c".to_string()),
            (
                11,
                format!(
                    "{}-hosted",
                    if self.server.contains("gitlab") {
                        "gitlab"
                    } else {
                        "github"
                    }
                ),
            ),
            (12, self.source_uri()),
            (13, "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".to_string()),
            (14, self.git_ref.clone()),
            (16, format!("{}/{owner}", self.server)),
            (18, self.signer_uri()),
            (20, self.trigger.clone()),
            (
                21,
                format!(
                    "{}/{}/{runs}/{}/attempts/1",
                    self.server, self.source_repo, self.run
                ),
            ),
        ];
        for (arc, value) in &self.overrides {
            ext.retain(|(a, _)| a != arc);
            ext.push((*arc, value.clone()));
        }
        ext
    }
}

/// A CA: a self-signed root and an optional intermediate that issues the leaves.
pub struct Ca {
    root_params: CertificateParams,
    root_key: KeyPair,
    pub root_der: Vec<u8>,
    pub root_pem: String,
    intermediate: Option<(CertificateParams, KeyPair, Vec<u8>, String)>,
}

/// A "Fulcio-issued" certificate with its fresh key.
pub struct Leaf {
    pub key: KeyPair,
    pub der: Vec<u8>,
    pub pem: String,
    /// Intermediate(s) then root, PEM, as cosign's chain annotation carries them.
    pub chain_pem: String,
    pub identity: Identity,
}

impl Ca {
    pub fn new(name: &str, with_intermediate: bool) -> Ca {
        let now = unix_now();
        let mut params = validity(now - 86_400, now + 365 * 86_400);
        params.distinguished_name = dn(name, &format!("{name}-root"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_key = p256();
        let root = params.self_signed(&root_key).expect("root cert");
        let intermediate = with_intermediate.then(|| {
            let mut ip = validity(now - 86_400, now + 365 * 86_400);
            ip.distinguished_name = dn(name, &format!("{name}-intermediate"));
            ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            ip.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
            ip.use_authority_key_identifier_extension = true;
            let ik = p256();
            let cert = ip
                .signed_by(&ik, &Issuer::from_params(&params, &root_key))
                .expect("intermediate cert");
            (ip, ik, cert.der().to_vec(), cert.pem())
        });
        Ca {
            root_der: root.der().to_vec(),
            root_pem: root.pem(),
            root_params: params,
            root_key,
            intermediate,
        }
    }

    /// DER certificates for the trusted root's `certChain`: intermediate first, root last.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.intermediate.iter().map(|i| i.2.clone()).collect();
        out.push(self.root_der.clone());
        out
    }

    pub fn chain_pem(&self) -> String {
        let mut out: String = self.intermediate.iter().map(|i| i.3.clone()).collect();
        out.push_str(&self.root_pem);
        out
    }

    /// A leaf valid from 5 minutes ago to 10 minutes from now, like a Fulcio certificate.
    pub fn issue(&self, identity: &Identity) -> Leaf {
        let now = unix_now();
        self.issue_valid(identity, now - 300, now + 600)
    }

    /// A leaf for a CI identity: its SAN and issuer, plus Fulcio's CI extensions (`.1.9`
    /// onwards, DER UTF8String) as the CI provider's token fills them.
    pub fn issue_ci(&self, ci: &Ci) -> Leaf {
        let now = unix_now();
        self.issue_with(&ci.identity(), now - 300, now + 600, &ci.extensions())
    }

    pub fn issue_valid(&self, identity: &Identity, not_before: i64, not_after: i64) -> Leaf {
        self.issue_with(identity, not_before, not_after, &[])
    }

    /// A leaf with extra `(Fulcio OID arc under 1.3.6.1.4.1.57264.1, UTF8String value)`.
    pub fn issue_with(
        &self,
        identity: &Identity,
        not_before: i64,
        not_after: i64,
        extensions: &[(u64, String)],
    ) -> Leaf {
        let mut p = validity(not_before, not_after);
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![match identity {
            Identity::Uri { uri, .. } => SanType::URI(uri.clone().try_into().expect("ia5 uri")),
            Identity::Email { email, .. } => {
                SanType::Rfc822Name(email.clone().try_into().expect("ia5 email"))
            }
        }];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        p.use_authority_key_identifier_extension = true;
        let issuer = identity.issuer().as_bytes();
        p.custom_extensions = vec![
            CustomExtension::from_oid_content(OID_ISSUER_V1, issuer.to_vec()),
            CustomExtension::from_oid_content(OID_ISSUER_V2, der_utf8(issuer)),
        ];
        for (arc, value) in extensions {
            let oid = [1, 3, 6, 1, 4, 1, 57264, 1, *arc];
            p.custom_extensions.push(CustomExtension::from_oid_content(
                &oid,
                der_utf8(value.as_bytes()),
            ));
        }
        let key = p256();
        let cert = match &self.intermediate {
            Some((ip, ik, _, _)) => p.signed_by(&key, &Issuer::from_params(ip, ik)),
            None => p.signed_by(
                &key,
                &Issuer::from_params(&self.root_params, &self.root_key),
            ),
        }
        .expect("leaf cert");
        Leaf {
            key,
            der: cert.der().to_vec(),
            pem: cert.pem(),
            chain_pem: self.chain_pem(),
            identity: identity.clone(),
        }
    }
}

fn dn(org: &str, cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, org);
    d.push(DnType::CommonName, cn);
    d
}

fn der_utf8(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0c];
    match s.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(s);
    out
}

/// A key for key-based (non-keyless) cosign signatures, with its public key in a PEM file.
pub struct TestKey {
    pub key: KeyPair,
    pub public_pem: String,
    pub path: PathBuf,
    /// `sha256:<hex of SHA-256 of the SPKI DER>`: how the verifier names an unconfigured key.
    pub fingerprint: String,
}

impl TestKey {
    pub fn new(path: PathBuf) -> TestKey {
        let key = p256();
        let public_pem = key.public_key_pem();
        std::fs::write(&path, &public_pem).expect("write public key");
        let fingerprint = format!("sha256:{}", sha256_hex(key.subject_public_key_info()));
        TestKey {
            key,
            public_pem,
            path,
            fingerprint,
        }
    }
}

/// What signs a cosign payload.
pub enum Signer<'a> {
    Keyless(&'a Leaf),
    Key(&'a TestKey),
}

impl Signer<'_> {
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Signer::Keyless(l) => sign(&l.key, msg),
            Signer::Key(k) => sign(&k.key, msg),
        }
    }

    /// What Rekor records as the verifier: the certificate PEM, or the public key PEM.
    pub fn verifier_pem(&self) -> &str {
        match self {
            Signer::Keyless(l) => &l.pem,
            Signer::Key(k) => &k.public_pem,
        }
    }
}

/// A test Rekor log: its key signs the signed entry timestamps (SETs).
pub struct Rekor {
    key: KeyPair,
    pub public_der: Vec<u8>,
    /// SHA-256 of the public key's SPKI DER.
    pub log_id: [u8; 32],
}

/// One log entry as a bundle carries it.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub body_b64: String,
    pub integrated_time: i64,
    pub log_index: i64,
    pub log_id_hex: String,
    pub log_id: [u8; 32],
    /// Base64 DER signature over the canonical `{body, integratedTime, logIndex, logID}`.
    pub set_b64: String,
}

impl Rekor {
    pub fn new() -> Rekor {
        let key = p256();
        let public_der = key.subject_public_key_info();
        let log_id: [u8; 32] = Sha256::digest(&public_der).into();
        Rekor {
            key,
            public_der,
            log_id,
        }
    }

    /// A log with a different key that claims this log's ID (forged SETs).
    pub fn impostor(&self) -> Rekor {
        Rekor {
            log_id: self.log_id,
            ..Rekor::new()
        }
    }

    pub fn log_id_hex(&self) -> String {
        hex::encode(self.log_id)
    }

    /// Logs `body` (the entry JSON), integrated a minute ago, inside the leaf's validity.
    pub fn entry(&self, body: &[u8]) -> LogEntry {
        static INDEX: AtomicI64 = AtomicI64::new(1000);
        let log_index = INDEX.fetch_add(1, Ordering::Relaxed);
        let integrated_time = unix_now() - 60;
        let body_b64 = b64(body);
        let set = self.sign_set(&body_b64, integrated_time, log_index);
        LogEntry {
            body_b64,
            integrated_time,
            log_index,
            log_id_hex: self.log_id_hex(),
            log_id: self.log_id,
            set_b64: set,
        }
    }

    fn sign_set(&self, body_b64: &str, integrated_time: i64, log_index: i64) -> String {
        let canonical = serde_json_canonicalizer::to_vec(&json!({
            "body": body_b64,
            "integratedTime": integrated_time,
            "logIndex": log_index,
            "logID": self.log_id_hex(),
        }))
        .unwrap();
        b64(sign(&self.key, &canonical))
    }
}

impl Default for Rekor {
    fn default() -> Self {
        Rekor::new()
    }
}

/// Everything a test signs with: the trusted CA and log, an untrusted CA, a forged log, a key.
pub struct Pki {
    pub ca: Ca,
    pub untrusted: Ca,
    pub rekor: Rekor,
    pub forged_rekor: Rekor,
    pub key: TestKey,
}

impl Pki {
    /// Key files go to `dir`.
    pub fn new(dir: &Path) -> Pki {
        let rekor = Rekor::new();
        Pki {
            ca: Ca::new("test-fulcio", true),
            untrusted: Ca::new("untrusted", true),
            forged_rekor: rekor.impostor(),
            rekor,
            key: TestKey::new(dir.join("release.pub")),
        }
    }

    /// Writes the Sigstore `trusted_root.json` (protobuf-JSON) naming the CA and the log.
    pub fn write_trusted_root(&self, dir: &Path) -> PathBuf {
        let certs: Vec<_> = self
            .ca
            .chain_der()
            .iter()
            .map(|d| json!({ "rawBytes": b64(d) }))
            .collect();
        let root = json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(&self.rekor.public_der),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": { "start": "2020-01-01T00:00:00Z" }
                },
                "logId": { "keyId": b64(self.rekor.log_id) }
            }],
            "certificateAuthorities": [{
                "subject": { "organization": "test", "commonName": "test-fulcio" },
                "uri": "https://fulcio.test",
                "certChain": { "certificates": certs },
                "validFor": { "start": "2020-01-01T00:00:00Z" }
            }],
            "ctlogs": [],
            "timestampAuthorities": []
        });
        let path = dir.join("trusted_root.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&root).unwrap())
            .expect("write trusted root");
        path
    }
}
