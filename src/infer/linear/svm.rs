//! A linear SVM with the squared hinge loss and L2 regularisation (the usual "LinearSVC"),
//! trained by dual coordinate descent with shrinking (Hsieh et al., ICML 2008, as in
//! LIBLINEAR): exact, fast on sparse TF-IDF vectors, no learning rate to choose.

use super::features::Sparse;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// One binary linear classifier: weights over the features and a bias, `w·x + b > 0` = positive.
#[derive(Debug, Clone, PartialEq)]
pub struct BinarySvm {
    /// One weight a feature.
    pub w: Vec<f32>,
    /// Bias, regularised like a weight on a constant feature of value 1.
    pub b: f32,
}

/// Solver settings.
#[derive(Debug, Clone, Copy)]
pub struct SvmOptions {
    /// Inverse regularisation strength.
    pub c: f64,
    /// Stop when the projected gradients span less than this.
    pub tol: f64,
    /// At most this many passes over the data.
    pub max_passes: usize,
    /// Seed of the visiting order.
    pub seed: u64,
}

impl Default for SvmOptions {
    fn default() -> Self {
        Self { c: 1.0, tol: 1e-3, max_passes: 1000, seed: 1 }
    }
}

fn dot(w: &[f64], b: f64, x: &Sparse) -> f64 {
    x.iter().map(|&(j, v)| w[j as usize] * v as f64).sum::<f64>() + b
}

/// Trains one classifier on `x` (examples over `dim` features) with labels `y`.
pub fn train(x: &[Sparse], y: &[bool], dim: usize, o: &SvmOptions) -> BinarySvm {
    let n = x.len();
    let diag = 0.5 / o.c;
    let qd: Vec<f64> = x.iter().map(|xi| diag + 1.0 + xi.iter().map(|e| (e.1 as f64).powi(2)).sum::<f64>()).collect();
    let sign: Vec<f64> = y.iter().map(|&p| if p { 1.0 } else { -1.0 }).collect();
    let (mut w, mut b) = (vec![0f64; dim], 0f64);
    let mut alpha = vec![0f64; n];
    let mut index: Vec<usize> = (0..n).collect();
    let mut active = n;
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    // with no upper bound on alpha (squared hinge) only the lower bound shrinks
    let mut pg_max_old = f64::INFINITY;
    for _ in 0..o.max_passes {
        let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
        index[..active].shuffle(&mut rng);
        let mut s = 0;
        while s < active {
            let i = index[s];
            let g = sign[i] * dot(&w, b, &x[i]) - 1.0 + alpha[i] * diag;
            let pg = if alpha[i] == 0.0 {
                if g > pg_max_old {
                    // far on the right side of the margin: set aside until the final check
                    active -= 1;
                    index.swap(s, active);
                    continue;
                }
                g.min(0.0)
            } else {
                g
            };
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / qd[i]).max(0.0);
                let d = (alpha[i] - old) * sign[i];
                for &(j, v) in &x[i] {
                    w[j as usize] += d * v as f64;
                }
                b += d;
            }
            s += 1;
        }
        if pg_max - pg_min <= o.tol {
            if active == n {
                break;
            }
            // converged on the active set: check every example once more
            active = n;
            pg_max_old = f64::INFINITY;
            continue;
        }
        pg_max_old = if pg_max <= 0.0 { f64::INFINITY } else { pg_max };
    }
    BinarySvm { w: w.into_iter().map(|v| v as f32).collect(), b: b as f32 }
}

impl BinarySvm {
    /// The margin `w·x + b` of one example.
    pub fn margin(&self, x: &Sparse) -> f32 {
        x.iter().map(|&(j, v)| self.w[j as usize] * v).sum::<f32>() + self.b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primal objective ½|w|² + ½b² + C Σ max(0, 1 − y(w·x + b))².
    fn primal(m: &BinarySvm, x: &[Sparse], y: &[bool], c: f64) -> f64 {
        let reg = 0.5 * (m.w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() + (m.b as f64).powi(2));
        let loss: f64 = x.iter().zip(y).map(|(xi, &p)| (1.0 - if p { 1.0 } else { -1.0 } * m.margin(xi) as f64).max(0.0).powi(2)).sum();
        reg + c * loss
    }

    #[test]
    fn separates_and_reaches_the_optimum() {
        // positives have feature 0, negatives feature 1; feature 2 is noise on both
        let x: Vec<Sparse> = (0..40).map(|i| if i % 2 == 0 { vec![(0, 0.8), (2, 0.6)] } else { vec![(1, 0.8), (2, 0.6)] }).collect();
        let y: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let o = SvmOptions { tol: 1e-6, ..Default::default() };
        let m = train(&x, &y, 3, &o);
        assert!(x.iter().zip(&y).all(|(xi, &p)| (m.margin(xi) > 0.0) == p));
        assert!(m.w[0] > 0.0 && m.w[1] < 0.0);
        // no small step away from the solution lowers the primal objective
        let best = primal(&m, &x, &y, o.c);
        for j in 0..3 {
            for d in [-1e-2f32, 1e-2] {
                let mut moved = m.clone();
                moved.w[j] += d;
                assert!(primal(&moved, &x, &y, o.c) >= best - 1e-6, "feature {j} step {d}");
            }
        }
    }
}
