//! The K-direction row projection on the device (`kernels/multi_dir.cu`).

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, PushKernelArg};

use super::device::{CudaSurgery, DeviceElement, dtype_index};
use super::error::{CudaResult, driver};
use super::launch::{kernel_args, launch_config, row_dim_to_i32, row_threads, transform_code};
use crate::surgery::args::{DEFAULT_DEP_TOL, MultiLens, check_multi_lens};
use crate::surgery::contract::{self, MAX_DIRECTIONS};
use crate::surgery::transform::Transform;

/// Most blocks of one launch: each holds a (K + 1) × dim f32 workspace, so this bounds it.
const MAX_BLOCKS: usize = 4096;

/// `MultiDirArgs` of kernels/multi_dir.cu, passed by value: device addresses (0 for an absent
/// buffer or an unused direction slot), then sizes and scalars.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct MultiDirArgs {
    x: u64,
    directions: [u64; MAX_DIRECTIONS],
    workspace: u64,
    kept: u64,
    rows: i64,
    dim: i32,
    k: i32,
    transform: i32,
    dep_tol: f32,
}

kernel_args!(MultiDirArgs, contract::MULTI_DIR_ARGS_BYTES);

impl CudaSurgery {
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
        let dim_i = row_dim_to_i32(OP, dim)?;
        let grid = rows.min(MAX_BLOCKS);
        let ws_len = grid * (k + 1) * dim;
        // SAFETY: the workspace is written by the kernel before it is read (each block fills its
        // slots from the directions and x first).
        let mut workspace = unsafe { stream.alloc::<f32>(ws_len) }.map_err(driver(OP))?;
        // The guards keep each buffer's stream ordering in force until the launch is queued.
        let (x_ptr, _x_guard) = x.device_ptr_mut(stream);
        let direction_guards: Vec<_> = directions.iter().map(|d| d.device_ptr(stream)).collect();
        let mut direction_ptrs = [0u64; MAX_DIRECTIONS];
        for (slot, (ptr, _)) in direction_ptrs.iter_mut().zip(&direction_guards) {
            *slot = *ptr;
        }
        let (workspace_ptr, _workspace_guard) = workspace.device_ptr_mut(stream);
        let kept = kept.map(|k| k.device_ptr_mut(stream));
        let args = MultiDirArgs {
            x: x_ptr,
            directions: direction_ptrs,
            workspace: workspace_ptr,
            kept: kept.as_ref().map_or(0, |(ptr, _)| *ptr),
            rows: rows as i64,
            dim: dim_i,
            k: k as i32,
            transform: transform_code(transform),
            dep_tol,
        };
        let cfg = launch_config(grid, row_threads::<f32>(dim));
        let mut launch = stream.launch_builder(&self.k.project_rows_multi[dtype_index(T::DTYPE)]);
        launch.arg(&args);
        // SAFETY: `project_rows_multi_<dtype>` takes one `MultiDirArgs`; x and the first k
        // directions hold rows × dim elements (checked), the unused slots are null and never read
        // (k ≤ MAX_DIRECTIONS bounds them), the workspace holds grid × (k + 1) × dim floats and
        // `kept`, when given, rows bytes (checked).
        unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        Ok(())
    }
}
