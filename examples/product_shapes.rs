//! The reference training step's matrix-product shapes and the small Transformer's prediction
//! shapes, f32 (`gemm`) against bf16 (the mixed-precision kernel), in one process: medians of
//! 9, GFLOP/s and their ratio.
//!
//!     cargo run --release --example product_shapes
//!
//! (Without AVX-512 BF16 on the CPU it prints so and times f32 alone.)
use bertlu::apps::bench::timed;
use bertlu::eval::stats::median;
use bertlu::model::kernels::{bf16, product_of_stored, product_threads, Stored};

/// Median seconds of 9 runs of `f`.
fn med(f: impl FnMut()) -> f64 {
    median(&timed(0, 9, f))
}

fn main() {
    let shapes: Vec<(&str, [usize; 3], Stored, Stored)> = vec![
        ("qkvo fwd", [4096, 256, 256], Stored::AsIs, Stored::AsIs),
        ("ffn1 fwd", [4096, 256, 1024], Stored::AsIs, Stored::AsIs),
        ("ffn2 fwd", [4096, 1024, 256], Stored::AsIs, Stored::AsIs),
        ("ffn1 dx", [4096, 1024, 256], Stored::AsIs, Stored::Transposed),
        ("ffn1 dW", [256, 4096, 1024], Stored::Transposed, Stored::AsIs),
        ("mlm fwd", [640, 256, 8000], Stored::AsIs, Stored::Transposed),
        ("mlm dE", [8000, 640, 256], Stored::Transposed, Stored::AsIs),
        ("cube", [1024, 1024, 1024], Stored::AsIs, Stored::AsIs),
        // prediction with the small Transformer (d 128, FFN 512): a batch of 64 texts of ≈ 83
        // pieces; its query, key and value projections one at a time and as one product
        ("small q", [5312, 128, 128], Stored::AsIs, Stored::AsIs),
        ("small qkv", [5312, 128, 384], Stored::AsIs, Stored::AsIs),
        ("small ffn1", [5312, 128, 512], Stored::AsIs, Stored::AsIs),
        ("small ffn2", [5312, 512, 128], Stored::AsIs, Stored::AsIs),
    ];
    let bf16_here = bf16::supported();
    if !bf16_here {
        println!("no AVX-512 BF16 on this CPU: f32 only");
    }
    for (name, [m, k, n], a, b) in shapes {
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * n];
        let t32 = med(|| product_of_stored(&mut out, (&lhs, a), (&rhs, b), [m, k, n], false, product_threads(m, k, n)));
        let g = 2.0 * (m * k * n) as f64 / 1e9;
        if !bf16_here {
            println!("{name:10} {m}x{k}x{n}: f32 {:.2} ms {:.0} GFLOP/s", t32 * 1e3, g / t32);
            continue;
        }
        let t16 = med(|| bf16::product(&mut out, (&lhs, a), (&rhs, b), [m, k, n], false));
        println!("{name:10} {m}x{k}x{n}: f32 {:.2} ms {:.0} GFLOP/s | bf16 {:.2} ms {:.0} GFLOP/s | {:.2}x", t32 * 1e3, g / t32, t16 * 1e3, g / t16, t32 / t16);
    }
}
