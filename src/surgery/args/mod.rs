//! The arguments of each surgery op, and the checks every backend runs on them before touching
//! memory. Backends share these checks so the CPU path, the float64 reference and the device
//! paths reject exactly the same inputs with exactly the same messages. One file per op family:
//! [`rowwise`] (the row projection), [`multi_dir`] (the K-direction projection), [`tensor_list`]
//! (Gram and combine over tensor lists).

mod multi_dir;
mod rowwise;
mod tensor_list;

pub use multi_dir::{MultiLens, MultiProjection, check_multi_lens, check_multi_projection};
pub use rowwise::{
    HelpTerm, RowLens, RowProjection, RowStatsMut, check_row_lens, check_row_projection,
};
#[cfg(feature = "cuda-kernels")]
pub(crate) use tensor_list::check_operand_count;
pub use tensor_list::{Operand, TensorList, check_combine, check_gram, check_same_shape};

use super::error::{Result, SurgeryError};

/// Most directions the K-direction row projection takes per row.
pub const MAX_DIRECTIONS: usize = crate::surgery::contract::MAX_DIRECTIONS;
/// Most operands (vectors) a Gram or combine call takes.
pub const MAX_OPERANDS: usize = crate::surgery::contract::MAX_OPERANDS;
/// eps added to `‖relu(h)‖` before dividing, as in the official hook.
pub const DEFAULT_EPS: f32 = 1e-6;
/// Relative size below which a direction counts as lying in the span of the earlier ones; see
/// [`MultiProjection::dep_tol`].
pub const DEFAULT_DEP_TOL: f32 = 1e-3;

pub(super) fn check_len(
    op: &'static str,
    arg: &'static str,
    got: usize,
    rows: usize,
    dim: usize,
) -> Result<()> {
    let expected = rows
        .checked_mul(dim)
        .ok_or_else(|| SurgeryError::InvalidValue {
            op,
            arg: "rows × dim",
            value: format!("{rows} × {dim}"),
            why: "the product overflows usize",
        })?;
    if got != expected {
        return Err(SurgeryError::LengthMismatch {
            op,
            arg,
            expected,
            got,
            why: format!("rows × dim = {rows} × {dim}"),
        });
    }
    Ok(())
}

pub(super) fn check_rows_dim(op: &'static str, rows: usize, dim: usize) -> Result<()> {
    if dim == 0 && rows > 0 {
        return Err(SurgeryError::ZeroDim { op, rows });
    }
    Ok(())
}

pub(crate) fn check_finite_nonneg(op: &'static str, arg: &'static str, v: f32) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(SurgeryError::InvalidValue {
            op,
            arg,
            value: v.to_string(),
            why: "it must be finite and non-negative",
        });
    }
    Ok(())
}
