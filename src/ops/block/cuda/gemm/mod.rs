//! The layer's matrix products through cuBLASLt: one plan per shape and storage type —
//! descriptors, matrix layouts and the heuristic's algorithm, built on first use and cached — so a
//! training step pays the planning once. f32 accumulation everywhere; f32 products without TF32
//! (PyTorch's default); a bias added in the epilogue; a residual added through β = 1 from a
//! separate input `C` into the output `D`. When cuBLASLt has no algorithm with the bias epilogue
//! for a shape, the plan multiplies without it and our own kernel adds the bias (said once on
//! stderr).
//!
//! Products are row-major, as the layer's tensors are: `D[m, n] = op(A) · op(B) (+ bias[n])
//! (+ C[m, n])`. cuBLASLt is column-major, so a plan computes `Dᵀ = op(B)ᵀ · op(A)ᵀ`: the operands
//! swap places, and a row-major `[rows, cols]` buffer is a column-major `cols × rows` one.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

mod check;
mod plan;

use super::BlockKernels;
use crate::surgery::DType;
use crate::surgery::cuda::launch::{OPERAND_ALIGNMENT, check_aligned};
use crate::surgery::cuda::{CudaResult, CudaSurgeryError, DeviceElement};
use check::check_operands;
use plan::Plan;

/// The shape of a row-major product `D[m, n] = op(A)[m, k] · op(B)[k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// A is stored `[k, m]` (the product uses its transpose).
    pub a_transposed: bool,
    /// B is stored `[n, k]`: a linear layer's weight, `y = x Wᵀ`.
    pub b_transposed: bool,
    /// The stored matrices' row strides, when they are not packed (`None`): a column block of
    /// a wider matrix, such as q's columns of the fused `[N, 3C]` q/k/v.
    pub ld: Option<LeadingDims>,
}

/// Row strides in elements of A, B and D (and C, which has D's layout) as stored, each at
/// least its stored row's length (the plan's algorithm is chosen for these strides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeadingDims {
    pub a: usize,
    pub b: usize,
    pub d: usize,
}

impl GemmShape {
    /// A linear layer, `D[m, n] = A[m, k] · Wᵀ` with `W` stored `[n, k]`; packed operands.
    pub fn linear(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            a_transposed: false,
            b_transposed: true,
            ld: None,
        }
    }

    /// `D[m, n] = A[m, k] · B[k, n]`, nothing transposed; packed operands.
    pub fn product(m: usize, n: usize, k: usize) -> Self {
        Self {
            b_transposed: false,
            ..Self::linear(m, n, k)
        }
    }

    /// The stored `(rows, cols)` of A, B and D.
    fn stored(&self) -> [(usize, usize); 3] {
        let (m, n, k) = (self.m, self.n, self.k);
        [
            if self.a_transposed { (k, m) } else { (m, k) },
            if self.b_transposed { (n, k) } else { (k, n) },
            (m, n),
        ]
    }

    /// The row strides in effect: the given ones, or the packed ones.
    pub fn leading_dims(&self) -> LeadingDims {
        let [a, b, d] = self.stored();
        self.ld.unwrap_or(LeadingDims {
            a: a.1,
            b: b.1,
            d: d.1,
        })
    }
}

/// One product's operands, `D = α · op(A) · op(B) (+ bias) (+ C)`. `bias` (`[n]`) is added to
/// every row. C is `residual` (`[m, n]`, a separate buffer: cuBLASLt reads C and writes D), or
/// with `accumulate` the output's own contents (in place, β = 1); at most one of the two.
pub struct GemmOperands<'a, T> {
    pub a: &'a CudaView<'a, T>,
    pub b: &'a CudaView<'a, T>,
    pub bias: Option<&'a CudaView<'a, T>>,
    pub residual: Option<&'a CudaView<'a, T>>,
    pub accumulate: bool,
    pub alpha: f32,
}

impl<'a, T> GemmOperands<'a, T> {
    /// `D = A · B`: no bias, nothing added, α = 1.
    pub fn new(a: &'a CudaView<'a, T>, b: &'a CudaView<'a, T>) -> Self {
        Self {
            a,
            b,
            bias: None,
            residual: None,
            accumulate: false,
            alpha: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    shape: GemmShape,
    dtype: DType,
    bias: bool,
}

/// Workspace cuBLASLt may use per product (its recommendation for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

/// The alignment the plans are chosen for, and every operand's address is checked against.
const ALIGNMENT: u64 = OPERAND_ALIGNMENT;

/// cuBLASLt on one stream with its plans. Products run on that stream, in order. One workspace
/// serves every product, so the stream's work must come from one host thread: candle's devices
/// use the per-thread default stream, on which two threads' products would run concurrently.
pub struct Gemms {
    handle: Handle,
    stream: Arc<CudaStream>,
    /// For the bias when the epilogue cannot take it.
    kernels: Arc<BlockKernels>,
    workspace: Mutex<CudaSlice<u8>>,
    plans: Mutex<HashMap<PlanKey, Arc<Plan>>>,
}

/// A cuBLASLt handle, destroyed on drop.
struct Handle(sys::cublasLtHandle_t);

// SAFETY: a cuBLASLt handle may be used from any thread (the library's documentation); every
// product through it is serialised by `Gemms::workspace`'s lock.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `create_handle` and is destroyed once, here.
        // A failure while tearing down has nobody to report to.
        let _ = unsafe { lt::destroy_handle(self.0) };
    }
}

fn cublas(op: &'static str) -> impl FnOnce(CublasError) -> CudaSurgeryError {
    move |source| CudaSurgeryError::Cublas { op, source }
}

impl Gemms {
    /// cuBLASLt (loaded at run time) on `stream`, with its workspace.
    pub fn new(stream: Arc<CudaStream>, kernels: Arc<BlockKernels>) -> CudaResult<Self> {
        const OP: &str = "cublasLt setup";
        stream
            .context()
            .bind_to_thread()
            .map_err(crate::surgery::cuda::error::driver(OP))?;
        // cudarc loads libcublasLt on first use and panics when it is absent: a typed error instead.
        let created = std::panic::catch_unwind(lt::create_handle).map_err(|_| {
            CudaSurgeryError::LibraryMissing {
                op: OP,
                library: "cuBLASLt (libcublasLt)",
            }
        })?;
        let handle = Handle(created.map_err(cublas(OP))?);
        // SAFETY: the workspace is scratch for cuBLASLt, never read before it writes it.
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }
            .map_err(crate::surgery::cuda::error::driver(OP))?;
        Ok(Self {
            handle,
            stream,
            kernels,
            workspace: Mutex::new(workspace),
            plans: Mutex::new(HashMap::new()),
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `out = op(A) · op(B) (+ bias) (+ residual)` on this handle's stream.
    pub fn matmul<T: DeviceElement>(
        &self,
        shape: GemmShape,
        x: &GemmOperands<'_, T>,
        out: &mut CudaViewMut<'_, T>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda gemm";
        check_operands(OP, &shape, x, out.len())?;
        if shape.m == 0 || shape.n == 0 {
            return Ok(());
        }
        let plan = self.plan::<T>(shape, x.bias.is_some())?;
        // cuBLASLt runs in the thread's current context, which must be the stream's.
        self.stream
            .context()
            .bind_to_thread()
            .map_err(crate::surgery::cuda::error::driver(OP))?;
        {
            let s = &self.stream;
            let (a, _a) = x.a.device_ptr(s);
            let (b, _b) = x.b.device_ptr(s);
            let (d, _d) = out.device_ptr_mut(s);
            let residual = x.residual.map(|c| c.device_ptr(s));
            let bias = x.bias.map(|v| v.device_ptr(s));
            // C is the residual, or D itself: in place when accumulating (β = 1), unread otherwise.
            let c = residual.as_ref().map_or(d, |(ptr, _)| *ptr);
            let bias_ptr = bias.as_ref().map_or(0, |(ptr, _)| *ptr);
            let pointers = [
                ("a", a),
                ("b", b),
                ("out", d),
                ("residual", c),
                ("bias", bias_ptr),
            ];
            check_aligned(OP, &pointers)?;
            let adds = residual.is_some() || x.accumulate;
            let (alpha, beta) = (x.alpha, if adds { 1.0f32 } else { 0.0 });
            let mut workspace = self
                .workspace
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (ws, _ws) = workspace.device_ptr_mut(s);
            if let (Some((bias_ptr, _)), true) = (&bias, plan.bias_in_epilogue) {
                // SAFETY: the descriptor is this plan's, alive; the attribute is an 8-byte device
                // address, and the lock above serialises every use of the plans' descriptors.
                unsafe {
                    lt::set_matmul_desc_attribute(
                        plan.desc,
                        sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                        (bias_ptr as *const u64).cast(),
                        size_of::<u64>(),
                    )
                }
                .map_err(cublas(OP))?;
            }
            // SAFETY: the plan's layouts describe exactly the buffers passed (their lengths and
            // 16-byte alignment were checked above: A, B, D and C hold the elements the layouts
            // address); cuBLASLt's operand "A" is our B and its "B" our A (the transposed problem);
            // the workspace holds WORKSPACE_BYTES and is used by one product at a time: the lock
            // serialises the queuing, and the products run in order on this handle's one stream
            // (fed by one host thread, see `Gemms`).
            unsafe {
                lt::matmul(
                    self.handle.0,
                    plan.desc,
                    (&alpha as *const f32).cast::<c_void>(),
                    (&beta as *const f32).cast::<c_void>(),
                    b as *const c_void,
                    plan.layout_b,
                    a as *const c_void,
                    plan.layout_a,
                    c as *const c_void,
                    plan.layout_d,
                    d as *mut c_void,
                    plan.layout_d,
                    &plan.algo,
                    ws as *mut c_void,
                    WORKSPACE_BYTES,
                    s.cu_stream() as sys::cudaStream_t,
                )
            }
            .map_err(cublas(OP))?;
        }
        // The guards above are gone: the output's stream ordering covers the bias kernel too.
        if let (Some(bias), false) = (x.bias, plan.bias_in_epilogue) {
            self.kernels.add_bias(&self.stream, bias, out)?;
        }
        Ok(())
    }

    /// The cached plan for this shape, dtype and epilogue, built on first use.
    fn plan<T: DeviceElement>(&self, shape: GemmShape, bias: bool) -> CudaResult<Arc<Plan>> {
        let key = PlanKey {
            shape,
            dtype: T::DTYPE,
            bias,
        };
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = plans.get(&key) {
            return Ok(p.clone());
        }
        let plan = match Plan::new(&self.handle, &key, bias) {
            Ok(p) => p,
            Err(CudaSurgeryError::Cublas { source, .. })
                if bias && source.0 == sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED =>
            {
                eprintln!(
                    "note: cuBLASLt has no bias epilogue for {shape:?} in {}; adding the bias \
                     with a separate kernel",
                    T::DTYPE
                );
                Plan::new(&self.handle, &key, false)?
            }
            Err(e) => return Err(e),
        };
        let plan = Arc::new(plan);
        plans.insert(key, plan.clone());
        Ok(plan)
    }
}
