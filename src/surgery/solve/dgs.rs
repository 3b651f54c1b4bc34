//! DGS in parameter space: project the task gradient off the direction of `relu(harm)`, then add
//! `λ · min(help, 0)`.

use super::gram::Gram;
use crate::surgery::args::check_finite_nonneg;
use crate::surgery::args::{Operand, TensorList};
use crate::surgery::error::{Result, SurgeryError};
use crate::surgery::transform::Transform;

/// Operand positions the DGS solver expects in its Gram matrix.
pub const DGS_TASK: usize = 0;
pub const DGS_HARM: usize = 1;
pub const DGS_HELP: usize = 2;

/// The operands, with their transforms, whose Gram matrix [`dgs_param`] solves and whose combine
/// with its weights gives the DGS gradient: `[task, relu(harm), min(help, 0)]`.
pub fn dgs_operands<'a, T>(
    task: TensorList<'a, T>,
    harm: TensorList<'a, T>,
    help: Option<TensorList<'a, T>>,
) -> Vec<Operand<'a, T>> {
    let mut ops = vec![
        Operand::new(task, Transform::Identity),
        Operand::new(harm, Transform::Relu),
    ];
    if let Some(help) = help {
        ops.push(Operand::new(help, Transform::NegativePart));
    }
    ops
}

/// Weights `[1, −(g·r)/(‖r‖+eps)², λ]` for the operands of [`dgs_operands`], where `r = relu(harm)`
/// and eps is added to the norm as in the row-wise op. With no help operand (K = 2) `lambda` must
/// be 0. A zero `relu(harm)` gives harm weight 0, whatever eps is.
pub fn dgs_param(gram: &Gram, lambda: f32, eps: f32) -> Result<Vec<f32>> {
    const OP: &str = "dgs_param";
    let k = gram.k();
    if !(k == 2 || k == 3) {
        return Err(SurgeryError::InvalidValue {
            op: OP,
            arg: "gram",
            value: format!("{k}×{k}"),
            why: "expected the Gram matrix of [task, relu(harm)] or [task, relu(harm), min(help, 0)]",
        });
    }
    if !lambda.is_finite() || (k == 2 && lambda != 0.0) {
        return Err(SurgeryError::InvalidValue {
            op: OP,
            arg: "lambda",
            value: lambda.to_string(),
            why: "it must be finite, and 0 when no help operand is given",
        });
    }
    check_finite_nonneg(OP, "eps", eps)?;
    let norm = gram.get_f64(DGS_HARM, DGS_HARM).max(0.0).sqrt();
    let along = gram.get_f64(DGS_TASK, DGS_HARM);
    let harm_weight = if norm == 0.0 {
        0.0
    } else {
        let denom = norm + f64::from(eps);
        -along / (denom * denom)
    };
    let mut w = vec![1.0, harm_weight as f32];
    if k == 3 {
        w.push(lambda);
    }
    Ok(w)
}
