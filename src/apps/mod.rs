//! Whole pipelines built from the layers below, one a file, each called by one subcommand (the
//! binary's `cli/` only parses flags, calls one of these and prints): what every training run
//! settles first (`setup`), `pretrain`, `finetune`, `linear`, `ensemble`, `average`, the pre-train →
//! fine-tune comparison (`compare`), speed measurements (`bench`), the server's load test (`serve_load`), run reports (`report`,
//! `plot`) and self-training labels (`pseudo_label`).

pub mod compare;
pub mod bench;
pub mod serve_load;
pub mod report;
pub mod plot;
pub mod pseudo_label;
pub mod setup;
pub mod pretrain;
pub mod finetune;
pub mod linear;
pub mod ensemble;
pub mod average;
pub mod import_hf;
pub mod export_hf;
