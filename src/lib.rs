//! bertlu: pre-train a text encoder on raw text (masked language model) and fine-tune it into
//! single- or multi-label classifiers. Data flows text → tokens → task examples → batches →
//! backbone → heads → losses/metrics → model directories.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod device;
pub mod inference;
pub mod linear;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod report;
pub mod run_info;
pub mod tasks;
pub mod thresholds;
pub mod text;
pub mod train;
