//! Scores of predictions against gold labels (`metrics`), the decision thresholds that turn
//! probabilities into labels (`thresholds`), and summaries of repeated timings (`stats`).

pub mod metrics;
pub mod stats;
pub mod thresholds;
