//! The arguments of each surgery op, and the checks every backend runs on them before touching
//! memory. Backends share these checks so the CPU path, the float64 reference and the device
//! paths reject exactly the same inputs with exactly the same messages.

use super::error::{Result, SurgeryError};
use super::transform::Transform;

/// Most directions the K-direction row projection takes per row.
pub const MAX_DIRECTIONS: usize = crate::surgery::contract::MAX_DIRECTIONS;
/// Most operands (vectors) a Gram or combine call takes.
pub const MAX_OPERANDS: usize = crate::surgery::contract::MAX_OPERANDS;
/// eps added to `‖relu(h)‖` before dividing, as in the official hook.
pub const DEFAULT_EPS: f32 = 1e-6;
/// Relative size below which a direction counts as lying in the span of the earlier ones; see
/// [`MultiProjection::dep_tol`].
pub const DEFAULT_DEP_TOL: f32 = 1e-3;

/// A list of tensors that together form one vector, the way a model's parameter gradients come.
pub type TensorList<'a, T> = &'a [&'a [T]];

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

/// K-direction row projection: each row of `x` loses its component in the span of the rows of
/// `directions[0..K]` (after `transform`), computed exactly by orthonormalising the directions.
///
/// Near-dependent directions: directions are taken in order; a direction whose component outside
/// the span of the directions kept so far is at most `dep_tol` times its own norm (this includes a
/// zero direction) is skipped for that row, because its normalised remainder would be rounding
/// noise magnified by `1/dep_tol`. The default, 1e-3, sits above the relative rounding of f16
/// inputs (≈4.9e-4), so directions that are dependent before rounding stay dependent after it.
#[derive(Clone, Copy, Debug)]
pub struct MultiProjection<'a, T> {
    pub rows: usize,
    pub dim: usize,
    /// K arrays, each `[rows, dim]` row-major; K ≤ [`MAX_DIRECTIONS`].
    pub directions: &'a [&'a [T]],
    pub transform: Transform,
    pub dep_tol: f32,
}

impl<'a, T> MultiProjection<'a, T> {
    pub fn new(rows: usize, dim: usize, directions: &'a [&'a [T]]) -> Self {
        Self {
            rows,
            dim,
            directions,
            transform: Transform::Identity,
            dep_tol: DEFAULT_DEP_TOL,
        }
    }

    pub fn with_transform(mut self, transform: Transform) -> Self {
        self.transform = transform;
        self
    }

    pub fn with_dep_tol(mut self, dep_tol: f32) -> Self {
        self.dep_tol = dep_tol;
        self
    }
}

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

fn check_len(
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

fn check_rows_dim(op: &'static str, rows: usize, dim: usize) -> Result<()> {
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

/// The sizes of a K-direction projection call, wherever its buffers live.
#[derive(Clone, Debug)]
pub struct MultiLens {
    pub rows: usize,
    pub dim: usize,
    pub x: usize,
    pub directions: Vec<usize>,
    pub dep_tol: f32,
    pub kept: Option<usize>,
}

pub fn check_multi_lens(op: &'static str, l: &MultiLens) -> Result<()> {
    check_rows_dim(op, l.rows, l.dim)?;
    if l.directions.len() > MAX_DIRECTIONS {
        return Err(SurgeryError::TooMany {
            op,
            what: "directions",
            got: l.directions.len(),
            max: MAX_DIRECTIONS,
        });
    }
    check_len(op, "x", l.x, l.rows, l.dim)?;
    for &d in &l.directions {
        check_len(op, "directions[k]", d, l.rows, l.dim)?;
    }
    check_finite_nonneg(op, "dep_tol", l.dep_tol)?;
    match l.kept {
        Some(got) if got != l.rows => Err(SurgeryError::LengthMismatch {
            op,
            arg: "kept",
            expected: l.rows,
            got,
            why: "one count per row".into(),
        }),
        _ => Ok(()),
    }
}

/// Checks for [`MultiProjection`] applied to an `x` of `x_len` elements.
pub fn check_multi_projection<T>(
    op: &'static str,
    x_len: usize,
    p: &MultiProjection<'_, T>,
    kept_len: Option<usize>,
) -> Result<()> {
    check_multi_lens(
        op,
        &MultiLens {
            rows: p.rows,
            dim: p.dim,
            x: x_len,
            directions: p.directions.iter().map(|d| d.len()).collect(),
            dep_tol: p.dep_tol,
            kept: kept_len,
        },
    )
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
