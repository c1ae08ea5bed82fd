//! The `bertlu` binary.

mod cli;

use clap::Parser;

/// mimalloc keeps freed tensor buffers for reuse; with the system allocator every large tensor
/// was a fresh mapping whose pages the kernel faulted in and zeroed again, step after step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 option enums).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Never hand freed pages back to the OS: a training step frees and reallocates the same
    // tensor sizes, and a purged page costs a fault and a kernel zeroing when reused (measured:
    // about 10 % of a reference MLM step).
    // SAFETY: called before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's first paragraph names the problem and the arguments (a missing one on the
            // lines under it); the rest is a usage hint.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let first = if first.is_empty() { "error: invalid arguments".to_string() } else { first.join(" ") };
            eprintln!("{first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = cli::run(args) {
        // One line: the context chain joined by ": ".
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        let interrupted = e.downcast_ref::<bertlu::train::interrupt::Interrupted>().is_some();
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}
