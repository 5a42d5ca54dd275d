//! The bottom layer: no Kubernetes types, no I/O.

pub mod image;
pub mod isolate;
pub mod lock;
pub mod posture;
pub mod text;
pub mod tie;
