//! The row-wise DGS projection on the device (`kernels/rowwise.cu`).

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, PushKernelArg};

use super::device::{CudaSurgery, DeviceElement, dtype_index};
use super::error::{CudaResult, driver};
use super::launch::{kernel_args, launch_config, row_dim_to_i32, row_threads};
use crate::surgery::args::{DEFAULT_EPS, RowLens, check_row_lens};
use crate::surgery::contract;

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

/// Largest grid the row kernel is launched with; it loops over further rows.
const MAX_ROW_BLOCKS: usize = 1 << 20;

/// `RowwiseArgs` of kernels/rowwise.cu, passed by value: device addresses (0 for an absent
/// buffer), then sizes and scalars.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RowwiseArgs {
    x: u64,
    harm: u64,
    help: u64,
    coef: u64,
    harm_norm: u64,
    rows: i64,
    dim: i32,
    has_help: i32,
    help_coef: f32,
    eps: f32,
}

kernel_args!(RowwiseArgs, contract::ROWWISE_ARGS_BYTES);

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
        let dim = row_dim_to_i32(OP, p.dim)?;
        // The guards keep each buffer's stream ordering in force until the launch is queued.
        let (x_ptr, _x_guard) = x.device_ptr_mut(stream);
        let (harm_ptr, _harm_guard) = p.harm.device_ptr(stream);
        let help = p.help.as_ref().map(|(a, _)| a.device_ptr(stream));
        let DeviceRowStats { coef, harm_norm } = stats;
        let coef = coef.map(|s| s.device_ptr_mut(stream));
        let harm_norm = harm_norm.map(|s| s.device_ptr_mut(stream));
        let address = |b: &Option<(u64, _)>| b.as_ref().map_or(0, |(ptr, _)| *ptr);
        let args = RowwiseArgs {
            x: x_ptr,
            harm: harm_ptr,
            help: address(&help),
            coef: address(&coef),
            harm_norm: address(&harm_norm),
            rows: p.rows as i64,
            dim,
            has_help: i32::from(p.help.is_some()),
            help_coef: p.help.as_ref().map_or(0.0, |(_, c)| *c),
            eps: p.eps,
        };
        let cfg = launch_config(p.rows.min(MAX_ROW_BLOCKS), row_threads::<T>(p.dim));
        let mut launch = stream.launch_builder(&self.k.dgs_rows[dtype_index(T::DTYPE)]);
        launch.arg(&args);
        // SAFETY: `dgs_rows_<dtype>` takes one `RowwiseArgs`; x and harm (and help when given)
        // were checked above to hold rows × dim elements, the statistics rows floats, and an
        // absent optional buffer is null, which the kernel skips.
        unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        Ok(())
    }
}
