//! The layer op on candle's CUDA backend (feature `cuda`): the device forward and backward of
//! [`cuda`](super::cuda) on candle's stream, no host synchronisation. f16 and bf16; the kept
//! buffers wait in the op until its backward takes them. A pooled call computes every row and
//! gathers the pooled ones (its backward scatters the gradient back into zeros): on the device
//! the saving of computing one row is small next to the rest of a tower.

use std::any::Any;
use std::sync::{Arc, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, CudaView};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, Device, Layout, Result, Shape, Storage, Tensor};

use super::cuda::{
    DeviceAdapters, DeviceGrads, DeviceSaved, DeviceWeights, LayerCall, LayerEngine, backward,
    forward,
};
use super::outputs::Outputs;
use super::{BlockOp, Dims};
use crate::ops::device_cache::DeviceCache;
use crate::ops::dtype::element_dtype;
use crate::surgery::cuda::DeviceElement;

/// What a training forward keeps on the device: a `DeviceSaved<T>` of the call's dtype.
pub(super) type DeviceKept = Box<dyn Any + Send>;

/// The backward's results: the input gradient (when wanted) and the adapters' `(dA, dB)`.
pub(super) type Gradients = (Option<Tensor>, Option<(Tensor, Tensor)>);

/// One engine (kernels, cuBLASLt and its plans) per live stream.
fn engine_for(stream: &Arc<CudaStream>) -> Result<Arc<LayerEngine>> {
    static ENGINES: DeviceCache<CudaStream, LayerEngine> = DeviceCache::new();
    ENGINES.get(stream, || {
        LayerEngine::new(stream.clone()).map_err(candle_core::Error::wrap)
    })
}

fn wrap<E: std::error::Error + Send + Sync + 'static>(e: E) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The elements of a contiguous CUDA operand.
fn view<'a, T: CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("layer op: operands must be contiguous")
    };
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

/// Calls `f` with the CUDA elements of each tensor.
fn with_views<T: CudaDType, R>(
    tensors: &[&Tensor],
    f: impl FnOnce(Vec<CudaView<'_, T>>) -> Result<R>,
) -> Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let views = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cuda(s) => view::<T>(s, layout),
            _ => candle_core::bail!("layer op: every operand must be on the CUDA device"),
        })
        .collect::<Result<Vec<_>>>()?;
    f(views)
}

/// The twelve weight views in [`LayerWeights`](super::LayerWeights)' order.
fn device_weights<'a, T>(views: Vec<CudaView<'a, T>>) -> Result<DeviceWeights<'a, T>> {
    let mut it = views.into_iter();
    let mut pair = || match (it.next(), it.next()) {
        (Some(w), Some(b)) => Ok((w, b)),
        _ => Err(candle_core::Error::Msg("layer op: twelve weights".into())),
    };
    Ok(DeviceWeights {
        ln1: pair()?,
        qkv: pair()?,
        out: pair()?,
        ln2: pair()?,
        fc1: pair()?,
        fc2: pair()?,
    })
}

impl BlockOp {
    fn layer_call(&self, d: Dims) -> LayerCall {
        LayerCall { cfg: self.cfg, d }
    }

    fn device_adapters<'a, T>(
        &self,
        a: CudaView<'a, T>,
        b: CudaView<'a, T>,
    ) -> DeviceAdapters<'a, T> {
        DeviceAdapters {
            a,
            b,
            rank: self.rank,
            scale: self.scale,
            dropout: self.dropout,
        }
    }

    /// The forward on CUDA storage, with the packed adapters `(a, b)` when given.
    pub(super) fn forward_cuda(
        &self,
        x: (&CudaStorage, &Layout),
        lora: Option<[(&CudaStorage, &Layout); 2]>,
    ) -> Result<(CudaStorage, Shape)> {
        let d = self.weights.dims(x.1.shape(), self.cfg.heads)?;
        let mut dtypes = vec![x.0.dtype()];
        dtypes.extend(lora.iter().flatten().map(|(s, _)| s.dtype()));
        dtypes.extend(self.weights.all().iter().map(|t| t.dtype()));
        let dtype = element_dtype("layer op (CUDA)", &dtypes)?;
        let out = crate::dispatch_dtype!(dtype, T => self.forward_typed::<T>(d, x, lora)?);
        Ok((out, self.out_shape(d)))
    }

    fn forward_typed<T: DeviceElement + CudaDType>(
        &self,
        d: Dims,
        (x, xl): (&CudaStorage, &Layout),
        lora: Option<[(&CudaStorage, &Layout); 2]>,
    ) -> Result<CudaStorage> {
        let stream = x.device.cuda_stream();
        let engine = engine_for(&stream)?;
        let input = view::<T>(x, xl)?;
        let adapters = match lora {
            Some([(a, al), (b, bl)]) => {
                Some(self.device_adapters(view::<T>(a, al)?, view::<T>(b, bl)?))
            }
            None => None,
        };
        let (out, saved) = with_views::<T, _>(&self.weights.all(), |w| {
            let w = device_weights(w)?;
            let call = self.layer_call(d);
            forward(&engine, &call, &input, &w, adapters.as_ref(), self.keep).map_err(wrap)
        })?;
        *self
            .device_saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = saved.map(|s| Box::new(s) as DeviceKept);
        let out = match self.outputs() {
            Outputs::All => out,
            pooled => gather_rows(&stream, &out, pooled.token_rows(d.batch, d.seq), d.channels)?,
        };
        Ok(CudaStorage::wrap_cuda_slice(out, x.device.clone()))
    }

    /// The backward on CUDA tensors: the input gradient (when wanted) and the adapters'.
    pub(super) fn backward_cuda(
        &self,
        x: &Tensor,
        lora: Option<(&Tensor, &Tensor)>,
        grad: &Tensor,
    ) -> Result<Gradients> {
        let d = self.weights.dims(x.shape(), self.cfg.heads)?;
        let dtype = element_dtype("layer op (CUDA)", &[x.dtype(), grad.dtype()])?;
        crate::dispatch_dtype!(dtype, T => self.backward_typed::<T>(d, x, lora, grad))
    }

    fn backward_typed<T: DeviceElement + CudaDType>(
        &self,
        d: Dims,
        x: &Tensor,
        lora: Option<(&Tensor, &Tensor)>,
        grad: &Tensor,
    ) -> Result<Gradients> {
        let Device::Cuda(device) = x.device() else {
            candle_core::bail!("layer op: the CUDA backward needs CUDA tensors")
        };
        let stream = device.cuda_stream();
        let engine = engine_for(&stream)?;
        let taken = self
            .device_saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let grad = grad.contiguous()?;
        let mut operands = vec![x, &grad];
        operands.extend(lora.into_iter().flat_map(|(a, b)| [a, b]));
        let grads: DeviceGrads<T> = with_views::<T, _>(&operands, |mut t| {
            let adapters = match t.len() {
                4 => {
                    let (b, a) = (t.remove(3), t.remove(2));
                    Some(self.device_adapters(a, b))
                }
                _ => None,
            };
            let (x, dy) = (&t[0], &t[1]);
            with_views::<T, _>(&self.weights.all(), |w| {
                let w = device_weights(w)?;
                let call = self.layer_call(d);
                let saved = match taken.map(|k| k.downcast::<DeviceSaved<T>>()) {
                    Some(Ok(saved)) => *saved,
                    Some(Err(_)) => candle_core::bail!("layer op: kept buffers of another dtype"),
                    // A second backward through the same graph: recompute what was kept.
                    None => forward(&engine, &call, x, &w, adapters.as_ref(), true)
                        .map_err(wrap)?
                        .1
                        .ok_or_else(|| {
                            candle_core::Error::Msg("layer op: the forward kept nothing".into())
                        })?,
                };
                let (full, full_view);
                let dy = match self.outputs() {
                    Outputs::All => dy,
                    pooled => {
                        let rows = pooled.token_rows(d.batch, d.seq);
                        full = scatter_rows(&stream, dy, rows, d)?;
                        full_view = full.slice(..);
                        &full_view
                    }
                };
                backward(
                    &engine,
                    &call,
                    x,
                    &w,
                    adapters.as_ref(),
                    saved,
                    dy,
                    self.want_dx,
                )
                .map_err(wrap)
            })
        })?;
        let tensor = |slice: CudaSlice<T>, like: &Tensor| {
            let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
            Tensor::from_storage(storage, like.shape().clone(), BackpropOp::none(), false)
        };
        let dx = grads.dx.map(|dx| tensor(dx, x));
        let adapters = match (grads.adapters, lora) {
            (Some((da, db)), Some((a, b))) => Some((tensor(da, a), tensor(db, b))),
            _ => None,
        };
        Ok((dx, adapters))
    }
}

/// Rows `rows` of `[N, C]` into a new `[rows.len(), C]`.
fn gather_rows<T: DeviceElement + CudaDType>(
    stream: &Arc<CudaStream>,
    all: &CudaSlice<T>,
    rows: Vec<usize>,
    c: usize,
) -> Result<CudaSlice<T>> {
    // SAFETY: each of the rows.len() rows is copied into below.
    let mut out = unsafe { stream.alloc::<T>(rows.len() * c) }.map_err(wrap)?;
    for (k, row) in rows.into_iter().enumerate() {
        let src = all.slice(row * c..(row + 1) * c);
        stream
            .memcpy_dtod(&src, &mut out.slice_mut(k * c..(k + 1) * c))
            .map_err(wrap)?;
    }
    Ok(out)
}

/// The gradient at rows `rows` (`[rows.len(), C]`) placed into zeros of `[N, C]`.
fn scatter_rows<T: DeviceElement + CudaDType>(
    stream: &Arc<CudaStream>,
    at_rows: &CudaView<'_, T>,
    rows: Vec<usize>,
    d: Dims,
) -> Result<CudaSlice<T>> {
    let c = d.channels;
    let mut full = stream.alloc_zeros::<T>(d.tokens() * c).map_err(wrap)?;
    for (k, row) in rows.into_iter().enumerate() {
        let src = at_rows.slice(k * c..(k + 1) * c);
        stream
            .memcpy_dtod(&src, &mut full.slice_mut(row * c..(row + 1) * c))
            .map_err(wrap)?;
    }
    Ok(full)
}
