//! imageposture: observes the signing posture of every image a cluster runs.
//!
//! The crate is laid out by role; each folder answers one "where is X":
//!
//! | Module | Role | Imports |
//! |---|---|---|
//! | [`core`] | image identity and reference parsing, the posture vocabulary, runtime ties, text and lock helpers, panic isolation; no Kubernetes types, no I/O | nothing above it |
//! | [`verify`] | the verifier: registry I/O, signature discovery and classification, trust roots; knows nothing of Kubernetes | [`core`] |
//! | [`model`] | the resource model: the ImagePosture and SignerBaseline types, field managers and labels, the status <-> verdict mapping, resource naming, PolicyReport types | [`core`] |
//! | [`cache`] | the verdict cache in front of the verifier, backed by the ImagePosture status (used by the commands and the operator alike) | [`core`], [`verify`], [`model`], [`metrics`] |
//! | [`operator`] | `imageposture run`: wiring, the pod inventory and its loop, the verification controller, writes and ownership, leadership, PolicyReports, the baseline loop, CRD install, the HTTP server | everything below |
//! | [`commands`] | `observe`, `scan`, `summary`, `crd`: what a person runs, and their output | everything below (and [`operator::inventory`]'s aggregation, for `scan`) |
//!
//! Beside them: [`cli`] (flags), [`error`] (the operator's error type, with a metric label per
//! variant), [`metrics`] (the Prometheus registry, shared by the cache and the operator).
//!
//! Dependencies point one way: `commands`, `operator` -> `cache` -> `model`, `verify` ->
//! `core`. Nothing in `core`, `verify` or `model` imports `cache`, `operator` or `commands`.
//! Where to start reading: the reconcile loop is [`operator::controller`], the inventory
//! [`operator::inventory`], the verifier [`verify::Verifier`], the CRD types [`model::crd`].
//! `docs/architecture.md` draws the data flow.
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
