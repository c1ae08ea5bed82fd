//! The `bertlu` binary.

mod cli;

use clap::Parser;

/// mimalloc keeps freed tensor buffers for reuse; with the system allocator every large tensor
/// was a fresh mapping whose pages the kernel faulted in and zeroed again, step after step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's first line names the argument and the problem; the rest is a usage hint.
            let rendered = e.render().to_string();
            eprintln!("{} (see --help)", rendered.lines().next().unwrap_or("error: invalid arguments").trim_end());
            std::process::exit(2);
        }
    };
    if let Err(e) = cli::run(args) {
        // One line: the context chain joined by ": ".
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        let interrupted = e.downcast_ref::<bertlu::train::resume::Interrupted>().is_some();
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}
