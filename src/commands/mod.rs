//! The commands a person runs besides the operator, none of which needs a cluster to write to.
//!
//! - [`observe`]: `imageposture observe IMAGE...`, the posture of images, printed.
//! - [`scan`]: `imageposture scan`, the ImagePostures the operator would write, from a pod list.
//! - [`summary`]: `imageposture summary`, the cluster's posture at a glance.
//! - `imageposture crd` prints [`crate::model::crd::crd_yaml`] (see `main.rs`).
//! - [`output`]: tables and JSON/YAML; [`input`]: bounded reading of input files.

pub mod input;
pub mod observe;
pub mod output;
pub mod scan;
pub mod summary;
