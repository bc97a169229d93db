//! Sample statistics of the repeats.

use serde::{Deserialize, Serialize};

/// Mean and spread of a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for fewer than two values.
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let n = values.len();
        if n == 0 {
            return Spread::default();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread { n, mean, stddev: var.sqrt(), min, max }
    }

    /// Standard error of the mean.
    pub fn std_error(&self) -> f64 {
        if self.n == 0 { 0.0 } else { self.stddev / (self.n as f64).sqrt() }
    }
}

/// 100 (a / b - 1) and its standard error from the two means' standard errors
/// (first-order propagation, the two samples independent).
pub fn ratio_pct(a: &Spread, b: &Spread) -> (f64, f64) {
    if b.mean == 0.0 {
        return (0.0, 0.0);
    }
    let r = a.mean / b.mean;
    let rel_a = if a.mean == 0.0 { 0.0 } else { a.std_error() / a.mean };
    let rel_b = b.std_error() / b.mean;
    (100.0 * (r - 1.0), 100.0 * r * (rel_a.powi(2) + rel_b.powi(2)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_stddev() {
        let s = Spread::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.n, 8);
        assert_eq!(s.mean, 5.0);
        assert!((s.stddev - 2.138).abs() < 1e-3, "{s:?}");
        assert_eq!((s.min, s.max), (2.0, 9.0));
        assert_eq!(Spread::of(&[3.0]).stddev, 0.0);
        assert_eq!(Spread::of(&[]).n, 0);
    }

    #[test]
    fn ratio_with_its_error() {
        let a = Spread { n: 4, mean: 110.0, stddev: 2.0, min: 0.0, max: 0.0 };
        let b = Spread { n: 4, mean: 100.0, stddev: 2.0, min: 0.0, max: 0.0 };
        let (pct, err) = ratio_pct(&a, &b);
        assert!((pct - 10.0).abs() < 1e-9);
        // rel errors 1/110 and 1/100, times 1.1, in percent
        let expect = 100.0 * 1.1 * ((1.0f64 / 110.0).powi(2) + (1.0f64 / 100.0).powi(2)).sqrt();
        assert!((err - expect).abs() < 1e-9);
        assert_eq!(ratio_pct(&a, &Spread::default()), (0.0, 0.0));
    }
}
