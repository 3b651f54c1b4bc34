//! Solvers on the Gram matrix other than PCGrad (tests/pcgrad.rs): DGS in parameter space against
//! its formula, orthogonal projection against the K-direction row op.

mod common;

use common::assert_passed;
use dgs::surgery::compare::{Tolerance, compare, to_f64};
use dgs::surgery::reference::{self, Scaled, flatten};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::solve::{self, dgs_operands};
use dgs::surgery::verify::{Magnitude, as_slices, random_list};
use dgs::surgery::{Element, Gram, HostBackend, MultiProjection, Operand, Transform};

fn dgs_param_equals_formula<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        let mut rng = SplitMix64::new(77);
        let lens = [300, 1, 64];
        let m = Magnitude::Normal(1.0);
        let (task, harm, help) = (random_list::<T>(&mut rng, &lens, m), random_list::<T>(&mut rng, &lens, m), random_list::<T>(&mut rng, &lens, m));
        let (st, sh, sp) = (as_slices(&task), as_slices(&harm), as_slices(&help));
        let ops = dgs_operands(&st, &sh, Some(&sp));
        let lambda = 0.2f32;
        let w = solve::dgs_param(&b.gram(&ops).unwrap(), lambda, 1e-6).unwrap();
        let mut out: Vec<Vec<T>> = lens.iter().map(|&n| vec![T::from_f32(f32::NAN); n]).collect();
        let mut refs: Vec<&mut [T]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        b.combine(&mut refs, None, &ops, &w).unwrap();

        let g = flatten(&Operand::identity(&st));
        let r = flatten(&Operand::new(&sh, Transform::Relu));
        let a = flatten(&Operand::new(&sp, Transform::NegativePart));
        let norm = reference::dot(&r, &r).sqrt();
        let hhat: Vec<f64> = r.iter().map(|v| v / (norm + 1e-6)).collect();
        let along = reference::dot(&g, &hhat);
        let abs_along: f64 = g.iter().zip(&hhat).map(|(x, y)| (x * y).abs()).sum();
        let expected = Scaled {
            values: (0..g.len()).map(|i| g[i] - along * hhat[i] + f64::from(lambda) * a[i]).collect(),
            scale: (0..g.len()).map(|i| g[i].abs() + abs_along * hhat[i].abs() + f64::from(lambda) * a[i].abs()).collect(),
        };
        let got: Vec<f64> = out.iter().flat_map(|t| to_f64(t)).collect();
        assert_passed(&compare(&got, &expected, Tolerance::for_dtype(T::DTYPE)), &format!("{} dgs_param", T::DTYPE));
    });
}

/// Projecting one long vector off others through Gram + combine gives what the K-direction row
/// op's reference gives for a single row of the same data.
fn orthogonal_projection_equals_row_projection<B: HostBackend>(b: &B) {
    let mut rng = SplitMix64::new(8);
    let dim = 1000;
    let m = Magnitude::Normal(1.0);
    let lists: Vec<Vec<Vec<f32>>> = (0..4).map(|_| random_list(&mut rng, &[dim], m)).collect();
    let slices: Vec<Vec<&[f32]>> = lists.iter().map(|l| as_slices(l)).collect();
    let ops: Vec<Operand<'_, f32>> = slices.iter().map(|s| Operand::identity(s)).collect();
    let gram = b.gram(&ops).unwrap();
    let w = solve::orthogonal_projection(&gram, 0, &[1, 2, 3], 1e-3).unwrap();
    let mut out = vec![f32::NAN; dim];
    b.combine(&mut [&mut out[..]], None, &ops, &w).unwrap();
    let dirs = [&lists[1][0][..], &lists[2][0][..], &lists[3][0][..]];
    let (expected, kept) =
        reference::project_rows_multi(&lists[0][0], &MultiProjection::new(1, dim, &dirs)).unwrap();
    assert_eq!(kept, vec![3]);
    // The Gram route squares the conditioning, so allow it the PCGrad tolerance.
    let tol = dgs::surgery::verify::pcgrad_tolerance(f32::DTYPE);
    assert_passed(
        &compare(&to_f64(&out), &expected, tol),
        "orthogonal projection",
    );
}

backend_tests!(
    dgs_param_equals_formula,
    orthogonal_projection_equals_row_projection,
);

#[test]
fn dgs_param_with_zero_harm_keeps_the_task_gradient() {
    let g = Gram::from_row_major(3, vec![4.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0]).unwrap();
    assert_eq!(solve::dgs_param(&g, 0.2, 0.0).unwrap(), vec![1.0, 0.0, 0.2]);
    let two = Gram::from_row_major(2, vec![4.0, -2.0, -2.0, 4.0]).unwrap();
    assert_eq!(solve::dgs_param(&two, 0.0, 0.0).unwrap(), vec![1.0, 0.5]);
}
