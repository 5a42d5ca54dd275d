//! The resource model.

pub mod baseline;
pub mod counts;
pub mod crd;
pub mod fields;
pub mod naming;
pub mod policy_report;
pub mod status;
