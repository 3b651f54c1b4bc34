//! The combine op (`HostBackend::combine`) over tensor lists against the float64 reference:
//! awkward lengths, in place or not, many tensors, and non-finite operands.

mod common;

use common::{AWKWARD_LENS, assert_passed};
use dgs::surgery::verify::check_combine;
use dgs::surgery::{Element, HostBackend, MAX_OPERANDS, Operand};

fn combine_matches_reference<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        for (i, &len) in AWKWARD_LENS.iter().enumerate() {
            for k in [0, 1, 4] {
                for in_place in [false, true] {
                    let lens = [len, 2, 1 + len % 5];
                    let r = check_combine::<T, B>(b, &lens, k, in_place, (i * 17 + k) as u64).unwrap();
                    assert_passed(&r, &format!("{} combine lens {lens:?} K={k} in_place={in_place}", T::DTYPE));
                }
            }
        }
        let many: Vec<usize> = (0..300).map(|t| (t * 613) % 2500 + 1).collect();
        let r = check_combine::<T, B>(b, &many, MAX_OPERANDS, true, 9).unwrap();
        assert_passed(&r, "combine, many tensors");
        assert_passed(&check_combine::<T, B>(b, &[], 3, false, 4).unwrap(), "combine, no tensors");
    });
}

/// A zero weight still multiplies: an inf in that operand becomes NaN, never a silent zero.
fn combine_propagates_non_finite<B: HostBackend>(b: &B) {
    let a = [1.0f32, f32::INFINITY, 2.0];
    let c = [f32::NAN, 1.0, 1.0];
    let (la, lc) = ([&a[..]], [&c[..]]);
    let ops = [Operand::identity(&la), Operand::identity(&lc)];
    let mut out = [0.0f32; 3];
    b.combine(&mut [&mut out[..]], None, &ops, &[0.0, 1.0])
        .unwrap();
    assert!(
        out[0].is_nan() && out[1].is_nan() && out[2] == 1.0,
        "{out:?}"
    );
}

backend_tests!(combine_matches_reference, combine_propagates_non_finite);
