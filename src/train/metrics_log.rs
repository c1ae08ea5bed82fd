//! `metrics.csv`: the numbers of a training run as it goes — a row every [`LOG_EVERY`] steps
//! (training loss, learning rate, throughput) and a row at each epoch end (validation scores).

use crate::store::atomic::write_atomic;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;


/// Steps between two training rows.
pub const LOG_EVERY: usize = 50;

/// One row; absent values are empty cells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Optimiser steps done.
    pub step: usize,
    /// 1-based epoch.
    pub epoch: usize,
    /// "train" (running numbers since the previous row) or "valid" (end of an epoch).
    pub kind: String,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean training loss since the previous training row.
    pub train_loss: Option<f64>,
    /// Masked-token accuracy on training batches since the previous row (pre-training).
    pub train_accuracy: Option<f64>,
    /// Validation loss.
    pub valid_loss: Option<f64>,
    /// Validation masked-token accuracy (pre-training).
    pub valid_accuracy: Option<f64>,
    /// Validation micro-F1 (fine-tuning).
    pub micro_f1: Option<f64>,
    /// Validation macro-F1 (fine-tuning).
    pub macro_f1: Option<f64>,
    /// Next-sentence loss on training batches since the previous row (pre-training with nsp).
    pub nsp_train_loss: Option<f64>,
    /// Next-sentence accuracy on training batches since the previous row.
    pub nsp_train_accuracy: Option<f64>,
    /// Next-sentence loss on the held-out pairs.
    pub nsp_valid_loss: Option<f64>,
    /// Next-sentence accuracy on the held-out pairs.
    pub nsp_valid_accuracy: Option<f64>,
    /// Replaced-token detection loss on training batches since the previous row (electra).
    pub rtd_train_loss: Option<f64>,
    /// Share of non-padding positions the discriminator classified right (electra).
    pub rtd_train_accuracy: Option<f64>,
    /// Replaced-token detection loss on the held-out sequences.
    pub rtd_valid_loss: Option<f64>,
    /// Replaced-token detection accuracy on the held-out sequences.
    pub rtd_valid_accuracy: Option<f64>,
    /// Share of non-padding positions the generator replaced (training batches since the
    /// previous row, or held-out at an epoch's end): the "all original" rate is 1 minus it.
    pub replaced_share: Option<f64>,
    /// Word pieces a second since the previous training row.
    pub tokens_per_s: Option<f64>,
    /// Examples (sequences) a second since the previous training row.
    pub examples_per_s: Option<f64>,
    /// Seconds of training so far.
    pub seconds: f64,
}

const HEADER: &str = "step,epoch,kind,lr,train_loss,train_accuracy,valid_loss,valid_accuracy,micro_f1,macro_f1,nsp_train_loss,nsp_train_accuracy,nsp_valid_loss,nsp_valid_accuracy,rtd_train_loss,rtd_train_accuracy,rtd_valid_loss,rtd_valid_accuracy,replaced_share,tokens_per_s,examples_per_s,seconds";
/// The header before the replaced-token (electra) columns existed; such files still read.
const HEADER_V2: &str = "step,epoch,kind,lr,train_loss,train_accuracy,valid_loss,valid_accuracy,micro_f1,macro_f1,nsp_train_loss,nsp_train_accuracy,nsp_valid_loss,nsp_valid_accuracy,tokens_per_s,examples_per_s,seconds";
/// The header before the next-sentence columns existed; such files still read.
const HEADER_V1: &str = "step,epoch,kind,lr,train_loss,train_accuracy,valid_loss,valid_accuracy,micro_f1,macro_f1,tokens_per_s,examples_per_s,seconds";

fn cell(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// Writes all rows (atomically: a reader never sees half a file).
pub fn write_csv(rows: &[MetricsRow], path: &Path) -> Result<()> {
    let mut s = String::from(HEADER);
    s.push('\n');
    for r in rows {
        let cells = [r.train_loss, r.train_accuracy, r.valid_loss, r.valid_accuracy, r.micro_f1, r.macro_f1, r.nsp_train_loss, r.nsp_train_accuracy, r.nsp_valid_loss, r.nsp_valid_accuracy, r.rtd_train_loss, r.rtd_train_accuracy, r.rtd_valid_loss, r.rtd_valid_accuracy, r.replaced_share, r.tokens_per_s, r.examples_per_s];
        let cells: Vec<String> = cells.into_iter().map(cell).collect();
        s.push_str(&format!("{},{},{},{:e},{},{:.3}\n", r.step, r.epoch, r.kind, r.lr, cells.join(","), r.seconds));
    }
    write_atomic(path, s.as_bytes())
}

/// Reads a `metrics.csv` written by [`write_csv`] (or by a build before the next-sentence or
/// the replaced-token columns).
pub fn read_csv(path: &Path) -> Result<Vec<MetricsRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if ![HEADER, HEADER_V2, HEADER_V1].contains(&header) {
        bail!("{}:1: not a bertlu metrics file (unexpected header)", path.display());
    }
    let names: Vec<&str> = header.split(',').collect();
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let at = || format!("{}:{}", path.display(), i + 2);
        let c: Vec<&str> = line.split(',').collect();
        if c.len() != names.len() {
            bail!("{}: expected {} columns, found {}", at(), names.len(), c.len());
        }
        let get = |name: &str| names.iter().position(|&n| n == name).map_or("", |k| c[k]);
        let opt = |name: &str| -> Result<Option<f64>> {
            let s = get(name);
            if s.is_empty() { Ok(None) } else { Ok(Some(s.parse().with_context(at)?)) }
        };
        rows.push(MetricsRow {
            step: get("step").parse().with_context(at)?,
            epoch: get("epoch").parse().with_context(at)?,
            kind: get("kind").to_owned(),
            lr: get("lr").parse().with_context(at)?,
            train_loss: opt("train_loss")?,
            train_accuracy: opt("train_accuracy")?,
            valid_loss: opt("valid_loss")?,
            valid_accuracy: opt("valid_accuracy")?,
            micro_f1: opt("micro_f1")?,
            macro_f1: opt("macro_f1")?,
            nsp_train_loss: opt("nsp_train_loss")?,
            nsp_train_accuracy: opt("nsp_train_accuracy")?,
            nsp_valid_loss: opt("nsp_valid_loss")?,
            nsp_valid_accuracy: opt("nsp_valid_accuracy")?,
            rtd_train_loss: opt("rtd_train_loss")?,
            rtd_train_accuracy: opt("rtd_train_accuracy")?,
            rtd_valid_loss: opt("rtd_valid_loss")?,
            rtd_valid_accuracy: opt("rtd_valid_accuracy")?,
            replaced_share: opt("replaced_share")?,
            tokens_per_s: opt("tokens_per_s")?,
            examples_per_s: opt("examples_per_s")?,
            seconds: get("seconds").parse().with_context(at)?,
        });
    }
    Ok(rows)
}

/// Accumulates the training numbers between two training rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    loss: f64,
    steps: usize,
    correct: usize,
    predicted: usize,
    tokens: usize,
    examples: usize,
    since: f64,
    #[serde(default)]
    nsp_loss: f64,
    #[serde(default)]
    nsp_correct: usize,
    #[serde(default)]
    nsp_count: usize,
    #[serde(default)]
    rtd_loss: f64,
    #[serde(default)]
    rtd_correct: usize,
    #[serde(default)]
    rtd_count: usize,
    #[serde(default)]
    rtd_replaced: usize,
}

impl Window {
    /// Adds one step's numbers (`correct`/`predicted`: masked tokens, zero when not scored).
    pub fn add(&mut self, loss: f64, correct: usize, predicted: usize, tokens: usize, examples: usize) {
        self.loss += loss;
        self.steps += 1;
        self.correct += correct;
        self.predicted += predicted;
        self.tokens += tokens;
        self.examples += examples;
    }

    /// Adds one step's next-sentence numbers (after [`Window::add`] for the same step).
    pub fn add_nsp(&mut self, loss: f64, correct: usize, count: usize) {
        self.nsp_loss += loss;
        self.nsp_correct += correct;
        self.nsp_count += count;
    }

    /// Adds one step's replaced-token numbers (after [`Window::add`] for the same step).
    pub fn add_rtd(&mut self, loss: f64, correct: usize, count: usize, replaced: usize) {
        self.rtd_loss += loss;
        self.rtd_correct += correct;
        self.rtd_count += count;
        self.rtd_replaced += replaced;
    }

    /// The row for the steps added since the last call, then starts a new window at `seconds`.
    pub fn row(&mut self, step: usize, epoch: usize, lr: f64, seconds: f64) -> MetricsRow {
        let dt = (seconds - self.since).max(1e-9);
        let r = MetricsRow {
            step,
            epoch,
            kind: "train".into(),
            lr,
            // NaN when the step had no such loss (pre-training without the masked LM)
            train_loss: Some(self.loss / self.steps.max(1) as f64).filter(|x| !x.is_nan()),
            train_accuracy: (self.predicted > 0).then(|| self.correct as f64 / self.predicted as f64),
            tokens_per_s: Some(self.tokens as f64 / dt),
            examples_per_s: Some(self.examples as f64 / dt),
            nsp_train_loss: (self.nsp_count > 0).then(|| self.nsp_loss / self.steps.max(1) as f64),
            nsp_train_accuracy: (self.nsp_count > 0).then(|| self.nsp_correct as f64 / self.nsp_count as f64),
            rtd_train_loss: (self.rtd_count > 0).then(|| self.rtd_loss / self.steps.max(1) as f64),
            rtd_train_accuracy: (self.rtd_count > 0).then(|| self.rtd_correct as f64 / self.rtd_count as f64),
            replaced_share: (self.rtd_count > 0).then(|| self.rtd_replaced as f64 / self.rtd_count as f64),
            seconds,
            ..Default::default()
        };
        *self = Window { since: seconds, ..Default::default() };
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_and_windows() {
        let mut w = Window::default();
        w.add(2.0, 3, 4, 100, 2);
        w.add(4.0, 1, 4, 60, 2);
        let r = w.row(2, 1, 1e-3, 2.0);
        assert_eq!(r.train_loss, Some(3.0));
        assert_eq!(r.train_accuracy, Some(0.5));
        assert_eq!(r.tokens_per_s, Some(80.0));
        assert_eq!(r.examples_per_s, Some(2.0));
        // the next window starts where this one ended
        w.add(1.0, 0, 0, 10, 1);
        let r2 = w.row(3, 1, 1e-3, 3.0);
        assert_eq!((r2.tokens_per_s, r2.train_accuracy), (Some(10.0), None));
        let valid = MetricsRow { step: 3, epoch: 1, kind: "valid".into(), lr: 1e-3, valid_loss: Some(0.25), micro_f1: Some(0.5), seconds: 3.5, ..Default::default() };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(crate::store::layout::METRICS_FILE);
        write_csv(&[r.clone(), r2.clone(), valid.clone()], &p).unwrap();
        let back = read_csv(&p).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2], valid);
        assert_eq!(back[0].train_loss, Some(3.0));
        // next-sentence columns round-trip; a file of the older 13-column layout still reads
        let mut w = Window::default();
        w.add(2.0, 3, 4, 100, 2);
        w.add_nsp(0.6, 1, 2);
        let nsp = w.row(4, 1, 1e-3, 4.0);
        assert_eq!((nsp.nsp_train_loss, nsp.nsp_train_accuracy), (Some(0.6), Some(0.5)));
        write_csv(&[nsp.clone()], &p).unwrap();
        assert_eq!(read_csv(&p).unwrap()[0], nsp);
        // replaced-token columns round-trip; a file of the 17-column layout still reads
        let mut w = Window::default();
        w.add(2.0, 3, 4, 100, 2);
        w.add_rtd(0.4, 90, 100, 15);
        let rtd = w.row(5, 1, 1e-3, 5.0);
        assert_eq!((rtd.rtd_train_loss, rtd.rtd_train_accuracy, rtd.replaced_share), (Some(0.4), Some(0.9), Some(0.15)));
        write_csv(&[rtd.clone()], &p).unwrap();
        assert_eq!(read_csv(&p).unwrap()[0], rtd);
        std::fs::write(&p, format!("{HEADER_V2}\n6,1,valid,1e-3,,,0.25,,,,0.6,0.5,0.7,0.4,,,3.5\n")).unwrap();
        let v2 = read_csv(&p).unwrap();
        assert_eq!((v2[0].nsp_valid_loss, v2[0].rtd_valid_loss, v2[0].seconds), (Some(0.7), None, 3.5));
        std::fs::write(&p, format!("{HEADER_V1}\n5,1,valid,1e-3,,,0.25,,0.5,0.4,,,3.5\n")).unwrap();
        let old = read_csv(&p).unwrap();
        assert_eq!((old[0].valid_loss, old[0].macro_f1, old[0].nsp_valid_loss, old[0].seconds), (Some(0.25), Some(0.4), None, 3.5));
        std::fs::write(&p, format!("{HEADER}\n1,1,train,0.1\n")).unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(e.contains("metrics.csv:2"), "{e}");
    }
}
