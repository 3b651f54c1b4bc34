//! Broadcasting a row or a column to a full matrix without candle's broadcasting kernels.
//!
//! candle's binary kernels index each element of a broadcast operand through 64-bit divisions
//! over the shape; on the GPU they ran ~8× below memory bandwidth and were the largest element-wise
//! cost of a training step (docs/perf.md). Here the operand is expanded by a product with a vector
//! of ones (one GEMM with an inner dimension of 1, `v · 1 = v` exactly; with candle's reduced
//! precision f32 GEMMs switched on, f32 values would round to TF32), after which the same-shape
//! kernels run at full speed.

use candle_core::{Result, Tensor};

/// A column `[N, 1]` repeated across `cols` columns: `[N, cols]`, contiguous.
pub(crate) fn repeat_cols(col: &Tensor, cols: usize) -> Result<Tensor> {
    let ones = Tensor::ones((1, cols), col.dtype(), col.device())?;
    col.contiguous()?.matmul(&ones)
}

/// A row (`[C]` or `[1, C]`) repeated down `rows` rows: `[rows, C]`, contiguous.
pub(crate) fn repeat_rows(row: &Tensor, rows: usize) -> Result<Tensor> {
    let ones = Tensor::ones((rows, 1), row.dtype(), row.device())?;
    ones.matmul(&row.contiguous()?.reshape((1, row.elem_count()))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn expansions_equal_broadcasting_exactly_even_for_awkward_values() {
        let v = [
            1.0f32,
            -3.0e38,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            7.25,
            -0.5,
        ];
        for dtype in [DType::F32, DType::F16] {
            let col = Tensor::new(&v[..], &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .and_then(|t| t.reshape((v.len(), 1)))
                .unwrap();
            let want = col
                .broadcast_as((v.len(), 5))
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let got = repeat_cols(&col, 5).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!(bits(&got), bits(&want), "{dtype:?} columns");
            let row = col.reshape(v.len()).unwrap();
            let want = row
                .broadcast_as((3, v.len()))
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let got = repeat_rows(&row, 3).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!(bits(&got), bits(&want), "{dtype:?} rows");
        }
        let nan = Tensor::new(&[[f32::NAN]], &Device::Cpu).unwrap();
        assert!(repeat_cols(&nan, 2).unwrap().to_vec2::<f32>().unwrap()[0][1].is_nan());
    }
}
