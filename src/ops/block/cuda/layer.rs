//! The layer op's forward on the device: the CPU twin's decomposition (`ops::block::cpu`), step
//! for step — layer norm, one q/k/v product with its bias in the epilogue, the adapters' down-
//! and up-projections (the up-projection accumulated into q/k/v's column blocks with the
//! adapter scale as α), the fused attention on the packed q/k/v, the out-projection with the
//! residual through β = 1, the MLP. f16 and bf16 (the fused attention's types).
//!
//! Kept for the backward: what the CPU twin keeps (layer-norm statistics, q/k/v, the adapters'
//! down-projections, the attention row log-sum-exp, the post-attention residual, the MLP
//! pre-activation) and the attention output `O` as well, which the flash backward's row term
//! `rowsum(dO ⊙ O)` reads; recomputing it would cost a second attention forward per layer, keeping
//! it costs C values per token. The backward is in [`layer_backward`](super::layer_backward).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView};

use super::{
    BlockKernels, DeviceDropout, DeviceLayerNorm, GemmOperands, GemmShape, Gemms, LeadingDims,
};
use crate::ops::attention::cuda::{
    AttentionKernels, AttentionShape, HEAD_DIM, HeadLayout, Heads, packed_layout,
};
use crate::ops::block::dims::Dims;
use crate::ops::block::{BlockConfig, Dropout};
use crate::surgery::DType;
use crate::surgery::cuda::error::{driver, invalid};
use crate::surgery::cuda::{CudaResult, DeviceElement};

/// Everything the layer launches, on one stream: the row kernels, the attention kernels and
/// cuBLASLt with its plans.
pub struct LayerEngine {
    pub(super) kernels: Arc<BlockKernels>,
    pub(super) attention: AttentionKernels,
    pub(super) gemms: Gemms,
}

impl LayerEngine {
    /// Loads the kernels into `stream`'s context and sets up cuBLASLt on `stream`.
    pub fn new(stream: Arc<CudaStream>) -> CudaResult<Self> {
        let ctx = stream.context().clone();
        let kernels = Arc::new(BlockKernels::with_context(ctx.clone())?);
        let attention = AttentionKernels::with_context(ctx)?;
        let gemms = Gemms::new(stream, kernels.clone())?;
        Ok(Self {
            kernels,
            attention,
            gemms,
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        self.gemms.stream()
    }
}

/// A frozen layer's weights on the device, torch layout (`[out, in]`), each `(weight, bias)`.
pub struct DeviceWeights<'a, T> {
    pub ln1: (CudaView<'a, T>, CudaView<'a, T>),
    pub qkv: (CudaView<'a, T>, CudaView<'a, T>),
    pub out: (CudaView<'a, T>, CudaView<'a, T>),
    pub ln2: (CudaView<'a, T>, CudaView<'a, T>),
    pub fc1: (CudaView<'a, T>, CudaView<'a, T>),
    pub fc2: (CudaView<'a, T>, CudaView<'a, T>),
}

/// The adapters on q, k and v: `a` `[3, r, C]`, `b` `[3, C, r]`, the scale, and the dropout on
/// their input in a training pass.
pub struct DeviceAdapters<'a, T> {
    pub a: CudaView<'a, T>,
    pub b: CudaView<'a, T>,
    pub rank: usize,
    pub scale: f32,
    pub dropout: Option<Dropout>,
}

/// One call: the layer's settings and sizes (every row is an output row on the device).
#[derive(Clone, Copy, Debug)]
pub struct LayerCall {
    pub cfg: BlockConfig,
    pub d: Dims,
}

/// What the training forward keeps for the backward (see the module docs).
pub struct DeviceSaved<T> {
    pub(super) stats1: CudaSlice<f32>,
    pub(super) qkv: CudaSlice<T>,
    /// `[3, N, r]`, each projection's block padded to [`z_stride`] elements.
    pub(super) z: Option<CudaSlice<T>>,
    pub(super) o: CudaSlice<T>,
    pub(super) lse: CudaSlice<f32>,
    pub(super) res1: CudaSlice<T>,
    pub(super) stats2: CudaSlice<f32>,
    pub(super) h: CudaSlice<T>,
}

/// An uninitialised device buffer.
///
/// # Safety
/// Every element must be written before it is read.
pub(super) unsafe fn scratch<T: DeviceElement>(
    stream: &Arc<CudaStream>,
    len: usize,
) -> CudaResult<CudaSlice<T>> {
    // SAFETY: the caller writes every element before any read (this function's contract).
    unsafe { stream.alloc::<T>(len) }.map_err(driver("layer op alloc"))
}

/// Elements between the projections' blocks of `z` (`[N, r]` each): a multiple of 8, so each
/// block starts 16-byte aligned as cuBLASLt's plans require.
pub(super) fn z_stride(d: Dims, rank: usize) -> usize {
    (d.tokens() * rank).next_multiple_of(8)
}

impl LayerCall {
    /// The attention problem, after checking the fused kernels take this type and head size.
    pub(super) fn attention<T: DeviceElement>(&self) -> CudaResult<AttentionShape> {
        const OP: &str = "cuda layer op";
        let d = self.d;
        if T::DTYPE == DType::F32 {
            let why = "the device layer takes f16 or bf16 (the fused attention's types)";
            return Err(invalid(OP, "dtype", "f32".into(), why));
        }
        if d.head_dim() != HEAD_DIM {
            let heads = format!("{} heads of {} channels", d.heads, d.head_dim());
            let why = "the fused attention kernels take a head size of 64";
            return Err(invalid(OP, "heads", heads, why));
        }
        Ok(AttentionShape {
            batch: d.batch,
            heads: d.heads,
            t: d.seq,
            scale: (d.head_dim() as f32).powf(-0.5),
            causal: self.cfg.causal,
        })
    }

    /// The attention output's layout: `[N, C]` rows, heads side by side.
    pub(super) fn merged(&self) -> HeadLayout {
        let d = self.d;
        HeadLayout {
            batch_stride: d.seq * d.channels,
            head_stride: HEAD_DIM,
            row_stride: d.channels,
        }
    }

    pub(super) fn norm<'a, T>(
        &self,
        (weight, bias): &'a (CudaView<'a, T>, CudaView<'a, T>),
    ) -> DeviceLayerNorm<'a, T> {
        DeviceLayerNorm {
            weight,
            bias,
            eps: self.cfg.eps,
        }
    }
}

impl<'a, T> DeviceAdapters<'a, T> {
    /// Projection `p`'s `A` (`[r, C]`) and `B` (`[C, r]`).
    pub(super) fn projection(&self, p: usize, c: usize) -> (CudaView<'_, T>, CudaView<'_, T>) {
        let size = self.rank * c;
        (
            self.a.slice(p * size..(p + 1) * size),
            self.b.slice(p * size..(p + 1) * size),
        )
    }

    /// A buffer for the adapters' masked input (`len` elements) when the pass has dropout.
    pub(super) fn dropout_buffer(
        &self,
        s: &Arc<CudaStream>,
        len: usize,
    ) -> CudaResult<Option<CudaSlice<T>>>
    where
        T: DeviceElement,
    {
        // SAFETY: rewritten in full by the dropout kernel before each read (`adapter_input`).
        self.dropout
            .map(|_| unsafe { scratch::<T>(s, len) })
            .transpose()
    }

    /// Projection `p`'s mask in a training pass.
    pub(super) fn mask(&self, p: usize) -> Option<DeviceDropout> {
        self.dropout.map(|drop| DeviceDropout {
            key: drop.key,
            layer: drop.layer,
            projection: p,
            p: drop.p,
            start: 0,
        })
    }
}

/// The adapters' input for one projection: the layer norm's output `ln`, or, with a mask and a
/// buffer from [`DeviceAdapters::dropout_buffer`], `ln` under the mask written into `spare`.
pub(super) fn adapter_input<'b, T: DeviceElement>(
    e: &LayerEngine,
    ln: &'b CudaSlice<T>,
    spare: &'b mut Option<CudaSlice<T>>,
    mask: Option<&DeviceDropout>,
) -> CudaResult<CudaView<'b, T>> {
    match (spare, mask) {
        (Some(buf), Some(mask)) => {
            let out = &mut buf.slice_mut(..);
            e.kernels.dropout(e.stream(), &ln.slice(..), out, mask)?;
            Ok(buf.slice(..))
        }
        _ => Ok(ln.slice(..)),
    }
}

/// `out = a · Wᵀ + bias (+ residual)`: a linear layer over `m` rows.
pub(super) fn linear<T: DeviceElement>(
    gemms: &Gemms,
    (m, n, k): (usize, usize, usize),
    a: &CudaView<'_, T>,
    (w, bias): &(CudaView<'_, T>, CudaView<'_, T>),
    residual: Option<&CudaView<'_, T>>,
    out: &mut CudaSlice<T>,
) -> CudaResult<()> {
    let x = GemmOperands {
        bias: Some(bias),
        residual,
        ..GemmOperands::new(a, w)
    };
    gemms.matmul(GemmShape::linear(m, n, k), &x, &mut out.slice_mut(..))
}

/// The layer's output (`[N, C]`) on `x` (`[N, C]`), with what the backward needs when `keep`.
pub fn forward<T: DeviceElement>(
    e: &LayerEngine,
    call: &LayerCall,
    x: &CudaView<'_, T>,
    w: &DeviceWeights<'_, T>,
    lora: Option<&DeviceAdapters<'_, T>>,
    keep: bool,
) -> CudaResult<(CudaSlice<T>, Option<DeviceSaved<T>>)> {
    let (s, d) = (e.stream(), call.d);
    let (n, c, i) = (d.tokens(), d.channels, d.intermediate);
    let shape = call.attention::<T>()?;
    // SAFETY (each `scratch` below): the layer norms, products, attention and activation write
    // every element of their outputs before anything reads them.
    let mut ln = unsafe { scratch::<T>(s, n * c) }?;
    let mut stats1 = unsafe { scratch::<f32>(s, 2 * n) }?;
    let norm1 = call.norm(&w.ln1);
    let stats = Some(&mut stats1.slice_mut(..));
    e.kernels
        .layer_norm(s, x, &norm1, &mut ln.slice_mut(..), stats)?;
    let mut qkv = unsafe { scratch::<T>(s, n * 3 * c) }?;
    linear(
        &e.gemms,
        (n, 3 * c, c),
        &ln.slice(..),
        &w.qkv,
        None,
        &mut qkv,
    )?;
    let z = lora
        .map(|l| lora_forward(e, d, &ln, l, &mut qkv))
        .transpose()?;

    let mut o = unsafe { scratch::<T>(s, n * c) }?;
    let mut lse = unsafe { scratch::<f32>(s, d.batch * d.heads * d.seq) }?;
    let (layout, part) = packed_layout(&shape);
    let parts = [0, 1, 2].map(|p| qkv.slice(p * part..));
    let heads = [0, 1, 2].map(|p| Heads {
        data: &parts[p],
        layout,
    });
    let o_out = (&mut o.slice_mut(..), call.merged());
    e.attention
        .forward(s, &shape, heads, o_out, &mut lse.slice_mut(..))?;

    let mut res1 = unsafe { scratch::<T>(s, n * c) }?;
    linear(
        &e.gemms,
        (n, c, c),
        &o.slice(..),
        &w.out,
        Some(x),
        &mut res1,
    )?;
    let mut stats2 = unsafe { scratch::<f32>(s, 2 * n) }?;
    let norm2 = call.norm(&w.ln2);
    let stats = Some(&mut stats2.slice_mut(..));
    e.kernels
        .layer_norm(s, &res1.slice(..), &norm2, &mut ln.slice_mut(..), stats)?;
    let mut h = unsafe { scratch::<T>(s, n * i) }?;
    linear(&e.gemms, (n, i, c), &ln.slice(..), &w.fc1, None, &mut h)?;
    drop(ln);
    let mut act = unsafe { scratch::<T>(s, n * i) }?;
    let activation = call.cfg.activation;
    e.kernels
        .activation(s, activation, &h.slice(..), &mut act.slice_mut(..))?;
    let mut out = unsafe { scratch::<T>(s, n * c) }?;
    let res = res1.slice(..);
    linear(
        &e.gemms,
        (n, c, i),
        &act.slice(..),
        &w.fc2,
        Some(&res),
        &mut out,
    )?;

    let saved = keep.then_some(DeviceSaved {
        stats1,
        qkv,
        z,
        o,
        lse,
        res1,
        stats2,
        h,
    });
    Ok((out, saved))
}

/// Adds the adapters' updates `s · Bₚ zₚ` into q/k/v's column blocks; returns `z`, the
/// down-projections `zₚ = drop(ln) Aₚᵀ`.
fn lora_forward<T: DeviceElement>(
    e: &LayerEngine,
    d: Dims,
    ln: &CudaSlice<T>,
    l: &DeviceAdapters<'_, T>,
    qkv: &mut CudaSlice<T>,
) -> CudaResult<CudaSlice<T>> {
    let (s, n, c, r) = (e.stream(), d.tokens(), d.channels, l.rank);
    let zs = z_stride(d, r);
    // SAFETY: each projection's block is written by its down-projection below (the padding
    // between blocks is never read).
    let mut z = unsafe { scratch::<T>(s, 3 * zs) }?;
    let mut dropped = l.dropout_buffer(s, n * c)?;
    for p in 0..3 {
        let (a, b) = l.projection(p, c);
        let input = adapter_input(e, ln, &mut dropped, l.mask(p).as_ref())?;
        let zp = &mut z.slice_mut(p * zs..p * zs + n * r);
        e.gemms.matmul(
            GemmShape::linear(n, r, c),
            &GemmOperands::new(&input, &a),
            zp,
        )?;
        let up = GemmShape {
            ld: Some(LeadingDims {
                a: r,
                b: r,
                d: 3 * c,
            }),
            ..GemmShape::linear(n, c, r)
        };
        let zp = z.slice(p * zs..p * zs + n * r);
        let x = GemmOperands {
            accumulate: true,
            alpha: l.scale,
            ..GemmOperands::new(&zp, &b)
        };
        e.gemms.matmul(up, &x, &mut qkv.slice_mut(p * c..))?;
    }
    Ok(z)
}
