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
        Ok(Self { target: target.to_path_buf(), work, committed: false })
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
        let work = Self::work_dir(target);
        if !has_checkpoint(&work) {
            if target.exists() {
                bail!("{}: this run finished; there is nothing to resume", target.display());
            }
            bail!("{}: no interrupted run to resume (no checkpoint in {})", target.display(), work.display());
        }
        Ok(Self { target: target.to_path_buf(), work, committed: false })
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
        // A run that wrote a checkpoint keeps its work directory for --resume.
        if !self.committed && !has_checkpoint(&self.work) {
            let _ = fs::remove_dir_all(&self.work);
        }
    }
}
