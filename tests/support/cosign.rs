//! Pushes real cosign-format artifacts with plain OCI distribution requests: images, legacy
//! `sha256-<hex>.sig` signature manifests, and Sigstore bundles attached as referrers (with the
//! referrers tag-schema fallback index, since Distribution 2.8 has no referrers API).

use std::sync::atomic::{AtomicU64, Ordering};

use imageposture::core::image::ImageId;
use serde_json::{json, Map, Value};

use super::pki::{b64, sha256_hex, LogEntry, Rekor, Signer};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

pub const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
pub const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
pub const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";

/// An OCI content descriptor.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Desc {
    pub fn of(media_type: &str, bytes: &[u8]) -> Desc {
        Desc {
            media_type: media_type.into(),
            digest: format!("sha256:{}", sha256_hex(bytes)),
            size: bytes.len(),
        }
    }

    pub fn json(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

/// An image pushed by [`Oci::push_image`].
#[derive(Clone, Debug)]
pub struct Pushed {
    pub id: ImageId,
    pub manifest: Desc,
}

/// A minimal OCI distribution client for pushing fixtures (straight to the registry).
pub struct Oci {
    client: reqwest::Client,
    /// `host:port` of the registry.
    pub host: String,
}

impl Oci {
    pub fn new(host: &str) -> Oci {
        Oci {
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            host: host.into(),
        }
    }

    /// Monolithic upload: `POST /blobs/uploads/`, then `PUT <location>&digest=`.
    pub async fn push_blob(&self, repo: &str, media_type: &str, data: &[u8]) -> Desc {
        let desc = Desc::of(media_type, data);
        let base = format!("http://{}", self.host);
        let r = self
            .client
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .expect("start upload");
        assert_eq!(
            r.status().as_u16(),
            202,
            "start upload in {repo}: {:?}",
            r.text().await
        );
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .client
            .put(format!("{location}{sep}digest={}", desc.digest))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("finish upload");
        assert_eq!(
            r.status().as_u16(),
            201,
            "upload {} to {repo}: {:?}",
            desc.digest,
            r.text().await
        );
        desc
    }

    /// `PUT /v2/<repo>/manifests/<reference>`; returns the manifest's descriptor.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Desc {
        let desc = Desc::of(media_type, body);
        let r = self
            .client
            .put(format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.host
            ))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("put manifest");
        assert_eq!(
            r.status().as_u16(),
            201,
            "put manifest {repo}:{reference}: {:?}",
            r.text().await
        );
        if let Some(d) = r.headers().get("docker-content-digest") {
            assert_eq!(
                d.to_str().unwrap(),
                desc.digest,
                "registry digest differs from ours"
            );
        }
        desc
    }

    /// A small random image (config + one layer) tagged `tag`; the identity is its digest.
    pub async fn push_image(&self, repo: &str, tag: &str) -> Pushed {
        let layer = self
            .push_blob(repo, "application/vnd.oci.image.layer.v1.tar", &nonce())
            .await;
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [layer.digest] }
        });
        let config = self
            .push_blob(repo, OCI_CONFIG, &serde_json::to_vec(&config).unwrap())
            .await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": [layer.json()]
        });
        let manifest = self
            .put_manifest(
                repo,
                tag,
                OCI_MANIFEST,
                &serde_json::to_vec(&manifest).unwrap(),
            )
            .await;
        Pushed {
            id: ImageId {
                registry: self.host.clone(),
                repository: repo.into(),
                digest: manifest.digest.clone(),
            },
            manifest,
        }
    }

    /// Pushes a legacy cosign signature manifest (one layer per signature) at the `.sig` tag
    /// of `tag_digest`, which need not be the digest the payloads name.
    pub async fn push_sig(&self, repo: &str, tag_digest: &str, layers: &[SigLayer]) -> Desc {
        let mut descs = Vec::new();
        for l in layers {
            let mut d = self.push_blob(repo, SIMPLESIGNING, &l.payload).await.json();
            d["annotations"] = Value::Object(l.annotations.clone());
            descs.push(d);
        }
        let diff_ids: Vec<_> = descs.iter().map(|d| d["digest"].clone()).collect();
        let config = json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{ "created": "0001-01-01T00:00:00Z" }],
            "os": "",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "config": {}
        });
        let config = self
            .push_blob(repo, OCI_CONFIG, &serde_json::to_vec(&config).unwrap())
            .await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": descs
        });
        let tag = format!("{}.sig", tag_digest.replace(':', "-"));
        self.put_manifest(
            repo,
            &tag,
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .await
    }

    /// Attaches a Sigstore bundle the way cosign v3 does: a referrer manifest pushed by digest
    /// whose `subject` is the image, plus the `sha256-<hex>` referrers fallback index.
    pub async fn push_bundle_referrer(&self, image: &Pushed, bundle: &[u8]) -> Desc {
        let repo = &image.id.repository;
        let empty = self.push_blob(repo, OCI_EMPTY, b"{}").await;
        let layer = self.push_blob(repo, BUNDLE_V03, bundle).await;
        let annotations = json!({
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": COSIGN_SIGN_PREDICATE,
        });
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_V03,
            "config": empty.json(),
            "layers": [layer.json()],
            "subject": image.manifest.json(),
            "annotations": annotations,
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let digest = Desc::of(OCI_MANIFEST, &body).digest;
        let referrer = self.put_manifest(repo, &digest, OCI_MANIFEST, &body).await;
        let mut entry = referrer.json();
        entry["artifactType"] = json!(BUNDLE_V03);
        entry["annotations"] = annotations;
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] });
        self.put_manifest(
            repo,
            &image.id.referrers_tag(),
            OCI_INDEX,
            &serde_json::to_vec(&index).unwrap(),
        )
        .await;
        referrer
    }
}

/// Unique bytes, so every pushed image has its own digest.
fn nonce() -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "layer {t} {} {}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

/// The cosign simple-signing payload for `id`, byte for byte as cosign writes it.
pub fn simple_signing_payload(id: &ImageId) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/{}"}},"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        id.registry, id.repository, id.digest
    )
    .into_bytes()
}

/// One layer of a legacy `.sig` manifest: the payload blob and its annotations.
#[derive(Clone, Debug)]
pub struct SigLayer {
    pub payload: Vec<u8>,
    pub annotations: Map<String, Value>,
}

/// Ways to spoil a legacy signature after producing it correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoil {
    None,
    /// The payload blob is changed after signing (same digest claim, different bytes).
    TamperPayload,
    /// The Rekor body in the bundle is changed after the SET was made.
    AlterRekorBody,
    /// The signature annotation is not base64.
    SignatureNotBase64,
    /// The bundle annotation is not JSON.
    BundleNotJson,
    /// The certificate annotation is not PEM.
    CertificateNotPem,
}

/// A legacy cosign signature layer over `id`'s payload. Keyless signers get certificate and
/// chain annotations; `rekor` adds a bundle annotation with a hashedrekord entry.
pub fn legacy_layer(
    id: &ImageId,
    signer: &Signer,
    rekor: Option<&Rekor>,
    spoil: Spoil,
) -> SigLayer {
    let payload = simple_signing_payload(id);
    let signature = b64(signer.sign(&payload));
    let mut ann = Map::new();
    ann.insert(ANN_SIGNATURE.into(), json!(signature));
    if let Signer::Keyless(leaf) = signer {
        ann.insert(ANN_CERTIFICATE.into(), json!(leaf.pem));
        ann.insert(ANN_CHAIN.into(), json!(leaf.chain_pem));
    }
    if let Some(rekor) = rekor {
        let body = hashedrekord_body(&payload, &signature, signer.verifier_pem());
        let mut entry = rekor.entry(&body);
        if spoil == Spoil::AlterRekorBody {
            let other = hashedrekord_body(b"something else", &signature, signer.verifier_pem());
            entry.body_b64 = b64(other);
        }
        ann.insert(ANN_BUNDLE.into(), json!(legacy_bundle(&entry).to_string()));
    }
    let mut payload = payload;
    match spoil {
        Spoil::TamperPayload => {
            payload = String::from_utf8(payload)
                .unwrap()
                .replace(r#""optional":null"#, r#""optional":{"tampered":"yes"}"#)
                .into_bytes();
        }
        Spoil::SignatureNotBase64 => {
            ann.insert(ANN_SIGNATURE.into(), json!("this is *not* base64!"));
        }
        Spoil::BundleNotJson => {
            ann.insert(ANN_BUNDLE.into(), json!("{not json"));
        }
        Spoil::CertificateNotPem => {
            ann.insert(ANN_CERTIFICATE.into(), json!("not a PEM certificate"));
        }
        Spoil::None | Spoil::AlterRekorBody => {}
    }
    SigLayer {
        payload,
        annotations: ann,
    }
}

/// Rekor `hashedrekord` v0.0.1 entry body for a signature over `payload`.
pub fn hashedrekord_body(payload: &[u8], signature_b64: &str, verifier_pem: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": { "hash": { "algorithm": "sha256", "value": sha256_hex(payload) } },
            "signature": {
                "content": signature_b64,
                "publicKey": { "content": b64(verifier_pem) }
            }
        }
    }))
    .unwrap()
}

/// The cosign `dev.sigstore.cosign/bundle` annotation value.
pub fn legacy_bundle(e: &LogEntry) -> Value {
    json!({
        "SignedEntryTimestamp": e.set_b64,
        "Payload": {
            "body": e.body_b64,
            "integratedTime": e.integrated_time,
            "logIndex": e.log_index,
            "logID": e.log_id_hex,
        }
    })
}

/// The in-toto statement cosign v3 signs for an image: subject = the image digest.
pub fn cosign_statement(id: &ImageId) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": format!("{}/{}", id.registry, id.repository),
            "digest": { "sha256": id.digest_hex() }
        }],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {}
    }))
    .unwrap()
}

/// DSSE pre-authentication encoding.
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

/// A Sigstore bundle v0.3 with a DSSE envelope over `statement`, signed by a keyless `leaf`
/// and logged as a Rekor `dsse` entry in `rekor`.
pub fn sigstore_bundle(statement: &[u8], leaf: &super::pki::Leaf, rekor: &Rekor) -> Vec<u8> {
    let sig = b64(super::pki::sign(&leaf.key, &pae(IN_TOTO, statement)));
    let envelope = json!({
        "payload": b64(statement),
        "payloadType": IN_TOTO,
        "signatures": [{ "sig": sig, "keyid": "" }]
    });
    let body = serde_json::to_vec(&json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": { "algorithm": "sha256", "value": sha256_hex(serde_json::to_vec(&envelope).unwrap()) },
            "payloadHash": { "algorithm": "sha256", "value": sha256_hex(statement) },
            "signatures": [{ "signature": sig, "verifier": b64(&leaf.pem) }]
        }
    }))
    .unwrap();
    let e = rekor.entry(&body);
    serde_json::to_vec(&json!({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {
            "certificate": { "rawBytes": b64(&leaf.der) },
            "tlogEntries": [{
                "logIndex": e.log_index.to_string(),
                "logId": { "keyId": b64(e.log_id) },
                "kindVersion": { "kind": "dsse", "version": "0.0.1" },
                "integratedTime": e.integrated_time.to_string(),
                "inclusionPromise": { "signedEntryTimestamp": e.set_b64 },
                "canonicalizedBody": e.body_b64
            }]
        },
        "dsseEnvelope": envelope
    }))
    .unwrap()
}
