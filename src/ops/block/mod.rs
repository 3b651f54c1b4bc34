//! One CLIP transformer layer as one autograd op, with its own forward and backward.
//!
//! The layer is pre-norm: `r = x + Wₒ·attn(LN₁(x)) + bₒ`, `y = r + W₂·act(W₁·LN₂(r) + b₁) + b₂`,
//! with q, k and v one product against the concatenated `[3C, C]` weight and, on the student,
//! a LoRA update `s · Bₚ Aₚ drop(LN₁(x))` added into each of them. Through candle's per-op
//! autograd this was about forty recorded ops per layer, each keeping its inputs, each
//! differentiated in full (weight gradients nobody needs, zero-filled accumulators). Here the
//! base weights are frozen constants of the op; its inputs are only the hidden states and the
//! packed adapters (`A` as `[3, r, C]`, `B` as `[3, C, r]`; `Tensor::stack` packs them and its
//! backward splits the gradients again), and its backward returns only their gradients.
//!
//! **What a training forward keeps** (besides its input `x`, which the graph holds anyway), per
//! token: the fused q/k/v (3C), the post-attention residual `r` (C), the MLP pre-activation
//! (I = 4C for CLIP), the adapters' down-projections (3r), two layer norms' mean and 1/σ (4),
//! and per head the attention row's log-sum-exp (H). That is `≈ 8C + 3r + H + 4` values per
//! token, plus `x` — 9C for CLIP's MLP ratio: for ViT-L/14 at batch 32 in f32, `32·257·9·1024·4`
//! bytes ≈ 303 MB per layer. Recomputed in the backward instead of kept: the layer-norm
//! outputs (from `x` or `r` and their statistics), the attention probabilities
//! (`P = exp(S − lse)`), the dropout masks (a pure function of the key: [`philox`]), the
//! activation's output. The backward takes what was kept (freeing it as it passes); a second
//! backward through the same graph recomputes it from the input.
//!
//! A frozen pass (the teacher, the text tower, evaluation) runs the same forward keeping
//! nothing (without adapters, something is kept only when the input carries a gradient, which
//! then flows through). When the input carries no gradient (the first layer: the embeddings are frozen)
//! the backward skips the input gradient, and with it the largest of its products.
//!
//! A DGS step runs the student and its frozen teacher over the same images. On the CPU both go
//! through one call per layer ([`Adapters::images`]): the batch holds the student's images and
//! then the teacher's, the adapters act on the first half only, and only that half is kept and
//! differentiated (it is a prefix of every row-major buffer). The products then run on twice
//! the rows, which the CPU's `gemm` does faster per row.
//!
//! On the CPU the op computes in f32 (f16/bf16 operands are widened on entry and the output
//! rounded once): the twin the CUDA op is tested against. Its forward products read the
//! projections from an f32 copy transposed to `[in, out]`, made once per layer on the first CPU
//! call (see `LayerWeights`' `forward_projections`: twice the `gemm` crate's rate on the fc2 and
//! out-projection shapes, for one more copy of the projections in memory). On CUDA (feature
//! `cuda`; f16 and bf16, head size 64) it runs the same decomposition on the device —
//! cuBLASLt products, our row kernels, the fused attention, the same Philox dropout masks —
//! through [`cuda`]'s `forward`/`backward`, keeping also the attention output (the flash
//! backward reads it). That path is **untested on GPU** so far: `clip` uses it only when
//! `DGS_CUDA_LAYER=fused` is set (`clip::layer_ops`, candle's tensor ops under autograd, is the
//! default on CUDA until a GPU run has checked it; docs/kernels.md).

mod activation;
mod cpu;
mod cpu_attention;
mod cpu_gemm;
mod cpu_lora;
/// The layer's row-wise pieces on the CPU: the twins the CUDA row kernels are tested against.
pub mod cpu_rows;
#[cfg(feature = "cuda-kernels")]
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_op;
mod dims;
mod fast_exp;
mod outputs;
pub(crate) mod philox;
mod slices;
mod weights;

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

pub use activation::Activation;
pub use dims::Dims;
use outputs::Outputs;
pub use philox::{DropoutKey, MaskStream, philox4x32};
pub use weights::LayerWeights;

use slices::{cpu_f32, with_cpu_f32};

/// The layer's fixed settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockConfig {
    pub heads: usize,
    pub eps: f32,
    pub activation: Activation,
    /// Each token attends only to itself and earlier ones (the text tower).
    pub causal: bool,
}

/// Dropout on the adapters' input in a training pass: probability `p`, masks drawn from the
/// stream of (`key`, `layer`, projection).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub key: DropoutKey,
    pub layer: usize,
    pub p: f32,
}

/// The adapters of one layer, packed: `a` `[3, r, C]` (q, k, v), `b` `[3, C, r]`, their scale,
/// and the dropout of a training pass.
pub struct Adapters<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub scale: f64,
    pub dropout: Option<Dropout>,
    /// `Some(n)`: the adapters act on the first `n` images of the batch only, and the others are
    /// a frozen pass of the same layer — no adapters, nothing kept for them, and no gradient
    /// through their rows (their outputs are constants, as if detached). `None`: every image.
    ///
    /// This lets a student and its frozen teacher (the same base weights) share one call: the
    /// products then run on twice the rows, where the `gemm` crate is 15–25% faster per row
    /// (ViT-B/32 at batch 4, 200 against 400 rows, 2-core VM). CPU only: a CUDA call with a
    /// frozen part is refused.
    pub images: Option<usize>,
}

/// What the training forward keeps for the backward (see the module docs).
struct Saved {
    stats1: Vec<f32>,
    qkv: Vec<f32>,
    z: Vec<f32>,
    lse: Vec<f32>,
    res1: Vec<f32>,
    stats2: Vec<f32>,
    h: Vec<f32>,
}

struct BlockOp {
    weights: Arc<LayerWeights>,
    cfg: BlockConfig,
    /// The adapters' rank (their shapes are checked when the op is made).
    rank: usize,
    scale: f32,
    dropout: Option<Dropout>,
    /// One output row per image at these positions, or (`None`) every row.
    pooled: Option<Vec<usize>>,
    /// Whether the backward must return the input gradient.
    want_dx: bool,
    /// Whether the forward keeps what the backward needs.
    keep: bool,
    /// The images the adapters act on and gradients flow through, when fewer than the batch
    /// (the rest are a frozen pass: [`Adapters::images`]).
    adapted_images: Option<usize>,
    saved: Mutex<Option<Saved>>,
    /// What a CUDA training forward keeps, for its backward.
    #[cfg(feature = "cuda")]
    device_saved: Mutex<Option<cuda_op::DeviceKept>>,
}

/// One layer on `x` (`[B, T, C]`), with `adapters` on q/k/v when given: `[B, T, C]`. The result
/// records a backward pass when anything it depends on is trainable.
pub fn block(
    x: &Tensor,
    weights: &Arc<LayerWeights>,
    cfg: BlockConfig,
    adapters: Option<Adapters<'_>>,
) -> Result<Tensor> {
    apply(x, weights, cfg, adapters, None)
}

/// [`block`] computed at one row per image only, position `rows[b]` of image `b`: `[B, 1, C]`,
/// equal to those rows of [`block`]'s output. For a tower's last layer, whose only use is its
/// pooled token.
pub fn block_pooled(
    x: &Tensor,
    weights: &Arc<LayerWeights>,
    cfg: BlockConfig,
    adapters: Option<Adapters<'_>>,
    rows: &[usize],
) -> Result<Tensor> {
    let (batch, seq, _) = x.dims3()?;
    if rows.len() != batch || rows.iter().any(|r| *r >= seq) {
        candle_core::bail!("layer op: pooled rows {rows:?} for {batch} images of {seq} tokens")
    }
    apply(x, weights, cfg, adapters, Some(rows.to_vec()))
}

fn apply(
    x: &Tensor,
    weights: &Arc<LayerWeights>,
    cfg: BlockConfig,
    adapters: Option<Adapters<'_>>,
    pooled: Option<Vec<usize>>,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    weights.dims(x.shape(), cfg.heads)?;
    // candle checks the op's tensor arguments only; the weights travel inside the op.
    if let Some(w) = weights
        .all()
        .into_iter()
        .find(|w| !w.device().same_device(x.device()))
    {
        candle_core::bail!(
            "layer op: a weight is on {:?}, the input on {:?}",
            w.device().location(),
            x.device().location()
        )
    }
    let mut op = BlockOp {
        weights: weights.clone(),
        cfg,
        rank: 0,
        scale: 0.0,
        dropout: None,
        pooled,
        want_dx: false,
        keep: false,
        adapted_images: None,
        saved: Mutex::new(None),
        #[cfg(feature = "cuda")]
        device_saved: Mutex::new(None),
    };
    let Some(ad) = adapters else {
        // Without adapters the only gradient is the input's: recorded when it carries one.
        (op.want_dx, op.keep) = (x.track_op(), x.track_op());
        return match op.keep {
            true => x.apply_op1(op),
            false => x.apply_op1_no_bwd(&op),
        };
    };
    let channels = x.dim(2)?;
    let rank = ad.a.dims().get(1).copied().unwrap_or(0);
    if ad.a.dims() != [3, rank, channels] || ad.b.dims() != [3, channels, rank] || rank == 0 {
        candle_core::bail!(
            "layer op: adapters A {:?} and B {:?}, expected [3, r, {channels}] and [3, {channels}, r]",
            ad.a.dims(),
            ad.b.dims()
        )
    }
    op.adapted_images = adapted_images(&x, ad.images)?;
    let trainable = x.track_op() || ad.a.track_op() || ad.b.track_op();
    (op.rank, op.scale, op.dropout) = (rank, ad.scale as f32, ad.dropout);
    (op.want_dx, op.keep) = (x.track_op(), trainable);
    // The device op computes in the activations' type: adapters kept in f32 are cast (under
    // autograd, so their gradients come back in f32); the CPU op widens everything itself.
    let cast = |t: &Tensor| match x.device().is_cuda() {
        true => t.to_dtype(x.dtype())?.contiguous(),
        false => t.contiguous(),
    };
    let (a, b) = (cast(ad.a)?, cast(ad.b)?);
    match trainable {
        true => x.apply_op3(&a, &b, op),
        false => x.apply_op3_no_bwd(&a, &b, &op),
    }
}

/// The images a call's adapters act on when fewer than the batch, checked (see
/// [`Adapters::images`]).
fn adapted_images(x: &Tensor, images: Option<usize>) -> Result<Option<usize>> {
    let batch = x.dim(0)?;
    match images {
        None => Ok(None),
        Some(n) if n == 0 || n > batch => {
            candle_core::bail!("layer op: adapters on {n} images of a batch of {batch}")
        }
        Some(n) if n == batch => Ok(None),
        Some(n) if x.device().is_cuda() => candle_core::bail!(
            "layer op: adapters on {n} of {batch} images (a frozen part in the call) run on the \
             CPU only"
        ),
        Some(n) => Ok(Some(n)),
    }
}

impl BlockOp {
    fn outputs(&self) -> Outputs<'_> {
        self.pooled.as_deref().map_or(Outputs::All, Outputs::Pooled)
    }

    /// The call's description, with the adapters `(a, b)` when given.
    fn call<'a>(&'a self, d: Dims, lora: Option<(&'a [f32], &'a [f32])>) -> cpu::Call<'a> {
        let lora = lora.map(|(a, b)| cpu_lora::Lora {
            a,
            b,
            rank: self.rank,
            scale: self.scale,
            dropout: self.dropout,
        });
        let adapted = self.adapted_images.unwrap_or(d.batch).min(d.batch);
        let outputs = match self.outputs() {
            Outputs::Pooled(rows) => Outputs::Pooled(&rows[..d.batch]),
            all => all,
        };
        cpu::Call {
            cfg: self.cfg,
            d,
            outputs,
            lora,
            adapted,
        }
    }

    /// The CPU backward from the gradient at the output; takes what the forward kept.
    fn backward_cpu(
        &self,
        x: &Tensor,
        lora: Option<(&Tensor, &Tensor)>,
        grad: &Tensor,
    ) -> Result<cpu::Backward> {
        // With a frozen part, only the adapted images' rows (a prefix of every buffer) have a
        // backward: the rest carry no gradient.
        let full = self.weights.dims(x.shape(), self.cfg.heads)?;
        let d = Dims {
            batch: self.adapted_images.unwrap_or(full.batch),
            ..full
        };
        let taken = self
            .saved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (x, grad) = (x.narrow(0, 0, d.batch)?, grad.narrow(0, 0, d.batch)?);
        let (x, grad) = (&x.contiguous()?, grad.contiguous()?);
        let mut operands = vec![x, &grad];
        operands.extend(lora.into_iter().flat_map(|(a, b)| [a, b]));
        let projections = self.weights.forward_projections()?;
        with_cpu_f32(&operands, |t| {
            let adapters = (t.len() == 4).then(|| (&*t[2], &*t[3]));
            let call = self.call(d, adapters);
            with_cpu_f32(&self.weights.all(), |w| {
                let weights = cpu::Weights::from_slices(w, &projections);
                let saved = match taken {
                    Some(s) => s,
                    // A second backward through the same graph: recompute what was kept.
                    None => cpu::forward(&call, &t[0], &weights, true)
                        .1
                        .ok_or_else(|| {
                            candle_core::Error::Msg("layer op: the forward kept nothing".into())
                        })?,
                };
                let dy = &t[1];
                let mut parts = cpu::backward(&call, &t[0], &weights, &saved, dy, self.want_dx);
                // The frozen images' rows follow the adapted ones: their gradient is zero.
                if let Some(dx) = parts.dx.as_mut() {
                    dx.resize(full.tokens() * full.channels, 0.0);
                }
                Ok(parts)
            })
        })
    }

    fn out_shape(&self, d: Dims) -> Shape {
        (d.batch, self.outputs().per_image(d.seq), d.channels).into()
    }

    /// The CPU forward; keeps what the backward needs when this op records one.
    fn forward_cpu(
        &self,
        x: (&CpuStorage, &Layout),
        lora: Option<(&[f32], &[f32])>,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.weights.dims(x.1.shape(), self.cfg.heads)?;
        let call = self.call(d, lora);
        let input = cpu_f32(x.0, x.1)?;
        let projections = self.weights.forward_projections()?;
        let (out, saved) = with_cpu_f32(&self.weights.all(), |w| {
            Ok(cpu::forward(
                &call,
                &input,
                &cpu::Weights::from_slices(w, &projections),
                self.keep,
            ))
        })?;
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = saved;
        Ok((slices::to_storage(out, x.0.dtype())?, self.out_shape(d)))
    }
}

impl CustomOp1 for BlockOp {
    fn name(&self) -> &'static str {
        "dgs-block"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        self.forward_cpu((x, xl), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.forward_cuda((x, xl), None)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return Ok(self.backward_cuda(x, None, grad)?.0);
        }
        let dx = self.backward_cpu(x, None, grad)?.dx;
        dx.map(|dx| slices::to_tensor(dx, x)).transpose()
    }
}

impl CustomOp3 for BlockOp {
    fn name(&self) -> &'static str {
        "dgs-block"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (cpu_f32(a, al)?, cpu_f32(b, bl)?);
        self.forward_cpu((x, xl), Some((&a, &b)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        a: &candle_core::CudaStorage,
        al: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.forward_cuda((x, xl), Some([(a, al), (b, bl)]))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let (dx, adapters) = self.backward_cuda(x, Some((a, b)), grad)?;
            let (da, db) = adapters.unzip();
            return Ok((dx, da, db));
        }
        let parts = self.backward_cpu(x, Some((a, b)), grad)?;
        let dx = parts.dx.map(|dx| slices::to_tensor(dx, x)).transpose()?;
        let da = slices::to_tensor(parts.da, a)?;
        Ok((dx, Some(da), Some(slices::to_tensor(parts.db, b)?)))
    }
}
