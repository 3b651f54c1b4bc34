//! The vision tower (with LoRA) and the text tower (frozen), in the Hugging Face layout.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, Linear};

use super::config::{TextConfig, VisionConfig};
use super::encoder::{Builders, Encoder, LayerNorm};
use super::lora::Mode;

pub(crate) struct VisionTower {
    patch: Conv2d,
    class: Tensor,
    positions: Tensor,
    pre_ln: LayerNorm,
    encoder: Encoder,
    post_ln: LayerNorm,
    patch_size: usize,
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
            encoder: Encoder::new(&cfg.tower, &b.pp("encoder"), false)?,
            post_ln: LayerNorm::new(h, cfg.tower.layer_norm_eps, b.vb.pp("post_layernorm"))?,
            patch_size: cfg.patch_size,
        })
    }

    /// `[B, C, H, W]` → pooled `[B, hidden]` (the class token after the last layer norm).
    pub fn forward(&self, pixels: &Tensor, mode: Mode) -> Result<Tensor> {
        self.pool(&self.embed(pixels)?, mode)
    }

    /// The first layer's input `[B, 1 + patches, hidden]`: class token and patch embeddings,
    /// positions added, pre-layer-norm applied. Student and teacher share it.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let patches = self.patches(pixels)?;
        let (b, _, h) = patches.dims3()?;
        let class = self.class.reshape((1, 1, h))?.broadcast_as((b, 1, h))?;
        let x = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.positions)?;
        self.pre_ln.forward(&x)
    }

    /// The encoder and the final layer norm at the class token, from [`VisionTower::embed`].
    pub fn pool(&self, embedded: &Tensor, mode: Mode) -> Result<Tensor> {
        let b = embedded.dim(0)?;
        let class_rows = Tensor::zeros(b, DType::U32, embedded.device())?;
        self.post_ln
            .forward(&self.encoder.forward_pooled(embedded, &class_rows, mode)?)
    }

    /// [`VisionTower::pool`] in `mode` and frozen, from the same embeddings: `(student,
    /// teacher)`, the teacher detached. Where the encoder can pair them ([`Encoder::pairs`]),
    /// both run as one batch of twice the images, the teacher's half without adapters.
    pub fn pool_pair(&self, embedded: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        if !self.encoder.pairs(embedded.device()) {
            let teacher = self.pool(embedded, Mode::Frozen)?.detach();
            return Ok((self.pool(embedded, mode)?, teacher));
        }
        let b = embedded.dim(0)?;
        let both = Tensor::cat(&[embedded, embedded], 0)?;
        let class_rows = Tensor::zeros(2 * b, DType::U32, embedded.device())?;
        let pooled =
            self.post_ln
                .forward(&self.encoder.forward_pooled_pair(&both, &class_rows, mode)?)?;
        Ok((pooled.narrow(0, 0, b)?, pooled.narrow(0, b, b)?.detach()))
    }

    /// The patch embedding `[B, patches, hidden]`: a convolution whose stride is its kernel
    /// size touches each pixel once, so it is one matrix product of the image cut into patches
    /// (`[B · patches, C · p · p]`) with the kernel (`[hidden, C · p · p]`) — the same sums as
    /// the convolution, without its im2col buffer.
    fn patches(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, ch, height, width) = pixels.dims4()?;
        let p = self.patch_size;
        let (gh, gw) = (height / p, width / p);
        let kernel = self.patch.weight();
        let h = kernel.dim(0)?;
        let cut = pixels
            .narrow(2, 0, gh * p)?
            .narrow(3, 0, gw * p)?
            .reshape((b, ch, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, ch * p * p))?;
        cut.matmul(&kernel.reshape((h, ch * p * p))?.t()?)?
            .reshape((b, gh * gw, h))
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
            encoder: Encoder::new(&cfg.tower, &b.pp("encoder"), true)?,
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
        // The final layer norm acts row by row: pooling first is the same.
        let at = eos_positions(ids, self.eos)?;
        let pooled = self.encoder.forward_pooled(&x, &at, Mode::Frozen)?;
        self.final_ln.forward(&pooled)
    }
}

/// The position of each row's end-of-text token in `ids` (`[B, T]`, u32), computed on the ids'
/// device (no host round trip inside a training step): the first `eos` (the last position if a
/// row has none); for the legacy configs (eos 2) the highest id, first of equals — what
/// transformers' CLIP text model pools. Each position gets a distinct score whose maximum is the
/// answer, so `argmax` has no ties to break.
pub(crate) fn eos_positions(ids: &Tensor, eos: u32) -> Result<Tensor> {
    let (_, t) = ids.dims2()?;
    let dev = ids.device();
    // Scores stay below 2^24 (ids < 2^17 in any CLIP vocabulary, t ≤ 77): exact in f32.
    let position = Tensor::arange(0u32, t as u32, dev)?;
    let later = position
        .to_dtype(DType::F32)?
        .affine(-1.0, (t - 1) as f64)?; // t−1−i: earlier positions score higher
    let score = if eos == LEGACY_EOS {
        ids.to_dtype(DType::F32)?
            .affine(t as f64, 0.0)?
            .broadcast_add(&later)?
    } else {
        let last = position
            .eq((t - 1) as u32)?
            .to_dtype(DType::F32)?
            .affine(0.5, 0.0)?; // beats nothing but "no eos at all"
        ids.eq(eos)?
            .to_dtype(DType::F32)?
            .broadcast_mul(&(later + 1.0)?)?
            .broadcast_add(&last)?
    };
    score.argmax(1)
}

/// Projection without bias (`visual_projection`, `text_projection`).
pub(crate) fn projection(
    input: usize,
    output: usize,
    vb: candle_nn::VarBuilder<'_>,
) -> Result<Linear> {
    candle_nn::linear_no_bias(input, output, vb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn positions(rows: Vec<Vec<u32>>, eos: u32) -> Vec<u32> {
        let ids = Tensor::new(rows, &Device::Cpu).unwrap();
        eos_positions(&ids, eos).unwrap().to_vec1().unwrap()
    }

    #[test]
    fn the_first_eos_or_the_last_position() {
        let rows = vec![
            vec![5, 9, 63, 0, 63], // first of two
            vec![5, 9, 1, 4, 3],   // none: the last position
            vec![63, 9, 1, 4, 3],  // at the start
            vec![5, 9, 1, 4, 63],  // at the end
            vec![63, 63, 63, 63, 63],
        ];
        assert_eq!(positions(rows, 63), [2, 4, 0, 4, 0]);
    }

    #[test]
    fn legacy_configs_pool_the_highest_id_first_of_equals() {
        let rows = vec![
            vec![49406, 320, 49407, 0, 0],
            vec![49406, 49407, 49407, 0, 0],
            vec![7, 7, 7, 7, 7],
        ];
        assert_eq!(positions(rows, LEGACY_EOS), [2, 1, 0]);
    }
}
