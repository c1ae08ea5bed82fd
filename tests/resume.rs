//! Killed and interrupted runs resume from their checkpoints and end exactly where an
//! uninterrupted run ends; metrics.csv records the run.

mod common;

use common::{fails, ok, s, write};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "corpus.txt", common::corpus_lines(800, 1).as_bytes());
    write(dir.path(), "train.txt", common::labelled_lines(500, 2).as_bytes());
    write(dir.path(), "valid.txt", common::labelled_lines(120, 3).as_bytes());
    write(dir.path(), "tiny.toml", common::TINY_TOML.as_bytes());
    ok(&["vocab", "--corpus", s(&dir.path().join("corpus.txt")), "--out", s(&dir.path().join("voc")), "--size", "150"]);
    dir
}

/// The seed that picks a kill step: `BERTLU_TEST_SEED` when set, so a failure repeats, else a
/// fresh one each run. Every assertion that depends on it prints it.
fn kill_seed() -> u64 {
    let fresh = || std::process::id() as u64 ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
    std::env::var("BERTLU_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(fresh)
}

/// How a failure names its kill step and the seed that chose it.
fn killed_at(step: usize, seed: u64) -> String {
    format!("killed at step {step} (rerun with BERTLU_TEST_SEED={seed} to repeat)")
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_bertlu")).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until checkpoint `step` of the hidden work directory of `out` is complete.
fn wait_for_checkpoint(out: &Path, step: usize, child: &mut Child) {
    let work = out.parent().unwrap().join(format!(".{}.partial", out.file_name().unwrap().to_str().unwrap()));
    let ckpt = work.join("checkpoints").join(format!("step-{step:09}"));
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before checkpoint {step}");
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint {step}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Columns of metrics.csv that do not depend on timing (throughput and seconds left out).
fn metric_columns(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let keep: Vec<usize> = (0..header.len()).filter(|&i| !matches!(header[i], "tokens_per_s" | "examples_per_s" | "seconds")).collect();
    text.lines().map(|l| { let c: Vec<&str> = l.split(',').collect(); keep.iter().map(|&i| c[i]).collect::<Vec<_>>().join(",") }).collect()
}

/// The epoch log of model.json without wall times.
fn epochs_without_time(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    let info = &mut v["info"];
    let list = if info.is_array() { info } else { &mut info["epochs"] };
    for e in list.as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seconds");
    }
    v["info"].clone()
}

fn args(base: &[&str], out: &Path, extra: &[&str]) -> Vec<String> {
    base.iter().map(|a| a.to_string()).chain(["--out".to_string(), s(out).to_string()]).chain(extra.iter().map(|a| a.to_string())).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Starts a run, SIGKILLs it (no chance to clean up) once checkpoint `step` is written.
fn kill_at(args: &[String], out: &Path, step: usize) {
    let mut child = spawn(args);
    wait_for_checkpoint(out, step, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed run is not committed");
}

#[test]
fn a_weight_average_leaves_training_alone_and_resumes_to_the_same_model() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let (train, valid, voc, toml) = (p("train.txt"), p("valid.txt"), p("voc"), p("tiny.toml"));
    let base = ["finetune", "--train", s(&train), "--valid", s(&valid), "--vocab", s(&voc), "--preset", "tiny", "--config", s(&toml), "--checkpoint-every", "3", "--epochs", "3", "-q"];
    let (plain, avg, killed) = (p("plain"), p("avg"), p("killed"));
    ok(&refs(&args(&base, &plain, &[])));
    ok(&refs(&args(&base, &avg, &["--ema", "0.9"])));
    assert!(std::fs::read_to_string(avg.join("config.toml")).unwrap().contains("ema = 0.9"));
    // the average is only read, never trained: the last step's weights score as without it
    let (pe, ae) = (epochs_without_time(&plain), epochs_without_time(&avg));
    let (pe, ae) = (pe["epochs"].as_array().unwrap(), ae["epochs"].as_array().unwrap());
    assert_eq!(pe.len(), 3);
    for (p, a) in pe.iter().zip(ae) {
        assert_eq!(p["micro_f1"], a["last_step_micro_f1"], "{p} / {a}");
        assert!(p.get("last_step_micro_f1").is_none());
        assert!(a["micro_f1"].as_f64().unwrap() > 0.5, "the average learns the task too: {a}");
    }
    // ... and it is what gets scored and saved
    write(d.path(), "in.txt", b"a network tool for python\nsound files\ngraphics and data\n");
    let pred = |m: &Path| ok(&["predict", "--model", s(m), s(&p("in.txt")), "--probs"]);
    assert_ne!(pred(&avg), pred(&plain));
    let e = fails(&refs(&args(&base, &p("bad"), &["--ema", "1"])));
    assert!(e.contains("finetune.ema must be in [0, 1)"), "{e}");
    // killed in the second epoch, the average is restored with the weights
    let seed = kill_seed();
    let step = 3 * rand::rngs::StdRng::seed_from_u64(seed).random_range(11..21usize);
    kill_at(&args(&base, &killed, &["--ema", "0.9"]), &killed, step);
    ok(&refs(&args(&base, &killed, &["--ema", "0.9", "--resume"])));
    assert_eq!(epochs_without_time(&killed), epochs_without_time(&avg), "{}", killed_at(step, seed));
    assert_eq!(pred(&killed), pred(&avg), "{}", killed_at(step, seed));
}

#[test]
fn finetune_killed_at_a_random_step_resumes_to_the_same_model() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let (train, valid, voc, toml) = (p("train.txt"), p("valid.txt"), p("voc"), p("tiny.toml"));
    let base = ["finetune", "--train", s(&train), "--valid", s(&valid), "--vocab", s(&voc), "--preset", "tiny", "--config", s(&toml), "--checkpoint-every", "3", "-q"];
    let full: PathBuf = p("full");
    ok(&refs(&args(&base, &full, &[])));
    // 500 examples / batch 16 = 32 steps an epoch, 6 epochs: kill somewhere in the first five
    let seed = kill_seed();
    let step = 3 * rand::rngs::StdRng::seed_from_u64(seed).random_range(1..50usize);
    let killed = p("killed");
    kill_at(&args(&base, &killed, &[]), &killed, step);
    // the same command without --resume refuses to throw the checkpoints away
    let e = fails(&refs(&args(&base, &killed, &[])));
    assert!(e.contains("--resume"), "{e}");
    // another learning rate is another run
    let e = fails(&refs(&args(&base, &killed, &["--resume", "--lr", "0.001"])));
    assert!(e.contains("configuration"), "{e}");
    ok(&refs(&args(&base, &killed, &["--resume"])));
    assert_eq!(epochs_without_time(&killed), epochs_without_time(&full), "{}", killed_at(step, seed));
    assert_eq!(metric_columns(&killed), metric_columns(&full), "{}", killed_at(step, seed));
    assert!(!killed.join("checkpoints").exists(), "checkpoints of a finished run are removed");
    // run.json records both starts: the killed one never finished
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(killed.join("run.json")).unwrap()).unwrap();
    let attempts = run["attempts"].as_array().unwrap();
    let outcomes: Vec<&str> = attempts.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.len(), 3, "{run}");
    assert_eq!((outcomes[0], outcomes[2]), ("running", "finished"));
    assert!(outcomes[1].contains("another configuration"), "the refused resume is recorded: {}", outcomes[1]);
    assert!(attempts[0]["finished"].is_null() && attempts[2]["command"].as_array().unwrap().iter().any(|c| c == "--resume"));
    assert_eq!(run["inputs"][0]["bytes"].as_u64().unwrap(), std::fs::metadata(&train).unwrap().len());
    write(d.path(), "in.txt", b"a network tool for python\nsound files\ngraphics and data\n");
    let pred = |m: &Path| ok(&["predict", "--model", s(m), s(&p("in.txt")), "--probs"]);
    assert_eq!(pred(&killed), pred(&full), "{}", killed_at(step, seed));
    let e = fails(&refs(&args(&base, &killed, &["--resume"])));
    assert!(e.contains("finished"), "{e}");
}

#[test]
fn pretrain_interrupted_by_ctrl_c_saves_and_resumes_bit_for_bit() {
    interrupted_pretraining_resumes("mlm");
    // sentence pairs are rebuilt alike on every pass, and the next-sentence numbers carry over
    interrupted_pretraining_resumes("mlm,nsp");
    // ELECTRA: the generator, its samples (seeded by step) and the detection numbers carry over
    interrupted_pretraining_resumes("electra");
}

fn interrupted_pretraining_resumes(tasks: &str) {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let (corpus, voc, toml) = (p("corpus.txt"), p("voc"), p("tiny.toml"));
    let base = ["pretrain", "--corpus", s(&corpus), "--vocab", s(&voc), "--preset", "tiny", "--config", s(&toml), "--epochs", "4", "--checkpoint-every", "4", "--keep-checkpoints", "3", "--tasks", tasks, "--keep-epochs"];
    let full = p("full");
    ok(&refs(&args(&base, &full, &["-q"])));
    let stopped = p("stopped");
    let mut child = spawn(&args(&base, &stopped, &["-q"]));
    wait_for_checkpoint(&stopped, 60, &mut child);
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at step") && err.contains("--resume"), "{err}");
    let work = p(".stopped.partial").join("checkpoints");
    let kept: Vec<_> = std::fs::read_dir(&work).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(kept.len() <= 3 && kept.iter().all(|n| n.starts_with("step-") && !n.ends_with(".tmp")), "{kept:?}");
    let resumed = ok(&refs(&args(&base, &stopped, &["--resume"])));
    assert!(resumed.contains("resumed from"), "{resumed}");
    assert_eq!(epochs_without_time(&stopped), epochs_without_time(&full));
    assert_eq!(metric_columns(&stopped), metric_columns(&full));
    let nsp_logged = epochs_without_time(&full).as_array().unwrap().iter().all(|e| e["nsp_valid_accuracy"].is_f64());
    assert_eq!(nsp_logged, tasks.contains("nsp"), "{tasks}");
    // every weight identical
    let payload = common::weights_payload;
    assert!(payload(&stopped) == payload(&full), "weights differ after resume");
    // the epochs kept before and after the interruption are those of the uninterrupted run
    for e in 1..=4 {
        let dir = |run: &Path| run.join("epochs").join(format!("epoch-{e}"));
        assert!(payload(&dir(&stopped)) == payload(&dir(&full)), "kept epoch {e} differs after resume");
    }
    assert!(std::fs::read_dir(stopped.join("epochs")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
}

#[test]
fn metrics_csv_has_a_row_per_log_interval_and_per_epoch() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    ok(&["finetune", "--train", s(&p("train.txt")), "--valid", s(&p("valid.txt")), "--vocab", s(&p("voc")), "--out", s(&p("clf")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "-q"]);
    let text = std::fs::read_to_string(p("clf").join("metrics.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let col = |name: &str| text.lines().next().unwrap().split(',').position(|c| c == name).unwrap();
    let valid: Vec<&Vec<&str>> = rows.iter().filter(|r| r[2] == "valid").collect();
    let train: Vec<&Vec<&str>> = rows.iter().filter(|r| r[2] == "train").collect();
    assert_eq!(valid.len(), 6, "one validation row an epoch: {text}");
    // 6 epochs × 32 steps = 192 steps: training rows at 50, 100, 150
    assert_eq!(train.iter().map(|r| r[0]).collect::<Vec<_>>(), ["50", "100", "150"]);
    // the kept model's log (written at its epoch) agrees with the CSV
    let model: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("clf").join("model.json")).unwrap()).unwrap();
    let best = model["info"]["best_epoch"].as_u64().unwrap() as usize;
    let logged = model["info"]["epochs"][best - 1]["micro_f1"].as_f64().unwrap();
    let csv_f1: f64 = valid[best - 1][col("micro_f1")].parse().unwrap();
    assert!((csv_f1 - logged).abs() < 1e-6, "{csv_f1} vs {logged}");
    let max = valid.iter().map(|r| r[col("micro_f1")].parse::<f64>().unwrap()).fold(0.0, f64::max);
    assert_eq!(csv_f1, max, "the kept epoch has the best validation micro-F1");
    assert!(train.iter().all(|r| r[col("train_loss")].parse::<f64>().unwrap() > 0.0 && r[col("tokens_per_s")].parse::<f64>().unwrap() > 0.0));

    // report: the summary marks the kept epoch; the plot has the three panels
    let md = ok(&["report", s(&p("clf"))]);
    assert!(md.contains(&format!("| {best} **(kept)** |")), "{md}");
    assert!(md.contains("attempt 1: finished") && md.contains("peak memory"), "{md}");
    let svg = std::fs::read_to_string(p("clf").join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("validation F1") && svg.contains("learning rate"), "{}", &svg[..200.min(svg.len())]);
    // --json-logs: every stdout line is one JSON object; epochs, then "done"
    let out = ok(&["finetune", "--train", s(&p("train.txt")), "--valid", s(&p("valid.txt")), "--vocab", s(&p("voc")), "--out", s(&p("json")), "--preset", "tiny", "--config", s(&p("tiny.toml")), "--epochs", "2", "--json-logs"]);
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let kinds: Vec<&str> = events.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "epoch").count(), 2, "{out}");
    assert_eq!(*kinds.last().unwrap(), "done");
    assert!(events.iter().filter(|v| v["event"] == "epoch").all(|v| v["micro_f1"].is_f64() && v["task"] == "finetune"));
    let e = fails(&["report", s(&p("voc"))]);
    assert!(e.contains("metrics.csv"), "{e}");
}

#[test]
fn a_time_budget_becomes_steps_that_resume_and_repeat_exactly() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let (corpus, voc, toml) = (p("corpus.txt"), p("voc"), p("tiny.toml"));
    let base = ["pretrain", "--corpus", s(&corpus), "--vocab", s(&voc), "--preset", "tiny", "--config", s(&toml), "--checkpoint-every", "4"];
    // a budget with no room for a step is refused before anything is written
    let err = fails(&refs(&args(&base, &p("none"), &["--time-budget", "0.001s", "-q"])));
    assert!(err.contains("no time left to train"), "{err}");
    assert!(!p("none").exists());
    // killed mid-run, then resumed with the same command: the steps come from the checkpoint
    let budget = p("budget");
    let budget_args = args(&base, &budget, &["--time-budget", "8s", "--epochs", "1", "-q"]);
    kill_at(&budget_args, &budget, 8);
    let resumed = ok(&refs(&args(&base, &budget, &["--time-budget", "8s", "--epochs", "1", "--resume"])));
    assert!(resumed.contains("resumed from") && !resumed.contains("steps fit"), "{resumed}");
    let cfg: toml::Table = toml::from_str(&std::fs::read_to_string(budget.join("config.toml")).unwrap()).unwrap();
    let steps = cfg["pretrain"]["max_steps"].as_integer().unwrap();
    let epochs = cfg["pretrain"]["epochs"].as_integer().unwrap();
    assert!(steps >= 8, "{steps} steps");
    // the run the log names as its equal without a budget gives every number and weight again
    let plain = p("plain");
    let log = ok(&refs(&args(&base, &plain, &["--epochs", &epochs.to_string(), "--max-steps", &steps.to_string()])));
    assert!(!log.contains("time budget"), "{log}");
    assert_eq!(epochs_without_time(&plain), epochs_without_time(&budget));
    assert_eq!(metric_columns(&plain), metric_columns(&budget));
    assert!(common::weights_payload(&plain) == common::weights_payload(&budget), "weights differ from the budget's equal");
}

#[test]
fn an_interrupted_comparison_resumes_reusing_its_finished_parts() {
    let d = setup();
    let p = |n: &str| d.path().join(n);
    let (corpus, train, valid, voc, toml) = (p("corpus.txt"), p("train.txt"), p("valid.txt"), p("voc"), p("tiny.toml"));
    let base = [
        "compare", "--corpus", s(&corpus), "--train", s(&train), "--valid", s(&valid), "--test", s(&valid),
        "--vocab", s(&voc), "--preset", "tiny", "--config", s(&toml), "--backbone", "textcnn", "--lr-grid", "1e-3,3e-3",
        "--epochs", "3", "--pretrain-max-steps", "40", "--checkpoint-every", "4", "--keep-checkpoints", "50",
    ];
    let full = p("full");
    ok(&refs(&args(&base, &full, &["-q"])));
    // stopped in the second fine-tuning run: the pre-training and the first run have finished
    let stopped = p("stopped");
    let mut child = spawn(&args(&base, &stopped, &["-q"]));
    let work = p(".stopped.partial");
    let ckpt = work.join("runs").join("textcnn-scratch-lr3e-3").join("checkpoints").join(format!("step-{:09}", 20));
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the comparison ended before its second run's checkpoint");
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint in the second run");
        std::thread::sleep(Duration::from_micros(500));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(work.join("pretrained-textcnn").join("compare-part.json").is_file() && work.join("runs/textcnn-scratch-lr1e-3/compare-part.json").is_file());

    // the same command without --resume keeps what was done and says how to go on
    let e = fails(&refs(&args(&base, &stopped, &[])));
    assert!(e.contains("--resume") && e.contains("--overwrite"), "{e}");
    assert!(work.join("runs/textcnn-scratch-lr1e-3/compare-part.json").is_file());
    // another job is not resumed into these parts
    let mut other = args(&base, &stopped, &["--resume"]);
    let grid = other.iter().position(|a| a == "--lr-grid").unwrap() + 1;
    other[grid] = "1e-3,2e-3".into();
    let e = fails(&refs(&other));
    assert!(e.contains("other settings"), "{e}");

    let resumed = ok(&refs(&args(&base, &stopped, &["--resume"])));
    assert!(resumed.contains("pre-training (mlm) finished before, reused"), "{resumed}");
    assert!(resumed.contains("scratch, lr 1e-3: finished before, reused"), "{resumed}");
    assert!(resumed.contains("scratch, lr 3e-3, resumed") && resumed.contains("resumed from"), "{resumed}");
    assert!(!work.exists() && stopped.join("compare.md").is_file());
    // every run ends where the uninterrupted comparison's did: scores, choices, test scores, weights
    let without_time = |dir: &Path| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("compare.json")).unwrap()).unwrap();
        for arm in v[0]["arms"].as_array_mut().unwrap() {
            arm["pretrain"].as_object_mut().map(|m| m.remove("seconds"));
            arm["pretrain"].as_object_mut().map(|m| m.remove("dir"));
            for run in arm["runs"].as_array_mut().unwrap() {
                run.as_object_mut().unwrap().remove("dir");
                for e in run["report"]["epochs"].as_array_mut().unwrap() {
                    e.as_object_mut().unwrap().remove("seconds");
                }
            }
        }
        v
    };
    assert_eq!(without_time(&stopped), without_time(&full));
    for run in ["textcnn-scratch-lr1e-3", "textcnn-scratch-lr3e-3", "textcnn-pre-trained-lr3e-3"] {
        assert!(common::weights_payload(&stopped.join("runs").join(run)) == common::weights_payload(&full.join("runs").join(run)), "{run} differs after resume");
    }
    // a finished comparison has nothing to resume
    let e = fails(&refs(&args(&base, &stopped, &["--resume"])));
    assert!(e.contains("nothing to resume"), "{e}");
}
