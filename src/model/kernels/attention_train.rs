//! Multi-head scaled dot-product attention for training: forward and backward as one operation
//! each, over (sequence, head) tasks.
//!
//! Composed from Burn operations, a training step splits the heads with strided copies,
//! scales the queries in a pass, runs `b · h` score products into a freshly zeroed and copied
//! `[b, h, l, l]` tensor, adds the padding bias by a broadcast, and mirrors all of it backward
//! (with transposed copies for the products' gradients). Here each (sequence, head) is one task
//! whose products (`gemm`, one thread each) read the head's columns of `q`, `k`, `v` `[b, l, d]`
//! in place through strides and write the context straight into the merged-heads layout; the
//! softmax (bias and scale folded in) runs on the task's rows while they are in cache. The
//! probabilities before dropout are kept for the backward pass; the dropout mask is redrawn from
//! its seed there, as [`super::mask::masked`] does for every dropout.

use super::{flex_tensor, mask, softmax_backward_rows, softmax_rows, values};
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use rayon::prelude::*;

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    b: usize,
    l: usize,
    d: usize,
    heads: usize,
}

impl Dims {
    fn of(q: &FloatTensor<Flex>, heads: usize) -> Self {
        let s = q.layout().shape();
        let (b, l, d) = (s[0], s[1], s[2]);
        assert!(heads > 0 && d % heads == 0, "attention: width {d} is not a multiple of {heads} heads");
        Self { b, l, d, heads }
    }
    fn dk(&self) -> usize {
        self.d / self.heads
    }
    /// Offset of task `t`'s (sequence, head) first element in a `[b, l, d]` tensor.
    fn head_at(&self, t: usize) -> usize {
        (t / self.heads) * self.l * self.d + (t % self.heads) * self.dk()
    }
}

/// What the backward pass needs: the inputs (shared, not copied), the probabilities before
/// dropout `[b, h, l, l]`, and the dropout (probability, mask seed).
#[derive(Debug, Clone)]
pub(super) struct AttentionState {
    q: FloatTensor<Flex>,
    k: FloatTensor<Flex>,
    v: FloatTensor<Flex>,
    probs: Vec<f32>,
    scale: f32,
    heads: usize,
    dropout: Option<(f64, u64)>,
}

/// A pointer to disjoint blocks of one buffer written by parallel tasks.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes a block (a head's columns of its own sequence, or its own
// `[l, l]` block) no other task touches.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// A strided matrix at an offset: (offset, row stride, column stride).
type View = (usize, usize, usize);

/// `dst = beta · lhs · rhs` (`+= ` when `accumulate`) for `m × k` and `k × n` strided views, one thread.
///
/// # Safety
/// The views must lie inside their buffers and `dst`'s block must not be written by anyone else.
#[allow(clippy::too_many_arguments)]
unsafe fn product(m: usize, k: usize, n: usize, dst: *mut f32, (dat, drs, dcs): View, lhs: &[f32], (lat, lrs, lcs): View, rhs: &[f32], (rat, rrs, rcs): View, beta: f32, accumulate: bool) {
    debug_assert!(lat + (m.max(1) - 1) * lrs + (k.max(1) - 1) * lcs < lhs.len().max(1) && rat + (k.max(1) - 1) * rrs + (n.max(1) - 1) * rcs < rhs.len().max(1));
    unsafe {
        gemm::gemm(m, n, k, dst.add(dat), dcs as isize, drs as isize, accumulate, lhs.as_ptr().add(lat), lcs as isize, lrs as isize, rhs.as_ptr().add(rat), rcs as isize, rrs as isize, 1.0f32, beta, false, false, false, gemm::Parallelism::None);
    }
}

/// `x` times the dropout mask of (probability, seed) — the same mask for the probabilities
/// forward and for their gradient backward.
fn dropped_out(x: &[f32], (prob, base): (f64, u64)) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    mask::masked(base, prob, Some(x), &mut out);
    out
}

/// `softmax(scale · q kᵀ + bias) v` per head, with dropout on the probabilities when `dropout`
/// is given; `q`, `k`, `v` `[b, l, d]`, `bias` `[b, l]` (added to every query's score of each key).
pub(super) fn forward(q: &FloatTensor<Flex>, k: &FloatTensor<Flex>, v: &FloatTensor<Flex>, bias: &FloatTensor<Flex>, heads: usize, scale: f32, dropout: Option<(f64, u64)>) -> (FloatTensor<Flex>, AttentionState) {
    let dims = Dims::of(q, heads);
    let Dims { b, l, d, .. } = dims;
    let dk = dims.dk();
    let (qv, kv, vv, bv) = (values(q), values(k), values(v), values(bias));
    assert_eq!(bv.len(), b * l, "attention: bias of {} values for [{b}, {l}]", bv.len());
    // scores → probabilities, a [l, l] block a task
    let mut probs = vec![0.0f32; b * heads * l * l];
    probs.par_chunks_mut((l * l).max(1)).enumerate().for_each(|(t, p)| {
        let at = dims.head_at(t);
        let mut scores = vec![0.0f32; l * l];
        // SAFETY: `scores` is this task's own; the views are head `t`'s columns of sequence `t / heads`.
        unsafe { product(l, dk, l, scores.as_mut_ptr(), (0, l, 1), &qv, (at, d, 1), &kv, (at, 1, d), scale, false) };
        let bias_row = &bv[(t / heads) * l..(t / heads + 1) * l];
        scores.chunks_exact_mut(l).for_each(|row| row.iter_mut().zip(bias_row).for_each(|(s, &bb)| *s += bb));
        softmax_rows(&scores, p, l);
    });
    let dropped = dropout.map(|drop| dropped_out(&probs, drop));
    let mixed = dropped.as_deref().unwrap_or(&probs);
    let mut out = vec![0.0f32; b * l * d];
    let dst = Shared(out.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each(|t| {
        let at = dims.head_at(t);
        let dst = dst;
        // SAFETY: task `t` writes head `t`'s columns of its sequence, no other task's.
        unsafe { product(l, l, dk, dst.0, (at, d, 1), mixed, (t * l * l, l, 1), &vv, (at, d, 1), 1.0, false) };
    });
    let state = AttentionState { q: q.clone(), k: k.clone(), v: v.clone(), probs, scale, heads, dropout };
    (flex_tensor(out, q.layout().shape().clone()), state)
}

/// Gradients of `q`, `k`, `v` from the output's gradient `g` `[b, l, d]`.
pub(super) fn backward(st: &AttentionState, g: &FloatTensor<Flex>) -> [FloatTensor<Flex>; 3] {
    let dims = Dims::of(&st.q, st.heads);
    let Dims { b, l, d, heads } = dims;
    let dk = dims.dk();
    let (qv, kv, vv, gv) = (values(&st.q), values(&st.k), values(&st.v), values(g));
    let dropped = st.dropout.map(|drop| dropped_out(&st.probs, drop));
    let mixed = dropped.as_deref().unwrap_or(&st.probs);
    // gradient of the (dropped-out) probabilities, g · vᵀ, and of the values, pᵀ · g
    let mut dmixed = vec![0.0f32; st.probs.len()];
    let mut dv = vec![0.0f32; b * l * d];
    let dv_ptr = Shared(dv.as_mut_ptr());
    dmixed.par_chunks_mut((l * l).max(1)).enumerate().for_each(|(t, dp)| {
        let at = dims.head_at(t);
        let dv_ptr = dv_ptr;
        // SAFETY: `dp` is this task's block; it writes head `t`'s columns of `dv` alone.
        unsafe {
            product(l, dk, l, dp.as_mut_ptr(), (0, l, 1), &gv, (at, d, 1), &vv, (at, 1, d), 1.0, false);
            product(l, l, dk, dv_ptr.0, (at, d, 1), mixed, (t * l * l, 1, l), &gv, (at, d, 1), 1.0, false);
        }
    });
    // through the dropout: the same mask
    let dprobs = match st.dropout {
        Some(drop) => dropped_out(&dmixed, drop),
        None => dmixed,
    };
    // through the softmax, then the score product: dq = scale · ds · k, dk = scale · dsᵀ · q
    let (mut dq, mut dkey) = (vec![0.0f32; b * l * d], vec![0.0f32; b * l * d]);
    let (dq_ptr, dk_ptr) = (Shared(dq.as_mut_ptr()), Shared(dkey.as_mut_ptr()));
    (0..b * heads).into_par_iter().for_each(|t| {
        let at = dims.head_at(t);
        let (dq_ptr, dk_ptr) = (dq_ptr, dk_ptr);
        let block = t * l * l..(t + 1) * l * l;
        let mut ds = vec![0.0f32; l * l];
        softmax_backward_rows(&st.probs[block.clone()], &dprobs[block], &mut ds, l);
        // SAFETY: task `t` writes head `t`'s columns of its sequence in `dq` and `dk` alone.
        unsafe {
            product(l, l, dk, dq_ptr.0, (at, d, 1), &ds, (0, l, 1), &kv, (at, d, 1), st.scale, false);
            product(l, l, dk, dk_ptr.0, (at, d, 1), &ds, (0, 1, l), &qv, (at, d, 1), st.scale, false);
        }
    });
    let shape = st.q.layout().shape().clone();
    [flex_tensor(dq, shape.clone()), flex_tensor(dkey, shape.clone()), flex_tensor(dv, shape)]
}

#[cfg(test)]
mod tests {
    use crate::model::kernels::{dropout, softmax_last, trained_attention};
    use burn::prelude::*;
    use burn::tensor::{Distribution, TensorData};

    /// Burn's operations, as the Transformer composes them without the fused kernel.
    fn composed(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, bias: Tensor<2>, heads: usize, scale: f32, drop: Option<(f64, u64)>) -> Tensor<3> {
        let [b, l, d] = q.dims();
        let split = |t: Tensor<3>| t.reshape([b, l, heads, d / heads]).swap_dims(1, 2);
        let probs = softmax_last(split(q).matmul(split(k).transpose()) * scale + bias.reshape([b, 1, 1, l]));
        let probs = match drop {
            Some((p, base)) => dropout(probs, p, base),
            None => probs,
        };
        probs.matmul(split(v)).swap_dims(1, 2).reshape([b, l, d])
    }

    #[test]
    fn fused_training_attention_matches_burns_operations_in_values_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(23);
        // (batch, length, heads, head size, padded keys of the last sequence, dropout)
        for (b, l, heads, dk, pad, drop) in [(1, 1, 1, 3, 0, None), (2, 7, 3, 5, 2, None), (3, 20, 2, 16, 5, Some((0.1, 77))), (2, 33, 4, 11, 0, Some((0.3, 5)))] {
            let d = heads * dk;
            let make = || Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let (q0, k0, v0, up) = (make(), make(), make(), make());
            let bias: Vec<f32> = (0..b * l).map(|i| if i / l == b - 1 && i % l >= l - pad { -1.0e4 } else { 0.0 }).collect();
            let bias = Tensor::<2>::from_data(TensorData::new(bias, [b, l]), &device);
            let scale = 1.0 / (dk as f32).sqrt();
            let run = |ours: bool| {
                let (q, k, v) = (q0.clone().require_grad(), k0.clone().require_grad(), v0.clone().require_grad());
                let y = if ours { trained_attention(&q, &k, &v, &bias, heads, scale as f64, drop).expect("flex f32") } else { composed(q.clone(), k.clone(), v.clone(), bias.clone(), heads, scale, drop) };
                let grads = (y.clone() * up.clone()).sum().backward();
                [y.inner(), q.grad(&grads).unwrap(), k.grad(&grads).unwrap(), v.grad(&grads).unwrap()]
            };
            for (what, (a, c)) in ["output", "q gradient", "k gradient", "v gradient"].iter().zip(run(true).into_iter().zip(run(false))) {
                let diff: f32 = (a - c).abs().max().into_scalar();
                assert!(diff < 1e-4, "[{b}, {l}] × {heads} heads of {dk}, dropout {drop:?}: {what} differs by {diff}");
            }
        }
    }
}
