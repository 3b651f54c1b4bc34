//! Row-wise DGS projection: against the float64 reference at awkward sizes, and its properties.

mod common;

use approx::{abs_diff_eq, assert_abs_diff_eq};
use common::{DIMS, ROWS, assert_passed};
use dgs::half::f16;
use dgs::surgery::compare::{Tolerance, to_f64};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{Magnitude, check_dgs_rows, random_elems};
use dgs::surgery::{DType, Element, HostBackend, RowProjection, RowStatsMut, reference};

fn matches_reference_at_awkward_sizes<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        for (i, &rows) in ROWS.iter().enumerate() {
            for (j, &dim) in DIMS.iter().enumerate() {
                for with_help in [false, true] {
                    let seed = (i * 10 + j) as u64 + if with_help { 100 } else { 0 };
                    let r = check_dgs_rows::<T, B>(b, rows, dim, with_help, Magnitude::Normal(1.0), seed)
                        .expect("valid arguments");
                    let what = format!("{} {}x{dim} help={with_help}", T::DTYPE, rows);
                    assert_passed(&r.out, &format!("{what} out"));
                    assert_passed(&r.coef, &format!("{what} coef"));
                    assert_passed(&r.harm_norm, &format!("{what} harm_norm"));
                }
            }
        }
        // Rows longer than one f32 scratch segment take the two-conversion path.
        let r = check_dgs_rows::<T, B>(b, 3, 40_000, true, Magnitude::Normal(1.0), 77).unwrap();
        assert!(r.passed(), "{} 3x40000: {:?}", T::DTYPE, r);
    });
}

/// f16 values of 200–300 have squares beyond f16's 65504: an f16 accumulator overflows to inf.
fn fp16_large_magnitudes_accumulate_in_f32<B: HostBackend>(b: &B) {
    let band = Magnitude::Band(200.0, 300.0);
    let mut rng = SplitMix64::new(7);
    let h: Vec<f16> = random_elems(&mut rng, 768, band);
    let naive_f16_sum = h.iter().fold(f16::ZERO, |s, v| s + *v * *v);
    assert!(
        naive_f16_sum.is_infinite(),
        "the test inputs must defeat an f16 accumulator"
    );
    for (rows, dim) in [(32, 768), (7, 769), (1, 4099)] {
        for with_help in [false, true] {
            let r = check_dgs_rows::<f16, B>(b, rows, dim, with_help, band, 11).unwrap();
            assert!(r.passed(), "f16 band {rows}x{dim}: {:?}", r);
        }
    }
}

fn project<B: HostBackend, T: Element>(b: &B, x: &[T], p: &RowProjection<'_, T>) -> Vec<T> {
    let mut out = x.to_vec();
    b.dgs_rows(&mut out, p, RowStatsMut::default()).unwrap();
    out
}

fn hhat_f64<T: Element>(h: &[T], eps: f64) -> Vec<f64> {
    let r: Vec<f64> = h.iter().map(|v| v.to_f64().max(0.0)).collect();
    let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
    r.iter().map(|v| v / (n + eps)).collect()
}

fn properties_hold<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        let tol = Tolerance::for_dtype(T::DTYPE);
        for (seed, &(rows, dim)) in [(5usize, 768usize), (3, 7), (2, 4099), (9, 1)].iter().enumerate() {
            let mut rng = SplitMix64::new(seed as u64);
            let x: Vec<T> = random_elems(&mut rng, rows * dim, Magnitude::Normal(3.0));
            let mut h: Vec<T> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
            // Row 0 has relu(h) = 0: it must come back bit for bit.
            h[..dim].iter_mut().for_each(|v| *v = T::from_f32(-v.to_f32().abs()));
            let p = RowProjection::new(rows, dim, &h);
            let once = project(b, &x, &p);
            assert_eq!(once[..dim], x[..dim], "{}: a row with relu(h) = 0 changed", T::DTYPE);

            // Projecting twice equals projecting once, up to rounding and to eps: ‖ĥ‖ = n/(n+eps)
            // is just below 1, so one projection leaves (x·ĥ)(1 − ‖ĥ‖²) ĥ ≈ 2·eps/n·(x·ĥ) ĥ behind.
            let twice = project(b, &once, &p);
            let first = reference::dgs_rows(&x, &p).unwrap();
            for (i, (t, o)) in twice.iter().zip(&once).enumerate() {
                let (r, d) = (i / dim, i % dim);
                let hh = hhat_f64(&h[r * dim..(r + 1) * dim], 1e-6);
                let n = first.harm_norm.values[r];
                let eps_left = if n > 0.0 { 2e-6 / n * first.coef.values[r].abs() * hh[d].abs() } else { 0.0 };
                let (t, o) = (t.to_f64(), o.to_f64());
                // `once` is rounded to T, so it is off ĥ by up to rtol·Σ|once·ĥ|: the second
                // pass removes that too.
                let rounded_along: f64 = once[r * dim..(r + 1) * dim].iter().zip(&hh)
                    .map(|(v, w)| (v.to_f64() * w).abs()).sum();
                let bound = 2.0 * tol.bound(o, first.out.scale[i])
                    + tol.rtol * rounded_along * hh[d].abs() + eps_left;
                assert!(abs_diff_eq!(t, o, epsilon = bound), "{} twice != once at {i}: {t:e} vs {o:e}, bound {bound:e}", T::DTYPE);
            }

            for r in 0..rows {
                let span = r * dim..(r + 1) * dim;
                let hh = hhat_f64(&h[span.clone()], 1e-6);
                let out = to_f64(&once[span.clone()]);
                let xin = to_f64(&x[span]);
                let along: f64 = out.iter().zip(&hh).map(|(a, b)| a * b).sum();
                let magnitude: f64 = out.iter().chain(&xin).zip(hh.iter().chain(&hh)).map(|(a, b)| (a * b).abs()).sum();
                let n = first.harm_norm.values[r];
                let eps_left = if n > 0.0 { 2e-6 / n * first.coef.values[r].abs() } else { 0.0 };
                assert!(abs_diff_eq!(along, 0.0, epsilon = (tol.rtol + tol.atol) * magnitude + eps_left),
                    "{} row {r}: out·ĥ = {along:e}, magnitude {magnitude:e}", T::DTYPE);
                let n_in = xin.iter().map(|v| v * v).sum::<f64>().sqrt();
                let n_out = out.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!(n_out <= n_in * (1.0 + tol.rtol), "{} row {r}: norm grew {n_in} -> {n_out}", T::DTYPE);
            }
        }
    });
}

/// Rows with NaN or inf inputs follow the documented rule, match the reference's NaN/inf
/// pattern, and leave every other row exactly as a clean run produces it.
fn non_finite_inputs_follow_the_rule<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        let (rows, dim) = (8, 67);
        let mut rng = SplitMix64::new(42);
        let clean_x: Vec<T> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
        let mut h: Vec<T> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
        let mut a: Vec<T> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
        h[7 * dim + 3] = T::from_f32(1.0); // row 7 keeps a positive harm entry for the +inf(a) case
        let mut x = clean_x.clone();
        let nan = T::from_f32(f32::NAN);
        let inf = T::from_f32(f32::INFINITY);
        let neg_inf = T::from_f32(f32::NEG_INFINITY);
        x[dim + 5] = nan; // row 1: NaN in x
        h[2 * dim + 9] = nan; // row 2: NaN in h
        h[3 * dim + 1] = inf; // row 3: +inf in h
        x[4 * dim + 2] = inf; // row 4: inf in x
        // row 5: relu(h) = 0 and a NaN in x: returned as is.
        h[5 * dim..6 * dim].iter_mut().for_each(|v| *v = T::from_f32(-1.0));
        x[5 * dim + 4] = nan;
        h[6 * dim + 8] = neg_inf; // row 6: -inf in h acts as a negative value
        a[7 * dim + 3] = inf; // row 7: +inf in the help grad is cleared by min(a, 0)
        let p = RowProjection::new(rows, dim, &h).with_help(&a, 0.025);
        let clean = project(b, &clean_x, &p);
        let got = project(b, &x, &p);
        let expected = reference::dgs_rows(&x, &p).unwrap();
        assert_passed(
            &dgs::surgery::compare::compare(&to_f64(&got), &expected.out, Tolerance::for_dtype(T::DTYPE)),
            &format!("{} non-finite rows", T::DTYPE),
        );
        for r in [1, 2, 3, 4] {
            assert!(got[r * dim..(r + 1) * dim].iter().all(|v| !v.to_f32().is_finite()),
                "{} row {r} should be poisoned", T::DTYPE);
        }
        assert!(got[5 * dim + 4].to_f32().is_nan());
        let row5_others = (0..dim).filter(|&d| d != 4).all(|d| got[5 * dim + d].to_f32().is_finite());
        assert!(row5_others, "{}: row 5 NaN spread despite relu(h) = 0", T::DTYPE);
        for r in [0, 6, 7] {
            assert!(got[r * dim..(r + 1) * dim].iter().all(|v| v.to_f32().is_finite()),
                "{} row {r} should be finite", T::DTYPE);
        }
        assert_eq!(got[..dim], clean[..dim], "{}: a poisoned row leaked into row 0", T::DTYPE);
    });
}

fn results_do_not_depend_on_thread_count<B: HostBackend>(b: &B) {
    let mut rng = SplitMix64::new(3);
    let (rows, dim) = (300, 769);
    let x: Vec<f32> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
    let h: Vec<f32> = random_elems(&mut rng, rows * dim, Magnitude::Normal(1.0));
    let p = RowProjection::new(rows, dim, &h);
    let (a, c) = common::on_one_and_two_threads(|| project(b, &x, &p));
    assert!(a.iter().zip(&c).all(|(u, v)| u.to_bits() == v.to_bits()));
}

#[test]
fn stats_are_optional_and_checked() {
    let x = vec![1.0f32; 6];
    let h = vec![1.0f32; 6];
    let mut coef = vec![0.0f32; 2];
    let mut out = x.clone();
    let stats = RowStatsMut {
        coef: Some(&mut coef),
        harm_norm: None,
    };
    dgs::surgery::cpu::dgs_rows(&mut out, &RowProjection::new(2, 3, &h), stats).unwrap();
    let n = 3f32.sqrt();
    assert_abs_diff_eq!(coef[0], 3.0 / (n + 1e-6), epsilon = 1e-5);
    assert_eq!(DType::F32, f32::DTYPE);
}

backend_tests!(
    matches_reference_at_awkward_sizes,
    fp16_large_magnitudes_accumulate_in_f32,
    properties_hold,
    non_finite_inputs_follow_the_rule,
    results_do_not_depend_on_thread_count,
);
