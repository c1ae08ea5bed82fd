//! bf16 matrix products with f32 accumulation, for mixed-precision training (`--precision
//! bf16`): the operands are rounded to bf16 (nearest, ties to even) while they are packed, and
//! multiplied with AVX-512 BF16's `vdpbf16ps`, which sums the products of two bf16 pairs into
//! each f32 lane — twice the multiply-adds of an f32 FMA per instruction. Weights, gradients and
//! optimiser state stay f32; only the products' inputs lose precision (8 bits of mantissa).
//!
//! Layout: the right operand is packed into panels of [`NR`] columns, `[k/2][NR]` pairs a panel
//! (a pair = rows `2i`, `2i + 1` of one column, one 32-bit lane); the left into blocks of [`MR`]
//! rows, `[MR][k/2]` pairs (`[k/2][MR]` when it is stored transposed: each packed in the order
//! it is read). A tile of `MR × NR` outputs lives in 24 registers over the whole `k`; each step
//! loads two registers of the panel and broadcasts one pair a row.

use super::Stored;
use rayon::prelude::*;

/// Rows of an output tile.
const MR: usize = 12;
/// Columns of an output tile: two 16-lane registers.
const NR: usize = 32;
/// Products without gradients (prediction) take bf16 inputs only from this many rows of the
/// left operand up: the right operand (a weight) is rounded and packed at every product, a cost
/// that fewer rows do not repay — one MiniLM text of 83 pieces took 14.7 ms in bf16 against
/// 13.2 ms in f32 (batches of 64 texts: 1.5× faster in bf16).
pub const MIN_ROWS: usize = 256;
/// Row blocks a parallel task computes (against every panel in turn, the panel staying in cache).
const BLOCKS_PER_TASK: usize = 8;

/// Whether this CPU has the instructions (AVX-512 F, BW and BF16); checked once.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SUPPORTED.get_or_init(|| std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512bf16"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x` rounded to bf16, to nearest with ties to even (a NaN stays a NaN).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of a bf16.
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// Packs columns `c0 .. c0 + NR` of `rhs` `[k, n]` as `[k/2][NR]` pairs (zero past the edges),
/// reading memory in order for either storage.
fn pack_b((x, stored): (&[f32], Stored), [k, n]: [usize; 2], c0: usize, panel: &mut [u32]) {
    let cols = (n - c0).min(NR);
    match stored {
        Stored::AsIs => {
            for (kk, step) in panel.chunks_exact_mut(NR).enumerate() {
                let r = 2 * kk;
                let hi = (r + 1 < k).then(|| &x[(r + 1) * n + c0..(r + 1) * n + c0 + cols]);
                // SAFETY: `product` runs only where `supported`.
                unsafe { interleave(&x[r * n + c0..r * n + c0 + cols], hi, step) };
            }
        }
        Stored::Transposed => {
            for j in 0..cols {
                let column = &x[(c0 + j) * k..(c0 + j + 1) * k];
                let mut pairs = column.chunks_exact(2);
                for (kk, p) in (&mut pairs).enumerate() {
                    panel[kk * NR + j] = pair(p[0], p[1]);
                }
                if let [last] = pairs.remainder() {
                    panel[(k / 2) * NR + j] = pair(*last, 0.0);
                }
            }
        }
    }
}

/// Packs rows `r0 .. r0 + MR` of `lhs` `[m, k]` (zero past the edges): stored as it is, as
/// `[MR][k/2]` pairs (a row converts in one contiguous pass); stored transposed, as `[k/2][MR]`.
fn pack_a((x, stored): (&[f32], Stored), [m, k]: [usize; 2], r0: usize, block: &mut [u32]) {
    let rows = (m - r0).min(MR);
    let kp = k.div_ceil(2);
    match stored {
        Stored::AsIs => {
            for i in 0..rows {
                // SAFETY: `product` runs only where `supported`.
                unsafe { convert_pairs(&x[(r0 + i) * k..(r0 + i + 1) * k], &mut block[i * kp..(i + 1) * kp]) };
            }
        }
        Stored::Transposed => {
            // [k/2][MR] (the rows of a step adjacent in memory, as they are read here)
            for (kk, step) in block.chunks_exact_mut(MR).enumerate() {
                let r = 2 * kk;
                let hi = (r + 1 < k).then(|| &x[(r + 1) * m + r0..(r + 1) * m + r0 + rows]);
                // SAFETY: `product` runs only where `supported`.
                unsafe { interleave(&x[r * m + r0..r * m + r0 + rows], hi, step) };
            }
        }
    }
}

/// Pairs of two rows: `dst[j]` = the bf16 pair of `lo[j]`, `hi[j]` (`hi` 0 when absent), for up
/// to 32 columns.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
    use std::arch::x86_64::*;
    // lane 2j ← value j (from `lo`), lane 2j + 1 ← value 16 + j (from `hi`)
    const ORDER: [u16; 32] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];
    debug_assert!(lo.len() <= 32 && dst.len() >= lo.len() && hi.is_none_or(|h| h.len() == lo.len()));
    let order = _mm512_loadu_si512(ORDER.as_ptr() as *const _);
    for c0 in (0..lo.len()).step_by(16) {
        let n = (lo.len() - c0).min(16);
        let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
        let l = _mm512_maskz_loadu_ps(mask, lo.as_ptr().add(c0));
        let h = match hi {
            Some(h) => _mm512_maskz_loadu_ps(mask, h.as_ptr().add(c0)),
            None => _mm512_setzero_ps(),
        };
        let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(h, l));
        _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(c0) as *mut _, mask, _mm512_permutexvar_epi16(order, both));
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn interleave(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
    for (j, &l) in lo.iter().enumerate() {
        dst[j] = pair(l, hi.map_or(0.0, |h| h[j]));
    }
}

/// `dst[j]` = the bf16 pair of `src[2j]`, `src[2j + 1]` (0 past the end), 32 values at a time.
///
/// # Safety
/// The CPU must have AVX-512 F and BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_pairs(src: &[f32], dst: &mut [u32]) {
    use std::arch::x86_64::*;
    debug_assert!(dst.len() >= src.len().div_ceil(2));
    let mut s = src.chunks_exact(32);
    let mut d = dst.chunks_exact_mut(16);
    for (sc, dc) in (&mut s).zip(&mut d) {
        // the low half of the result holds the second argument's 16 values, the high half the first's
        let lo = _mm512_loadu_ps(sc.as_ptr());
        let hi = _mm512_loadu_ps(sc.as_ptr().add(16));
        let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(dc.as_mut_ptr() as *mut _, both);
    }
    let done = src.len() - s.remainder().len();
    for (j, p) in s.remainder().chunks(2).enumerate() {
        dst[done / 2 + j] = pair(p[0], p.get(1).copied().unwrap_or(0.0));
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn convert_pairs(src: &[f32], dst: &mut [u32]) {
    for (j, p) in src.chunks(2).enumerate() {
        dst[j] = pair(p[0], p.get(1).copied().unwrap_or(0.0));
    }
}

/// `out` `[m, n]` `= lhs [m, k] · rhs [k, n]` (`+=` when `accumulate`), the operands rounded to
/// bf16, the sums in f32. Panics where [`supported`] is false: the caller falls back to f32.
pub fn product(out: &mut [f32], lhs: (&[f32], Stored), rhs: (&[f32], Stored), [m, k, n]: [usize; 3], accumulate: bool) {
    assert!(out.len() >= m * n, "bf16 product: [{m}, {n}] into {} values", out.len());
    // SAFETY: `out` holds the m × n output and is borrowed mutably, so nothing else aliases it.
    unsafe { product_raw(out.as_mut_ptr(), lhs, rhs, [m, k, n], accumulate) }
}

/// [`product`] into a raw buffer: without `accumulate` every one of the `m × n` outputs is
/// written (none read), so the buffer may start uninitialised.
///
/// # Safety
/// `out` must be valid for writing (and, when `accumulate`, reading) `m × n` values, not
/// aliased by `lhs` or `rhs`.
pub unsafe fn product_raw(out: *mut f32, lhs: (&[f32], Stored), rhs: (&[f32], Stored), [m, k, n]: [usize; 3], accumulate: bool) {
    assert!(lhs.0.len() >= m * k, "bf16 product: [{m}, {k}] from {} values", lhs.0.len());
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: as this function's
    unsafe { product_packed_raw(out, lhs, &PackedRight::new(rhs, [k, n]), m, accumulate) }
}

/// A right operand `[k, n]` rounded to bf16 and packed as the products read it: packed once
/// and multiplied by many left operands (the TextCNN's convolution weights, by every sequence).
pub struct PackedRight {
    /// Panels of [`NR`] columns, `[k/2][NR]` pairs each (zero past the edges).
    panels: Vec<u32>,
    k: usize,
    n: usize,
}

impl PackedRight {
    /// Packs `rhs` `[k, n]` (stored as it is or transposed).
    pub fn new(rhs: (&[f32], Stored), [k, n]: [usize; 2]) -> Self {
        assert!(supported(), "bf16 products need AVX-512 BF16");
        assert!(rhs.0.len() >= k * n, "bf16 product: [{k}, {n}] from {} values", rhs.0.len());
        let kp = k.div_ceil(2);
        let mut panels = vec![0u32; n.div_ceil(NR) * kp * NR];
        panels.par_chunks_mut((kp * NR).max(1)).enumerate().for_each(|(p, panel)| pack_b(rhs, [k, n], p * NR, panel));
        Self { panels, k, n }
    }
}

/// `out` `[m, n]` (row-major) `= lhs [m, k] · rhs` (`+=` when `accumulate`) for a right operand
/// packed beforehand; as [`product`] otherwise.
pub fn product_packed(out: &mut [f32], lhs: (&[f32], Stored), rhs: &PackedRight, m: usize, accumulate: bool) {
    assert!(out.len() >= m * rhs.n, "bf16 product: [{m}, {}] into {} values", rhs.n, out.len());
    // SAFETY: `out` holds the m × n output and is borrowed mutably, so nothing else aliases it.
    unsafe { product_packed_raw(out.as_mut_ptr(), lhs, rhs, m, accumulate) }
}

/// [`product_packed`] into a raw buffer (see [`product_raw`]).
///
/// # Safety
/// As [`product_raw`]'s.
pub unsafe fn product_packed_raw(out: *mut f32, lhs: (&[f32], Stored), rhs: &PackedRight, m: usize, accumulate: bool) {
    let (k, n) = (rhs.k, rhs.n);
    assert!(lhs.0.len() >= m * k, "bf16 product: [{m}, {k}] from {} values", lhs.0.len());
    if m == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    let packed_b = &rhs.panels;
    // left operand: blocks of MR rows, [MR][kp] pairs each ([kp][MR] when stored transposed)
    let mut packed_a = vec![0u32; m.div_ceil(MR) * kp * MR];
    packed_a.par_chunks_mut((kp * MR).max(1)).enumerate().for_each(|(blk, block)| pack_a(lhs, [m, k], blk * MR, block));
    // tasks: runs of row blocks × groups of panels, at least four a thread when the shape allows
    let (blocks, panels) = (m.div_ceil(MR), n.div_ceil(NR));
    let want = 4 * rayon::current_num_threads();
    let per_task = BLOCKS_PER_TASK.min(blocks.div_ceil(want).max(1));
    let row_tasks = blocks.div_ceil(per_task);
    let panel_groups = want.div_ceil(row_tasks).clamp(1, panels);
    let panels_per_group = panels.div_ceil(panel_groups);
    let dst = Shared(out);
    (0..row_tasks * panel_groups).into_par_iter().for_each(|task| {
        let dst = dst;
        let (rt, pg) = (task / panel_groups, task % panel_groups);
        for p in pg * panels_per_group..((pg + 1) * panels_per_group).min(panels) {
            let panel = &packed_b[p * kp * NR..(p + 1) * kp * NR];
            let cols = (n - p * NR).min(NR);
            for blk in rt * per_task..((rt + 1) * per_task).min(blocks) {
                let block = &packed_a[blk * kp * MR..(blk + 1) * kp * MR];
                let rows = (m - blk * MR).min(MR);
                // SAFETY: `supported` was checked when `rhs` was packed; the block and panel hold
                // `kp` steps; this task alone writes rows `blk · MR ..` × columns `p · NR ..` of
                // `out` (m × n values).
                unsafe {
                    let at = dst.0.add(blk * MR * n + p * NR);
                    match lhs.1 {
                        Stored::AsIs => tile::<false>(block, panel, kp, at, n, rows, cols, accumulate),
                        Stored::Transposed => tile::<true>(block, panel, kp, at, n, rows, cols, accumulate),
                    }
                }
            }
        }
    });
}

/// A pointer to disjoint tiles of the output, written by parallel tasks.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: each task writes tiles no other task writes.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// One `MR × NR` tile: `out[i][j] (+)= Σ_kk a[i][kk] · b[kk][j]` over pairs (`a` laid out
/// `[kp][MR]` when `STEP_MAJOR`, else `[MR][kp]`), the first `rows` rows and `cols` columns
/// written (row stride `ldo`).
///
/// # Safety
/// The CPU must have AVX-512 F and BF16; `a` must hold `MR · kp` pairs and `b` `kp · NR`;
/// `out` must be valid for `(rows - 1) · ldo + cols` values and written by no one else.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const STEP_MAJOR: bool>(a: &[u32], b: &[u32], kp: usize, out: *mut f32, ldo: usize, rows: usize, cols: usize, accumulate: bool) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= kp * MR && b.len() >= kp * NR && rows >= 1);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for kk in 0..kp {
        // SAFETY (loads): kk < kp and the lengths above.
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(kk * NR) as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(kk * NR + 16) as *const _));
        for (i, acc) in acc.iter_mut().enumerate() {
            let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(if STEP_MAJOR { kk * MR + i } else { i * kp + kk }) as i32));
            acc[0] = _mm512_dpbf16_ps(acc[0], ai, b0);
            acc[1] = _mm512_dpbf16_ps(acc[1], ai, b1);
        }
    }
    for (i, acc) in acc.iter().enumerate().take(rows) {
        for (h, &v) in acc.iter().enumerate() {
            let c0 = h * 16;
            if c0 >= cols {
                break;
            }
            let mask: __mmask16 = if cols - c0 >= 16 { 0xffff } else { (1u16 << (cols - c0)) - 1 };
            let p = out.add(i * ldo + c0);
            let v = if accumulate { _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p)) } else { v };
            _mm512_mask_storeu_ps(p, mask, v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const STEP_MAJOR: bool>(_: &[u32], _: &[u32], _: usize, _: *mut f32, _: usize, _: usize, _: usize, _: bool) {
    unreachable!("bf16 products are checked `supported` first")
}

#[cfg(test)]
mod tests {
    use super::*;

/// Element `(r, c)` of an `[rows, cols]` operand stored as it is or transposed.
#[inline(always)]
fn at((x, stored): (&[f32], Stored), rows: usize, cols: usize, r: usize, c: usize) -> f32 {
    match stored {
        Stored::AsIs => x[r * cols + c],
        Stored::Transposed => x[c * rows + r],
    }
}

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even one, 1
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    /// The product of the bf16-rounded operands in f64, as the kernel should compute it (up to
    /// the order of the f32 sums).
    fn reference(lhs: (&[f32], Stored), rhs: (&[f32], Stored), [m, k, n]: [usize; 3]) -> Vec<f32> {
        let r = |x: f32| from_bf16(to_bf16(x)) as f64;
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|c| r(at(lhs, m, k, i, c)) * r(at(rhs, k, n, c, j))).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn bf16_products_equal_the_rounded_operands_product_on_odd_shapes() {
        if !supported() {
            eprintln!("no AVX-512 BF16 on this CPU: bf16 products are not used here, nothing to test");
            return;
        }
        // odd k (a half-empty last pair), tiles cut by the edges, one row, one column, and
        // enough rows for several parallel tasks; both storage orders of both operands
        for (i, &[m, k, n]) in [[1, 1, 1], [3, 5, 7], [13, 33, 31], [25, 64, 65], [200, 17, 40]].iter().enumerate() {
            for (ls, rs) in [(Stored::AsIs, Stored::AsIs), (Stored::AsIs, Stored::Transposed), (Stored::Transposed, Stored::AsIs)] {
                let (a, b) = (random(m * k, 2 * i as u64 + 1), random(k * n, 2 * i as u64 + 2));
                let want = reference((&a, ls), (&b, rs), [m, k, n]);
                let mut got = vec![0.5f32; m * n];
                product(&mut got, (&a, ls), (&b, rs), [m, k, n], false);
                let diff = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(diff < 1e-5 * k as f32, "[{m}, {k}] · [{k}, {n}] {ls:?}/{rs:?}: max difference {diff}");
                // accumulating adds to what is there
                product(&mut got, (&a, ls), (&b, rs), [m, k, n], true);
                let diff = got.iter().zip(&want).map(|(x, y)| (x - 2.0 * y).abs()).fold(0.0, f32::max);
                assert!(diff < 2e-5 * k as f32, "accumulated: max difference {diff}");
            }
        }
    }

    #[test]
    fn bf16_products_stay_within_bf16_rounding_of_the_f32_product() {
        if !supported() {
            return;
        }
        let [m, k, n] = [64, 256, 48];
        let (a, b) = (random(m * k, 9), random(k * n, 10));
        let mut got = vec![0.0f32; m * n];
        product(&mut got, (&a, Stored::AsIs), (&b, Stored::AsIs), [m, k, n], false);
        let exact: Vec<f64> = (0..m * n).map(|o| (0..k).map(|c| a[(o / n) * k + c] as f64 * b[c * n + o % n] as f64).sum()).collect();
        // each product carries two roundings of 2^-9 relative; over 256 terms of size ≤ 1 the
        // error is a random walk of a few × 2^-9 × √256
        let worst = got.iter().zip(&exact).map(|(&g, &e)| (g as f64 - e).abs()).fold(0.0, f64::max);
        assert!(worst < 0.1, "max difference {worst} from the f32 product");
        assert!(worst > 1e-4, "bf16 products should differ from f32 ones by their rounding ({worst})");
    }
}
