//! Floating-point operations of a model's matrix products (two a multiply-add), counted from its
//! shape: what `bench` divides by the time it measured to report GFLOP/s and the share of the
//! machine's matrix-product peak reached. Element-wise work (softmax, GELU, LayerNorm, ReLU) is
//! left out, as is usual; only real word pieces count (padding is work done, not work needed).

use crate::config::{BackboneKind, HeadKind, ModelConfig, Pooling};

/// FLOPs of the backbone over one sequence of `n` word pieces. `cls_only`: a Transformer's last
/// layer computes only the `[CLS]` state (inference of a `[CLS]`-pooled classifier with the
/// pooled head); its keys and values are still every position's.
pub fn backbone(config: &ModelConfig, n: usize, cls_only: bool) -> f64 {
    let (n, d) = (n as f64, config.d_model as f64);
    match config.backbone {
        BackboneKind::Transformer => {
            let t = &config.transformer;
            let per_token = 8.0 * d * d + 4.0 * d * t.d_ff as f64; // query, key, value, output; feed-forward
            let layer = n * per_token + 4.0 * n * n * d; // + attention scores and mixing
            let layers = t.n_layers as f64;
            if cls_only && t.n_layers > 0 {
                let last = n * 4.0 * d * d + (per_token - 4.0 * d * d) + 4.0 * n * d;
                (layers - 1.0) * layer + last
            } else {
                layers * layer
            }
        }
        BackboneKind::TextCnn => {
            let c = &config.textcnn;
            2.0 * n * d * (c.filter_widths.iter().sum::<usize>() * c.filters) as f64
        }
    }
}

/// Whether inference of a classifier with a `head` head computes only the `[CLS]` state in the
/// last layer (see `TransformerBackbone::pooled`).
pub fn cls_only(config: &ModelConfig, head: HeadKind) -> bool {
    config.backbone == BackboneKind::Transformer && config.transformer.pooling == Pooling::Cls && head == HeadKind::Pooled
}

/// How a classifier's forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Every state of every layer (training).
    Training,
    /// As prediction computes it: a `[CLS]`-pooled Transformer's last layer for `[CLS]` alone
    /// (see [`cls_only`]).
    Prediction,
    /// Prediction of a TextCNN whose convolutions are folded into its embedding table
    /// (`FoldedConvs`): its products are read from the table, none computed.
    Folded,
}

/// FLOPs of a classifier's forward pass over one sequence of `n` word pieces, `labels` outputs,
/// a `head` head, run as `pass`.
pub fn classifier_forward(config: &ModelConfig, n: usize, labels: usize, head: HeadKind, pass: Pass) -> f64 {
    let o = config.output_dim() as f64;
    let pooled = 2.0 * o * o + 2.0 * o * labels as f64;
    let attention = match head {
        HeadKind::LabelAttention => 4.0 * labels as f64 * n as f64 * o,
        HeadKind::Pooled => 0.0,
    };
    let backbone = match pass {
        Pass::Training => backbone(config, n, false),
        Pass::Prediction => backbone(config, n, cls_only(config, head)),
        Pass::Folded => 0.0,
    };
    backbone + pooled + attention
}

/// FLOPs of a training step (forward and backward: three times the forward pass's products) of
/// the masked LM over `sequences` sequences of `n` pieces with `masked` positions scored in each.
pub fn masked_lm_step(config: &ModelConfig, sequences: usize, n: usize, masked: usize) -> f64 {
    let o = config.output_dim() as f64;
    let head = masked as f64 * (2.0 * o * o + 2.0 * o * config.vocab_size as f64);
    3.0 * sequences as f64 * (backbone(config, n, false) + head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Preset};

    #[test]
    fn counts_by_hand() {
        // Transformer: d 64, feed-forward 256, 2 layers (tiny); 10 pieces
        let c = Config::preset(Preset::Tiny).model;
        let (d, f, n) = (64.0, 256.0, 10.0);
        let layer = n * (8.0 * d * d + 4.0 * d * f) + 4.0 * n * n * d;
        assert_eq!(backbone(&c, 10, false), 2.0 * layer);
        // the last layer for [CLS] alone: keys and values of 10 pieces, the rest of one
        let last = n * 4.0 * d * d + 4.0 * d * d + 4.0 * d * f + 4.0 * n * d;
        assert_eq!(backbone(&c, 10, true), layer + last);
        assert!(cls_only(&c, HeadKind::Pooled) && !cls_only(&c, HeadKind::LabelAttention));
        // the head: dense d × d and output d × labels
        assert_eq!(classifier_forward(&c, 10, 5, HeadKind::Pooled, Pass::Prediction), layer + last + 2.0 * d * d + 2.0 * d * 5.0);
        assert_eq!(classifier_forward(&c, 10, 5, HeadKind::Pooled, Pass::Training), 2.0 * layer + 2.0 * d * d + 2.0 * d * 5.0);
        // TextCNN: each width's filters see width × d inputs a position
        let t = Config::preset(Preset::Tiny).with_backbone(BackboneKind::TextCnn).model;
        let per = 2.0 * 64.0 * (t.textcnn.filter_widths.iter().sum::<usize>() * t.textcnn.filters) as f64;
        assert_eq!(backbone(&t, 7, true), 7.0 * per);
        // folded into the embedding table: the head's products alone
        let o = t.output_dim() as f64;
        assert_eq!(classifier_forward(&t, 7, 5, HeadKind::Pooled, Pass::Folded), 2.0 * o * o + 2.0 * o * 5.0);
        // a masked-LM step: three forward passes' worth, the vocabulary projection of each masked position
        let v = c.vocab_size as f64;
        assert_eq!(masked_lm_step(&c, 2, 10, 3), 3.0 * 2.0 * (2.0 * layer + 3.0 * (2.0 * d * d + 2.0 * d * v)));
    }
}
