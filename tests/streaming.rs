//! A corpus larger than the memory pre-training uses: it is streamed, not loaded.

mod common;

use common::{ok, s, write};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;

#[test]
fn pretraining_memory_stays_below_the_corpus_size() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    write(d.path(), "small.txt", common::corpus_lines(500, 1).as_bytes());
    write(d.path(), "tiny.toml", common::TINY_TOML.as_bytes());
    ok(&["vocab", "--corpus", s(&p("small.txt")), "--out", s(&p("voc")), "--size", "120"]);
    // ≈ 64 MB of text, one document a line
    let mut rng = StdRng::seed_from_u64(9);
    let mut f = std::io::BufWriter::new(std::fs::File::create(p("big.txt")).unwrap());
    let mut written = 0usize;
    while written < 64 << 20 {
        let n = rng.random_range(5..30);
        let line: Vec<&str> = (0..n).map(|_| common::FILLER[rng.random_range(0..common::FILLER.len())]).collect();
        let line = line.join(" ") + "\n";
        written += line.len();
        f.write_all(line.as_bytes()).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let corpus_mib = std::fs::metadata(p("big.txt")).unwrap().len() as f64 / (1 << 20) as f64;
    let out = ok(&["pretrain", "--corpus", s(&p("big.txt")), "--vocab", s(&p("voc")), "--out", s(&p("pre")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--max-steps", "20"]);
    // every document was read (the counting pass), yet only 20 steps trained
    let docs: usize = out.split("pretrain: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(docs > 600_000, "{out}");
    assert!(out.contains("(20 steps"), "{out}");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("pre").join("run.json")).unwrap()).unwrap();
    let peak = run["attempts"][0]["peak_rss_mib"].as_f64().expect("peak memory recorded (Linux)");
    assert!(peak < corpus_mib * 0.75, "peak resident memory {peak:.0} MiB for a {corpus_mib:.0} MiB corpus: not streamed");
}
