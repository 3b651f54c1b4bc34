//! The Gram op (`HostBackend::gram`) over tensor lists against the float64 reference: awkward
//! lengths, transforms, many tensors, the empty cases, symmetry and thread-count independence.

mod common;

use common::{AWKWARD_LENS, assert_passed};
use dgs::surgery::rng::SplitMix64;
use dgs::surgery::verify::{check_gram, lists_as_slices, random_lists};
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

backend_tests!(gram_matches_reference, gram_is_symmetric_and_deterministic);
