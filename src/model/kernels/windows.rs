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
//!
//! When `x` is an embedding lookup, a position's products are those of its word piece alone, so
//! they can be computed once for the whole vocabulary and read from that table
//! ([`table_windows_max`]): prediction then does no product at all.

use super::values;
use burn::backend::tensor::FloatTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// `x` `[b, l, d]` (0 at padding positions), `weight` `[d, Σ w · filters]` (column
/// `base_c + o · filters + f` holding `W_o` of convolution `c`), `bias` `[widths · filters]`, `keep`
/// `[b, l]` (1 real, 0 padding) → ReLU states `[b, l, widths · filters]`, 0 at padding positions;
/// with `pooled`, only their maximum over the positions, `[b, widths · filters]` (the states are
/// then never written out: each summed into the sequence's maximum as it is made).
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
        let rows: Vec<&[f32]> = products.chunks_exact(cols).collect();
        window_sums(&rows, &bv, &k[..n], widths, filters, pooled, if pooled { o } else { &mut o[..n * width] });
    });
    let shape = if pooled { vec![b, width] } else { vec![b, l, width] };
    FloatTensor::<Flex>::from_data(TensorData::new(out, shape))
}

/// [`windows_forward`] with `pooled` for sequences whose products are read, not computed:
/// `tables[s]` `[vocab, Σ w · filters]` holds each word piece's embedding (plus segment `s`'s)
/// times every shifted weight block ([`crate::model::backbone::textcnn::FoldedConvs`]), so a
/// sequence's product rows are rows of a table picked by its ids: `ids` and `keep` `[b, l]`,
/// `segments` `[b, l]` (`None`: table 0) → the ReLU states' maximum over each sequence's
/// positions, `[b, widths · filters]`.
#[allow(clippy::too_many_arguments)]
pub fn table_windows_max(tables: &[&[f32]], ids: &[u32], segments: Option<&[u32]>, keep: &[f32], l: usize, bias: &[f32], widths: &[usize], filters: usize) -> Vec<f32> {
    let cols = widths.iter().sum::<usize>() * filters;
    let width = widths.len() * filters;
    let b = if l == 0 { 0 } else { keep.len() / l };
    // padding positions read zeros, as their zeroed inputs give zero products
    let zeros = vec![0.0f32; cols];
    let mut out = vec![0.0f32; b * width];
    out.par_chunks_mut(width).enumerate().for_each(|(s, o)| {
        let k = &keep[s * l..(s + 1) * l];
        let n = k.iter().rposition(|&v| v != 0.0).map_or(0, |t| t + 1);
        let rows: Vec<&[f32]> = (s * l..s * l + n)
            .map(|i| match keep[i] != 0.0 {
                true => {
                    let table = tables[segments.map_or(0, |seg| seg[i] as usize)];
                    let at = ids[i] as usize * cols;
                    &table[at..at + cols]
                }
                false => &zeros[..],
            })
            .collect();
        window_sums(&rows, bias, &k[..n], widths, filters, true, o);
    });
    out
}

/// Filters summed at a time in [`window_sums`]: four AVX2 registers of partial sums kept
/// over every shift of a window, where summing whole rows of filters goes through memory.
const LANES: usize = 32;

/// Positions ahead of the windows whose input row [`window_sums`] asks the caches for: a row
/// of a folded table (`table_windows_max`) is a random row of tens of MB, so its first reads
/// would wait on memory.
const PREFETCH_AHEAD: usize = 2;

/// Asks the caches for every line of `row`.
#[inline(always)]
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch is a hint; it reads nothing and faults on no address.
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

// One sequence's windows: `rows` its `l` positions' products, `[Σ w · filters]` each, `keep` `[l]`
// → with `pooled`, the states' maximum over the positions into `out` `[widths · filters]` (which
// starts at 0: ReLU states are ≥ 0 and padding states 0, so the maximum of the sums is that of
// the states and ReLU is not applied; the states are never written); else the ReLU states into
// `out` `[l, widths · filters]` (rows of padding left as they are). Each window is summed from
// its bias over its shifts in order, the same sums either way.
simd_dispatch!(window_sums(rows: &[&[f32]], bias: &[f32], keep: &[f32], widths: &[usize], filters: usize, pooled: bool, out: &mut [f32]) {
    let l = keep.len();
    let width = widths.len() * filters;
    // the last input position a window at t reads is t + reach
    let reach = widths.iter().map(|&w| w - 1 - (w - 1) / 2).max().unwrap_or(0);
    for t in 0..l {
        if let Some(ahead) = rows.get(t + reach + PREFETCH_AHEAD) {
            prefetch(ahead);
        }
        if keep[t] == 0.0 {
            continue;
        }
        let o = if pooled { &mut out[..width] } else { &mut out[t * width..(t + 1) * width] };
        let mut base = 0;
        for (c, &w) in widths.iter().enumerate() {
            let pad = (w - 1) / 2;
            // the shifts whose input position t + shift - pad lies inside the sequence
            let shifts = pad.saturating_sub(t)..w.min(l + pad - t);
            let (b, m) = (&bias[c * filters..(c + 1) * filters], &mut o[c * filters..(c + 1) * filters]);
            let mut f0 = 0;
            while f0 + LANES <= filters {
                let mut acc: [f32; LANES] = b[f0..f0 + LANES].try_into().expect("LANES biases");
                for shift in shifts.clone() {
                    let row = &rows[t + shift - pad][base + shift * filters + f0..][..LANES];
                    for (a, &y) in acc.iter_mut().zip(row) {
                        *a += y;
                    }
                }
                for (m, a) in m[f0..f0 + LANES].iter_mut().zip(acc) {
                    *m = if pooled { m.max(a) } else { a.max(0.0) };
                }
                f0 += LANES;
            }
            for f in f0..filters {
                let a = shifts.clone().fold(b[f], |a, shift| a + rows[t + shift - pad][base + shift * filters + f]);
                m[f] = if pooled { m[f].max(a) } else { a.max(0.0) };
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
