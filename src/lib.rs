//! imageposture: observes the signing posture of every image a cluster runs.
//!
//! Layers, bottom up: [`image`] (identity), [`posture`] (vocabulary), [`verify`] (registry I/O
//! and signature classification), [`observer`] (cache), then the operator pieces.

pub mod image;
pub mod posture;
pub mod verify;
pub mod crd;
pub mod cli;
pub mod output;
pub mod scan;
pub mod inventory;
pub mod observer;
pub mod sweep;
pub mod metrics;
pub mod server;
pub mod leader;
pub mod run;
