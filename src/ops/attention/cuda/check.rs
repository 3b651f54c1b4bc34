//! The attention launches' argument checks: layouts, alignment, extents, overlap and the per-row
//! statistics' lengths, before any `unsafe`.

use super::{AttentionShape, HEAD_DIM, HeadLayout};
use crate::surgery::SurgeryError;
use crate::surgery::cuda::CudaResult;
use crate::surgery::cuda::error::invalid;

/// The operand's strides allow 16-byte loads, its address is 16-byte aligned, and its last
/// element under the layout lies inside the buffer.
pub(super) fn check_operand(
    op: &'static str,
    arg: &'static str,
    shape: &AttentionShape,
    l: HeadLayout,
    len: usize,
    address: u64,
) -> CudaResult<()> {
    let strides = [l.batch_stride, l.head_stride, l.row_stride];
    if strides.iter().any(|s| s % 8 != 0) || l.row_stride < HEAD_DIM {
        return Err(invalid(
            op,
            arg,
            format!("{l:?}"),
            "strides must be multiples of 8 elements, rows at least 64 apart",
        ));
    }
    if address % 16 != 0 {
        return Err(invalid(
            op,
            arg,
            format!("{address:#x}"),
            "the buffer must be 16-byte aligned",
        ));
    }
    if shape.batch * shape.heads * shape.t == 0 {
        return Ok(());
    }
    let extent = [
        (shape.batch - 1, l.batch_stride),
        (shape.heads - 1, l.head_stride),
        (shape.t - 1, l.row_stride),
    ]
    .iter()
    .try_fold(HEAD_DIM, |acc, &(n, s)| {
        n.checked_mul(s).and_then(|x| x.checked_add(acc))
    });
    match extent {
        Some(need) if need <= len && need <= i64::MAX as usize => Ok(()),
        _ => Err(SurgeryError::LengthMismatch {
            op,
            arg,
            expected: extent.unwrap_or(usize::MAX),
            got: len,
            why: format!(
                "[{}, {}, {}, 64] under {l:?}",
                shape.batch, shape.heads, shape.t
            ),
        }
        .into()),
    }
}

/// An output's rows do not overlap one another (so each element has one writer): ordered by
/// stride, each dimension steps past everything the dimensions inside it span.
pub(super) fn check_disjoint(
    op: &'static str,
    arg: &'static str,
    shape: &AttentionShape,
    l: HeadLayout,
) -> CudaResult<()> {
    let mut dims = [
        (l.row_stride, shape.t),
        (l.head_stride, shape.heads),
        (l.batch_stride, shape.batch),
    ];
    dims.sort_unstable();
    let mut span = HEAD_DIM;
    for (stride, count) in dims {
        if count <= 1 {
            continue;
        }
        if stride < span {
            return Err(invalid(
                op,
                arg,
                format!("{l:?}"),
                "an output's rows must not overlap",
            ));
        }
        span += stride * (count - 1);
    }
    Ok(())
}

/// A per-row statistic (`[batch, heads, t]` f32) has exactly one value per row.
pub(super) fn check_stats(
    op: &'static str,
    arg: &'static str,
    shape: &AttentionShape,
    len: usize,
) -> CudaResult<()> {
    let rows = shape.batch * shape.heads * shape.t;
    if len != rows {
        return Err(SurgeryError::LengthMismatch {
            op,
            arg,
            expected: rows,
            got: len,
            why: "one value per (image, head, row)".into(),
        }
        .into());
    }
    Ok(())
}
