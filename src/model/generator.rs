//! ELECTRA's generator (Clark et al., ICLR 2020): a narrower model of the backbone's family that
//! reads the backbone's own embeddings (token, position and segment tables are shared, as in the
//! paper) and is trained as a masked LM. Its samples at the masked positions are the
//! replacements the backbone (the discriminator) learns to detect at every position.
//!
//! Widths follow the official code: hidden size, feed-forward size (Transformer) or filters
//! (TextCNN) are `generator_size` times the discriminator's, the layers as many. One departure:
//! the heads are scaled too, keeping the discriminator's head width (the official code fixes it
//! at 64, wider than a whole bertlu tiny or small generator).

use crate::config::{BackboneKind, ModelConfig};
use crate::model::backbone::textcnn::{conv_states, init_convs};
use crate::model::backbone::transformer::Encoder;
use crate::model::heads::MlmHead;
use crate::model::kernels::LayerNorm;
use burn::nn::conv::Conv1d;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use rand::Rng;
use rayon::prelude::*;

/// The generator's shape: the discriminator's `config` narrowed by `size` (in (0, 1]).
pub fn generator_config(config: &ModelConfig, size: f64) -> ModelConfig {
    let scale = |x: usize| ((x as f64 * size).round() as usize).max(1);
    let mut g = config.clone();
    match config.backbone {
        BackboneKind::Transformer => {
            g.d_model = scale(config.d_model);
            g.transformer.d_ff = scale(config.transformer.d_ff);
            let mut heads = scale(config.transformer.n_heads);
            while g.d_model % heads != 0 {
                heads -= 1;
            }
            g.transformer.n_heads = heads;
        }
        BackboneKind::TextCnn => g.textcnn.filters = scale(config.textcnn.filters),
    }
    g
}

/// The generator: its own layers over the shared embeddings, and a masked-LM head tied to the
/// shared token embedding.
#[derive(Module, Debug)]
pub struct Generator {
    /// Embedding width → generator width (ELECTRA's `embeddings_project`); absent when equal.
    pub project: Option<Linear>,
    /// Transformer layers at the generator's width (Transformer backbone).
    pub encoder: Option<Encoder>,
    /// Final LayerNorm of a pre-LN Transformer generator.
    pub final_norm: Option<LayerNorm>,
    /// Convolutions with the generator's number of filters (TextCNN backbone).
    pub convs: Vec<Conv1d>,
    /// Generator states → embedding width → scores over the vocabulary.
    pub mlm: MlmHead,
}

impl Generator {
    /// A random generator for the discriminator `config`, `size` times as wide.
    pub fn init(config: &ModelConfig, size: f64, device: &Device) -> Self {
        let g = generator_config(config, size);
        match config.backbone {
            BackboneKind::Transformer => Self {
                project: (g.d_model != config.d_model).then(|| LinearConfig::new(config.d_model, g.d_model).init(device)),
                encoder: Some(Encoder::init(&g, device)),
                final_norm: g.transformer.norm_first.then(|| LayerNorm::new(g.d_model, g.transformer.layer_norm_eps, device)),
                convs: Vec::new(),
                mlm: MlmHead::init(g.d_model, config, device),
            },
            BackboneKind::TextCnn => Self {
                project: None,
                encoder: None,
                final_norm: None,
                convs: init_convs(config.d_model, &g, device),
                mlm: MlmHead::init(g.output_dim(), config, device),
            },
        }
    }

    /// Embedded masked input `[b, l, d_model]` (the backbone's `embed`), its padding mask
    /// `[b, l]`, the masked positions flattened over the batch `[n]` and the shared token
    /// embedding `[vocab, d_model]` → logits at the masked positions `[n, vocab]`.
    pub fn forward(&self, embedded: Tensor<3>, pad_mask: &Tensor<2, Bool>, positions: Tensor<1, Int>, embedding: Tensor<2>) -> Tensor<2> {
        let x = match &self.project {
            Some(p) => crate::model::kernels::linear(p, embedded),
            None => embedded,
        };
        let states = match &self.encoder {
            Some(encoder) => {
                let s = encoder.forward(x, pad_mask);
                match &self.final_norm {
                    Some(norm) => norm.forward(s),
                    None => s,
                }
            }
            None => conv_states(&self.convs, x, pad_mask),
        };
        let [b, l, d] = states.dims();
        self.mlm.forward(states.reshape([b * l, d]).select(0, positions), embedding)
    }
}

/// One id a row of `probs` (`[n, vocab]`, row-major: the generator's softmax), drawn from the
/// row's distribution renormalised over the allowed ids — never one of `excluded` (the
/// structural special tokens: a replacement is always a word piece of the vocabulary). A row
/// with no finite mass on an allowed id gives the first allowed id. The uniform draws come
/// from `rng` in row order, so the result does not depend on how the rows are spread over
/// threads.
pub fn sample<R: Rng>(probs: &[f32], vocab: usize, excluded: &[u32], rng: &mut R) -> Vec<u32> {
    let draws: Vec<f64> = (0..probs.len() / vocab).map(|_| rng.random::<f64>()).collect();
    probs.par_chunks_exact(vocab).zip(draws).map(|(row, u)| sample_row(row, excluded, u)).collect()
}

/// The id at which the cumulative allowed mass of `row` passes `u` times the whole allowed mass.
fn sample_row(row: &[f32], excluded: &[u32], u: f64) -> u32 {
    // the excluded ids weigh nothing; the scans below then need no test of each id
    let mut weights = row.to_vec();
    for &e in excluded {
        if let Some(w) = weights.get_mut(e as usize) {
            *w = 0.0;
        }
    }
    let total: f64 = weights.iter().map(|&p| f64::from(p)).sum();
    if !(total.is_finite() && total > 0.0) {
        return (0..row.len()).find(|&j| !excluded.contains(&(j as u32))).unwrap_or(0) as u32;
    }
    let mut left = u * total;
    for (j, &p) in weights.iter().enumerate() {
        if left < f64::from(p) {
            return j as u32;
        }
        left -= f64::from(p);
    }
    // rounding left a sliver above the last weight: the last allowed id with weight
    weights.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

/// Puts `samples` at `positions` of the flattened ids `ids` (positions and original word pieces
/// `targets` as in a masked batch) and returns, a position, 1 where the result differs from the
/// original and 0 elsewhere — a sample equal to the original counts as original, as in the
/// paper — with the number of 1s.
pub fn replace(ids: &mut [i64], positions: &[i64], targets: &[i64], samples: &[u32]) -> (Vec<f32>, usize) {
    let mut labels = vec![0f32; ids.len()];
    let mut replaced = 0;
    for ((&p, &t), &s) in positions.iter().zip(targets).zip(samples) {
        let p = p as usize;
        ids[p] = s as i64;
        if s as i64 != t {
            labels[p] = 1.0;
            replaced += 1;
        }
    }
    (labels, replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn samples_follow_the_softmax_and_skip_excluded_ids() {
        // vocab 4: id 0 excluded though it has the largest probability; ids 1..3 weigh 1 : 2 : 1
        let row = [0.6f32, 0.1, 0.2, 0.1];
        let probs: Vec<f32> = row.iter().copied().cycle().take(4 * 20_000).collect();
        let got = sample(&probs, 4, &[0], &mut StdRng::seed_from_u64(1));
        let mut counts = [0usize; 4];
        for &id in &got {
            counts[id as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        let share = |k: usize| counts[k] as f64 / got.len() as f64;
        assert!((share(2) - 0.5).abs() < 0.02 && (share(1) - 0.25).abs() < 0.02 && (share(3) - 0.25).abs() < 0.02, "{counts:?}");
        // not the argmax: a sample, the same for the same seed (whatever the threads)
        assert_eq!(got, sample(&probs, 4, &[0], &mut StdRng::seed_from_u64(1)));
        // row by row: the draw u picks the id whose cumulative allowed mass passes u · 0.4
        assert_eq!((sample_row(&row, &[0], 0.0), sample_row(&row, &[0], 0.24), sample_row(&row, &[0], 0.26)), (1, 1, 2));
        assert_eq!((sample_row(&row, &[0], 0.74), sample_row(&row, &[0], 0.76), sample_row(&row, &[0], 1.0)), (2, 3, 3));
        // NaN rows (a diverged generator) still give an allowed id
        assert_eq!(sample(&[f32::NAN; 4], 4, &[0, 1], &mut StdRng::seed_from_u64(1)), vec![2]);
    }

    #[test]
    fn samples_of_the_generator_softmax_match_a_reference_draw() {
        // the probabilities from bertlu's softmax kernel give the ids an f64 softmax of the logits
        // gives for the same uniform draws (ties at a boundary aside, which these draws avoid)
        let device = Default::default();
        let logits = [[2.0f32, -1.0, 0.5, 3.0, 0.0, 1.0], [0.0, 0.0, 4.0, -2.0, 1.0, 0.5]];
        let t = Tensor::<2>::from_data(logits, &device);
        let probs: Vec<f32> = crate::model::kernels::softmax_last(t).into_data().try_to_vec().unwrap();
        let draws = [0.1, 0.5, 0.9, 0.99];
        for (r, l) in logits.iter().enumerate() {
            let weights: Vec<f64> = l.iter().enumerate().map(|(j, &x)| if j == 3 { 0.0 } else { f64::from(x).exp() }).collect();
            let total: f64 = weights.iter().sum();
            for &u in &draws {
                let mut acc = 0.0;
                let want = weights.iter().position(|w| {
                    acc += w / total;
                    acc > u
                });
                assert_eq!(Some(sample_row(&probs[r * 6..r * 6 + 6], &[3], u) as usize), want, "row {r} u {u}");
            }
        }
    }

    #[test]
    fn labels_mark_exactly_the_changed_positions() {
        // two sequences of 4, flattened; [MASK] = 4 at positions 1, 2 and 6
        let mut ids = vec![2, 4, 4, 9, 2, 8, 4, 3];
        let originals = [2, 10, 11, 9, 2, 8, 12, 3];
        // the sample at 2 is the original word piece: it counts as original
        let (labels, replaced) = replace(&mut ids, &[1, 2, 6], &[10, 11, 12], &[20, 11, 21]);
        assert_eq!(ids, vec![2, 20, 11, 9, 2, 8, 21, 3]);
        let differs: Vec<f32> = ids.iter().zip(originals).map(|(&a, b)| f32::from(a != b)).collect();
        assert_eq!(labels, differs);
        assert_eq!(replaced, 2);
    }

    #[test]
    fn generator_shapes_scale_with_the_size() {
        let mut c = crate::config::Config::preset(crate::config::Preset::Small).model;
        let g = generator_config(&c, 0.25);
        assert_eq!((g.d_model, g.transformer.d_ff, g.transformer.n_heads), (32, c.transformer.d_ff / 4, 2));
        assert_eq!(g.d_model / g.transformer.n_heads, c.d_model / c.transformer.n_heads);
        c.backbone = BackboneKind::TextCnn;
        assert_eq!(generator_config(&c, 0.5).textcnn.filters, c.textcnn.filters / 2);
    }
}
