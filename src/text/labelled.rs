//! The fastText-compatible labelled format: `word word … __label__a __label__b`.

use super::reader::{BadLine, BadLines, Lines, Skipped};
use anyhow::{bail, Result};
use std::path::Path;

/// The prefix that marks a label word.
pub const LABEL_PREFIX: &str = "__label__";

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The text with the label words removed, words joined by single spaces.
    pub text: String,
    /// The label names (without the prefix), in file order, duplicates removed.
    pub labels: Vec<String>,
}

/// Parses one line. Returns `Ok(None)` for a blank line. Label words may stand anywhere on the
/// line, as in fastText, though the usual place is the end.
pub fn parse_line(line: &str) -> std::result::Result<Option<Example>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let mut words = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix(LABEL_PREFIX) {
            if name.is_empty() {
                return Err(format!("empty label name ('{LABEL_PREFIX}' alone)"));
            }
            if !labels.iter().any(|l| l == name) {
                labels.push(name.to_owned());
            }
        } else {
            words.push(word);
        }
    }
    if labels.is_empty() {
        return Err(format!("no label (expected words like {LABEL_PREFIX}name)"));
    }
    if words.is_empty() {
        return Err("no text, only labels".to_owned());
    }
    Ok(Some(Example { text: words.join(" "), labels }))
}

/// Reads every example of a labelled file (plain or gzip); blank lines are skipped, any other
/// malformed line is an error naming `file:line`. An empty file is an error.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    read_examples_with(path, BadLines::Fail)
}

/// [`read_examples`], skipping bad lines (with a warning) under [`BadLines::Skip`].
pub fn read_examples_with(path: &Path, policy: BadLines) -> Result<Vec<Example>> {
    read_from(Lines::open(path)?, &path.display().to_string(), policy)
}

/// Reads labelled examples from an already opened line source.
pub fn read_from(lines: Lines, name: &str, policy: BadLines) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    let mut skipped = Skipped::default();
    for line in lines {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                skipped.take(e, policy)?;
                continue;
            }
        };
        match parse_line(&line.text) {
            Ok(Some(ex)) => out.push(ex),
            Ok(None) => {}
            Err(msg) => skipped.take(BadLine::new(name, line.number, msg).into(), policy)?,
        }
    }
    skipped.warn(name);
    if out.is_empty() {
        bail!("{name}: no labelled examples (empty file?)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_at_end_and_anywhere() {
        let ex = parse_line("hello big world __label__a __label__b").unwrap().unwrap();
        assert_eq!(ex.text, "hello big world");
        assert_eq!(ex.labels, vec!["a", "b"]);
        let ex = parse_line("__label__x 我爱北京").unwrap().unwrap();
        assert_eq!(ex.text, "我爱北京");
        assert_eq!(ex.labels, vec!["x"]);
        let ex = parse_line("t __label__a __label__a").unwrap().unwrap();
        assert_eq!(ex.labels, vec!["a"]);
    }

    #[test]
    fn malformed_lines() {
        assert!(parse_line("   ").unwrap().is_none());
        assert!(parse_line("only text").unwrap_err().contains("no label"));
        assert!(parse_line("__label__a __label__b").unwrap_err().contains("no text"));
        assert!(parse_line("text __label__").unwrap_err().contains("empty label"));
    }
}
