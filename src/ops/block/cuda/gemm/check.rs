//! The products' argument checks: every length, stride and flag against the shape, before any
//! call into cuBLASLt.

use super::{GemmOperands, GemmShape};
use crate::surgery::SurgeryError;
use crate::surgery::cuda::error::invalid;
use crate::surgery::cuda::{CudaResult, CudaSurgeryError, DeviceElement};

/// Lengths and strides of every operand against the shape, before any call into cuBLASLt.
pub(super) fn check_operands<T: DeviceElement>(
    op: &'static str,
    shape: &GemmShape,
    x: &GemmOperands<'_, T>,
    out_len: usize,
) -> CudaResult<()> {
    let GemmShape { m, n, k, .. } = *shape;
    if k == 0 && m * n > 0 {
        return Err(invalid(
            op,
            "k",
            "0".into(),
            "the contraction must have at least one term",
        ));
    }
    if x.accumulate && x.residual.is_some() {
        return Err(invalid(
            op,
            "accumulate",
            "true".into(),
            "the output accumulates in place or adds a residual, not both",
        ));
    }
    if !x.alpha.is_finite() {
        return Err(invalid(
            op,
            "alpha",
            x.alpha.to_string(),
            "it must be finite",
        ));
    }
    let fits_i32 = |v: usize| i64::try_from(v).is_ok_and(|v| v <= i64::from(i32::MAX));
    let ld = shape.leading_dims();
    for (what, v) in [
        ("m", m),
        ("n", n),
        ("k", k),
        ("lda", ld.a),
        ("ldb", ld.b),
        ("ldd", ld.d),
    ] {
        if !fits_i32(v) {
            return Err(CudaSurgeryError::TooLarge {
                op,
                what,
                got: v,
                max: i32::MAX as usize,
            });
        }
    }
    let [a, b, d] = shape.stored();
    let mut operands = vec![
        ("a", a, ld.a, x.a.len()),
        ("b", b, ld.b, x.b.len()),
        ("out", d, ld.d, out_len),
    ];
    if let Some(c) = x.residual {
        operands.push(("residual", d, ld.d, c.len()));
    }
    for (arg, (rows, cols), ld, got) in operands {
        if ld < cols {
            return Err(invalid(
                op,
                arg,
                format!("row stride {ld} for rows of {cols}"),
                "a row stride must cover its row",
            ));
        }
        let needed = if rows * cols == 0 {
            0
        } else {
            (rows - 1) * ld + cols
        };
        // Packed operands are exactly their size; a strided block may sit in a longer buffer.
        let fits = if shape.ld.is_none() {
            got == needed
        } else {
            got >= needed
        };
        if !fits {
            return Err(SurgeryError::LengthMismatch {
                op,
                arg,
                expected: needed,
                got,
                why: format!("{shape:?}"),
            }
            .into());
        }
    }
    if x.bias.is_some() && ld.d != n {
        // The fallback bias kernel adds to packed rows only.
        return Err(invalid(
            op,
            "bias",
            format!("output row stride {}", ld.d),
            "a bias needs a packed output",
        ));
    }
    if let Some(bias) = x.bias
        && bias.len() != n
    {
        return Err(SurgeryError::LengthMismatch {
            op,
            arg: "bias",
            expected: n,
            got: bias.len(),
            why: format!("{shape:?}"),
        }
        .into());
    }
    Ok(())
}
