//! Progress bars on stderr (hidden when quiet or not a terminal).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `len` steps labelled `what`.
pub fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {per_sec} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}
