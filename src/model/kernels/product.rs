//! Matrix products on the `gemm` crate (operands read through strides, never copied; bf16
//! inputs when the precision scope asks) and the linear layer's forward and backward passes
//! built on them.

use super::{bf16, flex_tensor, last_dim, rows_per_task, values};
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use rayon::prelude::*;

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
    pub(super) fn of(transposed: bool) -> Self {
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
pub(super) unsafe fn gemm_stored(out: *mut f32, (lhs, lhs_stored): (&[f32], Stored), (rhs, rhs_stored): (&[f32], Stored), [m, k, n]: [usize; 3], accumulate: bool, threads: gemm::Parallelism) {
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
pub(super) fn linear_forward(x: &FloatTensor<Flex>, w: &FloatTensor<Flex>, b: &FloatTensor<Flex>, w_stored: Stored, bf16: bool) -> FloatTensor<Flex> {
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
pub(super) struct LinearState {
    pub(super) x: FloatTensor<Flex>,
    pub(super) w: FloatTensor<Flex>,
    pub(super) w_stored: Stored,
    /// The products take bf16 inputs (as the forward pass's did).
    pub(super) bf16: bool,
}

/// Gradients of `x · w + b` from the output's gradient `g` `[.., n]`: `dx = g · wᵀ` `[.., k]`,
/// `dw = xᵀ · g` `[k, n]` (or its transpose `gᵀ · x` for a weight stored `[n, k]`; the rows of
/// every leading dimension summed by the product) and `db` `[n]`, the column sums of `g`; each
/// computed only when asked (`want`: x, w, b).
pub(super) fn linear_backward(st: &LinearState, g: &FloatTensor<Flex>, want: [bool; 3]) -> [Option<FloatTensor<Flex>>; 3] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_sums_add_every_row() {
        let x: Vec<f32> = (0..3 * 40_000).map(|i| (i % 7) as f32).collect();
        let sums = column_sums(&x, 3);
        let expected: Vec<f32> = (0..3).map(|c| (0..40_000).map(|r| ((3 * r + c) % 7) as f32).sum()).collect();
        assert_eq!(sums, expected);
    }
}
