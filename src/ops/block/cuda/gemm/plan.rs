//! One cuBLASLt plan: the matmul descriptor, the three matrix layouts of a row-major product seen
//! column-major, and the heuristic's algorithm for them.

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;

use super::{ALIGNMENT, GemmShape, Handle, PlanKey, WORKSPACE_BYTES, cublas};
use crate::surgery::DType;
use crate::surgery::cuda::CudaResult;

/// The descriptors and algorithm of one product shape.
pub(super) struct Plan {
    pub(super) desc: sys::cublasLtMatmulDesc_t,
    /// Column-major layouts of our A, our B and D (C has D's layout).
    pub(super) layout_a: sys::cublasLtMatrixLayout_t,
    pub(super) layout_b: sys::cublasLtMatrixLayout_t,
    pub(super) layout_d: sys::cublasLtMatrixLayout_t,
    pub(super) algo: sys::cublasLtMatmulAlgo_t,
    pub(super) bias_in_epilogue: bool,
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
    pub(super) fn new(handle: &Handle, key: &PlanKey, bias: bool) -> CudaResult<Self> {
        const OP: &str = "cublasLt plan";
        let GemmShape {
            a_transposed,
            b_transposed,
            ..
        } = key.shape;
        let [a_stored, b_stored, d_stored] = key.shape.stored();
        let ld = key.shape.leading_dims();
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
        // A row-major `[rows, cols]` matrix with row stride `ld` is a column-major `cols × rows`
        // one with leading dimension `ld`. cuBLASLt's first operand is our B, needed `n × k`:
        // stored `[k, n]` it is that already, stored `[n, k]` it is `k × n` and transposed. Its
        // second is our A, needed `k × m`: stored `[m, k]` it is, stored `[k, m]` transposed.
        let layout = |(rows, cols): (usize, usize), ld: usize| {
            lt::create_matrix_layout(ty, cols as u64, rows as u64, ld as i64).map_err(cublas(OP))
        };
        plan.layout_b = layout(b_stored, ld.b)?;
        plan.layout_a = layout(a_stored, ld.a)?;
        plan.layout_d = layout(d_stored, ld.d)?;
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
        // The workspace limit is a uint64_t attribute, the alignments uint32_t ones: each is
        // passed with its own size (cuBLASLt refuses a size that does not match the attribute).
        let workspace = WORKSPACE_BYTES as u64;
        // SAFETY: `pref` is alive; MAX_WORKSPACE_BYTES is an 8-byte unsigned integer.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&workspace as *const u64).cast(),
                size_of::<u64>(),
            )
        }
        .map_err(cublas(OP))?;
        let alignment = ALIGNMENT as u32;
        for attr in [
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
        ] {
            // SAFETY: `pref` is alive; the alignment attributes are 4-byte unsigned integers.
            unsafe {
                lt::set_matmul_pref_attribute(
                    pref,
                    attr,
                    (&alignment as *const u32).cast(),
                    size_of::<u32>(),
                )
            }
            .map_err(cublas(OP))?;
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
