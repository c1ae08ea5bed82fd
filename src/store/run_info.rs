//! `run.json`: what a training run was — the command, versions, seed, config, the input files
//! (size and hash), the machine's threads, and when each attempt started and ended — so a result
//! can be traced back and repeated.

use crate::store::atomic::write_atomic;
use crate::config::Config;
use crate::store::fingerprint::Fnv;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use super::layout::RUN_FILE;


/// An input file as the run read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    /// Its role (corpus, train, valid, init).
    pub role: String,
    /// Path as given.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// FNV-1a hash of the bytes (as stored: a `.gz` file's compressed bytes).
    pub fnv64: String,
}

impl InputFile {
    /// Reads and hashes a file.
    pub fn of(role: &str, path: &Path) -> Result<Self> {
        let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let (mut h, mut buf, mut bytes) = (Fnv::default(), vec![0u8; 1 << 16], 0u64);
        loop {
            let n = f.read(&mut buf).with_context(|| format!("{}: cannot read", path.display()))?;
            if n == 0 {
                break;
            }
            h.bytes(&buf[..n]);
            bytes += n as u64;
        }
        Ok(Self { role: role.to_owned(), path: path.display().to_string(), bytes, fnv64: h.hex() })
    }
}

/// One start of the run (the first, or a `--resume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The command line.
    pub command: Vec<String>,
    /// Unix time it started.
    pub started: u64,
    /// Unix time it ended, when it did.
    pub finished: Option<u64>,
    /// "running", "finished", or the error it stopped with.
    pub outcome: String,
    /// Peak resident memory of the process when it ended, in MiB (Linux).
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
}

/// Contents of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// pretrain or finetune.
    pub task: String,
    /// bertlu's version.
    pub bertlu_version: String,
    /// Burn's version (pinned).
    pub burn_version: String,
    /// Compute backend.
    pub backend: String,
    /// Threads the machine offers (results are bit-reproducible only at the same count).
    pub threads: usize,
    /// The seed of this task's section of the config.
    pub seed: u64,
    /// The whole config, as saved in config.toml.
    pub config: String,
    /// Input files.
    pub inputs: Vec<InputFile>,
    /// Every start of the run, the last one last.
    pub attempts: Vec<Attempt>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl RunInfo {
    /// Records the start of a run in `dir` (appending an attempt to an existing `run.json` when
    /// resuming) and writes it.
    pub fn start(dir: &Path, task: &str, cfg: &Config, seed: u64, inputs: Vec<InputFile>) -> Result<Self> {
        let attempt = Attempt { command: std::env::args().collect(), started: now(), finished: None, outcome: "running".into(), peak_rss_mib: None };
        let mut info = match std::fs::read_to_string(dir.join(RUN_FILE)).ok().and_then(|t| serde_json::from_str::<RunInfo>(&t).ok()) {
            Some(old) => old,
            None => RunInfo {
                task: task.to_owned(),
                bertlu_version: env!("CARGO_PKG_VERSION").to_owned(),
                burn_version: "0.22.1".to_owned(),
                backend: crate::model::device::backend_name(),
                threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                seed,
                config: cfg.to_toml(),
                inputs,
                attempts: Vec::new(),
            },
        };
        info.attempts.push(attempt);
        info.write(dir)?;
        Ok(info)
    }

    /// Records how the current attempt ended and writes the file.
    pub fn finish(&mut self, dir: &Path, outcome: &str) -> Result<()> {
        if let Some(a) = self.attempts.last_mut() {
            a.finished = Some(now());
            a.outcome = outcome.to_owned();
            a.peak_rss_mib = crate::model::device::peak_rss_mib();
        }
        self.write(dir)
    }

    fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(RUN_FILE), serde_json::to_string_pretty(self)?.as_bytes())
    }
}
