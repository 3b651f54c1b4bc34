//! A student and its frozen pass in one call (`Adapters::images`): the first images get the
//! adapters (and dropout) and a backward, the rest are the frozen layer with no gradient. Each
//! half must equal the call it replaces: the adapted call on the first images and the frozen
//! call on the others; the gradients those of the adapted call alone.

use candle_core::{DType, Tensor, Var};
use dgs::ops::block::{Adapters, block, block_pooled};

use super::{BASE, Case, F32_TOL, Operands, assert_close, config, dropout_of, flat, inputs};

/// The op's output with adapters on the first `images` images of `x`, and the gradients of
/// `Σ out ⊙ g` (every row of `g` counts, the frozen half's too) with respect to `x`, A and B.
fn paired(
    ops: &Operands,
    x: &Var,
    g: &Tensor,
    case: Case,
    rows: Option<&[usize]>,
    images: usize,
) -> [Vec<f64>; 4] {
    let ad = Adapters {
        images: Some(images),
        ..ops.adapters(dropout_of(case)).expect("adapters")
    };
    let out = match rows {
        None => block(x, &ops.w, config(case), Some(ad)),
        Some(rows) => block_pooled(x, &ops.w, config(case), Some(ad), rows),
    }
    .unwrap();
    let grads = (&out * g).unwrap().sum_all().unwrap().backward().unwrap();
    let get = |v: &Var| flat(grads.get(v).expect("a gradient"));
    [flat(&out), get(x), get(&ops.a), get(&ops.b)]
}

/// The same through two calls: adapted on `x`, frozen on `x` (no gradient), and the gradients
/// of the adapted half's loss alone.
fn separate(ops: &Operands, g: &Tensor, case: Case, rows: Option<&[usize]>) -> [Vec<f64>; 4] {
    let run = |adapters| match rows {
        None => block(&ops.x, &ops.w, config(case), adapters),
        Some(rows) => block_pooled(&ops.x, &ops.w, config(case), adapters, rows),
    };
    let student = run(ops.adapters(dropout_of(case))).unwrap();
    let frozen = run(None).unwrap().detach();
    let g_student = g.narrow(0, 0, case.batch).unwrap();
    let grads = (&student * &g_student)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let get = |v: &Var| flat(grads.get(v).expect("a gradient"));
    let out = Tensor::cat(&[&student, &frozen], 0).unwrap();
    [flat(&out), get(&ops.x), get(&ops.a), get(&ops.b)]
}

#[test]
fn a_paired_call_equals_the_adapted_and_the_frozen_calls() {
    for (causal, pooled) in [(false, false), (true, false), (false, true)] {
        let case = Case {
            causal,
            dropout: 0.5,
            ..BASE
        };
        let inp = inputs(case, 51);
        let ops = Operands::new(&inp, DType::F32);
        // The frozen half is the same images again (a student and its teacher).
        let both =
            Var::from_tensor(&Tensor::cat(&[ops.x.as_tensor(), ops.x.as_tensor()], 0).unwrap())
                .unwrap();
        let rows: Vec<usize> = vec![0, 5];
        let rows = pooled.then_some(&rows[..]);
        let per_image = if pooled { 1 } else { case.seq };
        let g_one = match pooled {
            true => inp.g.narrow(1, 0, 1).unwrap(),
            false => inp.g.clone(),
        }
        .to_dtype(DType::F32)
        .unwrap();
        let g = Tensor::cat(&[&g_one, &(g_one.clone() * 3.0).unwrap()], 0).unwrap();
        assert_eq!(g.dims(), &[2 * case.batch, per_image, case.channels]);
        let both_rows: Vec<usize> = rows.map(|r| [r, r].concat()).unwrap_or_default();
        let got = paired(
            &ops,
            &both,
            &g,
            case,
            rows.map(|_| &both_rows[..]),
            case.batch,
        );
        let want = separate(&ops, &g, case, rows);
        let what = format!("causal {causal}, pooled {pooled}");
        assert_close(&format!("{what}: output"), &got[0], &want[0], F32_TOL);
        // The input gradient: the adapted half's, zero on the frozen half.
        let zeros = vec![0.0; want[1].len()];
        assert_close(
            &format!("{what}: input gradient"),
            &got[1],
            &[want[1].clone(), zeros].concat(),
            F32_TOL,
        );
        assert_close(&format!("{what}: A gradient"), &got[2], &want[2], F32_TOL);
        assert_close(&format!("{what}: B gradient"), &got[3], &want[3], F32_TOL);
    }
}
