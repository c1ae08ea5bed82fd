//! Token sequences turned into training examples, one file per objective.

pub mod classify;
pub mod mlm;
pub mod nsp;
pub mod pseudo_label;
pub mod toy;
