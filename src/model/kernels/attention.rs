//! Multi-head scaled dot-product attention in one pass for inference (no gradients).
//!
//! Composed from Burn operations, attention materialises the `[b, h, l, l]` scores, adds the
//! padding bias through a broadcast, runs softmax over them as a separate pass, and splits and
//! merges the heads with strided copies; with head sizes of 16 to 64 the score and context
//! products are too small for the matrix-product kernel to reach its speed. Here each
//! (sequence, head) is one task: its keys transposed and its values gathered once (a few KB,
//! in cache), then for each query one row of scores, its softmax and its weighted sum of
//! values; the tasks' `[l, dk]` blocks are then copied into the merged-heads layout in one
//! pass. Keys past a sequence's last non-padding key are skipped (their weight underflows to 0
//! either way).

use super::{softmax_rows, values};
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;
use rayon::prelude::*;

// Scores of one query against `n` keys: `scores[j] = bias[j] + Σ_c q[c] · keys_t[c][j]`,
// with `keys_t` the keys transposed (`[dk][stride]`, row `c` holding feature `c` of every key).
simd_dispatch!(score_row(q: &[f32], keys_t: &[f32], stride: usize, bias: &[f32], scores: &mut [f32]) {
    let n = scores.len();
    scores.copy_from_slice(&bias[..n]);
    for (c, &qc) in q.iter().enumerate() {
        let kt = &keys_t[c * stride..c * stride + n];
        for (s, &k) in scores.iter_mut().zip(kt) {
            *s += qc * k;
        }
    }
});

/// Query rows [`mix_rows`] combines at once: independent accumulator chains for the FMA units.
const ROWS: usize = 4;
/// Features a step of [`mix_rows`] accumulates: one AVX2 register.
const WIDTH: usize = 8;

// `out = probs · vals` for [`ROWS`] rows of probabilities (`probs` `[ROWS][n]`, `vals` `[n][dk]`,
// `out` `[ROWS][dk]`): for each key, its value row is loaded once and added into every row.
simd_dispatch!(mix_rows(probs: &[f32], vals: &[f32], out: &mut [f32]) {
    let dk = out.len() / ROWS;
    let n = probs.len() / ROWS;
    let mut c0 = 0;
    while c0 + WIDTH <= dk {
        let mut acc = [[0.0f32; WIDTH]; ROWS];
        for j in 0..n {
            let v: &[f32; WIDTH] = vals[j * dk + c0..j * dk + c0 + WIDTH].try_into().expect("a full chunk");
            for (r, a) in acc.iter_mut().enumerate() {
                let w = probs[r * n + j];
                for i in 0..WIDTH {
                    a[i] += w * v[i];
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[r * dk + c0..r * dk + c0 + WIDTH].copy_from_slice(a);
        }
        c0 += WIDTH;
    }
    for c in c0..dk {
        for r in 0..ROWS {
            out[r * dk + c] = (0..n).map(|j| probs[r * n + j] * vals[j * dk + c]).sum();
        }
    }
});

/// `softmax(scale · q kᵀ + bias) v` for every head. `q`, `k`, `v`: `[b, l, d]` with head `h` in
/// features `h·dk .. (h+1)·dk`; `bias`: `[b, l]`, added to the scores of each key (0, or a
/// large negative number for padding). Returns `[b, l, d]`, heads merged.
pub(super) fn attention_forward(q: &FloatTensor<Flex>, k: &FloatTensor<Flex>, v: &FloatTensor<Flex>, bias: &FloatTensor<Flex>, heads: usize, scale: f64) -> FloatTensor<Flex> {
    let shape = q.layout().shape().clone();
    let (b, l, d) = (shape[0], shape[1], shape[2]);
    let dk = d / heads;
    let (qv, kv, vv, bv) = (values(q), values(k), values(v), values(bias));
    let scale = scale as f32;
    // Keys past the last one with a zero bias are padding in every row: skipped.
    let keys: Vec<usize> = (0..b).map(|s| bv[s * l..(s + 1) * l].iter().rposition(|&x| x == 0.0).map_or(l, |p| p + 1)).collect();
    let blocks: Vec<Vec<f32>> = (0..b * heads)
        .into_par_iter()
        .map(|task| {
            let (s, h) = (task / heads, task % heads);
            let n = keys[s];
            let at = |t: usize, c: usize| (s * l + t) * d + h * dk + c;
            let mut keys_t = vec![0.0f32; dk * n];
            let mut vals = vec![0.0f32; n * dk];
            for t in 0..n {
                for c in 0..dk {
                    keys_t[c * n + t] = kv[at(t, c)];
                }
                vals[t * dk..(t + 1) * dk].copy_from_slice(&vv[at(t, 0)..at(t, 0) + dk]);
            }
            let bias = &bv[s * l..s * l + n];
            // Scores, then probabilities, of every query (rows past `l` stay 0: whole blocks).
            let rows = l.div_ceil(ROWS) * ROWS;
            let (mut scores, mut probs, mut query) = (vec![0.0f32; l * n], vec![0.0f32; rows * n], vec![0.0f32; dk]);
            for (t, row) in scores.chunks_exact_mut(n).enumerate() {
                for (x, &y) in query.iter_mut().zip(&qv[at(t, 0)..at(t, 0) + dk]) {
                    *x = y * scale;
                }
                score_row(&query, &keys_t, n, bias, row);
            }
            softmax_rows(&scores, &mut probs[..l * n], n);
            let mut out = vec![0.0f32; rows * dk];
            for (p, o) in probs.chunks_exact(ROWS * n).zip(out.chunks_exact_mut(ROWS * dk)) {
                mix_rows(p, &vals, o);
            }
            out.truncate(l * dk);
            out
        })
        .collect();
    let mut merged = vec![0.0f32; b * l * d];
    for (task, block) in blocks.iter().enumerate() {
        let (s, h) = (task / heads, task % heads);
        for (t, row) in block.chunks_exact(dk).enumerate() {
            let at = (s * l + t) * d + h * dk;
            merged[at..at + dk].copy_from_slice(row);
        }
    }
    FloatTensor::<Flex>::from_data(TensorData::new(merged, shape))
}

#[cfg(test)]
mod tests {
    use crate::model::kernels::attention;
    use burn::prelude::*;
    use burn::tensor::Distribution;

    /// The attention of Burn's operations, as training composes it.
    fn composed(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, bias: Tensor<2>, heads: usize, scale: f64) -> Tensor<3> {
        let [b, l, d] = q.dims();
        let split = |x: Tensor<3>| x.reshape([b, l, heads, d / heads]).swap_dims(1, 2);
        let scores = (split(q) * scale).matmul(split(k).transpose()) + bias.reshape([b, 1, 1, l]);
        burn::tensor::activation::softmax(scores, 3).matmul(split(v)).swap_dims(1, 2).reshape([b, l, d])
    }

    /// Random q, k, v `[b, l, heads · dk]` and the padding bias of sequences of `lengths`.
    fn inputs(lengths: &[usize], l: usize, heads: usize, dk: usize, device: &Device) -> [Tensor<3>; 3] {
        let b = lengths.len();
        let r = || Tensor::<3>::random([b, l, heads * dk], Distribution::Normal(0.0, 2.0), device);
        [r(), r(), r()]
    }

    fn bias(lengths: &[usize], l: usize, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = lengths.iter().flat_map(|&n| (0..l).map(move |t| if t < n { 0.0 } else { -1.0e4 })).collect();
        Tensor::<1>::from_floats(values.as_slice(), device).reshape([lengths.len(), l])
    }

    #[test]
    fn fused_attention_equals_burns_operations_on_odd_shapes() {
        let device = Device::flex();
        device.seed(3);
        // (lengths, padded length, heads, head size): a head size off the 8-wide steps, one that
        // fills them, batch 1 of length 1, sequences with padding and one without
        for (lengths, l, heads, dk) in [(vec![7, 1, 4], 7, 3, 5), (vec![37, 20], 37, 2, 16), (vec![1], 1, 4, 3), (vec![9, 9], 9, 1, 11)] {
            let [q, k, v] = inputs(&lengths, l, heads, dk, &device);
            let bias = bias(&lengths, l, &device);
            let scale = 1.0 / (dk as f64).sqrt();
            let fused = attention(&q, &k, &v, &bias, heads, scale).expect("the plain flex device takes the fused kernel");
            let reference = composed(q, k, v, bias, heads, scale);
            let diff: f32 = (fused - reference).abs().max().into_scalar();
            assert!(diff < 1e-5, "lengths {lengths:?}, heads {heads} × {dk}: max difference {diff}");
        }
    }

    #[test]
    fn where_gradients_are_recorded_attention_is_left_to_burn() {
        let device = Device::flex().autodiff();
        let [q, k, v] = inputs(&[3], 3, 2, 4, &device);
        assert!(attention(&q, &k, &v, &bias(&[3], 3, &device), 2, 0.5).is_none());
    }
}
