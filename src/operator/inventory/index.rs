//! The inventory kept up to date by pod events: each event updates the image index by
//! difference (`apply` / `delete`, and `reset` for a re-list), as kubert's
//! `IndexNamespacedResource` feeds linkerd2's policy-controller index, so a pod change costs
//! O(that pod) and says at once which images it changed (the decision: which resources need a
//! write). [`PodIndex::inventory`] is the same [`Inventory`] that [`Inventory::from_pods`]
//! computes from scratch (the seeded random test below compares both after random events).

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::pod::intern;
use super::{Inventory, NamespaceFilter, Parsed, PodView, Unresolved, Usage};
use crate::core::image::ImageId;

/// One image's users, counted (a pod may run one image in several containers), with the
/// [`Usage`] materialized once per change: a pass over an unchanged index copies nothing.
#[derive(Clone, Debug, Default)]
struct Counted {
    references: BTreeMap<Arc<str>, u32>,
    pods: BTreeMap<Arc<str>, u32>,
    namespaces: BTreeMap<Arc<str>, u32>,
    usage: OnceCell<Arc<Usage>>,
}

fn up(map: &mut BTreeMap<Arc<str>, u32>, key: &Arc<str>) {
    *map.entry(key.clone()).or_default() += 1;
}

fn down(map: &mut BTreeMap<Arc<str>, u32>, key: &Arc<str>) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Counted {
    fn add(&mut self, reference: &Arc<str>, namespace: &Arc<str>, pod: &Arc<str>) {
        up(&mut self.references, reference);
        up(&mut self.pods, pod);
        up(&mut self.namespaces, namespace);
        self.usage = OnceCell::new();
    }
    fn remove(&mut self, reference: &Arc<str>, namespace: &Arc<str>, pod: &Arc<str>) {
        down(&mut self.references, reference);
        down(&mut self.pods, pod);
        down(&mut self.namespaces, namespace);
        self.usage = OnceCell::new();
    }
    fn usage(&self) -> Arc<Usage> {
        self.usage
            .get_or_init(|| {
                Arc::new(Usage {
                    references: self.references.keys().map(|s| s.to_string()).collect(),
                    pods: self.pods.keys().cloned().collect(),
                    namespaces: self.namespaces.keys().map(|s| s.to_string()).collect(),
                })
            })
            .clone()
    }
}

/// A pod's controller owner (the pod itself when it has none), as PolicyReports name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub api_version: Arc<str>,
    pub kind: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
}

impl OwnerKey {
    pub fn of<P: PodView + ?Sized>(pod: &P) -> OwnerKey {
        match pod.controller() {
            Some(o) => OwnerKey {
                api_version: intern(o.api_version),
                kind: intern(o.kind),
                name: intern(o.name),
                uid: intern(o.uid),
            },
            None => OwnerKey {
                api_version: intern("v1"),
                kind: intern("Pod"),
                name: Arc::from(pod.name().unwrap_or_default()),
                uid: Arc::from(pod.uid().unwrap_or_default()),
            },
        }
    }
}

type UseKey = (Arc<str>, Option<Arc<str>>);

/// What one pod contributes: its namespace, owner, and (reference, imageID) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Contribution {
    namespace: Arc<str>,
    /// Only when the index tracks owners (for the PolicyReports).
    owner: Option<OwnerKey>,
    uses: Box<[UseKey]>,
}

/// Which images one event changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub images: BTreeSet<ImageId>,
    pub unresolved: BTreeSet<Unresolved>,
    /// An invalid reference appeared or went away.
    pub invalid: bool,
    /// Who runs what moved without moving an image's usage (a second pod of one owner):
    /// only the PolicyReports read it.
    pub owners: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.unresolved.is_empty() && !self.invalid && !self.owners
    }
}

/// What a pod's image is, as the index knows it (for the PolicyReports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Image(&'a ImageId),
    Unresolved(&'a Unresolved),
}

#[derive(Default)]
pub struct PodIndex {
    filter: NamespaceFilter,
    /// Each indexed pod by `namespace/name` (the key the images' pod sets share).
    pods: HashMap<Arc<str>, Contribution>,
    /// Each distinct (reference, imageID) pair parsed once, with how many uses hold it.
    parsed: HashMap<UseKey, (Parsed, u32)>,
    images: BTreeMap<ImageId, Counted>,
    unresolved: BTreeMap<Unresolved, Counted>,
    invalid: BTreeMap<String, (String, u32)>,
    /// (namespace, owner, use) → how many containers: what the PolicyReports list (kept only
    /// by an index made [`PodIndex::with_owners`]: ~200 bytes per pod otherwise spent).
    owners: BTreeMap<(Arc<str>, OwnerKey, UseKey), u32>,
    track_owners: bool,
}

impl PodIndex {
    pub fn new(filter: NamespaceFilter) -> Self {
        PodIndex {
            filter,
            ..PodIndex::default()
        }
    }

    /// An index that also keeps who (namespace, controller owner) runs each image.
    pub fn with_owners(filter: NamespaceFilter) -> Self {
        PodIndex {
            track_owners: true,
            ..PodIndex::new(filter)
        }
    }

    /// The index of exactly these pods (without owners).
    pub fn of<'a, P: PodView + 'a>(
        pods: impl IntoIterator<Item = &'a P>,
        filter: &NamespaceFilter,
    ) -> Self {
        let mut index = PodIndex::new(filter.clone());
        index.extend(pods);
        index
    }

    fn extend<'a, P: PodView + 'a>(&mut self, pods: impl IntoIterator<Item = &'a P>) {
        for pod in pods {
            self.apply(pod);
        }
    }

    /// An empty index of the same kind (filter, owners or not).
    pub fn fresh(&self) -> Self {
        PodIndex {
            track_owners: self.track_owners,
            ..PodIndex::new(self.filter.clone())
        }
    }

    /// Pods indexed (those admitted and running an image).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Distinct images with a known digest.
    pub fn images(&self) -> usize {
        self.images.len()
    }

    fn contribution<P: PodView + ?Sized>(&self, pod: &P) -> Option<Contribution> {
        let namespace = pod.namespace().unwrap_or("default");
        if !self.filter.admits(namespace) || super::is_finished(pod) {
            return None;
        }
        let mut uses = Vec::new();
        pod.for_each_container(&mut |_, _, image, image_id| {
            if let Some(image) = image.filter(|i| !i.is_empty()) {
                uses.push((intern(image), image_id.map(intern)));
            }
        });
        if uses.is_empty() {
            return None;
        }
        Some(Contribution {
            namespace: intern(namespace),
            owner: self.track_owners.then(|| OwnerKey::of(pod)),
            uses: uses.into_boxed_slice(),
        })
    }

    /// A pod added or changed: its old contribution out, its new one in.
    pub fn apply<P: PodView + ?Sized>(&mut self, pod: &P) -> Changes {
        let key = key_of(pod);
        let new = self.contribution(pod);
        if self.pods.get(&key) == new.as_ref() {
            return Changes::default();
        }
        let mut changes = Changes::default();
        if let Some(old) = self.pods.remove(&key) {
            self.retract(&key, &old, &mut changes);
        }
        if let Some(new) = new {
            self.add(&key, &new, &mut changes);
            self.pods.insert(key, new);
        }
        changes
    }

    /// A pod deleted.
    pub fn delete<P: PodView + ?Sized>(&mut self, pod: &P) -> Changes {
        let mut changes = Changes::default();
        let key = key_of(pod);
        if let Some(old) = self.pods.remove(&key) {
            self.retract(&key, &old, &mut changes);
        }
        changes
    }

    /// A re-list: the index of exactly these pods.
    pub fn reset<'a, P: PodView + 'a>(&mut self, pods: impl IntoIterator<Item = &'a P>) {
        *self = self.fresh();
        self.extend(pods);
    }

    fn add(&mut self, pod: &Arc<str>, c: &Contribution, changes: &mut Changes) {
        for key in &c.uses {
            let (reference, image_id) = key;
            let entry = self
                .parsed
                .entry(key.clone())
                .or_insert_with(|| (Parsed::of(reference, image_id.as_deref()), 0));
            entry.1 += 1;
            match &entry.0 {
                Parsed::Image(id) => {
                    self.images
                        .entry(id.clone())
                        .or_default()
                        .add(reference, &c.namespace, pod);
                    changes.images.insert(id.clone());
                }
                Parsed::Unresolved(u) => {
                    self.unresolved
                        .entry(u.clone())
                        .or_default()
                        .add(reference, &c.namespace, pod);
                    changes.unresolved.insert(u.clone());
                }
                Parsed::Invalid(why) => {
                    self.invalid
                        .entry(reference.to_string())
                        .or_insert_with(|| (why.clone(), 0))
                        .1 += 1;
                    changes.invalid = true;
                }
            }
            if let Some(owner) = &c.owner {
                *self
                    .owners
                    .entry((c.namespace.clone(), owner.clone(), key.clone()))
                    .or_default() += 1;
                changes.owners = true;
            }
        }
    }

    fn retract(&mut self, pod: &Arc<str>, c: &Contribution, changes: &mut Changes) {
        for key in &c.uses {
            let reference = &key.0;
            if let Some(owner) = &c.owner {
                let owned = (c.namespace.clone(), owner.clone(), key.clone());
                if let Some(n) = self.owners.get_mut(&owned) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.owners.remove(&owned);
                    }
                }
                changes.owners = true;
            }
            let Some(entry) = self.parsed.get_mut(key) else {
                continue;
            };
            entry.1 = entry.1.saturating_sub(1);
            let last = entry.1 == 0;
            match &entry.0 {
                Parsed::Image(id) => {
                    if let Some(counted) = self.images.get_mut(id) {
                        counted.remove(reference, &c.namespace, pod);
                        if counted.pods.is_empty() {
                            self.images.remove(id);
                        }
                    }
                    changes.images.insert(id.clone());
                }
                Parsed::Unresolved(u) => {
                    if let Some(counted) = self.unresolved.get_mut(u) {
                        counted.remove(reference, &c.namespace, pod);
                        if counted.pods.is_empty() {
                            self.unresolved.remove(u);
                        }
                    }
                    changes.unresolved.insert(u.clone());
                }
                Parsed::Invalid(_) => {
                    if let Some(n) = self.invalid.get_mut(&**reference) {
                        n.1 = n.1.saturating_sub(1);
                        if n.1 == 0 {
                            self.invalid.remove(&**reference);
                        }
                    }
                    changes.invalid = true;
                }
            }
            if last {
                self.parsed.remove(key);
            }
        }
    }

    /// One image's usage now.
    pub fn usage(&self, id: &ImageId) -> Option<Arc<Usage>> {
        self.images.get(id).map(Counted::usage)
    }

    /// The inventory of the indexed pods: what a fold over every pod computes from them. An
    /// image whose users did not change since the last call costs a clone of its identity and
    /// of a shared pointer, not a walk over its pods.
    pub fn inventory(&self) -> Inventory {
        Inventory {
            images: self
                .images
                .iter()
                .map(|(k, c)| (k.clone(), c.usage()))
                .collect(),
            unresolved: self
                .unresolved
                .iter()
                .map(|(k, c)| (k.clone(), c.usage()))
                .collect(),
            invalid: self
                .invalid
                .iter()
                .map(|(k, (why, _))| (k.clone(), why.clone()))
                .collect(),
        }
    }

    /// Each (namespace, owner, image) the admitted pods run (an owner whose references name
    /// one image twice is listed twice); invalid references are not listed (no image to
    /// report). Empty unless the index was made [`PodIndex::with_owners`].
    pub fn owners(&self) -> impl Iterator<Item = (&str, &OwnerKey, Target<'_>)> + '_ {
        self.owners.keys().filter_map(|(namespace, owner, key)| {
            let target = match self.parsed.get(key).map(|(p, _)| p)? {
                Parsed::Image(id) => Target::Image(id),
                Parsed::Unresolved(u) => Target::Unresolved(u),
                Parsed::Invalid(_) => return None,
            };
            Some((&**namespace, owner, target))
        })
    }
}

fn key_of<P: PodView + ?Sized>(pod: &P) -> Arc<str> {
    Arc::from(format!(
        "{}/{}",
        pod.namespace().unwrap_or("default"),
        pod.name().unwrap_or("")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::inventory::pod::{ContainerKind, LeanContainer, LeanPod};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// xorshift64*: a seeded, dependency-free RNG.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    const D: [&str; 3] = [
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "sha256:2222222222222222222222222222222222222222222222222222222222222222",
    ];

    fn random_pod(rng: &mut Rng, name: usize) -> LeanPod {
        // A pod's namespace is part of its identity: fixed per name.
        let ns = ["a", "b", "kube-system"][name % 3];
        let phase = ["Running", "Pending", "Succeeded", "Failed"][rng.below(4) as usize];
        let mut containers = Vec::new();
        for c in 0..1 + rng.below(3) {
            let repo = ["nginx", "envoy", "redis"][rng.below(3) as usize];
            let d = D[rng.below(3) as usize];
            let (image, image_id) = match rng.below(7) {
                0 => (format!("{repo}:1"), None),
                1 => (
                    format!("{repo}:1"),
                    Some(format!("docker.io/library/{repo}@{d}")),
                ),
                2 => (format!("{repo}@{d}"), Some(String::new())),
                3 => (format!("{repo}:1"), Some(d.to_string())),
                4 => ("UPPER:case".to_string(), None),
                5 => (String::new(), None),
                _ => (
                    format!("{repo}:2"),
                    Some(format!("docker.io/library/{repo}@{d}")),
                ),
            };
            containers.push(LeanContainer {
                kind: if c == 0 {
                    ContainerKind::Container
                } else {
                    ContainerKind::Init
                },
                name: Arc::from(format!("c{c}")),
                image: Some(Arc::from(image)),
                image_id: image_id.map(Arc::from),
            });
        }
        LeanPod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("p{name}")),
                ..ObjectMeta::default()
            },
            phase: Some(Arc::from(phase)),
            containers: containers.into_boxed_slice(),
            ..LeanPod::default()
        }
    }

    /// After random add / change / delete / re-list sequences, the index agrees with the
    /// inventory recomputed from scratch, and each event's changes name every image whose
    /// usage moved.
    #[test]
    fn index_agrees_with_the_full_resync() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let filter = NamespaceFilter {
                include: vec![],
                exclude: if seed % 2 == 0 {
                    vec!["kube-system".into()]
                } else {
                    vec![]
                },
            };
            let mut index = PodIndex::with_owners(filter.clone());
            let mut live: BTreeMap<usize, LeanPod> = BTreeMap::new();
            for step in 0..300 {
                let before = index.inventory();
                let changes = match rng.below(10) {
                    0..=5 => {
                        let name = rng.below(40) as usize;
                        let pod = random_pod(&mut rng, name);
                        let c = index.apply(&pod);
                        live.insert(name, pod);
                        c
                    }
                    6..=8 => {
                        let name = rng.below(40) as usize;
                        match live.remove(&name) {
                            Some(pod) => index.delete(&pod),
                            None => Changes::default(),
                        }
                    }
                    _ => {
                        index.reset(live.values());
                        Changes::default()
                    }
                };
                let full = Inventory::fold(live.values(), &filter);
                let now = index.inventory();
                assert_eq!(now, full, "seed {seed} step {step}");
                // Every image whose usage moved is named by the event.
                for (id, usage) in &now.images {
                    if before.images.get(id) != Some(usage) {
                        assert!(changes.images.contains(id), "seed {seed} step {step}: {id}");
                    }
                }
                for id in before.images.keys() {
                    if !now.images.contains_key(id) {
                        assert!(changes.images.contains(id), "seed {seed} step {step}: {id}");
                    }
                }
                // Who runs what, for the PolicyReports: the same as per pod from scratch.
                let listed: BTreeSet<(String, String, String)> = index
                    .owners()
                    .map(|(ns, owner, target)| {
                        let what = match target {
                            Target::Image(id) => id.key(),
                            Target::Unresolved(u) => u.to_string(),
                        };
                        (ns.to_string(), owner.name.to_string(), what)
                    })
                    .collect();
                let mut expected = BTreeSet::new();
                for pod in live.values() {
                    let one = Inventory::fold(std::iter::once(pod), &filter);
                    let owner = OwnerKey::of(pod).name.to_string();
                    let ns = pod.namespace().unwrap_or("default").to_string();
                    for what in one
                        .images
                        .keys()
                        .map(|id| id.key())
                        .chain(one.unresolved.keys().map(|u| u.to_string()))
                    {
                        expected.insert((ns.clone(), owner.clone(), what));
                    }
                }
                assert_eq!(listed, expected, "seed {seed} step {step}");
            }
        }
    }

    #[test]
    fn an_unchanged_pod_changes_nothing() {
        let mut rng = Rng(7);
        let pod = random_pod(&mut rng, 1);
        let mut index = PodIndex::new(NamespaceFilter::default());
        index.apply(&pod);
        assert!(index.apply(&pod).is_empty());
    }
}
