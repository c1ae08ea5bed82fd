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

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
