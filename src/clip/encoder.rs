//! The CLIP transformer layer (pre-norm; an MLP with the config's activation, quick-GELU for
//! OpenAI's CLIP), shared by both towers. The vision tower puts LoRA on q, k and v; the text
//! tower has none.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::TowerConfig;
use super::layer::FusedLayer;
use super::layer_ops::OpsLayer;
use super::lora::{LoraConfig, Mode};

/// Frozen weights from `vb`; adapters (if any) from `lora`, under the same names.
pub(crate) struct Builders<'a> {
    pub vb: VarBuilder<'a>,
    pub lora: Option<(&'a LoraConfig, VarBuilder<'a>)>,
}

impl<'a> Builders<'a> {
    pub fn pp(&self, name: &str) -> Self {
        Builders {
            vb: self.vb.pp(name),
            lora: self.lora.as_ref().map(|(c, v)| (*c, v.pp(name))),
        }
    }
}

/// Layer normalisation. On CUDA our fused op with a backward pass ([`crate::ops::layer_norm`]:
/// one kernel, no f32 intermediates kept by the autograd graph); elsewhere the same maths in
/// differentiable tensor ops, which the CPU results (the demo, the parity tests) are pinned to.
/// candle-nn's own fused `LayerNorm` records no backward pass and would silently stop every
/// gradient below it.
#[derive(Clone, Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder<'_>) -> Result<Self> {
        // The hints only matter for fresh (random-init) models: loaded weights ignore them.
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // The fused op gives no gradient to the scale and shift: only for frozen ones.
        let frozen = !self.weight.is_variable() && !self.bias.is_variable();
        if x.device().is_cuda() && frozen {
            return crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(candle_core::D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
        let normed = centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Whether a tower on `device` in `dtype` runs the layer op. Always on the CPU. On CUDA only when
/// `DGS_CUDA_LAYER=fused` is set and the dtype is f16 or bf16 (the fused attention's types): the
/// op's CUDA path has not run on a GPU yet, so the default stays on tensor ops under autograd
/// until a GPU check has compared it with the CPU twin (docs/kernels.md).
fn fused_layers(device: &Device, dtype: DType) -> bool {
    match device {
        Device::Cpu => true,
        _ => {
            let asked = std::env::var("DGS_CUDA_LAYER").is_ok_and(|v| v == "fused");
            asked && matches!(dtype, DType::F16 | DType::BF16)
        }
    }
}

/// The layers of one tower: the layer op, or tensor ops under autograd (see [`fused_layers`]).
enum Layers {
    Fused(Vec<FusedLayer>),
    Ops(Vec<OpsLayer>),
}

pub(crate) struct Encoder {
    layers: Layers,
    causal: bool,
}

impl Encoder {
    /// `causal` for the text tower.
    pub fn new(cfg: &TowerConfig, b: &Builders<'_>, causal: bool) -> Result<Self> {
        let each = |i: usize| b.pp(&format!("layers.{i}"));
        let count = cfg.num_hidden_layers;
        let layers = match fused_layers(b.vb.device(), b.vb.dtype()) {
            true => Layers::Fused(
                (0..count)
                    .map(|i| FusedLayer::new(cfg, &each(i), i, causal))
                    .collect::<Result<_>>()?,
            ),
            false => Layers::Ops(
                (0..count)
                    .map(|i| OpsLayer::new(cfg, &each(i)))
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(Self { layers, causal })
    }

    /// Whether one call can carry a student and its frozen pass ([`Encoder::forward_pooled_pair`]):
    /// the layer op on the CPU.
    pub fn pairs(&self, device: &Device) -> bool {
        matches!(self.layers, Layers::Fused(_)) && device.is_cpu()
    }

    /// `[B, T, C]` → the last layer's output at row `rows[b]` of each image (`[B]`, u32): `[B, C]`.
    /// The layer op computes the last layer at those rows only.
    pub fn forward_pooled(&self, x: &Tensor, rows: &Tensor, mode: Mode) -> Result<Tensor> {
        match &self.layers {
            Layers::Fused(layers) => fused_pooled(layers, x, rows, mode, None),
            Layers::Ops(layers) => {
                let (_, t, _) = x.dims3()?;
                let mask = match self.causal {
                    true => Some(causal_mask(t, x.dtype(), x.device())?),
                    false => None,
                };
                let x = layers
                    .iter()
                    .try_fold(x.clone(), |x, l| l.forward(&x, mask.as_ref(), mode))?;
                gather_rows(&x, rows)
            }
        }
    }

    /// A student pass and its frozen pass in one: `x` is `[2B, T, C]`, the student's images
    /// first; → `[2B, C]` pooled at `rows`. The adapters (in `mode`) act on the first `B` images
    /// only; the last `B` rows carry no gradient. Only where [`Encoder::pairs`] says so.
    pub fn forward_pooled_pair(&self, x: &Tensor, rows: &Tensor, mode: Mode) -> Result<Tensor> {
        let images = x.dim(0)? / 2;
        // The layer op itself refuses a frozen part on CUDA.
        match &self.layers {
            Layers::Fused(layers) => fused_pooled(layers, x, rows, mode, Some(images)),
            Layers::Ops(_) => {
                candle_core::bail!("a student and frozen pass in one call: layer op only")
            }
        }
    }
}

/// The layer op through every layer, the last at `rows` only; adapters on the first `adapted`
/// images when given (see [`FusedLayer::forward`]).
fn fused_pooled(
    layers: &[FusedLayer],
    x: &Tensor,
    rows: &Tensor,
    mode: Mode,
    adapted: Option<usize>,
) -> Result<Tensor> {
    let Some((last, first)) = layers.split_last() else {
        return gather_rows(x, rows);
    };
    let x = first
        .iter()
        .try_fold(x.clone(), |x, l| l.forward(&x, mode, None, adapted))?;
    let at: Vec<usize> = rows
        .to_vec1::<u32>()?
        .into_iter()
        .map(|r| r as usize)
        .collect();
    last.forward(&x, mode, Some(&at), adapted)?.squeeze(1)
}

/// `[t, t]` additive mask: 0 on and below the diagonal, −inf above (the text tower is causal).
fn causal_mask(t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, (t, t), device)?.to_dtype(dtype)
}

/// Row `b` of `x` (`[B, T, C]`) at position `idx[b]` (`[B]`, u32, on `x`'s device): `[B, C]`.
fn gather_rows(x: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    let base = Tensor::arange(0u32, b as u32, x.device())?.affine(t as f64, 0.0)?;
    let flat = (idx.to_dtype(DType::U32)? + base)?;
    x.reshape((b * t, c))?.index_select(&flat, 0)
}
