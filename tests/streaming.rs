//! A corpus larger than the memory pre-training uses: it is streamed, not loaded.

mod common;

use common::{ok, s, write};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;

#[test]
fn pretraining_memory_does_not_grow_with_the_corpus() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    write(d.path(), "small.txt", common::corpus_lines(500, 1).as_bytes());
    write(d.path(), "tiny.toml", common::TINY_TOML.as_bytes());
    ok(&["vocab", "--corpus", s(&p("small.txt")), "--out", s(&p("voc")), "--size", "120"]);
    // ≈ 64 MB of text, one document a line: a 1 MB block of random documents, written 64 times
    let mut rng = StdRng::seed_from_u64(9);
    let mut block = String::new();
    while block.len() < 1 << 20 {
        let n = rng.random_range(5..30);
        let line: Vec<&str> = (0..n).map(|_| common::FILLER[rng.random_range(0..common::FILLER.len())]).collect();
        block.push_str(&(line.join(" ") + "\n"));
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(p("big.txt")).unwrap());
    for _ in 0..64 {
        f.write_all(block.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let corpus_mib = std::fs::metadata(p("big.txt")).unwrap().len() as f64 / (1 << 20) as f64;
    // an eighth of it, for the memory of the same run on less data
    let text = std::fs::read_to_string(p("big.txt")).unwrap();
    let eighth = text.len() / 8;
    write(d.path(), "eighth.txt", text[..eighth + text[eighth..].find('\n').unwrap() + 1].as_bytes());
    drop(text);
    let peak = |corpus: &str, out: &str| {
        let log = ok(&["pretrain", "--corpus", s(&p(corpus)), "--vocab", s(&p("voc")), "--out", s(&p(out)), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--max-steps", "20"]);
        let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p(out).join("run.json")).unwrap()).unwrap();
        (log, run["attempts"][0]["peak_rss_mib"].as_f64().expect("peak memory recorded (Linux)"))
    };
    let (out, big) = peak("big.txt", "pre");
    // every document was read (the counting pass), yet only 20 steps trained
    let docs: usize = out.split("pretrain (mlm): ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(docs > 600_000, "{out}");
    assert!(out.contains("(20 steps"), "{out}");
    let (_, small) = peak("eighth.txt", "pre-eighth");
    // a loaded corpus would add ≈ 56 MiB of text alone between the two runs; the allocator's
    // per-thread caches move the peak of either run by up to ≈ 17 MiB (measured), so the margin
    // is half the corpus difference
    assert!(big < small + 28.0, "peak resident memory grows with the corpus: {small:.0} MiB for an eighth, {big:.0} MiB for all {corpus_mib:.0} MiB");
}
