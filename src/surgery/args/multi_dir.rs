//! Arguments and checks of the K-direction row projection.

use super::{DEFAULT_DEP_TOL, MAX_DIRECTIONS, check_finite_nonneg, check_len, check_rows_dim};
use crate::surgery::error::{Result, SurgeryError};
use crate::surgery::transform::Transform;

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
