//! `bertlu report`: a training run's curves (SVG) and a Markdown summary, from its
//! `metrics.csv` and `run.json`.

use crate::store::atomic::write_atomic;
use crate::apps::plot::{self, Panel, Series};
use crate::store::layout::RUN_FILE;
use crate::store::run_info::RunInfo;
use crate::train::metrics_log::{read_csv, MetricsRow};
use crate::store::layout::METRICS_FILE;
use anyhow::{bail, Context, Result};
use std::path::Path;
use crate::store::layout::{REPORT_MD, REPORT_SVG};


fn series(name: &str, rows: &[&MetricsRow], f: impl Fn(&MetricsRow) -> Option<f64>) -> Series {
    Series { name: name.to_owned(), points: rows.iter().filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.step as f64, v))).collect() }
}

fn median(v: Vec<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| crate::eval::stats::median(&v))
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "–".into())
}

/// Panels of the run's curves: losses, validation scores and the learning rate, against steps.
pub fn panels(rows: &[MetricsRow]) -> Vec<Panel> {
    let train: Vec<&MetricsRow> = rows.iter().filter(|r| r.kind == "train").collect();
    let valid: Vec<&MetricsRow> = rows.iter().filter(|r| r.kind == "valid").collect();
    let finetune = valid.iter().any(|r| r.micro_f1.is_some());
    let nsp = rows.iter().any(|r| r.nsp_valid_accuracy.is_some() || r.nsp_train_accuracy.is_some());
    let mut losses = vec![series("train (running mean)", &train, |r| r.train_loss), series("validation", &valid, |r| r.valid_loss)];
    if nsp {
        losses.push(series("next-sentence train", &train, |r| r.nsp_train_loss));
        losses.push(series("next-sentence validation", &valid, |r| r.nsp_valid_loss));
    }
    let loss = Panel { title: "loss".into(), x_label: "step".into(), y_label: "loss".into(), series: losses.into_iter().filter(|s| !s.points.is_empty()).collect() };
    let scores = if finetune {
        Panel {
            title: "validation F1".into(),
            x_label: "step".into(),
            y_label: "F1".into(),
            series: vec![series("micro-F1", &valid, |r| r.micro_f1), series("macro-F1", &valid, |r| r.macro_f1)],
        }
    } else {
        let mut acc = vec![series("masked-token train", &train, |r| r.train_accuracy), series("masked-token validation", &valid, |r| r.valid_accuracy)];
        if nsp {
            acc.push(series("next-sentence train", &train, |r| r.nsp_train_accuracy));
            acc.push(series("next-sentence validation", &valid, |r| r.nsp_valid_accuracy));
        }
        Panel { title: "pre-training accuracy".into(), x_label: "step".into(), y_label: "accuracy".into(), series: acc.into_iter().filter(|s| !s.points.is_empty()).collect() }
    };
    let lr = Panel { title: "learning rate".into(), x_label: "step".into(), y_label: "lr".into(), series: vec![series("lr", &train, |r| Some(r.lr))] };
    vec![loss, scores, lr]
}

/// The Markdown summary: the run's facts, one line an epoch, throughput.
pub fn markdown(rows: &[MetricsRow], info: Option<&RunInfo>, dir: &Path) -> String {
    let valid: Vec<&MetricsRow> = rows.iter().filter(|r| r.kind == "valid").collect();
    let train: Vec<&MetricsRow> = rows.iter().filter(|r| r.kind == "train").collect();
    let finetune = valid.iter().any(|r| r.micro_f1.is_some());
    let mut s = format!("# Run report: {}\n\n", dir.display());
    if let Some(i) = info {
        s.push_str(&format!("- task: {}; bertlu {}, Burn {}, backend {}, {} threads, seed {}\n", i.task, i.bertlu_version, i.burn_version, i.backend, i.threads, i.seed));
        for f in &i.inputs {
            s.push_str(&format!("- {}: `{}` ({} bytes, fnv64 {})\n", f.role, f.path, f.bytes, f.fnv64));
        }
        for (k, a) in i.attempts.iter().enumerate() {
            let secs = a.finished.map(|f| format!("{} s", f.saturating_sub(a.started))).unwrap_or_else(|| "still running or killed".into());
            let mem = a.peak_rss_mib.map(|m| format!(", peak memory {m:.0} MiB")).unwrap_or_default();
            s.push_str(&format!("- attempt {}: {} — {secs}{mem}\n", k + 1, a.outcome));
        }
    }
    let last = rows.last().map(|r| r.seconds).unwrap_or(0.0);
    s.push_str(&format!("- steps: {}, training time {:.0} s\n", rows.last().map(|r| r.step).unwrap_or(0), last));
    s.push_str(&format!(
        "- throughput (median over {} logged windows): {} tokens/s, {} examples/s\n\n",
        train.len(),
        median(train.iter().filter_map(|r| r.tokens_per_s).collect()).map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into()),
        median(train.iter().filter_map(|r| r.examples_per_s).collect()).map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into()),
    ));
    if finetune {
        // the first epoch with the best micro-F1, as fine-tuning keeps it
        let best = valid.iter().filter(|r| r.micro_f1.is_some()).fold(None::<&&MetricsRow>, |b, r| match b {
            Some(b) if b.micro_f1 >= r.micro_f1 => Some(b),
            _ => Some(r),
        });
        s.push_str("| epoch | step | valid loss | micro-F1 | macro-F1 | seconds |\n|---|---|---|---|---|---|\n");
        for r in &valid {
            let mark = if best.is_some_and(|b| b.epoch == r.epoch) { " **(kept)**" } else { "" };
            s.push_str(&format!("| {}{mark} | {} | {} | {} | {} | {:.0} |\n", r.epoch, r.step, fmt(r.valid_loss), fmt(r.micro_f1), fmt(r.macro_f1), r.seconds));
        }
    } else {
        s.push_str("| epoch | step | valid loss | valid masked-token accuracy | valid next-sentence loss | valid next-sentence accuracy | seconds |\n|---|---|---|---|---|---|---|\n");
        for r in &valid {
            s.push_str(&format!("| {} | {} | {} | {} | {} | {} | {:.0} |\n", r.epoch, r.step, fmt(r.valid_loss), fmt(r.valid_accuracy), fmt(r.nsp_valid_loss), fmt(r.nsp_valid_accuracy), r.seconds));
        }
    }
    s.push_str(&format!("\nCurves: `{REPORT_SVG}` (loss, {} and learning rate against steps).\n", if finetune { "validation F1" } else { "pre-training accuracies" }));
    s
}

/// Reads a run directory (finished or the hidden work directory of a running or killed one) and
/// writes `report.svg` and `report.md` into it; returns the Markdown.
pub fn report(dir: &Path) -> Result<String> {
    let metrics = dir.join(METRICS_FILE);
    if !metrics.exists() {
        bail!("{}: no {METRICS_FILE} here (is this a pretrain or finetune output directory?)", dir.display());
    }
    let rows = read_csv(&metrics)?;
    if rows.is_empty() {
        bail!("{}: no rows yet", metrics.display());
    }
    let info: Option<RunInfo> = match std::fs::read_to_string(dir.join(RUN_FILE)) {
        Ok(t) => Some(serde_json::from_str(&t).with_context(|| format!("{}: invalid", dir.join(RUN_FILE).display()))?),
        Err(_) => None,
    };
    write_atomic(&dir.join(REPORT_SVG), plot::svg(&panels(&rows), 460, 360)?.as_bytes())?;
    let md = markdown(&rows, info.as_ref(), dir);
    write_atomic(&dir.join(REPORT_MD), md.as_bytes())?;
    Ok(md)
}
