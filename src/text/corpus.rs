//! The raw pre-training corpus: one document a line, or documents separated by blank lines.

use super::reader::Lines;
use anyhow::{bail, Result};
use std::path::Path;

/// Reads the documents of a corpus file (plain or gzip).
///
/// If the file has blank lines, each blank-line-separated block is one document (its lines joined
/// by spaces, the google-bert layout); otherwise each line is a document.
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    let mut blocks: Vec<Vec<String>> = vec![Vec::new()];
    let mut saw_blank = false;
    for line in Lines::open(path)? {
        let line = line?;
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
    if docs.is_empty() {
        bail!("{}: corpus has no text (empty file?)", path.display());
    }
    Ok(docs)
}
