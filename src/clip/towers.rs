//! The vision tower (with LoRA) and the text tower (frozen), in the Hugging Face layout.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, Linear};

use super::config::{TextConfig, VisionConfig};
use super::encoder::{Builders, Encoder, LayerNorm, causal_mask, gather_rows};
use super::lora::Mode;

pub(crate) struct VisionTower {
    patch: Conv2d,
    class: Tensor,
    positions: Tensor,
    pre_ln: LayerNorm,
    encoder: Encoder,
    post_ln: LayerNorm,
}

impl VisionTower {
    /// `b` points at `vision_model`.
    pub fn new(cfg: &VisionConfig, b: &Builders<'_>) -> Result<Self> {
        let h = cfg.tower.hidden_size;
        let emb = b.vb.pp("embeddings");
        let grid = cfg.image_size / cfg.patch_size;
        let conv = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        Ok(Self {
            patch: candle_nn::conv2d_no_bias(
                cfg.num_channels,
                h,
                cfg.patch_size,
                conv,
                emb.pp("patch_embedding"),
            )?,
            class: emb.get(h, "class_embedding")?,
            positions: emb.get((grid * grid + 1, h), "position_embedding.weight")?,
            pre_ln: LayerNorm::new(h, cfg.tower.layer_norm_eps, b.vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(&cfg.tower, &b.pp("encoder"))?,
            post_ln: LayerNorm::new(h, cfg.tower.layer_norm_eps, b.vb.pp("post_layernorm"))?,
        })
    }

    /// `[B, C, H, W]` → pooled `[B, hidden]` (the class token after the last layer norm).
    pub fn forward(&self, pixels: &Tensor, mode: Mode) -> Result<Tensor> {
        let patches = self
            .patch
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let (b, _, h) = patches.dims3()?;
        let class = self.class.reshape((1, 1, h))?.broadcast_as((b, 1, h))?;
        let x = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.positions)?;
        let x = self
            .encoder
            .forward(&self.pre_ln.forward(&x)?, None, mode)?;
        self.post_ln.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }
}

/// The `eos_token_id` of the legacy Hugging Face CLIP configs (see [`TextTower::forward`]).
const LEGACY_EOS: u32 = 2;

pub(crate) struct TextTower {
    tokens: Embedding,
    positions: Tensor,
    encoder: Encoder,
    final_ln: LayerNorm,
    eos: u32,
}

impl TextTower {
    /// `b` points at `text_model`.
    pub fn new(cfg: &TextConfig, b: &Builders<'_>) -> Result<Self> {
        let h = cfg.tower.hidden_size;
        let emb = b.vb.pp("embeddings");
        Ok(Self {
            tokens: candle_nn::embedding(cfg.vocab_size, h, emb.pp("token_embedding"))?,
            positions: emb.get(
                (cfg.max_position_embeddings, h),
                "position_embedding.weight",
            )?,
            encoder: Encoder::new(&cfg.tower, &b.pp("encoder"))?,
            final_ln: LayerNorm::new(h, cfg.tower.layer_norm_eps, b.vb.pp("final_layer_norm"))?,
            eos: cfg.eos_token_id,
        })
    }

    /// Token ids `[B, T]` (u32) → pooled `[B, hidden]` at each row's first end-of-text token (the
    /// last position when a row has none). Configs that say `eos_token_id: 2` (the original
    /// openai/clip-vit-* uploads) pool at the largest id instead, as transformers does for them:
    /// the real end token, 49407, is the largest id in the vocabulary.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t > self.positions.dim(0)? {
            candle_core::bail!(
                "text of {t} tokens is longer than the model's {} positions",
                self.positions.dim(0)?
            );
        }
        let x = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.narrow(0, 0, t)?)?;
        let mask = causal_mask(t, x.dtype(), x.device())?;
        let x = self
            .final_ln
            .forward(&self.encoder.forward(&x, Some(&mask), Mode::Frozen)?)?;
        let rows: Vec<Vec<u32>> = ids.to_vec2()?;
        let eos: Vec<usize> = rows
            .iter()
            .map(|r| {
                if self.eos == LEGACY_EOS {
                    (0..t)
                        .max_by_key(|&i| (r[i], std::cmp::Reverse(i)))
                        .unwrap_or(0)
                } else {
                    r.iter().position(|&id| id == self.eos).unwrap_or(t - 1)
                }
            })
            .collect();
        gather_rows(&x, &eos)
    }
}

/// Projection without bias (`visual_projection`, `text_projection`).
pub(crate) fn projection(
    input: usize,
    output: usize,
    vb: candle_nn::VarBuilder<'_>,
) -> Result<Linear> {
    candle_nn::linear_no_bias(input, output, vb)
}
