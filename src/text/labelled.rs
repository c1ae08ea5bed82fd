//! The fastText-compatible labelled format: `word word … __label__a __label__b`.

use super::reader::{BadLine, BadLines, Lines, Skipped};
use anyhow::{bail, Result};
use std::path::Path;

/// The prefix that marks a label word.
pub const LABEL_PREFIX: &str = "__label__";

/// Separates the two texts of a sentence pair: `text_a<TAB>text_b __label__x`.
pub const PAIR_SEPARATOR: char = '\t';

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The text with the label words removed, words joined by single spaces; for a sentence pair
    /// the two texts joined by one [`PAIR_SEPARATOR`].
    pub text: String,
    /// The label names (without the prefix), in file order, duplicates removed.
    pub labels: Vec<String>,
}

impl Example {
    /// The two texts of a pair, or `None` for a single text.
    pub fn pair(&self) -> Option<(&str, &str)> {
        self.text.split_once(PAIR_SEPARATOR)
    }
}

/// Splits a line into its text (words joined by single spaces; a pair's two texts joined by one
/// TAB) and its label names. A TAB makes a pair only when text stands on both sides of it, so
/// fastText files with a TAB before or after their labels stay single texts; text in more than
/// two TAB-separated parts is an error.
pub fn split_line(line: &str) -> std::result::Result<(String, Vec<String>), String> {
    let mut labels: Vec<String> = Vec::new();
    let mut sides = Vec::with_capacity(2);
    for side in line.split(PAIR_SEPARATOR) {
        let mut words = Vec::new();
        for word in side.split_whitespace() {
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
        if !words.is_empty() {
            sides.push(words.join(" "));
        }
    }
    if sides.len() > 2 {
        return Err(format!("text in {} TAB-separated parts: a line holds one text, or two texts separated by one TAB (text_a<TAB>text_b)", sides.len()));
    }
    Ok((sides.join(&PAIR_SEPARATOR.to_string()), labels))
}

/// Parses one line. Returns `Ok(None)` for a blank line. Label words may stand anywhere on the
/// line, as in fastText, though the usual place is the end. A TAB makes the line a sentence pair.
pub fn parse_line(line: &str) -> std::result::Result<Option<Example>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let (text, labels) = split_line(line)?;
    if labels.is_empty() {
        return Err(format!("no label (expected words like {LABEL_PREFIX}name)"));
    }
    if text.is_empty() {
        return Err("no text, only labels".to_owned());
    }
    Ok(Some(Example { text, labels }))
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

    #[test]
    fn sentence_pairs() {
        let ex = parse_line("how do  I\tYou do not __label__dup").unwrap().unwrap();
        assert_eq!(ex.text, "how do I\tYou do not");
        assert_eq!(ex.pair(), Some(("how do I", "You do not")));
        assert_eq!(ex.labels, vec!["dup"]);
        // labels may follow either text; Chinese pairs need no spaces
        let ex = parse_line("我爱北京 __label__a\t天安门 __label__b").unwrap().unwrap();
        assert_eq!((ex.pair(), ex.labels.len()), (Some(("我爱北京", "天安门")), 2));
        assert_eq!(parse_line("single text __label__a").unwrap().unwrap().pair(), None);
        // a TAB with text on one side only (fastText's `text<TAB>__label__x`) keeps a single text
        assert_eq!(parse_line("a b\t __label__x").unwrap().unwrap().text, "a b");
        assert_eq!(parse_line("__label__x\tb").unwrap().unwrap().text, "b");
        assert!(parse_line("a\tb\tc __label__x").unwrap_err().contains("3 TAB-separated parts"));
        assert!(parse_line("a\tb\t__label__x").unwrap().is_some());
        assert_eq!(split_line("a b\tc __label__z").unwrap(), ("a b\tc".to_owned(), vec!["z".to_owned()]));
    }
}
