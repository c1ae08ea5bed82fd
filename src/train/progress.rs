//! Progress on stderr: a bar on a terminal; elsewhere (logs, CI) a plain line every 30 s.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress over a known number of steps.
pub struct Progress {
    bar: ProgressBar,
    plain: bool,
    quiet: bool,
    label: String,
    len: u64,
    pos: u64,
    message: String,
    started: Instant,
    last_line: Instant,
}

const PLAIN_EVERY: Duration = Duration::from_secs(30);

impl Progress {
    /// Progress over `len` steps labelled `label`; nothing is shown when `quiet`.
    pub fn new(len: u64, label: &str, quiet: bool) -> Self {
        let bar = ProgressBar::new(len);
        let plain = !std::io::stderr().is_terminal();
        if quiet || plain {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {per_sec} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
        let now = Instant::now();
        Self { bar, plain, quiet, label: label.to_owned(), len, pos: 0, message: String::new(), started: now, last_line: now }
    }

    /// One step done.
    pub fn inc(&mut self) {
        self.pos += 1;
        self.bar.inc(1);
        if self.plain && !self.quiet && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            let rate = self.pos as f64 / secs.max(1e-9);
            let eta = (self.len.saturating_sub(self.pos)) as f64 / rate.max(1e-9);
            eprintln!("{} {}/{} {:.0}s elapsed, eta {:.0}s, {:.2} steps/s {}", self.label, self.pos, self.len, secs, eta, rate, self.message);
        }
    }

    /// Sets the trailing message (running loss and the like).
    pub fn set_message(&mut self, message: String) {
        self.bar.set_message(message.clone());
        self.message = message;
    }

    /// Removes the bar (as dropping it does, also when a loop stops early with an error).
    pub fn finish(self) {}
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
