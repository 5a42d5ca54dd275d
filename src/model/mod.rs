//! The resource model: what the operator writes and reads in the cluster, as types and pure
//! functions (no API calls).
//!
//! - [`crd`]: the ImagePosture custom resource (spec, status, usage, conditions, bounds).
//! - [`fields`]: the field managers (`imageposture-inventory`, `imageposture-verifier`), the
//!   status fields each owns, and the labels.
//! - [`status`]: the status <-> verdict mapping, and the [`status::Recorded`] verdict the cache
//!   reads back.
//! - [`counts`]: resources by posture.
//! - [`naming`]: the ImagePosture name of an image identity.
//! - [`baseline`]: the SignerBaseline custom resource, how an image is judged against it
//!   (drift) and how a baseline is learned.
//! - [`policy_report`]: `wgpolicyk8s.io` PolicyReport types and building them from verdicts.
//!
//! Imports [`crate::core`] only.

pub mod baseline;
pub mod counts;
pub mod crd;
pub mod fields;
pub mod naming;
pub mod policy_report;
pub mod status;
