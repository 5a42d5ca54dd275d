//! Inventory: pods → the distinct images they run, with who runs them.
//!
//! Every container kind counts (containers, init containers, ephemeral containers). The digest
//! comes from the kubelet's `imageID` (what actually ran) when it names a manifest digest under
//! the pod's own repository, or from a digest-pinned spec. Anything else is listed as
//! [`Unresolved`], never guessed: a tag not pulled yet, a bare config digest (`docker load`,
//! k3d), a digest under a name no registry holds (`kind load`); the registry ties those (see
//! [`tags`]), or nothing is attributed to them.
//!
//! [`sweep`] is the inventory loop that writes what this finds; [`tags`] resolves tags in
//! the background for it.

pub mod index;
pub mod pod;
pub mod sweep;
pub mod tags;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use index::PodIndex;
pub use pod::{LeanPod, PodView};

pub use crate::core::tie::{Tie, Unresolved, Untied};

use crate::core::image::{ImageId, ImageRef, RuntimeImage};

/// Who uses one image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// References as pods wrote them (`nginx:1.27`, `ghcr.io/x/y@sha256:…`).
    pub references: BTreeSet<String>,
    /// `namespace/name` of each pod (shared with the index's keys).
    pub pods: BTreeSet<Arc<str>>,
    pub namespaces: BTreeSet<String>,
}

impl Usage {
    pub fn merge(&mut self, other: &Usage) {
        self.references.extend(other.references.iter().cloned());
        self.pods.extend(other.pods.iter().cloned());
        self.namespaces.extend(other.namespaces.iter().cloned());
    }
}

/// Which namespaces are swept. Empty `include` means all.
#[derive(Clone, Debug, Default)]
pub struct NamespaceFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NamespaceFilter {
    pub fn admits(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|n| n == namespace))
            && !self.exclude.iter().any(|n| n == namespace)
    }
}

/// What one (reference, imageID) pair names.
#[derive(Clone)]
enum Parsed {
    Image(ImageId),
    /// No manifest digest of the pod's repository known yet.
    Unresolved(Unresolved),
    Invalid(String),
}

impl Parsed {
    fn of(reference: &str, image_id: Option<&str>) -> Parsed {
        let parsed = match ImageRef::parse(reference) {
            Ok(r) => r,
            Err(e) => return Parsed::Invalid(e.why),
        };
        let runtime = image_id.map_or(RuntimeImage::Unknown, RuntimeImage::parse);
        let own = |digest: String, parsed: ImageRef| {
            Parsed::Image(ImageId {
                registry: parsed.registry,
                repository: parsed.repository,
                digest,
            })
        };
        // The runtime's own name for the digest is the pod's repository: what ran.
        if let RuntimeImage::Manifest {
            repository: Some((registry, repository)),
            digest,
        } = &runtime
        {
            if *registry == parsed.registry && *repository == parsed.repository {
                return own(digest.clone(), parsed);
            }
        }
        // A digest-pinned spec is what the runtime resolved and checked by content.
        if let Some(d) = parsed.digest.clone() {
            return own(d, parsed);
        }
        match runtime {
            RuntimeImage::Manifest { digest, .. } => Parsed::Unresolved(Unresolved::Tie(Tie {
                reference: parsed,
                running: Untied::Foreign(digest),
            })),
            RuntimeImage::Config(config) => Parsed::Unresolved(Unresolved::Tie(Tie {
                reference: parsed,
                running: Untied::Config(config),
            })),
            RuntimeImage::Unknown => Parsed::Unresolved(Unresolved::Tag(parsed)),
        }
    }
}

/// The distinct images a set of pods runs, with who runs them: a snapshot of [`PodIndex`],
/// the one place pods are folded into images (the operator, the PolicyReports and `scan`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Images with a known digest.
    pub images: BTreeMap<ImageId, Arc<Usage>>,
    /// Images with no manifest digest of their repository yet (a tag not pulled yet, a bare
    /// config digest, a digest under another name): tied through the registry, or wait.
    pub unresolved: BTreeMap<Unresolved, Arc<Usage>>,
    /// References that do not parse, with why (reported, never verified).
    pub invalid: BTreeMap<String, String>,
}

impl Inventory {
    /// The inventory of these pods (through a [`PodIndex`] of them).
    pub fn from_pods<'a, P: PodView + 'a>(
        pods: impl IntoIterator<Item = &'a P>,
        filter: &NamespaceFilter,
    ) -> Self {
        PodIndex::of(pods, filter).inventory()
    }

    /// Folds resolved tags (and tied running images) into the images they are; `lookup` says
    /// what each unresolved entry is, when known.
    pub fn resolve_with(&mut self, mut lookup: impl FnMut(&Unresolved) -> Option<ImageId>) {
        let known: Vec<(Unresolved, ImageId)> = self
            .unresolved
            .keys()
            .filter_map(|u| lookup(u).map(|id| (u.clone(), id)))
            .collect();
        for (u, id) in known {
            self.resolve(&u, id);
        }
    }

    /// Folds a resolved tag (or a tied running image) into the image it is.
    pub fn resolve(&mut self, reference: &Unresolved, id: ImageId) {
        if let Some(usage) = self.unresolved.remove(reference) {
            match self.images.get_mut(&id) {
                Some(known) => Arc::make_mut(known).merge(&usage),
                None => {
                    self.images.insert(id, usage);
                }
            }
        }
    }

    /// Images ordered most-used first (the order the max-images cap admits them in).
    pub fn by_usage(&self) -> Vec<ImageId> {
        let mut ids: Vec<_> = self.images.iter().collect();
        ids.sort_by(|a, b| {
            b.1.pods
                .len()
                .cmp(&a.1.pods.len())
                .then_with(|| a.0.cmp(b.0))
        });
        ids.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// The fold over every pod from scratch, without an index: the oracle the index's tests
    /// compare against.
    #[cfg(test)]
    pub(crate) fn fold<'a, P: PodView + 'a>(
        pods: impl IntoIterator<Item = &'a P>,
        filter: &NamespaceFilter,
    ) -> Self {
        let mut images: BTreeMap<ImageId, Usage> = BTreeMap::new();
        let mut unresolved: BTreeMap<Unresolved, Usage> = BTreeMap::new();
        let mut invalid = BTreeMap::new();
        for pod in pods {
            let namespace = pod.namespace().unwrap_or("default");
            if !filter.admits(namespace) || is_finished(pod) {
                continue;
            }
            let name = pod.name().unwrap_or("");
            pod.for_each_container(&mut |_, _, image, image_id| {
                let Some(image) = image.filter(|i| !i.is_empty()) else {
                    return;
                };
                let usage = match Parsed::of(image, image_id) {
                    Parsed::Image(id) => images.entry(id).or_default(),
                    Parsed::Unresolved(u) => unresolved.entry(u).or_default(),
                    Parsed::Invalid(why) => {
                        invalid.insert(image.to_string(), why);
                        return;
                    }
                };
                usage.references.insert(image.to_string());
                usage.pods.insert(Arc::from(format!("{namespace}/{name}")));
                usage.namespaces.insert(namespace.to_string());
            });
        }
        Inventory {
            images: images.into_iter().map(|(k, u)| (k, Arc::new(u))).collect(),
            unresolved: unresolved
                .into_iter()
                .map(|(k, u)| (k, Arc::new(u)))
                .collect(),
            invalid,
        }
    }
}

/// A pod that ran to completion runs no image any more.
fn is_finished<P: PodView + ?Sized>(pod: &P) -> bool {
    matches!(pod.phase(), Some("Succeeded") | Some("Failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const E: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn pod(ns: &str, name: &str, spec: serde_json::Value, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn every_container_kind_and_dedup() {
        let pods = vec![
            pod(
                "a",
                "p1",
                json!({"containers": [{"name": "c", "image": "nginx:1.27"}],
                       "initContainers": [{"name": "i", "image": format!("busybox@{E}")}],
                       "ephemeralContainers": [{"name": "dbg", "image": "alpine"}]}),
                json!({"phase": "Running",
                       "containerStatuses": [{"name": "c", "image": "", "imageID": format!("docker.io/library/nginx@{D}"), "ready": true, "restartCount": 0}]}),
            ),
            pod(
                "b",
                "p2",
                json!({"containers": [{"name": "c", "image": format!("docker.io/library/nginx@{D}")}]}),
                json!({"phase": "Pending"}),
            ),
            pod(
                "c",
                "done",
                json!({"containers": [{"name": "c", "image": "old:1"}]}),
                json!({"phase": "Succeeded"}),
            ),
            pod(
                "d",
                "bad",
                json!({"containers": [{"name": "c", "image": "UPPER:case"}]}),
                json!({}),
            ),
        ];
        let inv = Inventory::from_pods(&pods, &NamespaceFilter::default());
        assert_eq!(inv.images.len(), 2, "{:?}", inv.images.keys());
        let nginx = ImageRef::parse(&format!("nginx@{D}"))
            .unwrap()
            .id()
            .unwrap();
        let u = &inv.images[&nginx];
        assert_eq!(u.pods.len(), 2);
        assert_eq!(
            u.references.len(),
            2,
            "tag and digest refs of one digest are one image"
        );
        assert_eq!(inv.by_usage()[0], nginx);
        assert_eq!(
            inv.unresolved.len(),
            1,
            "the ephemeral alpine has no digest yet"
        );
        assert!(inv.invalid.contains_key("UPPER:case"));
        assert!(!inv.images.keys().any(|i| i.repository.contains("old")));
    }

    /// What each runtime's `imageID` makes of a pod's image: only a manifest digest named
    /// under the pod's own repository (or a digest-pinned spec) is an identity; a bare config
    /// digest and a digest under another name wait for a tie through the tag.
    #[test]
    fn runtime_image_ids() {
        let running = |image: &str, image_id: &str| {
            let pods = vec![pod(
                "a",
                "p",
                json!({"containers": [{"name": "c", "image": image}]}),
                json!({"phase": "Running", "containerStatuses": [{"name": "c", "image": image,
                       "imageID": image_id, "ready": true, "restartCount": 0}]}),
            )];
            Inventory::from_pods(&pods, &NamespaceFilter::default())
        };
        let nginx = |d: &str| ImageId {
            registry: "docker.io".into(),
            repository: "library/nginx".into(),
            digest: d.into(),
        };
        // containerd / CRI-O: a manifest digest under the pod's repository.
        for id in [
            format!("docker.io/library/nginx@{D}"),
            format!("docker-pullable://nginx@{D}"),
        ] {
            let inv = running("nginx:1.27", &id);
            assert!(inv.images.contains_key(&nginx(D)), "{id}: {inv:?}");
        }
        // docker load / k3d: a bare config digest is never an identity.
        for id in [E.to_string(), format!("docker://{E}")] {
            let inv = running("nginx:1.27", &id);
            assert!(inv.images.is_empty(), "{inv:?}");
            let Some(Unresolved::Tie(Tie {
                reference,
                running: Untied::Config(c),
            })) = inv.unresolved.keys().next()
            else {
                panic!("{inv:?}")
            };
            assert!(c.is_config_of(E));
            assert_eq!(reference.tag.as_deref(), Some("1.27"));
        }
        // kind load: a digest under a name no registry has.
        let inv = running(
            "nginx:1.27",
            &format!("docker.io/library/import-2024-05-01@{D}"),
        );
        assert!(inv.images.is_empty(), "{inv:?}");
        assert!(matches!(
            inv.unresolved.keys().next(),
            Some(Unresolved::Tie(Tie { running: Untied::Foreign(d), .. })) if d == D
        ));
        // A digest-pinned spec is what ran, whatever the runtime calls it.
        let inv = running(&format!("nginx@{D}"), E);
        assert!(inv.images.contains_key(&nginx(D)), "{inv:?}");
        let inv = running(
            &format!("nginx@{D}"),
            &format!("docker.io/library/import-x@{E}"),
        );
        assert!(inv.images.contains_key(&nginx(D)), "{inv:?}");
        // Not pulled yet: the tag.
        let inv = running("nginx:1.27", "");
        assert!(matches!(
            inv.unresolved.keys().next(),
            Some(Unresolved::Tag(_))
        ));
    }

    #[test]
    fn namespace_filter() {
        let pods = vec![
            pod(
                "kube-system",
                "p",
                json!({"containers": [{"name": "c", "image": format!("x@{D}")}]}),
                json!({}),
            ),
            pod(
                "app",
                "p",
                json!({"containers": [{"name": "c", "image": format!("y@{D}")}]}),
                json!({}),
            ),
        ];
        let f = NamespaceFilter {
            include: vec![],
            exclude: vec!["kube-system".into()],
        };
        let inv = Inventory::from_pods(&pods, &f);
        assert_eq!(inv.images.len(), 1);
        assert_eq!(inv.images.keys().next().unwrap().repository, "library/y");
    }
}
