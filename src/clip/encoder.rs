//! The CLIP transformer layer (pre-norm; an MLP with the config's activation, quick-GELU for
//! OpenAI's CLIP), shared by both towers. The vision tower puts LoRA on q, k and v; the text
//! tower has none.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::config::{Activation, TowerConfig};
use super::lora::{LoraConfig, LoraLinear, Mode};
use crate::ops::frozen_linear;

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

/// Softmax over the last dimension, differentiable: our fused op on CUDA, tensor ops elsewhere
/// (see [`LayerNorm`]).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cuda() {
        return crate::ops::softmax_last_dim(x);
    }
    candle_nn::ops::softmax(x, candle_core::D::Minus1)
}

fn activation(act: Activation, x: &Tensor) -> Result<Tensor> {
    match act {
        Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        Activation::Gelu => x.gelu_erf(),
        Activation::GeluTanh => x.gelu(),
        Activation::Relu => x.relu(),
    }
}

struct Attention {
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(cfg: &TowerConfig, b: &Builders<'_>) -> Result<Self> {
        let h = cfg.hidden_size;
        let proj = |name: &str| -> Result<LoraLinear> {
            let base = candle_nn::linear(h, h, b.vb.pp(name))?;
            let lora = b.lora.as_ref().map(|(c, v)| (*c, v.pp(name)));
            LoraLinear::new(base, lora)
        };
        Ok(Self {
            q: proj("q_proj")?,
            k: proj("k_proj")?,
            v: proj("v_proj")?,
            out: candle_nn::linear(h, h, b.vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            scale: ((h / cfg.num_attention_heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let hd = c / self.heads;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, t, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let cast = match (mode, self.q.adapter_dtype()) {
            (Mode::Frozen, _) | (_, None) => None,
            (_, Some(dtype)) => Some(x.to_dtype(dtype)?),
        };
        let q = split((self.q.forward_with_cast(x, cast.as_ref(), mode)? * self.scale)?)?;
        let k = split(self.k.forward_with_cast(x, cast.as_ref(), mode)?)?;
        let v = split(self.v.forward_with_cast(x, cast.as_ref(), mode)?)?;
        let mut w = q.matmul(&k.t()?)?;
        if let Some(m) = mask {
            w = w.broadcast_add(m)?;
        }
        let w = softmax_last(&w)?;
        let y = w.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        frozen_linear(&self.out, &y)
    }
}

struct Layer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Layer {
    fn new(cfg: &TowerConfig, b: &Builders<'_>) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            ln1: LayerNorm::new(h, cfg.layer_norm_eps, b.vb.pp("layer_norm1"))?,
            attn: Attention::new(cfg, &b.pp("self_attn"))?,
            ln2: LayerNorm::new(h, cfg.layer_norm_eps, b.vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(h, i, b.vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(i, h, b.vb.pp("mlp.fc2"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?, mask, mode)?)?;
        let h = frozen_linear(&self.fc1, &self.ln2.forward(&x)?)?;
        let m = frozen_linear(&self.fc2, &activation(self.act, &h)?)?;
        x + m
    }
}

pub(crate) struct Encoder {
    layers: Vec<Layer>,
}

impl Encoder {
    pub fn new(cfg: &TowerConfig, b: &Builders<'_>) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(cfg, &b.pp(&format!("layers.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        self.layers
            .iter()
            .try_fold(x.clone(), |x, l| l.forward(&x, mask, mode))
    }
}

/// `[t, t]` additive mask: 0 on and below the diagonal, −inf above (the text tower is causal).
pub(crate) fn causal_mask(t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
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
pub(crate) fn gather_rows(x: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    let base = Tensor::arange(0u32, b as u32, x.device())?.affine(t as f64, 0.0)?;
    let flat = (idx.to_dtype(DType::U32)? + base)?;
    x.reshape((b * t, c))?.index_select(&flat, 0)
}
