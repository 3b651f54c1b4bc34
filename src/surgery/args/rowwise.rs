//! Arguments and checks of the row-wise DGS projection.

use super::{DEFAULT_EPS, check_finite_nonneg, check_len, check_rows_dim};
use crate::surgery::error::{Result, SurgeryError};

/// The help term of the row projection: `coef · min(grad, 0)` is added to the row first.
#[derive(Clone, Copy, Debug)]
pub struct HelpTerm<'a, T> {
    /// `[rows, dim]`, row-major.
    pub grad: &'a [T],
    /// `λ / B` in DGS-Net.
    pub coef: f32,
}

/// Row-wise DGS projection: each row `x` becomes `x' − (x'·ĥ) ĥ` with
/// `x' = x + c·min(a, 0)` and `ĥ = relu(h) / (‖relu(h)‖₂ + eps)`.
#[derive(Clone, Copy, Debug)]
pub struct RowProjection<'a, T> {
    pub rows: usize,
    pub dim: usize,
    /// The harm gradient `h`, `[rows, dim]`, row-major.
    pub harm: &'a [T],
    pub help: Option<HelpTerm<'a, T>>,
    /// Added to the norm, not to its square.
    pub eps: f32,
}

impl<'a, T> RowProjection<'a, T> {
    pub fn new(rows: usize, dim: usize, harm: &'a [T]) -> Self {
        Self {
            rows,
            dim,
            harm,
            help: None,
            eps: DEFAULT_EPS,
        }
    }

    pub fn with_help(mut self, grad: &'a [T], coef: f32) -> Self {
        self.help = Some(HelpTerm { grad, coef });
        self
    }

    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
}

/// Optional per-row outputs of the row projection, each of length `rows`.
#[derive(Debug, Default)]
pub struct RowStatsMut<'a> {
    /// `x'·ĥ`, the coefficient that was removed.
    pub coef: Option<&'a mut [f32]>,
    /// `‖relu(h)‖₂` (without eps).
    pub harm_norm: Option<&'a mut [f32]>,
}

/// The sizes and scalars of a row-wise projection call, wherever its buffers live: the host and
/// device entry points both reduce their arguments to this and run [`check_row_lens`].
#[derive(Clone, Copy, Debug)]
pub struct RowLens {
    pub rows: usize,
    pub dim: usize,
    pub x: usize,
    pub harm: usize,
    /// Length of the help gradient and its coefficient.
    pub help: Option<(usize, f32)>,
    pub eps: f32,
    pub coef: Option<usize>,
    pub harm_norm: Option<usize>,
}

pub fn check_row_lens(op: &'static str, l: &RowLens) -> Result<()> {
    check_rows_dim(op, l.rows, l.dim)?;
    check_len(op, "x", l.x, l.rows, l.dim)?;
    check_len(op, "harm", l.harm, l.rows, l.dim)?;
    if let Some((len, coef)) = l.help {
        check_len(op, "help.grad", len, l.rows, l.dim)?;
        if !coef.is_finite() {
            return Err(SurgeryError::InvalidValue {
                op,
                arg: "help.coef",
                value: coef.to_string(),
                why: "it must be finite",
            });
        }
    }
    check_finite_nonneg(op, "eps", l.eps)?;
    check_per_row(op, "stats.coef", l.coef, l.rows)?;
    check_per_row(op, "stats.harm_norm", l.harm_norm, l.rows)
}

fn check_per_row(
    op: &'static str,
    arg: &'static str,
    len: Option<usize>,
    rows: usize,
) -> Result<()> {
    match len {
        Some(got) if got != rows => Err(SurgeryError::LengthMismatch {
            op,
            arg,
            expected: rows,
            got,
            why: "one value per row".into(),
        }),
        _ => Ok(()),
    }
}

/// Checks for [`RowProjection`] applied to an `x` of `x_len` elements.
pub fn check_row_projection<T>(
    op: &'static str,
    x_len: usize,
    p: &RowProjection<'_, T>,
    stats: &RowStatsMut<'_>,
) -> Result<()> {
    check_row_lens(
        op,
        &RowLens {
            rows: p.rows,
            dim: p.dim,
            x: x_len,
            harm: p.harm.len(),
            help: p.help.as_ref().map(|h| (h.grad.len(), h.coef)),
            eps: p.eps,
            coef: stats.coef.as_ref().map(|s| s.len()),
            harm_norm: stats.harm_norm.as_ref().map(|s| s.len()),
        },
    )
}
