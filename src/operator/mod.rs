//! The operator (`imageposture run`): the loops that keep ImagePostures in step with the pods
//! and the registries, and everything they need to run in a cluster.
//!
//! - [`run`]: the process wiring (watches, loops, leadership); [`pod_feed`]: the pod index fed
//!   by the pod watch; [`signals`]: stopping on SIGTERM.
//! - [`inventory`]: pods -> the distinct images they run ([`inventory::pod`] the lean pods,
//!   [`inventory::index`] the index fed by pod events, [`inventory::sweep`] the inventory
//!   loop that writes ImagePostures, [`inventory::tags`] tags resolved in the background).
//! - [`controller`]: the verification controller, one reconcile per ImagePosture.
//! - [`apply`] and [`ownership`]: the server-side-apply writer, and who owns which field.
//! - [`leader`]: Lease-based leadership and the [`leader::Gate`] every write passes.
//! - [`waiting`]: images waiting for a free slot of their registry.
//! - [`policy_reports`]: the PolicyReports (who runs what, per namespace) and their writes.
//! - [`baseline`]: the SignerBaseline loop (drift).
//! - [`install`]: installing the CRDs; [`server`]: `/metrics`, `/healthz`, `/readyz`;
//!   [`pull_secrets`]: the pods' pull secrets as registry credentials.

pub mod apply;
pub mod baseline;
pub mod controller;
pub mod install;
pub mod inventory;
pub mod leader;
pub mod ownership;
pub mod pod_feed;
pub mod policy_reports;
pub mod pull_secrets;
pub mod run;
pub mod server;
pub mod signals;
pub mod waiting;
