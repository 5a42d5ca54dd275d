//! ImagePostures as `wgpolicyk8s.io/v1alpha2` PolicyReports, the format Kyverno, Policy
//! Reporter and other PolicyReport consumers already read: one report per namespace, one
//! result per (pod owner, image).
//!
//! Pure: pod owners, images and postures in, report objects out, in a deterministic order, so a
//! caller can compare with what the server holds and write only when a result changed. The
//! `openreports.io` successor format is not used yet: Policy Reporter and Kyverno read
//! `wgpolicyk8s.io/v1alpha2` in every released version, `openreports.io` only in the newest.
//!
//! | posture | result | severity |
//! |---|---|---|
//! | signed | pass | |
//! | invalid-signature | fail | high |
//! | not-signed | warn | medium |
//! | checking (or no ImagePosture yet) | skip | |
//!
//! Signer and issuer (attacker-influenced text) travel as bounded result properties, data only.

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::index::OwnerKey;
use crate::inventory::PodView;
use serde::{Deserialize, Serialize};

use crate::posture::{bound, Posture, MAX_MESSAGE, MAX_TEXT};

pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
pub const KIND: &str = "PolicyReport";
/// Name of the one report imageposture writes in each namespace.
pub const REPORT_NAME: &str = "imageposture";
/// `source` of every result (Policy Reporter groups and filters by it).
pub const SOURCE: &str = "imageposture";
/// The policy every result belongs to.
pub const POLICY: &str = "image-signature";
/// Results kept per report (etcd object size; a namespace with more owners still gets its
/// summary counted in full and the number left out in an annotation).
pub const MAX_RESULTS: usize = 500;
/// The rule of results about signer drift (see `crate::baseline`).
pub const RULE_SIGNER_DRIFT: &str = "signer-drift";

/// Annotation carrying how many results were left out of `results`.
pub const ANNOTATION_OMITTED: &str = "imageposture.io/results-omitted";

/// The workload a pod belongs to: its controller owner (ReplicaSet, StatefulSet, DaemonSet,
/// Job, ...), or the pod itself when it has none.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The controller owner of `pod` (or the pod itself).
pub fn owner_of<P: PodView + ?Sized>(pod: &P) -> Owner {
    Owner::from(&OwnerKey::of(pod))
}

impl From<&OwnerKey> for Owner {
    fn from(o: &OwnerKey) -> Owner {
        Owner {
            api_version: o.api_version.to_string(),
            kind: o.kind.to_string(),
            name: o.name.to_string(),
            uid: o.uid.to_string(),
        }
    }
}

/// One image run by one owner in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Use {
    pub namespace: String,
    pub owner: Owner,
    /// Image identity `registry/repository@digest` (the ImagePosture's `spec.image`).
    pub image: String,
}

/// What is known about an image (from its ImagePosture status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageVerdict {
    pub posture: Posture,
    pub signer: Option<String>,
    pub issuer: Option<String>,
    pub reason: String,
    pub message: String,
    /// RFC 3339 time of the last full verification; becomes the result's timestamp, so an
    /// unchanged verdict renders an unchanged report.
    pub last_verified: Option<String>,
    /// How the image departs from its repository's SignerBaseline: a result of rule
    /// `signer-drift` (`fail`; `warn` for `SourceRefChanged`).
    pub drift: Option<crate::baseline::Drift>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ReportResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Counts of every result of the namespace, kept ones and left-out ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub pass: u64,
    pub fail: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    // Declaration order is the order results are kept in when capped: failures first.
    Fail,
    Warn,
    Error,
    Skip,
    Pass,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    pub source: String,
    pub policy: String,
    pub rule: String,
    pub result: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub category: String,
    pub scored: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    pub resources: Vec<ObjectReference>,
    pub properties: BTreeMap<String, String>,
}

/// `metav1.Timestamp` as the v1alpha2 schema has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// One report per namespace that runs anything, sorted by namespace. Duplicate uses (several
/// pods of one owner) count once; an image without a verdict is `skip`/`Pending`.
pub fn reports(uses: &[Use], verdicts: &BTreeMap<String, ImageVerdict>) -> Vec<PolicyReport> {
    let mut by_namespace: BTreeMap<&str, BTreeSet<&Use>> = BTreeMap::new();
    for u in uses {
        by_namespace
            .entry(u.namespace.as_str())
            .or_default()
            .insert(u);
    }
    by_namespace
        .into_iter()
        .map(|(namespace, uses)| report(namespace, uses, verdicts))
        .collect()
}

fn report(
    namespace: &str,
    uses: BTreeSet<&Use>,
    verdicts: &BTreeMap<String, ImageVerdict>,
) -> PolicyReport {
    let mut results: Vec<ReportResult> = uses.into_iter().map(|u| result(u, verdicts)).collect();
    let mut summary = Summary::default();
    for r in &results {
        match r.result {
            Outcome::Pass => summary.pass += 1,
            Outcome::Fail => summary.fail += 1,
            Outcome::Warn => summary.warn += 1,
            Outcome::Error => summary.error += 1,
            Outcome::Skip => summary.skip += 1,
        }
    }
    // Worst first, then by owner and image: what a cap keeps, and a stable order.
    results.sort_by(|a, b| {
        a.result
            .cmp(&b.result)
            .then_with(|| {
                a.resources
                    .first()
                    .map(|r| (&r.kind, &r.name))
                    .cmp(&b.resources.first().map(|r| (&r.kind, &r.name)))
            })
            .then_with(|| a.properties.get("image").cmp(&b.properties.get("image")))
    });
    let mut annotations = BTreeMap::new();
    if results.len() > MAX_RESULTS {
        annotations.insert(
            ANNOTATION_OMITTED.to_string(),
            (results.len() - MAX_RESULTS).to_string(),
        );
        results.truncate(MAX_RESULTS);
    }
    let mut labels = BTreeMap::new();
    labels.insert(
        crate::crd::LABEL_MANAGED_BY.to_string(),
        crate::crd::MANAGER.to_string(),
    );
    PolicyReport {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: Metadata {
            name: REPORT_NAME.into(),
            namespace: namespace.into(),
            labels,
            annotations,
        },
        summary,
        results,
    }
}

fn result(u: &Use, verdicts: &BTreeMap<String, ImageVerdict>) -> ReportResult {
    let verdict = verdicts.get(&u.image);
    let posture = verdict.map(|v| v.posture).unwrap_or(Posture::Checking);
    let (outcome, severity, rule) = match posture {
        Posture::Signed => (Outcome::Pass, None, "signed"),
        Posture::InvalidSignature => (Outcome::Fail, Some("high"), "valid-signature"),
        Posture::NotSigned => (Outcome::Warn, Some("medium"), "signed"),
        Posture::Checking => (Outcome::Skip, None, "signed"),
    };
    let drift = verdict.and_then(|v| v.drift.as_ref());
    let (outcome, severity, rule) = match drift {
        Some(d) if !d.kind.is_warning() => (Outcome::Fail, Some("high"), RULE_SIGNER_DRIFT),
        Some(_) if outcome == Outcome::Pass => (Outcome::Warn, Some("medium"), RULE_SIGNER_DRIFT),
        _ => (outcome, severity, rule),
    };
    let image = bound(&u.image, crate::crd::MAX_REFERENCE_TEXT);
    let mut properties = BTreeMap::new();
    properties.insert("image".to_string(), image.clone());
    properties.insert("posture".to_string(), posture.as_str().to_string());
    let reason = verdict.map_or("Pending", |v| v.reason.as_str());
    properties.insert("reason".to_string(), bound(reason, 64));
    if let Some(v) = verdict {
        if let Some(s) = &v.signer {
            properties.insert("signer".to_string(), bound(s, MAX_TEXT));
        }
        if let Some(i) = &v.issuer {
            properties.insert("issuer".to_string(), bound(i, MAX_TEXT));
        }
    }
    if let Some(d) = drift {
        properties.insert("drift".to_string(), d.kind.as_str().to_string());
        properties.insert("baseline".to_string(), bound(&d.baseline, MAX_TEXT));
    }
    let message = match verdict {
        Some(_) if drift.is_some() && rule == RULE_SIGNER_DRIFT => format!(
            "{image} departs from its signer baseline: {}",
            drift.map(|d| d.message.as_str()).unwrap_or_default()
        ),
        Some(v) if !v.message.is_empty() => format!("{image} is {posture}: {}", v.message),
        Some(_) => format!("{image} is {posture}"),
        None => format!("{image} is not verified yet"),
    };
    ReportResult {
        source: SOURCE.into(),
        policy: POLICY.into(),
        rule: rule.into(),
        result: outcome,
        severity: severity.map(String::from),
        category: "Supply Chain Security".into(),
        scored: true,
        message: bound(&message, MAX_MESSAGE),
        timestamp: verdict
            .and_then(|v| v.last_verified.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| Timestamp {
                seconds: t.timestamp(),
                nanos: 0,
            }),
        resources: vec![ObjectReference {
            api_version: u.owner.api_version.clone(),
            kind: u.owner.kind.clone(),
            name: u.owner.name.clone(),
            namespace: u.namespace.clone(),
            uid: u.owner.uid.clone(),
        }],
        properties,
    }
}

/// What to write so the server holds exactly `desired`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply this report (new, or a result changed).
    Apply(PolicyReport),
    /// Delete our report in this namespace (its last pod is gone).
    Delete { namespace: String },
}

/// The metadata we set (others may add labels and annotations of their own; server-side
/// apply leaves those alone, so they are no reason to write).
fn ours(m: &Metadata) -> (Option<&String>, Option<&String>) {
    (
        m.labels.get(crate::crd::LABEL_MANAGED_BY),
        m.annotations.get(ANNOTATION_OMITTED),
    )
}

/// The writes that turn `existing` (our reports as listed from the server, any extra metadata
/// ignored) into `desired`: nothing for a report whose results, summary and our own labels and
/// annotations are unchanged, so a steady cluster costs no writes.
pub fn plan(desired: &[PolicyReport], existing: &[PolicyReport]) -> Vec<Action> {
    let have: BTreeMap<&str, &PolicyReport> = existing
        .iter()
        .filter(|r| r.metadata.name == REPORT_NAME)
        .map(|r| (r.metadata.namespace.as_str(), r))
        .collect();
    let want: BTreeSet<&str> = desired
        .iter()
        .map(|r| r.metadata.namespace.as_str())
        .collect();
    let mut actions: Vec<Action> = desired
        .iter()
        .filter(|d| {
            have.get(d.metadata.namespace.as_str()).is_none_or(|h| {
                h.summary != d.summary
                    || h.results != d.results
                    || ours(&h.metadata) != ours(&d.metadata)
            })
        })
        .cloned()
        .map(Action::Apply)
        .collect();
    actions.extend(
        have.keys()
            .filter(|ns| !want.contains(*ns))
            .map(|ns| Action::Delete {
                namespace: ns.to_string(),
            }),
    );
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn owner(kind: &str, name: &str) -> Owner {
        Owner {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn use_(ns: &str, owner_name: &str, image: &str) -> Use {
        Use {
            namespace: ns.into(),
            owner: owner("ReplicaSet", owner_name),
            image: image.into(),
        }
    }

    fn verdict(posture: Posture, reason: &str) -> ImageVerdict {
        ImageVerdict {
            posture,
            signer: (posture == Posture::Signed).then(|| "https://github.com/acme/app".into()),
            issuer: (posture == Posture::Signed).then(|| "https://token.actions".into()),
            reason: reason.into(),
            message: String::new(),
            last_verified: Some("2026-12-01T12:00:00Z".into()),
            drift: None,
        }
    }

    #[test]
    fn a_drift_fails_rule_signer_drift() {
        let drift = |kind| crate::baseline::Drift {
            kind,
            baseline: "app".into(),
            signer: Some("mallory@example.com".into()),
            source_ref: None,
            accepted: vec![],
            message: "signed by mallory@example.com".into(),
            since: "2026-12-01T12:00:00Z".into(),
        };
        let mut v = verdict(Posture::Signed, "Verified");
        v.drift = Some(drift(crate::baseline::DriftKind::SignerChanged));
        let mut w = verdict(Posture::Signed, "Verified");
        w.drift = Some(drift(crate::baseline::DriftKind::SourceRefChanged));
        let verdicts = BTreeMap::from([
            ("r/a@sha256:1".to_string(), v),
            ("r/b@sha256:2".to_string(), w),
        ]);
        let r = reports(
            &[
                use_("prod", "a", "r/a@sha256:1"),
                use_("prod", "b", "r/b@sha256:2"),
            ],
            &verdicts,
        );
        let results = &r[0].results;
        assert_eq!(results[0].result, Outcome::Fail);
        assert_eq!(results[0].rule, RULE_SIGNER_DRIFT);
        assert_eq!(results[0].properties["drift"], "SignerChanged");
        assert!(
            results[0].message.contains("signed by mallory"),
            "{}",
            results[0].message
        );
        assert_eq!(results[1].result, Outcome::Warn);
        assert_eq!(results[1].rule, RULE_SIGNER_DRIFT);
    }

    fn verdicts() -> BTreeMap<String, ImageVerdict> {
        [
            ("r/signed@sha256:1", verdict(Posture::Signed, "Verified")),
            (
                "r/bad@sha256:2",
                verdict(Posture::InvalidSignature, "BadSignature"),
            ),
            (
                "r/none@sha256:3",
                verdict(Posture::NotSigned, "NoSignature"),
            ),
            ("r/wait@sha256:4", verdict(Posture::Checking, "Timeout")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn one_report_per_namespace_with_the_posture_table() {
        let uses = vec![
            use_("prod", "web", "r/signed@sha256:1"),
            use_("prod", "web", "r/signed@sha256:1"), // a second pod of the same owner
            use_("prod", "web", "r/bad@sha256:2"),
            use_("prod", "db", "r/none@sha256:3"),
            use_("prod", "db", "r/wait@sha256:4"),
            use_("prod", "db", "r/unknown@sha256:5"),
            use_("dev", "tool", "r/signed@sha256:1"),
        ];
        let reports = reports(&uses, &verdicts());
        assert_eq!(reports.len(), 2);
        let (dev, prod) = (&reports[0], &reports[1]);
        assert_eq!(dev.metadata.namespace, "dev");
        assert_eq!(dev.summary.pass, 1);
        assert_eq!(prod.metadata.name, REPORT_NAME);
        assert_eq!(
            prod.summary,
            Summary {
                pass: 1,
                fail: 1,
                warn: 1,
                error: 0,
                skip: 2
            }
        );
        let outcomes: Vec<(Outcome, &str)> = prod
            .results
            .iter()
            .map(|r| (r.result, r.properties["image"].as_str()))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (Outcome::Fail, "r/bad@sha256:2"),
                (Outcome::Warn, "r/none@sha256:3"),
                (Outcome::Skip, "r/unknown@sha256:5"),
                (Outcome::Skip, "r/wait@sha256:4"),
                (Outcome::Pass, "r/signed@sha256:1"),
            ]
        );
        let fail = &prod.results[0];
        assert_eq!(fail.severity.as_deref(), Some("high"));
        assert_eq!(fail.resources[0].kind, "ReplicaSet");
        assert_eq!(fail.resources[0].name, "web");
        assert_eq!(fail.resources[0].namespace, "prod");
        let pass = &prod.results[4];
        assert_eq!(pass.properties["signer"], "https://github.com/acme/app");
        assert_eq!(pass.properties["issuer"], "https://token.actions");
        assert_eq!(pass.timestamp.map(|t| t.seconds), Some(1_796_126_400));
        assert_eq!(prod.results[2].properties["reason"], "Pending");
        assert_eq!(prod.results[3].properties["reason"], "Timeout");

        let json = serde_json::to_value(prod).unwrap();
        assert_eq!(json["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(json["kind"], "PolicyReport");
        assert_eq!(json["results"][0]["result"], "fail");
        assert_eq!(
            json["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "imageposture"
        );
    }

    #[test]
    fn same_input_same_report() {
        let mut uses = vec![
            use_("prod", "b", "r/none@sha256:3"),
            use_("prod", "a", "r/signed@sha256:1"),
        ];
        let first = reports(&uses, &verdicts());
        uses.reverse();
        assert_eq!(reports(&uses, &verdicts()), first);
    }

    #[test]
    fn results_are_capped_worst_first_and_counted() {
        let mut uses: Vec<Use> = (0..MAX_RESULTS + 10)
            .map(|i| use_("big", &format!("w{i:04}"), "r/signed@sha256:1"))
            .collect();
        uses.push(use_("big", "zzz", "r/bad@sha256:2"));
        let r = &reports(&uses, &verdicts())[0];
        assert_eq!(r.results.len(), MAX_RESULTS);
        assert_eq!(
            r.results[0].result,
            Outcome::Fail,
            "the failure survives the cap"
        );
        assert_eq!(r.summary.pass, (MAX_RESULTS + 10) as u64);
        assert_eq!(r.summary.fail, 1);
        assert_eq!(r.metadata.annotations[ANNOTATION_OMITTED], "11");
    }

    #[test]
    fn attacker_text_is_bounded() {
        let mut v = verdicts();
        if let Some(s) = v.get_mut("r/signed@sha256:1") {
            s.signer = Some("x".repeat(10_000));
            s.message = "m".repeat(10_000);
        }
        let r = &reports(&[use_("a", "w", "r/signed@sha256:1")], &v)[0];
        assert!(r.results[0].properties["signer"].len() <= MAX_TEXT + 3);
        assert!(r.results[0].message.len() <= MAX_MESSAGE + 3);
    }

    #[test]
    fn owner_is_the_controller_or_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "prod", "uid": "p1", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Thing", "name": "other", "uid": "t1"},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f", "uid": "rs1", "controller": true}
            ]}
        }))
        .unwrap();
        assert_eq!(owner_of(&pod).name, "web-5d8f");
        assert_eq!(owner_of(&pod).kind, "ReplicaSet");
        let bare: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "solo", "uid": "p2"}}))
                .unwrap();
        assert_eq!(
            owner_of(&bare),
            Owner {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "solo".into(),
                uid: "p2".into()
            }
        );
    }

    #[test]
    fn plan_writes_only_changes_and_deletes_emptied_namespaces() {
        let v = verdicts();
        let before = reports(
            &[
                use_("a", "w", "r/signed@sha256:1"),
                use_("b", "w", "r/none@sha256:3"),
                use_("gone", "w", "r/none@sha256:3"),
            ],
            &v,
        );
        assert_eq!(plan(&before, &[]).len(), 3, "all new");
        assert!(plan(&before, &before).is_empty(), "unchanged: no write");

        // The server's copy carries more metadata; that is not a change.
        let mut listed: Vec<PolicyReport> = before.clone();
        for r in &mut listed {
            r.metadata
                .labels
                .insert("extra.example/label-by-someone".into(), "x".into());
        }
        assert!(plan(&before, &listed).is_empty(), "another manager's label");
        listed[0]
            .metadata
            .labels
            .remove(crate::crd::LABEL_MANAGED_BY);
        assert_eq!(plan(&before, &listed).len(), 1, "our label was removed");

        let mut v2 = v.clone();
        if let Some(x) = v2.get_mut("r/none@sha256:3") {
            x.posture = Posture::InvalidSignature;
        }
        let after = reports(
            &[
                use_("a", "w", "r/signed@sha256:1"),
                use_("b", "w", "r/none@sha256:3"),
            ],
            &v2,
        );
        let actions = plan(&after, &before);
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::Apply(r) if r.metadata.namespace == "b" && r.summary.fail == 1)
        );
        assert_eq!(
            actions[1],
            Action::Delete {
                namespace: "gone".into()
            }
        );
    }
}
