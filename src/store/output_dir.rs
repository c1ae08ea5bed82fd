//! Output directories built under a hidden `.NAME.partial` name and renamed into place when the
//! run succeeds; an interrupted run's partial directory keeps its checkpoints for `--resume`.

use super::checkpoints::has_checkpoint;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// An output directory built under a hidden temporary name and renamed into place only when
/// the run succeeds; dropped without [`OutputDir::commit`], it is removed.
pub struct OutputDir {
    target: PathBuf,
    work: PathBuf,
    committed: bool,
    /// For a run made of parts: whether the work directory holds finished or interrupted
    /// parts, and is then kept when the run stops early.
    holds_parts: Option<fn(&Path) -> bool>,
}

impl OutputDir {
    /// Prepares `target`. An existing non-empty `target` is an error unless `overwrite`.
    pub fn create(target: &Path, overwrite: bool) -> Result<Self> {
        if target.exists() {
            let non_empty = fs::read_dir(target).map(|mut d| d.next().is_some()).unwrap_or(true);
            if non_empty && !overwrite {
                bail!("{}: output directory exists and is not empty (pass --overwrite to replace it)", target.display());
            }
        }
        let work = Self::work_dir(target);
        let parent = work.parent().expect("work dir has a parent");
        fs::create_dir_all(parent).with_context(|| format!("{}: cannot create directory", parent.display()))?;
        if work.exists() && has_checkpoint(&work) && !overwrite {
            bail!("{}: an interrupted run left checkpoints here; add --resume to continue it, or --overwrite to start again", work.display());
        }
        if work.exists() {
            fs::remove_dir_all(&work).with_context(|| format!("{}: cannot remove stale partial output", work.display()))?;
        }
        fs::create_dir(&work).with_context(|| format!("{}: cannot create output directory", work.display()))?;
        Ok(Self { target: target.to_path_buf(), work, committed: false, holds_parts: None })
    }

    /// Prepares `target` for a run made of parts that each train on their own (a comparison's
    /// pre-training and fine-tuning runs): as [`Self::create`], and the work directory is kept
    /// when the run stops early with parts done or interrupted (`holds_parts` tells), so that
    /// [`Self::resume_parts`] continues it; such a directory is not silently started again.
    pub fn create_parts(target: &Path, overwrite: bool, holds_parts: fn(&Path) -> bool) -> Result<Self> {
        let work = Self::work_dir(target);
        if work.exists() && holds_parts(&work) && !overwrite {
            bail!("{}: an interrupted run left finished or interrupted parts here; add --resume to continue it, or --overwrite to start again", work.display());
        }
        let mut out = Self::create(target, overwrite)?;
        out.holds_parts = Some(holds_parts);
        Ok(out)
    }

    /// Reopens the work directory of an interrupted run made of parts (see [`Self::create_parts`]).
    pub fn resume_parts(target: &Path, holds_parts: fn(&Path) -> bool) -> Result<Self> {
        let mut out = Self::reopen(target, |work| work.is_dir(), "no")?;
        out.holds_parts = Some(holds_parts);
        Ok(out)
    }

    /// The work directory of an interrupted run into `target`, when `resumable` says it is one;
    /// the error names what is `missing` from it otherwise.
    fn reopen(target: &Path, resumable: impl Fn(&Path) -> bool, missing: &str) -> Result<Self> {
        let work = Self::work_dir(target);
        if !resumable(&work) {
            if target.exists() {
                bail!("{}: this run finished; there is nothing to resume", target.display());
            }
            bail!("{}: no interrupted run to resume ({missing} {})", target.display(), work.display());
        }
        Ok(Self { target: target.to_path_buf(), work, committed: false, holds_parts: None })
    }

    /// The hidden `.NAME.partial` directory beside `target` where a run writes until it succeeds.
    pub fn work_dir(target: &Path) -> PathBuf {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        parent.join(format!(".{name}.partial"))
    }

    /// Reopens the hidden work directory of an interrupted run into `target`, to continue it.
    pub fn resume(target: &Path) -> Result<Self> {
        Self::reopen(target, has_checkpoint, "no checkpoint in")
    }

    /// Where files go while the run is under way.
    pub fn path(&self) -> &Path {
        &self.work
    }

    /// The final location.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the finished output into place, replacing an old one only now.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            let old = self.work.with_extension("old");
            let _ = fs::remove_dir_all(&old);
            fs::rename(&self.target, &old).with_context(|| format!("{}: cannot replace", self.target.display()))?;
            fs::rename(&self.work, &self.target).with_context(|| format!("{}: cannot move output into place", self.target.display()))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.work, &self.target).with_context(|| format!("{}: cannot move output into place", self.target.display()))?;
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        // A run that wrote a checkpoint, or finished or interrupted parts, keeps its work
        // directory for --resume.
        if !self.committed && !has_checkpoint(&self.work) && !self.holds_parts.is_some_and(|f| f(&self.work)) {
            let _ = fs::remove_dir_all(&self.work);
        }
    }
}
