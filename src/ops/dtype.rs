//! The storage type of the surgery ops' candle arguments: one conversion from candle's dtype, so
//! each op dispatches through [`dispatch_dtype!`](crate::dispatch_dtype) and nowhere else.

use candle_core::{DType, Result};

use crate::surgery;

/// The surgery storage type of arguments that must share one of f32, f16 or bf16.
pub(super) fn element_dtype(op: &str, dtypes: &[DType]) -> Result<surgery::DType> {
    let one = |d: DType| match d {
        DType::F32 => Some(surgery::DType::F32),
        DType::F16 => Some(surgery::DType::F16),
        DType::BF16 => Some(surgery::DType::BF16),
        _ => None,
    };
    match dtypes.split_first() {
        Some((&first, rest)) if rest.iter().all(|&d| d == first) => one(first),
        _ => None,
    }
    .ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{op}: expected f32, f16 or bf16 tensors of one dtype, got {dtypes:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_or_unsupported_dtypes_are_refused() {
        assert_eq!(
            element_dtype("op", &[DType::BF16, DType::BF16]).ok(),
            Some(surgery::DType::BF16)
        );
        for bad in [&[DType::F32, DType::F16][..], &[DType::F64], &[]] {
            let err = element_dtype("op", bad).expect_err("refused").to_string();
            assert!(err.contains("op: expected f32, f16 or bf16"), "{err}");
        }
    }
}
