//! Writes the PolicyReports of [`crate::model::policy_report`] (`run --policy-reports`): after an
//! inventory pass, the per-namespace reports wanted now are compared with ours on the server
//! (listed by our managed-by label) and only the difference is written, through the same
//! Lease-bounded [`Writer`] as ImagePostures, so a standby never writes and a steady cluster
//! costs one list and no writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::reflector::Store;
use kube::Client;

use crate::core::lock::LockExt;
use crate::metrics::Metrics;
use crate::model::crd::ImagePosture;
use crate::model::fields::{LABEL_MANAGED_BY, MANAGER};
use crate::model::policy_report::{self, Action, ImageVerdict, Owner, PolicyReport, Use};
use crate::operator::apply::Writer;
use crate::operator::inventory::index::{OwnerKey, Target};
use crate::operator::inventory::tags::TagResolver;
use crate::operator::inventory::{PodIndex, PodView};

/// What one pass wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub applied: usize,
    pub deleted: usize,
    pub errors: usize,
}

/// `wgpolicyk8s.io/v1alpha2` PolicyReport, namespaced.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", policy_report::KIND),
        "policyreports",
    )
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

/// One result source per (namespace, pod owner, image) of the admitted, running pods, from the
/// pod index; a tag not resolved yet is reported by its reference (no verdict: `skip`).
pub fn uses(index: &PodIndex, tags: &Arc<TagResolver>) -> Vec<Use> {
    let now = Utc::now();
    index
        .owners()
        .map(|(namespace, owner, target)| Use {
            namespace: namespace.to_string(),
            owner: Owner::from(owner),
            image: match target {
                Target::Image(id) => id.key(),
                Target::Unresolved(tag) => tags
                    .lookup(tag, now)
                    .map(|id| id.key())
                    .unwrap_or_else(|| tag.to_string()),
            },
        })
        .collect()
}

/// Verdicts by image identity, from the ImagePosture cache.
pub fn verdicts(postures: &[Arc<ImagePosture>]) -> BTreeMap<String, ImageVerdict> {
    postures
        .iter()
        .filter_map(|cr| {
            let status = cr.status.as_ref()?;
            Some((
                cr.spec.image.clone(),
                ImageVerdict {
                    posture: status.posture?,
                    signer: status.signer.clone(),
                    issuer: status.issuer.clone(),
                    reason: status.reason.map(|r| r.to_string()).unwrap_or_default(),
                    message: status.message.clone(),
                    last_verified: status.last_verified.clone(),
                    drift: status.drift.clone(),
                },
            ))
        })
        .collect()
}

/// Lists our PolicyReports, plans against `desired`, and writes the difference.
pub async fn sync(client: &Client, writer: &Writer, desired: &[PolicyReport]) -> SyncReport {
    let mut report = SyncReport::default();
    if !writer.may_write() {
        return report;
    }
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource());
    let selector = format!("{LABEL_MANAGED_BY}={MANAGER}");
    let listed = match all.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "listing PolicyReports failed; retried on the next pass");
            report.errors += 1;
            return report;
        }
    };
    let existing: Vec<PolicyReport> = listed
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    let params = PatchParams::apply(MANAGER).force();
    for action in policy_report::plan(desired, &existing) {
        let (namespace, result) = match action {
            Action::Apply(desired) => {
                let namespace = desired.metadata.namespace.clone();
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &namespace, &api_resource());
                let body = Patch::Apply(&desired);
                let r = writer
                    .within(api.patch(policy_report::REPORT_NAME, &params, &body))
                    .await
                    .map(|_| report.applied += 1);
                (namespace, r)
            }
            Action::Delete { namespace } => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &namespace, &api_resource());
                let r = match writer
                    .within(api.delete(policy_report::REPORT_NAME, &DeleteParams::default()))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(crate::error::Error::Kube(kube::Error::Api(s))) if s.is_not_found() => {
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                (namespace, r.map(|()| report.deleted += 1))
            }
        };
        if let Err(error) = result {
            report.errors += 1;
            tracing::warn!(%namespace, %error, "PolicyReport write failed; retried on the next pass");
            if matches!(error, crate::error::Error::NotLeader) {
                break;
            }
        }
    }
    report
}

/// What `--policy-reports` writes with.
pub struct ReportWriter {
    pub client: Client,
    pub index: Arc<Mutex<PodIndex>>,
    pub writer: Writer,
    pub tags: Arc<TagResolver>,
    /// The reports the last clean sync left in place, and when: a pass that wants the same
    /// reports skips the PolicyReport list (an API call per pass otherwise), except once per
    /// `REPORTS_RELIST` (10 minutes) so an edit or deletion by someone else is repaired.
    pub written: Mutex<Option<(Vec<PolicyReport>, std::time::Instant)>>,
}

/// How long a clean PolicyReport sync is trusted without listing the reports again.
const REPORTS_RELIST: Duration = Duration::from_secs(600);

/// One PolicyReport per namespace from the pods and the ImagePosture cache; only changed
/// reports are written (counted as `policyreport` / `policyreport-delete` API writes).
pub async fn write_reports(
    reports: &ReportWriter,
    postures: &Store<ImagePosture>,
    metrics: &Metrics,
) {
    let uses = uses(&reports.index.locked(), &reports.tags);
    let desired = policy_report::reports(&uses, &verdicts(&postures.state()));
    let unchanged = reports
        .written
        .locked()
        .as_ref()
        .is_some_and(|(last, at)| *last == desired && at.elapsed() < REPORTS_RELIST);
    if unchanged {
        return;
    }
    let done = sync(&reports.client, &reports.writer, &desired).await;
    *reports.written.locked() =
        (done.errors == 0).then(|| (desired.clone(), std::time::Instant::now()));
    for _ in 0..done.applied {
        metrics.api_write("policyreport");
    }
    for _ in 0..done.deleted {
        metrics.api_write("policyreport-delete");
    }
    tracing::info!(
        namespaces = desired.len(),
        applied = done.applied,
        deleted = done.deleted,
        errors = done.errors,
        "policy reports done"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

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
}
