//! The CUDA side of the surgery ops (feature `cuda`): our fused row kernel on candle's stream.

use std::sync::Arc;

use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::CudaContext;
use candle_core::{CudaStorage, Result};

use super::device_cache::DeviceCache;
use super::suppression::Rows;
use crate::surgery::cuda::{CudaSurgery, DeviceElement, DeviceRowProjection, DeviceRowStats};

/// One loaded kernel set per live CUDA context.
pub(crate) fn surgery_for(ctx: &Arc<CudaContext>) -> Result<Arc<CudaSurgery>> {
    static LOADED: DeviceCache<CudaContext, CudaSurgery> = DeviceCache::new();
    LOADED.get(ctx, || {
        CudaSurgery::with_context(ctx.clone()).map_err(candle_core::Error::wrap)
    })
}

/// The row projection of `g`'s rows off `h`'s, into a new buffer.
pub(super) fn project<T: DeviceElement + CudaDType>(
    g: &CudaStorage,
    h: &CudaStorage,
    r: &Rows,
    eps: f32,
) -> Result<CudaStorage> {
    let ((a1, b1), (a2, b2), rows, dim) = (r.grad, r.harm, r.rows, r.dim);
    let stream = g.device.cuda_stream();
    let gpu = surgery_for(stream.context())?;
    let gs = g.as_cuda_slice::<T>()?.slice(a1..b1);
    let hs = h.as_cuda_slice::<T>()?.slice(a2..b2);
    let mut out = stream.clone_dtod(&gs).map_err(candle_core::Error::wrap)?;
    let p = DeviceRowProjection::new(rows, dim, hs).with_eps(eps);
    gpu.dgs_rows(
        &stream,
        &mut out.slice_mut(..),
        &p,
        DeviceRowStats::default(),
    )
    .map_err(candle_core::Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(out, g.device.clone()))
}

/// Elements `a..b` of `x` into a new buffer.
pub(super) fn copy<T: DeviceElement + CudaDType>(
    x: &CudaStorage,
    (a, b): (usize, usize),
) -> Result<CudaStorage> {
    let stream = x.device.cuda_stream();
    let out = stream
        .clone_dtod(&x.as_cuda_slice::<T>()?.slice(a..b))
        .map_err(candle_core::Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(out, x.device.clone()))
}
