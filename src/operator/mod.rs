//! The operator.

pub mod apply;
pub mod baseline;
pub mod controller;
pub mod install;
pub mod inventory;
pub mod leader;
pub mod ownership;
pub mod policy_reports;
pub mod pull_secrets;
pub mod run;
pub mod server;
pub mod waiting;
