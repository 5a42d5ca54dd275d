//! Writes to ImagePosture resources, shared by both loops: server-side apply under a named
//! field manager, each write gated by leadership and bounded in time.
//!
//! kube's client has no response timeout and retries 429/503/504 up to 15 times with a backoff
//! growing to minutes, so every write gets a deadline: [`WRITE_TIMEOUT`], cut to the end of
//! this replica's claim on the Lease, so that no write of ours can land after the loss.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, Recorder};
use kube::{Api, Resource};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::crd::ImagePosture;
use crate::operator::leader::Gate;
use crate::operator::ownership::{self, Part};

/// Default deadline of one API write, its client-side retries included.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Attempts per write when the API server answers 409 Conflict.
const CONFLICT_RETRIES: u32 = 4;

/// Gated, bounded writes of ImagePosture resources.
#[derive(Clone)]
pub struct Writer {
    api: Api<ImagePosture>,
    gate: Gate,
    timeout: Duration,
}

impl Writer {
    pub fn new(api: Api<ImagePosture>) -> Self {
        Writer {
            api,
            gate: Gate::open(),
            timeout: WRITE_TIMEOUT,
        }
    }

    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    /// Deadline of one write, client retries included (default [`WRITE_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn may_write(&self) -> bool {
        self.gate.leading()
    }

    /// Runs any write (e.g. to a PolicyReport) under the same Lease gate and deadline.
    pub async fn within<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T> {
        self.bounded(write).await
    }

    /// Runs one write within the smaller of the write deadline and the Lease claim.
    async fn bounded<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T> {
        let left = self.gate.remaining().ok_or(Error::NotLeader)?;
        let limit = self.timeout.min(left);
        match tokio::time::timeout(limit, write).await {
            Ok(result) => Ok(result?),
            Err(_) if limit < self.timeout => Err(Error::NotLeader),
            Err(_) => Err(Error::WriteTimeout(self.timeout)),
        }
    }

    /// Server-side apply of `metadata` (name and labels) and `spec` fields, as `manager`.
    pub async fn apply(&self, name: &str, body: Value, manager: &str) -> Result<ImagePosture> {
        let body = with_identity(body);
        let params = PatchParams::apply(manager).force();
        let patch = Patch::Apply(&body);
        self.bounded(retry_conflicts(|| self.api.patch(name, &params, &patch)))
            .await
    }

    /// Server-side apply of status fields through the status subresource, as `manager`.
    pub async fn apply_status(
        &self,
        name: &str,
        status: Value,
        manager: &str,
    ) -> Result<ImagePosture> {
        let body = with_identity(json!({ "status": status }));
        let params = PatchParams::apply(manager).force();
        let patch = Patch::Apply(&body);
        self.bounded(retry_conflicts(|| {
            self.api.patch_status(name, &params, &patch)
        }))
        .await
    }

    /// Like [`apply_status`](Self::apply_status), but only if the resource still has
    /// `resource_version` (when given); a 409 then means someone wrote first, and is returned.
    pub async fn apply_status_if(
        &self,
        name: &str,
        status: Value,
        manager: &str,
        resource_version: Option<&str>,
    ) -> Result<ImagePosture> {
        let mut body = json!({ "status": status });
        if let (Some(rv), Some(map)) = (resource_version, body.as_object_mut()) {
            map.insert(
                "metadata".into(),
                json!({ "name": name, "resourceVersion": rv }),
            );
        }
        let body = with_identity(body);
        let params = PatchParams::apply(manager).force();
        let patch = Patch::Apply(&body);
        self.bounded(self.api.patch_status(name, &params, &patch))
            .await
    }

    /// Makes `manager`'s part of a status (`fields`, JSON names) read `desired`, writing only
    /// what differs from `current` as this manager owns it. Both loops write through here.
    ///
    /// Server-side apply leaves a field owned by another manager alone unless our apply states
    /// it, and an apply that states another manager's value *shares* the field instead of
    /// taking it. So a field of `fields` that `desired` leaves out but another manager holds
    /// (a `kubectl edit --subresource=status`, a second tool) is removed by a JSON merge patch
    /// (`null`), which drops it from every manager's set; then `desired` is applied (forced,
    /// so a foreign value of a field we state becomes ours). An unchanged part costs nothing.
    pub async fn sync_status(
        &self,
        name: &str,
        current: Option<&ImagePosture>,
        fields: &[&str],
        desired: Value,
        manager: &str,
    ) -> Result<Synced> {
        let mut synced = Synced::default();
        let plan = StatusPlan::new(current, fields, &desired, manager);
        if !plan.leftovers.is_empty() {
            let nulls: serde_json::Map<String, Value> = plan
                .leftovers
                .iter()
                .map(|k| (k.clone(), Value::Null))
                .collect();
            let body = json!({ "status": nulls });
            let params = PatchParams {
                field_manager: Some(manager.to_string()),
                ..PatchParams::default()
            };
            let patch = Patch::Merge(&body);
            let written = self
                .bounded(retry_conflicts(|| {
                    self.api.patch_status(name, &params, &patch)
                }))
                .await?;
            synced.writes += 1;
            synced.written = Some(written);
        }
        if plan.apply {
            let written = self.apply_status(name, desired, manager).await?;
            synced.writes += 1;
            synced.written = Some(written);
        }
        Ok(synced)
    }

    /// Deletes a resource; one that is already gone counts as deleted.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self
            .bounded(self.api.delete(name, &DeleteParams::default()))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Kube(kube::Error::Api(s))) if s.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Publishes an Event about `cr`, bounded like a write.
    pub async fn publish(
        &self,
        recorder: &Recorder,
        event: &Event,
        cr: &ImagePosture,
    ) -> Result<()> {
        let reference = cr.object_ref(&());
        let left = self.gate.remaining().ok_or(Error::NotLeader)?;
        match tokio::time::timeout(self.timeout.min(left), recorder.publish(event, &reference))
            .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(Error::WriteTimeout(self.timeout)),
        }
    }
}

/// What [`Writer::sync_status`] wrote.
#[derive(Debug, Default)]
pub struct Synced {
    /// API writes made (0 when the part already read as desired).
    pub writes: usize,
    /// The object as the last write left it.
    pub written: Option<ImagePosture>,
}

/// What one manager must write to make its part of a status read as desired.
#[derive(Debug, PartialEq, Eq)]
pub struct StatusPlan {
    /// Fields of the part that another manager holds and `desired` leaves out: removed.
    pub leftovers: Vec<String>,
    /// Whether `desired` must be applied (a value differs, or a stated field is not ours).
    pub apply: bool,
}

impl StatusPlan {
    pub fn new(
        current: Option<&ImagePosture>,
        fields: &[&str],
        desired: &Value,
        manager: &str,
    ) -> Self {
        let Some(cr) = current else {
            return StatusPlan {
                leftovers: Vec::new(),
                apply: true,
            };
        };
        let stored = cr.status.clone().unwrap_or_default().only(fields);
        let stated: Vec<&String> = desired
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        let owned = ownership::owned(cr, manager, Part::Status);
        let owns_all = owned
            .as_ref()
            .is_none_or(|o| stated.iter().all(|k| o.contains(k.as_str())));
        let foreign = ownership::foreign(cr, manager, Part::Status);
        let leftovers = stored
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| !stated.contains(k) && foreign.contains(k.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let wanted = {
            let mut s = stored.clone();
            if let Some(m) = s.as_object_mut() {
                m.retain(|k, _| stated.contains(&k) || !foreign.contains(k.as_str()));
            }
            s
        };
        StatusPlan {
            leftovers,
            apply: wanted != *desired || !owns_all,
        }
    }
}

fn with_identity(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.insert("apiVersion".into(), json!(ImagePosture::api_version(&())));
        map.insert("kind".into(), json!(ImagePosture::kind(&())));
    }
    body
}

async fn retry_conflicts<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Err(kube::Error::Api(e)) if e.is_conflict() && attempt + 1 < CONFLICT_RETRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::posture::Posture;
    use crate::model::crd::{ImagePostureSpec, ImagePostureStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    const FIELDS: &[&str] = &["posture", "signer", "message"];

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            subresource: Some("status".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn cr(status: ImagePostureStatus, managers: Vec<ManagedFieldsEntry>) -> ImagePosture {
        let spec = ImagePostureSpec {
            image: "r/x@sha256:0".into(),
            repository: "r/x".into(),
            digest: "sha256:0".into(),
            short_digest: String::new(),
            untied: None,
        };
        let mut cr = ImagePosture::new("x", spec);
        cr.status = Some(status);
        cr.metadata.managed_fields = Some(managers);
        cr
    }

    fn invalid() -> ImagePostureStatus {
        ImagePostureStatus {
            posture: Some(Posture::InvalidSignature),
            message: "bad".into(),
            ..Default::default()
        }
    }

    /// The plan for stating the invalid verdict as `me`.
    fn plan_for(c: &ImagePosture) -> StatusPlan {
        let desired = json!({"posture": "invalid-signature", "message": "bad"});
        StatusPlan::new(Some(c), FIELDS, &desired, "me")
    }

    fn expect(leftovers: &[&str], apply: bool) -> StatusPlan {
        StatusPlan {
            leftovers: leftovers.iter().map(|s| s.to_string()).collect(),
            apply,
        }
    }

    #[test]
    fn an_unchanged_part_is_not_written() {
        let c = cr(
            invalid(),
            vec![entry(
                "me",
                "Apply",
                json!({"f:status": {"f:posture": {}, "f:message": {}}}),
            )],
        );
        let plan = plan_for(&c);
        assert_eq!(plan, expect(&[], false));
    }

    /// A merge patch by another manager took `posture` and added `signer`: the signer is
    /// removed (a claim with its value would only share it), the posture applied again.
    #[test]
    fn a_foreign_edit_is_removed_and_reapplied() {
        let mut s = invalid();
        s.posture = Some(Posture::Signed);
        s.signer = Some("mallory".into());
        let c = cr(
            s,
            vec![
                entry("me", "Apply", json!({"f:status": {"f:message": {}}})),
                entry(
                    "kubectl-edit",
                    "Update",
                    json!({"f:status": {"f:posture": {}, "f:signer": {}}}),
                ),
            ],
        );
        let plan = plan_for(&c);
        assert_eq!(plan, expect(&["signer"], true));
    }

    /// A field both managers own holds the value we applied: nothing to do about it.
    #[test]
    fn a_shared_field_with_our_value_is_left_alone() {
        let c = cr(
            invalid(),
            vec![
                entry(
                    "me",
                    "Apply",
                    json!({"f:status": {"f:posture": {}, "f:message": {}}}),
                ),
                entry("other", "Apply", json!({"f:status": {"f:posture": {}}})),
            ],
        );
        let plan = plan_for(&c);
        assert_eq!(plan, expect(&[], false));
        assert!(ownership::foreign_only(&c, "me", Part::Status).is_empty());
    }

    /// A field we stated before and no longer state goes by our own apply.
    #[test]
    fn a_field_we_dropped_is_removed_by_our_apply() {
        let mut s = invalid();
        s.signer = Some("old".into());
        let c = cr(
            s,
            vec![entry(
                "me",
                "Apply",
                json!({"f:status": {"f:posture": {}, "f:message": {}, "f:signer": {}}}),
            )],
        );
        let plan = plan_for(&c);
        assert_eq!(plan, expect(&[], true));
    }
}
