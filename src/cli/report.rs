//! `bertlu report`: curves and a summary of a training run.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Output directory of a pretrain or finetune run (report.svg and report.md are written into it).
    pub dir: PathBuf,
}

/// Runs `report`.
pub fn run(a: ReportArgs) -> Result<()> {
    let md = bertlu::apps::report::report(&a.dir)?;
    print!("{md}");
    Ok(())
}
