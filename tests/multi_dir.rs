//! K-direction row projection against the float64 reference, and its handling of dependent
//! directions.

mod common;

use approx::abs_diff_eq;
use common::assert_passed;
use dgs::surgery::compare::{Tolerance, compare, to_f64};
use dgs::surgery::verify::check_project_rows_multi;
use dgs::surgery::{Element, HostBackend, MAX_DIRECTIONS, MultiProjection, Transform, reference};

fn matches_reference<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        for &(rows, dim) in &[(0, 5), (1, 1), (7, 7), (32, 768), (5, 769), (3, 4099)] {
            for k in [0, 1, 3, MAX_DIRECTIONS] {
                for transform in [Transform::Identity, Transform::Relu] {
                    let seed = (rows * 131 + dim * 7 + k) as u64;
                    let (report, kept_same) =
                        check_project_rows_multi::<T, B>(b, rows, dim, k, transform, seed).unwrap();
                    let what = format!("{} {rows}x{dim} K={k} {transform:?}", T::DTYPE);
                    assert_passed(&report, &what);
                    assert!(kept_same, "{what}: kept counts differ from the reference");
                }
            }
        }
    });
}

/// Exactly dependent directions (small integers, exact in every dtype) are skipped, and the result
/// equals the projection off the independent ones; the output is orthogonal to every direction.
fn dependent_directions_are_skipped<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        let dim = 37;
        let e = |f: &dyn Fn(usize) -> f32| -> Vec<T> { (0..dim).map(|i| T::from_f32(f(i))).collect() };
        let d0 = e(&|i| (i % 5) as f32 - 2.0);
        let d1 = e(&|i| (i % 3) as f32);
        let d2 = e(&|i| ((i % 5) as f32 - 2.0) + 2.0 * (i % 3) as f32); // d0 + 2·d1
        let zero = e(&|_| 0.0);
        let x = e(&|i| ((i * 7) % 11) as f32 - 5.0);
        let all = [d0.as_slice(), zero.as_slice(), d1.as_slice(), d2.as_slice(), d0.as_slice()];
        let independent = [d0.as_slice(), d1.as_slice()];
        let p_all = MultiProjection::new(1, dim, &all);
        let p_ind = MultiProjection::new(1, dim, &independent);
        let mut out = x.clone();
        let mut kept = [0u8];
        b.project_rows_multi(&mut out, &p_all, Some(&mut kept)).unwrap();
        assert_eq!(kept[0], 2, "{}: only d0 and d1 are independent", T::DTYPE);
        let (expected, _) = reference::project_rows_multi(&x, &p_ind).unwrap();
        assert_passed(&compare(&to_f64(&out), &expected, Tolerance::for_dtype(T::DTYPE)),
            &format!("{} dependent directions", T::DTYPE));
        let scale: f64 = to_f64(&x).iter().map(|v| v * v).sum::<f64>().sqrt();
        for d in [&d0, &d1, &d2] {
            let dn: f64 = to_f64(d).iter().map(|v| v * v).sum::<f64>().sqrt();
            let along: f64 = to_f64(&out).iter().zip(to_f64(d)).map(|(a, b)| a * b).sum();
            let allowed = 4.0 * Tolerance::for_dtype(T::DTYPE).rtol * scale * dn;
            assert!(abs_diff_eq!(along, 0.0, epsilon = allowed), "{}: out·d = {along:e} > {allowed:e}", T::DTYPE);
        }
    });
}

fn no_directions_leaves_rows_unchanged<B: HostBackend>(b: &B) {
    let x: Vec<f32> = (0..10).map(|i| i as f32 - 4.5).collect();
    let mut out = x.clone();
    let none: [&[f32]; 0] = [];
    b.project_rows_multi(&mut out, &MultiProjection::new(2, 5, &none), None)
        .unwrap();
    assert_eq!(out, x);
}

fn non_finite_direction_poisons_only_its_row<B: HostBackend>(b: &B) {
    let dim = 9;
    let x: Vec<f32> = (0..2 * dim).map(|i| (i as f32).sin()).collect();
    let mut d: Vec<f32> = (0..2 * dim).map(|i| (i as f32).cos()).collect();
    d[3] = f32::NAN;
    let dirs = [d.as_slice()];
    let mut out = x.clone();
    b.project_rows_multi(&mut out, &MultiProjection::new(2, dim, &dirs), None)
        .unwrap();
    assert!(out[..dim].iter().all(|v| v.is_nan()));
    assert!(out[dim..].iter().all(|v| v.is_finite()));
}

backend_tests!(
    matches_reference,
    dependent_directions_are_skipped,
    no_directions_leaves_rows_unchanged,
    non_finite_direction_poisons_only_its_row,
);
