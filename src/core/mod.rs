//! The bottom layer: plain data and helpers every other layer shares, with no Kubernetes types
//! and no I/O, importing nothing above it.
//!
//! - [`image`]: image references, their parsing and normalization, and identity
//!   (`registry/repository@digest`).
//! - [`posture`]: the vocabulary of a verdict (posture, reason, signature records).
//! - [`tie`]: a running image the container runtime names without a manifest digest of the
//!   pod's repository, until the registry ties it.
//! - [`isolate`]: a panic reached by registry data, caught per image.
//! - [`text`], [`lock`]: bounded escaping of outside text; poison-free locking.

pub mod image;
pub mod isolate;
pub mod lock;
pub mod posture;
pub mod text;
pub mod tie;
