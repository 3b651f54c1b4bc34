//! Plain orthogonal projection of one vector off the span of others, on the Gram matrix.

use super::gram::Gram;
use super::span::SpanBasis;
use crate::surgery::args::check_finite_nonneg;
use crate::surgery::error::{Result, SurgeryError};

/// Combine weights that turn operand `target` into its component orthogonal to the span of the
/// operands in `directions` (near-dependent directions are skipped by the rule of
/// [`MultiProjection`](crate::surgery::MultiProjection), with the same `dep_tol`). Operands in
/// neither get weight 0.
pub fn orthogonal_projection(
    gram: &Gram,
    target: usize,
    directions: &[usize],
    dep_tol: f32,
) -> Result<Vec<f32>> {
    const OP: &str = "orthogonal_projection";
    gram.check_index(OP, "target", target)?;
    for &d in directions {
        gram.check_index(OP, "directions", d)?;
        if d == target {
            return Err(SurgeryError::InvalidValue {
                op: OP,
                arg: "directions",
                value: d.to_string(),
                why: "the target cannot also be a direction",
            });
        }
    }
    check_finite_nonneg(OP, "dep_tol", dep_tol)?;
    let g = |i, j| gram.get_f64(i, j);
    let basis = SpanBasis::new(&g, gram.k(), directions, f64::from(dep_tol));
    Ok(basis
        .remove_from(&g, gram.k(), target)
        .into_iter()
        .map(|w| w as f32)
        .collect())
}
