//! The CUDA side of the surgery ops (feature `cuda`): our fused row kernel on candle's stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::CudaContext;
use candle_core::{CudaStorage, DType, Result};

use super::suppression::Rows;
use crate::surgery::cuda::{CudaSurgery, DeviceElement, DeviceRowProjection, DeviceRowStats};

/// One loaded kernel set per CUDA context (keyed by the context's address).
fn surgery_for(ctx: &Arc<CudaContext>) -> Result<Arc<CudaSurgery>> {
    static LOADED: OnceLock<Mutex<HashMap<usize, Arc<CudaSurgery>>>> = OnceLock::new();
    let key = Arc::as_ptr(ctx) as usize;
    let mut map = LOADED
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .map_err(|_| {
            candle_core::Error::Msg("dgs kernel cache poisoned by an earlier panic".into())
        })?;
    if let Some(s) = map.get(&key) {
        return Ok(s.clone());
    }
    let s = Arc::new(CudaSurgery::with_context(ctx.clone()).map_err(candle_core::Error::wrap)?);
    map.insert(key, s.clone());
    Ok(s)
}

fn run<T: DeviceElement + candle_core::cuda_backend::CudaDType>(
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

pub(super) fn project(g: &CudaStorage, h: &CudaStorage, r: &Rows, eps: f32) -> Result<CudaStorage> {
    match (g.dtype(), h.dtype()) {
        (DType::F32, DType::F32) => run::<f32>(g, h, r, eps),
        (DType::F16, DType::F16) => run::<half::f16>(g, h, r, eps),
        (DType::BF16, DType::BF16) => run::<half::bf16>(g, h, r, eps),
        (a, b) => candle_core::bail!(
            "dgs-project-off-harm: expected f32, f16 or bf16 of one dtype, got {a:?} and {b:?}"
        ),
    }
}

pub(super) fn copy(x: &CudaStorage, (a, b): (usize, usize)) -> Result<CudaStorage> {
    fn dup<T: DeviceElement + candle_core::cuda_backend::CudaDType>(
        x: &CudaStorage,
        a: usize,
        b: usize,
    ) -> Result<CudaStorage> {
        let stream = x.device.cuda_stream();
        let out = stream
            .clone_dtod(&x.as_cuda_slice::<T>()?.slice(a..b))
            .map_err(candle_core::Error::wrap)?;
        Ok(CudaStorage::wrap_cuda_slice(out, x.device.clone()))
    }
    match x.dtype() {
        DType::F32 => dup::<f32>(x, a, b),
        DType::F16 => dup::<half::f16>(x, a, b),
        DType::BF16 => dup::<half::bf16>(x, a, b),
        d => candle_core::bail!("dgs-orthogonal-suppression: expected f32, f16 or bf16, got {d:?}"),
    }
}
