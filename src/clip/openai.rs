//! OpenAI's CLIP weight layout (the one the official DGS-Net checkpoints are saved in)
//! translated to the Hugging Face names our model loads:
//!
//! | OpenAI | Hugging Face |
//! |---|---|
//! | `visual.conv1` | `vision_model.embeddings.patch_embedding` |
//! | `visual.class_embedding`, `visual.positional_embedding` | `vision_model.embeddings.{class_embedding, position_embedding.weight}` |
//! | `visual.ln_pre`, `visual.ln_post` | `vision_model.{pre_layrnorm, post_layernorm}` |
//! | `….resblocks.N.{ln_1, ln_2, mlp.c_fc, mlp.c_proj}` | `….layers.N.{layer_norm1, layer_norm2, mlp.fc1, mlp.fc2}` |
//! | `….attn.in_proj_{weight,bias}` (q, k, v stacked) | `….self_attn.{q,k,v}_proj` |
//! | `….attn.out_proj` (or `attn.proj` in the LoRA'd attention) | `….self_attn.out_proj` |
//! | `visual.proj` `[width, dim]`, used as `x @ proj` | `visual_projection.weight` = its transpose |
//! | `token_embedding`, `positional_embedding`, `ln_final`, `text_projection` | `text_model.embeddings.…`, `text_model.final_layer_norm`, `text_projection.weight` (transposed) |
//!
//! The DGS-Net LoRA'd attention keeps q, k and v as separate layers, each with `w_lora_A`
//! `[r, in]` and `w_lora_B` `[out, r]`; those become our adapters' `lora_A` and `lora_B`. Sizes
//! come from the tensors' shapes: heads are `width / 64` (OpenAI's rule), the MLP's activation is
//! QuickGELU, layer norms use eps 1e-5, and the text tower ends at the largest token id (its
//! end-of-text token).

use std::collections::HashMap;

use candle_core::Tensor;

use super::config::{Activation, ClipConfig, TextConfig, TowerConfig, VisionConfig};

/// Why a state dict is not an OpenAI-layout CLIP.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    #[error("tensor `{0}` is missing")]
    Missing(String),
    #[error("tensor `{key}` has shape {got:?}, expected {expected}")]
    Shape {
        key: String,
        got: Vec<usize>,
        expected: String,
    },
    #[error("LoRA rank {rank} in `{key}`, but {expected} elsewhere: one rank for every adapter")]
    Rank {
        key: String,
        rank: usize,
        expected: usize,
    },
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
}

/// An OpenAI-layout CLIP under Hugging Face names.
pub struct Translated {
    pub config: ClipConfig,
    /// Frozen weights by Hugging Face name.
    pub tensors: HashMap<String, Tensor>,
    /// LoRA matrices by adapter name (`vision_model.encoder.layers.N.self_attn.q_proj.lora_A`).
    pub adapters: HashMap<String, Tensor>,
    /// Their rank (`None` without adapters).
    pub rank: Option<usize>,
}

/// The tensors of one CLIP whose keys start with `prefix` (e.g. `clip_model.`).
struct Source<'a> {
    all: &'a HashMap<String, Tensor>,
    prefix: &'a str,
}

impl Source<'_> {
    fn get(&self, key: &str) -> Result<Tensor, OpenAiError> {
        let full = format!("{}{key}", self.prefix);
        self.all
            .get(&full)
            .cloned()
            .ok_or(OpenAiError::Missing(full))
    }

    fn has(&self, key: &str) -> bool {
        self.all.contains_key(&format!("{}{key}", self.prefix))
    }

    /// Shape of `key`, checked to have `rank` dimensions.
    fn dims(&self, key: &str, rank: usize) -> Result<Vec<usize>, OpenAiError> {
        let dims = self.get(key)?.dims().to_vec();
        match dims.len() == rank {
            true => Ok(dims),
            false => Err(OpenAiError::Shape {
                key: format!("{}{key}", self.prefix),
                got: dims,
                expected: format!("{rank} dimensions"),
            }),
        }
    }

    /// How many `{tower}resblocks.N.` blocks there are.
    fn blocks(&self, tower: &str) -> usize {
        let head = format!("{}{tower}resblocks.", self.prefix);
        self.all
            .keys()
            .filter_map(|k| {
                k.strip_prefix(&head)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .map(|i| i + 1)
            .max()
            .unwrap_or(0)
    }
}

/// Translate the CLIP under `prefix` in `state` (see the module docs).
pub fn translate(state: &HashMap<String, Tensor>, prefix: &str) -> Result<Translated, OpenAiError> {
    let src = Source { all: state, prefix };
    let config = infer_config(&src)?;
    let mut out = Translated {
        config,
        tensors: HashMap::new(),
        adapters: HashMap::new(),
        rank: None,
    };
    vision(&src, &mut out)?;
    text(&src, &mut out)?;
    Ok(out)
}

fn tower(src: &Source<'_>, blocks: &str, width: usize) -> Result<TowerConfig, OpenAiError> {
    let layers = src.blocks(blocks);
    let fc = src.dims(&format!("{blocks}resblocks.0.mlp.c_fc.weight"), 2)?;
    if width % 64 != 0 {
        return Err(OpenAiError::Shape {
            key: format!("{}{blocks}resblocks.0", src.prefix),
            got: vec![width],
            expected: "a width that is a multiple of 64 (heads are width / 64)".into(),
        });
    }
    Ok(TowerConfig {
        hidden_size: width,
        intermediate_size: fc[0],
        num_hidden_layers: layers,
        num_attention_heads: width / 64,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    })
}

fn infer_config(src: &Source<'_>) -> Result<ClipConfig, OpenAiError> {
    let conv = src.dims("visual.conv1.weight", 4)?;
    let positions = src.dims("visual.positional_embedding", 2)?[0];
    let grid = (positions.saturating_sub(1) as f64).sqrt().round() as usize;
    if grid * grid + 1 != positions {
        return Err(OpenAiError::Shape {
            key: format!("{}visual.positional_embedding", src.prefix),
            got: vec![positions],
            expected: "a square grid of patches plus the class token".into(),
        });
    }
    let proj = src.dims("visual.proj", 2)?;
    let tokens = src.dims("token_embedding.weight", 2)?;
    let context = src.dims("positional_embedding", 2)?[0];
    Ok(ClipConfig {
        vision_config: VisionConfig {
            tower: tower(src, "visual.transformer.", conv[0])?,
            image_size: grid * conv[2],
            patch_size: conv[2],
            num_channels: conv[1],
        },
        text_config: TextConfig {
            tower: tower(src, "transformer.", tokens[1])?,
            vocab_size: tokens[0],
            max_position_embeddings: context,
            eos_token_id: (tokens[0] - 1) as u32,
        },
        projection_dim: proj[1],
    })
}

/// Copy `from` (OpenAI name, under the source's prefix) to `to` (Hugging Face name).
fn copy(src: &Source<'_>, out: &mut Translated, from: &str, to: &str) -> Result<(), OpenAiError> {
    out.tensors.insert(to.to_string(), src.get(from)?);
    Ok(())
}

/// `from.{weight,bias}` → `to.{weight,bias}` (a layer norm or a linear layer).
fn weight_and_bias(
    src: &Source<'_>,
    out: &mut Translated,
    from: &str,
    to: &str,
) -> Result<(), OpenAiError> {
    for p in ["weight", "bias"] {
        copy(src, out, &format!("{from}.{p}"), &format!("{to}.{p}"))?;
    }
    Ok(())
}

/// Tensors copied as they are, per tower: (OpenAI name, Hugging Face name).
const VISION_COPIES: [(&str, &str); 3] = [
    (
        "visual.conv1.weight",
        "vision_model.embeddings.patch_embedding.weight",
    ),
    (
        "visual.class_embedding",
        "vision_model.embeddings.class_embedding",
    ),
    (
        "visual.positional_embedding",
        "vision_model.embeddings.position_embedding.weight",
    ),
];
const TEXT_COPIES: [(&str, &str); 2] = [
    (
        "token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
    ),
    (
        "positional_embedding",
        "text_model.embeddings.position_embedding.weight",
    ),
];

/// The projection `proj` (`[width, dim]`, used as `x @ proj`) as a linear layer's weight.
fn projection(
    src: &Source<'_>,
    out: &mut Translated,
    from: &str,
    to: &str,
) -> Result<(), OpenAiError> {
    let weight = src.get(from)?.t()?.contiguous()?;
    out.tensors.insert(to.to_string(), weight);
    Ok(())
}

fn vision(src: &Source<'_>, out: &mut Translated) -> Result<(), OpenAiError> {
    for (from, to) in VISION_COPIES {
        copy(src, out, from, to)?;
    }
    weight_and_bias(src, out, "visual.ln_pre", "vision_model.pre_layrnorm")?;
    for i in 0..out.config.vision_config.tower.num_hidden_layers {
        let from = format!("visual.transformer.resblocks.{i}");
        block(src, out, &from, &format!("vision_model.encoder.layers.{i}"))?;
    }
    weight_and_bias(src, out, "visual.ln_post", "vision_model.post_layernorm")?;
    projection(src, out, "visual.proj", "visual_projection.weight")
}

fn text(src: &Source<'_>, out: &mut Translated) -> Result<(), OpenAiError> {
    for (from, to) in TEXT_COPIES {
        copy(src, out, from, to)?;
    }
    for i in 0..out.config.text_config.tower.num_hidden_layers {
        let from = format!("transformer.resblocks.{i}");
        block(src, out, &from, &format!("text_model.encoder.layers.{i}"))?;
    }
    weight_and_bias(src, out, "ln_final", "text_model.final_layer_norm")?;
    projection(src, out, "text_projection", "text_projection.weight")?;
    if src.has("logit_scale") {
        copy(src, out, "logit_scale", "logit_scale")?;
    }
    Ok(())
}

/// One residual block `from` → `to`: layer norms, MLP, and the attention in either layout.
fn block(src: &Source<'_>, out: &mut Translated, from: &str, to: &str) -> Result<(), OpenAiError> {
    weight_and_bias(
        src,
        out,
        &format!("{from}.ln_1"),
        &format!("{to}.layer_norm1"),
    )?;
    weight_and_bias(
        src,
        out,
        &format!("{from}.ln_2"),
        &format!("{to}.layer_norm2"),
    )?;
    for (a, b) in [("c_fc", "fc1"), ("c_proj", "fc2")] {
        weight_and_bias(
            src,
            out,
            &format!("{from}.mlp.{a}"),
            &format!("{to}.mlp.{b}"),
        )?;
    }
    let attn = format!("{from}.attn");
    let to_attn = format!("{to}.self_attn");
    if src.has(&format!("{attn}.in_proj_weight")) {
        split_in_proj(src, out, &attn, &to_attn)?;
        for p in ["weight", "bias"] {
            copy(
                src,
                out,
                &format!("{attn}.out_proj.{p}"),
                &format!("{to_attn}.out_proj.{p}"),
            )?;
        }
        return Ok(());
    }
    for proj in ["q_proj", "k_proj", "v_proj"] {
        for p in ["weight", "bias"] {
            copy(
                src,
                out,
                &format!("{attn}.{proj}.{p}"),
                &format!("{to_attn}.{proj}.{p}"),
            )?;
        }
        adapter(
            src,
            out,
            &format!("{attn}.{proj}"),
            &format!("{to_attn}.{proj}"),
        )?;
    }
    for p in ["weight", "bias"] {
        copy(
            src,
            out,
            &format!("{attn}.proj.{p}"),
            &format!("{to_attn}.out_proj.{p}"),
        )?;
    }
    Ok(())
}

/// `in_proj_{weight,bias}` (q, k, v stacked along the output) → three projections.
fn split_in_proj(
    src: &Source<'_>,
    out: &mut Translated,
    attn: &str,
    to: &str,
) -> Result<(), OpenAiError> {
    for p in ["weight", "bias"] {
        let key = format!("{attn}.in_proj_{p}");
        let stacked = src.get(&key)?;
        let rows = stacked.dim(0)?;
        if rows % 3 != 0 {
            return Err(OpenAiError::Shape {
                key: format!("{}{key}", src.prefix),
                got: stacked.dims().to_vec(),
                expected: "3 × width rows (q, k, v)".into(),
            });
        }
        for (i, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            let part = stacked.narrow(0, i * rows / 3, rows / 3)?.contiguous()?;
            out.tensors.insert(format!("{to}.{proj}.{p}"), part);
        }
    }
    Ok(())
}

/// `w_lora_A` / `w_lora_B` of a LoRA'd projection, if it has them; every adapter has one rank.
fn adapter(
    src: &Source<'_>,
    out: &mut Translated,
    from: &str,
    to: &str,
) -> Result<(), OpenAiError> {
    let key_a = format!("{from}.w_lora_A");
    if !src.has(&key_a) {
        return Ok(());
    }
    let (a, b) = (src.get(&key_a)?, src.get(&format!("{from}.w_lora_B"))?);
    let rank = a.dim(0)?;
    match out.rank {
        Some(expected) if expected != rank => {
            return Err(OpenAiError::Rank {
                key: format!("{}{key_a}", src.prefix),
                rank,
                expected,
            });
        }
        _ => out.rank = Some(rank),
    }
    if b.dims() != [a.dim(1)?, rank] {
        return Err(OpenAiError::Shape {
            key: format!("{}{from}.w_lora_B", src.prefix),
            got: b.dims().to_vec(),
            expected: format!("[{}, {rank}] to match w_lora_A", a.dim(1)?),
        });
    }
    out.adapters.insert(format!("{to}.lora_A"), a);
    out.adapters.insert(format!("{to}.lora_B"), b);
    Ok(())
}
