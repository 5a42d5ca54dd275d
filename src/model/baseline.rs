//! Signer drift: a trust-on-first-use baseline of who signs each repository.
//!
//! One cluster-scoped [`SignerBaseline`] per repository (`registry/repository`). `spec` lists
//! the accepted signers; the operator writes it **once**, when it creates the baseline from the
//! identities verified on the repository's running images at that moment (`mode: learn`), and
//! never again: accepting a new signer is a reviewed edit by a person (or GitOps). With
//! `mode: pinned` a person writes the identities before any image runs; nothing is learned.
//!
//! Identities are compared by [`Signer`] (rule: match what survives a release): a GitHub
//! Actions / GitLab CI certificate by its issuer, its workflow (the Build Signer URI without
//! the `@ref`) and its source repository, the ref recorded apart; an email, a SPIFFE ID or any
//! other URI exactly, with its issuer; a key by its `sha256:` SPKI fingerprint or its
//! configured name.
//!
//! Every ImagePosture of a repository with a baseline is judged ([`judge`]) and gets
//! `status.drift` (field manager [`FIELD_MANAGER_DRIFT`]): `SignerChanged`, `SignatureDropped`
//! or `SourceRefChanged`. `checking` never raises nor clears a drift (the last verdict stands).
//! The loop that writes all this is `operator::baseline::Baseliner`; `scan`/`observe
//! --baseline` use [`judge`] directly.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::core::posture::{bound, Posture, SignatureRecord, SignerType, MAX_MESSAGE, MAX_TEXT};
use crate::model::crd::{parse_time, rfc3339, ImagePosture, ImagePostureStatus};

/// Field manager of the baseline loop: `status.drift` of ImagePostures, the SignerBaselines
/// it creates (spec, once) and their status.
pub const FIELD_MANAGER_DRIFT: &str = "imageposture-drift";
/// The ImagePosture status fields the drift manager owns (JSON names).
pub const DRIFT_FIELDS: &[&str] = &["drift"];

/// Identities the operator writes into a learned baseline, and kept in `status.observed`.
pub const MAX_IDENTITIES: usize = 16;
/// Digests kept in `status.learnedFrom` and `status.drifting`.
pub const MAX_DIGESTS: usize = 16;
/// Announced departures remembered (see `operator::baseline::Baseliner`).
pub const MAX_ANNOUNCED: usize = 65_536;
/// Accepted identities quoted in a drift.
const MAX_QUOTED: usize = 4;
/// While an image of a repository without a baseline is still `checking` (its first
/// verification queued or slow), learning waits up to this long: a baseline learned a second
/// too early would make the other signer a drift.
pub const LEARN_WAIT: chrono::Duration = chrono::Duration::minutes(10);

/// Issuers whose workflow identities carry the ref in the SAN and are matched without it.
const CI_ISSUERS: &[&str] = &[
    "https://token.actions.githubusercontent.com",
    "https://gitlab.com",
];

// ---- the resource ---------------------------------------------------------------------------

/// Who is accepted to sign the images of one repository.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "imageposture.io",
    version = "v1alpha1",
    kind = "SignerBaseline",
    plural = "signerbaselines",
    singular = "signerbaseline",
    shortname = "sigbase",
    status = "SignerBaselineStatus",
    derive = "PartialEq",
    doc = "The accepted signers of one repository (registry/repository): learned on first use \
           (mode learn) or written by a person (mode pinned). Images signed otherwise drift.",
    printcolumn(name = "Repository", type_ = "string", json_path = ".spec.repository"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Identities",
        type_ = "integer",
        json_path = ".status.identityCount"
    ),
    printcolumn(
        name = "Drifting",
        type_ = "integer",
        json_path = ".status.driftingCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SignerBaselineSpec {
    /// `registry/repository`, as in the ImagePostures' `spec.repository`.
    #[schemars(length(max = 512))]
    pub repository: String,
    /// `learn` (default): written once by the operator from what it saw first. `pinned`:
    /// written by a person; nothing is learned.
    #[serde(default)]
    pub mode: Mode,
    /// The accepted signers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub identities: Vec<AcceptedIdentity>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Learn,
    Pinned,
}

/// One accepted signer: `{issuer, subject}` (keyless; `sourceRepository` and `refKinds` narrow
/// a CI workflow), `{key}` (`sha256:` SPKI fingerprint) or `{keyName}` (a configured key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedIdentity {
    /// OIDC issuer of a keyless signer (absent: any issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The certificate subject: an email, a SPIFFE ID or a URI, matched exactly; for a GitHub
    /// Actions / GitLab CI identity the workflow URI, matched without its `@ref` (a ref written
    /// here adds its kind to `refKinds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For a CI workflow: the repository it must build (Source Repository URI). Absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository: Option<String>,
    /// For a CI workflow: the kinds of ref it signs from (`tag`, `branch`, `pull-request`,
    /// `other`). Another kind is `SourceRefChanged` (a warning). Empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub ref_kinds: Vec<RefKind>,
    /// `sha256:<hex>` of a signing key's SubjectPublicKeyInfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The name of a configured key (`--trusted-key NAME=FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

/// What the baseline loop saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignerBaselineStatus {
    /// The digests the operator learned `spec.identities` from (learn mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub learned_from: Vec<String>,
    /// When the baseline was learned (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub learned_at: Option<String>,
    /// Number of `spec.identities` (for the printer column).
    #[serde(default)]
    pub identity_count: u32,
    /// Each identity seen signing the repository's running images (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub observed: Vec<ObservedIdentity>,
    /// Running digests that depart from the baseline (bounded; the count is not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub drifting: Vec<String>,
    #[serde(default)]
    pub drifting_count: u32,
}

/// One identity seen signing running images of the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedIdentity {
    /// The identity, as [`Signer::describe`] writes it (bounded).
    #[schemars(length(max = 257))]
    pub identity: String,
    /// Whether `spec.identities` accepts it.
    pub accepted: bool,
    /// First seen by this baseline (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub first_seen: String,
    /// Last time the number of running digests it signs changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_seen: String,
    /// Running digests it signs.
    pub digests: u32,
    /// Ref kinds it signed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ref_kinds: Vec<RefKind>,
}

/// The kind of a git ref a CI identity built.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RefKind {
    Tag,
    Branch,
    PullRequest,
    Other,
}

impl RefKind {
    pub fn of(git_ref: &str) -> RefKind {
        if git_ref.starts_with("refs/tags/") {
            RefKind::Tag
        } else if git_ref.starts_with("refs/heads/") {
            RefKind::Branch
        } else if git_ref.starts_with("refs/pull/") || git_ref.starts_with("refs/merge-requests/") {
            RefKind::PullRequest
        } else {
            RefKind::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Tag => "tag",
            RefKind::Branch => "branch",
            RefKind::PullRequest => "pull-request",
            RefKind::Other => "other",
        }
    }
}

/// The drift of one image from its repository's baseline (`status.drift`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// `SignerChanged` | `SignatureDropped` | `SourceRefChanged`.
    pub kind: DriftKind,
    /// The SignerBaseline judged against.
    #[schemars(length(max = 253))]
    pub baseline: String,
    /// The identity that signed (bounded; attacker-influenced text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub signer: Option<String>,
    /// The ref it was built from, for a CI identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub source_ref: Option<String>,
    /// The accepted identities (the first few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub accepted: Vec<String>,
    #[schemars(length(max = 513))]
    pub message: String,
    /// Since when (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub since: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DriftKind {
    /// Signed, by no accepted identity.
    SignerChanged,
    /// The repository has accepted signers and this digest is not signed, or its signature
    /// does not verify.
    SignatureDropped,
    /// An accepted workflow signed from a kind of ref it is not accepted from (a warning).
    SourceRefChanged,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::SignerChanged => "SignerChanged",
            DriftKind::SignatureDropped => "SignatureDropped",
            DriftKind::SourceRefChanged => "SourceRefChanged",
        }
    }

    /// A warning rather than an alarm.
    pub fn is_warning(self) -> bool {
        self == DriftKind::SourceRefChanged
    }
}

impl std::fmt::Display for DriftKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CustomResourceDefinition as YAML; `crds/signerbaseline.yaml` holds exactly this text.
#[allow(clippy::expect_used, reason = "our own static types, no outside data")]
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&SignerBaseline::crd()).expect("a CRD always serializes to YAML")
}

/// The name the operator gives the baseline it learns for `repository`: a readable slug and
/// a short hash (people may name the ones they write as they like; baselines are found by
/// `spec.repository`).
pub fn baseline_name(repository: &str) -> String {
    let hash = hex::encode(Sha256::digest(repository.as_bytes()));
    let slug: String = crate::model::naming::slug(repository)
        .chars()
        .take(52)
        .collect();
    let slug = slug.trim_end_matches('-');
    let short: String = hash.chars().take(10).collect();
    if slug.is_empty() {
        short
    } else {
        format!("{slug}-{short}")
    }
}

// ---- identities -----------------------------------------------------------------------------

/// A signer as the baseline compares it: what stays the same from one release to the next.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signer {
    /// A GitHub Actions / GitLab CI workflow: issuer, workflow URI without `@ref`, and the
    /// repository it built (when the certificate says).
    Workflow {
        issuer: String,
        workflow: String,
        repository: Option<String>,
    },
    /// Any other keyless subject (email, SPIFFE ID, URI), exact, with its issuer.
    Subject {
        issuer: Option<String>,
        subject: String,
    },
    /// A key: its configured name or fingerprint, and the fingerprint of a configured key.
    Key {
        name: String,
        fingerprint: Option<String>,
    },
}

/// A signer and the ref it built, from one verified signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub signer: Signer,
    pub source_ref: Option<String>,
}

/// `uri@ref` -> (`uri`, `ref`) when the part after the last `@` is a ref (no `/`-less junk
/// from a URI's userinfo: a ref has no `@` and the part before it has a path).
pub fn split_ref(uri: &str) -> (&str, Option<&str>) {
    match uri.rsplit_once('@') {
        Some((base, r)) if !r.is_empty() && base.contains("://") && base.contains('/') => {
            let after_scheme = base.split_once("://").map(|(_, rest)| rest).unwrap_or(base);
            if after_scheme.contains('/') {
                (base, Some(r))
            } else {
                (uri, None)
            }
        }
        _ => (uri, None),
    }
}

impl Seen {
    /// The signer of a verified signature record (`None` for an unverified one).
    pub fn of(rec: &SignatureRecord) -> Option<Seen> {
        if !rec.verified {
            return None;
        }
        let signer = rec.signer.clone()?;
        match rec.signer_type {
            Some(SignerType::Key) => Some(Seen {
                signer: Signer::Key {
                    name: signer,
                    fingerprint: rec.key_fingerprint.clone(),
                },
                source_ref: None,
            }),
            _ => {
                let issuer = rec.issuer.clone();
                let build = rec.build.as_ref();
                if let Some(uri) = build.and_then(|b| b.build_signer_uri.as_deref()) {
                    let (workflow, r) = split_ref(uri);
                    let source_ref = build
                        .and_then(|b| b.source_ref.clone())
                        .or_else(|| r.map(str::to_string));
                    return Some(Seen {
                        signer: Signer::Workflow {
                            issuer: issuer.unwrap_or_default(),
                            workflow: workflow.to_string(),
                            repository: build.and_then(|b| b.source_repository.clone()),
                        },
                        source_ref,
                    });
                }
                // A CI certificate without the extensions (older Fulcio): the SAN without ref.
                if let Some(i) = issuer.as_deref().filter(|i| CI_ISSUERS.contains(i)) {
                    if let (workflow, Some(r)) = split_ref(&signer) {
                        return Some(Seen {
                            signer: Signer::Workflow {
                                issuer: i.to_string(),
                                workflow: workflow.to_string(),
                                repository: None,
                            },
                            source_ref: Some(r.to_string()),
                        });
                    }
                }
                Some(Seen {
                    signer: Signer::Subject {
                        issuer,
                        subject: signer,
                    },
                    source_ref: None,
                })
            }
        }
    }

    /// Every verified signer of a status, in record order, without repeats.
    pub fn all(status: &ImagePostureStatus) -> Vec<Seen> {
        let mut out: Vec<Seen> = Vec::new();
        for s in status.signatures.iter().filter_map(Seen::of) {
            if !out.iter().any(|o| o.signer == s.signer) {
                out.push(s);
            }
        }
        out
    }
}

impl Signer {
    /// One line for people (stored bounded; escape it when showing it on a terminal).
    pub fn describe(&self) -> String {
        let text = match self {
            Signer::Workflow {
                issuer,
                workflow,
                repository,
            } => match repository {
                Some(r) if !workflow.starts_with(&format!("{r}/")) => {
                    format!("{workflow} (building {r}; issuer {issuer})")
                }
                _ => format!("{workflow} (issuer {issuer})"),
            },
            Signer::Subject {
                issuer: Some(i),
                subject,
            } => format!("{subject} (issuer {i})"),
            Signer::Subject {
                issuer: None,
                subject,
            } => subject.clone(),
            Signer::Key {
                name,
                fingerprint: Some(f),
            } => format!("key {name} ({f})"),
            Signer::Key {
                name,
                fingerprint: None,
            } => format!("key {name}"),
        };
        bound(&text, MAX_TEXT)
    }

    /// The accepted identity a learned baseline writes for this signer.
    pub fn accepted(&self, ref_kinds: &BTreeSet<RefKind>) -> AcceptedIdentity {
        match self {
            Signer::Workflow {
                issuer,
                workflow,
                repository,
            } => AcceptedIdentity {
                issuer: Some(issuer.clone()),
                subject: Some(workflow.clone()),
                source_repository: repository.clone(),
                ref_kinds: ref_kinds.iter().copied().collect(),
                ..Default::default()
            },
            Signer::Subject { issuer, subject } => AcceptedIdentity {
                issuer: issuer.clone(),
                subject: Some(subject.clone()),
                ..Default::default()
            },
            Signer::Key { name, fingerprint } => match fingerprint {
                Some(f) => AcceptedIdentity {
                    key: Some(f.clone()),
                    key_name: Some(name.clone()),
                    ..Default::default()
                },
                None => AcceptedIdentity {
                    key: Some(name.clone()),
                    ..Default::default()
                },
            },
        }
    }
}

impl AcceptedIdentity {
    /// Whether this accepts `signer` (the ref aside).
    pub fn matches(&self, signer: &Signer) -> bool {
        match signer {
            Signer::Key { name, fingerprint } => {
                if self.key.is_none() && self.key_name.is_none() {
                    return false;
                }
                let key_ok = self
                    .key
                    .as_ref()
                    .is_none_or(|k| k == name || fingerprint.as_ref() == Some(k));
                let name_ok = self.key_name.as_ref().is_none_or(|n| n == name);
                key_ok && name_ok
            }
            Signer::Workflow {
                issuer,
                workflow,
                repository,
            } => {
                let Some(subject) = &self.subject else {
                    return false;
                };
                self.issuer.as_ref().is_none_or(|i| i == issuer)
                    && split_ref(subject).0 == workflow
                    && self
                        .source_repository
                        .as_ref()
                        .is_none_or(|r| repository.as_ref() == Some(r))
            }
            Signer::Subject { issuer, subject } => {
                self.subject.as_ref() == Some(subject)
                    && self
                        .issuer
                        .as_ref()
                        .is_none_or(|i| issuer.as_ref() == Some(i))
            }
        }
    }

    /// The ref kinds accepted: `refKinds`, plus the kind of a ref written in `subject`.
    pub fn accepted_ref_kinds(&self) -> BTreeSet<RefKind> {
        let mut kinds: BTreeSet<RefKind> = self.ref_kinds.iter().copied().collect();
        if let Some((_, Some(r))) = self.subject.as_deref().map(split_ref) {
            kinds.insert(RefKind::of(r));
        }
        kinds
    }

    pub fn describe(&self) -> String {
        let text = match (&self.subject, &self.key, &self.key_name) {
            (Some(s), _, _) => match (&self.issuer, &self.source_repository) {
                (Some(i), Some(r)) if !s.starts_with(&format!("{r}/")) => {
                    format!("{s} (building {r}; issuer {i})")
                }
                (Some(i), _) => format!("{s} (issuer {i})"),
                (None, _) => s.clone(),
            },
            (None, Some(k), Some(n)) => format!("key {n} ({k})"),
            (None, Some(k), None) => format!("key {k}"),
            (None, None, Some(n)) => format!("key {n}"),
            (None, None, None) => "(empty identity)".to_string(),
        };
        bound(&text, MAX_TEXT)
    }
}

// ---- judgement ------------------------------------------------------------------------------

/// What one image's verdict means against its repository's baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// No drift.
    Clear,
    /// `checking` (or no verdict yet): the drift stated before stands.
    Keep,
    /// A departure.
    Drift(Finding),
}

/// A departure, before it is dated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: DriftKind,
    pub signer: Option<String>,
    pub source_ref: Option<String>,
    pub message: String,
}

/// Judges one image status against a baseline of its repository.
pub fn judge(status: Option<&ImagePostureStatus>, spec: &SignerBaselineSpec) -> Judgement {
    let Some(status) = status else {
        return Judgement::Keep;
    };
    let accepted = &spec.identities;
    match status.posture {
        None | Some(Posture::Checking) => Judgement::Keep,
        Some(Posture::NotSigned | Posture::InvalidSignature) => {
            if accepted.is_empty() {
                return Judgement::Clear;
            }
            let what = match status.posture {
                Some(Posture::NotSigned) => "is not signed",
                _ => "has no signature that verifies",
            };
            Judgement::Drift(Finding {
                kind: DriftKind::SignatureDropped,
                signer: None,
                source_ref: None,
                message: bound(
                    &format!(
                        "this digest {what}; {} is usually signed by {}",
                        spec.repository,
                        quoted(accepted).join(", ")
                    ),
                    MAX_MESSAGE,
                ),
            })
        }
        Some(Posture::Signed) => {
            let seen = Seen::all(status);
            // Any accepted signature keeps the image with its usual signer.
            for s in &seen {
                if let Some(id) = accepted.iter().find(|a| a.matches(&s.signer)) {
                    let kinds = id.accepted_ref_kinds();
                    if let (Some(r), false) = (&s.source_ref, kinds.is_empty()) {
                        let kind = RefKind::of(r);
                        if !kinds.contains(&kind) {
                            let was: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                            return Judgement::Drift(Finding {
                                kind: DriftKind::SourceRefChanged,
                                signer: Some(s.signer.describe()),
                                source_ref: Some(bound(r, MAX_TEXT)),
                                message: bound(
                                    &format!(
                                        "the accepted workflow signed from a {} ({r}); it signs {} from {}",
                                        kind.as_str(),
                                        spec.repository,
                                        was.join(", ")
                                    ),
                                    MAX_MESSAGE,
                                ),
                            });
                        }
                    }
                    return Judgement::Clear;
                }
            }
            let Some(first) = seen.first() else {
                // Signed with no identity we can read: nothing to compare.
                return Judgement::Clear;
            };
            let expected = if accepted.is_empty() {
                "no signer (the baseline accepts none)".to_string()
            } else {
                quoted(accepted).join(", ")
            };
            Judgement::Drift(Finding {
                kind: DriftKind::SignerChanged,
                signer: Some(first.signer.describe()),
                source_ref: first.source_ref.as_deref().map(|r| bound(r, MAX_TEXT)),
                message: bound(
                    &format!(
                        "signed by {}; {} accepts {expected}",
                        first.signer.describe(),
                        spec.repository
                    ),
                    MAX_MESSAGE,
                ),
            })
        }
    }
}

pub(crate) fn quoted(accepted: &[AcceptedIdentity]) -> Vec<String> {
    let mut out: Vec<String> = accepted
        .iter()
        .take(MAX_QUOTED)
        .map(AcceptedIdentity::describe)
        .collect();
    if accepted.len() > MAX_QUOTED {
        out.push(format!("and {} more", accepted.len() - MAX_QUOTED));
    }
    out
}

/// The drift to state for an image: the judgement dated, `since` kept while it is the same
/// departure; the old drift while `checking`.
pub fn drift_for(
    judgement: Judgement,
    baseline: &str,
    accepted: &[AcceptedIdentity],
    old: Option<&Drift>,
    now: DateTime<Utc>,
) -> Option<Drift> {
    match judgement {
        Judgement::Clear => None,
        Judgement::Keep => old.cloned(),
        Judgement::Drift(f) => {
            let same =
                old.filter(|o| o.kind == f.kind && o.signer == f.signer && o.baseline == baseline);
            let mut quotedlist = quoted(accepted);
            quotedlist.truncate(MAX_QUOTED);
            Some(Drift {
                kind: f.kind,
                baseline: bound(baseline, 253),
                signer: f.signer,
                source_ref: f.source_ref,
                accepted: quotedlist,
                message: f.message,
                since: same
                    .map(|o| o.since.clone())
                    .unwrap_or_else(|| rfc3339(now)),
            })
        }
    }
}

/// The baseline of each repository among `baselines` (by `spec.repository`; of several, the
/// first by name).
pub fn by_repository<'a>(
    baselines: impl IntoIterator<Item = &'a SignerBaseline>,
) -> BTreeMap<String, &'a SignerBaseline> {
    let mut all: Vec<&SignerBaseline> = baselines.into_iter().collect();
    all.sort_by_key(|b| b.name_any());
    let mut out = BTreeMap::new();
    for b in all {
        out.entry(b.spec.repository.clone()).or_insert(b);
    }
    out
}

/// What a learned baseline of `repository` says, from the statuses of its running images:
/// `None` while no image of it is signed, or while one is still `checking` for its first
/// verification (less than [`LEARN_WAIT`]).
pub fn learn(
    repository: &str,
    images: &[&ImagePosture],
    now: DateTime<Utc>,
) -> Option<(SignerBaselineSpec, Vec<String>)> {
    let waiting = images.iter().any(|cr| {
        let status = cr.status.as_ref();
        let unverified = status.is_none_or(|s| {
            s.posture.is_none_or(|p| p == Posture::Checking) && s.last_verified.is_none()
        });
        // Since when it waits: `checkingSince`, else the resource's creation.
        let since = status
            .and_then(|s| s.checking_since.as_deref())
            .and_then(parse_time)
            .or_else(|| {
                cr.metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0))
            });
        unverified && since.is_some_and(|t| now - t < LEARN_WAIT)
    });
    if waiting {
        return None;
    }
    let mut signers: Vec<(Signer, BTreeSet<RefKind>)> = Vec::new();
    let mut from = BTreeSet::new();
    for cr in images {
        let Some(s) = cr
            .status
            .as_ref()
            .filter(|s| s.posture == Some(Posture::Signed))
        else {
            continue;
        };
        for seen in Seen::all(s) {
            from.insert(cr.spec.digest.clone());
            let kind = seen.source_ref.as_deref().map(RefKind::of);
            match signers.iter_mut().find(|(x, _)| *x == seen.signer) {
                Some((_, kinds)) => kinds.extend(kind),
                None => signers.push((seen.signer, kind.into_iter().collect())),
            }
        }
    }
    if signers.is_empty() {
        return None;
    }
    signers.sort_by(|a, b| a.0.cmp(&b.0));
    signers.truncate(MAX_IDENTITIES);
    let spec = SignerBaselineSpec {
        repository: repository.to_string(),
        mode: Mode::Learn,
        identities: signers.iter().map(|(s, k)| s.accepted(k)).collect(),
    };
    Some((spec, from.into_iter().take(MAX_DIGESTS).collect()))
}

/// The status the loop states for a baseline from the images of its repository as judged.
pub fn baseline_status(
    baseline: &SignerBaseline,
    images: &[(&ImagePosture, Option<&Drift>)],
    now: DateTime<Utc>,
) -> SignerBaselineStatus {
    let old = baseline.status.clone().unwrap_or_default();
    let mut seen: BTreeMap<Signer, (u32, BTreeSet<RefKind>)> = BTreeMap::new();
    for (cr, _) in images {
        let Some(s) = cr
            .status
            .as_ref()
            .filter(|s| s.posture == Some(Posture::Signed))
        else {
            continue;
        };
        for x in Seen::all(s) {
            let e = seen.entry(x.signer).or_default();
            e.0 += 1;
            e.1.extend(x.source_ref.as_deref().map(RefKind::of));
        }
    }
    let mut observed: Vec<ObservedIdentity> = seen
        .into_iter()
        .map(|(signer, (digests, kinds))| {
            let identity = signer.describe();
            let before = old.observed.iter().find(|o| o.identity == identity);
            let stamp = rfc3339(now);
            ObservedIdentity {
                accepted: baseline.spec.identities.iter().any(|a| a.matches(&signer)),
                first_seen: before
                    .map(|b| b.first_seen.clone())
                    .unwrap_or_else(|| stamp.clone()),
                last_seen: before
                    .filter(|b| b.digests == digests)
                    .map(|b| b.last_seen.clone())
                    .unwrap_or(stamp),
                digests,
                ref_kinds: kinds.into_iter().collect(),
                identity,
            }
        })
        .collect();
    observed.truncate(MAX_IDENTITIES);
    let mut drifting: Vec<String> = images
        .iter()
        .filter(|(_, d)| d.is_some())
        .map(|(cr, _)| cr.spec.digest.clone())
        .collect();
    drifting.sort();
    drifting.dedup();
    let drifting_count = u32::try_from(drifting.len()).unwrap_or(u32::MAX);
    drifting.truncate(MAX_DIGESTS);
    SignerBaselineStatus {
        learned_from: old.learned_from,
        learned_at: old.learned_at,
        identity_count: u32::try_from(baseline.spec.identities.len()).unwrap_or(u32::MAX),
        observed,
        drifting,
        drifting_count,
    }
}

/// Reads SignerBaseline YAML documents (`--baseline FILE`): every document of kind
/// `SignerBaseline` (others are skipped), one per repository.
pub fn read_baselines(text: &str) -> std::result::Result<Vec<SignerBaseline>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if v.is_null() {
            continue;
        }
        let j: Value = serde_json::to_value(v).map_err(|e| e.to_string())?;
        if j.get("kind").and_then(Value::as_str) != Some("SignerBaseline") {
            continue;
        }
        let mut b: SignerBaseline = serde_json::from_value(j).map_err(|e| e.to_string())?;
        if b.metadata.name.is_none() {
            b.metadata.name = Some(baseline_name(&b.spec.repository));
        }
        out.push(b);
    }
    Ok(out)
}

/// Judges a status with no cluster (scan / observe): the drift against the baseline of
/// `repository` among `baselines`, or `None`.
pub fn offline_drift(
    repository: &str,
    status: &ImagePostureStatus,
    baselines: &[SignerBaseline],
    now: DateTime<Utc>,
) -> Option<Drift> {
    let all = by_repository(baselines);
    let b = all.get(repository)?;
    drift_for(
        judge(Some(status), &b.spec),
        &b.name_any(),
        &b.spec.identities,
        None,
        now,
    )
}

impl PartialOrd for DriftKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for DriftKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::posture::{BuildFacts, Reason, SignatureFormat, SignatureSource};

    const GH: &str = "https://token.actions.githubusercontent.com";

    fn rec(signer: &str, issuer: Option<&str>, build: Option<BuildFacts>) -> SignatureRecord {
        SignatureRecord {
            digest: None,
            via: None,
            source: SignatureSource::Tag,
            format: SignatureFormat::Simplesigning,
            verified: true,
            signer: Some(signer.into()),
            issuer: issuer.map(Into::into),
            signer_type: Some(SignerType::Keyless),
            reason: Reason::Verified,
            message: String::new(),
            rekor_log_index: None,
            integrated_time: None,
            signing_time: None,
            signing_time_source: None,
            build,
            key_fingerprint: None,
        }
    }

    fn gh(repo: &str, workflow: &str, git_ref: &str) -> SignatureRecord {
        let uri = format!("https://github.com/{repo}/.github/workflows/{workflow}@{git_ref}");
        rec(
            &uri,
            Some(GH),
            Some(BuildFacts {
                build_signer_uri: Some(uri.clone()),
                source_repository: Some(format!("https://github.com/{repo}")),
                source_ref: Some(git_ref.into()),
                ..Default::default()
            }),
        )
    }

    fn signed(recs: Vec<SignatureRecord>) -> ImagePostureStatus {
        ImagePostureStatus::from_verdict(&crate::core::posture::Verdict::from_signatures(recs))
    }

    fn spec(ids: Vec<AcceptedIdentity>) -> SignerBaselineSpec {
        SignerBaselineSpec {
            repository: "ghcr.io/acme/app".into(),
            mode: Mode::Learn,
            identities: ids,
        }
    }

    fn learned(r: &SignatureRecord) -> AcceptedIdentity {
        let s = Seen::of(r).unwrap();
        s.signer
            .accepted(&s.source_ref.iter().map(|r| RefKind::of(r)).collect())
    }

    #[test]
    fn a_ci_identity_survives_releases() {
        let v142 = gh("acme/app", "release.yml", "refs/tags/v1.4.2");
        let v150 = gh("acme/app", "release.yml", "refs/tags/v1.5.0");
        let seen = Seen::of(&v142).unwrap();
        assert_eq!(
            seen.signer,
            Signer::Workflow {
                issuer: GH.into(),
                workflow: "https://github.com/acme/app/.github/workflows/release.yml".into(),
                repository: Some("https://github.com/acme/app".into()),
            }
        );
        assert_eq!(seen.source_ref.as_deref(), Some("refs/tags/v1.4.2"));
        let id = learned(&v142);
        assert_eq!(id.ref_kinds, vec![RefKind::Tag]);
        assert_eq!(
            id.subject.as_deref(),
            Some("https://github.com/acme/app/.github/workflows/release.yml")
        );
        assert_eq!(
            judge(Some(&signed(vec![v150])), &spec(vec![id.clone()])),
            Judgement::Clear
        );

        // Another workflow of the same repository, another repository's workflow.
        for other in [
            gh("acme/app", "nightly.yml", "refs/tags/v1.5.0"),
            gh("evil/fork", "release.yml", "refs/tags/v1.5.0"),
        ] {
            let Judgement::Drift(f) = judge(Some(&signed(vec![other])), &spec(vec![id.clone()]))
            else {
                panic!("drift expected")
            };
            assert_eq!(f.kind, DriftKind::SignerChanged);
        }
        // The same workflow path, building another repository (a reusable workflow).
        let mut reused = gh("acme/app", "release.yml", "refs/tags/v2");
        reused.build.as_mut().unwrap().source_repository = Some("https://github.com/evil/x".into());
        assert!(matches!(
            judge(Some(&signed(vec![reused])), &spec(vec![id.clone()])),
            Judgement::Drift(Finding {
                kind: DriftKind::SignerChanged,
                ..
            })
        ));
        // The accepted workflow from a branch where only tags were seen: a warning.
        let branch = gh("acme/app", "release.yml", "refs/heads/main");
        let Judgement::Drift(f) = judge(Some(&signed(vec![branch])), &spec(vec![id])) else {
            panic!()
        };
        assert_eq!(f.kind, DriftKind::SourceRefChanged);
        assert!(f.kind.is_warning());
        assert_eq!(f.source_ref.as_deref(), Some("refs/heads/main"));
    }

    #[test]
    fn gitlab_and_certificates_without_extensions() {
        let uri = "https://gitlab.com/acme/app//.gitlab-ci.yml@refs/heads/main";
        let r = rec(uri, Some("https://gitlab.com"), None);
        let s = Seen::of(&r).unwrap();
        assert_eq!(
            s.signer,
            Signer::Workflow {
                issuer: "https://gitlab.com".into(),
                workflow: "https://gitlab.com/acme/app//.gitlab-ci.yml".into(),
                repository: None
            }
        );
        assert_eq!(s.source_ref.as_deref(), Some("refs/heads/main"));
        // A pinned subject with a ref: the ref's kind is accepted, the ref itself is not matched.
        let pinned = AcceptedIdentity {
            issuer: Some("https://gitlab.com".into()),
            subject: Some("https://gitlab.com/acme/app//.gitlab-ci.yml@refs/tags/v1".into()),
            ..Default::default()
        };
        assert!(pinned.matches(&s.signer));
        assert_eq!(pinned.accepted_ref_kinds(), BTreeSet::from([RefKind::Tag]));
    }

    #[test]
    fn emails_spiffe_ids_and_keys_match_exactly() {
        let email = rec("dev@example.com", Some("https://accounts.google.com"), None);
        let spiffe = rec(
            "spiffe://acme.example/ns/ci/sa/builder",
            Some("https://spire"),
            None,
        );
        let accepted = vec![learned(&email), learned(&spiffe)];
        for r in [&email, &spiffe] {
            assert_eq!(
                judge(Some(&signed(vec![r.clone()])), &spec(accepted.clone())),
                Judgement::Clear
            );
        }
        // Same email, another issuer; an email differing in case; a ref-looking suffix on a
        // non-CI URI is not stripped.
        for r in [
            rec("dev@example.com", Some("https://evil.example"), None),
            rec("Dev@example.com", Some("https://accounts.google.com"), None),
            rec(
                "spiffe://acme.example/ns/ci/sa/builder@refs/tags/x",
                Some("https://spire"),
                None,
            ),
        ] {
            assert!(matches!(
                judge(Some(&signed(vec![r])), &spec(accepted.clone())),
                Judgement::Drift(Finding {
                    kind: DriftKind::SignerChanged,
                    ..
                })
            ));
        }
        // Keys: by fingerprint, by configured name.
        let mut k = rec("sha256:abcd", None, None);
        k.signer_type = Some(SignerType::Key);
        let by_fp = AcceptedIdentity {
            key: Some("sha256:abcd".into()),
            ..Default::default()
        };
        assert_eq!(
            judge(Some(&signed(vec![k.clone()])), &spec(vec![by_fp.clone()])),
            Judgement::Clear
        );
        let mut named = rec("release-key", None, None);
        named.signer_type = Some(SignerType::Key);
        named.key_fingerprint = Some("sha256:abcd".into());
        assert_eq!(
            judge(Some(&signed(vec![named.clone()])), &spec(vec![by_fp])),
            Judgement::Clear
        );
        let by_name = AcceptedIdentity {
            key_name: Some("release-key".into()),
            ..Default::default()
        };
        assert_eq!(
            judge(Some(&signed(vec![named])), &spec(vec![by_name.clone()])),
            Judgement::Clear
        );
        assert!(matches!(
            judge(Some(&signed(vec![k])), &spec(vec![by_name])),
            Judgement::Drift(_)
        ));
        // A keyless identity never matches a key entry and vice versa.
        assert!(!AcceptedIdentity::default().matches(&Seen::of(&email).unwrap().signer));
    }

    #[test]
    fn unsigned_checking_and_no_identities() {
        let id = learned(&gh("acme/app", "release.yml", "refs/tags/v1"));
        let not_signed =
            ImagePostureStatus::from_verdict(&crate::core::posture::Verdict::not_signed());
        assert!(matches!(
            judge(Some(&not_signed), &spec(vec![id.clone()])),
            Judgement::Drift(Finding {
                kind: DriftKind::SignatureDropped,
                ..
            })
        ));
        assert_eq!(judge(Some(&not_signed), &spec(vec![])), Judgement::Clear);
        let checking = ImagePostureStatus::from_verdict(&crate::core::posture::Verdict::checking(
            Reason::Timeout,
            "slow",
        ));
        assert_eq!(
            judge(Some(&checking), &spec(vec![id.clone()])),
            Judgement::Keep
        );
        assert_eq!(judge(None, &spec(vec![id])), Judgement::Keep);
        // Keep carries the old drift; a repeated departure keeps its date.
        let t0 = parse_time("2026-01-01T00:00:00Z").unwrap();
        let t1 = parse_time("2026-01-02T00:00:00Z").unwrap();
        let f = Finding {
            kind: DriftKind::SignerChanged,
            signer: Some("x".into()),
            source_ref: None,
            message: "m".into(),
        };
        let d0 = drift_for(Judgement::Drift(f.clone()), "b", &[], None, t0).unwrap();
        let d1 = drift_for(Judgement::Drift(f), "b", &[], Some(&d0), t1).unwrap();
        assert_eq!(d1.since, d0.since);
        assert_eq!(
            drift_for(Judgement::Keep, "b", &[], Some(&d0), t1),
            Some(d0)
        );
    }

    #[test]
    fn hostile_text_is_bounded_in_the_drift() {
        let evil = format!(
            "https://github.com/acme/app/.github/workflows/\u{202e}{}.yml@refs/tags/v1",
            "x".repeat(4000)
        );
        let r = gh("acme/app", "release.yml", "refs/tags/v1");
        let id = learned(&r);
        let mut bad = rec(&evil, Some(GH), None);
        bad.build = Some(BuildFacts {
            build_signer_uri: Some(bound(&evil, MAX_TEXT)),
            ..Default::default()
        });
        let Judgement::Drift(f) = judge(Some(&signed(vec![bad])), &spec(vec![id])) else {
            panic!()
        };
        assert!(f.signer.as_ref().unwrap().len() <= MAX_TEXT + 3);
        assert!(f.message.len() <= MAX_MESSAGE + 3);
        assert!(crate::core::text::escape(f.signer.as_ref().unwrap()).contains("\\u{202e}"));
    }

    #[test]
    fn learning_waits_for_first_verifications_then_takes_every_signer() {
        let t0 = parse_time("2026-01-01T00:00:00Z").unwrap();
        let cr = |digest: &str, status: ImagePostureStatus| {
            let mut c = ImagePosture::new(
                digest,
                crate::model::crd::ImagePostureSpec {
                    image: format!("ghcr.io/acme/app@{digest}"),
                    repository: "ghcr.io/acme/app".into(),
                    digest: digest.into(),
                    short_digest: String::new(),
                    untied: None,
                },
            );
            c.status = Some(status);
            c
        };
        let mut a = signed(vec![gh("acme/app", "release.yml", "refs/tags/v1")]);
        a.last_verified = Some(rfc3339(t0));
        let mut b = signed(vec![rec(
            "dev@example.com",
            Some("https://accounts.google.com"),
            None,
        )]);
        b.last_verified = Some(rfc3339(t0));
        let pending = ImagePostureStatus::pending(t0);
        let (x, y, z) = (
            cr("sha256:a", a),
            cr("sha256:b", b),
            cr("sha256:c", pending),
        );
        // A first verification still queued: wait, up to LEARN_WAIT.
        assert!(learn("ghcr.io/acme/app", &[&x, &y, &z], t0).is_none());
        let later = t0 + LEARN_WAIT + chrono::Duration::seconds(1);
        let (spec, from) = learn("ghcr.io/acme/app", &[&x, &y, &z], later).unwrap();
        assert_eq!(spec.identities.len(), 2);
        assert_eq!(from, vec!["sha256:a".to_string(), "sha256:b".to_string()]);
        // Nothing signed: nothing learned.
        assert!(learn("ghcr.io/acme/app", &[&z], later).is_none());
    }

    #[test]
    fn names_and_yaml() {
        let n = baseline_name("127.0.0.1:5000/Acme/app");
        assert!(n.len() <= 63, "{n}");
        assert!(n.starts_with("127-0-0-1-5000-acme-app-"));
        let long = baseline_name(&"a/".repeat(200));
        assert!(long.len() <= 63);
        let docs = read_baselines(
            "apiVersion: imageposture.io/v1alpha1\nkind: SignerBaseline\nmetadata: {name: app}\nspec:\n  repository: ghcr.io/acme/app\n  mode: pinned\n  identities:\n  - {issuer: https://token.actions.githubusercontent.com, subject: https://github.com/acme/app/.github/workflows/release.yml}\n---\nkind: Other\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].spec.mode, Mode::Pinned);
        let yaml = crd_yaml();
        assert!(!yaml.contains("$ref") && !yaml.contains("anyOf"), "{yaml}");
    }
}
