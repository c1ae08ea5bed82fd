//! The row-wise and element-wise kernels on flex buffers — softmax, GELU, LayerNorm, cross-entropy,
//! the maximum over positions, dropout — forward and backward, each row-parallel and compiled
//! for AVX2+FMA beside the plain build (see `simd_dispatch!`).

use super::{erf_approx, exp_approx, flex_tensor, last_dim, mask, par_rows, rows_per_task, values, FRAC_1_SQRT_2, FRAC_1_SQRT_2PI};
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use rayon::prelude::*;

/// Lanes of the partial sums and maxima below: independent accumulators let the compiler
/// vectorise a reduction it must otherwise keep in order.
const LANES: usize = 16;

#[inline(always)]
pub(super) fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let m = acc.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    chunks.remainder().iter().fold(m, |m, &v| if v > m { v } else { m })
}

#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum::<f32>()
}

#[inline(always)]
pub(super) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut c = a.chunks_exact(LANES);
    for x in &mut c {
        for i in 0..LANES {
            acc[i] += x[i];
        }
    }
    acc.iter().sum::<f32>() + c.remainder().iter().sum::<f32>()
}

// GELU of `x` in place.
simd_dispatch!(gelu_chunk(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf_approx(*v * FRAC_1_SQRT_2));
    }
});

simd_dispatch!(gelu_backward_chunk(x: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &v), &gv) in out.iter_mut().zip(x).zip(g) {
        let cdf = 0.5 * (1.0 + erf_approx(v * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp_approx(-0.5 * v * v);
        *o = gv * (cdf + v * pdf);
    }
});

simd_dispatch!(pub(super) softmax_rows(x: &[f32], out: &mut [f32], row: usize) {
    for (xr, or) in x.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
        let max = row_max(xr);
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = exp_approx(v - max);
        }
        let inv = 1.0 / sum(or);
        for o in or.iter_mut() {
            *o *= inv;
        }
    }
});

simd_dispatch!(pub(super) softmax_backward_rows(y: &[f32], g: &[f32], out: &mut [f32], row: usize) {
    for ((yr, gr), or) in y.chunks_exact(row).zip(g.chunks_exact(row)).zip(out.chunks_exact_mut(row)) {
        let dot = dot(yr, gr);
        for ((o, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
            *o = yv * (gv - dot);
        }
    }
});

// log Σ exp of each row of `x` into `out`.
simd_dispatch!(log_sum_exp_rows(x: &[f32], out: &mut [f32], row: usize) {
    for (xr, o) in x.chunks_exact(row).zip(out.iter_mut()) {
        let max = row_max(xr);
        let mut acc = [0.0f32; LANES];
        let mut chunks = xr.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                acc[i] += exp_approx(c[i] - max);
            }
        }
        let rest: f32 = chunks.remainder().iter().map(|&v| exp_approx(v - max)).sum();
        *o = max + (acc.iter().sum::<f32>() + rest).ln();
    }
});

// `scale · softmax` of each row of `x` from its log-sum-exp.
simd_dispatch!(scaled_softmax_rows(x: &[f32], lse: &[f32], scale: f32, out: &mut [f32], row: usize) {
    for ((xr, or), &l) in x.chunks_exact(row).zip(out.chunks_exact_mut(row)).zip(lse) {
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = scale * exp_approx(v - l);
        }
    }
});

// Normalises rows in place: writes the mean and 1/σ of each row into `mean`, `rstd`, and x̂ γ + β
// over the row (which holds x - mean on the way).
simd_dispatch!(layer_norm_rows(rows: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32, mean: &mut [f32], rstd: &mut [f32]) {
    let d = gamma.len();
    for (r, row) in rows.chunks_exact_mut(d).enumerate() {
        let m = sum(row) / d as f32;
        for v in row.iter_mut() {
            *v -= m;
        }
        let rs = 1.0 / (dot(row, row) / d as f32 + eps).sqrt();
        (mean[r], rstd[r]) = (m, rs);
        for i in 0..d {
            row[i] = row[i] * rs * gamma[i] + beta[i];
        }
    }
});

// LayerNorm input gradient of rows, adding this chunk's γ and β gradients into `dgamma`, `dbeta`;
// x̂ is recomputed from x, the mean and 1/σ into `xhat`, a row of scratch.
simd_dispatch!(layer_norm_backward_rows(g: &[f32], x: &[f32], mean: &[f32], rstd: &[f32], gamma: &[f32], xhat: &mut [f32], dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32]) {
    let d = gamma.len();
    for (r, ((gr, xr), dr)) in g.chunks_exact(d).zip(x.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).enumerate() {
        let hr = &mut *xhat;
        for i in 0..d {
            hr[i] = (xr[i] - mean[r]) * rstd[r];
            dr[i] = gr[i] * gamma[i];
            dgamma[i] += gr[i] * hr[i];
            dbeta[i] += gr[i];
        }
        let mean_gg = sum(dr) / d as f32;
        let mean_ggh = dot(dr, hr) / d as f32;
        for i in 0..d {
            dr[i] = rstd[r] * (dr[i] - mean_gg - hr[i] * mean_ggh);
        }
    }
});

// ---------------------------------------------------------------------------------------------
// Flex forward implementations and the backward passes they share with autodiff.

pub(super) fn softmax_forward(x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let row = last_dim(x);
    let xv = values(x);
    let mut out = vec![0.0f32; xv.len()];
    par_rows(&mut out, row, |start, o| softmax_rows(&xv[start..start + o.len()], o, row));
    flex_tensor(out, x.layout().shape().clone())
}

pub(super) fn softmax_backward(y: &FloatTensor<Flex>, g: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let row = last_dim(y);
    let (yv, gv) = (values(y), values(g));
    let mut out = vec![0.0f32; yv.len()];
    par_rows(&mut out, row, |s, o| softmax_backward_rows(&yv[s..s + o.len()], &gv[s..s + o.len()], o, row));
    flex_tensor(out, y.layout().shape().clone())
}

pub(super) fn gelu_forward(x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let mut out = values(x).into_owned();
    par_rows(&mut out, 1, |_, o| gelu_chunk(o));
    flex_tensor(out, x.layout().shape().clone())
}

/// GELU of `x` written over `x` where nothing else holds its buffer (a linear layer's fresh
/// output at inference: no allocation, one pass less); else into a new tensor.
pub(super) fn gelu_in_place(mut x: FloatTensor<Flex>) -> FloatTensor<Flex> {
    if let Some(buffer) = own_buffer(&mut x) {
        par_rows(buffer, 1, |_, o| gelu_chunk(o));
        return x;
    }
    gelu_forward(&x)
}

pub(super) fn gelu_backward(x: &FloatTensor<Flex>, g: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let (xv, gv) = (values(x), values(g));
    let mut out = vec![0.0f32; xv.len()];
    par_rows(&mut out, 1, |s, o| gelu_backward_chunk(&xv[s..s + o.len()], &gv[s..s + o.len()], o));
    flex_tensor(out, x.layout().shape().clone())
}

/// What the cross-entropy backward needs: the logits (shared), each row's log-sum-exp, the targets.
#[derive(Debug, Clone)]
pub(super) struct CrossEntropyState {
    logits: FloatTensor<Flex>,
    lse: Vec<f32>,
    targets: Vec<usize>,
}

pub(super) fn cross_entropy_forward(logits: &FloatTensor<Flex>, targets: Vec<usize>) -> (FloatTensor<Flex>, CrossEntropyState) {
    let classes = last_dim(logits);
    let xv = values(logits);
    let rows = xv.len() / classes.max(1);
    assert_eq!(rows, targets.len(), "cross-entropy: {rows} rows of logits, {} targets", targets.len());
    if let Some(t) = targets.iter().find(|&&t| t >= classes) {
        panic!("cross-entropy: target class {t} of {classes}");
    }
    let mut lse = vec![0.0f32; rows];
    let per = rows_per_task(classes);
    lse.par_chunks_mut(per).enumerate().for_each(|(i, o)| log_sum_exp_rows(&xv[i * per * classes..(i * per + o.len()) * classes], o, classes));
    let total: f64 = targets.iter().enumerate().map(|(r, &t)| (lse[r] - xv[r * classes + t]) as f64).sum();
    let loss = flex_tensor(vec![(total / rows as f64) as f32], burn::tensor::Shape::new([1]));
    (loss, CrossEntropyState { logits: logits.clone(), lse, targets })
}

/// `g / n · (softmax(logits) − one-hot(targets))` for the loss's upstream gradient `g` `[1]`.
pub(super) fn cross_entropy_backward(st: &CrossEntropyState, g: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let classes = last_dim(&st.logits);
    let xv = values(&st.logits);
    let scale = values(g)[0] / st.targets.len() as f32;
    let mut out = vec![0.0f32; xv.len()];
    let per = rows_per_task(classes);
    out.par_chunks_mut(per * classes).enumerate().for_each(|(i, o)| {
        let (r0, rows) = (i * per, o.len() / classes);
        scaled_softmax_rows(&xv[r0 * classes..(r0 + rows) * classes], &st.lse[r0..r0 + rows], scale, o, classes);
        for (r, &t) in st.targets[r0..r0 + rows].iter().enumerate() {
            o[r * classes + t] -= scale;
        }
    });
    flex_tensor(out, st.logits.layout().shape().clone())
}

pub(super) fn max_over_positions_forward(x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let shape = x.layout().shape().clone();
    let (b, l, d) = (shape[0], shape[1], shape[2]);
    let xv = values(x);
    let mut out = vec![f32::NEG_INFINITY; b * d];
    if l > 0 && d > 0 {
        out.par_chunks_mut(d).zip(xv.par_chunks(l * d)).for_each(|(o, rows)| max_rows(rows, o));
    }
    flex_tensor(out, burn::tensor::Shape::new([b, d]))
}

// `out[j]` = the largest of `out[j]` and every row's `j`-th value (`rows`: whole rows of
// `out.len()`). NaN is kept, as Burn's max does.
simd_dispatch!(pub(super) max_rows(rows: &[f32], out: &mut [f32]) {
    for row in rows.chunks_exact(out.len()) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = if v > *o || v.is_nan() { v } else { *o };
        }
    }
});

/// What the LayerNorm backward needs: the input (shared with its producer, not copied), the
/// mean and `1/σ` of each row, and `γ`.
#[derive(Debug, Clone)]
pub(super) struct LayerNormState {
    x: FloatTensor<Flex>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    gamma: Vec<f32>,
}

pub(super) fn layer_norm_forward(x: &FloatTensor<Flex>, gamma: &FloatTensor<Flex>, beta: &FloatTensor<Flex>, eps: f64) -> (FloatTensor<Flex>, LayerNormState) {
    let mut out = values(x).into_owned();
    let gv = values(gamma).into_owned();
    let (mean, rstd) = layer_norm_over(&mut out, &gv, &values(beta), eps);
    let y = flex_tensor(out, x.layout().shape().clone());
    (y, LayerNormState { x: x.clone(), mean, rstd, gamma: gv })
}

/// LayerNorm of `x` written over `x` where nothing else holds its buffer (inference: a residual
/// sum made for it); else into a new tensor.
pub(super) fn layer_norm_in_place(mut x: FloatTensor<Flex>, gamma: &FloatTensor<Flex>, beta: &FloatTensor<Flex>, eps: f64) -> FloatTensor<Flex> {
    if let Some(buffer) = own_buffer(&mut x) {
        layer_norm_over(buffer, &values(gamma), &values(beta), eps);
        return x;
    }
    layer_norm_forward(&x, gamma, beta, eps).0
}

/// Normalises the rows of `rows` in place (row-parallel); returns each row's mean and 1/σ.
fn layer_norm_over(rows: &mut [f32], gv: &[f32], bv: &[f32], eps: f64) -> (Vec<f32>, Vec<f32>) {
    let d = gv.len();
    let n = rows.len() / d.max(1);
    let (mut mean, mut rstd) = (vec![0.0f32; n], vec![0.0f32; n]);
    let per = rows_per_task(d);
    rows.par_chunks_mut(per * d)
        .zip(mean.par_chunks_mut(per))
        .zip(rstd.par_chunks_mut(per))
        .for_each(|((x, m), r)| layer_norm_rows(x, gv, bv, eps as f32, m, r));
    (mean, rstd)
}

/// The buffer of `x` to write its result over: where `x` alone holds it (no other tensor shares
/// it, as the inputs kept for a backward pass do) and its elements are the whole buffer, in order.
fn own_buffer(x: &mut FloatTensor<Flex>) -> Option<&mut [f32]> {
    let whole = x.layout().contiguous_offsets().is_some_and(|(start, end)| start == 0 && end * 4 == x.bytes().len());
    if whole { x.try_storage_mut::<f32>() } else { None }
}

pub(super) fn layer_norm_backward(st: &LayerNormState, g: &FloatTensor<Flex>) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
    let d = st.gamma.len();
    let (gv, xv) = (values(g), values(&st.x));
    let mut dx = vec![0.0f32; gv.len()];
    let per = rows_per_task(d);
    // each block of rows' γ and β gradients, then their sums in block order: the same result
    // on any number of threads (a `reduce` would add them in a tree that work stealing shapes)
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per * d)
        .zip(st.mean.par_chunks(per).zip(st.rstd.par_chunks(per)))
        .enumerate()
        .map(|(i, (dxc, (m, rs)))| {
            let s = i * per * d;
            let (mut dg, mut db, mut xhat) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f32; d]);
            layer_norm_backward_rows(&gv[s..s + dxc.len()], &xv[s..s + dxc.len()], m, rs, &st.gamma, &mut xhat, dxc, &mut dg, &mut db);
            (dg, db)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
    for (dg, db) in &partial {
        dgamma.iter_mut().zip(dg).for_each(|(x, y)| *x += y);
        dbeta.iter_mut().zip(db).for_each(|(x, y)| *x += y);
    }
    let vec_shape = burn::tensor::Shape::new([d]);
    (flex_tensor(dx, st.x.layout().shape().clone()), flex_tensor(dgamma, vec_shape.clone()), flex_tensor(dbeta, vec_shape))
}

pub(super) fn dropout_apply(x: &FloatTensor<Flex>, prob: f64, base: u64) -> FloatTensor<Flex> {
    let xv = values(x);
    let mut out = vec![0.0f32; xv.len()];
    mask::masked(base, prob, Some(&xv), &mut out);
    flex_tensor(out, x.layout().shape().clone())
}
