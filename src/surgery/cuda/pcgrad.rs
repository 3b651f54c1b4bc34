//! PCGrad on the device: Gram pass, the K×K solve in one thread (`kernels/pcgrad.cu`), combine
//! pass, with no host round trip.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, PushKernelArg};

use super::device::{CudaSurgery, DeviceElement};
use super::error::{CudaResult, driver};
use super::launch::launch_config;
use super::tensor_list::{OutputList, TensorLists};
use crate::surgery::solve::Reduction;
use crate::surgery::transform::Transform;

/// Device buffers PCGrad works in: the Gram matrix (K×K f32) and the combine weights (K f32).
/// Allocate once and reuse every step.
pub struct PcGradScratch {
    pub gram: CudaSlice<f32>,
    pub weights: CudaSlice<f32>,
}

impl PcGradScratch {
    pub fn new(stream: &Arc<CudaStream>, k: usize) -> CudaResult<Self> {
        const OP: &str = "cuda PcGradScratch::new";
        Ok(Self {
            gram: stream
                .alloc_zeros::<f32>((k * k).max(1))
                .map_err(driver(OP))?,
            weights: stream.alloc_zeros::<f32>(k.max(1)).map_err(driver(OP))?,
        })
    }
}

impl CudaSurgery {
    /// PCGrad over the K task gradients in `tasks`, merged into `out`: Gram pass, the solve on
    /// the device (one thread, same arithmetic and visiting order as
    /// [`solve::pcgrad`](crate::surgery::solve::pcgrad)), combine pass. Three kernels and no host
    /// round trip, so the sequence can be captured in a CUDA graph.
    pub fn pcgrad<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        tasks: &mut TensorLists<'_, T>,
        out: &mut OutputList<'_, T>,
        seed: u64,
        reduction: Reduction,
        scratch: &mut PcGradScratch,
    ) -> CudaResult<()> {
        const OP: &str = "cuda pcgrad";
        let k = tasks.k;
        if scratch.gram.len() < (k * k).max(1) || scratch.weights.len() < k.max(1) {
            return Err(crate::surgery::SurgeryError::LengthMismatch {
                op: OP,
                arg: "scratch",
                expected: k * k,
                got: scratch.gram.len(),
                why: "PcGradScratch::new(stream, K) for K tasks".into(),
            }
            .into());
        }
        let identity = vec![Transform::Identity; k];
        self.gram(
            stream,
            tasks,
            &identity,
            &mut scratch.gram.slice_mut(..k * k),
        )?;
        {
            let (g, _g_sync) = scratch.gram.device_ptr(stream);
            let (w, _w_sync) = scratch.weights.device_ptr_mut(stream);
            let (k_i, mean) = (k as i32, i32::from(reduction == Reduction::Mean));
            let mut launch = stream.launch_builder(&self.k.pcgrad_solve);
            launch.arg(&g).arg(&k_i).arg(&seed).arg(&mean).arg(&w);
            let cfg = launch_config(1, 32);
            // SAFETY: matches `pcgrad_solve` (kernels/pcgrad.cu); gram holds K×K floats and
            // weights K floats (checked above), K ≤ 8 (TensorLists checks the operand count).
            unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        }
        self.combine(
            stream,
            out,
            None,
            tasks,
            &identity,
            &scratch.weights.slice(..k),
        )
    }
}
