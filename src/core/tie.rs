//! Runtime ties: a running image the container runtime names without a manifest digest of
//! the pod's own repository, until the registry ties it (or cannot). Plain data, shared by the
//! inventory that finds them and the verifier that ties them (`verify::lineage`).

use crate::core::image::{ConfigDigest, ImageRef};

/// A running image not yet tied to a manifest digest in the pod's own repository. Only the
/// registry can tie it (the verdict cache, `Observer::resolve_running`); until then (and when it
/// cannot) no identity, and so no posture, is attributed to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unresolved {
    /// Not pulled yet (no `imageID`): the tag's current digest is what the kubelet pulls.
    Tag(ImageRef),
    /// Runs an image the runtime names without a manifest digest of this repository.
    Tie(Tie),
}

/// A running image known only by what the runtime reports, to be tied through the pod's tag:
/// the tag must lead (itself, or through the index it points at) to the running manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tie {
    /// The pod's spec reference (a tag; a digest-pinned spec never needs a tie).
    pub reference: ImageRef,
    pub running: Untied,
}

/// What the runtime reports that is not (yet) a manifest digest of the pod's repository.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Untied {
    /// A bare config digest (`docker load`, `k3d image import`, some CRI-O releases).
    Config(ConfigDigest),
    /// A manifest digest under a name that is not the pod's repository (`kind load`'s
    /// `import-<date>@sha256:…`): never looked up under that name.
    Foreign(String),
}

impl Unresolved {
    /// The pod's reference (what the tie goes through).
    pub fn reference(&self) -> &ImageRef {
        match self {
            Unresolved::Tag(r) => r,
            Unresolved::Tie(t) => &t.reference,
        }
    }
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unresolved::Tag(r) => write!(f, "{r}"),
            Unresolved::Tie(Tie {
                reference,
                running: Untied::Config(c),
            }) => write!(f, "{reference} (running config {c})"),
            Unresolved::Tie(Tie {
                reference,
                running: Untied::Foreign(d),
            }) => write!(f, "{reference} (running {d} under another name)"),
        }
    }
}
