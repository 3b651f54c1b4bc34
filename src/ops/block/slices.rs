//! f32 views of candle's CPU storage for the layer op: borrowed when the tensor is f32, widened
//! once when it is f16 or bf16; and the way back.

use std::borrow::Cow;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

/// The elements of a contiguous CPU tensor as f32.
pub fn cpu_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<Cow<'a, [f32]>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("layer op: operands must be contiguous")
    };
    Ok(match storage {
        CpuStorage::F32(v) => Cow::Borrowed(&v[start..end]),
        CpuStorage::F16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
        CpuStorage::BF16(v) => Cow::Owned(v[start..end].iter().map(|x| x.to_f32()).collect()),
        s => candle_core::bail!("layer op: unsupported dtype {:?}", s.dtype()),
    })
}

/// Calls `f` with each tensor's elements as f32 (all must be on the CPU).
pub fn with_cpu_f32<R>(
    tensors: &[&Tensor],
    f: impl FnOnce(&[Cow<'_, [f32]>]) -> Result<R>,
) -> Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(s) => cpu_f32(s, layout),
            _ => candle_core::bail!("layer op: this device is not supported yet (CPU only)"),
        })
        .collect::<Result<Vec<_>>>()?;
    f(&slices)
}

/// f32 results as CPU storage of `dtype` (rounded once).
pub fn to_storage(v: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::F16 => CpuStorage::F16(v.into_iter().map(half::f16::from_f32).collect()),
        DType::BF16 => CpuStorage::BF16(v.into_iter().map(half::bf16::from_f32).collect()),
        d => candle_core::bail!("layer op: unsupported dtype {d:?}"),
    })
}

/// f32 results as a tensor shaped, typed and placed like `like`.
pub fn to_tensor(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, like.shape(), like.device())?.to_dtype(like.dtype())
}
