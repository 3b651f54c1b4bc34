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

use super::BlockKernels;
use crate::surgery::cuda::{CudaResult, CudaSurgeryError, DeviceElement};
use crate::surgery::{DType, SurgeryError};

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
}

/// One product's operands. `bias` (`[n]`) is added to every row; `residual` (`[m, n]`) is
/// added through β = 1 (it may not be the output buffer: cuBLASLt reads C and writes D).
pub struct GemmOperands<'a, T> {
    pub a: &'a CudaView<'a, T>,
    pub b: &'a CudaView<'a, T>,
    pub bias: Option<&'a CudaView<'a, T>>,
    pub residual: Option<&'a CudaView<'a, T>>,
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
const ALIGNMENT: u64 = 16;

/// cuBLASLt on one stream with its plans. Products run on that stream, in order.
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
        {
            let s = &self.stream;
            let (a, _a) = x.a.device_ptr(s);
            let (b, _b) = x.b.device_ptr(s);
            let (d, _d) = out.device_ptr_mut(s);
            let residual = x.residual.map(|c| c.device_ptr(s));
            let bias = x.bias.map(|v| v.device_ptr(s));
            let c = residual.as_ref().map_or(d, |(ptr, _)| *ptr);
            let bias_ptr = bias.as_ref().map_or(0, |(ptr, _)| *ptr);
            for (arg, address) in [
                ("a", a),
                ("b", b),
                ("out", d),
                ("residual", c),
                ("bias", bias_ptr),
            ] {
                if address % ALIGNMENT != 0 {
                    return Err(SurgeryError::InvalidValue {
                        op: OP,
                        arg,
                        value: format!("{address:#x}"),
                        why: "operands must be 16-byte aligned",
                    }
                    .into());
                }
            }
            let (alpha, beta) = (1.0f32, if residual.is_some() { 1.0f32 } else { 0.0 });
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
            // the workspace holds WORKSPACE_BYTES and is used by one product at a time (lock held);
            // the stream is this handle's.
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

/// The descriptors and algorithm of one product shape.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    /// Column-major layouts of our A, our B and D (C has D's layout).
    layout_a: sys::cublasLtMatrixLayout_t,
    layout_b: sys::cublasLtMatrixLayout_t,
    layout_d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
    bias_in_epilogue: bool,
}

// SAFETY: the descriptors are plain host objects of cuBLASLt; the only mutation after creation
// (the bias pointer) happens under `Gemms::workspace`'s lock.
unsafe impl Send for Plan {}
// SAFETY: as above.
unsafe impl Sync for Plan {}

fn data_type(d: DType) -> sys::cudaDataType {
    match d {
        DType::F32 => sys::cudaDataType::CUDA_R_32F,
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
    }
}

impl Plan {
    fn new(handle: &Handle, key: &PlanKey, bias: bool) -> CudaResult<Self> {
        const OP: &str = "cublasLt plan";
        let GemmShape {
            m,
            n,
            k,
            a_transposed,
            b_transposed,
        } = key.shape;
        let ty = data_type(key.dtype);
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType::CUDA_R_32F,
        )
        .map_err(cublas(OP))?;
        // From here on the descriptors are owned by `plan`, whose Drop frees them on any error.
        let mut plan = Plan {
            desc,
            layout_a: std::ptr::null_mut(),
            layout_b: std::ptr::null_mut(),
            layout_d: std::ptr::null_mut(),
            // SAFETY: the algorithm is a plain array of integers, for which zero is a valid
            // value; the heuristic overwrites it below before any use.
            algo: unsafe { std::mem::zeroed() },
            bias_in_epilogue: bias,
        };
        // cuBLASLt's first operand is our B: it must come out `n × k`. Stored `[k, n]` row-major
        // it is already `n × k` column-major; stored `[n, k]` it is `k × n` and transposed.
        let (b_rows, b_cols) = if b_transposed { (k, n) } else { (n, k) };
        // Its second operand is our A, needed `k × m`: `[m, k]` row-major is `k × m`
        // column-major; stored `[k, m]` it is `m × k` and transposed.
        let (a_rows, a_cols) = if a_transposed { (m, k) } else { (k, m) };
        let layout = |rows: usize, cols: usize| {
            lt::create_matrix_layout(ty, rows as u64, cols as u64, rows as i64).map_err(cublas(OP))
        };
        plan.layout_b = layout(b_rows, b_cols)?;
        plan.layout_a = layout(a_rows, a_cols)?;
        plan.layout_d = layout(n, m)?;
        let set = |attr, value: &i32| {
            // SAFETY: `desc` is alive; each attribute set here is a 4-byte integer.
            unsafe {
                lt::set_matmul_desc_attribute(
                    plan.desc,
                    attr,
                    (value as *const i32).cast(),
                    size_of::<i32>(),
                )
            }
            .map_err(cublas(OP))
        };
        use sys::cublasLtMatmulDescAttributes_t as A;
        set(A::CUBLASLT_MATMUL_DESC_TRANSA, &i32::from(b_transposed))?;
        set(A::CUBLASLT_MATMUL_DESC_TRANSB, &i32::from(a_transposed))?;
        if bias {
            set(
                A::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &(sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS as i32),
            )?;
        }
        plan.algo = heuristic(handle, &plan)?;
        Ok(plan)
    }
}

/// The heuristic's first algorithm for a plan's descriptors, within our workspace, for 16-byte
/// aligned operands.
fn heuristic(handle: &Handle, plan: &Plan) -> CudaResult<sys::cublasLtMatmulAlgo_t> {
    const OP: &str = "cublasLt heuristic";
    let pref = lt::create_matmul_pref().map_err(cublas(OP))?;
    let result = (|| {
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        let set = |attr, value: u64| {
            // SAFETY: `pref` is alive; these attributes are 8-byte unsigned integers.
            unsafe { lt::set_matmul_pref_attribute(pref, attr, (&value as *const u64).cast(), 8) }
                .map_err(cublas(OP))
        };
        set(
            P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            WORKSPACE_BYTES as u64,
        )?;
        for attr in [
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
        ] {
            set(attr, ALIGNMENT)?;
        }
        // SAFETY: the handle, descriptors and layouts are alive; C has D's layout.
        let found = unsafe {
            lt::get_matmul_algo_heuristic(
                handle.0,
                plan.desc,
                plan.layout_b,
                plan.layout_a,
                plan.layout_d,
                plan.layout_d,
                pref,
            )
        }
        .map_err(cublas(OP))?;
        Ok(found.algo)
    })();
    // SAFETY: created above, destroyed once.
    let _ = unsafe { lt::destroy_matmul_pref(pref) };
    result
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created for this plan (or is null) and is destroyed once;
        // failures while tearing down have nobody to report to.
        unsafe {
            for layout in [self.layout_a, self.layout_b, self.layout_d] {
                if !layout.is_null() {
                    let _ = lt::destroy_matrix_layout(layout);
                }
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// Lengths and alignment of every operand against the shape, before any call into cuBLASLt.
fn check_operands<T: DeviceElement>(
    op: &'static str,
    shape: &GemmShape,
    x: &GemmOperands<'_, T>,
    out_len: usize,
) -> CudaResult<()> {
    let GemmShape { m, n, k, .. } = *shape;
    if k == 0 && m * n > 0 {
        return Err(SurgeryError::InvalidValue {
            op,
            arg: "k",
            value: "0".into(),
            why: "the contraction must have at least one term",
        }
        .into());
    }
    let fits_i32 = |v: usize| i64::try_from(v).is_ok_and(|v| v <= i64::from(i32::MAX));
    for (what, v) in [("m", m), ("n", n), ("k", k)] {
        if !fits_i32(v) {
            return Err(CudaSurgeryError::TooLarge {
                op,
                what,
                got: v,
                max: i32::MAX as usize,
            });
        }
    }
    let mut lens = vec![
        ("a", m * k, x.a.len()),
        ("b", k * n, x.b.len()),
        ("out", m * n, out_len),
    ];
    if let Some(b) = x.bias {
        lens.push(("bias", n, b.len()));
    }
    if let Some(c) = x.residual {
        lens.push(("residual", m * n, c.len()));
    }
    for (arg, expected, got) in lens {
        if expected != got {
            return Err(SurgeryError::LengthMismatch {
                op,
                arg,
                expected,
                got,
                why: format!("{shape:?}"),
            }
            .into());
        }
    }
    Ok(())
}
