//! Summaries of repeated measurements (step times, throughputs): noise from other work on the
//! cores only ever adds time, so medians, not means, are what runs are compared by.

/// The median of `v`, the upper of the middle two for an even count; `v` must not be empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(super::median(&[0.5]), 0.5);
    }
}
