//! Row-wise DGS projection and the K-direction projection on the device.

use cudarc::driver::{
    CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};

use super::device::{CudaSurgery, DeviceElement, dtype_index};
use super::error::{CudaResult, CudaSurgeryError, driver};
use crate::surgery::args::{
    DEFAULT_DEP_TOL, DEFAULT_EPS, MultiLens, RowLens, check_multi_lens, check_row_lens,
};
use crate::surgery::contract;
use crate::surgery::transform::Transform;

/// Arguments of [`CudaSurgery::dgs_rows`]: the device twin of [`RowProjection`](crate::surgery::RowProjection).
pub struct DeviceRowProjection<'a, T> {
    pub rows: usize,
    pub dim: usize,
    pub harm: CudaView<'a, T>,
    /// The help gradient `a` and its coefficient `c`: `x' = x + c·min(a, 0)`.
    pub help: Option<(CudaView<'a, T>, f32)>,
    pub eps: f32,
}

impl<'a, T> DeviceRowProjection<'a, T> {
    pub fn new(rows: usize, dim: usize, harm: CudaView<'a, T>) -> Self {
        Self {
            rows,
            dim,
            harm,
            help: None,
            eps: DEFAULT_EPS,
        }
    }

    pub fn with_help(mut self, grad: CudaView<'a, T>, coef: f32) -> Self {
        self.help = Some((grad, coef));
        self
    }

    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
}

/// Optional per-row outputs on the device, each `rows` f32.
#[derive(Default)]
pub struct DeviceRowStats<'a, 'b> {
    pub coef: Option<&'a mut CudaViewMut<'b, f32>>,
    pub harm_norm: Option<&'a mut CudaViewMut<'b, f32>>,
}

/// Largest grid the row kernels are launched with; they loop over further rows.
const MAX_ROW_BLOCKS: usize = 1 << 20;

/// Threads per row: enough 16-byte vectors to cover the row once, in whole warps, 32..=256.
fn row_threads<T>(dim: usize) -> u32 {
    let per_vec = 16 / size_of::<T>();
    let vectors = dim.div_ceil(per_vec).max(1);
    (vectors.div_ceil(32) * 32).clamp(32, 256) as u32
}

fn check_i32(op: &'static str, what: &'static str, v: usize) -> CudaResult<i32> {
    i32::try_from(v).map_err(|_| CudaSurgeryError::TooLarge {
        op,
        what,
        got: v,
        max: i32::MAX as usize,
    })
}

impl CudaSurgery {
    /// The row-wise DGS projection of [`cpu::dgs_rows`](crate::surgery::cpu::dgs_rows), in place
    /// on `x` (`[rows, dim]`), in one launch on `stream`, without synchronising the host.
    /// Same semantics, NaN/inf rules included; the sums run in f32 in a fixed order, so repeated
    /// runs give identical bits.
    pub fn dgs_rows<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        x: &mut CudaViewMut<'_, T>,
        p: &DeviceRowProjection<'_, T>,
        stats: DeviceRowStats<'_, '_>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda dgs_rows";
        self.check_stream(OP, stream)?;
        check_row_lens(
            OP,
            &RowLens {
                rows: p.rows,
                dim: p.dim,
                x: x.len(),
                harm: p.harm.len(),
                help: p.help.as_ref().map(|(a, c)| (a.len(), *c)),
                eps: p.eps,
                coef: stats.coef.as_ref().map(|s| s.len()),
                harm_norm: stats.harm_norm.as_ref().map(|s| s.len()),
            },
        )?;
        if p.rows == 0 {
            return Ok(());
        }
        let dim = check_i32(OP, "dim", p.dim)?;
        let rows = p.rows as i64;
        let (c, has_help) = p.help.as_ref().map_or((0.0f32, 0i32), |(_, c)| (*c, 1));
        let (x_ptr, _x_sync) = x.device_ptr_mut(stream);
        let (h_ptr, _h_sync) = p.harm.device_ptr(stream);
        let help_ptr = p.help.as_ref().map(|(a, _)| a.device_ptr(stream));
        let a_ptr = help_ptr.as_ref().map_or(0u64, |(ptr, _)| *ptr);
        let DeviceRowStats { coef, harm_norm } = stats;
        let coef_ptr = coef.map(|s| s.device_ptr_mut(stream));
        let norm_ptr = harm_norm.map(|s| s.device_ptr_mut(stream));
        let coef_raw = coef_ptr.as_ref().map_or(0u64, |(ptr, _)| *ptr);
        let norm_raw = norm_ptr.as_ref().map_or(0u64, |(ptr, _)| *ptr);
        let cfg = LaunchConfig {
            grid_dim: (p.rows.min(MAX_ROW_BLOCKS) as u32, 1, 1),
            block_dim: (row_threads::<T>(p.dim), 1, 1),
            shared_mem_bytes: 0,
        };
        let f = &self.k.dgs_rows[dtype_index(T::DTYPE)];
        let mut launch = stream.launch_builder(f);
        launch
            .arg(&x_ptr)
            .arg(&h_ptr)
            .arg(&a_ptr)
            .arg(&c)
            .arg(&has_help)
            .arg(&p.eps)
            .arg(&rows)
            .arg(&dim)
            .arg(&coef_raw)
            .arg(&norm_raw);
        // SAFETY: the argument list matches `dgs_rows_<dtype>` in kernels/rowwise.cu (pointers as
        // u64 device addresses, then f32, i32, f32, i64, i32); every buffer was checked above to
        // hold rows × dim elements (stats: rows), and null stands for an absent optional buffer.
        unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        Ok(())
    }

    /// The K-direction projection of [`cpu::project_rows_multi`](crate::surgery::cpu::project_rows_multi)
    /// on the device: each row of `x` loses its component in the span of its rows of
    /// `directions` (K ≤ 8, after `transform`). Uses a stream-ordered f32 workspace.
    #[allow(clippy::too_many_arguments)]
    pub fn project_rows_multi<T: DeviceElement>(
        &self,
        stream: &std::sync::Arc<CudaStream>,
        x: &mut CudaViewMut<'_, T>,
        rows: usize,
        dim: usize,
        directions: &[CudaView<'_, T>],
        transform: Transform,
        dep_tol: Option<f32>,
        kept: Option<&mut CudaViewMut<'_, u8>>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda project_rows_multi";
        self.check_stream(OP, stream)?;
        let dep_tol = dep_tol.unwrap_or(DEFAULT_DEP_TOL);
        check_multi_lens(
            OP,
            &MultiLens {
                rows,
                dim,
                x: x.len(),
                directions: directions.iter().map(|d| d.len()).collect(),
                dep_tol,
                kept: kept.as_ref().map(|k| k.len()),
            },
        )?;
        if rows == 0 {
            return Ok(());
        }
        let k = directions.len();
        let dim_i = check_i32(OP, "dim", dim)?;
        let grid = rows.min(4096);
        let ws_len = grid * (k + 1) * dim;
        // SAFETY: the workspace is written by the kernel before it is read (each block fills its
        // slots from the directions and x first).
        let mut workspace = unsafe { stream.alloc::<f32>(ws_len) }.map_err(driver(OP))?;
        let (x_ptr, _x_sync) = x.device_ptr_mut(stream);
        let dir_ptrs: Vec<_> = directions.iter().map(|d| d.device_ptr(stream)).collect();
        let mut raw = [0u64; 8];
        for (r, (ptr, _)) in raw.iter_mut().zip(&dir_ptrs) {
            *r = *ptr;
        }
        let (ws_ptr, _ws_sync) = workspace.device_ptr_mut(stream);
        let kept_ptr = kept.map(|k| k.device_ptr_mut(stream));
        let kept_raw = kept_ptr.as_ref().map_or(0u64, |(ptr, _)| *ptr);
        let (k_i, tr, rows_i) = (k as i32, transform_code(transform), rows as i64);
        let cfg = LaunchConfig {
            grid_dim: (grid as u32, 1, 1),
            block_dim: (row_threads::<f32>(dim), 1, 1),
            shared_mem_bytes: 0,
        };
        let f = &self.k.project_rows_multi[dtype_index(T::DTYPE)];
        let mut launch = stream.launch_builder(f);
        launch.arg(&x_ptr);
        for r in &raw {
            launch.arg(r);
        }
        launch
            .arg(&k_i)
            .arg(&tr)
            .arg(&dep_tol)
            .arg(&rows_i)
            .arg(&dim_i)
            .arg(&ws_ptr)
            .arg(&kept_raw);
        // SAFETY: matches `project_rows_multi_<dtype>` in kernels/rowwise.cu; x and the first k
        // direction pointers hold rows × dim elements (checked), unused direction slots are null
        // and never read (k bounds them), the workspace holds grid × (k + 1) × dim floats.
        unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        Ok(())
    }
}

/// The kernels' transform codes (kernels/dtype.cuh).
pub(super) fn transform_code(t: Transform) -> i32 {
    match t {
        Transform::Identity => contract::TRANSFORM_IDENTITY,
        Transform::Relu => contract::TRANSFORM_RELU,
        Transform::NegativePart => contract::TRANSFORM_NEGATIVE_PART,
    }
}
