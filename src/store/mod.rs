//! What bertlu keeps on disk: every file name (`layout`), atomic writes (`atomic`), weights
//! (`weights`), model directories (`model_dir`), output directories that appear only when a run
//! succeeds (`output_dir`), training-state checkpoints (`checkpoints`), data fingerprints
//! (`fingerprint`) and the record of a run (`run_info`).

pub mod layout;
pub mod atomic;
pub mod weights;
pub mod fingerprint;
pub mod model_dir;
pub mod checkpoints;
pub mod output_dir;
pub mod run_info;
pub mod hf;
