//! The layer on the device (feature `cuda-kernels`), launched through cudarc on a caller-given
//! stream: dropout with the Philox masks the CPU draws ([`BlockKernels::dropout`]), the row-wise
//! pieces — layer norm forward and backward, the MLP activation and its derivative
//! ([`BlockKernels::layer_norm`] and the rest in `rows`) — the matrix products through cuBLASLt
//! with cached plans ([`Gemms`]), and with the fused attention of `ops::attention::cuda` the
//! whole layer's [`forward`] and [`backward`] over cudarc buffers ([`LayerEngine`]). The candle
//! op runs them on CUDA tensors with feature `cuda` (see the module docs of [`super`]).

mod dropout;
mod gemm;
mod layer;
mod layer_backward;
mod rows;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

pub use dropout::DeviceDropout;
pub use gemm::{GemmOperands, GemmShape, Gemms, LeadingDims};
pub use layer::{DeviceAdapters, DeviceSaved, DeviceWeights, LayerCall, LayerEngine, forward};
pub use layer_backward::{DeviceGrads, backward};
pub use rows::DeviceLayerNorm;

use crate::surgery::SurgeryError;
use crate::surgery::cuda::CudaResult;
use crate::surgery::cuda::error::driver;
use crate::surgery::cuda::launch::check_stream_context;

/// The fatbins build.rs compiles from kernels/dropout.cu and kernels/block_rows.cu.
const DROPOUT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dropout.fatbin"));
const ROWS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/block_rows.fatbin"));

/// The layer's kernels loaded into one CUDA context. Each array holds one kernel per storage
/// type, indexed by `dtype_index`.
pub struct BlockKernels {
    ctx: Arc<CudaContext>,
    dropout: [CudaFunction; 3],
    layer_norm_forward: [CudaFunction; 3],
    layer_norm_backward: [CudaFunction; 3],
    activation_forward: [CudaFunction; 3],
    activation_backward: [CudaFunction; 3],
    bias_add: [CudaFunction; 3],
}

impl BlockKernels {
    /// Load the kernels into `ctx` (for example candle's, or a `CudaSurgery`'s).
    pub fn with_context(ctx: Arc<CudaContext>) -> CudaResult<Self> {
        const OP: &str = "load layer kernels";
        let load = |image: &[u8]| {
            ctx.load_module(Ptx::from_binary(image.to_vec()))
                .map_err(driver(OP))
        };
        let (dropout, rows) = (load(DROPOUT)?, load(ROWS)?);
        let per_dtype = |m: &Arc<CudaModule>, base: &str| -> CudaResult<[CudaFunction; 3]> {
            let f = |s: &str| m.load_function(&format!("{base}_{s}")).map_err(driver(OP));
            Ok([f("f32")?, f("f16")?, f("bf16")?])
        };
        Ok(Self {
            dropout: per_dtype(&dropout, "dropout")?,
            layer_norm_forward: per_dtype(&rows, "layer_norm_forward")?,
            layer_norm_backward: per_dtype(&rows, "layer_norm_backward")?,
            activation_forward: per_dtype(&rows, "activation_forward")?,
            activation_backward: per_dtype(&rows, "activation_backward")?,
            bias_add: per_dtype(&rows, "bias_add")?,
            ctx,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream must belong to this handle's context.
    fn check_stream(&self, op: &'static str, stream: &CudaStream) -> CudaResult<()> {
        check_stream_context(op, stream, &self.ctx)
    }
}

/// An argument has exactly the length the others imply.
pub(super) fn check_len(
    op: &'static str,
    arg: &'static str,
    expected: usize,
    got: usize,
) -> CudaResult<()> {
    if expected != got {
        return Err(SurgeryError::LengthMismatch {
            op,
            arg,
            expected,
            got,
            why: "the sizes the other arguments give".into(),
        }
        .into());
    }
    Ok(())
}
