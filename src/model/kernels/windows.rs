//! The TextCNN's convolutions for inference as matrix products and one pass over their result.
//!
//! A width-`w` convolution is a sum of `w` shifted products: `out[t] = b + Σ_o x[t + o - p] W_o`
//! (`p = (w - 1) / 2`, "same" padding). With every `W_o` of every width side by side, a sequence
//! `x` is multiplied once by a `[d, Σ w · filters]` matrix — one large product where the
//! matrix-product kernel is at its speed, instead of the unfolded copies of `x` a convolution
//! builds per width — and one pass adds the shifted blocks, the bias and ReLU, and zeroes
//! padding positions. A task is one sequence: its products (`[l, Σ w · filters]`, a few hundred
//! KB) stay in cache between the two, where the whole batch's would be tens of MB written to
//! memory and read back; rows after the last real position are neither multiplied nor summed.

use super::values;
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// Rows of states a sequence's maximum is taken over at a time (`pooled`): a few KB, in L1.
const POOLED_ROWS: usize = 8;

/// `x` `[b, l, d]` (0 at padding positions), `weight` `[d, Σ w · filters]` (column
/// `base_c + o · filters + f` holding `W_o` of convolution `c`), `bias` `[widths · filters]`, `keep`
/// `[b, l]` (1 real, 0 padding) → ReLU states `[b, l, widths · filters]`, 0 at padding positions;
/// with `pooled`, only their maximum over the positions, `[b, widths · filters]` (the states are
/// then never written out: a few rows at a time, in cache, into the sequence's maximum).
/// With `bf16`, the products take bf16 inputs, the weights packed once for every sequence
/// ([`super::bf16::PackedRight`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn windows_forward(x: &FloatTensor<Flex>, weight: &FloatTensor<Flex>, bias: &FloatTensor<Flex>, keep: &FloatTensor<Flex>, widths: &[usize], filters: usize, bf16: bool, pooled: bool) -> FloatTensor<Flex> {
    let shape = x.layout().shape().clone();
    let (b, l, d) = (shape[0], shape[1], shape[2]);
    let cols = weight.layout().shape()[1];
    assert_eq!(weight.layout().shape()[0], d, "convolution weights for inputs of width {d}");
    assert!(d > 0, "convolutions of inputs of width 0");
    assert_eq!(cols, widths.iter().sum::<usize>() * filters, "the weights hold every shift of every width");
    let (xv, wv, bv, kv) = (values(x), values(weight), values(bias), values(keep));
    let width = widths.len() * filters;
    // a sequence's output: its states, or (pooled) their maximum, 0 for a sequence of padding alone
    let per_sequence = if pooled { width } else { l * width };
    let mut out = vec![0.0f32; b * per_sequence];
    // sequences share the threads; with fewer sequences than threads, each product does
    let inner = if b >= rayon::current_num_threads() { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(0) };
    // bf16: the weights rounded and packed once for every sequence
    let packed = bf16.then(|| super::bf16::PackedRight::new((&wv, super::Stored::AsIs), [d, cols]));
    out.par_chunks_mut(per_sequence).zip(xv.par_chunks(l * d)).zip(kv.par_chunks(l)).for_each(|((o, xs), k)| {
        let n = k.iter().rposition(|&v| v != 0.0).map_or(0, |t| t + 1);
        if n == 0 {
            return;
        }
        let mut products = Vec::with_capacity(n * cols);
        // SAFETY: room for n × cols values, every one written by the product (which does not
        // read its destination; d > 0) before `set_len`.
        unsafe {
            match &packed {
                Some(w) => super::bf16::product_packed_raw(products.as_mut_ptr(), (xs, super::Stored::AsIs), w, n, false),
                None => super::gemm_stored(products.as_mut_ptr(), (xs, super::Stored::AsIs), (&wv, super::Stored::AsIs), [n, d, cols], false, inner),
            }
            products.set_len(n * cols);
        }
        if !pooled {
            window_rows(&products, &bv, &k[..n], 0, widths, filters, &mut o[..n * width]);
            return;
        }
        // ReLU states are ≥ 0 and padding states 0: the maximum starts at 0
        let mut rows = vec![0.0f32; POOLED_ROWS * width];
        for t0 in (0..n).step_by(POOLED_ROWS) {
            let block = &mut rows[..(n - t0).min(POOLED_ROWS) * width];
            block.fill(0.0);
            window_rows(&products, &bv, &k[..n], t0, widths, filters, block);
            super::max_rows(block, o);
        }
    });
    let shape = if pooled { vec![b, width] } else { vec![b, l, width] };
    FloatTensor::<Flex>::from_data(TensorData::new(out, shape))
}

// One sequence's positions `first ..` (as many as `out` has rows): `products` `[l, cols]`,
// `keep` `[l]` → `out` `[rows, widths · filters]` (rows of padding left as they are).
simd_dispatch!(window_rows(products: &[f32], bias: &[f32], keep: &[f32], first: usize, widths: &[usize], filters: usize, out: &mut [f32]) {
    let l = keep.len();
    let cols = products.len() / l.max(1);
    let width = widths.len() * filters;
    for (t, o) in out.chunks_exact_mut(width).enumerate() {
        let t = first + t;
        if keep[t] == 0.0 {
            continue;
        }
        let mut base = 0;
        for (c, &w) in widths.iter().enumerate() {
            let acc = &mut o[c * filters..(c + 1) * filters];
            acc.copy_from_slice(&bias[c * filters..(c + 1) * filters]);
            let pad = (w - 1) / 2;
            for shift in 0..w {
                // input position t + shift - pad, when inside the sequence's padded length
                let Some(src) = (t + shift).checked_sub(pad).filter(|&u| u < l) else { continue };
                let at = src * cols + base + shift * filters;
                for (a, &y) in acc.iter_mut().zip(&products[at..at + filters]) {
                    *a += y;
                }
            }
            for a in acc.iter_mut() {
                *a = a.max(0.0);
            }
            base += w * filters;
        }
    }
});

#[cfg(test)]
mod tests {
    use crate::config::{Config, Preset};
    use crate::model::backbone::textcnn::{conv_states, init_convs};
    use burn::module::Module;
    use burn::prelude::*;
    use burn::tensor::Distribution;

    #[test]
    fn one_product_and_shifted_sums_equal_burns_convolutions() {
        let device = Device::flex();
        device.seed(11);
        let mut config = Config::preset(Preset::Tiny).model;
        // even and odd widths ("same" padding puts the extra position on the right for even ones)
        config.textcnn.filter_widths = vec![1, 2, 3, 4, 5];
        config.textcnn.filters = 7;
        let d = 9;
        let convs = init_convs(d, &config, &device);
        let ad = device.clone().autodiff();
        let on_autodiff: Vec<_> = convs.iter().map(|c| c.clone().to_device(&ad)).collect();
        for (lengths, l) in [(vec![6, 1, 3], 6), (vec![1], 1), (vec![4, 4], 4), ((0..40).map(|i| 1 + i % 6).collect(), 6)] {
            let b = lengths.len();
            let x = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let pad: Vec<bool> = lengths.iter().flat_map(|&n| (0..l).map(move |t| t >= n)).collect();
            let pad = Tensor::<1, Bool>::from_bool(TensorData::new(pad, [b * l]), &device).reshape([b, l]);
            let fused = conv_states(&convs, x.clone(), &pad);
            // the autodiff device records gradients, so it takes Burn's convolutions
            let reference = conv_states(&on_autodiff, Tensor::from_inner(x), &Tensor::from_inner(pad)).inner();
            assert_eq!(fused.dims(), reference.dims());
            let diff: f32 = (fused - reference).abs().max().into_scalar();
            assert!(diff < 1e-5, "lengths {lengths:?}: max difference {diff}");
        }
    }
}
