//! The layer's row-wise kernels on the device (`kernels/block_rows.cu`): layer norm forward
//! (statistics optionally saved) and backward (added into the residual gradient), the MLP
//! activation and its derivative. The twins of `ops::block::cpu_rows`, which the GPU tests hold
//! them to.

use std::sync::Arc;

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, PushKernelArg};

use super::{BlockKernels, check_len};
use crate::ops::block::Activation;
use crate::surgery::SurgeryError;
use crate::surgery::contract;
use crate::surgery::cuda::device::dtype_index;
use crate::surgery::cuda::error::driver;
use crate::surgery::cuda::launch::{check_aligned, kernel_args, launch_config};
use crate::surgery::cuda::{CudaResult, CudaSurgeryError, DeviceElement};

/// `RowsArgs` of kernels/block_rows.cu, passed by value; unused pointers are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RowsArgs {
    x: u64,
    w: u64,
    b: u64,
    dy: u64,
    out: u64,
    stats: u64,
    rows: i64,
    cols: i32,
    activation: i32,
    eps: f32,
    reserved: i32,
}

kernel_args!(RowsArgs, contract::ROWS_ARGS_BYTES);

/// Threads per block of the layer norms (fixed by the kernels), and of the elementwise kernels.
const LN_THREADS: u32 = 128;
const ELEMENTWISE_THREADS: u32 = 256;
/// Most blocks per launch; the kernels loop over further rows or elements.
const MAX_BLOCKS: usize = 65_536;

/// A layer norm's frozen parameters on the device, each `[cols]`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceLayerNorm<'a, T> {
    pub weight: &'a CudaView<'a, T>,
    pub bias: &'a CudaView<'a, T>,
    pub eps: f32,
}

fn activation_code(a: Activation) -> i32 {
    match a {
        Activation::QuickGelu => contract::ACTIVATION_QUICK_GELU,
        Activation::Gelu => contract::ACTIVATION_GELU,
        Activation::GeluTanh => contract::ACTIVATION_GELU_TANH,
        Activation::Relu => contract::ACTIVATION_RELU,
    }
}

impl BlockKernels {
    /// `out = LN(x)` row by row (`x`, `out`: `[rows, cols]`); with `stats` (`[rows, 2]` f32)
    /// each row's mean and 1/σ are kept for the backward. One launch, no host synchronisation.
    pub fn layer_norm<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        ln: &DeviceLayerNorm<'_, T>,
        out: &mut CudaViewMut<'_, T>,
        stats: Option<&mut CudaViewMut<'_, f32>>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda layer_norm";
        let cols = ln.weight.len();
        let rows = self.check_rows::<T>(OP, stream, cols, x.len())?;
        check_len(OP, "bias", cols, ln.bias.len())?;
        check_len(OP, "out", x.len(), out.len())?;
        if let Some(s) = &stats {
            check_len(OP, "stats", 2 * rows, s.len())?;
        }
        if !(ln.eps.is_finite() && ln.eps > 0.0) {
            return Err(SurgeryError::InvalidValue {
                op: OP,
                arg: "eps",
                value: ln.eps.to_string(),
                why: "it must be finite and positive",
            }
            .into());
        }
        if rows == 0 {
            return Ok(());
        }
        let (x_ptr, _x) = x.device_ptr(stream);
        let (w_ptr, _w) = ln.weight.device_ptr(stream);
        let (b_ptr, _b) = ln.bias.device_ptr(stream);
        let (out_ptr, _o) = out.device_ptr_mut(stream);
        let stats = stats.map(|s| s.device_ptr_mut(stream));
        let pointers = [
            ("x", x_ptr),
            ("weight", w_ptr),
            ("bias", b_ptr),
            ("out", out_ptr),
        ];
        check_aligned(OP, &pointers)?;
        let args = RowsArgs {
            x: x_ptr,
            w: w_ptr,
            b: b_ptr,
            out: out_ptr,
            stats: stats.as_ref().map_or(0, |(ptr, _)| *ptr),
            rows: rows as i64,
            cols: cols as i32,
            eps: ln.eps,
            ..RowsArgs::default()
        };
        let f = &self.layer_norm_forward[dtype_index(T::DTYPE)];
        let mut launch = stream.launch_builder(f);
        launch.arg(&args);
        // SAFETY: `layer_norm_forward_<dtype>` takes one `RowsArgs`; x and out hold rows × cols
        // elements, w and b cols, stats (when given) 2 × rows floats; cols is a multiple of the
        // 16-byte vector and at most the kernel's register row (all checked above).
        unsafe { launch.launch(launch_config(rows.min(MAX_BLOCKS), LN_THREADS)) }
            .map_err(driver(OP))?;
        Ok(())
    }

    /// `dx += ∂LN/∂x · dy` row by row, from the forward's input `x` and `stats`.
    pub fn layer_norm_backward<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        x: &CudaView<'_, T>,
        weight: &CudaView<'_, T>,
        stats: &CudaView<'_, f32>,
        dy: &CudaView<'_, T>,
        dx: &mut CudaViewMut<'_, T>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda layer_norm_backward";
        let cols = weight.len();
        let rows = self.check_rows::<T>(OP, stream, cols, x.len())?;
        check_len(OP, "stats", 2 * rows, stats.len())?;
        check_len(OP, "dy", x.len(), dy.len())?;
        check_len(OP, "dx", x.len(), dx.len())?;
        if rows == 0 {
            return Ok(());
        }
        let (x_ptr, _x) = x.device_ptr(stream);
        let (w_ptr, _w) = weight.device_ptr(stream);
        let (s_ptr, _s) = stats.device_ptr(stream);
        let (dy_ptr, _dy) = dy.device_ptr(stream);
        let (dx_ptr, _dx) = dx.device_ptr_mut(stream);
        let pointers = [
            ("x", x_ptr),
            ("weight", w_ptr),
            ("dy", dy_ptr),
            ("dx", dx_ptr),
        ];
        check_aligned(OP, &pointers)?;
        let args = RowsArgs {
            x: x_ptr,
            w: w_ptr,
            dy: dy_ptr,
            out: dx_ptr,
            stats: s_ptr,
            rows: rows as i64,
            cols: cols as i32,
            ..RowsArgs::default()
        };
        let f = &self.layer_norm_backward[dtype_index(T::DTYPE)];
        let mut launch = stream.launch_builder(f);
        launch.arg(&args);
        // SAFETY: `layer_norm_backward_<dtype>` takes one `RowsArgs`; x, dy and dx hold rows ×
        // cols elements, w cols, stats 2 × rows floats; cols fits the kernel (checked above).
        unsafe { launch.launch(launch_config(rows.min(MAX_BLOCKS), LN_THREADS)) }
            .map_err(driver(OP))?;
        Ok(())
    }

    /// `out = act(h)` elementwise.
    pub fn activation<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        act: Activation,
        h: &CudaView<'_, T>,
        out: &mut CudaViewMut<'_, T>,
    ) -> CudaResult<()> {
        self.elementwise("cuda activation", stream, act, h, out, false)
    }

    /// `g ← g ⊙ act'(h)` elementwise, in place on `g`.
    pub fn activation_backward<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        act: Activation,
        h: &CudaView<'_, T>,
        g: &mut CudaViewMut<'_, T>,
    ) -> CudaResult<()> {
        self.elementwise("cuda activation_backward", stream, act, h, g, true)
    }

    fn elementwise<T: DeviceElement>(
        &self,
        op: &'static str,
        stream: &Arc<CudaStream>,
        act: Activation,
        h: &CudaView<'_, T>,
        out: &mut CudaViewMut<'_, T>,
        derivative: bool,
    ) -> CudaResult<()> {
        self.check_stream(op, stream)?;
        check_len(op, "out", h.len(), out.len())?;
        if h.is_empty() {
            return Ok(());
        }
        let (h_ptr, _h) = h.device_ptr(stream);
        let (out_ptr, _o) = out.device_ptr_mut(stream);
        let args = RowsArgs {
            x: h_ptr,
            out: out_ptr,
            rows: h.len() as i64,
            activation: activation_code(act),
            ..RowsArgs::default()
        };
        let kernels = if derivative {
            &self.activation_backward
        } else {
            &self.activation_forward
        };
        let mut launch = stream.launch_builder(&kernels[dtype_index(T::DTYPE)]);
        launch.arg(&args);
        let blocks = h
            .len()
            .div_ceil(ELEMENTWISE_THREADS as usize)
            .min(MAX_BLOCKS);
        // SAFETY: `activation_{forward,backward}_<dtype>` take one `RowsArgs`; h and out hold
        // the same number of elements (checked) and are distinct buffers (one shared borrow, one
        // exclusive).
        unsafe { launch.launch(launch_config(blocks, ELEMENTWISE_THREADS)) }.map_err(driver(op))?;
        Ok(())
    }

    /// `out[i, j] += bias[j]` over `out`'s rows of `bias.len()` (for products whose bias
    /// cuBLASLt's epilogue could not take).
    pub(super) fn add_bias<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        bias: &CudaView<'_, T>,
        out: &mut CudaViewMut<'_, T>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda bias_add";
        self.check_stream(OP, stream)?;
        let cols = bias.len();
        if cols == 0 || out.len() % cols != 0 || cols > i32::MAX as usize {
            return Err(SurgeryError::LengthMismatch {
                op: OP,
                arg: "out",
                expected: out.len().div_ceil(cols.max(1)) * cols,
                got: out.len(),
                why: format!("whole rows of the bias's {cols}"),
            }
            .into());
        }
        if out.is_empty() {
            return Ok(());
        }
        let n = out.len();
        let (b_ptr, _b) = bias.device_ptr(stream);
        let (out_ptr, _o) = out.device_ptr_mut(stream);
        let args = RowsArgs {
            b: b_ptr,
            out: out_ptr,
            rows: n as i64,
            cols: cols as i32,
            ..RowsArgs::default()
        };
        let mut launch = stream.launch_builder(&self.bias_add[dtype_index(T::DTYPE)]);
        launch.arg(&args);
        let blocks = n.div_ceil(ELEMENTWISE_THREADS as usize).min(MAX_BLOCKS);
        // SAFETY: `bias_add_<dtype>` takes one `RowsArgs`; out holds whole rows of cols elements
        // and bias cols (checked above); the two are distinct buffers.
        unsafe { launch.launch(launch_config(blocks, ELEMENTWISE_THREADS)) }.map_err(driver(OP))?;
        Ok(())
    }

    /// The checks every layer-norm call shares (the addresses' alignment is checked once they
    /// are known); returns the row count.
    fn check_rows<T: DeviceElement>(
        &self,
        op: &'static str,
        stream: &CudaStream,
        cols: usize,
        x_len: usize,
    ) -> CudaResult<usize> {
        self.check_stream(op, stream)?;
        let vector = 16 / size_of::<T>();
        if cols == 0 || cols % vector != 0 || cols > contract::LAYER_NORM_MAX_COLS {
            return Err(SurgeryError::InvalidValue {
                op,
                arg: "weight",
                value: format!("{cols} columns"),
                why: "rows must be a non-zero multiple of 16 bytes and at most 2048 columns",
            }
            .into());
        }
        if x_len % cols != 0 {
            return Err(SurgeryError::LengthMismatch {
                op,
                arg: "x",
                expected: x_len.div_ceil(cols) * cols,
                got: x_len,
                why: format!("whole rows of {cols}"),
            }
            .into());
        }
        if x_len / cols > i64::MAX as usize {
            return Err(CudaSurgeryError::TooLarge {
                op,
                what: "rows",
                got: x_len / cols,
                max: i64::MAX as usize,
            });
        }
        Ok(x_len / cols)
    }
}
