//! The dropout mask: drawn block by block from seeded xoshiro generators, so the same base seed
//! gives the same mask on any number of threads and a backward pass regenerates it instead of
//! storing it.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

/// Elements a parallel block of the mask holds; each block has its own generator, seeded from
/// one draw of the thread's generator, so the mask does not depend on the number of threads.
const BLOCK: usize = 1 << 16;

/// Writes `input × mask` into `out` (or the mask itself without an input), for the mask drawn
/// from `base`: each element is 0 with probability `prob` (to 1/65536), else `1 / (1 - prob)`.
/// The same `base` gives the same mask, so a backward pass regenerates it instead of storing it.
pub fn masked(base: u64, prob: f64, input: Option<&[f32]>, out: &mut [f32]) {
    // An element is dropped when its 16 random bits fall below prob × 2^16.
    let cut = (prob * 65_536.0).round() as u64;
    let keep = (1.0 / (1.0 - prob)) as f32;
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(block, chunk)| {
        let mut g = SmallRng::seed_from_u64(base ^ (block as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let start = block * BLOCK;
        for (q, quad) in chunk.chunks_mut(4).enumerate() {
            let r = g.next_u64();
            for (i, v) in quad.iter_mut().enumerate() {
                let m = if (r >> (16 * i)) & 0xffff < cut { 0.0 } else { keep };
                *v = match input {
                    Some(x) => x[start + 4 * q + i] * m,
                    None => m,
                };
            }
        }
    });
}

