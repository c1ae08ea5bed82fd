//! The dropout mask: drawn block by block from seeded xoshiro generators, so the same base seed
//! gives the same mask on any number of threads and a backward pass regenerates it instead of
//! storing it.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

/// Elements a parallel block of the mask holds; each block has its own generator, seeded from
/// one draw of the thread's generator, so the mask does not depend on the number of threads.
const BLOCK: usize = 1 << 16;

/// Elements whose random bits are drawn at a time: the draws (serial, one `u64` for four
/// elements) go into a small buffer first, so that the loop that applies them has no calls
/// or branches and vectorises (drawing and applying element by element was ~10 % of a
/// training step).
const RUN: usize = 1 << 10;

/// Writes `input × mask` into `out` (or the mask itself without an input), for the mask drawn
/// from `base`: each element is 0 with probability `prob` (to 1/65536), else `1 / (1 - prob)`.
/// The same `base` gives the same mask, so a backward pass regenerates it instead of storing it.
pub fn masked(base: u64, prob: f64, input: Option<&[f32]>, out: &mut [f32]) {
    // An element is dropped when its 16 random bits fall below prob × 2^16.
    let cut = (prob * 65_536.0).round() as u32;
    let keep = (1.0 / (1.0 - prob)) as f32;
    if let Some(x) = input {
        assert_eq!(x.len(), out.len(), "dropout: input and output lengths differ");
    }
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(block, chunk)| {
        let mut g = SmallRng::seed_from_u64(base ^ (block as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let start = block * BLOCK;
        let mut bits = [0u16; RUN];
        for (r, run) in chunk.chunks_mut(RUN).enumerate() {
            // element i of a group of four takes bits 16 i .. 16 i + 16 of the group's draw
            for quad in bits[..run.len().div_ceil(4) * 4].chunks_exact_mut(4) {
                let v = g.next_u64();
                quad.copy_from_slice(&[v as u16, (v >> 16) as u16, (v >> 32) as u16, (v >> 48) as u16]);
            }
            let bits = &bits[..run.len()];
            let at = start + r * RUN;
            match input {
                Some(x) => apply(run, &x[at..at + run.len()], bits, cut, keep),
                None => run.iter_mut().zip(bits).for_each(|(o, &b)| *o = if (b as u32) < cut { 0.0 } else { keep }),
            }
        }
    });
}

simd_dispatch!(apply(out: &mut [f32], x: &[f32], bits: &[u16], cut: u32, keep: f32) {
    for ((o, &v), &b) in out.iter_mut().zip(x).zip(bits) {
        *o = v * if (b as u32) < cut { 0.0 } else { keep };
    }
});
