//! Bad arguments get a typed error naming the op, the argument and the sizes.

use dgs::surgery::reference;
use dgs::surgery::solve::{self, Gram};
use dgs::surgery::{
    MAX_DIRECTIONS, MAX_OPERANDS, MultiProjection, Operand, RowProjection, RowStatsMut,
    SurgeryError, Transform, cpu,
};

#[test]
fn row_projection_rejects_bad_lengths() {
    let h = vec![0.0f32; 6];
    let mut x = vec![0.0f32; 5];
    let e = cpu::dgs_rows(
        &mut x,
        &RowProjection::new(2, 3, &h),
        RowStatsMut::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::LengthMismatch {
                arg: "x",
                expected: 6,
                got: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("dgs_rows") && e.to_string().contains("2 × 3"),
        "{e}"
    );

    let mut x = vec![0.0f32; 6];
    let a = vec![0.0f32; 4];
    let p = RowProjection::new(2, 3, &h).with_help(&a, 0.1);
    let e = cpu::dgs_rows(&mut x, &p, RowStatsMut::default()).unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::LengthMismatch {
                arg: "help.grad",
                ..
            }
        ),
        "{e}"
    );

    let mut coef = vec![0.0f32; 3];
    let stats = RowStatsMut {
        coef: Some(&mut coef),
        harm_norm: None,
    };
    let e = cpu::dgs_rows(&mut x, &RowProjection::new(2, 3, &h), stats).unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::LengthMismatch {
                arg: "stats.coef",
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn row_projection_rejects_zero_dim_and_bad_scalars() {
    let mut x: Vec<f32> = vec![];
    let e = cpu::dgs_rows(
        &mut x,
        &RowProjection::new(4, 0, &[]),
        RowStatsMut::default(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        SurgeryError::ZeroDim {
            op: "dgs_rows",
            rows: 4
        }
    );
    // rows = 0 is fine, with any dim.
    cpu::dgs_rows(
        &mut x,
        &RowProjection::new(0, 0, &[]),
        RowStatsMut::default(),
    )
    .unwrap();
    cpu::dgs_rows(
        &mut x,
        &RowProjection::new(0, 9, &[]),
        RowStatsMut::default(),
    )
    .unwrap();

    let h = [1.0f32; 3];
    let mut x = [1.0f32; 3];
    for eps in [-1.0, f32::NAN, f32::INFINITY] {
        let e = cpu::dgs_rows(
            &mut x,
            &RowProjection::new(1, 3, &h).with_eps(eps),
            RowStatsMut::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, SurgeryError::InvalidValue { arg: "eps", .. }),
            "{e}"
        );
    }
    let e = cpu::dgs_rows(
        &mut x,
        &RowProjection::new(1, 3, &h).with_help(&h, f32::NAN),
        RowStatsMut::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::InvalidValue {
                arg: "help.coef",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(x, [1.0; 3], "a rejected call must not touch its output");
}

#[test]
fn multi_projection_rejects_too_many_directions() {
    let d = vec![1.0f32; 4];
    let dirs: Vec<&[f32]> = vec![&d; MAX_DIRECTIONS + 1];
    let mut x = vec![0.0f32; 4];
    let e = cpu::project_rows_multi(&mut x, &MultiProjection::new(1, 4, &dirs), None).unwrap_err();
    assert_eq!(
        e,
        SurgeryError::TooMany {
            op: "project_rows_multi",
            what: "directions",
            got: 9,
            max: 8
        }
    );
    let short = vec![1.0f32; 3];
    let dirs: Vec<&[f32]> = vec![&d, &short];
    let e = cpu::project_rows_multi(&mut x, &MultiProjection::new(1, 4, &dirs), None).unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::LengthMismatch {
                arg: "directions[k]",
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = reference::project_rows_multi(&x, &MultiProjection::new(1, 4, &dirs)).unwrap_err();
    assert!(
        matches!(e, SurgeryError::LengthMismatch { .. }),
        "the reference checks too: {e}"
    );
}

#[test]
fn tensor_lists_must_have_the_same_shape() {
    let (a, b, c) = (vec![1.0f32; 5], vec![1.0f32; 4], vec![1.0f32; 3]);
    let l0: Vec<&[f32]> = vec![&a, &b];
    let ragged: Vec<&[f32]> = vec![&a, &c];
    let short: Vec<&[f32]> = vec![&a];
    let e = cpu::gram(&[Operand::identity(&l0), Operand::identity(&ragged)]).unwrap_err();
    assert!(
        matches!(&e, SurgeryError::RaggedTensorList { tensor: 1, expected: 4, got: 3, list, .. } if list == "operands[1]"),
        "{e}"
    );
    assert!(e.to_string().contains("operands[0]"), "{e}");
    let e = cpu::gram(&[Operand::identity(&l0), Operand::identity(&short)]).unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::TensorCountMismatch {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e}"
    );

    let mut o1 = vec![0.0f32; 5];
    let mut o2 = vec![0.0f32; 3];
    let mut out: Vec<&mut [f32]> = vec![&mut o1, &mut o2];
    let e = cpu::combine(&mut out, None, &[Operand::identity(&l0)], &[1.0]).unwrap_err();
    assert!(
        matches!(&e, SurgeryError::RaggedTensorList { list, .. } if list == "operands[0]"),
        "{e}"
    );
    assert_eq!(o1, vec![0.0; 5], "nothing is written when the check fails");
}

#[test]
fn combine_and_gram_limits() {
    let a = vec![1.0f32; 2];
    let l: Vec<&[f32]> = vec![&a];
    let ops: Vec<Operand<'_, f32>> = vec![Operand::identity(&l); MAX_OPERANDS + 1];
    assert!(matches!(
        cpu::gram(&ops).unwrap_err(),
        SurgeryError::TooMany { max: 8, got: 9, .. }
    ));
    let mut o = [0.0f32; 2];
    let e = cpu::combine(&mut [&mut o[..]], None, &ops[..2], &[1.0]).unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::LengthMismatch {
                arg: "weights",
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = cpu::combine(
        &mut [&mut o[..]],
        Some((f32::NAN, Transform::Identity)),
        &ops[..1],
        &[1.0],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            SurgeryError::InvalidValue {
                arg: "out_term weight",
                ..
            }
        ),
        "{e}"
    );
    // Empty lists and zero operands are fine.
    let none: Vec<&[f32]> = vec![];
    let g = cpu::gram(&[Operand::identity(&none), Operand::identity(&none)]).unwrap();
    assert_eq!(g.as_row_major(), &[0.0; 4]);
    cpu::combine::<f32>(&mut [], None, &[], &[]).unwrap();
}

#[test]
fn solver_arguments_are_checked() {
    assert!(matches!(
        Gram::from_row_major(2, vec![1.0; 3]),
        Err(SurgeryError::LengthMismatch { .. })
    ));
    let e = Gram::from_row_major(2, vec![1.0, 2.0, 3.0, 1.0]).unwrap_err();
    assert!(e.to_string().contains("symmetric"), "{e}");
    let g = Gram::from_row_major(2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
    assert!(matches!(
        solve::orthogonal_projection(&g, 2, &[0], 1e-3),
        Err(SurgeryError::IndexOutOfRange {
            arg: "target",
            index: 2,
            len: 2,
            ..
        })
    ));
    assert!(matches!(
        solve::orthogonal_projection(&g, 0, &[0], 1e-3),
        Err(SurgeryError::InvalidValue { .. })
    ));
    assert!(matches!(
        solve::dgs_param(&g, 0.2, 1e-6),
        Err(SurgeryError::InvalidValue { arg: "lambda", .. })
    ));
    assert!(matches!(
        solve::dgs_param(&Gram::zeros(4), 0.0, 1e-6),
        Err(SurgeryError::InvalidValue { arg: "gram", .. })
    ));
}
