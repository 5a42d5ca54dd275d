//! imageposture: observes the signing posture of every image a cluster runs.
//!
//! Layers, bottom up: [`image`] (identity), [`posture`] (vocabulary), [`verify`] (registry I/O
//! and signature classification), [`observer`] (cache), then the operator pieces.

pub mod cli;
pub mod crd;
pub mod image;
pub mod inventory;
pub mod leader;
pub mod metrics;
pub mod observer;
pub mod output;
pub mod posture;
pub mod run;
pub mod scan;
pub mod server;
pub mod sweep;
pub mod verify;
