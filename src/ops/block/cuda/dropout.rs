//! Dropout on the device (`kernels/dropout.cu`): the same keep decisions as [`MaskStream`], bit
//! for bit, so a CUDA step can be checked against a CPU step with dropout on.

use std::sync::Arc;

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, PushKernelArg};

use super::{BlockKernels, check_len};
use crate::ops::block::philox::{DropoutKey, MaskStream};
use crate::surgery::SurgeryError;
use crate::surgery::contract;
use crate::surgery::cuda::device::dtype_index;
use crate::surgery::cuda::error::driver;
use crate::surgery::cuda::launch::{kernel_args, launch_config};
use crate::surgery::cuda::{CudaResult, CudaSurgeryError, DeviceElement};

/// Which mask to apply: the stream of one projection in one layer, and where `x` starts in it.
#[derive(Clone, Copy, Debug)]
pub struct DeviceDropout {
    pub key: DropoutKey,
    pub layer: usize,
    pub projection: usize,
    /// The drop probability, in `[0, 1)`.
    pub p: f32,
    /// The stream index of the first element (row-major over the projection's `[tokens, C]`).
    pub start: u64,
}

/// `DropoutArgs` of kernels/dropout.cu, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct DropoutArgs {
    x: u64,
    out: u64,
    n: i64,
    start: u64,
    key_lo: u32,
    key_hi: u32,
    layer_projection: u32,
    step: u32,
    threshold: u32,
    kept_scale: f32,
    /// 0: `out = result`; 1: `out += result`.
    accumulate: u32,
    reserved: u32,
}

kernel_args!(DropoutArgs, contract::DROPOUT_ARGS_BYTES);

/// Threads per block, and most blocks per launch (the kernel loops over further elements).
const THREADS: u32 = 256;
const MAX_BLOCKS: usize = 65_536;

impl BlockKernels {
    /// `out = x · 1/(1 − p)` where the mask keeps an element, 0 where it drops it. One launch
    /// on `stream`, no host synchronisation.
    pub fn dropout<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        out: &mut CudaViewMut<'_, T>,
        d: &DeviceDropout,
    ) -> CudaResult<()> {
        self.launch_dropout("cuda dropout", stream, x, out, d, false)
    }

    /// `out += x · 1/(1 − p)` where the mask keeps an element; `out` unchanged where it drops
    /// it (the sum is rounded once to the storage type). One launch, no host synchronisation.
    pub fn dropout_add<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        out: &mut CudaViewMut<'_, T>,
        d: &DeviceDropout,
    ) -> CudaResult<()> {
        self.launch_dropout("cuda dropout_add", stream, x, out, d, true)
    }

    fn launch_dropout<T: DeviceElement>(
        &self,
        op: &'static str,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        out: &mut CudaViewMut<'_, T>,
        d: &DeviceDropout,
        accumulate: bool,
    ) -> CudaResult<()> {
        check(op, self, stream, x.len(), out.len(), d)?;
        if x.is_empty() {
            return Ok(());
        }
        let stream_of = MaskStream::new(d.key, d.layer, d.projection, d.p);
        let (x_ptr, _x_guard) = x.device_ptr(stream);
        let (out_ptr, _out_guard) = out.device_ptr_mut(stream);
        let args = DropoutArgs {
            x: x_ptr,
            out: out_ptr,
            n: x.len() as i64,
            start: d.start,
            key_lo: d.key.seed as u32,
            key_hi: (d.key.seed >> 32) as u32,
            layer_projection: stream_of.layer_projection(),
            step: d.key.step as u32,
            threshold: stream_of.threshold(),
            kept_scale: 1.0 / (1.0 - d.p),
            accumulate: u32::from(accumulate),
            reserved: 0,
        };
        // The stream quads x spans: at most one more than its own length needs.
        let quads = x.len().div_ceil(4) + 1;
        let cfg = launch_config(quads.div_ceil(THREADS as usize).min(MAX_BLOCKS), THREADS);
        let mut launch = stream.launch_builder(&self.dropout[dtype_index(T::DTYPE)]);
        launch.arg(&args);
        // SAFETY: `dropout_<dtype>` takes one `DropoutArgs`; x and out hold n elements each
        // (checked) and are distinct buffers (one borrowed shared, the other exclusively).
        unsafe { launch.launch(cfg) }.map_err(driver(op))?;
        Ok(())
    }
}

fn check(
    op: &'static str,
    kernels: &BlockKernels,
    stream: &CudaStream,
    x_len: usize,
    out_len: usize,
    d: &DeviceDropout,
) -> CudaResult<()> {
    kernels.check_stream(op, stream)?;
    check_len(op, "out", x_len, out_len)?;
    if !(0.0..1.0).contains(&d.p) {
        return Err(SurgeryError::InvalidValue {
            op,
            arg: "p",
            value: d.p.to_string(),
            why: "the drop probability must be in [0, 1)",
        }
        .into());
    }
    if d.start.checked_add(x_len as u64).is_none() {
        return Err(CudaSurgeryError::TooLarge {
            op,
            what: "start + length",
            got: x_len,
            max: (u64::MAX - d.start) as usize,
        });
    }
    Ok(())
}
