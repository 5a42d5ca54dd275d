//! What the inventory reads of a pod, and a lean pod type that keeps only that.
//!
//! [`PodView`] is the inventory's one way of reading a pod: the operator's reflector holds
//! [`LeanPod`]s (deserialized straight from the watch stream, everything else skipped), while
//! `scan` and the tests pass k8s-openapi [`Pod`]s unchanged.
//!
//! What thousands of pods repeat (image references, imageIDs, container names, owner kinds and
//! names, phases, pull secret and service account names) is shared through [`intern`]: a
//! process-wide set of `Arc<str>` that forgets strings no pod holds any more. Its bound: it
//! purges every string only it holds whenever it has doubled since the last purge, so it holds
//! at most twice the distinct strings live pods hold, plus [`INTERNER_FLOOR`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::core::lock::LockExt as _;

/// Which list of a pod's spec a container comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerKind {
    Container,
    Init,
    Ephemeral,
}

/// A pod's controller owner, as the PolicyReports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerView<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// What the inventory, the PolicyReports and `scan` read of a pod.
pub trait PodView {
    fn namespace(&self) -> Option<&str>;
    fn name(&self) -> Option<&str>;
    fn uid(&self) -> Option<&str>;
    fn phase(&self) -> Option<&str>;
    /// The owner reference with `controller: true`, if any.
    fn controller(&self) -> Option<OwnerView<'_>>;
    /// Every container of every kind, in spec order: `(kind, name, image, imageID)`, the
    /// imageID from the kubelet's status of the container of that kind and name (`None`: no
    /// status for it yet).
    fn for_each_container<'s>(
        &'s self,
        f: &mut dyn FnMut(ContainerKind, &'s str, Option<&'s str>, Option<&'s str>),
    );
    /// `spec.imagePullSecrets` names.
    fn pull_secrets(&self) -> Vec<&str>;
    /// `spec.serviceAccountName`.
    fn service_account(&self) -> Option<&str>;
}

impl<P: PodView + ?Sized> PodView for Arc<P> {
    fn namespace(&self) -> Option<&str> {
        (**self).namespace()
    }
    fn name(&self) -> Option<&str> {
        (**self).name()
    }
    fn uid(&self) -> Option<&str> {
        (**self).uid()
    }
    fn phase(&self) -> Option<&str> {
        (**self).phase()
    }
    fn controller(&self) -> Option<OwnerView<'_>> {
        (**self).controller()
    }
    fn for_each_container<'s>(
        &'s self,
        f: &mut dyn FnMut(ContainerKind, &'s str, Option<&'s str>, Option<&'s str>),
    ) {
        (**self).for_each_container(f)
    }
    fn pull_secrets(&self) -> Vec<&str> {
        (**self).pull_secrets()
    }
    fn service_account(&self) -> Option<&str> {
        (**self).service_account()
    }
}

impl PodView for Pod {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }
    fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
    fn uid(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }
    fn phase(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.phase.as_deref())
    }
    fn controller(&self) -> Option<OwnerView<'_>> {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| OwnerView {
                api_version: &o.api_version,
                kind: &o.kind,
                name: &o.name,
                uid: &o.uid,
            })
    }
    fn for_each_container<'s>(
        &'s self,
        f: &mut dyn FnMut(ContainerKind, &'s str, Option<&'s str>, Option<&'s str>),
    ) {
        let Some(spec) = self.spec.as_ref() else {
            return;
        };
        let status = self.status.as_ref();
        let id_of = |statuses: Option<&'s Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                     name: &str| {
            statuses
                .into_iter()
                .flatten()
                .find(|s| s.name == name)
                .map(|s| s.image_id.as_str())
        };
        // (kind, its containers as (name, image), the kubelet's statuses of that kind)
        let kinds = [
            (
                ContainerKind::Container,
                spec.containers
                    .iter()
                    .map(|c| (c.name.as_str(), c.image.as_deref()))
                    .collect::<Vec<_>>(),
                status.and_then(|s| s.container_statuses.as_ref()),
            ),
            (
                ContainerKind::Init,
                spec.init_containers
                    .iter()
                    .flatten()
                    .map(|c| (c.name.as_str(), c.image.as_deref()))
                    .collect::<Vec<_>>(),
                status.and_then(|s| s.init_container_statuses.as_ref()),
            ),
            (
                ContainerKind::Ephemeral,
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| (c.name.as_str(), c.image.as_deref()))
                    .collect::<Vec<_>>(),
                status.and_then(|s| s.ephemeral_container_statuses.as_ref()),
            ),
        ];
        for (kind, containers, statuses) in kinds {
            for (name, image) in containers {
                f(kind, name, image, id_of(statuses, name));
            }
        }
    }
    fn pull_secrets(&self) -> Vec<&str> {
        self.spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .map(|r| r.name.as_str())
            .collect()
    }
    fn service_account(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
    }
}

// ---- the interner ---------------------------------------------------------------------------

/// The interner never purges below this many strings (a purge of a small set saves nothing).
pub const INTERNER_FLOOR: usize = 1024;

#[derive(Default)]
struct Interner {
    set: HashSet<Arc<str>>,
    /// Size at which the next purge runs.
    purge_at: usize,
}

fn interner() -> &'static Mutex<Interner> {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    INTERNER.get_or_init(Mutex::default)
}

/// The shared copy of `s`.
pub fn intern(s: &str) -> Arc<str> {
    let mut i = interner().locked();
    if let Some(found) = i.set.get(s) {
        return found.clone();
    }
    if i.set.len() >= i.purge_at.max(INTERNER_FLOOR) {
        // Forget what no pod holds any more (only this set holds it).
        i.set.retain(|s| Arc::strong_count(s) > 1);
        i.purge_at = i.set.len() * 2;
    }
    let shared: Arc<str> = Arc::from(s);
    i.set.insert(shared.clone());
    shared
}

/// Strings the interner holds now (for the benchmark and tests).
pub fn interned() -> usize {
    interner().locked().set.len()
}

// ---- the lean pod ---------------------------------------------------------------------------

/// One container as the inventory reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeanContainer {
    pub kind: ContainerKind,
    pub name: Arc<str>,
    pub image: Option<Arc<str>>,
    pub image_id: Option<Arc<str>>,
}

/// A controller owner, shared strings but the uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeanOwner {
    pub api_version: Arc<str>,
    pub kind: Arc<str>,
    pub name: Arc<str>,
    pub uid: Box<str>,
}

/// A pod as the operator's reflector keeps it: `metadata` holds only namespace, name, uid and
/// resourceVersion (what the reflector's store keys and the watch need); the rest is what
/// [`PodView`] reads, with shared strings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeanPod {
    pub metadata: ObjectMeta,
    pub phase: Option<Arc<str>>,
    pub owner: Option<Box<LeanOwner>>,
    pub containers: Box<[LeanContainer]>,
    pub pull_secrets: Box<[Arc<str>]>,
    pub service_account: Option<Arc<str>>,
}

impl kube::Resource for LeanPod {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl PodView for LeanPod {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }
    fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }
    fn uid(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }
    fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }
    fn controller(&self) -> Option<OwnerView<'_>> {
        self.owner.as_ref().map(|o| OwnerView {
            api_version: &o.api_version,
            kind: &o.kind,
            name: &o.name,
            uid: &o.uid,
        })
    }
    fn for_each_container<'s>(
        &'s self,
        f: &mut dyn FnMut(ContainerKind, &'s str, Option<&'s str>, Option<&'s str>),
    ) {
        for c in self.containers.iter() {
            f(c.kind, &c.name, c.image.as_deref(), c.image_id.as_deref());
        }
    }
    fn pull_secrets(&self) -> Vec<&str> {
        self.pull_secrets.iter().map(|s| &**s).collect()
    }
    fn service_account(&self) -> Option<&str> {
        self.service_account.as_deref()
    }
}

impl LeanPod {
    /// The lean copy of a full pod (what the reflector would have kept of it).
    pub fn of(pod: &Pod) -> LeanPod {
        let mut containers = Vec::new();
        pod.for_each_container(&mut |kind, name, image, image_id| {
            containers.push(LeanContainer {
                kind,
                name: intern(name),
                image: image.map(intern),
                image_id: image_id.map(intern),
            })
        });
        LeanPod {
            metadata: ObjectMeta {
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..ObjectMeta::default()
            },
            phase: pod.phase().map(intern),
            owner: pod.controller().map(|o| {
                Box::new(LeanOwner {
                    api_version: intern(o.api_version),
                    kind: intern(o.kind),
                    name: intern(o.name),
                    uid: o.uid.into(),
                })
            }),
            containers: containers.into_boxed_slice(),
            pull_secrets: pod.pull_secrets().into_iter().map(intern).collect(),
            service_account: pod.service_account().map(intern),
        }
    }
}

// What is read off the wire: serde skips every other field without keeping it.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    #[serde(default)]
    owner_references: Vec<RawOwner>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOwner {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
    controller: Option<bool>,
}

#[derive(Deserialize)]
struct RawContainer {
    #[serde(default)]
    name: String,
    image: Option<String>,
}

#[derive(Deserialize)]
struct RawName {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    containers: Vec<RawContainer>,
    #[serde(default)]
    init_containers: Option<Vec<RawContainer>>,
    #[serde(default)]
    ephemeral_containers: Option<Vec<RawContainer>>,
    #[serde(default)]
    image_pull_secrets: Option<Vec<RawName>>,
    service_account_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    #[serde(default)]
    name: String,
    #[serde(rename = "imageID", default)]
    image_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPodStatus {
    phase: Option<String>,
    container_statuses: Option<Vec<RawStatus>>,
    init_container_statuses: Option<Vec<RawStatus>>,
    ephemeral_container_statuses: Option<Vec<RawStatus>>,
}

#[derive(Deserialize)]
struct RawPod {
    #[serde(default)]
    metadata: RawMeta,
    spec: Option<RawSpec>,
    status: Option<RawPodStatus>,
}

impl<'de> Deserialize<'de> for LeanPod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPod::deserialize(d)?;
        Ok(LeanPod::from_raw(raw))
    }
}

impl LeanPod {
    fn from_raw(raw: RawPod) -> LeanPod {
        let RawPod {
            metadata,
            spec,
            status,
        } = raw;
        let status = status.unwrap_or_default();
        let mut containers = Vec::new();
        let pull_secrets;
        let service_account;
        match spec {
            Some(spec) => {
                let groups = [
                    (
                        ContainerKind::Container,
                        spec.containers,
                        status.container_statuses,
                    ),
                    (
                        ContainerKind::Init,
                        spec.init_containers.unwrap_or_default(),
                        status.init_container_statuses,
                    ),
                    (
                        ContainerKind::Ephemeral,
                        spec.ephemeral_containers.unwrap_or_default(),
                        status.ephemeral_container_statuses,
                    ),
                ];
                for (kind, list, statuses) in groups {
                    let statuses = statuses.unwrap_or_default();
                    for c in list {
                        let image_id = statuses
                            .iter()
                            .find(|s| s.name == c.name)
                            .map(|s| intern(&s.image_id));
                        containers.push(LeanContainer {
                            kind,
                            name: intern(&c.name),
                            image: c.image.as_deref().map(intern),
                            image_id,
                        });
                    }
                }
                pull_secrets = spec
                    .image_pull_secrets
                    .unwrap_or_default()
                    .iter()
                    .map(|s| intern(&s.name))
                    .collect();
                service_account = spec.service_account_name.as_deref().map(intern);
            }
            None => {
                pull_secrets = Box::default();
                service_account = None;
            }
        }
        let owner = metadata
            .owner_references
            .into_iter()
            .find(|o| o.controller == Some(true))
            .map(|o| {
                Box::new(LeanOwner {
                    api_version: intern(&o.api_version),
                    kind: intern(&o.kind),
                    name: intern(&o.name),
                    uid: o.uid.into_boxed_str(),
                })
            });
        LeanPod {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                uid: metadata.uid,
                resource_version: metadata.resource_version,
                ..ObjectMeta::default()
            },
            phase: status.phase.as_deref().map(intern),
            owner,
            containers: containers.into_boxed_slice(),
            pull_secrets,
            service_account,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "a", "name": "web-1", "uid": "u1", "resourceVersion": "7",
                "labels": {"x": "y"}, "annotations": {"big": "z"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "o", "uid": "o1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "r1", "controller": true}]},
            "spec": {
                "containers": [{"name": "c", "image": "nginx:1.27", "env": [{"name": "A", "value": "b"}]},
                               {"name": "side", "image": "envoy:1"}],
                "initContainers": [{"name": "i", "image": "busybox"}],
                "ephemeralContainers": [{"name": "dbg", "image": "alpine"}],
                "imagePullSecrets": [{"name": "regcred"}],
                "serviceAccountName": "web",
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running",
                "containerStatuses": [{"name": "c", "image": "nginx:1.27", "imageID": "docker.io/library/nginx@sha256:00", "ready": true, "restartCount": 0}],
                "initContainerStatuses": [{"name": "i", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}],
                "conditions": [{"type": "Ready", "status": "True"}]}
        })
    }

    fn seen<P: PodView>(p: &P) -> Vec<(ContainerKind, String, Option<String>, Option<String>)> {
        let mut out = Vec::new();
        p.for_each_container(&mut |k, n, i, d| {
            out.push((k, n.to_string(), i.map(String::from), d.map(String::from)))
        });
        out
    }

    /// The lean pod reads exactly what the full pod does, from the wire or from a full pod.
    #[test]
    fn lean_reads_what_the_full_pod_reads() {
        let pod: Pod = serde_json::from_value(full()).unwrap();
        let lean: LeanPod = serde_json::from_value(full()).unwrap();
        for l in [&lean, &LeanPod::of(&pod)] {
            assert_eq!(seen(l), seen(&pod));
            assert_eq!(l.namespace(), pod.namespace());
            assert_eq!(PodView::name(l), Some("web-1"));
            assert_eq!(l.uid(), Some("u1"));
            assert_eq!(l.phase(), Some("Running"));
            assert_eq!(l.controller(), pod.controller());
            assert_eq!(l.controller().map(|o| o.kind), Some("ReplicaSet"));
            assert_eq!(l.pull_secrets(), vec!["regcred"]);
            assert_eq!(l.service_account(), Some("web"));
            assert_eq!(l.metadata.resource_version.as_deref(), Some("7"));
            assert!(l.metadata.labels.is_none() && l.metadata.managed_fields.is_none());
        }
        assert_eq!(seen(&pod).len(), 4);
        assert_eq!(seen(&pod)[1].3, None, "no status: no imageID");
        assert_eq!(seen(&pod)[2].3.as_deref(), Some(""));
        // Shared strings: two pods of one image hold one copy.
        let other: LeanPod = serde_json::from_value(full()).unwrap();
        let (Some(a), Some(b)) = (&lean.containers[0].image, &other.containers[0].image) else {
            panic!()
        };
        assert!(Arc::ptr_eq(a, b));
        // A pod with nothing but a name deserializes.
        let bare: LeanPod = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        assert!(bare.containers.is_empty() && bare.controller().is_none());
    }

    #[test]
    fn interner_forgets_what_no_pod_holds() {
        let base = interned();
        let held: Vec<Arc<str>> = (0..3 * INTERNER_FLOOR)
            .map(|i| intern(&format!("interner-test-held-{i}")))
            .collect();
        for i in 0..10 * INTERNER_FLOOR {
            drop(intern(&format!("interner-test-dropped-{i}")));
        }
        // Bounded by twice what is held (other tests intern concurrently: some slack).
        assert!(
            interned() <= 2 * (held.len() + base) + 2 * INTERNER_FLOOR,
            "{} strings for {} held",
            interned(),
            held.len()
        );
    }
}
