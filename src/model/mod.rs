//! The resource model.

pub mod crd;
pub mod policy_report;
