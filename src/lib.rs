//! bertlu: pre-train a text encoder on raw text (masked language model, next-sentence
//! prediction) and fine-tune it into single-label, multi-label or sentence-pair classifiers.
//!
//! The modules are layers along the data's way; each imports only from the layers above it in
//! this list (checked by `tests/layers.rs`):
//!
//! 1. [`text`]: files → documents, labelled examples and word pieces;
//! 2. [`data`]: word pieces → task examples (masked LM, sentence pairs, classification) → batches;
//! 3. [`eval`]: predictions → scores and decision thresholds;
//! 4. [`config`]: every setting, its defaults and its TOML form;
//! 5. [`model`]: backbones, heads, losses and CPU kernels;
//! 6. [`store`]: model and output directories, weights, checkpoints, every file name;
//! 7. [`infer`]: saved classifiers (neural, linear, ensembles) → probabilities and decisions;
//! 8. [`train`]: the pre-training and fine-tuning loops;
//! 9. [`serve`]: a saved model behind HTTP, with dynamic batching;
//! 10. [`apps`]: whole pipelines (compare, bench, report, pseudo-labels) for the command line.

pub mod text;
pub mod data;
pub mod eval;
pub mod config;
pub mod model;
pub mod store;
pub mod infer;
pub mod train;
pub mod serve;
pub mod apps;
