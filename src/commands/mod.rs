//! The commands a person runs.

pub mod input;
pub mod observe;
pub mod output;
pub mod scan;
pub mod summary;
