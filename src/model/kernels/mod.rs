//! Fused CPU kernels, with their gradients, for the element-wise and normalisation operations
//! that dominate a Transformer step on the flex backend.
//!
//! Under autodiff Burn composes softmax and LayerNorm from primitive operations (max, subtract,
//! exp, sum, divide, …: a pass over memory each, forward and backward), and its GELU evaluates
//! `erf` one scalar at a time. Here each is one backend-extension operation
//! (`#[backend_extension]`) with a hand-written backward: row-parallel over two threads, and
//! `erf`/`exp` as branch-free polynomials the compiler vectorises. On any other device (CUDA,
//! …) the public functions fall back to Burn's own operations, so models run everywhere.
//! Each kernel is checked against the Burn operation, values and gradients, in the tests.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Dispatch, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// Elements a parallel task handles (large enough to amortise scheduling).
const TASK: usize = 1 << 14;

/// The operations this module adds to a backend.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: burn::backend::Backend {
    /// Softmax over the last dimension.
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Exact (erf) GELU.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Inverted dropout with the mask drawn from `base` (see [`mask::masked`]).
    fn fused_dropout(x: FloatTensor<Self>, prob: f64, base: u64) -> FloatTensor<Self>;
    /// LayerNorm over the last dimension with scale and shift.
    fn fused_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self>;
    /// Multi-head attention without gradients (see [`attention`]).
    fn fused_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, heads: usize, scale: f64) -> FloatTensor<Self>;
    /// `x · w + b` without gradients (see [`linear`]).
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// "Same"-padded convolutions with bias and ReLU as products and shifted sums, without gradients (see [`conv_windows`]).
    fn fused_conv_windows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, widths: Vec<usize>, filters: usize) -> FloatTensor<Self>;
}

/// Whether the kernels of this module serve `x`: f32 on the flex device (with or without
/// autodiff); anything else takes Burn's own operations.
pub(crate) fn applies<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && x.device().without_autodiff() == Device::flex()
}

/// Multi-head scaled dot-product attention, `softmax(scale · q kᵀ + bias) v` per head, for
/// inference: on the plain flex device one fused pass ([`attention::attention_forward`]);
/// where gradients may be recorded (training) or on any other device, `None`, and the caller
/// composes it from Burn's operations. `k`, `v`: `[b, l, d]`, head `h` in features
/// `h·d/heads ..`; `q`: `[b, lq, d]`, the queries of the first `lq ≤ l` positions;
/// `bias`: `[b, l]`, added to every query's score of each key. Returns `[b, lq, d]`.
pub fn attention(q: &Tensor<3>, k: &Tensor<3>, v: &Tensor<3>, bias: &Tensor<2>, heads: usize, scale: f64) -> Option<Tensor<3>> {
    if !inference_kernels_apply(q) {
        return None;
    }
    let [q, k, v, bias] = [q.clone().into_dispatch(), k.clone().into_dispatch(), v.clone().into_dispatch(), bias.clone().into_dispatch()];
    Some(Tensor::from_dispatch(<Dispatch as FusedOps>::fused_attention(q, k, v, bias, heads, scale)))
}

/// A linear layer, `x · w + b` (`x` `[.., d_in]`, `w` `[d_in, d_out]`) → `[.., d_out]`. For
/// inference on the plain flex device, one matrix product (the `gemm` crate's, as Burn's) into
/// an output already holding the bias rows: Burn's product allocates a zeroed buffer, copies it
/// into an aligned one, and the bias is added in another pass (together ≈ 6 % of a small
/// Transformer's prediction time). Elsewhere, or without a bias, Burn's own layer.
pub fn linear<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    match &layer.bias {
        Some(bias) if inference_kernels_apply(&x) => Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(x.into_dispatch(), layer.weight.val().into_dispatch(), bias.val().into_dispatch())),
        _ => layer.forward(x),
    }
}

/// Whether the inference kernels ([`attention`], [`conv_windows`]) serve `x`: f32 on the plain
/// flex device, where no gradient is recorded.
pub fn inference_kernels_apply<const D: usize>(x: &Tensor<D>) -> bool {
    applies(x) && !x.device().is_autodiff()
}

/// "Same"-padded convolutions of several widths with ReLU, from a matrix product of each
/// sequence by every shifted weight block ([`windows::windows_forward`]), for inference (where
/// [`inference_kernels_apply`]). `x` `[b, l, d]` (zero at padding), `weight` `[d, Σ w · filters]`,
/// `bias` `[widths · filters]`, `keep` `[b, l]` → `[b, l, widths · filters]`.
pub fn conv_windows(x: Tensor<3>, weight: Tensor<2>, bias: Tensor<1>, keep: Tensor<2>, widths: &[usize], filters: usize) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_conv_windows(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), keep.into_dispatch(), widths.to_vec(), filters))
}

/// Softmax over the last dimension.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !applies(&x) {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_softmax(x.into_dispatch()))
}

/// Dropout of `x` (where [`applies`]) with the mask drawn from `base`, in one parallel pass.
pub(crate) fn dropout<const D: usize>(x: Tensor<D>, prob: f64, base: u64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_dropout(x.into_dispatch(), prob, base))
}

/// The configured activation: the exact GELU (fused kernel) or its tanh approximation.
pub fn activate<const D: usize>(x: Tensor<D>, activation: crate::config::Activation) -> Tensor<D> {
    match activation {
        crate::config::Activation::Gelu => gelu(x),
        crate::config::Activation::GeluTanh => burn::tensor::activation::gelu_approximate(x),
    }
}

/// GELU, `x Φ(x)` with the exact normal CDF.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !applies(&x) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch()))
}

/// LayerNorm over the last dimension, with scale `gamma` and shift `beta` (Burn's parameter
/// names, so weights saved with `burn::nn::LayerNorm` load into it).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, one a feature.
    pub gamma: burn::module::Param<Tensor<1>>,
    /// Shift, one a feature.
    pub beta: burn::module::Param<Tensor<1>>,
    /// Added to the variance.
    #[module(skip)]
    pub epsilon: f64,
}

impl LayerNorm {
    /// γ = 1, β = 0 over `d` features.
    pub fn new(d: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: burn::module::Param::from_tensor(Tensor::ones([d], device)),
            beta: burn::module::Param::from_tensor(Tensor::zeros([d], device)),
            epsilon,
        }
    }

    /// Normalises `x` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if applies(&x) {
            return Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
                x.into_dispatch(),
                self.gamma.val().into_dispatch(),
                self.beta.val().into_dispatch(),
                self.epsilon,
            ));
        }
        burn::tensor::module::layer_norm(x, self.gamma.val(), Some(self.beta.val()), self.epsilon)
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels on plain slices.

/// Contiguous f32 values of a flex tensor (copied only when it is a strided view).
fn values(t: &FloatTensor<Flex>) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "fused kernels take f32 tensors");
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("contiguous").to_vec()),
    }
}

fn flex_tensor(values: Vec<f32>, shape: burn::tensor::Shape) -> FloatTensor<Flex> {
    FloatTensor::<Flex>::from_data(TensorData::new(values, shape))
}

fn last_dim(t: &FloatTensor<Flex>) -> usize {
    *t.layout().shape().last().expect("a tensor with dimensions")
}

/// Rows a parallel task takes so that it holds about [`TASK`] elements.
fn rows_per_task(row: usize) -> usize {
    (TASK / row.max(1)).max(1)
}

/// Runs `f` over matching chunks of whole rows of `out` and `inputs`, in parallel.
fn par_rows(out: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let chunk = (rows_per_task(row) * row).max(1);
    out.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| f(i * chunk, o));
}

/// `exp(x)` for f32 by range reduction and a degree-6 polynomial (Cephes' expf), branch-free so
/// loops over it vectorise; relative error about 2e-7.
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5 × 2^23 trick: `f32::round` does not vectorise.
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    // n as an integer, read from the shifted value's low mantissa bits: `n as i32` is a
    // saturating conversion that compiles to scalar code with NaN checks, lane by lane.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), branch-free.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    let y = 1.0 - poly * exp_approx(-a * a);
    y.copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Compiles `body` once plainly and once for AVX2+FMA, picking at run time. (An AVX-512 variant
/// measured no faster on the 2-core EPYC these kernels were timed on.)
macro_rules! simd_dispatch {
    ($name:ident ($($arg:ident : $ty:ty),*) $body:block) => {
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn inner($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { inner($($arg),*) }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

mod attention;
pub mod mask;
mod windows;

/// Products smaller than this many multiply-adds run on one thread (Burn's flex threshold).
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// Threads for a product of `m × k × n` multiply-adds on its own: all of them from
/// [`PARALLEL_PRODUCT`] up, else one.
pub fn product_threads(m: usize, k: usize, n: usize) -> gemm::Parallelism {
    if m * k * n >= PARALLEL_PRODUCT { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None }
}

/// `out = lhs · rhs`, or `out += lhs · rhs` when `accumulate`, for row-major contiguous `lhs`
/// `[m, k]`, `rhs` `[k, n]` and `out` `[m, n]`, by the `gemm` crate Burn's flex products run on
/// (its instructions chosen at run time), writing into the caller's buffer.
pub fn product_into(out: &mut [f32], lhs: &[f32], rhs: &[f32], [m, k, n]: [usize; 3], accumulate: bool, threads: gemm::Parallelism) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n && out.len() >= m * n, "product_into: [{m}, {k}] · [{k}, {n}] from {} and {} values into {}", lhs.len(), rhs.len(), out.len());
    // SAFETY: the lengths checked above hold the m × k, k × n and m × n row-major matrices the
    // strides describe; `out` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(m, n, k, out.as_mut_ptr(), 1, n as isize, accumulate, lhs.as_ptr(), 1, k as isize, rhs.as_ptr(), 1, n as isize, 1.0f32, 1.0f32, false, false, false, threads);
    }
}

/// `x · w + b` with `x` `[.., k]`, `w` `[k, n]`, `b` `[n]`: the output starts as the bias rows
/// and the product is accumulated into it.
fn linear_forward(x: &FloatTensor<Flex>, w: &FloatTensor<Flex>, b: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let mut shape = x.layout().shape().clone();
    let k = last_dim(x);
    let n = last_dim(w);
    assert_eq!(w.layout().shape()[0], k, "linear: input width {k}, weight {:?}", w.layout().shape());
    let m = shape.num_elements() / k.max(1);
    let (xv, wv, bv) = (values(x), values(w), values(b));
    let mut out = Vec::with_capacity(m * n);
    for _ in 0..m {
        out.extend_from_slice(&bv);
    }
    product_into(&mut out, &xv, &wv, [m, k, n], true, product_threads(m, k, n));
    let last = shape.num_dims() - 1;
    shape[last] = n;
    flex_tensor(out, shape)
}

/// Lanes of the partial sums and maxima below: independent accumulators let the compiler
/// vectorise a reduction it must otherwise keep in order.
const LANES: usize = 16;

#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
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
fn dot(a: &[f32], b: &[f32]) -> f32 {
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
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut c = a.chunks_exact(LANES);
    for x in &mut c {
        for i in 0..LANES {
            acc[i] += x[i];
        }
    }
    acc.iter().sum::<f32>() + c.remainder().iter().sum::<f32>()
}

simd_dispatch!(gelu_chunk(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = 0.5 * v * (1.0 + erf_approx(v * FRAC_1_SQRT_2));
    }
});

simd_dispatch!(gelu_backward_chunk(x: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &v), &gv) in out.iter_mut().zip(x).zip(g) {
        let cdf = 0.5 * (1.0 + erf_approx(v * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp_approx(-0.5 * v * v);
        *o = gv * (cdf + v * pdf);
    }
});

simd_dispatch!(softmax_rows(x: &[f32], out: &mut [f32], row: usize) {
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

simd_dispatch!(softmax_backward_rows(y: &[f32], g: &[f32], out: &mut [f32], row: usize) {
    for ((yr, gr), or) in y.chunks_exact(row).zip(g.chunks_exact(row)).zip(out.chunks_exact_mut(row)) {
        let dot = dot(yr, gr);
        for ((o, &yv), &gv) in or.iter_mut().zip(yr).zip(gr) {
            *o = yv * (gv - dot);
        }
    }
});

// Normalises rows: writes the mean and 1/σ of each row into `mean`, `rstd`, and x̂ γ + β into
// `out` (which holds x - mean on the way).
simd_dispatch!(layer_norm_rows(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, mean: &mut [f32], rstd: &mut [f32], out: &mut [f32]) {
    let d = gamma.len();
    for (r, (xr, or)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let m = sum(xr) / d as f32;
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = v - m;
        }
        let rs = 1.0 / (dot(or, or) / d as f32 + eps).sqrt();
        (mean[r], rstd[r]) = (m, rs);
        for i in 0..d {
            or[i] = or[i] * rs * gamma[i] + beta[i];
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

fn softmax_forward(x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let row = last_dim(x);
    let xv = values(x);
    let mut out = vec![0.0f32; xv.len()];
    par_rows(&mut out, row, |start, o| softmax_rows(&xv[start..start + o.len()], o, row));
    flex_tensor(out, x.layout().shape().clone())
}

fn softmax_backward(y: &FloatTensor<Flex>, g: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let row = last_dim(y);
    let (yv, gv) = (values(y), values(g));
    let mut out = vec![0.0f32; yv.len()];
    par_rows(&mut out, row, |s, o| softmax_backward_rows(&yv[s..s + o.len()], &gv[s..s + o.len()], o, row));
    flex_tensor(out, y.layout().shape().clone())
}

fn gelu_forward(x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let xv = values(x);
    let mut out = vec![0.0f32; xv.len()];
    par_rows(&mut out, 1, |s, o| gelu_chunk(&xv[s..s + o.len()], o));
    flex_tensor(out, x.layout().shape().clone())
}

fn gelu_backward(x: &FloatTensor<Flex>, g: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let (xv, gv) = (values(x), values(g));
    let mut out = vec![0.0f32; xv.len()];
    par_rows(&mut out, 1, |s, o| gelu_backward_chunk(&xv[s..s + o.len()], &gv[s..s + o.len()], o));
    flex_tensor(out, x.layout().shape().clone())
}

/// What the LayerNorm backward needs: the input (shared with its producer, not copied), the
/// mean and `1/σ` of each row, and `γ`.
#[derive(Debug, Clone)]
struct LayerNormState {
    x: FloatTensor<Flex>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    gamma: Vec<f32>,
}

fn layer_norm_forward(x: &FloatTensor<Flex>, gamma: &FloatTensor<Flex>, beta: &FloatTensor<Flex>, eps: f64) -> (FloatTensor<Flex>, LayerNormState) {
    let d = last_dim(x);
    let (xv, gv, bv) = (values(x), values(gamma), values(beta));
    let rows = xv.len() / d;
    let (mut mean, mut rstd, mut out) = (vec![0.0f32; rows], vec![0.0f32; rows], vec![0.0f32; xv.len()]);
    let per = rows_per_task(d);
    mean.par_chunks_mut(per)
        .zip(rstd.par_chunks_mut(per))
        .zip(out.par_chunks_mut(per * d))
        .enumerate()
        .for_each(|(i, ((m, r), o))| {
            let s = i * per * d;
            layer_norm_rows(&xv[s..s + o.len()], &gv, &bv, eps as f32, m, r, o)
        });
    let y = flex_tensor(out, x.layout().shape().clone());
    (y, LayerNormState { x: x.clone(), mean, rstd, gamma: gv.into_owned() })
}

fn layer_norm_backward(st: &LayerNormState, g: &FloatTensor<Flex>) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
    let d = st.gamma.len();
    let (gv, xv) = (values(g), values(&st.x));
    let mut dx = vec![0.0f32; gv.len()];
    let per = rows_per_task(d);
    let (dgamma, dbeta) = dx
        .par_chunks_mut(per * d)
        .zip(st.mean.par_chunks(per).zip(st.rstd.par_chunks(per)))
        .enumerate()
        .map(|(i, (dxc, (m, rs)))| {
            let s = i * per * d;
            let (mut dg, mut db, mut xhat) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f32; d]);
            layer_norm_backward_rows(&gv[s..s + dxc.len()], &xv[s..s + dxc.len()], m, rs, &st.gamma, &mut xhat, dxc, &mut dg, &mut db);
            (dg, db)
        })
        .reduce(
            || (vec![0.0f32; d], vec![0.0f32; d]),
            |(mut a, mut b), (c, e)| {
                a.iter_mut().zip(&c).for_each(|(x, y)| *x += y);
                b.iter_mut().zip(&e).for_each(|(x, y)| *x += y);
                (a, b)
            },
        );
    let vec_shape = burn::tensor::Shape::new([d]);
    (flex_tensor(dx, st.x.layout().shape().clone()), flex_tensor(dgamma, vec_shape.clone()), flex_tensor(dbeta, vec_shape))
}

fn dropout_apply(x: &FloatTensor<Flex>, prob: f64, base: u64) -> FloatTensor<Flex> {
    let xv = values(x);
    let mut out = vec![0.0f32; xv.len()];
    mask::masked(base, prob, Some(&xv), &mut out);
    flex_tensor(out, x.layout().shape().clone())
}

impl FusedOps for Flex {
    fn fused_conv_windows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, widths: Vec<usize>, filters: usize) -> FloatTensor<Self> {
        windows::windows_forward(&x, &weight, &bias, &keep, &widths, filters)
    }
    fn fused_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, heads: usize, scale: f64) -> FloatTensor<Self> {
        attention::attention_forward(&q, &k, &v, &bias, heads, scale)
    }
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_forward(&x, &w, &b)
    }
    fn fused_dropout(x: FloatTensor<Self>, prob: f64, base: u64) -> FloatTensor<Self> {
        dropout_apply(&x, prob, base)
    }
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_forward(&x)
    }
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_forward(&x)
    }
    fn fused_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        layer_norm_forward(&x, &gamma, &beta, epsilon).0
    }
}

/// Backward of a one-input operation: `grad_input = f(saved, grad_output)`, where `saved` is the
/// output (softmax), the input (GELU) or the mask's seed (dropout).
#[derive(Debug)]
struct UnaryBackward<S>(fn(&S, &FloatTensor<Flex>) -> FloatTensor<Flex>);

impl<S: Clone + Send + std::fmt::Debug + 'static> Backward<Flex, 1> for UnaryBackward<S> {
    type State = S;
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, (self.0)(&ops.state, &g));
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = LayerNormState;
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [px, pgamma, pbeta] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (dx, dgamma, dbeta) = layer_norm_backward(&ops.state, &g);
        for (node, grad) in [(px, dx), (pgamma, dgamma), (pbeta, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_dropout(x: FloatTensor<Self>, prob: f64, base: u64) -> FloatTensor<Self> {
        let y = dropout_apply(x.primitive(), prob, base);
        // the gradient is the upstream gradient times the same mask, redrawn from its seed
        let backward: UnaryBackward<(f64, u64)> = UnaryBackward(|&(prob, base), g| dropout_apply(g, prob, base));
        match backward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((prob, base), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match UnaryBackward(softmax_backward).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = softmax_forward(x.primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(softmax_forward(x.primitive())),
        }
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match UnaryBackward(gelu_backward).prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let input = x.primitive().clone();
                let y = gelu_forward(&input);
                prep.finish(input, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu_forward(x.primitive())),
        }
    }

    fn fused_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, heads: usize, scale: f64) -> FloatTensor<Self> {
        // [`attention`] sends only tensors of the plain device here; on this one no gradient
        // can flow through the result, so it is recorded as a constant.
        let y = attention::attention_forward(q.primitive(), k.primitive(), v.primitive(), bias.primitive(), heads, scale);
        <Self as burn::backend::AutodiffBackend>::from_inner(y)
    }

    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        // as for attention: only tensors of the plain device are sent here
        <Self as burn::backend::AutodiffBackend>::from_inner(linear_forward(x.primitive(), w.primitive(), b.primitive()))
    }

    fn fused_conv_windows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, widths: Vec<usize>, filters: usize) -> FloatTensor<Self> {
        // as for attention: only tensors of the plain device are sent here
        let y = windows::windows_forward(x.primitive(), weight.primitive(), bias.primitive(), keep.primitive(), &widths, filters);
        <Self as burn::backend::AutodiffBackend>::from_inner(y)
    }

    fn fused_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        let (y, state) = layer_norm_forward(x.primitive(), gamma.primitive(), beta.primitive(), epsilon);
        match LayerNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn the_inference_linear_layer_equals_burns() {
        let device = Device::flex();
        device.seed(7);
        // odd widths, a single row, and one product large enough to run on several threads
        for (rows, d_in, d_out) in [(1, 3, 5), (7, 17, 9), (2 * 37, 128, 33), (600, 200, 300)] {
            let layer = burn::nn::LinearConfig::new(d_in, d_out).init(&device);
            let x = Tensor::<3>::random([2, rows / 2 + rows % 2, d_in], Distribution::Normal(0.0, 1.0), &device);
            let ours = linear(&layer, x.clone());
            assert_eq!(ours.dims(), [2, rows / 2 + rows % 2, d_out]);
            let diff = max_diff(ours, layer.forward(x));
            assert!(diff < 1e-4, "{rows} × {d_in} → {d_out}: max difference {diff}");
        }
        // a first row sliced out of a batch (a strided view) and a 2-d input
        let layer = burn::nn::LinearConfig::new(6, 4).init(&device);
        let x = Tensor::<3>::random([3, 5, 6], Distribution::Normal(0.0, 1.0), &device).slice([0..3, 0..1, 0..6]);
        assert!(max_diff(linear(&layer, x.clone()), layer.forward(x)) < 1e-5);
        let x = Tensor::<2>::random([4, 6], Distribution::Normal(0.0, 1.0), &device);
        assert!(max_diff(linear(&layer, x.clone()), layer.forward(x)) < 1e-5);
    }

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Runs `ours` and `burns` on the same random input (scaled by `scale`) and a random upstream
    /// gradient; returns the largest differences of the outputs and of the input gradients.
    fn compare(shape: [usize; 3], scale: f32, ours: impl Fn(Tensor<3>) -> Tensor<3>, burns: impl Fn(Tensor<3>) -> Tensor<3>) -> (f32, f32) {
        let device = Device::flex().autodiff();
        device.seed(5);
        let x0 = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device) * scale;
        let up = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let x = x0.clone().detach().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * up.clone()).sum().backward();
            (y.inner(), x.grad(&grads).unwrap())
        };
        let (ya, ga) = run(&ours);
        let (yb, gb) = run(&burns);
        (max_diff(ya, yb), max_diff(ga, gb))
    }

    #[test]
    fn softmax_matches_burn_in_values_and_gradients() {
        let (v, g) = compare([3, 5, 37], 4.0, softmax_last, |x| burn::tensor::activation::softmax(x, 2));
        assert!(v < 1e-6 && g < 1e-5, "softmax differs: values {v}, gradients {g}");
    }

    #[test]
    fn gelu_matches_burn_in_values_and_gradients() {
        let (v, g) = compare([4, 9, 1000], 3.0, gelu, burn::tensor::activation::gelu);
        assert!(v < 1e-5 && g < 1e-5, "gelu differs: values {v}, gradients {g}");
    }

    #[test]
    fn layer_norm_matches_burn_in_values_and_all_gradients() {
        let device = Device::flex().autodiff();
        device.seed(9);
        // Non-trivial γ and β so their gradients are tested too.
        let ours = LayerNorm {
            gamma: burn::module::Param::from_tensor(Tensor::random([24], Distribution::Normal(1.0, 0.5), &device)),
            beta: burn::module::Param::from_tensor(Tensor::random([24], Distribution::Normal(0.0, 0.5), &device)),
            epsilon: 1e-5,
        };
        let x0 = Tensor::<3>::random([6, 50, 24], Distribution::Normal(2.0, 3.0), &device);
        let up = Tensor::<3>::random([6, 50, 24], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if fused { ours.forward(x.clone()) } else { burn::tensor::module::layer_norm(x.clone(), ours.gamma.val(), Some(ours.beta.val()), 1e-5) };
            let grads = (y.clone() * up.clone()).sum().backward();
            let gamma = ours.gamma.val().grad(&grads).unwrap();
            let beta = ours.beta.val().grad(&grads).unwrap();
            (y.inner(), x.grad(&grads).unwrap(), gamma, beta)
        };
        let (y1, gx1, gg1, gb1) = run(true);
        let (y2, gx2, gg2, gb2) = run(false);
        assert!(max_diff(y1, y2) < 1e-5);
        assert!(max_diff(gx1, gx2) < 1e-4);
        assert!(max_diff(gg1, gg2) < 1e-3, "γ gradient sums 300 rows");
        assert!(max_diff(gb1, gb2) < 1e-3);
    }

    #[test]
    fn approximations_are_accurate() {
        let (mut exp_err, mut erf_err) = (0.0f64, 0.0f64);
        for i in -8000..8000 {
            let x = i as f32 / 100.0;
            let exact = (x as f64).exp();
            exp_err = exp_err.max(((exp_approx(x) as f64 - exact) / exact).abs());
            erf_err = erf_err.max((erf_approx(x / 10.0) as f64 - libm::erf((x / 10.0) as f64)).abs());
        }
        assert!(exp_err < 1e-6, "exp relative error {exp_err}");
        assert!(erf_err < 1e-6, "erf absolute error {erf_err}");
    }

    #[test]
    fn without_autodiff_the_same_kernels_serve_inference() {
        let device = Device::flex();
        let x = Tensor::<2>::random([7, 33], Distribution::Normal(0.0, 2.0), &device);
        assert!(max_diff(softmax_last(x.clone()), burn::tensor::activation::softmax(x.clone(), 1)) < 1e-6);
        assert!(max_diff(gelu(x.clone()), burn::tensor::activation::gelu(x)) < 1e-5);
    }
}
