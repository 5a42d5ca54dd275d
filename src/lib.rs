//! imageposture: observes the signing posture of every image a cluster runs.
//!
//! Layers, bottom up: [`image`] (identity), [`posture`] (vocabulary), [`verify`] (registry I/O
//! and signature classification), [`observer`] (the cache in front of the verifier, backed by
//! the ImagePosture status), then the operator: [`inventory`] (pods -> resources) and
//! [`controller`] (one verification per resource), both writing through [`apply`].
//!
//! Everything here reads data that registries and pods control, so outside tests the crate
//! denies the constructs that can panic on such data: string slicing at byte indexes,
//! indexing, `unwrap`/`expect` and `panic!`. What still panics is caught per image
//! (see [`verify::Verifier::observe`]).

#![cfg_attr(
    not(test),
    deny(
        clippy::string_slice,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod cache;
pub mod cli;
pub mod commands;
pub mod core;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod model;
pub mod operator;
pub mod verify;
