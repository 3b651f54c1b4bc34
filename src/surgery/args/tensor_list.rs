//! Arguments and checks of the ops over tensor lists: Gram and combine (and so PCGrad).

use super::MAX_OPERANDS;
use crate::surgery::error::{Result, SurgeryError};
use crate::surgery::transform::Transform;

/// A list of tensors that together form one vector, the way a model's parameter gradients come.
pub type TensorList<'a, T> = &'a [&'a [T]];

/// One vector of a Gram or combine call: a tensor list and the transform applied on load.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a, T> {
    pub tensors: TensorList<'a, T>,
    pub transform: Transform,
}

impl<'a, T> Operand<'a, T> {
    pub fn new(tensors: TensorList<'a, T>, transform: Transform) -> Self {
        Self { tensors, transform }
    }

    pub fn identity(tensors: TensorList<'a, T>) -> Self {
        Self::new(tensors, Transform::Identity)
    }

    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.len()).sum()
    }
}

/// Checks that `lists` all have the same shape as the first: same tensor count and lengths.
/// Each item is a list's name (for messages) and its tensor lengths.
pub fn check_same_shape(
    op: &'static str,
    shapes: impl IntoIterator<Item = (String, Vec<usize>)>,
) -> Result<Vec<usize>> {
    let mut iter = shapes.into_iter();
    let Some((ref_name, ref_lens)) = iter.next() else {
        return Ok(Vec::new());
    };
    for (name, lens) in iter {
        if lens.len() != ref_lens.len() {
            return Err(SurgeryError::TensorCountMismatch {
                op,
                list: name,
                reference: ref_name,
                expected: ref_lens.len(),
                got: lens.len(),
            });
        }
        if let Some(t) = (0..lens.len()).find(|&t| lens[t] != ref_lens[t]) {
            return Err(SurgeryError::RaggedTensorList {
                op,
                list: name,
                reference: ref_name,
                tensor: t,
                expected: ref_lens[t],
                got: lens[t],
            });
        }
    }
    Ok(ref_lens)
}

pub(crate) fn check_operand_count(op: &'static str, got: usize) -> Result<()> {
    if got > MAX_OPERANDS {
        return Err(SurgeryError::TooMany {
            op,
            what: "operands",
            got,
            max: MAX_OPERANDS,
        });
    }
    Ok(())
}

fn lens<T>(list: &[&[T]]) -> Vec<usize> {
    list.iter().map(|t| t.len()).collect()
}

/// Checks for a Gram call; returns the tensor lengths shared by all operands.
pub fn check_gram<T>(op: &'static str, operands: &[Operand<'_, T>]) -> Result<Vec<usize>> {
    check_operand_count(op, operands.len())?;
    check_same_shape(
        op,
        operands
            .iter()
            .enumerate()
            .map(|(k, o)| (format!("operands[{k}]"), lens(o.tensors))),
    )
}

/// Checks for a combine call writing `out` (given by its tensor lengths).
pub fn check_combine<T>(
    op: &'static str,
    out_lens: &[usize],
    out_term: Option<(f32, Transform)>,
    operands: &[Operand<'_, T>],
    weights: &[f32],
) -> Result<()> {
    check_operand_count(op, operands.len())?;
    if weights.len() != operands.len() {
        return Err(SurgeryError::LengthMismatch {
            op,
            arg: "weights",
            expected: operands.len(),
            got: weights.len(),
            why: "one weight per operand".into(),
        });
    }
    let shapes = std::iter::once(("out".to_string(), out_lens.to_vec())).chain(
        operands
            .iter()
            .enumerate()
            .map(|(k, o)| (format!("operands[{k}]"), lens(o.tensors))),
    );
    check_same_shape(op, shapes)?;
    let out_weight = out_term.map(|(w, _)| w);
    for (k, w) in weights.iter().chain(out_weight.iter()).enumerate() {
        if !w.is_finite() {
            return Err(SurgeryError::InvalidValue {
                op,
                arg: if k < weights.len() {
                    "weights"
                } else {
                    "out_term weight"
                },
                value: w.to_string(),
                why: "weights must be finite",
            });
        }
    }
    Ok(())
}
