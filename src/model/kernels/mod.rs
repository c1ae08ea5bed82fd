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
    ($vis:vis $name:ident ($($arg:ident : $ty:ty),*) $body:block) => {
        $vis fn $name($($arg: $ty),*) {
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
mod product;
mod rows;
mod windows;

pub use product::{product_into, product_of_stored, product_threads, Stored};
pub use windows::table_windows_max;
use product::{gemm_stored, linear_backward, linear_forward, LinearState};
use rows::*;

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
