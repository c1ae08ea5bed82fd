//! Data the tests generate: small labelled sets with a learnable rule, corpora, tiny configs.
#![allow(dead_code)]

use flate2::write::GzEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Filler words; the keywords below decide the labels.
pub const FILLER: &[&str] = &["the", "package", "provides", "tool", "for", "simple", "fast", "small", "library", "data", "files", "with", "support", "and", "a", "of", "user", "system"];
/// keyword → label.
pub const KEYWORDS: &[(&str, &str)] = &[("network", "net"), ("graphics", "gfx"), ("python", "py"), ("sound", "audio")];

/// One example following the rule: each keyword present adds its label; at least one keyword.
pub fn example(rng: &mut StdRng) -> (String, Vec<&'static str>) {
    let mut words: Vec<&str> = (0..rng.random_range(4..10)).map(|_| FILLER[rng.random_range(0..FILLER.len())]).collect();
    let mut labels = Vec::new();
    for &(kw, label) in KEYWORDS {
        if rng.random_bool(0.35) {
            let at = rng.random_range(0..=words.len());
            words.insert(at, kw);
            labels.push(label);
        }
    }
    if labels.is_empty() {
        let (kw, label) = KEYWORDS[rng.random_range(0..KEYWORDS.len())];
        words.push(kw);
        labels.push(label);
    }
    (words.join(" "), labels)
}

/// `n` labelled lines in fastText form.
pub fn labelled_lines(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = String::new();
    for _ in 0..n {
        let (text, labels) = example(&mut rng);
        s.push_str(&text);
        for l in labels {
            s.push_str(" __label__");
            s.push_str(l);
        }
        s.push('\n');
    }
    s
}

/// `n` raw documents built from the same words.
pub fn corpus_lines(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| example(&mut rng).0 + "\n").collect()
}

/// Writes a file, gzip-compressed when the name ends in `.gz`.
pub fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    if name.ends_with(".gz") {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(content).unwrap();
        std::fs::write(&p, e.finish().unwrap()).unwrap();
    } else {
        std::fs::write(&p, content).unwrap();
    }
    p
}

/// A config small enough to train in seconds.
pub const TINY_TOML: &str = "[model]\nd_model = 32\nn_heads = 4\nn_layers = 1\nd_ff = 64\nmax_len = 32\ndropout = 0.0\nfilters = 16\nfilter_widths = [2, 3]\n[pretrain]\nbatch_size = 16\nlr = 0.003\n[finetune]\nbatch_size = 16\nlr = 0.003\nepochs = 6\npatience = 0\n";

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary.
pub fn bertlu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bertlu")).args(args).output().expect("binary runs")
}

/// Stdout of a run that must succeed.
pub fn ok(args: &[&str]) -> String {
    let out = bertlu(args);
    assert!(out.status.success(), "bertlu {:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Stderr of a run that must fail, checked to be one line starting with "error:".
pub fn fails(args: &[&str]) -> String {
    let out = bertlu(args);
    assert!(!out.status.success(), "bertlu {:?} should fail", args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: "), "not an error line: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "error is not one line: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

/// Topics of the sentence-level data: every sentence of a document names its topic, so a model
/// can tell a true next sentence (same topic) from one of another document (most likely another topic).
pub const TOPICS: &[&str] = &["network", "graphics", "python", "sound", "kernel", "games", "science", "fonts"];

fn topic_sentence(rng: &mut StdRng, topic: &str) -> String {
    let mut words: Vec<&str> = (0..rng.random_range(2..5)).map(|_| FILLER[rng.random_range(0..FILLER.len())]).collect();
    for _ in 0..3 {
        words.insert(rng.random_range(0..=words.len()), topic);
    }
    let mut s = words.join(" ");
    s[..1].make_ascii_uppercase();
    s + "."
}

/// `n` documents of 2–5 sentences each, one topic a document, one document a line.
pub fn topic_documents(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let topic = TOPICS[rng.random_range(0..TOPICS.len())];
            let sentences: Vec<String> = (0..rng.random_range(2..6)).map(|_| topic_sentence(&mut rng, topic)).collect();
            sentences.join(" ") + "\n"
        })
        .collect()
}

/// `n` sentence pairs `a<TAB>b __label__same|__label__other`: same when both texts have one topic.
pub fn topic_pairs(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let a = TOPICS[rng.random_range(0..TOPICS.len())];
            let b = if rng.random_bool(0.5) { a } else { TOPICS[rng.random_range(0..TOPICS.len())] };
            let label = if a == b { "same" } else { "other" };
            format!("{}\t{} __label__{label}\n", topic_sentence(&mut rng, a), topic_sentence(&mut rng, b))
        })
        .collect()
}

/// The tensor bytes of a model directory's `model.safetensors` (the payload after the JSON
/// header, whose metadata map has no fixed order): equal exactly when every weight is.
pub fn weights_payload(dir: &Path) -> Vec<u8> {
    let b = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    b[8 + n..].to_vec()
}

/// Every tensor of a model directory's `model.safetensors` (all f32 in bertlu's models), by name.
pub fn weights_f32(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let b = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    let mut out = std::collections::BTreeMap::new();
    for (name, t) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(t["dtype"], "F32", "{name}");
        let (from, to) = (t["data_offsets"][0].as_u64().unwrap() as usize, t["data_offsets"][1].as_u64().unwrap() as usize);
        out.insert(name.clone(), data[from..to].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
    }
    out
}
