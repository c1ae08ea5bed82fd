//! Scores of predictions against gold labels (`metrics`) and the decision thresholds that turn
//! probabilities into labels (`thresholds`).

pub mod metrics;
pub mod thresholds;
