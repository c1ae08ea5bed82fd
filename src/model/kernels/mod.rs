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
use crate::config::Precision;
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
    /// Multi-head attention with dropout on the probabilities, differentiable (see [`trained_attention`]).
    fn fused_trained_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, heads: usize, scale: f64, dropout_prob: f64, dropout_base: u64) -> FloatTensor<Self>;
    /// `x · w + b` (see [`linear`]).
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>, transposed_weight: bool, bf16: bool) -> FloatTensor<Self>;
    /// Mean cross-entropy of rows of logits against one target class a row, `[1]` (see [`cross_entropy`]).
    fn fused_cross_entropy(logits: FloatTensor<Self>, targets: Vec<usize>) -> FloatTensor<Self>;
    /// "Same"-padded convolutions with bias and ReLU as products and shifted sums, without
    /// gradients, or (`pooled`) only their maximum over the positions (see [`conv_windows`]).
    #[allow(clippy::too_many_arguments)]
    fn fused_conv_windows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, widths: Vec<usize>, filters: usize, bf16: bool, pooled: bool) -> FloatTensor<Self>;
    /// The feature-wise maximum over the positions, without gradients (see [`max_over_positions`]).
    fn fused_max_over_positions(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

thread_local! {
    static PRECISION: std::cell::Cell<Precision> = const { std::cell::Cell::new(Precision::F32) };
    static PREDICTION_PRECISION: std::cell::Cell<Precision> = const { std::cell::Cell::new(Precision::F32) };
}

/// Sets the precision of the training products made on this thread (the thread that runs the
/// forward and backward passes) until the returned guard is dropped. `bf16` where the CPU
/// lacks AVX-512 BF16 stays f32 (see [`bf16::supported`]; the caller reports it). Passes
/// without gradients (validation during training) are not affected: see
/// [`prediction_precision_scope`].
pub fn precision_scope(precision: Precision) -> PrecisionScope {
    PrecisionScope { cell: &PRECISION, previous: PRECISION.replace(precision) }
}

/// Sets the precision of the products of passes without gradients (prediction, evaluation,
/// embeddings) made on this thread until the returned guard is dropped: with `bf16`, the linear
/// layers and the TextCNN's convolutions of at least [`bf16::MIN_ROWS`] rows (a batch's
/// positions) take bf16 inputs and sum in f32 (where the CPU has AVX-512 BF16; else f32, and the
/// caller reports it).
pub fn prediction_precision_scope(precision: Precision) -> PrecisionScope {
    PrecisionScope { cell: &PREDICTION_PRECISION, previous: PREDICTION_PRECISION.replace(precision) }
}

/// Restores the previous precision when dropped (see [`precision_scope`],
/// [`prediction_precision_scope`]).
#[must_use = "the precision holds until the guard is dropped"]
pub struct PrecisionScope {
    cell: &'static std::thread::LocalKey<std::cell::Cell<Precision>>,
    previous: Precision,
}

impl Drop for PrecisionScope {
    fn drop(&mut self) {
        self.cell.set(self.previous);
    }
}

/// `None`, or the line that says `task` was asked for bf16 on a CPU without AVX-512 BF16 and
/// runs in f32 (`doing`: what it does then, e.g. "training").
pub fn bf16_unavailable(precision: Precision, task: &str, doing: &str) -> Option<String> {
    (precision == Precision::Bf16 && !bf16::supported()).then(|| format!("{task}: precision bf16 asked, but this CPU has no AVX-512 BF16 instructions: {doing} in f32"))
}

/// Whether a product made on this thread, its left operand `rows` rows, takes bf16 inputs: one
/// recorded for gradients (`autodiff`) under a bf16 [`precision_scope`], the others under a bf16
/// [`prediction_precision_scope`] and from [`bf16::MIN_ROWS`] rows up.
fn bf16_product(autodiff: bool, rows: usize) -> bool {
    let cell = if autodiff { &PRECISION } else { &PREDICTION_PRECISION };
    cell.get() == Precision::Bf16 && bf16::supported() && (autodiff || rows >= bf16::MIN_ROWS)
}

/// Rows of `x` as a matrix of its last dimension.
fn rows<const D: usize>(x: &Tensor<D>) -> usize {
    x.shape().num_elements() / x.dims()[D - 1].max(1)
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

/// Multi-head scaled dot-product attention as [`attention`] computes it, with dropout on the
/// probabilities (`dropout`: probability and mask seed, `None` for none), where gradients may
/// be recorded: on the flex device (f32) one operation forward and one backward over
/// (sequence, head) tasks ([`attention_train`]); elsewhere `None`, and the caller composes it
/// from Burn's operations.
pub fn trained_attention(q: &Tensor<3>, k: &Tensor<3>, v: &Tensor<3>, bias: &Tensor<2>, heads: usize, scale: f64, dropout: Option<(f64, u64)>) -> Option<Tensor<3>> {
    if !applies(q) {
        return None;
    }
    let (prob, base) = dropout.unwrap_or((0.0, 0));
    let [q, k, v, bias] = [q.clone().into_dispatch(), k.clone().into_dispatch(), v.clone().into_dispatch(), bias.clone().into_dispatch()];
    Some(Tensor::from_dispatch(<Dispatch as FusedOps>::fused_trained_attention(q, k, v, bias, heads, scale, prob, base)))
}

/// A linear layer, `x · w + b` (`x` `[.., d_in]`, `w` `[d_in, d_out]`) → `[.., d_out]`. On the
/// flex device (f32, with or without autodiff), one matrix product (the `gemm` crate's, as
/// Burn's) of all rows at once into an output already holding the bias rows, and in training
/// a backward pass of two products that read `w` and `x` transposed through strides. Burn's
/// layer, for a `[b, l, d]` input, runs `b` single-threaded products that each pack the weight
/// again, allocates every output zeroed and copies it into an aligned buffer, and adds the bias
/// in another pass (about 8 % of a small Transformer's prediction time, more of a training
/// step). Elsewhere, or without a bias, Burn's own layer.
pub fn linear<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    match &layer.bias {
        Some(bias) if applies(&x) => {
            let bf16 = bf16_product(x.device().is_autodiff(), rows(&x));
            Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(x.into_dispatch(), layer.weight.val().into_dispatch(), bias.val().into_dispatch(), false, bf16))
        }
        _ => layer.forward(x),
    }
}

/// `x · wᵀ + b` for `x` `[n, k]` and a weight stored `[d_out, k]` (the masked-LM output
/// projection, tied to the token embedding table) → `[n, d_out]`: on the flex device the
/// kernels of [`linear`] reading `w` transposed through strides; elsewhere Burn's operations.
pub fn linear_transposed(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    if !applies(&x) {
        let d_out = b.dims()[0];
        return x.matmul(w.transpose()) + b.reshape([1, d_out]);
    }
    let bf16 = bf16_product(x.device().is_autodiff(), rows(&x));
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(x.into_dispatch(), w.into_dispatch(), b.into_dispatch(), true, bf16))
}

/// Whether the inference kernels ([`attention`], [`conv_windows`]) serve `x`: f32 on the plain
/// flex device, where no gradient is recorded.
pub fn inference_kernels_apply<const D: usize>(x: &Tensor<D>) -> bool {
    applies(x) && !x.device().is_autodiff()
}

/// "Same"-padded convolutions of several widths with ReLU, from a matrix product of each
/// sequence by every shifted weight block ([`windows::windows_forward`]), for inference (where
/// [`inference_kernels_apply`]). `x` `[b, l, d]` (zero at padding), `weight` `[d, Σ w · filters]`,
/// `bias` `[widths · filters]`, `keep` `[b, l]` → `[b, l, widths · filters]`. The products take
/// bf16 inputs under a bf16 [`prediction_precision_scope`].
pub fn conv_windows(x: Tensor<3>, weight: Tensor<2>, bias: Tensor<1>, keep: Tensor<2>, widths: &[usize], filters: usize) -> Tensor<3> {
    let bf16 = bf16_product(false, rows(&x));
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_conv_windows(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), keep.into_dispatch(), widths.to_vec(), filters, bf16, false))
}

/// [`conv_windows`]' maximum over the positions of each sequence, `[b, widths · filters]`
/// ([`max_over_positions`] of it), without writing the states out: what a TextCNN classifier
/// reads of them.
pub fn conv_windows_max(x: Tensor<3>, weight: Tensor<2>, bias: Tensor<1>, keep: Tensor<2>, widths: &[usize], filters: usize) -> Tensor<2> {
    let bf16 = bf16_product(false, rows(&x));
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_conv_windows(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch(), keep.into_dispatch(), widths.to_vec(), filters, bf16, true))
}

/// The feature-wise maximum over the positions of each sequence, `x` `[b, l, d]` → `[b, d]`
/// (Burn's `max_dim(1)`): for inference (where [`inference_kernels_apply`]), rows compared with
/// vector instructions in one pass a sequence — flex's reduction over a middle dimension runs
/// lane by lane, ≈ 7 % of a small TextCNN's prediction time; elsewhere Burn's.
pub fn max_over_positions(x: Tensor<3>) -> Tensor<2> {
    let [b, _, d] = x.dims();
    if !inference_kernels_apply(&x) {
        return x.max_dim(1).reshape([b, d]);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_max_over_positions(x.into_dispatch()))
}

/// Mean cross-entropy of `logits` `[n, classes]` against `targets` `[n]` (Burn's
/// `CrossEntropyLoss` without smoothing, weights or padding) → `[1]`. On the flex device one
/// pass a row forward (its log-sum-exp kept) and one backward, `(softmax − one-hot) / n`,
/// instead of log-softmax, gather and mean composed (several passes over the masked-LM
/// head's `[n, vocab]` logits, each way); elsewhere Burn's loss.
pub fn cross_entropy(logits: Tensor<2>, targets: &Tensor<1, Int>) -> Tensor<1> {
    if !applies(&logits) {
        return burn::nn::loss::CrossEntropyLossConfig::new().init(&logits.device()).forward(logits, targets.clone());
    }
    let targets: Vec<usize> = targets.to_data().convert::<i64>().try_into_vec::<i64>().expect("integer targets").into_iter().map(|t| t as usize).collect();
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_cross_entropy(logits.into_dispatch(), targets))
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
/// loops over it vectorise; relative error about 2e-7. Written with `mul_add` so that the
/// AVX2+FMA variants of the kernels make each step one fused instruction (Rust never contracts
/// `a * b + c` by itself).
#[inline(always)]
fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5 × 2^23 trick: `f32::round` does not vectorise.
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x.mul_add(std::f32::consts::LOG2_E, SHIFT);
    let n = shifted - SHIFT;
    // n as an integer, read from the shifted value's low mantissa bits: `n as i32` is a
    // saturating conversion that compiles to scalar code with NaN checks, lane by lane.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r + 1.0);
    e * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), branch-free, in fused
/// multiply-adds as [`exp_approx`].
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1f32.mul_add(a, 1.0);
    let poly = 1.061_405_4f32.mul_add(t, -1.453_152_1).mul_add(t, 1.421_413_7).mul_add(t, -0.284_496_74).mul_add(t, 0.254_829_6) * t;
    let y = poly.mul_add(-exp_approx(-a * a), 1.0);
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
mod attention_train;
pub mod bf16;
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
pub fn product_into(out: &mut [f32], lhs: &[f32], rhs: &[f32], dims: [usize; 3], accumulate: bool, threads: gemm::Parallelism) {
    product_of_stored(out, (lhs, Stored::AsIs), (rhs, Stored::AsIs), dims, accumulate, threads);
}

/// How an operand of [`product_of_stored`] is held in memory: row-major as it is, or row-major
/// as its transpose (a `[k, n]` operand stored as `[n, k]`), read through strides, not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// The matrix itself, row-major.
    AsIs,
    /// Its transpose, row-major.
    Transposed,
}

impl Stored {
    fn of(transposed: bool) -> Self {
        if transposed { Stored::Transposed } else { Stored::AsIs }
    }
}

/// [`product_into`] with either operand possibly stored transposed: `out` `[m, n]` (row-major,
/// contiguous) `= lhs [m, k] · rhs [k, n]` (`+=` when `accumulate`).
pub fn product_of_stored(out: &mut [f32], lhs: (&[f32], Stored), rhs: (&[f32], Stored), [m, k, n]: [usize; 3], accumulate: bool, threads: gemm::Parallelism) {
    assert!(out.len() >= m * n, "product: [{m}, {n}] into {} values", out.len());
    // SAFETY: `out` holds the m × n output and is borrowed mutably, so nothing else aliases it.
    unsafe { gemm_stored(out.as_mut_ptr(), lhs, rhs, [m, k, n], accumulate, threads) }
}

/// A new `[m, n]` buffer holding `lhs · rhs` (see [`product_of_stored`]), written by the
/// product alone (not zero-filled first).
fn product_new(lhs: (&[f32], Stored), rhs: (&[f32], Stored), [m, k, n]: [usize; 3], bf16: bool) -> Vec<f32> {
    if k == 0 {
        return vec![0.0; m * n];
    }
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: the buffer has room for m × n values; a product that does not read its
    // destination writes every one of them (k > 0) before `set_len` exposes them.
    unsafe {
        if bf16 {
            bf16::product_raw(out.as_mut_ptr(), lhs, rhs, [m, k, n], false);
        } else {
            gemm_stored(out.as_mut_ptr(), lhs, rhs, [m, k, n], false, product_threads(m, k, n));
        }
        out.set_len(m * n);
    }
    out
}

/// # Safety
/// `out` must be valid for writing (and, when `accumulate`, reading) `m × n` values, not
/// aliased by `lhs` or `rhs`.
unsafe fn gemm_stored(out: *mut f32, (lhs, lhs_stored): (&[f32], Stored), (rhs, rhs_stored): (&[f32], Stored), [m, k, n]: [usize; 3], accumulate: bool, threads: gemm::Parallelism) {
    assert!(lhs.len() >= m * k && rhs.len() >= k * n, "product: [{m}, {k}] · [{k}, {n}] from {} and {} values", lhs.len(), rhs.len());
    // (column stride, row stride) of each operand as the product reads it
    let (lhs_cs, lhs_rs) = if lhs_stored == Stored::AsIs { (1, k) } else { (m, 1) };
    let (rhs_cs, rhs_rs) = if rhs_stored == Stored::AsIs { (1, n) } else { (k, 1) };
    // SAFETY: the lengths checked above hold the m × k and k × n matrices the strides describe
    // (a transposed operand spans the same elements); the caller vouches for `out`.
    unsafe {
        gemm::gemm(m, n, k, out, 1, n as isize, accumulate, lhs.as_ptr(), lhs_cs as isize, lhs_rs as isize, rhs.as_ptr(), rhs_cs as isize, rhs_rs as isize, 1.0f32, 1.0f32, false, false, false, threads);
    }
}

/// The weight of a linear layer as the product reads it: `[k, n]` as it is, or `[n, k]`
/// stored transposed (a tied embedding table used as the output projection).
fn weight_dims(w: &FloatTensor<Flex>, stored: Stored) -> (usize, usize) {
    let s = w.layout().shape();
    if stored == Stored::AsIs { (s[0], s[1]) } else { (s[1], s[0]) }
}

/// `x · w + b` with `x` `[.., k]`, `w` `[k, n]` (or stored `[n, k]`), `b` `[n]`: the output
/// starts as the bias rows and the product is accumulated into it.
fn linear_forward(x: &FloatTensor<Flex>, w: &FloatTensor<Flex>, b: &FloatTensor<Flex>, w_stored: Stored, bf16: bool) -> FloatTensor<Flex> {
    let mut shape = x.layout().shape().clone();
    let k = last_dim(x);
    let (w_k, n) = weight_dims(w, w_stored);
    assert_eq!(w_k, k, "linear: input width {k}, weight {:?}", w.layout().shape());
    let m = shape.num_elements() / k.max(1);
    let (xv, wv, bv) = (values(x), values(w), values(b));
    let mut out = Vec::with_capacity(m * n);
    for _ in 0..m {
        out.extend_from_slice(&bv);
    }
    if bf16 {
        bf16::product(&mut out, (&xv, Stored::AsIs), (&wv, w_stored), [m, k, n], true);
    } else {
        product_of_stored(&mut out, (&xv, Stored::AsIs), (&wv, w_stored), [m, k, n], true, product_threads(m, k, n));
    }
    let last = shape.num_dims() - 1;
    shape[last] = n;
    flex_tensor(out, shape)
}

/// What the linear layer's backward pass needs: its input and weight (shared, not copied).
#[derive(Debug, Clone)]
struct LinearState {
    x: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    w_stored: Stored,
    /// The products take bf16 inputs (as the forward pass's did).
    bf16: bool,
}

/// Gradients of `x · w + b` from the output's gradient `g` `[.., n]`: `dx = g · wᵀ` `[.., k]`,
/// `dw = xᵀ · g` `[k, n]` (or its transpose `gᵀ · x` for a weight stored `[n, k]`; the rows of
/// every leading dimension summed by the product) and `db` `[n]`, the column sums of `g`; each
/// computed only when asked (`want`: x, w, b).
fn linear_backward(st: &LinearState, g: &FloatTensor<Flex>, want: [bool; 3]) -> [Option<FloatTensor<Flex>>; 3] {
    let (k, n) = weight_dims(&st.w, st.w_stored);
    let gv = values(g);
    let m = gv.len() / n.max(1);
    let flip = |s: Stored| if s == Stored::AsIs { Stored::Transposed } else { Stored::AsIs };
    let dx = want[0].then(|| flex_tensor(product_new((&gv, Stored::AsIs), (&values(&st.w), flip(st.w_stored)), [m, n, k], st.bf16), st.x.layout().shape().clone()));
    let dw = want[1].then(|| match st.w_stored {
        Stored::AsIs => flex_tensor(product_new((&values(&st.x), Stored::Transposed), (&gv, Stored::AsIs), [k, m, n], st.bf16), burn::tensor::Shape::new([k, n])),
        Stored::Transposed => flex_tensor(product_new((&gv, Stored::Transposed), (&values(&st.x), Stored::AsIs), [n, m, k], st.bf16), burn::tensor::Shape::new([n, k])),
    });
    let db = want[2].then(|| flex_tensor(column_sums(&gv, n), burn::tensor::Shape::new([n])));
    [dx, dw, db]
}

/// Sums of the columns of row-major `x` `[rows, n]`: rows in fixed blocks summed in parallel,
/// the blocks' sums then added in order, so the result does not depend on the threads.
fn column_sums(x: &[f32], n: usize) -> Vec<f32> {
    let block = rows_per_task(n) * n;
    let partial: Vec<Vec<f32>> = x
        .par_chunks(block.max(1))
        .map(|rows| {
            let mut acc = vec![0.0f32; n];
            rows.chunks_exact(n).for_each(|r| acc.iter_mut().zip(r).for_each(|(a, v)| *a += v));
            acc
        })
        .collect();
    partial.into_iter().fold(vec![0.0f32; n], |mut sum, p| {
        sum.iter_mut().zip(&p).for_each(|(s, v)| *s += v);
        sum
    })
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
    let mut out = values(x).into_owned();
    par_rows(&mut out, 1, |_, o| gelu_chunk(o));
    flex_tensor(out, x.layout().shape().clone())
}

/// GELU of `x` written over `x` where nothing else holds its buffer (a linear layer's fresh
/// output at inference: no allocation, one pass less); else into a new tensor.
fn gelu_in_place(mut x: FloatTensor<Flex>) -> FloatTensor<Flex> {
    if let Some(buffer) = own_buffer(&mut x) {
        par_rows(buffer, 1, |_, o| gelu_chunk(o));
        return x;
    }
    gelu_forward(&x)
}

fn gelu_backward(x: &FloatTensor<Flex>, g: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    let (xv, gv) = (values(x), values(g));
    let mut out = vec![0.0f32; xv.len()];
    par_rows(&mut out, 1, |s, o| gelu_backward_chunk(&xv[s..s + o.len()], &gv[s..s + o.len()], o));
    flex_tensor(out, x.layout().shape().clone())
}

/// What the cross-entropy backward needs: the logits (shared), each row's log-sum-exp, the targets.
#[derive(Debug, Clone)]
struct CrossEntropyState {
    logits: FloatTensor<Flex>,
    lse: Vec<f32>,
    targets: Vec<usize>,
}

fn cross_entropy_forward(logits: &FloatTensor<Flex>, targets: Vec<usize>) -> (FloatTensor<Flex>, CrossEntropyState) {
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
fn cross_entropy_backward(st: &CrossEntropyState, g: &FloatTensor<Flex>) -> FloatTensor<Flex> {
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

fn max_over_positions_forward(x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
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
simd_dispatch!(max_rows(rows: &[f32], out: &mut [f32]) {
    for row in rows.chunks_exact(out.len()) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o = if v > *o || v.is_nan() { v } else { *o };
        }
    }
});

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
    let mut out = values(x).into_owned();
    let gv = values(gamma).into_owned();
    let (mean, rstd) = layer_norm_over(&mut out, &gv, &values(beta), eps);
    let y = flex_tensor(out, x.layout().shape().clone());
    (y, LayerNormState { x: x.clone(), mean, rstd, gamma: gv })
}

/// LayerNorm of `x` written over `x` where nothing else holds its buffer (inference: a residual
/// sum made for it); else into a new tensor.
fn layer_norm_in_place(mut x: FloatTensor<Flex>, gamma: &FloatTensor<Flex>, beta: &FloatTensor<Flex>, eps: f64) -> FloatTensor<Flex> {
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

fn layer_norm_backward(st: &LayerNormState, g: &FloatTensor<Flex>) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
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

fn dropout_apply(x: &FloatTensor<Flex>, prob: f64, base: u64) -> FloatTensor<Flex> {
    let xv = values(x);
    let mut out = vec![0.0f32; xv.len()];
    mask::masked(base, prob, Some(&xv), &mut out);
    flex_tensor(out, x.layout().shape().clone())
}

impl FusedOps for Flex {
    fn fused_trained_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, heads: usize, scale: f64, dropout_prob: f64, dropout_base: u64) -> FloatTensor<Self> {
        attention_train::forward(&q, &k, &v, &bias, heads, scale as f32, (dropout_prob > 0.0).then_some((dropout_prob, dropout_base))).0
    }
    fn fused_cross_entropy(logits: FloatTensor<Self>, targets: Vec<usize>) -> FloatTensor<Self> {
        cross_entropy_forward(&logits, targets).0
    }
    fn fused_conv_windows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, widths: Vec<usize>, filters: usize, bf16: bool, pooled: bool) -> FloatTensor<Self> {
        windows::windows_forward(&x, &weight, &bias, &keep, &widths, filters, bf16, pooled)
    }
    fn fused_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, heads: usize, scale: f64) -> FloatTensor<Self> {
        attention::attention_forward(&q, &k, &v, &bias, heads, scale)
    }
    fn fused_max_over_positions(x: FloatTensor<Self>) -> FloatTensor<Self> {
        max_over_positions_forward(&x)
    }
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>, transposed_weight: bool, bf16: bool) -> FloatTensor<Self> {
        linear_forward(&x, &w, &b, Stored::of(transposed_weight), bf16)
    }
    fn fused_dropout(x: FloatTensor<Self>, prob: f64, base: u64) -> FloatTensor<Self> {
        dropout_apply(&x, prob, base)
    }
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_forward(&x)
    }
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_in_place(x)
    }
    fn fused_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        layer_norm_in_place(x, &gamma, &beta, epsilon)
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

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearState;
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let want = ops.parents.each_ref().map(|p| p.is_some());
        for (node, grad) in ops.parents.into_iter().zip(linear_backward(&ops.state, &g, want)) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = attention_train::AttentionState;
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        for (node, grad) in ops.parents.into_iter().zip(attention_train::backward(&ops.state, &g)) {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_trained_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>, heads: usize, scale: f64, dropout_prob: f64, dropout_base: u64) -> FloatTensor<Self> {
        let dropout = (dropout_prob > 0.0).then_some((dropout_prob, dropout_base));
        let (y, state) = attention_train::forward(q.primitive(), k.primitive(), v.primitive(), bias.primitive(), heads, scale as f32, dropout);
        // the bias (padding) is a constant: no gradient flows to it
        match AttentionBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_cross_entropy(logits: FloatTensor<Self>, targets: Vec<usize>) -> FloatTensor<Self> {
        let (loss, state) = cross_entropy_forward(logits.primitive(), targets);
        match UnaryBackward(cross_entropy_backward).prepare::<C>([logits.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        }
    }

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

    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>, transposed_weight: bool, bf16: bool) -> FloatTensor<Self> {
        let w_stored = Stored::of(transposed_weight);
        let y = linear_forward(x.primitive(), w.primitive(), b.primitive(), w_stored, bf16);
        match LinearBackward.prepare::<C>([x.node(), w.node(), b.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(LinearState { x: x.primitive().clone(), w: w.primitive().clone(), w_stored, bf16 }, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn fused_max_over_positions(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // as for attention: only tensors of the plain device are sent here
        <Self as burn::backend::AutodiffBackend>::from_inner(max_over_positions_forward(x.primitive()))
    }

    fn fused_conv_windows(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, keep: FloatTensor<Self>, widths: Vec<usize>, filters: usize, bf16: bool, pooled: bool) -> FloatTensor<Self> {
        // as for attention: only tensors of the plain device are sent here
        let y = windows::windows_forward(x.primitive(), weight.primitive(), bias.primitive(), keep.primitive(), &widths, filters, bf16, pooled);
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

    #[test]
    fn the_trained_linear_layer_matches_burns_in_values_and_all_gradients() {
        let device = Device::flex().autodiff();
        device.seed(13);
        // [b, l, d_in] → d_out: length 1, batch 1, widths off multiples of 16, and products
        // large enough to run on several threads
        for (b, l, d_in, d_out) in [(1, 1, 3, 5), (3, 7, 17, 9), (2, 64, 100, 33), (8, 128, 256, 300)] {
            let layer = burn::nn::LinearConfig::new(d_in, d_out).init(&device);
            let x0 = Tensor::<3>::random([b, l, d_in], Distribution::Normal(0.0, 1.0), &device);
            let up = Tensor::<3>::random([b, l, d_out], Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if ours { linear(&layer, x.clone()) } else { layer.forward(x.clone()) };
                let grads = (y.clone() * up.clone()).sum().backward();
                let w = layer.weight.val().grad(&grads).unwrap();
                let bias = layer.bias.as_ref().unwrap().val().grad(&grads).unwrap();
                (y.inner(), x.grad(&grads).unwrap(), w, bias)
            };
            let ((y1, gx1, gw1, gb1), (y2, gx2, gw2, gb2)) = (run(true), run(false));
            let scale = (b * l) as f32; // the weight and bias gradients sum b·l rows
            for (what, diff, tol) in [("output", max_diff(y1, y2), 1e-4), ("x", max_diff(gx1, gx2), 1e-4), ("weight", max_diff(gw1, gw2), 1e-5 * scale.max(10.0)), ("bias", max_diff(gb1, gb2), 1e-5 * scale.max(10.0))] {
                assert!(diff < tol, "[{b}, {l}, {d_in}] → {d_out}: {what} differs by {diff}");
            }
        }
        // no gradient asked of the input (the embeddings' first layer): weight gradient alone
        let layer = burn::nn::LinearConfig::new(6, 4).init(&device);
        let x = Tensor::<2>::random([5, 6], Distribution::Normal(0.0, 1.0), &device);
        let grads = linear(&layer, x.clone()).sum().backward();
        let expected = x.clone().inner().transpose().matmul(Tensor::ones([5, 4], &Device::flex()));
        assert!(max_diff(layer.weight.val().grad(&grads).unwrap(), expected) < 1e-5);
        assert!(x.grad(&grads).is_none());
    }

    #[test]
    fn the_output_projection_by_a_stored_transposed_weight_matches_burns() {
        let device = Device::flex().autodiff();
        device.seed(17);
        for (rows, d, vocab) in [(1, 3, 7), (13, 20, 101), (300, 64, 700)] {
            let x0 = Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 1.0), &device);
            let table = Tensor::<2>::random([vocab, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let bias = Tensor::<1>::random([vocab], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let up = Tensor::<2>::random([rows, vocab], Distribution::Normal(0.0, 1.0), &device);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if ours { linear_transposed(x.clone(), table.clone(), bias.clone()) } else { x.clone().matmul(table.clone().transpose()) + bias.clone().reshape([1, vocab]) };
                let grads = (y.clone() * up.clone()).sum().backward();
                [y.inner(), x.grad(&grads).unwrap(), table.grad(&grads).unwrap()].map(|t| t.reshape([-1])).into_iter().chain([bias.grad(&grads).unwrap()]).collect::<Vec<_>>()
            };
            for (i, (a, b)) in run(true).into_iter().zip(run(false)).enumerate() {
                let diff = max_diff(a, b);
                assert!(diff < 1e-5 * (rows as f32).max(10.0), "[{rows}, {d}] · [{vocab}, {d}]ᵀ: output/x/table/bias #{i} differs by {diff}");
            }
        }
    }

    #[test]
    fn cross_entropy_matches_burns_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        device.seed(19);
        for (rows, classes) in [(1, 2), (7, 37), (40, 1000)] {
            let x0 = Tensor::<2>::random([rows, classes], Distribution::Normal(0.0, 3.0), &device);
            let targets = Tensor::<1, Int>::from_data(TensorData::new((0..rows).map(|r| ((r * 7919) % classes) as i64).collect::<Vec<_>>(), [rows]), &device);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let loss = if ours { cross_entropy(x.clone(), &targets) } else { burn::nn::loss::CrossEntropyLossConfig::new().init(&device).forward(x.clone(), targets.clone()) };
                // an upstream gradient other than 1, as a loss weight gives
                let grads = (loss.clone() * 2.5).backward();
                (loss.inner(), x.grad(&grads).unwrap())
            };
            let ((l1, g1), (l2, g2)) = (run(true), run(false));
            assert!(max_diff(l1, l2) < 1e-5, "[{rows}, {classes}]: loss differs");
            assert!(max_diff(g1, g2) < 1e-6, "[{rows}, {classes}]: gradient differs");
        }
    }

    #[test]
    fn under_bf16_prediction_precision_linear_layers_and_convolutions_multiply_rounded_inputs() {
        if !bf16::supported() {
            eprintln!("no AVX-512 BF16 on this CPU: bf16 prediction runs in f32, nothing to test");
            return;
        }
        let device = Device::flex();
        device.seed(31);
        // linear layer: odd widths, rows enough for bf16
        let layer = burn::nn::LinearConfig::new(37, 29).init(&device);
        let m = 3 * 101;
        assert!(m >= bf16::MIN_ROWS);
        let x = Tensor::<3>::random([3, 101, 37], Distribution::Normal(0.0, 1.0), &device);
        let run = |prediction: Precision, training: Precision| {
            let (_p, _t) = (prediction_precision_scope(prediction), precision_scope(training));
            linear(&layer, x.clone()).reshape([m, 29])
        };
        let want = rounded(x.clone().reshape([m, 37])).matmul(rounded(layer.weight.val())) + layer.bias.as_ref().unwrap().val().reshape([1, 29]);
        let y16 = run(Precision::Bf16, Precision::F32);
        assert!(max_diff(y16.clone(), want) < 1e-4);
        let y32 = run(Precision::F32, Precision::F32);
        let diff = max_diff(y16, y32.clone());
        assert!(diff > 0.0 && diff < 0.05, "bf16 vs f32 linear: {diff}");
        // the training scope does not reach a pass without gradients, and the scope ends with its guard
        assert_eq!(max_diff(run(Precision::F32, Precision::Bf16), y32.clone()), 0.0);
        assert_eq!(max_diff(run(Precision::F32, Precision::F32), y32), 0.0);
        // fewer rows: f32, the packing would cost more than bf16 saves
        let few = x.clone().slice([0..1, 0..bf16::MIN_ROWS - 1, 0..37]);
        let with_bf16 = {
            let _p = prediction_precision_scope(Precision::Bf16);
            linear(&layer, few.clone())
        };
        assert_eq!(max_diff(with_bf16, linear(&layer, few)), 0.0);
        // convolutions: the product of the rounded input and weights, then the same shifted sums
        let (widths, filters, d) = (vec![1usize, 2, 3], 5usize, 13usize);
        let cols: usize = widths.iter().sum::<usize>() * filters;
        let w = Tensor::<2>::random([d, cols], Distribution::Normal(0.0, 0.5), &device);
        let bias = Tensor::<1>::random([widths.len() * filters], Distribution::Normal(0.0, 0.5), &device);
        let (b, l) = (2, bf16::MIN_ROWS / 2 + 3);
        let keep = Tensor::<2>::from_data(TensorData::new((0..b * l).map(|i| if i < l || i % l < 4 { 1.0f32 } else { 0.0 }).collect::<Vec<_>>(), [b, l]), &device);
        let x = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device) * keep.clone().reshape([b, l, 1]);
        let conv = |x: Tensor<3>, w: Tensor<2>, precision: Precision| {
            let _p = prediction_precision_scope(precision);
            conv_windows(x, w, bias.clone(), keep.clone(), &widths, filters)
        };
        let c16 = conv(x.clone(), w.clone(), Precision::Bf16);
        let from_rounded = conv(rounded(x.clone().reshape([b * l, d])).reshape([b, l, d]), rounded(w.clone()), Precision::F32);
        assert!(max_diff(c16.clone().reshape([-1]), from_rounded.reshape([-1])) < 1e-4);
        let c32 = conv(x, w, Precision::F32);
        let diff = max_diff(c16.reshape([-1]), c32.reshape([-1]));
        assert!(diff > 0.0 && diff < 0.05, "bf16 vs f32 convolutions: {diff}");
    }

    #[test]
    fn under_bf16_precision_the_trained_linear_layer_multiplies_rounded_inputs() {
        if !bf16::supported() {
            eprintln!("no AVX-512 BF16 on this CPU: bf16 precision trains in f32, nothing to test");
            return;
        }
        let device = Device::flex().autodiff();
        device.seed(29);
        let layer = burn::nn::LinearConfig::new(40, 24).init(&device);
        let x0 = Tensor::<3>::random([3, 10, 40], Distribution::Normal(0.0, 1.0), &device);
        let up = Tensor::<3>::random([3, 10, 24], Distribution::Normal(0.0, 1.0), &device);
        let run = |precision: Precision| {
            let _scope = precision_scope(precision);
            let x = x0.clone().detach().require_grad();
            let y = linear(&layer, x.clone());
            let grads = (y.clone() * up.clone()).sum().backward();
            (y.inner(), x.grad(&grads).unwrap(), layer.weight.val().grad(&grads).unwrap())
        };
        let (y16, gx16, gw16) = run(Precision::Bf16);
        let (y32, gx32, gw32) = run(Precision::F32);
        // the forward product is that of the rounded input and weight, summed in f32
        let want = rounded(x0.clone().inner().reshape([30, 40])).matmul(rounded(layer.weight.val().inner())) + layer.bias.as_ref().unwrap().val().inner().reshape([1, 24]);
        assert!(max_diff(y16.clone().reshape([30, 24]), want) < 1e-4);
        // and within bf16 rounding of f32, gradients included, but not equal to it
        for (what, a, b) in [("output", y16.reshape([-1]), y32.reshape([-1])), ("x gradient", gx16.reshape([-1]), gx32.reshape([-1])), ("weight gradient", gw16.reshape([-1]), gw32.reshape([-1]))] {
            let scale: f32 = b.clone().abs().max().into_scalar();
            let diff = max_diff(a, b);
            assert!(diff > 0.0 && diff < 0.03 * scale, "{what}: bf16 vs f32 differ by {diff} (largest value {scale})");
        }
        // the scope ended: f32 again
        assert_eq!(PRECISION.get(), Precision::F32);
    }

    #[test]
    fn the_maximum_over_positions_equals_burns() {
        let device = Device::flex();
        device.seed(37);
        for [b, l, d] in [[3, 7, 19], [1, 1, 1], [2, 5, 384], [70, 3, 33]] {
            let x = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            assert_eq!(max_diff(max_over_positions(x.clone()), x.clone().max_dim(1).reshape([b, d])), 0.0, "[{b}, {l}, {d}]");
            // where gradients may be recorded, Burn's own (differentiable) maximum
            let ad = Tensor::<3>::from_data(x.to_data(), &Device::flex().autodiff()).require_grad();
            let grads = max_over_positions(ad.clone()).sum().backward();
            assert_eq!(ad.grad(&grads).unwrap().sum().into_scalar::<f32>(), (b * d) as f32);
        }
    }

    #[test]
    fn column_sums_add_every_row() {
        let x: Vec<f32> = (0..3 * 40_000).map(|i| (i % 7) as f32).collect();
        let sums = column_sums(&x, 3);
        let expected: Vec<f32> = (0..3).map(|c| (0..40_000).map(|r| ((3 * r + c) % 7) as f32).sum()).collect();
        assert_eq!(sums, expected);
    }

    /// `t`'s values rounded to bf16 (as the bf16 products read them), on the plain device.
    fn rounded(t: Tensor<2>) -> Tensor<2> {
        let values: Vec<f32> = t.to_data().try_into_vec::<f32>().unwrap().into_iter().map(|v| bf16::from_bf16(bf16::to_bf16(v))).collect();
        Tensor::<2>::from_data(TensorData::new(values, t.dims()), &Device::flex())
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

    #[test]
    fn inference_writes_over_a_tensor_only_when_nothing_else_holds_it() {
        let device = Device::flex();
        device.seed(9);
        let (gamma, beta) = (Tensor::<1>::random([33], Distribution::Normal(1.0, 0.5), &device), Tensor::<1>::random([33], Distribution::Normal(0.0, 0.5), &device));
        let norm = LayerNorm { gamma: burn::module::Param::from_tensor(gamma.clone()), beta: burn::module::Param::from_tensor(beta.clone()), epsilon: 1e-5 };
        let x = Tensor::<3>::random([3, 7, 33], Distribution::Normal(0.0, 2.0), &device);
        let before = x.to_data();
        let expected_gelu = burn::tensor::activation::gelu(x.clone());
        let expected_norm = burn::tensor::module::layer_norm(x.clone(), gamma, Some(beta), 1e-5);
        // `x` shared with the caller: a new tensor, `x` unchanged
        assert!(max_diff(gelu(x.clone()), expected_gelu.clone()) < 1e-5);
        assert!(max_diff(norm.forward(x.clone()), expected_norm.clone()) < 1e-5);
        x.to_data().assert_eq(&before, true);
        // a fresh tensor (the sum the layer makes), a view of part of a buffer, and a transposed one
        assert!(max_diff(gelu(x.clone() * 1.0), expected_gelu.clone()) < 1e-5);
        assert!(max_diff(norm.forward(x.clone() + 0.0), expected_norm) < 1e-5);
        let part = (x.clone() * 1.0).slice([0..3, 2..5, 0..33]);
        assert!(max_diff(gelu(part), expected_gelu.clone().slice([0..3, 2..5, 0..33])) < 1e-5);
        let turned = (x.clone() * 1.0).swap_dims(0, 1);
        assert!(max_diff(gelu(turned), expected_gelu.swap_dims(0, 1)) < 1e-5);
        x.to_data().assert_eq(&before, true);
    }
}
