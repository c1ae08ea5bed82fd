//! Platt scaling: one logistic curve `sigmoid(a·m + b)` from SVM margins `m` to probabilities,
//! shared by every label, fitted by Newton's method with a backtracking line search (Lin, Lin
//! and Weng's improvement of Platt's algorithm) and Platt's smoothed targets, which keep the
//! fit finite on separable data.

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() }
}

/// Fits (a, b) to `margins[i][j]` of text `i`, label `j`, against `gold[i]` (label indices).
pub fn fit(margins: &[Vec<f32>], gold: &[Vec<usize>]) -> (f64, f64) {
    let mut points: Vec<(f64, bool)> = Vec::new();
    for (row, g) in margins.iter().zip(gold) {
        points.extend(row.iter().enumerate().map(|(j, &m)| (m as f64, g.contains(&j))));
    }
    let pos = points.iter().filter(|p| p.1).count() as f64;
    let neg = points.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return (1.0, 0.0);
    }
    let (hi, lo) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
    let target: Vec<f64> = points.iter().map(|p| if p.1 { hi } else { lo }).collect();
    // negative log-likelihood of sigmoid(a m + b) against the targets
    let nll = |a: f64, b: f64| -> f64 { points.iter().zip(&target).map(|(p, t)| softplus(a * p.0 + b) - t * (a * p.0 + b)).sum() };
    let (mut a, mut b) = (1.0, 0.0);
    let mut f = nll(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
        for (p, t) in points.iter().zip(&target) {
            let s = sigmoid(a * p.0 + b);
            let (d, w) = (s - t, s * (1.0 - s));
            ga += d * p.0;
            gb += d;
            haa += w * p.0 * p.0;
            hab += w * p.0;
            hbb += w;
        }
        if ga.abs() < 1e-5 && gb.abs() < 1e-5 {
            break;
        }
        let det = haa * hbb - hab * hab;
        let (da, db) = (-(hbb * ga - hab * gb) / det, -(haa * gb - hab * ga) / det);
        let slope = ga * da + gb * db;
        let mut step = 1.0;
        loop {
            let (na, nb) = (a + step * da, b + step * db);
            let nf = nll(na, nb);
            if nf < f + 1e-4 * step * slope {
                (a, b, f) = (na, nb, nf);
                break;
            }
            step /= 2.0;
            if step < 1e-10 {
                return (a, b);
            }
        }
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_curve() {
        // margins on a grid, a fraction sigmoid(2m − 1) of each margin's examples positive
        let (mut margins, mut gold) = (Vec::new(), Vec::new());
        for k in 0..41 {
            let m = -2.0 + 0.1 * k as f32;
            let positives = (sigmoid(2.0 * m as f64 - 1.0) * 200.0).round() as usize;
            for i in 0..200 {
                margins.push(vec![m]);
                gold.push(if i < positives { vec![0] } else { vec![] });
            }
        }
        let (a, b) = fit(&margins, &gold);
        assert!((a - 2.0).abs() < 0.05 && (b + 1.0).abs() < 0.05, "a {a} b {b}");
    }

    #[test]
    fn separable_data_stays_finite() {
        let margins = vec![vec![-1.0, 1.5], vec![-2.0, 1.0]];
        let gold = vec![vec![1], vec![1]];
        let (a, b) = fit(&margins, &gold);
        assert!(a.is_finite() && b.is_finite() && a > 0.0);
    }
}
