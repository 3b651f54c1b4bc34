//! The layer's CUDA kernels (feature `cuda-kernels`), launched through cudarc on a caller-given
//! stream. So far: dropout with the Philox masks the CPU draws ([`BlockKernels::dropout`]). The
//! layer op itself still runs on the CPU; on CUDA the model uses candle's tensor ops until the
//! rest of the layer's kernels land (see the module docs of [`super`]).

mod dropout;

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

pub use dropout::DeviceDropout;

use crate::surgery::cuda::CudaResult;
use crate::surgery::cuda::error::driver;

/// The fatbin build.rs compiles from kernels/dropout.cu.
const DROPOUT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dropout.fatbin"));

/// The layer's kernels loaded into one CUDA context.
pub struct BlockKernels {
    ctx: Arc<CudaContext>,
    /// Per storage type, indexed by `dtype_index`.
    dropout: [CudaFunction; 3],
}

impl BlockKernels {
    /// Load the kernels into `ctx` (for example candle's, or a `CudaSurgery`'s).
    pub fn with_context(ctx: Arc<CudaContext>) -> CudaResult<Self> {
        const OP: &str = "load layer kernels";
        let module = ctx
            .load_module(Ptx::from_binary(DROPOUT.to_vec()))
            .map_err(driver(OP))?;
        let f = |m: &Arc<CudaModule>, name: &str| m.load_function(name).map_err(driver(OP));
        let dropout = [
            f(&module, "dropout_f32")?,
            f(&module, "dropout_f16")?,
            f(&module, "dropout_bf16")?,
        ];
        Ok(Self { ctx, dropout })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}
