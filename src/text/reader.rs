//! Line readers for plain and gzip text files, with `file:line` in every error.

use anyhow::{Context, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Opens `path` for buffered reading, decompressing when it starts with the gzip magic bytes
/// (so a `.gz` without the extension, or a plain file named `.gz`, still reads correctly).
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).with_context(|| format!("{}: cannot read", path.display()))?;
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(file))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One line of a text file: its 1-based number and its content without the line ending.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number, for error messages.
    pub number: usize,
    /// The text, with `\n` or `\r\n` removed.
    pub text: String,
}

/// Iterator over the lines of a file; yields an error naming `file:line` for invalid UTF-8,
/// NUL bytes and read failures (including a truncated gzip stream).
pub struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    number: usize,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    /// Opens `path` (plain or gzip).
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { path: path.to_path_buf(), reader: open(path)?, number: 0, buf: Vec::new(), done: false })
    }

    /// Reads lines from any reader; `name` is what errors call the source (e.g. `<stdin>`).
    pub fn from_reader(name: &str, reader: Box<dyn BufRead + Send>) -> Self {
        Self { path: PathBuf::from(name), reader, number: 0, buf: Vec::new(), done: false }
    }

    fn next_line(&mut self) -> Result<Option<Line>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .with_context(|| format!("{}:{}: read failed (truncated or corrupt file?)", self.path.display(), self.number + 1))?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.contains(&0) {
            return Err(BadLine::new(&self.path.display().to_string(), self.number, "line contains a NUL byte (binary file?)".into()).into());
        }
        let text = match std::str::from_utf8(&self.buf) {
            Ok(s) => s.to_owned(),
            Err(e) => return Err(BadLine::new(&self.path.display().to_string(), self.number, format!("invalid UTF-8 at byte {}", e.valid_up_to())).into()),
        };
        Ok(Some(Line { number: self.number, text }))
    }
}

impl Iterator for Lines {
    type Item = Result<Line>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_line() {
            Ok(Some(line)) => Some(Ok(line)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                // After one bad line the next can still be read; after a read failure nothing can.
                self.done = e.downcast_ref::<BadLine>().is_none();
                Some(Err(e))
            }
        }
    }
}

/// A line that cannot be used (not UTF-8, a NUL byte, no label, …): the file, its 1-based line
/// number and what is wrong. Reading can go on after it (see [`BadLines::Skip`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}: {msg}")]
pub struct BadLine {
    /// The file as named to the user.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

impl BadLine {
    /// A bad line of `file`.
    pub fn new(file: &str, line: usize, msg: String) -> Self {
        Self { file: file.to_owned(), line, msg }
    }
}

/// What a reader does with a bad line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadLines {
    /// Stop with an error naming `file:line` (the default: a bad line usually means a wrong file).
    #[default]
    Fail,
    /// Skip it, count it, and warn once at the end with the count and the first few.
    Skip,
}

/// Bad lines skipped while reading one file.
#[derive(Debug, Default)]
pub struct Skipped {
    /// How many.
    pub count: usize,
    /// The first few, as `file:line: reason`.
    pub first: Vec<String>,
}

impl Skipped {
    /// Handles one error under `policy`: a bad line is counted when skipping; anything else
    /// (or any error when failing) is returned.
    pub fn take(&mut self, e: anyhow::Error, policy: BadLines) -> Result<()> {
        match (policy, e.downcast_ref::<BadLine>()) {
            (BadLines::Skip, Some(b)) => {
                self.count += 1;
                if self.first.len() < 3 {
                    self.first.push(b.to_string());
                }
                Ok(())
            }
            _ => Err(e),
        }
    }

    /// Prints the warning (if anything was skipped).
    pub fn warn(&self, file: &str) {
        if self.count > 0 {
            eprintln!("warning: {file}: skipped {} bad line(s) (--skip-bad-lines); first: {}", self.count, self.first.join("; "));
        }
    }
}
