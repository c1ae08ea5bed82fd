//! The raw pre-training corpus: one document a line, or documents separated by blank lines.

use super::reader::{BadLines, Lines, Skipped};
use anyhow::{bail, Result};
use std::path::Path;

/// Reads the documents of a corpus file (plain or gzip).
///
/// If the file has blank lines, each blank-line-separated block is one document (the google-bert
/// layout, one sentence a line; the lines are joined by `\n`, which tokenizing reads as a space and
/// sentence splitting as a sentence end); otherwise each line is a document.
pub fn read_documents(path: &Path) -> Result<Vec<String>> {
    read_documents_with(path, BadLines::Fail)
}

/// [`read_documents`], skipping bad lines (with a warning) under [`BadLines::Skip`].
pub fn read_documents_with(path: &Path, policy: BadLines) -> Result<Vec<String>> {
    CorpusFile::open(path, policy, None)?.documents()?.collect()
}

/// Documents a pre-training run reads, once per pass: from memory, or streamed from a file so a
/// corpus larger than memory can be used.
pub trait DocumentSource: Sync {
    /// A fresh pass over the documents, in file order.
    fn documents(&self) -> Result<Box<dyn Iterator<Item = Result<String>> + Send + '_>>;
}

impl DocumentSource for [String] {
    fn documents(&self) -> Result<Box<dyn Iterator<Item = Result<String>> + Send + '_>> {
        Ok(Box::new(self.iter().map(|d| Ok(d.clone()))))
    }
}

impl DocumentSource for Vec<String> {
    fn documents(&self) -> Result<Box<dyn Iterator<Item = Result<String>> + Send + '_>> {
        self.as_slice().documents()
    }
}

/// A corpus file read afresh on every pass, a line at a time (memory does not grow with it).
#[derive(Debug, Clone)]
pub struct CorpusFile {
    path: std::path::PathBuf,
    policy: BadLines,
    limit: Option<usize>,
    blocks: bool,
    /// Skipped lines are reported on the first pass only (every pass meets the same ones).
    warned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CorpusFile {
    /// Opens `path`: scans it once for a blank line to choose the layout (blank-line-separated
    /// blocks or one document a line, as [`read_documents`]), and checks it has text.
    pub fn open(path: &Path, policy: BadLines, limit: Option<usize>) -> Result<Self> {
        let mut blocks = false;
        let mut any = false;
        for line in Lines::open(path)? {
            match line {
                Ok(l) if l.text.trim().is_empty() => blocks = true,
                Ok(_) => any = true,
                Err(e) => Skipped::default().take(e, policy)?,
            }
            if blocks && any {
                break;
            }
        }
        if !any {
            bail!("{}: corpus has no text (empty file?)", path.display());
        }
        Ok(Self { path: path.to_path_buf(), policy, limit, blocks, warned: Default::default() })
    }
}

impl DocumentSource for CorpusFile {
    fn documents(&self) -> Result<Box<dyn Iterator<Item = Result<String>> + Send + '_>> {
        let it = StreamDocs { lines: Lines::open(&self.path)?, file: self, skipped: Skipped::default(), done: false };
        Ok(match self.limit {
            Some(n) => Box::new(it.take(n)),
            None => Box::new(it),
        })
    }
}

struct StreamDocs<'a> {
    lines: Lines,
    file: &'a CorpusFile,
    skipped: Skipped,
    done: bool,
}

impl Iterator for StreamDocs<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        if self.done {
            return None;
        }
        let mut block: Vec<String> = Vec::new();
        loop {
            match self.lines.next() {
                None => {
                    self.done = true;
                    if !self.file.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        self.skipped.warn(&self.file.path.display().to_string());
                    }
                    return (!block.is_empty()).then(|| Ok(block.join("\n")));
                }
                Some(Err(e)) => {
                    if let Err(e) = self.skipped.take(e, self.file.policy) {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Some(Ok(line)) => {
                    let text = line.text.trim();
                    if text.is_empty() {
                        if !block.is_empty() {
                            return Some(Ok(block.join("\n")));
                        }
                    } else if self.file.blocks {
                        block.push(text.to_owned());
                    } else {
                        return Some(Ok(text.to_owned()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn streamed_documents_equal_the_ones_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &str, &[&str]); 2] = [("lines.txt", "one doc\n\ntwo  doc \nthree\n", &["one doc", "two  doc\nthree"]), ("blocks.txt", "a b\nc\n\n\nd e\nf\n", &["a b\nc", "d e\nf"])];
        for (name, text, expected) in cases {
            // (the first file has one blank line, so it is read as blocks too)
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let all = read_documents(&p).unwrap();
            assert_eq!(all, expected, "{name}");
            let src = CorpusFile::open(&p, BadLines::Fail, None).unwrap();
            let streamed: Vec<String> = src.documents().unwrap().map(|d| d.unwrap()).collect();
            assert_eq!(streamed, all, "{name}");
            let again: Vec<String> = src.documents().unwrap().map(|d| d.unwrap()).collect();
            assert_eq!(again, all, "every pass reads the same documents");
        }
        let p = dir.path().join("plain.txt");
        std::fs::write(&p, "x y\nz\nw\n").unwrap();
        let src = CorpusFile::open(&p, BadLines::Fail, Some(2)).unwrap();
        assert_eq!(src.documents().unwrap().map(|d| d.unwrap()).collect::<Vec<_>>(), ["x y", "z"]);
        std::fs::write(&p, "\n \n").unwrap();
        assert!(CorpusFile::open(&p, BadLines::Fail, None).unwrap_err().to_string().contains("no text"));
    }
}
