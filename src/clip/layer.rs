//! The transformer layer through the layer op ([`crate::ops::block`]): the frozen weights
//! gathered once (q, k and v concatenated), the adapters created under the same names as
//! [`LoraLinear`](super::LoraLinear)'s and packed per call.

use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::config::TowerConfig;
use super::encoder::Builders;
use super::lora::{LoraConfig, Mode, adapter_vars};
use crate::ops::block::{Adapters, BlockConfig, Dropout, LayerWeights, block, block_pooled};

pub(crate) struct FusedLayer {
    weights: Arc<LayerWeights>,
    cfg: BlockConfig,
    adapters: Option<LayerAdapters>,
    index: usize,
}

/// q, k and v's adapters: `A` `[r, C]` and `B` `[C, r]` each.
struct LayerAdapters {
    a: [Tensor; 3],
    b: [Tensor; 3],
    lora: LoraConfig,
}

const PROJECTIONS: [&str; 3] = ["q_proj", "k_proj", "v_proj"];

/// A frozen linear layer's weight and bias, with candle-nn's `linear` initialisation hints (which
/// only fresh, random-init models use).
fn linear(b: &Builders<'_>, name: &str, out: usize, inp: usize) -> Result<(Tensor, Tensor)> {
    let vb = b.vb.pp(name);
    let weight = vb.get_with_hints(
        (out, inp),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let bound = 1.0 / (inp as f64).sqrt();
    let uniform = candle_nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    Ok((weight, vb.get_with_hints(out, "bias", uniform)?))
}

fn norm(b: &Builders<'_>, name: &str, size: usize) -> Result<(Tensor, Tensor)> {
    let vb = b.vb.pp(name);
    // The hints only matter for fresh (random-init) models: loaded weights ignore them.
    let w = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?;
    Ok((w, bias))
}

impl FusedLayer {
    /// `b` points at `layers.{index}`; `causal` for the text tower.
    pub fn new(cfg: &TowerConfig, b: &Builders<'_>, index: usize, causal: bool) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let attn = b.pp("self_attn");
        let qkv: Vec<(Tensor, Tensor)> = PROJECTIONS
            .iter()
            .map(|p| linear(&attn, p, h, h))
            .collect::<Result<_>>()?;
        let (ws, bs): (Vec<Tensor>, Vec<Tensor>) = qkv.into_iter().unzip();
        let weights = LayerWeights::new(
            norm(b, "layer_norm1", h)?,
            (Tensor::cat(&ws, 0)?, Tensor::cat(&bs, 0)?),
            linear(&attn, "out_proj", h, h)?,
            norm(b, "layer_norm2", h)?,
            linear(b, "mlp.fc1", i, h)?,
            linear(b, "mlp.fc2", h, i)?,
        );
        let adapters = match &attn.lora {
            None => None,
            Some((lora, vb)) => {
                let vars = PROJECTIONS
                    .iter()
                    .map(|p| adapter_vars(lora, vb.pp(p), h, h))
                    .collect::<Result<Vec<_>>>()?;
                let [q, k, v]: [(Tensor, Tensor); 3] = vars
                    .try_into()
                    .map_err(|_| candle_core::Error::Msg("three projections".into()))?;
                Some(LayerAdapters {
                    a: [q.0, k.0, v.0],
                    b: [q.1, k.1, v.1],
                    lora: **lora,
                })
            }
        };
        Ok(Self {
            weights: Arc::new(weights),
            cfg: BlockConfig {
                heads: cfg.num_attention_heads,
                eps: cfg.layer_norm_eps as f32,
                activation: cfg.hidden_act,
                causal,
            },
            adapters,
            index,
        })
    }

    /// `[B, T, C]` → `[B, T, C]`, or `[B, 1, C]` at row `pooled[b]` of each image. With
    /// `adapted = Some(n)` the adapters act on the first `n` images only and the rest are a
    /// frozen pass without gradient ([`Adapters::images`]).
    pub fn forward(
        &self,
        x: &Tensor,
        mode: Mode,
        pooled: Option<&[usize]>,
        adapted: Option<usize>,
    ) -> Result<Tensor> {
        let run = |adapters| match pooled {
            None => block(x, &self.weights, self.cfg, adapters),
            Some(rows) => block_pooled(x, &self.weights, self.cfg, adapters, rows),
        };
        let ad = match (&self.adapters, mode) {
            (None, _) | (_, Mode::Frozen) => return run(None),
            (Some(ad), _) => ad,
        };
        let dropout = match mode {
            Mode::StudentTrain(key) if ad.lora.dropout > 0.0 => Some(Dropout {
                key,
                layer: self.index,
                p: ad.lora.dropout,
            }),
            _ => None,
        };
        let (a, b) = (Tensor::stack(&ad.a, 0)?, Tensor::stack(&ad.b, 0)?);
        let adapters = Adapters {
            a: &a,
            b: &b,
            scale: ad.lora.scale(),
            dropout,
            images: adapted,
        };
        run(Some(adapters))
    }
}
