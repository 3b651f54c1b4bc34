//! The device handle: a CUDA context with our kernels loaded once, and the one place where a
//! storage type picks its kernel.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::Ptx;

use super::error::{CudaResult, CudaSurgeryError, driver};
use super::launch::check_stream_context;
use crate::surgery::element::DType;

/// A storage type the kernels accept. With the `cuda-kernels` feature every [`Element`] (f32,
/// f16, bf16) carries its device representation, so this is the same trait.
pub use crate::surgery::element::Element as DeviceElement;

/// Fatbins built by build.rs (sm_80 + sm_90 machine code, compute_90 PTX).
const ROWWISE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rowwise.fatbin"));
const MULTI_DIR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/multi_dir.fatbin"));
const GRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gram.fatbin"));
const COMBINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/combine.fatbin"));
const PCGRAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pcgrad.fatbin"));
const ADAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adam.fatbin"));

/// Per storage type, indexed by [`dtype_index`].
pub(super) struct Kernels {
    pub dgs_rows: [CudaFunction; 3],
    pub project_rows_multi: [CudaFunction; 3],
    /// `gram[dtype][k - 1]`: the partial-sum kernel specialised for K operands.
    pub gram_partials: [[CudaFunction; 8]; 3],
    pub gram_finish: CudaFunction,
    pub combine: [CudaFunction; 3],
    pub pcgrad_solve: CudaFunction,
    /// By the gradient's type (parameters and moments are f32).
    pub adam: [CudaFunction; 3],
}

/// The one place a storage type selects its kernel.
pub(crate) fn dtype_index(d: DType) -> usize {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
    }
}

/// Our kernels on one CUDA device. Cheap to share by reference; every op takes the stream to run
/// on and never synchronises the host.
pub struct CudaSurgery {
    ctx: Arc<CudaContext>,
    pub(super) k: Kernels,
}

impl CudaSurgery {
    /// Open device `ordinal` and load the kernels. A machine without a driver or device gets
    /// [`CudaSurgeryError::NoCudaDevice`], never a panic.
    pub fn new(ordinal: usize) -> CudaResult<Self> {
        Self::with_context(open_context(ordinal)?)
    }

    /// Load the kernels into an existing context (for example candle's).
    pub fn with_context(ctx: Arc<CudaContext>) -> CudaResult<Self> {
        const OP: &str = "load kernels";
        let load = |image: &[u8]| {
            ctx.load_module(Ptx::from_binary(image.to_vec()))
                .map_err(driver(OP))
        };
        let (rows, multi_dir) = (load(ROWWISE)?, load(MULTI_DIR)?);
        let (gram, combine, pcgrad) = (load(GRAM)?, load(COMBINE)?, load(PCGRAD)?);
        let adam = load(ADAM)?;
        let f = |m: &Arc<cudarc::driver::CudaModule>, name: String| {
            m.load_function(&name).map_err(driver(OP))
        };
        let per_dtype =
            |m: &Arc<cudarc::driver::CudaModule>, base: &str| -> CudaResult<[CudaFunction; 3]> {
                Ok([
                    f(m, format!("{base}_f32"))?,
                    f(m, format!("{base}_f16"))?,
                    f(m, format!("{base}_bf16"))?,
                ])
            };
        let gram_k = |d: &str| -> CudaResult<[CudaFunction; 8]> {
            let v: Vec<CudaFunction> = (1..=8)
                .map(|k| f(&gram, format!("gram_partials_{k}_{d}")))
                .collect::<CudaResult<_>>()?;
            Ok(v.try_into()
                .unwrap_or_else(|_| unreachable!("eight kernels were loaded")))
        };
        let k = Kernels {
            dgs_rows: per_dtype(&rows, "dgs_rows")?,
            project_rows_multi: per_dtype(&multi_dir, "project_rows_multi")?,
            gram_partials: [gram_k("f32")?, gram_k("f16")?, gram_k("bf16")?],
            gram_finish: f(&gram, "gram_finish".into())?,
            combine: per_dtype(&combine, "combine")?,
            pcgrad_solve: f(&pcgrad, "pcgrad_solve".into())?,
            adam: per_dtype(&adam, "adam")?,
        };
        Ok(Self { ctx, k })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn default_stream(&self) -> Arc<CudaStream> {
        self.ctx.default_stream()
    }

    pub fn device_name(&self) -> String {
        self.ctx
            .name()
            .unwrap_or_else(|e| format!("<unknown: {e}>"))
    }

    /// The stream must belong to this handle's context.
    pub(super) fn check_stream(&self, op: &'static str, stream: &CudaStream) -> CudaResult<()> {
        check_stream_context(op, stream, &self.ctx)
    }
}

/// Names the NVIDIA driver library goes by. (cudarc's own list exists only in its dynamic-loading
/// build; with candle's `cuda` feature cudarc links the driver instead, and this probe is moot.)
const LIBCUDA: &[&str] = &["libcuda.so.1", "libcuda.so", "nvcuda.dll"];

/// `CudaContext::new` without its panic when libcuda cannot be loaded (cudarc loads it lazily and
/// panics on failure).
fn open_context(ordinal: usize) -> CudaResult<Arc<CudaContext>> {
    let present = LIBCUDA.iter().any(|name| {
        // SAFETY: loading the driver library runs its initialisers, which is what using CUDA
        // does anyway; the handle is dropped at once.
        unsafe { libloading::Library::new(*name) }.is_ok()
    });
    if !present {
        return Err(CudaSurgeryError::NoCudaDevice(
            "the NVIDIA driver library (libcuda) is not installed on this machine".into(),
        ));
    }
    match std::panic::catch_unwind(|| CudaContext::new(ordinal)) {
        Ok(Ok(ctx)) => Ok(ctx),
        Ok(Err(e)) => Err(CudaSurgeryError::NoCudaDevice(format!(
            "device {ordinal}: {e}"
        ))),
        Err(_) => Err(CudaSurgeryError::NoCudaDevice(
            "the CUDA driver library could not be loaded".into(),
        )),
    }
}
