//! The inventory loop: one level-triggered, idempotent pass from pods to ImagePosture
//! resources, with no registry I/O on its path.
//!
//! - pods → distinct images (tags without a digest resolved in the background, see
//!   [`super::tags`]);
//! - server-side apply, as field manager [`FIELD_MANAGER_INVENTORY`], of `spec`, the ownership
//!   and registry labels, `status.references` and `status.usage`, where they differ from what
//!   this manager owns; `usage` says 0 pods once the last pod is gone, until deletion;
//! - a new image's resource is created at once, `checking`/`Pending` until the verification
//!   controller has its verdict; at most `max_images` resources exist (most-used images
//!   first), the overflow is counted and logged, not created;
//! - resources no pod has used for the grace period are deleted.
//!
//! When the API server fails as a whole (no answer, 5xx, 429) the rest of the pass, garbage
//! collection included, is left to the next pass.

use crate::core::lock::LockExt as _;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use kube::ResourceExt;
use serde_json::json;

use super::tags::TagResolver;
use super::{Inventory, NamespaceFilter, PodView, Unresolved, Usage};
use crate::core::image::ImageId;
use crate::core::posture::{Posture, Reason, Verdict};
use crate::error::{Error, Result};
use crate::model::crd::{self, ImagePosture, ImagePostureStatus, ImageUsage};
use crate::model::fields::{
    self, FIELD_MANAGER_INVENTORY, FIELD_MANAGER_VERIFIER, INVENTORY_FIELDS, LABEL_POSTURE,
    VERDICT_FIELDS,
};
use crate::model::naming::ResourceName as _;
use crate::operator::apply::Writer;
use crate::operator::ownership::{self, Part};

/// Images whose resources are written at once within a pass.
const WRITES_IN_FLIGHT: usize = 16;

#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// How long a resource outlives the last pod using its image.
    pub grace: Duration,
    pub namespaces: NamespaceFilter,
    /// Most ImagePosture resources the inventory keeps; the overflow is not created.
    pub max_images: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            grace: Duration::from_secs(3600),
            namespaces: NamespaceFilter::default(),
            max_images: 5000,
        }
    }
}

/// A pass over everything known, or over the first pages of the pod list only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Full,
    Partial,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub images: usize,
    /// Tags without a known digest yet (resolving in the background).
    pub unresolved: usize,
    pub invalid: usize,
    pub created: usize,
    pub status_writes: usize,
    pub metadata_writes: usize,
    pub deleted: usize,
    /// Running images that could not be tied to a manifest (`checking` / `DigestUnknown`).
    pub untied: usize,
    /// Images over the max-images cap: not recorded.
    pub deferred: usize,
    pub errors: usize,
    /// Leadership was lost during the pass; the rest of it was skipped.
    pub aborted: bool,
}

impl SweepReport {
    pub fn api_writes(&self) -> usize {
        self.status_writes + self.metadata_writes + self.deleted
    }
}

pub struct Sweeper {
    writer: Writer,
    tags: Arc<TagResolver>,
    config: SweepConfig,
    /// When each resource was first seen unused (in memory: a restart only delays deletion).
    unused_since: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Resources found in agreement at a resourceVersion, with the usage they agreed with: an
    /// unchanged resource with unchanged usage needs no comparison (a warm pass is the
    /// inventory of the pods and nothing else).
    /// The usage is the index's own shared copy: an unchanged image's usage is the very same
    /// allocation in the next snapshot (one pointer comparison), a changed one compares by value.
    clean: Mutex<HashMap<String, (String, Arc<Usage>)>>,
}

impl Sweeper {
    pub fn new(writer: Writer, tags: Arc<TagResolver>, config: SweepConfig) -> Self {
        Sweeper {
            writer,
            tags,
            config,
            unused_since: Mutex::default(),
            clean: Mutex::default(),
        }
    }

    pub fn tags(&self) -> &Arc<TagResolver> {
        &self.tags
    }

    /// One pass over the inventory of `pods` (computed from scratch: the tests' entry).
    pub async fn sweep<P: PodView>(
        &self,
        pods: &[Arc<P>],
        existing: &[Arc<ImagePosture>],
        now: DateTime<Utc>,
    ) -> SweepReport {
        let inv = Inventory::from_pods(pods.iter().map(|p| p.as_ref()), &self.config.namespaces);
        self.sweep_inventory(inv, existing, now).await
    }

    /// One pass from an inventory (the operator's: a snapshot of its [`super::PodIndex`]).
    pub async fn sweep_inventory(
        &self,
        inv: Inventory,
        existing: &[Arc<ImagePosture>],
        now: DateTime<Utc>,
    ) -> SweepReport {
        self.pass(inv, existing, now, Pass::Full).await
    }

    /// While the first pod list is still arriving: creates the resources of images not
    /// recorded yet from the pods listed so far, and nothing else (no usage lowered, nothing
    /// deleted: the rest of the list is unknown). The first full pass corrects the usage.
    pub async fn create_listed(
        &self,
        inv: Inventory,
        existing: &[Arc<ImagePosture>],
        now: DateTime<Utc>,
    ) -> SweepReport {
        self.pass(inv, existing, now, Pass::Partial).await
    }

    async fn pass(
        &self,
        mut inv: Inventory,
        existing: &[Arc<ImagePosture>],
        now: DateTime<Utc>,
        pass: Pass,
    ) -> SweepReport {
        let full = pass == Pass::Full;
        let mut report = SweepReport::default();
        if !self.writer.may_write() {
            report.aborted = true;
            return report;
        }
        report.invalid = inv.invalid.len();
        for (reference, why) in &inv.invalid {
            tracing::warn!(
                reference = %crate::core::text::escape(reference),
                why = %crate::core::text::escape(why),
                "pod image reference does not parse"
            );
        }
        let tags: Vec<_> = inv.unresolved.keys().cloned().collect();
        if full {
            self.tags.retain(&tags.iter().collect());
        }
        inv.resolve_with(|tag| self.tags.lookup(tag, now));
        // Running images the registry could not tie to a manifest of their repository: a
        // resource of their own, `checking` / `DigestUnknown`, never verified.
        let mut untied = Vec::new();
        for tag in &tags {
            let Unresolved::Tie(tie) = tag else { continue };
            if let Some(message) = self.tags.untied(tag) {
                if let Some(usage) = inv.unresolved.remove(tag) {
                    untied.push((crd::untied_resource(tie), usage, message));
                }
            }
        }
        report.untied = untied.len();
        report.unresolved = inv.unresolved.len();
        report.images = inv.images.len();

        let existing: HashMap<&str, &ImagePosture> = existing
            .iter()
            .filter(|cr| cr.is_managed())
            .filter_map(|cr| Some((cr.metadata.name.as_deref()?, cr.as_ref())))
            .collect();
        let order = inv.by_usage();
        let mut room = self.config.max_images.saturating_sub(existing.len());
        let mut live = HashSet::new();
        // A resource to keep: an existing one, or a new one while the cap leaves room.
        let mut admit = |name: String, report: &mut SweepReport| {
            let current = existing.get(name.as_str()).copied();
            if current.is_none() {
                if room == 0 {
                    report.deferred += 1;
                    return None;
                }
                room -= 1;
            }
            live.insert(name);
            Some(current)
        };
        let mut work = Vec::new();
        for id in &order {
            let Some(current) = admit(id.resource_name(), &mut report) else {
                continue;
            };
            if let Some(usage) = inv.images.get(id) {
                let wanted = if full {
                    !self.is_clean(current, usage)
                } else {
                    current.is_none()
                };
                if wanted {
                    work.push((id, usage, current));
                }
            }
        }
        let mut untied_work = Vec::new();
        for (cr, usage, message) in untied.iter().filter(|_| full) {
            if let Some(current) = admit(cr.name_any(), &mut report) {
                untied_work.push((cr, usage, message.as_str(), current));
            }
        }
        // After a restart the tag cache is empty: a tag not resolved yet may name an image
        // whose resource exists. Until it resolves, that resource is neither unused nor
        // rewritten (a restart within the TTL writes nothing).
        let pending: HashSet<&str> = inv
            .unresolved
            .values()
            .flat_map(|u| u.references.iter().map(String::as_str))
            .collect();
        if !pending.is_empty() {
            for (name, cr) in &existing {
                let named = cr
                    .status
                    .as_ref()
                    .is_some_and(|s| s.references.iter().any(|r| pending.contains(r.as_str())));
                if named && !live.contains(*name) {
                    live.insert(name.to_string());
                }
            }
        }
        if full {
            self.clean.locked().retain(|name, _| live.contains(name));
        }
        // Images are independent: their writes go WRITES_IN_FLIGHT at a time (most-used first),
        // so 2,000 new images do not wait for 6,000 round trips in a row. The first image is
        // written alone: an API server that fails it gets no more writes this pass.
        let total = work.len();
        let mut done = 0usize;
        let mut server_failing = false;
        let mut work = work.into_iter();
        let first = work.next();
        let mut writes = stream::iter(first)
            .then(|(id, usage, current)| self.write_one(id, usage, current, now))
            .chain(
                stream::iter(work)
                    .map(|(id, usage, current)| self.write_one(id, usage, current, now))
                    .buffer_unordered(WRITES_IN_FLIGHT),
            )
            .boxed();
        while let Some((id, one, result)) = writes.next().await {
            done += 1;
            report.created += one.created;
            report.status_writes += one.status_writes;
            report.metadata_writes += one.metadata_writes;
            match result {
                Some(Ok(())) => {}
                None => {
                    report.aborted = true;
                    tracing::warn!("leadership lost; inventory pass stopped");
                    return report;
                }
                Some(Err(e)) => {
                    report.errors += 1;
                    tracing::warn!(image = %id, error = %e, "writing ImagePosture failed; retried next pass");
                    if e.server_failing() {
                        server_failing = true;
                        break;
                    }
                }
            }
        }
        drop(writes);
        if !server_failing {
            for (cr, usage, message, current) in untied_work {
                if !self.writer.may_write() {
                    report.aborted = true;
                    return report;
                }
                if let Err(e) = self
                    .materialize_untied(cr, usage, message, current, now, &mut report)
                    .await
                {
                    report.errors += 1;
                    tracing::warn!(name = %cr.name_any(), error = %e, "writing ImagePosture failed; retried next pass");
                    if e.server_failing() {
                        server_failing = true;
                        break;
                    }
                }
            }
        }
        let skipped = total.saturating_sub(done);
        if report.deferred > 0 {
            tracing::warn!(
                deferred = report.deferred,
                cap = self.config.max_images,
                "images over the max-images cap are not recorded; raise --max-images"
            );
        }
        if server_failing {
            tracing::warn!(
                skipped,
                "the API server is failing: the rest of this pass is left to the next one"
            );
            return report;
        }
        if !full {
            return report;
        }
        self.collect_garbage(&existing, &live, now, &mut report)
            .await;
        report
    }

    /// One image's writes, with what they did; `None`: not tried, leadership is gone.
    async fn write_one<'a>(
        &self,
        id: &'a ImageId,
        usage: &Arc<Usage>,
        current: Option<&ImagePosture>,
        now: DateTime<Utc>,
    ) -> (&'a ImageId, SweepReport, Option<Result<()>>) {
        let mut one = SweepReport::default();
        let result = if self.writer.may_write() {
            Some(self.materialize(id, usage, current, now, &mut one).await)
        } else {
            None
        };
        if let (Some(Ok(())), Some(c), Some(rv)) =
            (&result, current, current.and_then(|c| c.resource_version()))
        {
            if one.api_writes() == 0 {
                self.clean
                    .locked()
                    .insert(c.name_any(), (rv, usage.clone()));
            }
        }
        (id, one, result)
    }

    /// Whether `current` is unchanged since it was found in agreement with this very usage.
    fn is_clean(&self, current: Option<&ImagePosture>, usage: &Arc<Usage>) -> bool {
        let Some(c) = current else { return false };
        let rv = c.metadata.resource_version.as_deref();
        self.clean
            .locked()
            .get(c.metadata.name.as_deref().unwrap_or_default())
            .is_some_and(|(at, agreed)| {
                Some(at.as_str()) == rv && (Arc::ptr_eq(agreed, usage) || **agreed == **usage)
            })
    }

    /// Writes what the inventory owns of one image's resource, where it differs.
    async fn materialize(
        &self,
        id: &ImageId,
        usage: &Usage,
        current: Option<&ImagePosture>,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> Result<()> {
        let name = id.resource_name();
        let labels = fields::labels(id, None);
        let spec = crd::new_resource(id).spec;
        let owned_labels =
            current.and_then(|c| ownership::owned(c, FIELD_MANAGER_INVENTORY, Part::Labels));
        let meta_ok = current.is_some_and(|c| {
            c.spec == spec
                && labels.iter().all(|(k, v)| c.labels().get(k) == Some(v))
                && owned_labels
                    .as_ref()
                    .is_none_or(|o| labels.keys().all(|k| o.contains(k)))
        });
        let mut rv = current.and_then(|c| c.resource_version());
        if !meta_ok {
            let body = json!({ "metadata": { "name": name, "labels": labels }, "spec": spec });
            let written = self
                .writer
                .apply(&name, body, FIELD_MANAGER_INVENTORY)
                .await?;
            rv = written.resource_version();
            if current.is_none() {
                report.created += 1;
            }
            report.metadata_writes += 1;
        }
        if current.is_none_or(|c| c.status.as_ref().is_none_or(|s| s.posture.is_none())) {
            // The verifier's fields, written on its behalf (its manager owns them from the
            // start) and only if nothing was written since we read or created the object.
            let pending =
                serde_json::to_value(ImagePostureStatus::pending(now)).unwrap_or_default();
            match self
                .writer
                .apply_status_if(&name, pending, FIELD_MANAGER_VERIFIER, rv.as_deref())
                .await
            {
                Ok(_) => report.status_writes += 1,
                Err(Error::Kube(kube::Error::Api(s))) if s.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        let desired = usage_fields(usage);
        self.apply_inventory_status(&name, desired, current, report)
            .await
    }

    /// Writes the resource of a running image that could not be tied: identity and usage as
    /// the inventory, and the verdict fields on the verifier's behalf (`checking` /
    /// `DigestUnknown`, saying why), each only where it differs.
    async fn materialize_untied(
        &self,
        cr: &ImagePosture,
        usage: &Usage,
        message: &str,
        current: Option<&ImagePosture>,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> Result<()> {
        let name = cr.name_any();
        let labels = cr.labels().clone();
        let meta_ok = current.is_some_and(|c| {
            c.spec == cr.spec && labels.iter().all(|(k, v)| c.labels().get(k) == Some(v))
        });
        if !meta_ok {
            let body = json!({ "metadata": { "name": name, "labels": labels }, "spec": cr.spec });
            self.writer
                .apply(&name, body, FIELD_MANAGER_INVENTORY)
                .await?;
            if current.is_none() {
                report.created += 1;
            }
            report.metadata_writes += 1;
        }
        let verdict = Verdict::checking(Reason::DigestUnknown, message);
        let old = current.and_then(|c| c.status.as_ref());
        let desired = ImagePostureStatus::verdict_fields(&verdict, None, None, old, now);
        let synced = self
            .writer
            .sync_status(
                &name,
                current,
                VERDICT_FIELDS,
                serde_json::to_value(&desired).unwrap_or_default(),
                FIELD_MANAGER_VERIFIER,
            )
            .await?;
        report.status_writes += synced.writes;
        let label = Posture::Checking.as_str();
        if current.is_none_or(|c| c.labels().get(LABEL_POSTURE).map(String::as_str) != Some(label))
        {
            let body = json!({ "metadata": { "name": name, "labels": { LABEL_POSTURE: label } } });
            self.writer
                .apply(&name, body, FIELD_MANAGER_VERIFIER)
                .await?;
            report.metadata_writes += 1;
        }
        let desired = usage_fields(usage);
        self.apply_inventory_status(&name, desired, current, report)
            .await
    }

    async fn apply_inventory_status(
        &self,
        name: &str,
        desired: ImagePostureStatus,
        current: Option<&ImagePosture>,
        report: &mut SweepReport,
    ) -> Result<()> {
        let desired = desired.only(INVENTORY_FIELDS);
        let synced = self
            .writer
            .sync_status(
                name,
                current,
                INVENTORY_FIELDS,
                desired,
                FIELD_MANAGER_INVENTORY,
            )
            .await?;
        report.status_writes += synced.writes;
        Ok(())
    }

    async fn collect_garbage(
        &self,
        existing: &HashMap<&str, &ImagePosture>,
        live: &HashSet<String>,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) {
        let grace = chrono::Duration::from_std(self.config.grace).unwrap_or(chrono::Duration::MAX);
        let unused: BTreeSet<&str> = existing
            .keys()
            .copied()
            .filter(|n| !live.contains(*n))
            .collect();
        let due: HashSet<String> = {
            let mut since = self.unused_since.locked();
            since.retain(|name, _| unused.contains(name.as_str()));
            unused
                .iter()
                .filter(|name| {
                    let first = *since.entry(name.to_string()).or_insert(now);
                    now.signed_duration_since(first) >= grace
                })
                .map(|n| n.to_string())
                .collect()
        };
        for name in unused {
            if !self.writer.may_write() {
                report.aborted = true;
                return;
            }
            if due.contains(name) {
                match self.writer.delete(name).await {
                    Ok(()) => {
                        report.deleted += 1;
                        self.unused_since.locked().remove(name);
                        tracing::info!(%name, "deleted ImagePosture: no pod used its image for the grace period");
                    }
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(%name, error = %e, "deleting ImagePosture failed; retried next pass");
                        if e.server_failing() {
                            return;
                        }
                    }
                }
                continue;
            }
            // Until deletion, the resource says the truth: no pod runs the image.
            let Some(cr) = existing.get(name).copied() else {
                continue;
            };
            let desired = ImagePostureStatus::inventory_fields(Vec::new(), ImageUsage::new(0, []));
            if let Err(e) = self
                .apply_inventory_status(name, desired, Some(cr), report)
                .await
            {
                report.errors += 1;
                tracing::warn!(%name, error = %e, "writing ImagePosture failed; retried next pass");
                if e.server_failing() {
                    return;
                }
            }
        }
    }
}

/// The inventory's part of the status for `usage`.
fn usage_fields(usage: &Usage) -> ImagePostureStatus {
    ImagePostureStatus::inventory_fields(
        usage.references.iter().cloned().collect(),
        ImageUsage::new(
            u32::try_from(usage.pods.len()).unwrap_or(u32::MAX),
            usage.namespaces.iter().map(String::as_str),
        ),
    )
}
