//! Comparing a result with the float64 reference: per-dtype tolerance, NaN/inf must match.
//!
//! A value passes when `|got − ref| ≤ floor + atol·scale + rtol·|ref|`, where `scale` is the
//! magnitude the reference computed it at (see [`reference`](crate::surgery::reference)):
//! `atol` covers f32 arithmetic, `rtol` the final rounding to the storage type and `floor` the
//! spacing of its subnormals. NaN must meet NaN and an infinity the same infinity.
//!
//! The rule is an [`approx`] comparison: a [`Tolerance`] is the epsilon of `f64` against
//! [`AtScale`] (a reference value with its scale), so a single value reads
//! `assert_abs_diff_eq!(got, want, epsilon = Tolerance::for_dtype(DType::F16))`, and a slice of
//! `f64` against a slice of [`AtScale`] compares element by element. [`compare`] applies the
//! same trait to whole vectors and reports the worst mismatches.

use std::fmt;

use approx::AbsDiffEq;

use crate::surgery::element::DType;
use crate::surgery::reference::Scaled;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub floor: f64,
    pub atol: f64,
    pub rtol: f64,
}

/// f32 arithmetic with fixed-order lane sums: a few units of 2⁻²⁴ of the terms' magnitude.
const F32_ARITHMETIC: f64 = 4e-6;

impl Tolerance {
    /// For values computed in f32 and stored in `dtype`.
    pub fn for_dtype(dtype: DType) -> Self {
        let (floor, rtol) = match dtype {
            DType::F32 => (1e-44, 2.0 * f64::from(f32::EPSILON)),
            // Half an ulp is 2⁻¹¹ (f16) and 2⁻⁸ (bf16) relative; subnormal spacing 2⁻²⁴ (f16).
            DType::F16 => (3e-8, 4.9e-4),
            DType::BF16 => (1e-40, 3.91e-3),
        };
        Self {
            floor,
            atol: F32_ARITHMETIC,
            rtol,
        }
    }

    pub fn allows(&self, got: f64, expected: f64, scale: f64) -> bool {
        if got.is_nan() || expected.is_nan() {
            return got.is_nan() && expected.is_nan();
        }
        if got.is_infinite() || expected.is_infinite() {
            return got == expected;
        }
        (got - expected).abs() <= self.bound(expected, scale)
    }

    pub fn bound(&self, expected: f64, scale: f64) -> f64 {
        self.floor + self.atol * scale + self.rtol * expected.abs()
    }
}

/// One reference value and the magnitude of the terms it was computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AtScale {
    pub value: f64,
    pub scale: f64,
}

impl PartialEq<AtScale> for f64 {
    fn eq(&self, expected: &AtScale) -> bool {
        *self == expected.value
    }
}

/// `got ≈ expected` within a [`Tolerance`]: the project's rule as an `approx` comparison.
impl AbsDiffEq<AtScale> for f64 {
    type Epsilon = Tolerance;

    /// Values computed and stored in f32.
    fn default_epsilon() -> Tolerance {
        Tolerance::for_dtype(DType::F32)
    }

    fn abs_diff_eq(&self, expected: &AtScale, tol: Tolerance) -> bool {
        tol.allows(*self, expected.value, expected.scale)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub got: f64,
    pub expected: f64,
    pub bound: f64,
}

/// The outcome of one comparison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub compared: usize,
    pub failures: usize,
    /// Largest `|got − ref| / bound` over finite pairs (≤ 1 means within tolerance).
    pub worst_ratio: f64,
    pub worst_index: Option<usize>,
    pub max_abs_err: f64,
    /// The first few failures, in index order.
    pub first: Vec<Mismatch>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} values, {} outside tolerance, worst err/bound {:.3}",
            self.compared, self.failures, self.worst_ratio
        )?;
        if let Some(i) = self.worst_index {
            write!(f, " at index {i}")?;
        }
        for m in &self.first {
            write!(
                f,
                "\n  [{}] got {:e}, expected {:e}, |diff| {:e} > bound {:e}",
                m.index,
                m.got,
                m.expected,
                (m.got - m.expected).abs(),
                m.bound
            )?;
        }
        Ok(())
    }
}

const FIRST_SHOWN: usize = 5;

/// Compare `got` with `expected`, value by value.
pub fn compare(got: &[f64], expected: &Scaled, tol: Tolerance) -> Report {
    let mut r = Report {
        compared: got.len().max(expected.values.len()),
        ..Report::default()
    };
    if got.len() != expected.values.len() {
        r.failures = r.compared;
        r.worst_ratio = f64::INFINITY;
        return r;
    }
    for (i, (&g, want)) in got.iter().zip(expected.iter()).enumerate() {
        let (e, bound) = (want.value, tol.bound(want.value, want.scale));
        let ok = g.abs_diff_eq(&want, tol);
        let ratio = if g.is_finite() && e.is_finite() {
            r.max_abs_err = r.max_abs_err.max((g - e).abs());
            (g - e).abs() / bound
        } else if ok {
            0.0
        } else {
            f64::INFINITY
        };
        if ratio > r.worst_ratio || r.worst_index.is_none() {
            r.worst_ratio = ratio;
            r.worst_index = Some(i);
        }
        if !ok {
            r.failures += 1;
            if r.first.len() < FIRST_SHOWN {
                r.first.push(Mismatch {
                    index: i,
                    got: g,
                    expected: e,
                    bound,
                });
            }
        }
    }
    r
}

/// Widen stored elements for [`compare`].
pub fn to_f64<T: crate::surgery::Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|e| e.to_f64()).collect()
}

#[cfg(test)]
mod tests {
    use approx::{abs_diff_eq, assert_abs_diff_eq};

    use super::*;

    fn at(value: f64, scale: f64) -> AtScale {
        AtScale { value, scale }
    }

    #[test]
    fn the_rule_reads_as_an_approx_comparison() {
        let bf16 = Tolerance::for_dtype(DType::BF16);
        // Within rtol·|ref| + atol·scale, with the reference's scale, not the value's.
        assert_abs_diff_eq!(1.003, at(1.0, 1.0), epsilon = bf16);
        assert!(!abs_diff_eq!(1.005, at(1.0, 1.0), epsilon = bf16));
        assert_abs_diff_eq!(1e-3, at(0.0, 1000.0), epsilon = bf16);
        assert!(!abs_diff_eq!(1e-3, at(0.0, 100.0), epsilon = bf16));
        // The f32 default is far tighter.
        assert!(!abs_diff_eq!(1.003, at(1.0, 1.0)));
        // NaN meets only NaN, an infinity only the same infinity.
        assert_abs_diff_eq!(f64::NAN, at(f64::NAN, 1.0), epsilon = bf16);
        assert!(!abs_diff_eq!(0.0, at(f64::NAN, 1.0), epsilon = bf16));
        assert!(!abs_diff_eq!(
            f64::INFINITY,
            at(f64::NEG_INFINITY, 1.0),
            epsilon = bf16
        ));
        // Slices compare element by element.
        let want = [at(1.0, 1.0), at(-2.0, 3.0)];
        assert_abs_diff_eq!([1.001, -2.004][..], want[..], epsilon = bf16);
        assert!(!abs_diff_eq!([1.001, -2.1][..], want[..], epsilon = bf16));
    }

    #[test]
    fn compare_reports_what_the_trait_decides() {
        let expected = Scaled {
            values: vec![1.0, 2.0, f64::NAN],
            scale: vec![1.0, 2.0, 1.0],
        };
        let tol = Tolerance::for_dtype(DType::F16);
        let report = compare(&[1.0, 2.5, f64::NAN], &expected, tol);
        assert_eq!((report.compared, report.failures), (3, 1));
        assert_eq!(report.first[0].index, 1);
        for (i, (g, w)) in [1.0, 2.5, f64::NAN].iter().zip(expected.iter()).enumerate() {
            assert_eq!(g.abs_diff_eq(&w, tol), i != 1);
        }
    }
}
