//! Which hardware runs the tensors.

use burn::tensor::Device;

/// The pure-Rust CPU backend by default; with the `cuda` feature, GPU 0 when `BERTLU_DEVICE=cuda`.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if std::env::var("BERTLU_DEVICE").as_deref() == Ok("cuda") {
        return Device::cuda(0);
    }
    Device::flex()
}

/// A name for the backend [`default_device`] picks (for run records).
pub fn backend_name() -> String {
    #[cfg(feature = "cuda")]
    if std::env::var("BERTLU_DEVICE").as_deref() == Ok("cuda") {
        return "cuda:0".into();
    }
    "flex (CPU)".into()
}
