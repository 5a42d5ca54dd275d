//! Entry points for the cargo-fuzz targets under `fuzz/` and for `tests/fuzz_regressions.rs`.
//!
//! Each function feeds arbitrary bytes to the crate's real parsers and classifiers (nothing
//! here re-implements them) and discards what they return; only a panic, a hang or an
//! allocation blow-up is a finding. Inputs made of several fields separate them with the byte
//! `0xFF`, which never occurs in UTF-8 text, so seeds stay readable. Not an API.

use std::collections::BTreeMap;

use base64::Engine as _;
use oci_client::manifest::{OciImageManifest, OciManifest};
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use sha2::Digest as _;

use crate::core::image::{self, ImageId, ImageRef};
use crate::core::posture::Reason;
use crate::model::naming::ResourceName as _;
use crate::verify::auth::Challenge;
use crate::verify::cert::{chain_from_pem, Leaf};
use crate::verify::record::Context;
use crate::verify::rekor::Body;
use crate::verify::timestamp;
use crate::verify::tlog::{InclusionProof, LogEntry};
use crate::verify::{bundle, discovery, legacy, KeyRing, TrustMaterial};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const SEP: u8 = 0xFF;

/// The trust a classification runs against: a parsed `trusted_root.json`, no configured keys,
/// and the time certificates are checked at when an input carries none.
pub struct Trust {
    material: TrustMaterial,
    keys: KeyRing,
    at: i64,
}

impl Trust {
    /// From a Sigstore `trusted_root.json`, parsed the way `--trusted-root` is.
    pub fn from_trusted_root(json: &[u8], at: i64) -> Option<Trust> {
        let material = TrustMaterial::from_json(json).ok()?;
        Some(Trust {
            material,
            keys: KeyRing::default(),
            at,
        })
    }

    /// Trusts nothing: every input fails, but only after being parsed.
    pub fn empty() -> Trust {
        Trust {
            material: TrustMaterial::empty(),
            keys: KeyRing::default(),
            at: 0,
        }
    }

    fn ctx(&self) -> Context<'_> {
        Context {
            trust: &self.material,
            keys: &self.keys,
        }
    }
}

fn fields(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == SEP)
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// An image reference as a pod or a user writes it. `Err` is a broken invariant (not a parse
/// error): the identity must survive printing and re-parsing, names must be DNS labels.
pub fn image_ref(input: &str) -> Result<(), String> {
    let Ok(r) = ImageRef::parse(input) else {
        return Ok(());
    };
    let shown = r.to_string();
    let _ = r.repo_path();
    match ImageRef::parse(&shown) {
        Ok(again) if again == r => {}
        Ok(again) => return Err(format!("{input:?} -> {shown:?} re-parses as {again:?}")),
        Err(e) => return Err(format!("{input:?} -> {shown:?} does not re-parse: {e}")),
    }
    if let Some(id) = r.id() {
        check_id(&id)?;
    }
    Ok(())
}

/// A pod's `containerStatuses[].imageID`, and the naming functions on arbitrary identities
/// (`registry` 0xFF `repository` 0xFF `digest`, as the inventory may build them).
pub fn image_id(data: &[u8]) -> Result<(), String> {
    let input = text(data);
    let _ = image::digest_from_image_id(&input);
    if let image::RuntimeImage::Manifest { digest, .. } = image::RuntimeImage::parse(&input) {
        image::validate_digest(&digest)?;
    }
    let _ = image::validate_digest(&input);
    let _ = image::api_host(&image::normalize_registry(&input));
    let mut f = fields(data).map(text);
    let id = ImageId {
        registry: f.next().unwrap_or_default(),
        repository: f.next().unwrap_or_default(),
        digest: f.next().unwrap_or_default(),
    };
    let _ = (id.api_host(), id.referrers_tag(), id.digest_hex());
    check_id(&id)
}

fn check_id(id: &ImageId) -> Result<(), String> {
    let _ = (id.key(), id.repo_path(), id.sig_tag(), id.to_string());
    let name = id.resource_name();
    let bytes = name.as_bytes();
    let ok = (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(format!("{id:?} is named {name:?}, not a DNS label"))
    }
}

/// One legacy `.sig` layer: `image digest` 0xFF `payload` then 0xFF-separated `key=value`
/// annotations, classified by `verify::legacy::classify`.
pub fn legacy_layer(trust: &Trust, data: &[u8]) -> Reason {
    let mut f = fields(data);
    let digest = text(f.next().unwrap_or_default());
    let payload = f.next().unwrap_or_default();
    let annotations: BTreeMap<String, String> = f
        .map(|a| {
            let a = text(a);
            match a.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (a, String::new()),
            }
        })
        .collect();
    legacy::classify(&annotations, payload, &digest, &trust.ctx()).reason
}

/// One Sigstore bundle referrer: `image digest` 0xFF `bundle JSON`, classified by
/// `verify::bundle::classify`.
pub fn sigstore_bundle(trust: &Trust, data: &[u8]) -> Reason {
    let (digest, raw) = match data.iter().position(|b| *b == SEP) {
        Some(i) => (
            text(data.get(..i).unwrap_or_default()),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (String::new(), data),
    };
    bundle::classify(raw, &digest, &trust.ctx()).reason
}

/// A referrers listing or a referrer / `.sig` manifest, read by discovery's own parsers
/// (listing, referrer judgement, bundle predicate peek) and the `oci_client` types the legacy
/// path uses.
pub fn oci_manifest(data: &[u8]) {
    const IMAGE: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
    if let discovery::ListingKind::Entries(entries) = discovery::read_listing(data, &digest, IMAGE)
    {
        for e in &entries {
            let _ = image::validate_digest(e.digest());
            let _ = e.rank();
        }
    }
    for labelled in [false, true] {
        if let discovery::Judged::Bundle(layer) = discovery::judge(data, labelled) {
            let _ = image::validate_digest(layer.digest());
        }
    }
    let _ = discovery::statement_predicate(data);
    if let Ok(manifest) = serde_json::from_slice::<OciImageManifest>(data) {
        for l in &manifest.layers {
            let _ = l.media_type == legacy::SIMPLESIGNING_MEDIA_TYPE;
            let _ = bundle::is_bundle_type(&l.media_type);
            let _ = l.size < 0 || usize::try_from(l.size).is_err();
            let _ = image::validate_digest(&l.digest);
            let _ = l.annotations.clone().unwrap_or_default();
        }
    }
    let _ = serde_json::from_slice::<OciManifest>(data);
    // Lineage's reading of an index or manifest (children, platforms, config digest).
    if let crate::verify::lineage::Doc::Index(children) = crate::verify::lineage::Doc::parse(data) {
        for c in &children {
            debug_assert!(image::validate_digest(&c.digest).is_ok(), "{}", c.digest);
        }
    }
}

/// A log entry: `body` 0xFF `integratedTime` 0xFF `logIndex` 0xFF `logID` 0xFF `SET` 0xFF
/// `checkpoint` 0xFF `proof hashes`. A body starting with `{` is entry JSON and is
/// base64-encoded first (as the log would); anything else is taken as the base64 text. Runs
/// `LogEntry::verify` (SET, inclusion proof, checkpoint), the body parser, the logged key
/// through the key ring, and the bytes as an RFC 3161 timestamp token.
pub fn rekor_entry(trust: &Trust, data: &[u8]) {
    let mut f = fields(data);
    let body = f.next().unwrap_or_default();
    let body_b64 = if body.first() == Some(&b'{') {
        B64.encode(body)
    } else {
        text(body)
    };
    let number = |f: Option<&[u8]>| text(f.unwrap_or_default()).trim().parse().unwrap_or(0);
    let integrated_time: i64 = number(f.next());
    let log_index = number(f.next());
    let log_id = f.next().unwrap_or_default().to_vec();
    let promise = f.next().map(<[u8]>::to_vec);
    let checkpoint = f.next().map(text);
    let hashes: Vec<Vec<u8>> = f.map(<[u8]>::to_vec).take(70).collect();
    let proof = checkpoint.map(|c| InclusionProof {
        log_index,
        root_hash: hashes.first().cloned().unwrap_or_default(),
        tree_size: log_index.saturating_add(1),
        hashes,
        checkpoint: Some(c),
    });
    let entry = LogEntry {
        body_b64,
        log_index,
        log_id,
        integrated_time: (integrated_time != 0).then_some(integrated_time),
        promise,
        proof,
    };
    let _ = entry.verify(&trust.material);
    let _ = timestamp::verify(&[data.to_vec()], b"", &trust.material);
    let (signature, verifiers) = match entry.body() {
        Ok(Body::Hashed {
            signature,
            verifier,
            ..
        }) => (signature, vec![verifier]),
        Ok(Body::Dsse { signatures, .. }) => {
            let first = signatures
                .first()
                .map(|(s, _)| s.clone())
                .unwrap_or_default();
            (
                first,
                signatures.into_iter().map(|(_, v)| v).take(4).collect(),
            )
        }
        Err(_) => return,
    };
    for v in verifiers {
        let _ = v.holds(&signature);
        let key = v.public_key();
        let _ = trust.keys.signer_for(&signature, b"", key.as_deref());
    }
}

/// A `WWW-Authenticate` header value, parsed by `Challenge::parse`.
pub fn www_authenticate(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(WWW_AUTHENTICATE, value);
    let _ = Challenge::parse(&headers);
}

/// A certificate: DER, or a PEM bundle (leaf first, then its chain, as cosign's annotations
/// carry them). Parses it, extracts key and identity and checks the chain against `trust`.
pub fn certificate(trust: &Trust, data: &[u8]) {
    let (leaf, chain) = match chain_from_pem(data) {
        Ok(blocks) if !blocks.is_empty() => {
            let _ = Leaf::from_pem(data);
            let mut blocks = blocks.into_iter();
            let leaf = blocks.next().unwrap_or_default();
            (Leaf::from_der(&leaf), blocks.collect::<Vec<_>>())
        }
        _ => (Leaf::from_der(data), Vec::new()),
    };
    let Ok(leaf) = leaf else {
        return;
    };
    let _ = leaf.der();
    let _ = leaf.key();
    let _ = leaf.identity();
    let facts = leaf.build_facts();
    debug_assert!(
        [
            &facts.build_signer_uri,
            &facts.source_repository,
            &facts.source_ref,
            &facts.run_url
        ]
        .iter()
        .all(|f| f
            .as_ref()
            .is_none_or(|t| t.len() <= crate::core::posture::MAX_TEXT + 3)),
        "certificate facts are bounded"
    );
    let _ = leaf.verify_chain(&trust.material, &chain, trust.at);
}
