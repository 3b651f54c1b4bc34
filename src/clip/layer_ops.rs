//! The transformer layer as candle tensor ops under candle's autograd: the CUDA path until the
//! layer op ([`crate::ops::block`]) has its CUDA kernels. The CPU runs the layer op.

use candle_core::{Result, Tensor};
use candle_nn::Linear;

use super::config::{Activation, TowerConfig};
use super::encoder::{Builders, LayerNorm};
use super::lora::{LoraLinear, Mode};
use crate::ops::frozen_linear;

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

pub(crate) struct OpsLayer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl OpsLayer {
    pub fn new(cfg: &TowerConfig, b: &Builders<'_>) -> Result<Self> {
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

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln1.forward(x)?, mask, mode)?)?;
        let h = frozen_linear(&self.fc1, &self.ln2.forward(&x)?)?;
        let m = frozen_linear(&self.fc2, &activation(self.act, &h)?)?;
        x + m
    }
}
