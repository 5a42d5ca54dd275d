//! Lineage: how the digest a node runs is tied to a signature on another digest, and how a
//! running image the runtime names without a manifest digest is tied to one.
//!
//! - A **platform manifest** is covered by a signature on an **index** only when that index's
//!   `manifests[].digest` lists it (the signed index bytes commit to it). The candidate index
//!   comes from the image's own references (the pods' spec images: a tag, or an index digest);
//!   it is fetched by digest (bounded, Content-Type checked, digest verified) and its signatures
//!   go through the same discovery and verification as any image's.
//! - An **index** with no signature of its own is judged by the platform manifests it lists
//!   (attestation manifests, `unknown/unknown`, skipped; bounded): signed when every one is
//!   signed by one identity, `invalid-signature` when one carries only invalid signatures,
//!   `checking` / `DigestUnknown` for a mix (which platform the node runs is not known), and
//!   `not-signed` only when none is signed.
//! - A **bare config digest** (or a digest under a name no registry holds, `kind load`) is tied
//!   through the pod's tag to the manifest whose `config.digest` equals it (or which is that
//!   digest, itself or listed by the tag's index); failing that, no identity is made.
//!
//! The walk starts only when the running digest's own listings are definitely empty, so an
//! image signed on its own digest costs what it always did. Registry answers are cached: a
//! tag's HEAD for the TTL (tags move), a manifest by digest while the cache has room (its
//! content cannot change).

use crate::core::lock::LockExt as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::registry::{FetchError, Repo};
use super::Verifier;
use crate::core::image::{ImageId, ImageRef};
use crate::core::posture::{
    bound, Posture, Reason, Verdict, Via, EVIDENCE_TRUST_ROOT, EVIDENCE_VIA_INDEX,
    EVIDENCE_VIA_INDEX_LISTINGS, EVIDENCE_VIA_PLATFORMS, MAX_MESSAGE,
};
use crate::core::tie::{Tie, Untied};

/// References of one image consulted for a covering index.
const MAX_LEADS: usize = 4;
/// Platform manifests of one index examined (their signatures, or their configs).
pub(crate) const MAX_PLATFORMS: usize = 16;
/// Entries kept per cache before it is emptied (a crude bound; misses only cost requests).
const MAX_CACHED: usize = 4096;
/// Entries of one index kept (an index listing more cannot be walked whole anyway).
const MAX_CHILDREN: usize = 256;

/// What a manifest's Content-Type says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Index,
    Image,
    /// No or another Content-Type: a GET tells.
    Unknown,
}

impl Kind {
    fn of(media_type: Option<&str>) -> Kind {
        let essence = media_type
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some(
                "application/vnd.oci.image.index.v1+json"
                | "application/vnd.docker.distribution.manifest.list.v2+json",
            ) => Kind::Index,
            Some(
                "application/vnd.oci.image.manifest.v1+json"
                | "application/vnd.docker.distribution.manifest.v2+json",
            ) => Kind::Image,
            _ => Kind::Unknown,
        }
    }
}

/// A HEAD answer: the digest a reference names and what it is.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub digest: String,
    pub kind: Kind,
}

/// A manifest or index, as far as lineage reads it.
#[derive(Debug)]
pub(crate) enum Doc {
    Index(Vec<Child>),
    Image { config: String },
    Other,
}

/// One entry of an index.
#[derive(Debug)]
pub(crate) struct Child {
    pub digest: String,
    /// An image manifest for a real platform: not an attestation manifest (`unknown/unknown`,
    /// BuildKit's `vnd.docker.reference.type: attestation-manifest`), not a nested index.
    pub platform: bool,
    /// Its `platform.architecture` is one most nodes run (amd64, arm64): looked at first when
    /// a config digest is matched, so a typical tie costs one or two manifest GETs.
    pub common: bool,
}

impl Doc {
    pub(crate) fn parse(body: &[u8]) -> Doc {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            manifests: Option<Vec<RawChild>>,
            #[serde(default)]
            config: Option<RawDesc>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawChild {
            digest: String,
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            platform: Option<RawPlatform>,
            #[serde(default)]
            annotations: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize)]
        struct RawDesc {
            digest: String,
        }
        #[derive(Deserialize)]
        struct RawPlatform {
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            os: String,
        }
        let Ok(raw) = serde_json::from_slice::<Raw>(body) else {
            return Doc::Other;
        };
        if let Some(children) = raw.manifests {
            let children = children
                .into_iter()
                .filter_map(|c| {
                    // Values from the registry become URLs: only real digests pass.
                    let digest = crate::core::image::validate_digest(&c.digest).ok()?;
                    let attestation = c
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("vnd.docker.reference.type"))
                        .is_some_and(|t| t == "attestation-manifest");
                    let unknown = c
                        .platform
                        .as_ref()
                        .is_some_and(|p| p.os == "unknown" || p.architecture == "unknown");
                    let nested = Kind::of(c.media_type.as_deref()) == Kind::Index;
                    let common = c
                        .platform
                        .as_ref()
                        .is_some_and(|p| p.architecture == "amd64" || p.architecture == "arm64");
                    Some(Child {
                        digest,
                        platform: !attestation && !unknown && !nested,
                        common,
                    })
                })
                .take(MAX_CHILDREN)
                .collect();
            return Doc::Index(children);
        }
        match raw
            .config
            .and_then(|c| crate::core::image::validate_digest(&c.digest).ok())
        {
            Some(config) => Doc::Image { config },
            None => Doc::Other,
        }
    }

    fn lists(&self, digest: &str) -> bool {
        matches!(self, Doc::Index(children) if children.iter().any(|c| c.digest == digest))
    }

    fn platforms(&self) -> Vec<&str> {
        match self {
            Doc::Index(children) => children
                .iter()
                .filter(|c| c.platform)
                .map(|c| c.digest.as_str())
                .collect(),
            _ => Vec::new(),
        }
    }
}

type Key = (String, String, String);

/// The caches of lineage's registry answers.
pub(crate) struct Lineage {
    ttl_secs: AtomicU64,
    heads: Mutex<HashMap<Key, (Head, DateTime<Utc>)>>,
    docs: Mutex<HashMap<Key, Arc<Doc>>>,
}

impl Default for Lineage {
    fn default() -> Self {
        Lineage {
            ttl_secs: AtomicU64::new(6 * 3600),
            heads: Mutex::default(),
            docs: Mutex::default(),
        }
    }
}

impl Lineage {
    /// How long a tag's answer is kept (the observer's TTL, like tag resolution).
    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.ttl_secs.store(ttl.as_secs(), Ordering::Relaxed);
    }

    fn ttl(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            i64::try_from(self.ttl_secs.load(Ordering::Relaxed)).unwrap_or(i64::MAX / 1000),
        )
    }
}

fn key(repo: Repo<'_>, reference: &str) -> Key {
    (
        repo.host.to_string(),
        repo.name.to_string(),
        reference.to_string(),
    )
}

fn insert_bounded<V>(map: &Mutex<HashMap<Key, V>>, k: Key, v: V) {
    let mut map = map.locked();
    if map.len() >= MAX_CACHED {
        map.clear();
    }
    map.insert(k, v);
}

/// One value for a set of signature listings (digest → the listings' evidence map), so the
/// status keeps one entry however many digests were consulted, and revalidation can compare it.
pub(crate) fn fingerprint<'a>(
    parts: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> String {
    let mut h = Sha256::new();
    for (digest, listings) in parts {
        h.update(digest.as_bytes());
        h.update(b"\n");
        // The registry's listings only: which trust root judged them is kept apart (the
        // verdict's own `trustRoot` entry), as revalidation compares it apart.
        for (k, v) in listings
            .iter()
            .filter(|(k, _)| k.as_str() != EVIDENCE_TRUST_ROOT)
        {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn short(digest: &str) -> String {
    // `sha256:` and 12 hex digits: enough for a reader, and the record carries the full one.
    digest.chars().take(19).collect()
}

impl Verifier {
    /// HEAD a tag or digest, cached (a tag for the TTL, a digest for good).
    pub(crate) async fn head(
        &self,
        repo: Repo<'_>,
        reference: &str,
        now: DateTime<Utc>,
    ) -> Result<Head, FetchError> {
        let k = key(repo, reference);
        let is_digest = reference.contains(':');
        if let Some((head, at)) = self.lineage.heads.locked().get(&k) {
            if is_digest || now.signed_duration_since(*at) < self.lineage.ttl() {
                return Ok(head.clone());
            }
        }
        let (digest, media_type) = self.registry.manifest_head(repo, reference).await?;
        let head = Head {
            digest,
            kind: Kind::of(media_type.as_deref()),
        };
        insert_bounded(&self.lineage.heads, k, (head.clone(), now));
        Ok(head)
    }

    /// GET a manifest or index by digest (bounded, Content-Type checked, digest verified),
    /// cached: content named by its digest cannot change.
    pub(crate) async fn doc(&self, repo: Repo<'_>, digest: &str) -> Result<Arc<Doc>, FetchError> {
        let k = key(repo, digest);
        if let Some(doc) = self.lineage.docs.locked().get(&k) {
            return Ok(Arc::clone(doc));
        }
        let fetched = self
            .registry
            .manifest(repo, digest, self.limits.max_manifest_bytes)
            .await?;
        let doc = Arc::new(Doc::parse(&fetched.body));
        insert_bounded(&self.lineage.docs, k, Arc::clone(&doc));
        Ok(doc)
    }

    /// The running digest's own verdict, and when its own listings are definitely empty, what
    /// an index listing it (or, for an index, its platform manifests) says.
    pub(super) async fn observe_running(
        &self,
        image: &ImageId,
        leads: &[ImageRef],
        now: DateTime<Utc>,
    ) -> Verdict {
        let own = self.observe_within_budget(image).await;
        if own.posture != Posture::NotSigned || leads.is_empty() {
            return own;
        }
        let mut elsewhere = Vec::new();
        match self.covered(image, leads, now, &own, &mut elsewhere).await {
            Ok(Some(v)) => v,
            Ok(None) if elsewhere.is_empty() => own,
            Ok(None) => {
                // Say so: a tag that moved on leaves a platform manifest with no lead to the
                // index that may have covered it.
                let mut v = own;
                let shown: Vec<String> = elsewhere.iter().map(|d| short(d)).collect();
                v.message = bound(
                    &format!(
                        "{}; the pods' references lead to {} instead, which neither is nor lists this manifest",
                        v.message,
                        shown.join(", ")
                    ),
                    MAX_MESSAGE,
                );
                v
            }
            Err(v) => v,
        }
    }

    /// `Ok(None)`: nothing covers the running digest (its own `not-signed` stands).
    async fn covered(
        &self,
        image: &ImageId,
        leads: &[ImageRef],
        now: DateTime<Utc>,
        own: &Verdict,
        elsewhere: &mut Vec<String>,
    ) -> Result<Option<Verdict>, Verdict> {
        let access = self.access_id(image).await;
        let repo = Repo {
            host: image.api_host(),
            name: &image.repository,
            access: &access,
        };
        let mut running_kind = None;
        let mut candidates: Vec<String> = Vec::new();
        let leads = leads
            .iter()
            .filter(|l| l.registry == image.registry && l.repository == image.repository)
            .take(MAX_LEADS);
        for lead in leads {
            let head = match (&lead.digest, &lead.tag) {
                (Some(d), _) if *d == image.digest => continue,
                (Some(d), _) => Head {
                    digest: d.clone(),
                    kind: Kind::Unknown,
                },
                (None, Some(tag)) => match self.head(repo, tag, now).await {
                    Ok(h) => h,
                    Err(FetchError::NotFound) => continue,
                    Err(e) => return Err(e.checking(&format!("resolving tag {tag:?}"))),
                },
                (None, None) => continue,
            };
            if head.digest == image.digest {
                running_kind = Some(head.kind);
            } else if head.kind == Kind::Image {
                elsewhere.push(head.digest);
            } else if !candidates.contains(&head.digest) {
                candidates.push(head.digest);
            }
        }
        let mut best: Option<Verdict> = None;
        for candidate in candidates {
            let doc = match self.doc(repo, &candidate).await {
                Ok(d) => d,
                Err(FetchError::NotFound) => continue,
                Err(e) => return Err(e.checking(&format!("index {}", short(&candidate)))),
            };
            if !doc.lists(&image.digest) {
                elsewhere.push(candidate);
                continue;
            }
            let v = self.via_index(image, &candidate, own).await;
            if best
                .as_ref()
                .is_none_or(|b| v.posture.stronger_than(b.posture))
            {
                best = Some(v);
            }
        }
        if let Some(v) = best {
            return if v.posture == Posture::Checking {
                Err(v)
            } else {
                Ok(Some(v))
            };
        }
        // Not listed by any index the pods name: is the running digest an index itself?
        let kind = match running_kind {
            Some(k) => k,
            None => match self.head(repo, &image.digest, now).await {
                Ok(h) => h.kind,
                Err(FetchError::NotFound) => return Ok(None),
                Err(e) => return Err(e.checking("the running manifest")),
            },
        };
        if kind == Kind::Image {
            return Ok(None);
        }
        let doc = match self.doc(repo, &image.digest).await {
            Ok(d) => d,
            Err(FetchError::NotFound) => return Ok(None),
            Err(e) => return Err(e.checking("the running manifest")),
        };
        let platforms = doc.platforms();
        if platforms.is_empty() {
            return Ok(None);
        }
        self.via_platforms(image, &platforms, own).await.map(Some)
    }

    /// The verdict of `index`, which lists the running platform manifest.
    async fn via_index(&self, image: &ImageId, index: &str, own: &Verdict) -> Verdict {
        let index_id = ImageId {
            digest: index.to_string(),
            ..image.clone()
        };
        let v = self.observe_within_budget(&index_id).await;
        let lists = format!("index {index}, which lists this platform manifest");
        if v.posture == Posture::Checking {
            let mut c = Verdict::checking(v.reason, format!("{lists}: {}", v.message));
            c.retry_after = v.retry_after;
            return c;
        }
        let mut evidence = own.artifact_digests.clone();
        if let Some(root) = v.artifact_digests.get(EVIDENCE_TRUST_ROOT) {
            evidence.insert(EVIDENCE_TRUST_ROOT.to_string(), root.clone());
        }
        evidence.insert(EVIDENCE_VIA_INDEX.to_string(), index.to_string());
        evidence.insert(
            EVIDENCE_VIA_INDEX_LISTINGS.to_string(),
            fingerprint([(index, &v.artifact_digests)]),
        );
        let message = match v.posture {
            Posture::Signed => format!(
                "signed via index {index} which lists this platform manifest; the manifest itself carries no signature ({})",
                v.message
            ),
            Posture::InvalidSignature => format!(
                "{lists}, carries signature artifacts and none verifies: {}; the manifest itself carries no signature",
                v.message
            ),
            _ => format!(
                "{}; nor does {lists} (its own signature listings are empty too)",
                own.message
            ),
        };
        let mut out = v;
        for s in &mut out.signatures {
            s.via = Some(Via::Index);
        }
        out.message = bound(&message, MAX_MESSAGE);
        out.artifact_digests = evidence;
        out
    }

    /// The running digest is an index with no signature of its own: its platform manifests.
    async fn via_platforms(
        &self,
        image: &ImageId,
        platforms: &[&str],
        own: &Verdict,
    ) -> Result<Verdict, Verdict> {
        let skipped = platforms.len().saturating_sub(MAX_PLATFORMS);
        let platforms: Vec<&str> = platforms.iter().copied().take(MAX_PLATFORMS).collect();
        let verdicts = join_all(platforms.iter().map(|d| {
            let id = ImageId {
                digest: (*d).to_string(),
                ..image.clone()
            };
            async move { self.observe_within_budget(&id).await }
        }))
        .await;
        let checked: Vec<(&str, Verdict)> = platforms.into_iter().zip(verdicts).collect();
        let n = checked.len();
        if let Some((d, v)) = checked.iter().find(|(_, v)| v.posture == Posture::Checking) {
            let mut c = Verdict::checking(
                v.reason,
                format!("platform manifest {d} of this index: {}", v.message),
            );
            c.retry_after = v.retry_after;
            return Err(c);
        }
        let mut evidence = own.artifact_digests.clone();
        if let Some(root) = checked
            .iter()
            .find_map(|(_, v)| v.artifact_digests.get(EVIDENCE_TRUST_ROOT))
        {
            evidence.insert(EVIDENCE_TRUST_ROOT.to_string(), root.clone());
        }
        evidence.insert(
            EVIDENCE_VIA_PLATFORMS.to_string(),
            fingerprint(checked.iter().map(|(d, v)| (*d, &v.artifact_digests))),
        );
        let mark = |v: &Verdict| {
            let mut records = v.signatures.clone();
            for s in &mut records {
                s.via = Some(Via::Platform);
            }
            records
        };
        if let Some((d, v)) = checked
            .iter()
            .find(|(_, v)| v.posture == Posture::InvalidSignature)
        {
            let mut out = v.clone();
            out.signatures = mark(v);
            out.message = bound(
                &format!(
                    "this index carries no signature of its own; platform manifest {d} it lists carries signature artifacts and none verifies: {}",
                    v.message
                ),
                MAX_MESSAGE,
            );
            out.artifact_digests = evidence;
            return Ok(out);
        }
        let signed: Vec<&(&str, Verdict)> = checked
            .iter()
            .filter(|(_, v)| v.posture == Posture::Signed)
            .collect();
        if signed.is_empty() {
            let mut out = own.clone();
            out.message = bound(
                &format!(
                    "{}; nor do the {n} platform manifest(s) this index lists",
                    own.message
                ),
                MAX_MESSAGE,
            );
            out.artifact_digests = evidence;
            return Ok(out);
        }
        let identities: BTreeSet<_> = signed
            .iter()
            .map(|(_, v)| {
                (
                    v.signer.clone(),
                    v.issuer.clone(),
                    v.signer_type.map(|t| format!("{t:?}")),
                )
            })
            .collect();
        let who: Vec<String> = identities
            .iter()
            .map(|(s, _, _)| crate::core::text::escape(s.as_deref().unwrap_or("?")))
            .collect();
        if signed.len() == n && skipped == 0 && identities.len() == 1 {
            let Some((_, first)) = signed.first() else {
                return Ok(own.clone());
            };
            let mut out = first.clone();
            out.signatures = signed.iter().flat_map(|(_, v)| mark(v)).collect();
            out.message = bound(
                &format!(
                    "this index carries no signature of its own; all {n} platform manifest(s) it lists are signed by {} (attestation manifests not counted)",
                    who.join(", ")
                ),
                MAX_MESSAGE,
            );
            out.artifact_digests = evidence;
            return Ok(out);
        }
        let unchecked = if skipped > 0 {
            format!(", {skipped} more not examined")
        } else {
            String::new()
        };
        Err(Verdict::checking(
            Reason::DigestUnknown,
            format!(
                "this index carries no signature of its own; {} of {n} platform manifest(s) it lists are signed (by {}){unchecked}; which platform this node runs is not known, so no posture is attributed",
                signed.len(),
                who.join(", ")
            ),
        ))
    }

    /// The digests an expired verdict also drew on (a covering index, an index's platform
    /// manifests), added to `now` the way verification recorded them; `None` on any doubt.
    pub(super) async fn lineage_listings(
        &self,
        image: &ImageId,
        recorded: &BTreeMap<String, String>,
        now: &mut BTreeMap<String, String>,
    ) -> Option<()> {
        let access = self.access_id(image).await;
        let repo = Repo {
            host: image.api_host(),
            name: &image.repository,
            access: &access,
        };
        if let Some(index) = recorded.get(EVIDENCE_VIA_INDEX) {
            let index = crate::core::image::validate_digest(index).ok()?;
            let listings = self.listings(repo, &index).await?;
            now.insert(
                EVIDENCE_VIA_INDEX_LISTINGS.to_string(),
                fingerprint([(index.as_str(), &listings)]),
            );
            now.insert(EVIDENCE_VIA_INDEX.to_string(), index);
        }
        if recorded.contains_key(EVIDENCE_VIA_PLATFORMS) {
            let doc = self.doc(repo, &image.digest).await.ok()?;
            let platforms: Vec<&str> = doc.platforms().into_iter().take(MAX_PLATFORMS).collect();
            let listings = join_all(platforms.iter().map(|d| self.listings(repo, d))).await;
            let listings: Vec<BTreeMap<String, String>> =
                listings.into_iter().collect::<Option<_>>()?;
            now.insert(
                EVIDENCE_VIA_PLATFORMS.to_string(),
                fingerprint(platforms.iter().copied().zip(listings.iter())),
            );
        }
        Some(())
    }

    /// Ties a running image the runtime names without a manifest digest of the pod's
    /// repository to one, through the pod's tag. Never guesses: what the tag leads to must be
    /// the running manifest (its config digest equal, or the digest itself or listed).
    pub async fn tie(&self, tie: &Tie, now: DateTime<Utc>) -> Result<ImageId, Verdict> {
        let within = tokio::time::timeout(self.limits.budget, self.tie_unisolated(tie, now));
        match crate::core::isolate::catch(within).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Verdict::checking(
                Reason::Timeout,
                "tying the running image to its tag exceeded the time budget",
            )),
            Err(_) => Err(super::internal_error()),
        }
    }

    async fn tie_unisolated(&self, tie: &Tie, now: DateTime<Utc>) -> Result<ImageId, Verdict> {
        let reference = &tie.reference;
        let tag = reference.tag.as_deref().unwrap_or("latest");
        let access = self
            .access(
                &reference.registry,
                &reference.repository,
                &reference.to_string(),
            )
            .await;
        let repo = Repo {
            host: crate::core::image::api_host(&reference.registry),
            name: &reference.repository,
            access: &access,
        };
        let runs = match &tie.running {
            Untied::Config(c) => format!(
                "the node runs the image with config {c} (imageID is a bare config digest, no manifest digest)"
            ),
            Untied::Foreign(d) => format!(
                "the node runs manifest {d} under another name than {} (not looked up there)",
                reference.repo_path()
            ),
        };
        let unknown = |why: String| {
            Verdict::checking(
                Reason::DigestUnknown,
                format!("{runs}; {why}; no posture is attributed (not the tag's)"),
            )
        };
        let head = match self.head(repo, tag, now).await {
            Ok(h) => h,
            Err(FetchError::NotFound) => {
                return Err(unknown(format!("tag {tag:?} is not in the registry")))
            }
            Err(e) => return Err(e.checking(&format!("tying the running image to tag {tag:?}"))),
        };
        let unfetched = |e: FetchError| e.checking(&format!("walking tag {tag:?}"));
        let found = match &tie.running {
            Untied::Foreign(d) if *d == head.digest => Some(d.clone()),
            Untied::Foreign(_) if head.kind == Kind::Image => None,
            Untied::Foreign(d) => {
                let doc = self.doc(repo, &head.digest).await.map_err(unfetched)?;
                doc.lists(d).then(|| d.clone())
            }
            Untied::Config(c) => {
                let doc = self.doc(repo, &head.digest).await.map_err(unfetched)?;
                match &*doc {
                    Doc::Image { config } if c.is_config_of(config) => Some(head.digest.clone()),
                    Doc::Index(children) => {
                        // One GET per platform manifest (a pull on Docker Hub), in turn, the
                        // common architectures first, until the config matches.
                        let mut platforms: Vec<&Child> =
                            children.iter().filter(|c| c.platform).collect();
                        platforms.sort_by_key(|c| !c.common);
                        let mut hit = None;
                        for child in platforms.into_iter().take(MAX_PLATFORMS) {
                            let doc = self.doc(repo, &child.digest).await.map_err(unfetched)?;
                            if matches!(&*doc, Doc::Image { config } if c.is_config_of(config)) {
                                hit = Some(child.digest.clone());
                                break;
                            }
                        }
                        hit
                    }
                    _ => None,
                }
            }
        };
        match found {
            Some(digest) => Ok(ImageId {
                registry: reference.registry.clone(),
                repository: reference.repository.clone(),
                digest,
            }),
            None => Err(unknown(format!(
                "tag {tag:?} now points to {}, which neither is nor lists it: the tag moved, or the image never came from this registry",
                head.digest
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn index_entries_and_platforms() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": A, "size": 1,
                 "platform": {"architecture": "amd64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": B, "size": 1,
                 "platform": {"architecture": "unknown", "os": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:zz", "size": 1},
                {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": C, "size": 1},
            ]
        });
        let doc = Doc::parse(&serde_json::to_vec(&body).unwrap());
        assert!(doc.lists(A) && doc.lists(B) && doc.lists(C));
        assert_eq!(doc.platforms(), [A], "{doc:?}");
        let image = serde_json::json!({"config": {"digest": A}, "layers": []});
        assert!(matches!(
            Doc::parse(&serde_json::to_vec(&image).unwrap()),
            Doc::Image { config } if config == A
        ));
        assert!(matches!(Doc::parse(b"<html>"), Doc::Other));
        assert!(!Doc::Other.lists(A));
    }

    #[test]
    fn kinds_from_content_type() {
        assert_eq!(
            Kind::of(Some("application/vnd.oci.image.index.v1+json; charset=x")),
            Kind::Index
        );
        assert_eq!(
            Kind::of(Some("application/vnd.docker.distribution.manifest.v2+json")),
            Kind::Image
        );
        assert_eq!(Kind::of(None), Kind::Unknown);
        assert_eq!(Kind::of(Some("text/html")), Kind::Unknown);
    }

    #[test]
    fn fingerprint_is_order_and_content_sensitive() {
        let m1 = BTreeMap::from([("sigTag".to_string(), A.to_string())]);
        let m2 = BTreeMap::new();
        let a = fingerprint([(A, &m1), (B, &m2)]);
        assert_ne!(a, fingerprint([(B, &m2), (A, &m1)]));
        assert_ne!(a, fingerprint([(A, &m2), (B, &m1)]));
        assert_eq!(a, fingerprint([(A, &m1), (B, &m2)]));
    }
}
