//! What the benchmarks compare our kernels with, in the same run (kernels/baseline.cu): an empty
//! launch, and the unfused multi-kernel versions of each op — one kernel per formula step for the
//! row projection (as eager PyTorch runs the official hook), flatten + one dot product per pair
//! for the Gram matrix, one axpy launch per operand for combine. Benchmark-only: the library
//! neither loads nor exports these kernels; build.rs compiles them with the others.

use std::sync::Arc;

use dgs::surgery::DType;
use dgs::surgery::cuda::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut,
    DriverError, LaunchConfig, PushKernelArg,
};
use dgs::surgery::cuda::cudarc::nvrtc::Ptx;
use dgs::surgery::cuda::{CudaSurgery, DeviceElement};

const BASELINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/baseline.fatbin"));
const THREADS: u32 = 256;

type CudaResult<T> = Result<T, DriverError>;

/// The kernel of each storage type, in the order the `per` loader fills the arrays.
fn dtype_index(d: DType) -> usize {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
    }
}

pub struct Baselines {
    empty: CudaFunction,
    relu: [CudaFunction; 3],
    norms: CudaFunction,
    scale_rows: CudaFunction,
    row_dots: [CudaFunction; 3],
    sub_scaled: [CudaFunction; 3],
    dot_partials: [CudaFunction; 3],
    sum: CudaFunction,
    axpy: [CudaFunction; 3],
}

/// Blocks for a grid-stride elementwise launch over `n` elements.
fn elementwise(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as usize).clamp(1, 65_536) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Blocks of the first stage of an unfused dot product (and the size of its partials buffer).
pub const DOT_BLOCKS: usize = 1024;

impl Baselines {
    pub fn new(surgery: &CudaSurgery) -> CudaResult<Self> {
        let m = surgery
            .context()
            .load_module(Ptx::from_binary(BASELINE.to_vec()))?;
        let f = |name: &str| m.load_function(name);
        let per = |base: &str| -> CudaResult<[CudaFunction; 3]> {
            Ok([
                f(&format!("{base}_f32"))?,
                f(&format!("{base}_f16"))?,
                f(&format!("{base}_bf16"))?,
            ])
        };
        Ok(Self {
            empty: f("empty_kernel")?,
            relu: per("unfused_relu")?,
            norms: f("unfused_norms")?,
            scale_rows: f("unfused_scale_rows")?,
            row_dots: per("unfused_row_dots")?,
            sub_scaled: per("unfused_sub_scaled")?,
            dot_partials: per("unfused_dot_partials")?,
            sum: f("unfused_sum")?,
            axpy: per("unfused_axpy")?,
        })
    }

    /// One launch of a kernel that does nothing.
    pub fn empty(&self, stream: &CudaStream) -> CudaResult<()> {
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `empty_kernel` takes no arguments and touches no memory.
        unsafe { stream.launch_builder(&self.empty).launch(cfg) }?;
        Ok(())
    }

    /// The row projection without help term in five launches; `tmp` holds rows × dim floats,
    /// `norms` and `dots` rows floats each.
    #[allow(clippy::too_many_arguments)]
    pub fn dgs_rows_unfused<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        x: &mut CudaViewMut<'_, T>,
        h: &CudaView<'_, T>,
        rows: usize,
        dim: usize,
        eps: f32,
        tmp: &mut CudaSlice<f32>,
        norms: &mut CudaSlice<f32>,
        dots: &mut CudaSlice<f32>,
    ) -> CudaResult<()> {
        assert!(x.len() == rows * dim && h.len() == rows * dim && tmp.len() >= rows * dim);
        assert!(norms.len() >= rows && dots.len() >= rows);
        let d = dtype_index(T::DTYPE);
        let (n, dim_i) = ((rows * dim) as i64, dim as i32);
        let (xp, _x) = x.device_ptr_mut(stream);
        let (hp, _h) = h.device_ptr(stream);
        let (tp, _t) = tmp.device_ptr_mut(stream);
        let (np, _n) = norms.device_ptr_mut(stream);
        let (dp, _d) = dots.device_ptr_mut(stream);
        // SAFETY (all five launches): argument lists match kernels/baseline.cu; every buffer holds
        // the rows × dim (or rows) elements asserted above.
        unsafe {
            stream
                .launch_builder(&self.relu[d])
                .arg(&hp)
                .arg(&tp)
                .arg(&n)
                .launch(elementwise(rows * dim))
        }?;
        unsafe {
            stream
                .launch_builder(&self.norms)
                .arg(&tp)
                .arg(&np)
                .arg(&dim_i)
                .launch(per_row(rows))
        }?;
        unsafe {
            stream
                .launch_builder(&self.scale_rows)
                .arg(&tp)
                .arg(&np)
                .arg(&eps)
                .arg(&n)
                .arg(&dim_i)
                .launch(elementwise(rows * dim))
        }?;
        unsafe {
            stream
                .launch_builder(&self.row_dots[d])
                .arg(&xp)
                .arg(&tp)
                .arg(&dp)
                .arg(&dim_i)
                .launch(per_row(rows))
        }?;
        unsafe {
            stream
                .launch_builder(&self.sub_scaled[d])
                .arg(&xp)
                .arg(&tp)
                .arg(&dp)
                .arg(&n)
                .arg(&dim_i)
                .launch(elementwise(rows * dim))
        }?;
        Ok(())
    }

    /// `out = a·b` of two flat vectors in two launches; `partials` holds [`DOT_BLOCKS`] floats.
    pub fn dot<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        a: &CudaView<'_, T>,
        b: &CudaView<'_, T>,
        partials: &mut CudaSlice<f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> CudaResult<()> {
        assert!(a.len() == b.len() && partials.len() >= DOT_BLOCKS && !out.is_empty());
        let n = a.len() as i64;
        let (ap, _a) = a.device_ptr(stream);
        let (bp, _b) = b.device_ptr(stream);
        let (pp, _p) = partials.device_ptr_mut(stream);
        let (op, _o) = out.device_ptr_mut(stream);
        let blocks = LaunchConfig {
            grid_dim: (DOT_BLOCKS as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let count = DOT_BLOCKS as i32;
        // SAFETY: argument lists match kernels/baseline.cu; lengths asserted above.
        unsafe {
            stream
                .launch_builder(&self.dot_partials[dtype_index(T::DTYPE)])
                .arg(&ap)
                .arg(&bp)
                .arg(&pp)
                .arg(&n)
                .launch(blocks)
        }?;
        // SAFETY: as above.
        unsafe {
            stream
                .launch_builder(&self.sum)
                .arg(&pp)
                .arg(&count)
                .arg(&op)
                .launch(one)
        }?;
        Ok(())
    }

    /// `out += w · v` over flat vectors, one launch.
    pub fn axpy<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        out: &mut CudaViewMut<'_, T>,
        v: &CudaView<'_, T>,
        w: f32,
    ) -> CudaResult<()> {
        assert_eq!(out.len(), v.len());
        let n = v.len() as i64;
        let (op, _o) = out.device_ptr_mut(stream);
        let (vp, _v) = v.device_ptr(stream);
        // SAFETY: argument list matches `unfused_axpy_<dtype>`; lengths asserted equal.
        unsafe {
            stream
                .launch_builder(&self.axpy[dtype_index(T::DTYPE)])
                .arg(&op)
                .arg(&vp)
                .arg(&w)
                .arg(&n)
                .launch(elementwise(v.len()))
        }?;
        Ok(())
    }
}

/// Concatenate a tensor list into one flat buffer with one device copy per tensor (what
/// `torch.cat([g.flatten() for g in grads])` costs).
pub fn flatten_into<T: DeviceElement>(
    stream: &Arc<CudaStream>,
    list: &[CudaView<'_, T>],
    flat: &mut CudaSlice<T>,
) -> CudaResult<()> {
    let mut off = 0;
    for t in list {
        let n = t.len();
        stream.memcpy_dtod(t, &mut flat.slice_mut(off..off + n))?;
        off += n;
    }
    Ok(())
}
