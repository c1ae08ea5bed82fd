//! The binary end to end: every subcommand on generated data, and every bad input.

mod common;

use common::{fails, ok, s, write};
use std::path::Path;

/// Corpus, train (gz), valid (CRLF) and a tiny config in a temp dir.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "corpus.txt.gz", common::corpus_lines(800, 1).as_bytes());
    write(dir.path(), "train.txt.gz", common::labelled_lines(500, 2).as_bytes());
    write(dir.path(), "valid.txt", common::labelled_lines(120, 3).replace('\n', "\r\n").as_bytes());
    write(dir.path(), "tiny.toml", common::TINY_TOML.as_bytes());
    dir
}

#[test]
fn pretrain_finetune_eval_predict() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let out = ok(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("pre")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--epochs", "2", "--vocab-size", "150", "-q"]);
    assert!(out.contains("pre-trained model written"), "{out}");
    for f in ["config.toml", "tokenizer.json", "model.safetensors", "model.json"] {
        assert!(p("pre").join(f).exists(), "{f} missing");
    }
    let saved = std::fs::read_to_string(p("pre").join("config.toml")).unwrap();
    assert!(saved.contains("d_model = 32") && saved.contains("vocab_size = "), "{saved}");

    let log = ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(&p("pre")), "--config", s(&p("tiny.toml")), "--json-logs"]);
    // a pre-trained model under 20 % held-out masked-token accuracy is named with what to do
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("pre").join("model.json")).unwrap()).unwrap();
    let accuracy = meta["info"].as_array().unwrap().last().unwrap()["valid_accuracy"].as_f64().unwrap();
    assert_eq!(log.contains("held-out masked-token accuracy") && log.contains("pre-train it longer"), accuracy < 0.2, "accuracy {accuracy}: {log}");
    let json = ok(&["eval", "--model", s(&p("clf")), "--data", s(&p("valid.txt")), "--json", "--per-label"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["examples"], 120);
    let micro = v["micro_f1"].as_f64().unwrap();
    assert!(micro > 0.9, "a keyword rule is easy to learn: micro-F1 {micro}");
    assert!(v["macro_f1"].as_f64().unwrap() > 0.85);
    assert_eq!(v["labels"].as_array().unwrap().len(), 4);

    // pooling shapes no weight: a max-pooled twin of the same pre-trained model (set by the flag,
    // and by a config that changes [model] pooling alone) loads it, learns, and keeps its pooling
    write(d.path(), "mean.toml", b"[model]\npooling = \"mean\"\n");
    for (out, args, pooling) in [("clf-max", ["--pooling", "max"], "max"), ("clf-mean", ["--config", s(&p("mean.toml"))], "mean")] {
        let log = ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p(out)), "--init", s(&p("pre")), args[0], args[1], "-q"]);
        let cfg = std::fs::read_to_string(p(out).join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("pooling = \"{pooling}\"")), "{log}\n{cfg}");
        let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p(out)), "--data", s(&p("valid.txt")), "--json"]).trim()).unwrap();
        assert!(v["micro_f1"].as_f64().unwrap() > 0.9, "{out}: {v}");
    }

    let table = ok(&["eval", "--model", s(&p("clf")), "--data", s(&p("valid.txt")), "--per-label"]);
    assert!(table.contains("micro") && table.contains("exact match") && table.contains("gfx"), "{table}");

    // predict: one line out per line in, blank lines kept, labels in fastText form
    write(d.path(), "input.txt", b"a network tool for python\n\nsound and graphics files __label__x\n");
    let pred = ok(&["predict", "--model", s(&p("clf")), s(&p("input.txt"))]);
    let lines: Vec<&str> = pred.lines().collect();
    assert_eq!(lines.len(), 3, "{pred}");
    assert_eq!(lines[1], "");
    let first: std::collections::BTreeSet<&str> = lines[0].split(' ').collect();
    assert_eq!(first, ["__label__net", "__label__py"].into_iter().collect());
    let third: std::collections::BTreeSet<&str> = lines[2].split(' ').collect();
    assert_eq!(third, ["__label__audio", "__label__gfx"].into_iter().collect());
    let pred = ok(&["predict", "--model", s(&p("clf")), s(&p("input.txt")), "--k", "1", "--probs"]);
    let words: Vec<&str> = pred.lines().next().unwrap().split(' ').collect();
    assert_eq!(words.len(), 2);
    assert!(words[0].starts_with("__label__"));
    let prob: f64 = words[1].parse().unwrap();
    assert!((0.5..=1.0).contains(&prob));

    // tuned per-label thresholds: on the tuning data each label's F1 can only rise (0.5 is a candidate)
    let tuned = ok(&["tune-thresholds", "--model", s(&p("clf")), "--data", s(&p("valid.txt")), "--objective", "macro", "--min-support", "1"]);
    assert!(tuned.contains("macro-F1"), "{tuned}");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("clf").join("model.json")).unwrap()).unwrap();
    let t = meta["label_thresholds"].as_array().expect("per-label thresholds stored");
    assert_eq!(t.len(), 4);
    assert!(t.iter().all(|x| (0.05..=0.95).contains(&x.as_f64().unwrap())), "{t:?}");
    let after: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("clf")), "--data", s(&p("valid.txt")), "--json"]).trim()).unwrap();
    assert!(after["macro_f1"].as_f64().unwrap() >= v["macro_f1"].as_f64().unwrap() - 1e-9, "{after} vs {v}");
    assert_eq!(after["threshold"].as_array().unwrap().len(), 4);

    // predict follows the stored thresholds: raise `net`'s above its probability on line 1 and it goes
    let all = ok(&["predict", "--model", s(&p("clf")), s(&p("input.txt")), "--threshold", "0", "--probs"]);
    // predicting in bf16: every label's probability within bf16's rounding of f32's (equal where
    // the CPU lacks AVX-512 BF16, which the run then says)
    let out = common::bertlu(&["predict", "--model", s(&p("clf")), s(&p("input.txt")), "--threshold", "0", "--probs", "--precision", "bf16"]);
    assert!(out.status.success());
    let (f32_probs, bf16_probs) = (first_line_probs(&all), first_line_probs(&String::from_utf8_lossy(&out.stdout)));
    assert_eq!(f32_probs.keys().collect::<Vec<_>>(), bf16_probs.keys().collect::<Vec<_>>());
    assert!(f32_probs.iter().all(|(k, v)| (v - bf16_probs[k]).abs() < 0.01), "{f32_probs:?} vs {bf16_probs:?}");
    let note = String::from_utf8_lossy(&out.stderr).contains("no AVX-512 BF16 instructions: predicting in f32");
    assert_eq!(note, !bertlu::model::kernels::bf16::supported());
    let words: Vec<&str> = all.lines().next().unwrap().split(' ').collect();
    let p_net: f64 = words[words.iter().position(|w| *w == "__label__net").unwrap() + 1].parse().unwrap();
    let names: Vec<String> = std::fs::read_to_string(p("clf").join("labels.txt")).unwrap().lines().map(str::to_owned).collect();
    let per: Vec<f64> = names.iter().map(|n| if n == "net" { (p_net + 1.0) / 2.0 } else { 0.5 }).collect();
    let mut meta = meta;
    meta["label_thresholds"] = serde_json::json!(per);
    std::fs::write(p("clf").join("model.json"), serde_json::to_string(&meta).unwrap()).unwrap();
    let pred = ok(&["predict", "--model", s(&p("clf")), s(&p("input.txt"))]);
    assert_eq!(pred.lines().next().unwrap(), "__label__py", "{pred}");
    let pred = ok(&["predict", "--model", s(&p("clf")), s(&p("input.txt")), "--threshold", "0.5"]);
    assert_eq!(pred.lines().next().unwrap().split(' ').count(), 2, "--threshold replaces the stored ones: {pred}");
    // a threshold no probability can be compared with is refused, not silently applied
    for (cmd, t) in [("predict", "1.5"), ("eval", "-0.1")] {
        let target = if cmd == "predict" { s(&p("input.txt")).to_owned() } else { format!("--data={}", s(&p("valid.txt"))) };
        let e = fails(&[cmd, "--model", s(&p("clf")), &target, &format!("--threshold={t}")]);
        assert!(e.contains("--threshold must be in [0, 1]"), "{cmd}: {e}");
    }
    // a hand-broken threshold list is refused on load
    meta["label_thresholds"] = serde_json::json!([0.5, 0.5]);
    std::fs::write(p("clf").join("model.json"), serde_json::to_string(&meta).unwrap()).unwrap();
    let e = fails(&["predict", "--model", s(&p("clf")), s(&p("input.txt"))]);
    assert!(e.contains("model.json") && e.contains("label_thresholds"), "{e}");
}

#[test]
fn scratch_single_label_and_chinese() {
    let d = tempfile::tempdir().unwrap();
    // Chinese text without spaces; one label a line (single-label, inferred)
    let items = [("网络", "net"), ("图形", "gfx"), ("声音", "audio")];
    let fill = ["这个", "软件包", "提供", "简单", "快速", "的", "工具", "库", "数据", "文件"];
    let mut train = String::new();
    for i in 0..300usize {
        let (kw, label) = items[i % 3];
        let a = fill[i % fill.len()];
        let b = fill[(i * 7 + 3) % fill.len()];
        train.push_str(&format!("{a}{kw}{b}{}\t __label__{label}\n", fill[(i * 3) % fill.len()]));
    }
    write(d.path(), "train.txt", train.as_bytes());
    write(d.path(), "valid.txt.gz", train.lines().take(60).collect::<Vec<_>>().join("\n").as_bytes());
    write(d.path(), "tiny.toml", common::TINY_TOML.as_bytes());
    let p = |n: &str| d.path().join(n);
    ok(&["finetune", "--train", s(&p("train.txt")), "--valid", s(&p("valid.txt.gz")), "--out", s(&p("clf")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "60", "-q"]);
    let meta = std::fs::read_to_string(p("clf").join("model.json")).unwrap();
    assert!(meta.contains("single-label"), "{meta}");
    let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("clf")), "--data", s(&p("valid.txt.gz")), "--json"]).trim()).unwrap();
    assert!(v["micro_f1"].as_f64().unwrap() > 0.9, "{v}");
    write(d.path(), "in.txt", "简单图形工具\n数据网络库\n".as_bytes());
    let pred = ok(&["predict", "--model", s(&p("clf")), s(&p("in.txt"))]);
    assert_eq!(pred, "__label__gfx\n__label__net\n");
    let e = fails(&["tune-thresholds", "--model", s(&p("clf")), "--data", s(&p("valid.txt.gz"))]);
    assert!(e.contains("multi-label"), "{e}");

    // mixed precision: the same task learns with bf16 products (a CPU without them says so and trains in f32)
    let log = ok(&["finetune", "--train", s(&p("train.txt")), "--valid", s(&p("valid.txt.gz")), "--out", s(&p("clf16")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "60", "--precision", "bf16"]);
    assert!(log.contains("bf16 matrix products in the linear layers") || log.contains("no AVX-512 BF16 instructions: training in f32"), "{log}");
    let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("clf16")), "--data", s(&p("valid.txt.gz")), "--json"]).trim()).unwrap();
    assert!(v["micro_f1"].as_f64().unwrap() > 0.9, "{v}");

    // whole-word masking of Chinese with a word list: the run records both and trains
    let corpus: String = train.lines().map(|l| l.split('\t').next().unwrap().to_string() + "\n").collect();
    write(d.path(), "corpus.txt", corpus.as_bytes());
    write(d.path(), "words.txt", "网络\n图形\n声音\n软件包\n".as_bytes());
    let (corpus_p, clf_p, pre_p, tiny_p, words_p, missing_p) = (p("corpus.txt"), p("clf"), p("pre"), p("tiny.toml"), p("words.txt"), p("no-such-words.txt"));
    let pre = |words: &std::path::Path| {
        ok(&["pretrain", "--corpus", s(&corpus_p), "--vocab", s(&clf_p), "--out", s(&pre_p), "--preset", "tiny", "--config", s(&tiny_p), "--max-steps", "5", "-q", "--whole-word-mask", "--word-list", s(words)])
    };
    pre(&words_p);
    let cfg = std::fs::read_to_string(p("pre").join("config.toml")).unwrap();
    assert!(cfg.contains("whole_word_mask = true") && cfg.contains("words.txt"), "{cfg}");
    let e = fails(&["pretrain", "--corpus", s(&corpus_p), "--vocab", s(&clf_p), "--out", s(&p("pre2")), "--preset", "tiny", "--config", s(&tiny_p), "--whole-word-mask", "--word-list", s(&missing_p)]);
    assert!(e.contains("no-such-words.txt") && e.lines().count() == 1, "{e}");

    // next-sentence pre-training on Chinese: sentences end at 。！？ with no space after them
    let texts: Vec<&str> = train.lines().map(|l| l.split('\t').next().unwrap()).collect();
    let docs: String = texts.chunks(3).map(|c| format!("{}。{}！{}？\n", c[0], c[1], c[2])).collect();
    write(d.path(), "zh-docs.txt", docs.as_bytes());
    let out = ok(&["pretrain", "--corpus", s(&p("zh-docs.txt")), "--vocab", s(&clf_p), "--out", s(&p("zh-nsp")), "--preset", "tiny", "--config", s(&tiny_p), "--max-steps", "5", "--tasks", "nsp,mlm", "--json-logs"]);
    let intro = out.lines().find(|l| l.contains("IsNext")).expect("pair statistics printed");
    let pairs: usize = intro.split(" training pairs").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(pairs >= 80, "100 three-sentence documents give at least one pair each: {intro}");
    let share: f64 = intro.split("pairs, ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((30.0..70.0).contains(&share), "{intro}");
    // a Chinese pair is classified like any text
    write(d.path(), "zh-pair.txt", "简单图形工具\t数据网络库\n".as_bytes());
    assert_eq!(ok(&["predict", "--model", s(&p("clf")), s(&p("zh-pair.txt"))]).lines().count(), 1);
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let train = s(&p("train.txt.gz")).to_owned();
    let ft = |valid: &Path| -> String {
        let out = p("out");
        let e = fails(&["finetune", "--train", &train, "--valid", s(valid), "--out", s(&out), "--preset", "tiny", "--config", s(&p("tiny.toml")), "-q"]);
        assert!(!out.exists(), "no output directory after a failure");
        e
    };
    let e = ft(&p("missing.txt"));
    assert!(e.contains("missing.txt") && e.contains("cannot open"), "{e}");
    let e = ft(&write(d.path(), "empty.txt", b""));
    assert!(e.contains("empty.txt") && e.contains("no labelled examples"), "{e}");
    let e = ft(&write(d.path(), "nolabel.txt", b"good text __label__a\njust text\n"));
    assert!(e.contains("nolabel.txt:2: no label"), "{e}");
    let e = ft(&write(d.path(), "notext.txt", b"good text __label__a\n\n__label__b __label__c\n"));
    assert!(e.contains("notext.txt:3: no text"), "{e}");
    let e = ft(&write(d.path(), "utf8.txt", b"good __label__a\nbad \xff\xfe text __label__a\n"));
    assert!(e.contains("utf8.txt:2: invalid UTF-8"), "{e}");
    let e = ft(&write(d.path(), "nul.txt", b"good __label__a\nbad \0 text __label__a\n"));
    assert!(e.contains("nul.txt:2:") && e.contains("NUL"), "{e}");
    let e = ft(&write(d.path(), "emptylabel.txt", b"text __label__\n"));
    assert!(e.contains("emptylabel.txt:1: empty label"), "{e}");
    let mut gz = std::fs::read(p("train.txt.gz")).unwrap();
    gz.truncate(gz.len() / 2);
    std::fs::write(p("cut.txt.gz"), &gz).unwrap();
    let e = ft(&p("cut.txt.gz"));
    assert!(e.contains("cut.txt.gz") && e.contains("truncated"), "{e}");

    // configs
    let cfg = |name: &str, text: &str| -> String {
        let c = write(d.path(), name, text.as_bytes());
        fails(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("pre")), "--config", s(&c)])
    };
    // corpora
    let pre = |corpus: &Path| fails(&["pretrain", "--corpus", s(corpus), "--out", s(&p("pre")), "--preset", "tiny", "-q"]);
    let e = pre(&p("nothing.txt"));
    assert!(e.contains("nothing.txt") && e.contains("cannot open"), "{e}");
    let e = pre(&write(d.path(), "blank.txt", b"\n  \n\n"));
    assert!(e.contains("blank.txt") && e.contains("no text"), "{e}");
    let e = pre(&write(d.path(), "bin.txt.gz", b"fine line\nsecond \xc3\x28 line\n"));
    assert!(e.contains("bin.txt.gz:2: invalid UTF-8"), "{e}");
    let e = fails(&["vocab", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("v")), "--size", "3"]);
    assert!(e.contains("too small"), "{e}");
    let e = cfg("unknown.toml", "[model]\nlayers = 2\n");
    assert!(e.contains("unknown.toml") && e.contains("unknown key 'layers'"), "{e}");
    let e = cfg("heads.toml", "[model]\nd_model = 100\nn_heads = 8\n");
    assert!(e.contains("heads.toml") && e.contains("divisible"), "{e}");
    let e = cfg("zero.toml", "[model]\nn_layers = 0\n");
    assert!(e.contains("n_layers must be positive"), "{e}");
    let e = cfg("neg.toml", "[pretrain]\nbatch_size = -3\n");
    assert!(e.contains("neg.toml"), "{e}");
    let e = cfg("widths.toml", "[model]\nbackbone = \"textcnn\"\nfilter_widths = [3, 0]\n");
    assert!(e.contains("filter_widths"), "{e}");
    let e = cfg("cnnpool.toml", "[model]\nbackbone = \"textcnn\"\npooling = \"mean\"\n");
    assert!(e.contains("cnnpool.toml") && e.contains("model.pooling (--pooling) applies to the transformer"), "{e}");
    let e = cfg("kind.toml", "[model]\nbackbone = \"rnn\"\n");
    assert!(e.contains("kind.toml") && e.contains("rnn"), "{e}");
    // backbone lists belong to compare; compare picks learning rates from its grid
    let e = fails(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("pre")), "--backbone", "transformer,textcnn"]);
    assert!(e.contains("one value"), "{e}");
    let (corpus, valid, cmp_out) = (p("corpus.txt.gz"), p("valid.txt"), p("cmp"));
    let cmp = |extra: &[&str]| {
        let mut args = vec!["compare", "--corpus", s(&corpus), "--train", &train, "--valid", s(&valid), "--out", s(&cmp_out)];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let e = cmp(&["--lr", "1e-3"]);
    assert!(e.contains("--lr-grid"), "{e}");
    let e = cmp(&["--pretrained", "lstm=somewhere"]);
    assert!(e.contains("unknown backbone 'lstm'"), "{e}");
    let e = cmp(&["--backbone", "textcnn", "--pretrained", "transformer=somewhere"]);
    assert!(e.contains("not in --backbone"), "{e}");
    // an arm whose settings cannot hold is refused before the first arm trains
    let pool = write(d.path(), "meanpool.toml", b"[model]\npooling = \"mean\"\n");
    let e = cmp(&["--backbone", "transformer,textcnn", "--config", s(&pool), "--preset", "tiny"]);
    assert!(e.contains("--backbone textcnn") && e.contains("model.pooling"), "{e}");
    assert!(!p("pre").exists() && !p("cmp").exists());
    // an output directory that cannot be created (its parent is a file): one line, nothing written
    let blocked = p("valid.txt").join("clf");
    let e = fails(&["finetune", "--train", &train, "--valid", s(&p("valid.txt")), "--out", s(&blocked), "--preset", "tiny", "--config", s(&p("tiny.toml")), "-q"]);
    assert!(e.contains("valid.txt") && e.contains("cannot create"), "{e}");
}

#[test]
fn bad_checkpoints_are_refused() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    ok(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("pre")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--max-steps", "3", "--vocab-size", "150", "-q"]);
    let finetune_init = |init: &Path| -> String {
        let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(init), "-q"]);
        assert!(!p("clf").exists() && !p(".clf.partial").exists(), "no output left behind");
        e
    };
    let copy = |name: &str| -> std::path::PathBuf {
        let to = p(name);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(p("pre")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
        to
    };
    // truncated weights
    let cut = copy("cut");
    let w = std::fs::read(cut.join("model.safetensors")).unwrap();
    std::fs::write(cut.join("model.safetensors"), &w[..w.len() - 100]).unwrap();
    let e = finetune_init(&cut);
    assert!(e.contains("truncated"), "{e}");
    // another backbone shape behind the same file names
    let shape = copy("shape");
    let c = std::fs::read_to_string(shape.join("config.toml")).unwrap().replace("d_ff = 64", "d_ff = 48");
    std::fs::write(shape.join("config.toml"), c).unwrap();
    let e = finetune_init(&shape);
    assert!(e.contains("do not fit"), "{e}");
    // another vocabulary than the weights were trained with
    let vocab = copy("vocab");
    ok(&["vocab", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("v2")), "--size", "100"]);
    std::fs::copy(p("v2").join("tokenizer.json"), vocab.join("tokenizer.json")).unwrap();
    let e = finetune_init(&vocab);
    assert!(e.contains("tokenizer has 100 entries but the config says vocab_size"), "{e}");
    // the shape comes from the pre-trained model: no preset, no other [model]
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(&p("pre")), "--preset", "small"]);
    assert!(e.contains("--preset does not apply"), "{e}");
    let wide = write(d.path(), "wide.toml", b"[model]\nd_model = 64\n");
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(&p("pre")), "--config", s(&wide)]);
    assert!(e.contains("[model] differs"), "{e}");
    // not a model directory
    let e = finetune_init(&p("v2"));
    assert!(e.contains("model.json"), "{e}");
    // an existing output is kept unless --overwrite
    std::fs::create_dir_all(p("taken")).unwrap();
    std::fs::write(p("taken").join("keep.txt"), "x").unwrap();
    let e = fails(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("taken")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--max-steps", "1", "-q"]);
    assert!(e.contains("--overwrite"), "{e}");
    assert!(p("taken").join("keep.txt").exists());
}

/// Training is deterministic for a given vocabulary. (Vocabulary training itself is not: HF
/// tokenizers breaks ties between equally frequent merges in hash order; see docs/usage.md, "Determinism".)
#[test]
fn word_vectors_initialise_a_scratch_model() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    // vectors of dimension 32 (the tiny test config's d_model) for some corpus words, and noise
    let mut vec_file = String::from("6 32\n");
    for (k, w) in common::FILLER.iter().take(4).chain(["zzz-not-in-vocab", "qqq"].iter()).enumerate() {
        let values: Vec<String> = (0..32).map(|i| format!("{:.3}", ((i + k) % 7) as f32 / 10.0 - 0.3)).collect();
        vec_file.push_str(&format!("{w} {}\n", values.join(" ")));
    }
    write(d.path(), "vectors.vec", vec_file.as_bytes());
    let out = ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "120", "--epochs", "1", "--word-vectors", s(&p("vectors.vec"))]);
    let found: usize = out.split("word vectors: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((1..=4).contains(&found), "{out}");
    assert!(out.contains("(6 words, dimension 32)"), "{out}");
    let run = std::fs::read_to_string(p("clf").join("run.json")).unwrap();
    assert!(run.contains("word-vectors"), "the vectors file is recorded as an input");
    // a dimension other than d_model is a clear error, and --init excludes it
    write(d.path(), "v16.vec", "1 16\nword 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n".as_bytes());
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf2")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "120", "--word-vectors", s(&p("v16.vec"))]);
    assert!(e.contains("v16.vec") && e.contains("dimension 16") && e.lines().count() == 1, "{e}");
    assert!(!p("clf2").exists(), "nothing left behind");
}

#[test]
fn same_seed_same_numbers() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    ok(&["vocab", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("vocab")), "--size", "100"]);
    let run = |out: &str, seed: &str| -> String {
        ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p(out)), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--epochs", "2", "--vocab", s(&p("vocab")), "--seed", seed, "-q"]);
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p(out).join("model.json")).unwrap()).unwrap();
        let mut epochs = meta["info"]["epochs"].clone();
        for e in epochs.as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("seconds");
        }
        epochs.to_string()
    };
    let a = run("a", "7");
    assert_eq!(a, run("b", "7"));
    assert_ne!(a, run("c", "8"));
}

#[test]
fn compare_writes_table_csv_json_and_plots() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    // two training files, read as one set
    write(d.path(), "extra.txt", common::labelled_lines(60, 7).as_bytes());
    let train = format!("{},{}", s(&p("train.txt.gz")), s(&p("extra.txt")));
    write(d.path(), "bad.txt", b"a network tool __label__net\nno label here\n");
    let e = fails(&["compare", "--corpus", s(&p("corpus.txt.gz")), "--train", &format!("{},{}", s(&p("train.txt.gz")), s(&p("bad.txt"))), "--valid", s(&p("valid.txt")), "--out", s(&p("cmp-bad")), "-q"]);
    assert!(e.contains("bad.txt:2"), "{e}");
    assert!(!p("cmp-bad").exists());
    let out = ok(&[
        "compare", "--corpus", s(&p("corpus.txt.gz")), "--train", &train, "--valid", s(&p("valid.txt")), "--test", s(&p("valid.txt")),
        "--out", s(&p("cmp")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--lr-grid", "1e-3,3e-3", "--epochs", "2",
        "--pretrain-max-steps", "20", "--pretrain-tasks", "nsp,mlm", "--vocab-size", "150", "--backbone", "transformer,textcnn", "-q",
    ]);
    assert!(out.contains("| transformer | **gain** |") && out.contains("| textcnn | **gain** |"), "{out}");
    let md = std::fs::read_to_string(p("cmp/compare.md")).unwrap();
    assert!(md.contains("train.txt.gz + extra.txt"), "both training files named:\n{md}");
    for row in ["| transformer | scratch |", "| transformer | pre-trained |", "| textcnn | scratch |", "| textcnn | pre-trained |"] {
        assert!(md.contains(row), "{row} missing:\n{md}");
    }
    // header + 2 backbones × 2 arms × 2 learning rates × (epoch 0 + 2 epochs)
    let csv = std::fs::read_to_string(p("cmp/epochs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 2 * 2 * 3, "{csv}");
    // exactly one chosen learning rate an arm
    assert_eq!(csv.lines().filter(|l| l.contains(",true,2,")).count(), 4, "{csv}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("cmp/compare.json")).unwrap()).unwrap();
    let arms = json[1]["arms"].as_array().unwrap();
    assert_eq!(json[1]["backbone"], "textcnn");
    assert_eq!(arms[1]["arm"], "pre-trained");
    assert!(arms[1]["test"]["micro_f1"].as_f64().unwrap() > 0.0);
    // the pre-trained arm loaded the TextCNN's token and segment embeddings, both convolutions
    // (weight + bias) and, pre-trained with nsp, the pooler (weight + bias)
    assert_eq!(arms[1]["runs"][0]["report"]["loaded_tensors"].as_array().unwrap().len(), 8);
    assert!(std::fs::read_to_string(p("cmp/pretrained-textcnn/config.toml")).unwrap().contains("\"nsp\""));
    assert_eq!(arms[0]["runs"][0]["report"]["loaded_tensors"].as_array().unwrap().len(), 0);
    for b in ["transformer", "textcnn"] {
        let svg = std::fs::read_to_string(p(&format!("cmp/plot-{b}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("validation micro-F1") && svg.contains("scratch (lr") && svg.contains("pre-trained (lr"), "{b}");
        assert!(p(&format!("cmp/pretrained-{b}/model.safetensors")).exists());
    }
    // the chosen models are usable as they are
    let pred = ok(&["predict", "--model", s(&p("cmp/runs/textcnn-pre-trained-lr3e-3")), s(&p("valid.txt"))]);
    assert_eq!(pred.lines().count(), 120);
}

#[test]
fn compare_lays_the_settings_over_a_reused_checkpoint_as_finetune_init_does() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let (toml, corpus, train, valid) = (p("tiny.toml"), p("corpus.txt.gz"), p("train.txt.gz"), p("valid.txt"));
    ok(&["pretrain", "--corpus", s(&corpus), "--out", s(&p("pre")), "--preset", "tiny", "--config", s(&toml), "--max-steps", "10", "--vocab-size", "150", "-q"]);
    let base = ["compare", "--corpus", s(&corpus), "--train", s(&train), "--valid", s(&valid), "--backbone", "transformer", "--lr-grid", "3e-3", "--epochs", "1", "-q"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    let pre = format!("transformer={}", s(&p("pre")));
    let (cmp, cmp2) = (p("cmp"), p("cmp2"));
    ok(&with(&base, &["--out", s(&cmp), "--pretrained", &pre, "--config", s(&toml), "--set", "model.pooling=mean"]));
    // both arms of the reused shape read with mean pooling (the checkpoint itself has cls)
    assert!(std::fs::read_to_string(p("pre/config.toml")).unwrap().contains("pooling = \"cls\""));
    for arm in ["scratch", "pre-trained"] {
        let cfg = std::fs::read_to_string(p(&format!("cmp/runs/transformer-{arm}-lr3e-3/config.toml"))).unwrap();
        assert!(cfg.contains("pooling = \"mean\"") && cfg.contains("d_model = 32"), "{arm}: {cfg}");
    }
    // a setting that would reshape the checkpoint's weights is refused, not silently dropped
    let e = fails(&with(&base, &["--out", s(&cmp2), "--pretrained", &pre, "--set", "model.d_model=64"]));
    assert!(e.contains("--pretrained") && e.contains("differs from the pre-trained model"), "{e}");
    assert!(!p("cmp2").exists());
}

#[test]
fn test_mode_caps_epochs_and_textcnn_runs_from_the_cli() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    ok(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("pre")), "--backbone", "textcnn", "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "150", "--test-mode", "-q"]);
    let cfg = std::fs::read_to_string(p("pre/config.toml")).unwrap();
    assert!(cfg.contains("backbone = \"textcnn\"") && cfg.contains("max_steps = 100"), "{cfg}");
    // --backbone must agree with the checkpoint's
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(&p("pre")), "--backbone", "transformer"]);
    assert!(e.contains("differs from the pre-trained model's (textcnn)"), "{e}");
    // the TextCNN has one pooling; asking for another is refused, not ignored
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(&p("pre")), "--pooling", "mean"]);
    assert!(e.contains("(--pooling) applies to the transformer"), "{e}");
    assert!(!p("clf").exists());
    let log = ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(&p("pre")), "--epochs", "6", "--test-mode"]);
    let epochs: Vec<&str> = log.lines().filter(|l| l.starts_with("epoch ")).collect();
    assert_eq!(epochs.len(), 2, "test mode caps fine-tuning at 2 epochs: {log}");
    let json = ok(&["eval", "--model", s(&p("clf")), "--data", s(&p("valid.txt")), "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(v["micro_f1"].as_f64().unwrap() > 0.5, "{v}");
}

#[test]
fn long_lines_many_labels_and_unknown_labels() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    // a 1 MB line is cut to max_len, not refused
    let mut long = "graphics ".repeat(120_000);
    long.push_str("__label__gfx\n");
    long.push_str(&common::labelled_lines(300, 5));
    write(d.path(), "long.txt", long.as_bytes());
    assert!(long.lines().next().unwrap().len() > 1_000_000);
    ok(&["finetune", "--train", s(&p("long.txt")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "150", "--epochs", "1", "-q"]);
    // labels unseen in training: a warning naming them, and scored as misses
    write(d.path(), "unknown.txt", b"a sound file __label__audio __label__brand-new\n");
    let out = common::bertlu(&["eval", "--model", s(&p("clf")), "--data", s(&p("unknown.txt")), "--json"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown.txt") && err.contains("brand-new"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["micro_recall"].as_f64().unwrap() <= 0.5, "the unknown label is a miss: {v}");
    // 5,000 labels, one example each: trains, with the rare-label warning
    let many: String = (0..5_000).map(|i| format!("word{} text __label__L{i}\n", i % 50)).collect();
    write(d.path(), "many.txt", many.as_bytes());
    write(d.path(), "many-valid.txt", many.lines().take(200).collect::<Vec<_>>().join("\n").as_bytes());
    let out = common::bertlu(&["finetune", "--train", s(&p("many.txt")), "--valid", s(&p("many-valid.txt")), "--out", s(&p("many")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "100", "--epochs", "1", "-q"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fewer than 5 training examples"));
}

#[test]
fn bench_measures_each_case_in_its_own_process() {
    let out = ok(&["bench", "--setting", "tiny-textcnn", "--case", "infer1,finetune", "--iters", "3", "--warmup", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ms = v.as_array().unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[0]["case"], "Infer1");
    assert_eq!(ms[1]["examples"], 32);
    for m in ms {
        let secs = m["seconds"].as_array().unwrap();
        assert_eq!(secs.len(), 3);
        assert!(secs.iter().all(|s| s.as_f64().unwrap() > 0.0));
        assert!(m["peak_rss_mib"].as_f64().unwrap() > 1.0);
    }
    // the matrix products' FLOPs of an iteration: a forward pass a sequence; a training step three
    use bertlu::{apps::bench, config::HeadKind, model::flops};
    let cfg = bench::Setting::TinyTextcnn.model();
    assert_eq!(ms[0]["flops"].as_f64().unwrap(), flops::classifier_forward(&cfg, 128, bench::LABELS, HeadKind::Pooled, flops::Pass::Folded));
    assert_eq!(ms[1]["flops"].as_f64().unwrap(), 3.0 * 32.0 * flops::classifier_forward(&cfg, 128, bench::LABELS, HeadKind::Pooled, flops::Pass::Training));
    // the table: GFLOP/s and the share of the peak measured in the same run
    let table = ok(&["bench", "--setting", "tiny-textcnn", "--case", "infer1", "--iters", "2", "--warmup", "0"]);
    assert!(table.contains("| GFLOP/s | of peak |") && table.contains(" % |") && table.contains("1024³"), "{table}");
    let e = fails(&["bench", "--setting", "huge"]);
    assert!(e.contains("huge"), "{e}");
}

#[test]
fn skip_bad_lines_counts_and_warns() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let mut train = common::labelled_lines(300, 7).into_bytes();
    train.extend_from_slice(b"no label here\n\xff\xfe broken __label__net\n__label__net\nnul \0 byte __label__py\n");
    train.extend_from_slice(common::labelled_lines(100, 8).as_bytes());
    write(d.path(), "dirty.txt", &train);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["finetune", "--train", s(&p("dirty.txt")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "150", "--epochs", "1"].iter().map(|a| a.to_string()).collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let strict = args(&[]);
    let e = fails(&strict.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("dirty.txt:301: no label"), "{e}");
    let lenient = args(&["--skip-bad-lines"]);
    let out = common::bertlu(&lenient.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped 4 bad line(s)") && err.contains("dirty.txt:301: no label") && err.contains("dirty.txt:302: invalid UTF-8"), "{err}");
    // the 400 good lines were all used
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("finetune: 400 train / 120 valid examples"), "{stdout}");
    let corpus = write(d.path(), "dirty-corpus.txt", b"fine document one\nbad \xc3\x28 text\nfine document two\n");
    let out = common::bertlu(&["vocab", "--corpus", s(&corpus), "--out", s(&p("v")), "--size", "50"]);
    assert!(!out.status.success(), "vocab reads strictly");
    let e = fails(&["pretrain", "--corpus", s(&corpus), "--out", s(&p("pre")), "--preset", "tiny", "-q"]);
    assert!(e.contains("dirty-corpus.txt:2: invalid UTF-8"), "{e}");
}

#[test]
fn next_sentence_pretraining_and_sentence_pair_classification() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    write(d.path(), "corpus.txt", common::topic_documents(1500, 4).as_bytes());
    write(d.path(), "train.txt", common::topic_pairs(1000, 5).as_bytes());
    write(d.path(), "valid.txt.gz", common::topic_pairs(200, 6).as_bytes());
    write(d.path(), "tiny.toml", common::TINY_TOML.replace("[pretrain]\n", "[pretrain]\nvalid_fraction = 0.1\n").as_bytes());
    // a fixed vocabulary: a trained one numbers its pieces differently from run to run
    let words: Vec<&str> = common::FILLER.iter().chain(common::TOPICS).copied().chain(["."]).collect();
    bertlu::text::tokenizer::WordPieceTokenizer::from_words(&words).unwrap().save(&p("vocab.json")).unwrap();
    let out = ok(&["pretrain", "--corpus", s(&p("corpus.txt")), "--out", s(&p("pre")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--epochs", "8", "--vocab", s(&p("vocab.json")), "--tasks", "mlm,nsp", "--json-logs"]);
    let events: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let intro = events.iter().find_map(|e| e["text"].as_str().filter(|t| t.contains("IsNext"))).expect("pair statistics printed");
    assert!(intro.contains("(mlm+nsp)"), "{intro}");
    let epochs: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "epoch").collect();
    assert_eq!(epochs.len(), 8);
    let last = epochs[7];
    // both objectives are reported, each with its own loss and accuracy
    for key in ["train_loss", "valid_accuracy", "nsp_train_loss", "nsp_valid_loss", "nsp_valid_accuracy"] {
        assert!(last[key].as_f64().is_some(), "{key} missing: {last}");
    }
    let (first_nsp, nsp) = (epochs[0]["nsp_valid_loss"].as_f64().unwrap(), last["nsp_valid_accuracy"].as_f64().unwrap());
    assert!(nsp > 0.75, "a true next sentence shares its document's topic: held-out NSP accuracy {nsp}");
    assert!(last["nsp_valid_loss"].as_f64().unwrap() < first_nsp, "NSP loss falls over the epochs");
    let csv = std::fs::read_to_string(p("pre").join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("nsp_valid_accuracy"), "{csv}");
    let md = ok(&["report", s(&p("pre"))]);
    assert!(md.contains("valid next-sentence accuracy") && md.contains(&format!("{nsp:.4}")), "{md}");
    assert!(std::fs::read_to_string(p("pre").join("report.svg")).unwrap().contains("next-sentence validation"));
    let saved = std::fs::read_to_string(p("pre").join("config.toml")).unwrap();
    assert!(saved.contains("tasks = [\n    \"mlm\",\n    \"nsp\",\n]") && saved.contains("type_vocab_size = 2"), "{saved}");

    // pairs fine-tuned on top: segment embeddings carry over, the pair rule is learnt
    ok(&["finetune", "--train", s(&p("train.txt")), "--valid", s(&p("valid.txt.gz")), "--out", s(&p("clf")), "--init", s(&p("pre")), "--config", s(&p("tiny.toml")), "-q"]);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("clf").join("model.json")).unwrap()).unwrap();
    let loaded = meta["info"]["loaded_tensors"].as_array().expect("loaded tensors recorded");
    assert!(loaded.iter().any(|n| n.as_str().unwrap().contains("segment_embedding")), "segment embeddings carry over: {loaded:?}");
    assert!(loaded.iter().any(|n| n == "head.dense.weight (from nsp.dense)"), "the next-sentence pooler carries over: {loaded:?}");
    let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("clf")), "--data", s(&p("valid.txt.gz")), "--json"]).trim()).unwrap();
    let acc = v["micro_f1"].as_f64().unwrap();
    assert!(acc > 0.85, "same-topic pairs: accuracy {acc}");
    write(d.path(), "input.txt", b"Fast network tool.\tA network library.\nFast network tool.\tSmall fonts package.\n");
    let pred = ok(&["predict", "--model", s(&p("clf")), s(&p("input.txt"))]);
    assert_eq!(pred.lines().collect::<Vec<_>>(), ["__label__same", "__label__other"], "{pred}");
    // the same words as one text are another input than as a pair
    write(d.path(), "joined.txt", b"Fast network tool. Small fonts package.\n");
    let probs = |f: &str| ok(&["predict", "--model", s(&p("clf")), s(&p(f)), "--probs", "--k", "1"]).lines().next().unwrap().to_owned();
    assert_ne!(probs("joined.txt"), probs("input.txt"));
    write(d.path(), "bad.txt", b"a\tb\n\none\ttwo\tthree\n");
    let e = fails(&["predict", "--model", s(&p("clf")), s(&p("bad.txt"))]);
    assert!(e.contains("bad.txt:3") && e.contains("TAB"), "{e}");
    write(d.path(), "bad-train.txt", b"left\tright __label__same\nleft\tright\tmore __label__other\n");
    let e = fails(&["finetune", "--train", s(&p("bad-train.txt")), "--valid", s(&p("valid.txt.gz")), "--out", s(&p("clf2")), "-q"]);
    assert!(e.contains("bad-train.txt:2") && e.contains("TAB"), "{e}");
    assert!(!p("clf2").exists());
    // nsp needs segment embeddings
    let e = fails(&["pretrain", "--corpus", s(&p("corpus.txt")), "--out", s(&p("pre2")), "--preset", "tiny", "--tasks", "nsp", "--config", s(&write(d.path(), "noseg.toml", b"[model]\ntype_vocab_size = 0\n"))]);
    assert!(e.contains("type_vocab_size"), "{e}");
}

#[test]
fn pretraining_continues_from_a_pretrained_model() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let corpus = p("corpus.txt.gz");
    let pre = |out: &str, extra: &[&str]| {
        let mut args = vec!["pretrain", "--corpus", s(&corpus), "--out", out, "--json-logs"];
        args.extend_from_slice(extra);
        ok(&args)
    };
    let events = |out: &str| -> Vec<serde_json::Value> { out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect() };
    let first = events(&pre(s(&p("pre1")), &["--preset", "tiny", "--config", s(&p("tiny.toml")), "--epochs", "1", "--vocab-size", "150"]));
    let epoch1 = first.iter().find(|e| e["event"] == "epoch").expect("epoch event").clone();
    let loss1 = epoch1["valid_loss"].as_f64().unwrap();

    let more = events(&pre(s(&p("pre2")), &["--init", s(&p("pre1")), "--epochs", "2", "--keep-epochs"]));
    let said: Vec<&str> = more.iter().filter_map(|e| e["text"].as_str()).collect();
    let loaded = said.iter().find(|t| t.contains("pre-trained tensors")).expect("loading reported");
    assert!(!loaded.contains("random"), "every head of an mlm run is in an mlm model: {loaded}");
    // the same corpus and seed hold out the same masked positions: the loaded weights score
    // exactly what they scored when they were saved
    let before = said.iter().find(|t| t.contains("held out before training")).expect("starting score reported");
    assert!(before.contains(&format!("masked-LM loss {loss1:.4}")), "{before} vs the saved model's {loss1:.4}");
    let epochs: Vec<&serde_json::Value> = more.iter().filter(|e| e["event"] == "epoch").collect();
    assert_eq!(epochs.len(), 2);
    let loss3 = epochs[1]["valid_loss"].as_f64().unwrap();
    assert!(loss3 < loss1 - 0.05, "two more epochs lower the held-out loss: {loss1} -> {loss3}");
    // vocabulary and shape come from the model it continues
    assert_eq!(std::fs::read(p("pre1").join("tokenizer.json")).unwrap(), std::fs::read(p("pre2").join("tokenizer.json")).unwrap());
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("pre2").join("run.json")).unwrap()).unwrap();
    assert!(run.to_string().contains("\"init\""), "the start is recorded with the run: {run}");
    // --keep-epochs: each epoch's model beside the last; the last one is the run's model
    let kept = p("pre2").join("epochs");
    let names: Vec<String> = std::fs::read_dir(&kept).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.iter().collect::<std::collections::BTreeSet<_>>(), ["epoch-1", "epoch-2"].iter().map(|n| n.to_string()).collect::<Vec<_>>().iter().collect(), "{names:?}");
    let weights = common::weights_payload;
    assert!(weights(&kept.join("epoch-2")) == weights(&p("pre2")), "the last kept epoch is the run's model");
    assert!(weights(&kept.join("epoch-1")) != weights(&p("pre2")), "epoch 1's model is its own");
    let meta1: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(kept.join("epoch-1/model.json")).unwrap()).unwrap();
    assert_eq!(meta1["info"].as_array().map(Vec::len), Some(1), "epoch 1's model carries its own log: {meta1}");
    // and the continued model, or a kept epoch, fine-tunes like any pre-trained one
    ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf")), "--init", s(&p("pre2")), "--epochs", "1", "-q"]);
    ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("clf1")), "--init", s(&kept.join("epoch-1")), "--epochs", "1", "-q"]);

    // an objective the model was not trained on gets a fresh head, and says so
    let nsp = events(&pre(s(&p("pre3")), &["--init", s(&p("pre1")), "--max-steps", "3", "--tasks", "mlm,nsp"]));
    assert!(nsp.iter().filter_map(|e| e["text"].as_str()).any(|t| t.contains("nsp head starts at random")), "{nsp:?}");

    // what cannot be continued is refused before anything is written
    let e = fails(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("bad1")), "--init", s(&p("clf"))]);
    assert!(e.contains("classifier") && e.contains("clf"), "{e}");
    let e = fails(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("bad2")), "--init", s(&p("pre1")), "--preset", "small"]);
    assert!(e.contains("--preset does not apply"), "{e}");
    write(d.path(), "wide.toml", b"[model]\nd_model = 64\n");
    let e = fails(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("bad3")), "--init", s(&p("pre1")), "--config", s(&p("wide.toml"))]);
    assert!(e.contains("wide.toml") && e.contains("[model] differs"), "{e}");
    let e = fails(&["pretrain", "--corpus", s(&p("corpus.txt.gz")), "--out", s(&p("bad4")), "--init", s(&p("missing"))]);
    assert!(e.contains("missing"), "{e}");
    for b in ["bad1", "bad2", "bad3", "bad4"] {
        assert!(!p(b).exists(), "{b} written");
    }
}

/// Label → probability of the first line of `predict --probs --threshold 0` output.
fn first_line_probs(out: &str) -> std::collections::BTreeMap<String, f64> {
    let words: Vec<&str> = out.lines().next().unwrap().split(' ').collect();
    words.chunks(2).map(|w| (w[0].to_owned(), w[1].parse().unwrap())).collect()
}

#[test]
fn ensemble_averages_its_members() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    // two members with their own seeds and their own vocabularies (each trained on the texts)
    for (name, seed, backbone) in [("m1", "1", "textcnn"), ("m2", "2", "transformer")] {
        ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p(name)), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--backbone", backbone, "--epochs", "2", "--vocab-size", "120", "--seed", seed, "-q"]);
    }
    let out = ok(&["ensemble", "--model", &format!("{},{}", s(&p("m1")), s(&p("m2"))), "--out", s(&p("ens"))]);
    assert!(out.contains("ensemble of 2 models"), "{out}");
    write(d.path(), "input.txt", b"a network tool for python\nsound files\n");
    let probs = |m: &str| first_line_probs(&ok(&["predict", "--model", s(&p(m)), s(&p("input.txt")), "--threshold", "0", "--probs"]));
    let (a, b, e) = (probs("m1"), probs("m2"), probs("ens"));
    assert_eq!(e.len(), 4);
    for (label, pe) in &e {
        let mean = (a[label] + b[label]) / 2.0;
        assert!((pe - mean).abs() < 2e-5, "{label}: ensemble {pe} vs mean of members {mean}");
    }
    assert!(e.iter().any(|(l, pe)| (pe - a[l]).abs() > 1e-3), "the members differ, so the mean is not just the first member");

    // thresholds tuned on the ensemble are the ensemble's; the members keep theirs
    let m1_meta = std::fs::read_to_string(p("m1").join("model.json")).unwrap();
    ok(&["tune-thresholds", "--model", s(&p("ens")), "--data", s(&p("valid.txt")), "--objective", "macro", "--min-support", "1"]);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("ens").join("model.json")).unwrap()).unwrap();
    assert_eq!(meta["kind"], "ensemble");
    assert_eq!(meta["label_thresholds"].as_array().unwrap().len(), 4);
    assert_eq!(std::fs::read_to_string(p("m1").join("model.json")).unwrap(), m1_meta);
    let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("ens")), "--data", s(&p("valid.txt")), "--json"]).trim()).unwrap();
    assert!(v["micro_f1"].as_f64().unwrap() > 0.5, "{v}");

    // the ensemble holds copies of its members: it still works once they are gone
    std::fs::remove_dir_all(p("m1")).unwrap();
    std::fs::rename(p("ens"), p("ens-moved")).unwrap();
    let moved = probs("ens-moved");
    assert_eq!(moved.keys().collect::<Vec<_>>(), e.keys().collect::<Vec<_>>());

    // members of another label set are refused, and nothing is written
    let mut other = common::labelled_lines(300, 9).lines().filter(|l| !l.contains("__label__audio")).collect::<Vec<_>>().join("\n");
    other.push('\n');
    write(d.path(), "other.txt", other.as_bytes());
    ok(&["finetune", "--train", s(&p("other.txt")), "--valid", s(&p("valid.txt")), "--out", s(&p("m3")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--epochs", "1", "--vocab-size", "120", "-q"]);
    let e = fails(&["ensemble", "--model", s(&p("m2")), "--model", s(&p("m3")), "--out", s(&p("bad"))]);
    assert!(e.contains("m3") && e.contains("labels differ"), "{e}");
    assert!(!p("bad").exists() && !p(".bad.partial").exists(), "nothing left behind");
    let e = fails(&["ensemble", "--model", s(&p("m2")), "--out", s(&p("bad"))]);
    assert!(e.contains("at least two"), "{e}");

    // a member trained on other data orders the same labels otherwise (by its own label
    // frequencies): the ensemble matches outputs by label name
    let order = |m: &str| std::fs::read_to_string(p(m).join("labels.txt")).unwrap();
    let rarest = order("m2").lines().last().unwrap().to_owned();
    let mut skewed = String::new();
    for line in common::labelled_lines(500, 2).lines() {
        let copies = if line.contains(&format!("__label__{rarest}")) { 4 } else { 1 };
        (0..copies).for_each(|_| skewed.push_str(&format!("{line}\n")));
    }
    write(d.path(), "skewed.txt", skewed.as_bytes());
    ok(&["finetune", "--train", s(&p("skewed.txt")), "--valid", s(&p("valid.txt")), "--out", s(&p("m4")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--epochs", "1", "--vocab-size", "120", "-q"]);
    assert_eq!(order("m4").lines().next().unwrap(), rarest, "the skewed member orders its labels otherwise");
    ok(&["ensemble", "--model", &format!("{},{}", s(&p("m2")), s(&p("m4"))), "--out", s(&p("ens24"))]);
    assert_eq!(order("ens24"), order("m2"), "the ensemble keeps its first member's order");
    let (b, c, e) = (probs("m2"), probs("m4"), probs("ens24"));
    for (label, pe) in &e {
        let mean = (b[label] + c[label]) / 2.0;
        assert!((pe - mean).abs() < 2e-5, "{label}: ensemble {pe} vs mean of members {mean}");
    }
    // an ensemble is not a model to fine-tune from
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("x")), "--init", s(&p("ens-moved"))]);
    assert!(e.contains("ensemble"), "{e}");
}

#[test]
fn kept_epochs_average_into_one_model() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let train = |out: &str, backbone: &str, epochs: &str, extra: &[&str]| {
        let (tr, va, o, cf) = (p("train.txt.gz"), p("valid.txt"), p(out), p("tiny.toml"));
        let mut args = vec!["finetune", "--train", s(&tr), "--valid", s(&va), "--out", s(&o), "--preset", "tiny", "--config", s(&cf), "--backbone", backbone, "--epochs", epochs, "--vocab-size", "120", "-q"];
        args.extend_from_slice(extra);
        ok(&args);
    };
    train("run", "transformer", "3", &["--keep-epochs"]);
    let epoch = |k: usize| p("run").join("epochs").join(format!("epoch-{k}"));
    for k in 1..=3 {
        assert!(epoch(k).join("model.safetensors").exists(), "epoch {k} not kept");
    }
    // the run's model is the best epoch's, and that epoch's kept copy holds the same weights
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("run").join("model.json")).unwrap()).unwrap();
    let best = meta["info"]["best_epoch"].as_u64().unwrap() as usize;
    assert_eq!(common::weights_payload(&epoch(best)), common::weights_payload(&p("run")));
    assert_ne!(common::weights_payload(&epoch(2)), common::weights_payload(&epoch(3)), "epochs differ");

    // the average's every weight is the mean of the epochs' weights
    let list = format!("{},{},{}", s(&epoch(1)), s(&epoch(2)), s(&epoch(3)));
    let out = ok(&["average", "--model", &list, "--out", s(&p("avg")), "--tune-on", s(&p("valid.txt"))]);
    assert!(out.contains("average of 3 models") && out.contains("micro-F1"), "{out}");
    let (w1, w2, w3, avg) = (common::weights_f32(&epoch(1)), common::weights_f32(&epoch(2)), common::weights_f32(&epoch(3)), common::weights_f32(&p("avg")));
    assert_eq!(avg.keys().collect::<Vec<_>>(), w1.keys().collect::<Vec<_>>());
    for (name, a) in &avg {
        for i in 0..a.len() {
            let expect = (w1[name][i] + w2[name][i] + w3[name][i]) / 3.0;
            assert!((a[i] - expect).abs() <= 1e-6 * expect.abs().max(1.0), "{name}[{i}]: {} vs {expect}", a[i]);
        }
    }
    // a classifier like the others: it scores, predicts and is a member like the others
    let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("avg")), "--data", s(&p("valid.txt")), "--json"]).trim()).unwrap();
    assert!(v["micro_f1"].as_f64().unwrap() > 0.9, "{v}");

    // --max-len: the model's own length changes nothing; a shorter cut changes a long text's
    // probabilities; beyond the position table (max_len 32, no more rows) it is refused
    let long = "python network library ".repeat(20);
    write(d.path(), "long.txt", format!("{long}\n").as_bytes());
    let probs = |extra: &[&str]| {
        let (m, f) = (p("avg"), p("long.txt"));
        let mut args = vec!["predict", "--model", s(&m), s(&f), "--threshold", "0", "--probs"];
        args.extend_from_slice(extra);
        first_line_probs(&ok(&args))
    };
    assert_eq!(probs(&[]), probs(&["--max-len", "32"]));
    assert_ne!(probs(&[]), probs(&["--max-len", "8"]));
    let e = fails(&["eval", "--model", s(&p("avg")), "--data", s(&p("valid.txt")), "--max-len", "33"]);
    assert!(e.contains("--max-len 33") && e.contains("position table"), "{e}");
    // the same for sentence vectors
    let (m, f) = (p("avg"), p("long.txt"));
    let embed = |out: &str, extra: &[&str]| {
        let o = p(out);
        let mut args = vec!["embed", "--model", s(&m), "--data", s(&f), "--out", s(&o)];
        args.extend_from_slice(extra);
        common::bertlu(&args)
    };
    for (out, extra) in [("v.jsonl", &[][..]), ("v32.jsonl", &["--max-len", "32"][..]), ("v8.jsonl", &["--max-len", "8"][..])] {
        assert!(embed(out, extra).status.success(), "{out}");
    }
    let read = |f: &str| std::fs::read_to_string(p(f)).unwrap();
    assert_eq!(read("v.jsonl"), read("v32.jsonl"));
    assert_ne!(read("v.jsonl"), read("v8.jsonl"));
    let refused = embed("v33.jsonl", &["--max-len", "33"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("position table"));

    // what cannot be averaged is refused by name, and nothing is written
    let e = fails(&["average", "--model", s(&epoch(1)), "--out", s(&p("bad"))]);
    assert!(e.contains("at least two"), "{e}");
    train("cnn", "textcnn", "1", &[]);
    let e = fails(&["average", "--model", &format!("{},{}", s(&epoch(1)), s(&p("cnn"))), "--out", s(&p("bad"))]);
    assert!(e.contains("cnn") && e.contains("model.backbone differs"), "{e}");
    let e = fails(&["average", "--model", &format!("{},{}", s(&epoch(1)), s(&p("nope"))), "--out", s(&p("bad"))]);
    assert!(e.contains("nope"), "{e}");
    assert!(!p("bad").exists() && !p(".bad.partial").exists(), "nothing left behind");
}

#[test]
fn validation_texts_inside_the_training_set_are_pointed_out() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let stderr = |args: &[&str]| {
        let out = common::bertlu(args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(!stderr(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("w0")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "120", "--test-mode", "-q"]).contains("also training texts"));
    let err = stderr(&["finetune", "--train", &format!("{},{}", s(&p("train.txt.gz")), s(&p("valid.txt"))), "--valid", s(&p("valid.txt")), "--out", s(&p("w1")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--vocab-size", "120", "--test-mode", "-q"]);
    assert!(err.contains("valid.txt: 120 of 120 validation texts are also training texts"), "{err}");
    // --set reaches the run from the command line, and a bad one is one line naming it
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("x")), "--preset", "tiny", "--set", "finetune.epochs=zero"]);
    assert!(e.contains("--set finetune.epochs=zero"), "{e}");
    assert!(!p("x").exists() && !p(".x.partial").exists());
}

#[test]
fn pseudo_labels_the_unlabelled_documents_of_a_corpus() {
    use std::collections::HashSet;
    let d = setup();
    let p = |n: &str| d.path().join(n);
    ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("teacher")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--backbone", "textcnn", "--vocab-size", "120", "-q"]);
    let text_of = |l: &str| l.split(" __label__").next().unwrap().trim().to_owned();
    let train: Vec<String> = common::labelled_lines(500, 2).lines().map(text_of).collect();
    let valid: Vec<String> = common::labelled_lines(120, 3).lines().map(text_of).collect();
    let fresh: Vec<String> = common::corpus_lines(300, 11).lines().map(str::to_owned).collect();
    // the corpus: fresh documents, some training and validation texts (one spread over two
    // lines of a blank-line-separated document), a repeat, a text with a label word in it
    let mut corpus: Vec<String> = fresh.clone();
    corpus.extend(train[..20].iter().cloned());
    corpus.extend(valid[..10].iter().cloned());
    let (w, rest) = train[20].split_once(' ').unwrap();
    corpus.push(format!("{w}\n{rest}"));
    corpus.push(fresh[0].clone());
    corpus.push("a network tool __label__net".into());
    write(d.path(), "corpus.txt.gz", (corpus.join("\n\n") + "\n").as_bytes());
    let known: HashSet<&String> = train.iter().chain(&valid).collect();
    let expected: HashSet<&String> = fresh.iter().filter(|t| !known.contains(t)).collect();

    let out = ok(&["pseudo-label", "--model", s(&p("teacher")), "--corpus", s(&p("corpus.txt.gz")), "--exclude", &format!("{},{}", s(&p("train.txt.gz")), s(&p("valid.txt"))), "--out", s(&p("pseudo.txt"))]);
    assert!(out.contains(&format!("{} documents labelled", expected.len())) && out.contains("1 repeated") && out.contains("1 with __label__ words"), "{out}");
    assert!(out.contains(&format!("{} in the labelled files", 31 + fresh.iter().filter(|t| known.contains(t)).count())), "{out}");
    let written = std::fs::read_to_string(p("pseudo.txt")).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    let mut want: Vec<String> = Vec::new();
    for t in fresh.iter().filter(|t| expected.contains(t)) {
        if !want.contains(t) {
            want.push(t.clone());
        }
    }
    assert_eq!(lines.iter().map(|l| text_of(l)).collect::<Vec<_>>(), want, "the new documents, once each, in corpus order");
    // the teacher's labels: they follow the keyword rule it learnt, every line has one
    let rule = |t: &str| -> HashSet<String> { common::KEYWORDS.iter().filter(|(k, _)| t.split(' ').any(|w| w == *k)).map(|(_, l)| l.to_string()).collect() };
    let agree = lines.iter().filter(|l| { let labels: HashSet<String> = l.split(" __label__").skip(1).map(str::to_owned).collect(); !labels.is_empty() && labels == rule(&text_of(l)) }).count();
    assert!(agree * 10 >= lines.len() * 9, "{agree} of {} pseudo-labelled lines follow the rule", lines.len());
    // the file reads back as labelled data; scored against its own labels the teacher is exact
    let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("teacher")), "--data", s(&p("pseudo.txt")), "--json"]).trim()).unwrap();
    assert!(v["micro_precision"].as_f64().unwrap() > 0.99, "{v}");
    assert_eq!(v["examples"].as_u64().unwrap() as usize, expected.len());

    // an existing output is kept: refused without --overwrite, and untouched by a failed run
    let e = fails(&["pseudo-label", "--model", s(&p("teacher")), "--corpus", s(&p("corpus.txt.gz")), "--exclude", s(&p("train.txt.gz")), "--out", s(&p("pseudo.txt"))]);
    assert!(e.contains("already exists"), "{e}");
    write(d.path(), "only-train.txt", (train[..5].join("\n") + "\n").as_bytes());
    let e = fails(&["pseudo-label", "--model", s(&p("teacher")), "--corpus", s(&p("only-train.txt")), "--exclude", s(&p("train.txt.gz")), "--out", s(&p("pseudo.txt")), "--overwrite"]);
    assert!(e.contains("no document left"), "{e}");
    assert_eq!(std::fs::read_to_string(p("pseudo.txt")).unwrap(), written);
    assert!(!p(".pseudo.txt.tmp").exists());
}

#[test]
fn linear_model_learns_reloads_and_joins_an_ensemble() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let log = ok(&["linear", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("lin")), "--tune-thresholds", "micro"]);
    assert!(log.contains("4 labels") && log.contains("features"), "{log}");
    let v: serde_json::Value = serde_json::from_str(ok(&["eval", "--model", s(&p("lin")), "--data", s(&p("valid.txt")), "--json"]).trim()).unwrap();
    assert!(v["micro_f1"].as_f64().unwrap() > 0.9, "a keyword rule is easy for a bag of words: {v}");
    // the same command gives the same model; a saved model predicts what it predicted before
    ok(&["linear", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("lin2")), "--tune-thresholds", "micro"]);
    for f in ["linear.bin", "terms.txt", "linear.json"] {
        assert_eq!(std::fs::read(p("lin").join(f)).unwrap(), std::fs::read(p("lin2").join(f)).unwrap(), "{f}");
    }
    write(d.path(), "input.txt", b"a network tool for python\nsound files\n");
    let probs = |m: &str| first_line_probs(&ok(&["predict", "--model", s(&p(m)), s(&p("input.txt")), "--threshold", "0", "--probs"]));
    let lin = probs("lin");
    assert!(lin["__label__net"] > 0.5 && lin["__label__py"] > 0.5 && lin["__label__audio"] < 0.5, "{lin:?}");

    // with a fine-tuned model in one ensemble: the mean of the two
    ok(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("cnn")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--backbone", "textcnn", "--epochs", "2", "--vocab-size", "120", "-q"]);
    ok(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--out", s(&p("ens"))]);
    let (c, e) = (probs("cnn"), probs("ens"));
    for (label, pe) in &e {
        assert!((pe - (lin[label] + c[label]) / 2.0).abs() < 2e-5, "{label}");
    }
    // weighted: three parts linear, one part fine-tuned
    ok(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--weights", "3,1", "--out", s(&p("ens31"))]);
    for (label, pe) in &probs("ens31") {
        assert!((pe - (0.75 * lin[label] + 0.25 * c[label])).abs() < 2e-5, "{label}");
    }
    // the linear share chosen on validation: a weight vector of that share, stored and used
    let log = ok(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--tune-on", s(&p("valid.txt")), "--tune-linear-share", "--out", s(&p("enst"))]);
    assert!(log.contains("linear members' share"), "{log}");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("enst").join("model.json")).unwrap()).unwrap();
    let w: Vec<f64> = meta["member_weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(w.len() == 2 && (w[0] + w[1] - 1.0).abs() < 1e-9 && (w[0] * 20.0 - (w[0] * 20.0).round()).abs() < 1e-9, "{w:?}");
    for (label, pe) in &probs("enst") {
        assert!((pe - (w[0] * lin[label] + w[1] * c[label])).abs() < 2e-5, "{label}");
    }
    let e = fails(&["ensemble", "--model", &format!("{},{}", s(&p("cnn")), s(&p("cnn"))), "--tune-on", s(&p("valid.txt")), "--tune-linear-share", "--out", s(&p("bad"))]);
    assert!(e.contains("linear") && !p("bad").exists(), "{e}");
    // every member's weight chosen on validation: stored, used, and never below equal weights
    let log = ok(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--tune-on", s(&p("valid.txt")), "--tune-weights", "--out", s(&p("enw"))]);
    let line = log.lines().find(|l| l.starts_with("member weights")).unwrap_or_else(|| panic!("{log}"));
    let tuned: f64 = line.split("micro-F1 ").nth(1).unwrap()[..6].parse().unwrap();
    let equal: f64 = line.split('(').last().unwrap()[..6].parse().unwrap();
    let alone: Vec<f64> = line.split("alone: ").nth(1).unwrap().trim_end_matches(')').split(", ").map(|x| x.parse().unwrap()).collect();
    assert!(alone.len() == 2 && alone.iter().all(|&a| tuned >= a) && tuned >= equal, "{line}");
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("enw").join("model.json")).unwrap()).unwrap();
    let w: Vec<f64> = meta["member_weights"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(w.len() == 2 && (w[0] + w[1] - 1.0).abs() < 1e-9, "{w:?}");
    for (label, pe) in &probs("enw") {
        assert!((pe - (w[0] * lin[label] + w[1] * c[label])).abs() < 2e-5, "{label}");
    }
    let e = fails(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--tune-on", s(&p("valid.txt")), "--tune-weights", "--tune-linear-share", "--out", s(&p("bad"))]);
    assert!(e.contains("--tune-weights") && !p("bad").exists(), "{e}");
    // the fine-tuned member read at another length, kept in the ensemble: as `--max-len` on each use
    write(d.path(), "long.txt", b"a network tool for python that reads sound files and plays them over the network again and again\n");
    let long = |m: &str, extra: &[&str]| first_line_probs(&ok(&[&["predict", "--model", s(&p(m)), s(&p("long.txt")), "--threshold", "0", "--probs"][..], extra].concat()));
    ok(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--max-len", "8", "--out", s(&p("ens8"))]);
    assert_eq!(long("ens8", &[]), long("ens", &["--max-len", "8"]));
    assert_ne!(long("ens8", &[]), long("ens", &[]), "the long text is cut at 8 pieces");
    let member = std::fs::read_dir(p("ens8").join("members")).unwrap().map(|e| e.unwrap().path()).find(|m| m.join("config.toml").exists()).unwrap();
    assert!(std::fs::read_to_string(member.join("config.toml")).unwrap().contains("max_len = 8"));
    let e = fails(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--max-len", "2", "--out", s(&p("bad"))]);
    assert!(e.contains("--max-len 2") && !p("bad").exists(), "{e}");
    for bad in ["1", "1,-1", "0,0"] {
        let e = fails(&["ensemble", "--model", &format!("{},{}", s(&p("lin")), s(&p("cnn"))), "--weights", bad, "--out", s(&p("bad"))]);
        assert!(e.contains("--weights") && !p("bad").exists(), "{bad}: {e}");
    }
    // not a model to fine-tune from; a truncated weight file is refused by name
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("x")), "--init", s(&p("lin"))]);
    assert!(e.contains("linear"), "{e}");
    let w = std::fs::read(p("lin").join("linear.bin")).unwrap();
    std::fs::write(p("lin").join("linear.bin"), &w[..w.len() - 4]).unwrap();
    let e = fails(&["eval", "--model", s(&p("lin")), "--data", s(&p("valid.txt"))]);
    assert!(e.contains("linear.bin") && e.contains("truncated"), "{e}");
    let e = fails(&["linear", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("bad")), "--c", "0"]);
    assert!(e.contains("--c") && !p("bad").exists(), "{e}");
    let e = fails(&["linear", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("bad")), "--chars", "5-2"]);
    assert!(e.contains("--chars") && !p("bad").exists(), "{e}");
    // word features alone: fewer features, one block
    let log = ok(&["linear", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("words")), "--chars", "none"]);
    let blocks = |m: &str| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p(m).join("linear.json")).unwrap()).unwrap()["blocks"].as_array().unwrap().len();
    assert_eq!((blocks("words"), blocks("lin2")), (1, 2), "{log}");
}

#[test]
fn a_student_learns_what_its_teacher_says_not_only_the_gold() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    // a teacher that learnt the rule with `net` and `gfx` swapped: it calls a network tool gfx
    let train = common::labelled_lines(500, 2);
    let swapped = train.replace("__label__net", "__label__@").replace("__label__gfx", "__label__net").replace("__label__@", "__label__gfx");
    write(d.path(), "swapped.txt", swapped.as_bytes());
    ok(&["linear", "--train", s(&p("swapped.txt")), "--valid", s(&p("valid.txt")), "--out", s(&p("teacher"))]);
    write(d.path(), "input.txt", b"a network tool for the user\n");
    let probs = |m: &str| first_line_probs(&ok(&["predict", "--model", s(&p(m)), s(&p("input.txt")), "--threshold", "0", "--probs"]));
    let t = probs("teacher");
    assert!(t["__label__gfx"] > 0.5 && t["__label__net"] < 0.5, "{t:?}");
    let (tr, va, cfg) = (p("train.txt.gz"), p("valid.txt"), p("tiny.toml"));
    let student = |out: &str, extra: &[&str]| {
        let out = p(out);
        let args = [&["finetune", "--train", s(&tr), "--valid", s(&va), "--out", s(&out), "--preset", "tiny", "--config", s(&cfg), "--backbone", "textcnn", "--vocab-size", "120", "--seed", "5"][..], extra].concat();
        ok(&args)
    };
    // on the true gold alone the student calls it net; towards the teacher's probabilities alone, gfx
    student("gold", &[]);
    let log = student("distilled", &["--teacher", s(&p("teacher")), "--teacher-weight", "1"]);
    assert!(log.contains("teacher") && log.contains("knows 4 of the 4 labels"), "{log}");
    let (g, s1) = (probs("gold"), probs("distilled"));
    assert!(g["__label__net"] > 0.5 && g["__label__gfx"] < 0.5, "{g:?}");
    assert!(s1["__label__gfx"] > 0.5 && s1["__label__net"] < 0.5, "{s1:?}");
    // the weight is recorded, the teacher is an input of the run
    assert!(std::fs::read_to_string(p("distilled").join("config.toml")).unwrap().contains("teacher_weight = 1"));
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("distilled").join("run.json")).unwrap()).unwrap();
    assert!(run["inputs"].as_array().unwrap().iter().any(|i| i["role"] == "teacher"), "{run}");
    assert!(!std::fs::read_to_string(p("gold").join("config.toml")).unwrap().contains("teacher_weight"));

    // refused, one line each, nothing written: a weight outside [0, 1], a teacher of another
    // problem type, a teacher that is not a model, a weight without a teacher
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("bad")), "--teacher", s(&p("teacher")), "--teacher-weight", "1.5"]);
    assert!(e.contains("teacher_weight"), "{e}");
    let single: String = train.lines().map(|l| l.split(" __label__").take(2).collect::<Vec<_>>().join(" __label__") + "\n").collect();
    write(d.path(), "single.txt", single.as_bytes());
    let e = fails(&["finetune", "--train", s(&p("single.txt")), "--valid", s(&p("single.txt")), "--out", s(&p("bad")), "--teacher", s(&p("teacher"))]);
    assert!(e.contains("--teacher") && e.contains("cannot teach"), "{e}");
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("bad")), "--teacher", s(&p("nowhere"))]);
    assert!(e.contains("--teacher") && e.contains("nowhere"), "{e}");
    let e = fails(&["finetune", "--train", s(&p("train.txt.gz")), "--valid", s(&p("valid.txt")), "--out", s(&p("bad")), "--teacher-weight", "0.5"]);
    assert!(e.contains("--teacher"), "{e}");
    assert!(!p("bad").exists());
}
