//! The fused attention kernels on the device (`kernels/attention.cu`, feature `cuda-kernels`):
//! forward (output and each row's log-sum-exp) and backward (dQ, dK, dV from the saved
//! log-sum-exp), head dimension 64, f16 and bf16, any length, optional causal mask. The design is
//! in docs/kernels.md; [`reference`](super::reference) is what the GPU tests hold it to.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut, DevicePtr,
    DevicePtrMut, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

mod backward;
mod check;

use crate::surgery::cuda::error::{driver, invalid};
use crate::surgery::cuda::launch::{check_stream_context, grid_config, kernel_args};
use crate::surgery::cuda::{CudaResult, CudaSurgeryError, DeviceElement};
use crate::surgery::{DType, contract};
use check::{check_disjoint, check_operand, check_stats};

/// The head dimension the kernels are written for.
pub const HEAD_DIM: usize = 64;

/// Rows per block and threads per block of the kernels.
const TILE: usize = 64;
const THREADS: u32 = 128;

const ATTENTION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/attention.fatbin"));

/// Where the `[batch, heads, t, 64]` values of one operand lie in its buffer, in elements (the
/// last dimension contiguous). Q, K and V may be views of one fused `[batch, t, 3, heads, 64]`
/// projection, for example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    pub batch_stride: usize,
    pub head_stride: usize,
    pub row_stride: usize,
}

impl HeadLayout {
    /// `[batch, heads, t, 64]`, contiguous.
    pub fn contiguous(heads: usize, t: usize) -> Self {
        Self {
            batch_stride: heads * t * HEAD_DIM,
            head_stride: t * HEAD_DIM,
            row_stride: HEAD_DIM,
        }
    }
}

/// The problem: sizes, the softmax scale, and whether keys after a query are masked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub t: usize,
    pub scale: f32,
    pub causal: bool,
}

/// One operand on the device: its buffer and its layout.
#[derive(Clone, Copy, Debug)]
pub struct Heads<'a, T> {
    pub data: &'a CudaView<'a, T>,
    pub layout: HeadLayout,
}

/// The fused attention kernels loaded into one CUDA context.
pub struct AttentionKernels {
    ctx: Arc<CudaContext>,
    /// `[f16, bf16]` each.
    forward: [CudaFunction; 2],
    delta: [CudaFunction; 2],
    dk_dv: [CudaFunction; 2],
    dq: [CudaFunction; 2],
}

/// `AttentionStrides` of kernels/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Strides {
    batch: i64,
    head: i64,
    row: i64,
}

impl From<HeadLayout> for Strides {
    fn from(l: HeadLayout) -> Self {
        // Checked to fit in i64 by `check_layout` (the extent fits in the buffer's length).
        Self {
            batch: l.batch_stride as i64,
            head: l.head_stride as i64,
            row: l.row_stride as i64,
        }
    }
}

/// `AttentionArgs` of kernels/attention.cu, passed by value; unused pointers are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct AttentionArgs {
    q: u64,
    k: u64,
    v: u64,
    o: u64,
    lse: u64,
    d_o: u64,
    dq: u64,
    dk: u64,
    dv: u64,
    delta: u64,
    sq: Strides,
    sk: Strides,
    sv: Strides,
    so: Strides,
    batch: i32,
    heads: i32,
    t: i32,
    causal: i32,
    scale: f32,
    reserved: i32,
}

kernel_args!(AttentionArgs, contract::ATTENTION_ARGS_BYTES);
const _: () = assert!(size_of::<Strides>() == 24);

impl AttentionKernels {
    /// Load the kernels into `ctx` (for example candle's, or a `CudaSurgery`'s).
    pub fn with_context(ctx: Arc<CudaContext>) -> CudaResult<Self> {
        const OP: &str = "load attention kernels";
        let module = ctx
            .load_module(Ptx::from_binary(ATTENTION.to_vec()))
            .map_err(driver(OP))?;
        let f = |m: &Arc<CudaModule>, base: &str| -> CudaResult<[CudaFunction; 2]> {
            Ok([
                m.load_function(&format!("{base}_f16"))
                    .map_err(driver(OP))?,
                m.load_function(&format!("{base}_bf16"))
                    .map_err(driver(OP))?,
            ])
        };
        Ok(Self {
            forward: f(&module, "attention_forward")?,
            delta: f(&module, "attention_delta")?,
            dk_dv: f(&module, "attention_dk_dv")?,
            dq: f(&module, "attention_dq")?,
            ctx,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// `O = softmax(scale · Q Kᵀ) V` into `o` (laid out as `o_layout`) and each row's
    /// log-sum-exp into `lse` (`[batch, heads, t]`). One launch, no host synchronisation.
    pub fn forward<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        shape: &AttentionShape,
        [q, k, v]: [Heads<'_, T>; 3],
        (o, o_layout): (&mut CudaViewMut<'_, T>, HeadLayout),
        lse: &mut CudaViewMut<'_, f32>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda attention forward";
        let kernel = self.check(OP, stream, shape, T::DTYPE)?;
        for (arg, h) in [("q", &q), ("k", &k), ("v", &v)] {
            check_operand(
                OP,
                arg,
                shape,
                h.layout,
                h.data.len(),
                address(h.data, stream),
            )?;
        }
        check_operand(OP, "o", shape, o_layout, o.len(), address_mut(o, stream))?;
        check_disjoint(OP, "o", shape, o_layout)?;
        check_stats(OP, "lse", shape, lse.len())?;
        if shape.batch * shape.heads * shape.t == 0 {
            return Ok(());
        }
        // The guards keep each buffer's stream ordering in force until the launch is queued.
        let (q_ptr, _q) = q.data.device_ptr(stream);
        let (k_ptr, _k) = k.data.device_ptr(stream);
        let (v_ptr, _v) = v.data.device_ptr(stream);
        let (o_ptr, _o) = o.device_ptr_mut(stream);
        let (lse_ptr, _l) = lse.device_ptr_mut(stream);
        let args = AttentionArgs {
            q: q_ptr,
            k: k_ptr,
            v: v_ptr,
            o: o_ptr,
            lse: lse_ptr,
            sq: q.layout.into(),
            sk: k.layout.into(),
            sv: v.layout.into(),
            so: o_layout.into(),
            ..base_args(shape)
        };
        let mut launch = stream.launch_builder(&self.forward[kernel]);
        launch.arg(&args);
        // SAFETY: `attention_forward_<dtype>` takes one `AttentionArgs`; every operand's extent
        // under its layout fits its buffer, its strides are multiples of 8 elements and its
        // address 16-byte aligned (checked), lse holds batch × heads × t floats (checked), and
        // the backward's pointers are null and unused.
        unsafe { launch.launch(self.blocks(shape)) }.map_err(driver(OP))?;
        Ok(())
    }

    /// The kernel index of `dtype` after the checks every call shares.
    fn check(
        &self,
        op: &'static str,
        stream: &CudaStream,
        shape: &AttentionShape,
        dtype: DType,
    ) -> CudaResult<usize> {
        check_stream_context(op, stream, &self.ctx)?;
        if !shape.scale.is_finite() {
            return Err(invalid(
                op,
                "scale",
                shape.scale.to_string(),
                "it must be finite",
            ));
        }
        for (what, got, max) in [
            ("t", shape.t, i32::MAX as usize - TILE),
            ("heads", shape.heads, 65_535),
            ("batch", shape.batch, 65_535),
        ] {
            if got > max {
                return Err(CudaSurgeryError::TooLarge { op, what, got, max });
            }
        }
        match dtype {
            DType::F16 => Ok(0),
            DType::BF16 => Ok(1),
            DType::F32 => Err(invalid(
                op,
                "dtype",
                "f32".into(),
                "the fused attention kernels take f16 or bf16",
            )),
        }
    }

    fn blocks(&self, shape: &AttentionShape) -> cudarc::driver::LaunchConfig {
        let tiles = shape.t.div_ceil(TILE) as u32;
        grid_config((tiles, shape.heads as u32, shape.batch as u32), THREADS)
    }
}

/// The layout of q (and of k and v, `part` elements further on) in a packed
/// `[batch, t, 3, heads, 64]` buffer, and `part` (C = heads · 64).
pub fn packed_layout(shape: &AttentionShape) -> (HeadLayout, usize) {
    let part = shape.heads * HEAD_DIM;
    let layout = HeadLayout {
        batch_stride: shape.t * 3 * part,
        head_stride: HEAD_DIM,
        row_stride: 3 * part,
    };
    (layout, part)
}

fn base_args(shape: &AttentionShape) -> AttentionArgs {
    AttentionArgs {
        batch: shape.batch as i32,
        heads: shape.heads as i32,
        t: shape.t as i32,
        causal: i32::from(shape.causal),
        scale: shape.scale,
        ..AttentionArgs::default()
    }
}

fn address<T>(v: &CudaView<'_, T>, stream: &CudaStream) -> u64 {
    v.device_ptr(stream).0
}

fn address_mut<T>(v: &mut CudaViewMut<'_, T>, stream: &CudaStream) -> u64 {
    v.device_ptr_mut(stream).0
}
