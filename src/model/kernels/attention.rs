//! Multi-head scaled dot-product attention in one pass for inference (no gradients).
//!
//! Composed from Burn operations, attention materialises the `[b, h, l, l]` scores, adds the
//! padding bias through a broadcast, runs softmax over them as a separate pass, and splits and
//! merges the heads with strided copies; with head sizes of 16 to 64 the score and context
//! products are too small for the matrix-product kernel to reach its speed. Here each sequence
//! (or, with too few sequences for the threads, each (sequence, head)) is one task: its keys
//! are transposed once (each key row read in order; a few KB, in cache) and padded with
//! zero keys to a multiple of [`KEYS`], then for each head, four queries at a time
//! ([`attend_rows`]): their rows of scores (register tiles of 4 queries × 16 keys, only whole
//! tiles: a scalar tail for the last few keys of a row cost as much as the tiles before it),
//! the rows' exponentials and sums while they are in L1, the weighted sums of the values,
//! read in place (4 queries × 16 features), and the division by the sums on the way into the
//! task's block of the merged-heads layout. Keys past a sequence's last non-padding key are
//! skipped (their weight underflows to 0 either way). The queries may be fewer than the keys:
//! the last layer of a `[CLS]`-pooled classifier asks only for the first position's.

use super::{exp_approx, row_max, sum, values};
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// Query rows scored and mixed at once: each key or value vector loaded serves all of them.
const ROWS: usize = 4;
/// Keys a step of [`score_rows`] scores (two AVX2 registers a row: 8 accumulators in all); a
/// sequence's keys are padded to a multiple of it.
const KEYS: usize = 16;
/// The bias of the keys added to pad a sequence to a multiple of [`KEYS`]: their
/// exponential is 0 to f32 precision (below 1e-37), and their values are never read.
const PAD_KEY_BIAS: f32 = -1.0e30;

/// Scores of [`ROWS`] queries (`q` `[ROWS][dk]`, already scaled) against `n` keys, `n` a
/// multiple of [`KEYS`]: `scores[r][j] = bias[j] + Σ_c q[r][c] · keys_t[c][j]`, with `keys_t`
/// the keys transposed (`[dk][n]`, row `c` holding feature `c` of every key). The sums of
/// [`KEYS`] keys × [`ROWS`] rows stay in registers over the features (a loop over features
/// writing each score back to memory was bound by the stores).
#[inline(always)]
fn score_rows(q: &[f32], keys_t: &[f32], bias: &[f32], scores: &mut [f32]) {
    let dk = q.len() / ROWS;
    let n = bias.len();
    debug_assert_eq!(n % KEYS, 0, "keys padded to whole tiles");
    for j0 in (0..n).step_by(KEYS) {
        let start: &[f32; KEYS] = bias[j0..j0 + KEYS].try_into().expect("a full block");
        let mut acc = [*start; ROWS];
        for c in 0..dk {
            let kt: &[f32; KEYS] = keys_t[c * n + j0..c * n + j0 + KEYS].try_into().expect("a full block");
            for (r, a) in acc.iter_mut().enumerate() {
                let qc = q[r * dk + c];
                for i in 0..KEYS {
                    a[i] = qc.mul_add(kt[i], a[i]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            scores[r * n + j0..r * n + j0 + KEYS].copy_from_slice(a);
        }
    }
}

/// `out = weights · vals` for [`ROWS`] rows of weights (`weights` `[ROWS][np]`, of which the
/// first `n` columns are read; `vals` `n` rows of `dk` values, `stride` apart; `out`
/// `[ROWS][dk]`): for each key, a block of its value row is loaded once and added into every
/// row; blocks of 16 features, then 8, then single ones.
#[inline(always)]
fn mix_rows(weights: &[f32], n: usize, vals: &[f32], stride: usize, out: &mut [f32]) {
    let dk = out.len() / ROWS;
    let mut c0 = 0;
    while c0 + 16 <= dk {
        mix_block::<16>(weights, n, vals, stride, out, c0);
        c0 += 16;
    }
    if c0 + 8 <= dk {
        mix_block::<8>(weights, n, vals, stride, out, c0);
        c0 += 8;
    }
    let np = weights.len() / ROWS;
    for c in c0..dk {
        for r in 0..ROWS {
            out[r * dk + c] = (0..n).fold(0.0, |s, j| weights[r * np + j].mul_add(vals[j * stride + c], s));
        }
    }
}

/// Features `c0 .. c0 + W` of [`mix_rows`].
#[inline(always)]
fn mix_block<const W: usize>(weights: &[f32], n: usize, vals: &[f32], stride: usize, out: &mut [f32], c0: usize) {
    let dk = out.len() / ROWS;
    let np = weights.len() / ROWS;
    let mut acc = [[0.0f32; W]; ROWS];
    for j in 0..n {
        let v: &[f32; W] = vals[j * stride + c0..j * stride + c0 + W].try_into().expect("a full block");
        for (r, a) in acc.iter_mut().enumerate() {
            let w = weights[r * np + j];
            for i in 0..W {
                a[i] = w.mul_add(v[i], a[i]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        out[r * dk + c0..r * dk + c0 + W].copy_from_slice(a);
    }
}

// Attention of [`ROWS`] queries of one head (`q` `[ROWS][dk]`, scaled) over a sequence's keys
// padded to `np` (`keys_t` `[dk][np]`, `bias` `[np]`), of which the first `n` are real (`vals`:
// their value rows, `stride` apart): the scores into `scores` `[ROWS][np]`, their exponentials
// (less the row's maximum) in place, the weighted sums of the values over the rows' sums into
// `out` `[ROWS][dk]`.
simd_dispatch!(attend_rows(q: &[f32], keys_t: &[f32], bias: &[f32], vals: &[f32], stride: usize, n: usize, scores: &mut [f32], out: &mut [f32]) {
    let np = bias.len();
    score_rows(q, keys_t, bias, scores);
    let mut sums = [0.0f32; ROWS];
    for (row, s) in scores.chunks_exact_mut(np).zip(sums.iter_mut()) {
        let max = row_max(row);
        for x in row.iter_mut() {
            *x = exp_approx(*x - max);
        }
        *s = sum(row);
    }
    mix_rows(scores, n, vals, stride, out);
    let dk = out.len() / ROWS;
    for (o, s) in out.chunks_exact_mut(dk).zip(sums) {
        let inv = 1.0 / s;
        for x in o.iter_mut() {
            *x *= inv;
        }
    }
});

/// `softmax(scale · q kᵀ + bias) v` for every head. `k`, `v`: `[b, l, d]` with head `h` in
/// features `h·dk .. (h+1)·dk`; `q`: `[b, lq, d]`, the queries of the first `lq ≤ l` positions
/// (all of them, or only the first when just the `[CLS]` state is wanted); `bias`: `[b, l]`,
/// added to the scores of each key (0, or a large negative number for padding). Returns
/// `[b, lq, d]`, heads merged.
pub(super) fn attention_forward(q: &FloatTensor<Flex>, k: &FloatTensor<Flex>, v: &FloatTensor<Flex>, bias: &FloatTensor<Flex>, heads: usize, scale: f64) -> FloatTensor<Flex> {
    let shape = q.layout().shape().clone();
    let (b, lq, d) = (shape[0], shape[1], shape[2]);
    let l = k.layout().shape()[1];
    assert!(lq <= l, "attention: {lq} queries for {l} keys");
    let dk = d / heads;
    let (qv, kv, vv, bv) = (values(q), values(k), values(v), values(bias));
    let scale = scale as f32;
    // A task is a sequence and a group of its heads: the whole sequence when there are enough
    // sequences to share among the threads (its keys and values are then read as contiguous
    // rows, and its block is its rows of the merged output, written in place), single heads
    // otherwise.
    let group = if b >= 2 * rayon::current_num_threads() { heads } else { 1 };
    let groups = heads / group;
    let width = group * dk;
    // Sequence `s`, heads `g · group ..`: their outputs `[lq][width]` into `block`.
    let task = |s: usize, g: usize, block: &mut [f32]| {
        // Keys past the last one with a zero bias are padding in every row: skipped.
        let n = bv[s * l..(s + 1) * l].iter().rposition(|&x| x == 0.0).map_or(l, |p| p + 1);
        let np = n.next_multiple_of(KEYS);
        let mut bias = vec![PAD_KEY_BIAS; np];
        bias[..n].copy_from_slice(&bv[s * l..s * l + n]);
        let (mut keys_t, mut query) = (vec![0.0f32; width * np], vec![0.0f32; ROWS * dk]);
        let (mut scores, mut out) = (vec![0.0f32; ROWS * np], vec![0.0f32; ROWS * dk]);
        // The group's keys transposed, `[width][np]`: each key row read once, in order.
        let first = (s * l) * d + g * width;
        for t in 0..n {
            for (c, &x) in kv[first + t * d..first + t * d + width].iter().enumerate() {
                keys_t[c * np + t] = x;
            }
        }
        for h in g * group..(g + 1) * group {
            let h0 = (h - g * group) * dk;
            let vals = &vv[first + h0..first + (n - 1) * d + h0 + dk];
            for t0 in (0..lq).step_by(ROWS) {
                // rows past `lq` in the last group score zero queries and are dropped
                let rows = ROWS.min(lq - t0);
                for (r, row) in query.chunks_exact_mut(dk).enumerate() {
                    if r < rows {
                        let at = (s * lq + t0 + r) * d + h * dk;
                        for (x, &y) in row.iter_mut().zip(&qv[at..at + dk]) {
                            *x = y * scale;
                        }
                    } else {
                        row.fill(0.0);
                    }
                }
                attend_rows(&query, &keys_t[h0 * np..(h0 + dk) * np], &bias, vals, d, n, &mut scores, &mut out);
                for (r, row) in out.chunks_exact(dk).take(rows).enumerate() {
                    let at = (t0 + r) * width + h0;
                    block[at..at + dk].copy_from_slice(row);
                }
            }
        }
    };
    let mut merged = vec![0.0f32; b * lq * d];
    if groups == 1 {
        merged.par_chunks_mut(lq * d).enumerate().for_each(|(s, block)| task(s, 0, block));
    } else {
        let blocks: Vec<Vec<f32>> = (0..b * groups)
            .into_par_iter()
            .map(|t| {
                let mut block = vec![0.0f32; lq * width];
                task(t / groups, t % groups, &mut block);
                block
            })
            .collect();
        for (t, block) in blocks.iter().enumerate() {
            let (s, h) = (t / heads, t % heads);
            for (r, row) in block.chunks_exact(dk).enumerate() {
                let at = (s * lq + r) * d + h * dk;
                merged[at..at + dk].copy_from_slice(row);
            }
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
        // fills them, batch 1 of length 1, sequences with padding and one without, a head of 40,
        // enough sequences for a task a sequence on up to 35 threads
        for (lengths, l, heads, dk) in [(vec![7, 1, 4], 7, 3, 5), (vec![37, 20], 37, 2, 16), (vec![1], 1, 4, 3), (vec![9, 9], 9, 1, 11), (vec![19, 40], 40, 2, 40), ((0..70).map(|i| 1 + i % 5).collect(), 5, 2, 8)] {
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
    fn the_first_positions_queries_alone_give_the_first_rows() {
        let device = Device::flex();
        device.seed(5);
        // (lengths, padded length, heads, head size, queries); the last with enough sequences
        // for a task a sequence on up to 35 threads
        for (lengths, l, heads, dk, lq) in [(vec![6, 2, 5], 6, 2, 8, 1), (vec![21, 13], 21, 3, 16, 5), (vec![1], 1, 2, 4, 1), ((0..70).map(|i| 1 + i % 7).collect(), 7, 3, 16, 1)] {
            let [q, k, v] = inputs(&lengths, l, heads, dk, &device);
            let bias = bias(&lengths, l, &device);
            let scale = 1.0 / (dk as f64).sqrt();
            let b = lengths.len();
            let first = q.clone().slice([0..b, 0..lq, 0..heads * dk]);
            let fused = attention(&first, &k, &v, &bias, heads, scale).expect("the plain flex device takes the fused kernel");
            assert_eq!(fused.dims(), [b, lq, heads * dk]);
            let reference = composed(q, k, v, bias, heads, scale).slice([0..b, 0..lq, 0..heads * dk]);
            let diff: f32 = (fused - reference).abs().max().into_scalar();
            assert!(diff < 1e-5, "lengths {lengths:?}, {lq} queries: max difference {diff}");
        }
    }

    #[test]
    fn where_gradients_are_recorded_attention_is_left_to_burn() {
        let device = Device::flex().autodiff();
        let [q, k, v] = inputs(&[3], 3, 2, 4, &device);
        assert!(attention(&q, &k, &v, &bias(&[3], 3, &device), 2, 0.5).is_none());
    }
}
