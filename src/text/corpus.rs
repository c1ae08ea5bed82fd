//! The raw pre-training corpus: one document a line, or documents separated by blank lines.

use super::reader::{BadLines, Lines, Skipped};
use anyhow::{bail, Result};
use std::path::Path;

/// Reads the documents of a corpus file (plain or gzip).
///
/// If the file has blank lines, each blank-line-separated block is one document (its lines joined
/// by spaces, the google-bert layout); otherwise each line is a document.
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    read_documents_with(path, BadLines::Fail)
}

/// [`read_documents`], skipping bad lines (with a warning) under [`BadLines::Skip`].
pub fn read_documents_with(path: &Path, policy: BadLines) -> Result<Vec<String>> {
    let mut blocks: Vec<Vec<String>> = vec![Vec::new()];
    let mut saw_blank = false;
    let mut skipped = Skipped::default();
    for line in Lines::open(path)? {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                skipped.take(e, policy)?;
                continue;
            }
        };
        let text = line.text.trim();
        if text.is_empty() {
            saw_blank = true;
            if !blocks.last().unwrap().is_empty() {
                blocks.push(Vec::new());
            }
        } else {
            blocks.last_mut().unwrap().push(text.to_owned());
        }
    }
    let docs: Vec<String> = if saw_blank {
        blocks.into_iter().filter(|b| !b.is_empty()).map(|b| b.join(" ")).collect()
    } else {
        blocks.pop().unwrap_or_default()
    };
    skipped.warn(&path.display().to_string());
    if docs.is_empty() {
        bail!("{}: corpus has no text (empty file?)", path.display());
    }
    Ok(docs)
}
