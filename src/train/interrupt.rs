//! Ctrl-C during training: the first one asks the running loop to write a checkpoint and stop
//! with [`Interrupted`] (exit code 130); a second one ends the process at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C: the training loops save a checkpoint and stop at the next step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes the first Ctrl-C ask the running loop to checkpoint and stop; a second one ends the
/// process at once.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to quit at once)");
    });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The error a loop returns after saving a checkpoint on Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted at step {step}; checkpoint saved in {}: run the same command with --resume to continue", dir.display())]
pub struct Interrupted {
    /// Steps done.
    pub step: usize,
    /// The checkpoint written.
    pub dir: PathBuf,
}

