//! Speed measurements on synthetic batches: a masked-LM training step, a fine-tuning step and
//! inference, for a named model setting. Each case is timed after warm-up over many
//! iterations and reported as median and min–max; peak memory is the process's peak resident
//! size, so the command runs each case in a process of its own.

use crate::data::batch::{PretrainBatch, TokenBatch};
use crate::eval::stats::median;
use crate::config::{BackboneKind, Config, HeadKind, ModelConfig, Preset};
use crate::model::flops;
use crate::model::{Classifier, PretrainModel};
use crate::data::classify::Problem;
use crate::data::mlm::MlmExample;
use crate::train::optim::adamw;
use anyhow::{bail, Result};
use burn::module::Module;
use burn::optim::GradientsParams;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use crate::model::device::peak_rss_mib;
use crate::text::tokenizer::SpecialIds;

/// Word pieces of the synthetic vocabulary (as in the reference measurement).
pub const VOCAB: usize = 8000;
/// Labels of the synthetic classification task (as many as Debtags has).
pub const LABELS: usize = 262;
/// Masked positions scored a sequence.
pub const MASKED: usize = 20;

/// A model setting to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Setting {
    /// The PyTorch reference: d_model 256, 4 layers, 4 heads, FFN 1024 (Transformer).
    Reference,
    /// Tiny preset, Transformer.
    TinyTransformer,
    /// Small preset, Transformer.
    SmallTransformer,
    /// Tiny preset, TextCNN.
    TinyTextcnn,
    /// Small preset, TextCNN.
    SmallTextcnn,
}

impl Setting {
    /// Every setting, in report order.
    pub const ALL: [Setting; 5] = [Setting::Reference, Setting::TinyTransformer, Setting::SmallTransformer, Setting::TinyTextcnn, Setting::SmallTextcnn];

    /// Its model shape (vocabulary 8000, `max_len` 128).
    pub fn model(self) -> ModelConfig {
        let (preset, backbone) = match self {
            Setting::Reference | Setting::SmallTransformer => (Preset::Small, BackboneKind::Transformer),
            Setting::TinyTransformer => (Preset::Tiny, BackboneKind::Transformer),
            Setting::TinyTextcnn => (Preset::Tiny, BackboneKind::TextCnn),
            Setting::SmallTextcnn => (Preset::Small, BackboneKind::TextCnn),
        };
        let mut m = Config::preset(preset).with_backbone(backbone).model;
        if self == Setting::Reference {
            m.d_model = 256;
            m.transformer.n_heads = 4;
            m.transformer.n_layers = 4;
            m.transformer.d_ff = 1024;
        }
        m.vocab_size = VOCAB;
        m.max_len = 128;
        m
    }

    /// The name used on the command line.
    pub fn name(self) -> String {
        match self {
            Setting::Reference => "reference",
            Setting::TinyTransformer => "tiny-transformer",
            Setting::SmallTransformer => "small-transformer",
            Setting::TinyTextcnn => "tiny-textcnn",
            Setting::SmallTextcnn => "small-textcnn",
        }
        .to_owned()
    }
}

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Case {
    /// Masked-LM training step (forward, backward, AdamW), batch 32 × 128 tokens, 20 masked a sequence.
    Pretrain,
    /// Multi-label fine-tuning step, batch 32 × 128 tokens, 262 labels.
    Finetune,
    /// Inference, batch 64.
    Infer64,
    /// Inference, one example at a time (latency).
    Infer1,
}

impl Case {
    /// Every case, in report order.
    pub const ALL: [Case; 4] = [Case::Pretrain, Case::Finetune, Case::Infer64, Case::Infer1];
}

/// One measured case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// Model setting.
    pub setting: Setting,
    /// What was timed.
    pub case: Case,
    /// Seconds of each timed iteration.
    pub seconds: Vec<f64>,
    /// Examples (sequences) an iteration.
    pub examples: usize,
    /// Word pieces an iteration (padding included).
    pub tokens: usize,
    /// Floating-point operations of an iteration's matrix products (`model::flops`).
    #[serde(default)]
    pub flops: f64,
    /// Peak resident memory of the measuring process, in MiB (when the OS tells).
    pub peak_rss_mib: Option<f64>,
}

impl Measurement {
    /// Median seconds an iteration.
    pub fn median(&self) -> f64 {
        median(&self.seconds)
    }
    /// Fastest iteration.
    pub fn min(&self) -> f64 {
        self.seconds.iter().copied().fold(f64::INFINITY, f64::min)
    }
    /// Slowest iteration.
    pub fn max(&self) -> f64 {
        self.seconds.iter().copied().fold(0.0, f64::max)
    }
}

fn random_seqs(rng: &mut StdRng, n: usize, len: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|_| {
            let mut s: Vec<u32> = (0..len).map(|_| rng.random_range(5..VOCAB as u32)).collect();
            s[0] = SpecialIds::BERTLU.cls;
            s[len - 1] = SpecialIds::BERTLU.sep;
            s
        })
        .collect()
}

/// Seconds of each of `iters` timed calls of `f`, after `warmup` untimed ones.
pub fn timed(warmup: usize, iters: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// Measures one case in this process.
pub fn measure(setting: Setting, case: Case, warmup: usize, iters: usize, seed: u64) -> Result<Measurement> {
    if iters == 0 {
        bail!("--iters must be positive");
    }
    let model_cfg = setting.model();
    let len = model_cfg.max_len;
    let mut rng = StdRng::seed_from_u64(seed);
    let plain = crate::model::device::default_device();
    let train_device = plain.clone().autodiff();
    train_device.seed(seed);
    crate::model::dropout::seed(seed);
    let mut pass = flops::Pass::Prediction;
    let (batch, seconds) = match case {
        Case::Pretrain => {
            let examples: Vec<MlmExample> = random_seqs(&mut rng, 32, len)
                .into_iter()
                .map(|input_ids| {
                    let mut positions: Vec<usize> = sample(&mut rng, len - 2, MASKED).into_iter().map(|p| p + 1).collect();
                    positions.sort_unstable();
                    let targets = positions.iter().map(|&p| input_ids[p]).collect();
                    MlmExample { input_ids, positions, targets }
                })
                .collect();
            let mut model = Some(PretrainModel::init(&model_cfg, &[crate::config::Objective::Mlm], &train_device));
            let mut optim = adamw(0.01, 1.0);
            let secs = timed(warmup, iters, || {
                let m = model.take().expect("model");
                let out = m.forward(&PretrainBatch::new(&examples, SpecialIds::BERTLU, &train_device));
                let loss = out.loss();
                let _: f32 = loss.clone().into_scalar();
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                model = Some(optim.step(1e-4, m, grads));
            });
            (32, secs)
        }
        Case::Finetune => {
            let seqs = random_seqs(&mut rng, 32, len);
            let gold: Vec<Vec<usize>> = (0..32).map(|_| sample(&mut rng, LABELS, 3).into_vec()).collect();
            let mut model = Some(Classifier::init(&model_cfg, LABELS, &train_device));
            let mut optim = adamw(0.01, 1.0);
            let secs = timed(warmup, iters, || {
                let m = model.take().expect("model");
                let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
                let loss = Classifier::loss(m.forward(&TokenBatch::new(&refs, SpecialIds::BERTLU, &train_device)), &gold, Problem::MultiLabel, crate::model::loss::LabelLoss::Bce);
                let _: f32 = loss.clone().into_scalar();
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                model = Some(optim.step(1e-4, m, grads));
            });
            (32, secs)
        }
        Case::Infer64 | Case::Infer1 => {
            let n = if case == Case::Infer64 { 64 } else { 1 };
            let seqs = random_seqs(&mut rng, n, len);
            let model = Classifier::init(&model_cfg, LABELS, &plain).valid();
            // as prediction runs it once warm: a TextCNN folded into its embeddings (the table
            // built in the untimed iterations)
            let folded = model.folded().map(|f| f.eager());
            if folded.is_some() {
                pass = flops::Pass::Folded;
            }
            let secs = timed(warmup, iters, || {
                let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
                let p = Classifier::probabilities(model.predict(&TokenBatch::new(&refs, SpecialIds::BERTLU, &plain), folded.as_ref()), Problem::MultiLabel);
                let _ = p.into_data();
            });
            (n, secs)
        }
    };
    let flops = match case {
        Case::Pretrain => flops::masked_lm_step(&model_cfg, batch, len, MASKED),
        Case::Finetune => 3.0 * batch as f64 * flops::classifier_forward(&model_cfg, len, LABELS, HeadKind::Pooled, flops::Pass::Training),
        Case::Infer64 | Case::Infer1 => batch as f64 * flops::classifier_forward(&model_cfg, len, LABELS, HeadKind::Pooled, pass),
    };
    Ok(Measurement { setting, case, seconds, examples: batch, tokens: batch * len, flops, peak_rss_mib: peak_rss_mib() })
}

/// What one f32 matrix product of 1024 × 1024 × 1024 reaches on every thread here, in GFLOP/s
/// (best of 5 after one untimed): the peak the benchmark tables compare with. (The kernel is
/// the `gemm` crate's that Burn's products run on, with the instructions chosen at run time.)
pub fn matmul_peak_gflops() -> f64 {
    const N: usize = 1024;
    let a: Vec<f32> = (0..N * N).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
    let mut c = vec![0.0f32; N * N];
    let seconds = timed(1, 5, || crate::model::kernels::product_into(&mut c, &a, &a, [N, N, N], false, gemm::Parallelism::Rayon(0)));
    2.0 * (N * N * N) as f64 / seconds.iter().copied().fold(f64::INFINITY, f64::min) / 1e9
}

/// Speed of a fine-tuned model on real text: what `predict` does, from raw text to probabilities.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeasurement {
    /// Examples in the data file.
    pub examples: usize,
    /// Mean word pieces an example (after wrapping and truncation).
    pub mean_pieces: f64,
    /// Seconds of each timed pass over the whole file at the batch size (tokenising included).
    pub pass_seconds: Vec<f64>,
    /// The batch size of those passes.
    pub batch_size: usize,
    /// Seconds of each single-example prediction (tokenising included).
    pub single_seconds: Vec<f64>,
    /// Floating-point operations of the matrix products of one pass over the file (`model::flops`;
    /// `None` for a linear model).
    #[serde(default)]
    pub pass_flops: Option<f64>,
    /// The same for the examples timed one at a time, all together.
    #[serde(default)]
    pub single_flops: Option<f64>,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Seconds of each timed pass of tokenising the whole file alone (what the model's passes
    /// cannot go under; empty for a model of linear members alone).
    #[serde(default)]
    pub tokenize_seconds: Vec<f64>,
}

/// Times `passes` passes of batched prediction over the texts of `data` (after one untimed
/// pass) and one-at-a-time prediction of its first `singles` examples, the products' inputs in
/// `precision`.
pub fn measure_model(model: &std::path::Path, data: &std::path::Path, batch_size: usize, passes: usize, singles: usize, precision: crate::config::Precision) -> Result<ModelMeasurement> {
    if passes == 0 || batch_size == 0 {
        bail!("--iters and --batch-size must be positive");
    }
    let clf = crate::infer::classifier::LoadedClassifier::open(model)?.with_precision(precision);
    let texts: Vec<String> = crate::text::labelled::read_examples(data)?.into_iter().map(|e| e.text).collect();
    if texts.is_empty() {
        bail!("{}: no examples", data.display());
    }
    let pieces: usize = clf.encode(&texts).map_or(0, |seqs| seqs.iter().map(|s| s.len()).sum());
    let pass_seconds = timed(1, passes, || {
        let _ = clf.probabilities(&texts, batch_size);
    });
    let tokenize_seconds = if pieces > 0 {
        timed(1, passes, || {
            let _ = clf.encode(&texts);
        })
    } else {
        Vec::new()
    };
    let singles = singles.min(texts.len());
    let per_text = clf.forward_flops(&texts);
    let (pass_flops, single_flops) = (per_text.as_ref().map(|f| f.iter().sum()), per_text.as_ref().map(|f| f[..singles].iter().sum()));
    let single_seconds = texts[..singles]
        .iter()
        .map(|t| {
            let one = [t.clone()];
            let start = Instant::now();
            let _ = clf.probabilities(&one, 1);
            start.elapsed().as_secs_f64()
        })
        .collect();
    Ok(ModelMeasurement { examples: texts.len(), mean_pieces: pieces as f64 / texts.len() as f64, pass_seconds, batch_size, single_seconds, pass_flops, single_flops, peak_rss_mib: peak_rss_mib(), tokenize_seconds })
}

/// GFLOP/s of `flops` done in `seconds`, and their share of `peak` GFLOP/s, as table cells.
fn rate_cells(flops: Option<f64>, seconds: f64, peak: Option<f64>) -> String {
    match flops {
        Some(f) if f > 0.0 => {
            let rate = f / seconds / 1e9;
            let share = peak.map_or_else(|| "–".to_owned(), |p| format!("{:.0} %", 100.0 * rate / p));
            format!("{rate:.1} | {share}")
        }
        _ => "– | –".to_owned(),
    }
}

/// The Markdown table of a model measurement (the one-at-a-time row only when some were timed),
/// with the GFLOP/s reached and their share of `peak` (see [`matmul_peak_gflops`]).
pub fn model_table(m: &ModelMeasurement, peak: Option<f64>) -> String {
    let pass = median(&m.pass_seconds);
    let mut table = format!(
        "| case | median | examples/s | GFLOP/s | of peak |\n|---|---|---|---|---|\n| whole file, batch {} ({} examples, {:.1} pieces each) | {:.3} s | {:.0} | {} |\n",
        m.batch_size, m.examples, m.mean_pieces, pass, m.examples as f64 / pass, rate_cells(m.pass_flops, pass, peak)
    );
    if !m.single_seconds.is_empty() {
        let single = median(&m.single_seconds);
        let mut sorted = m.single_seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let p90 = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
        let per_example = m.single_flops.map(|f| f / m.single_seconds.len() as f64);
        table.push_str(&format!("| one example at a time ({} examples; p90 {:.2} ms) | {:.2} ms | {:.0} | {} |\n", m.single_seconds.len(), p90 * 1e3, single * 1e3, 1.0 / single, rate_cells(per_example, single, peak)));
    }
    if !m.tokenize_seconds.is_empty() {
        let t = median(&m.tokenize_seconds);
        table.push_str(&format!("| tokenising the whole file alone ({:.0} % of its pass) | {:.3} s | {:.0} | – | – |\n", 100.0 * t / pass, t, m.examples as f64 / t));
    }
    table
}

/// The Markdown table of measurements: median and min–max per iteration, throughput, GFLOP/s
/// and their share of `peak`, peak memory.
pub fn table(ms: &[Measurement], peak: Option<f64>) -> String {
    let mut s = String::from("| setting | case | median ms | min–max ms | tokens/s | examples/s | GFLOP/s | of peak | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|\n");
    for m in ms {
        let med = m.median();
        s.push_str(&format!(
            "| {} | {:?} | {:.1} | {:.1}–{:.1} | {:.0} | {:.1} | {} | {} |\n",
            m.setting.name(), m.case, med * 1e3, m.min() * 1e3, m.max() * 1e3, m.tokens as f64 / med, m.examples as f64 / med,
            rate_cells(Some(m.flops), med, peak),
            m.peak_rss_mib.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_table_without_single_examples_has_no_single_row() {
        let m = ModelMeasurement { examples: 100, mean_pieces: 10.0, pass_seconds: vec![2.0, 1.0, 4.0], batch_size: 8, single_seconds: vec![], pass_flops: Some(300e9), single_flops: Some(3e9), peak_rss_mib: None, tokenize_seconds: vec![] };
        let table = model_table(&m, Some(200.0));
        // 300 GFLOP in the median 2 s: 150 GFLOP/s, 75 % of a 200 GFLOP/s peak
        assert!(table.contains("| 2.000 s | 50 | 150.0 | 75 % |"), "{table}");
        assert!(!table.contains("one example"), "{table}");
        let m = ModelMeasurement { single_seconds: vec![0.002, 0.001, 0.004], ..m };
        // 1 GFLOP an example in the median 2 ms: 500 GFLOP/s
        assert!(model_table(&m, None).contains("| one example at a time (3 examples; p90 4.00 ms) | 2.00 ms | 500 | 500.0 | – |"), "{}", model_table(&m, None));
        let linear = ModelMeasurement { pass_flops: None, single_flops: None, ..m };
        assert!(model_table(&linear, Some(200.0)).contains("| 2.000 s | 50 | – | – |"));
        // tokenising alone: the median 0.5 s of the median 2 s pass
        let tokenized = ModelMeasurement { tokenize_seconds: vec![0.5, 0.4, 0.9], ..linear };
        assert!(model_table(&tokenized, None).contains("| tokenising the whole file alone (25 % of its pass) | 0.500 s | 200 | – | – |"), "{}", model_table(&tokenized, None));
    }

    #[test]
    fn statistics_of_a_measurement() {
        let m = Measurement { setting: Setting::TinyTextcnn, case: Case::Infer1, seconds: vec![0.3, 0.1, 0.2, 0.5, 0.4], examples: 1, tokens: 128, flops: 3e9, peak_rss_mib: None };
        assert_eq!((m.median(), m.min(), m.max()), (0.3, 0.1, 0.5));
        let t = table(&[m], Some(100.0));
        assert!(t.contains("| tiny-textcnn | Infer1 | 300.0 | 100.0–500.0 | 427 | 3.3 | 10.0 | 10 % | – |"), "{t}");
        assert_eq!(Setting::Reference.model().d_model, 256);
        assert_eq!(Setting::SmallTextcnn.model().backbone, BackboneKind::TextCnn);
    }

    #[cfg(feature = "cli")]
    #[test]
    fn setting_names_are_the_command_line_values() {
        for s in Setting::ALL {
            assert_eq!(Some(s.name()), clap::ValueEnum::to_possible_value(&s).map(|v| v.get_name().to_owned()));
        }
    }
}
