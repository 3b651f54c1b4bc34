//! Gram and combine over tensor lists against the float64 reference.

mod common;

use common::{AWKWARD_LENS, assert_passed};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{check_combine, check_gram, lists_as_slices, random_lists};
use dgs::surgery::{Element, HostBackend, MAX_OPERANDS, Operand, Transform};

const TRANSFORM_SETS: [&[Transform]; 3] = [
    &[Transform::Identity],
    &[Transform::Relu, Transform::Identity],
    &[
        Transform::NegativePart,
        Transform::Relu,
        Transform::Identity,
    ],
];

fn gram_matches_reference<B: HostBackend>(b: &B) {
    for_each_dtype!(T => {
        for (i, &len) in AWKWARD_LENS.iter().enumerate() {
            for k in [1, 3] {
                let lens = [len, 1 + len % 7];
                for (s, transforms) in TRANSFORM_SETS.iter().enumerate() {
                    let r = check_gram::<T, B>(b, &lens, k, transforms, (i * 31 + k * 3 + s) as u64).unwrap();
                    assert_passed(&r, &format!("{} gram lens {lens:?} K={k} set {s}", T::DTYPE));
                }
            }
        }
        // Many tensors of assorted sizes, the most operands, and the empty cases.
        let many: Vec<usize> = (0..300).map(|t| (t * 977) % 3000 + (t % 3)).collect();
        assert_passed(&check_gram::<T, B>(b, &many, MAX_OPERANDS, TRANSFORM_SETS[2], 1).unwrap(), "many tensors");
        assert_passed(&check_gram::<T, B>(b, &[], 2, TRANSFORM_SETS[0], 2).unwrap(), "no tensors");
        assert_passed(&check_gram::<T, B>(b, &[0, 5, 0], 2, TRANSFORM_SETS[0], 3).unwrap(), "empty tensors");
        assert_eq!(b.gram::<T>(&[]).unwrap().k(), 0);
    });
}

fn gram_is_symmetric_and_deterministic<B: HostBackend>(b: &B) {
    let mut rng = SplitMix64::new(5);
    let lens = [200_000, 3, 65_537];
    let lists = random_lists::<f32>(&mut rng, 4, &lens);
    let slices = lists_as_slices(&lists);
    let ops: Vec<Operand<'_, f32>> = slices
        .iter()
        .map(|s| Operand::new(s, Transform::Relu))
        .collect();
    let (g1, g2) = common::on_one_and_two_threads(|| b.gram(&ops).unwrap());
    let bits = |g: &dgs::surgery::Gram| {
        g.as_row_major()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&g1), bits(&g2));
    for i in 0..4 {
        for j in 0..4 {
            assert_eq!(g1.get(i, j).to_bits(), g1.get(j, i).to_bits());
        }
    }
}

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

backend_tests!(
    gram_matches_reference,
    gram_is_symmetric_and_deterministic,
    combine_matches_reference,
    combine_propagates_non_finite,
);

#[test]
fn element_roundtrip_is_exact_for_representable_values() {
    for v in [0.0f32, 1.0, -2.5, 30720.0] {
        assert_eq!(dgs::half::f16::from_f32(v).to_f32(), v);
        assert_eq!(<dgs::half::bf16 as Element>::from_f32(v).to_f32(), v);
    }
}
