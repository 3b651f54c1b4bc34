//! The CUDA side of the surgery ops (feature `cuda`): our fused row kernel on candle's stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::CudaContext;
use candle_core::{CudaStorage, Result};

use super::suppression::Rows;
use crate::surgery::cuda::{CudaSurgery, DeviceElement, DeviceRowProjection, DeviceRowStats};

/// A loaded kernel set and how many references to its context the set itself holds.
struct Loaded {
    surgery: Arc<CudaSurgery>,
    own_refs: usize,
}

impl Loaded {
    /// Nobody but the kernel set holds the context any more (its candle device is gone).
    fn orphaned(&self) -> bool {
        Arc::strong_count(self.surgery.context()) <= self.own_refs
    }
}

/// One loaded kernel set per live CUDA context (keyed by the context's address). The set holds
/// its context, so each lookup first drops the sets whose context nobody else holds: a context
/// stays alive past its last candle device only until the next lookup, never for the process.
fn surgery_for(ctx: &Arc<CudaContext>) -> Result<Arc<CudaSurgery>> {
    static LOADED: OnceLock<Mutex<HashMap<usize, Loaded>>> = OnceLock::new();
    let mut map = LOADED
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .map_err(|_| {
            candle_core::Error::Msg("dgs kernel cache poisoned by an earlier panic".into())
        })?;
    map.retain(|_, loaded| !loaded.orphaned());
    let key = Arc::as_ptr(ctx) as usize;
    if let Some(loaded) = map.get(&key) {
        return Ok(loaded.surgery.clone());
    }
    let before = Arc::strong_count(ctx);
    let surgery =
        Arc::new(CudaSurgery::with_context(ctx.clone()).map_err(candle_core::Error::wrap)?);
    let own_refs = Arc::strong_count(ctx) - before;
    map.insert(
        key,
        Loaded {
            surgery: surgery.clone(),
            own_refs,
        },
    );
    Ok(surgery)
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
