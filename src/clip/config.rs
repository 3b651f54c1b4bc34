//! CLIP configurations: the paper's ViT-L/14, ViT-B/32, a tiny one for tests, and Hugging Face
//! `config.json` files.

use serde::{Deserialize, Serialize};

pub use crate::ops::Activation;

/// One transformer tower.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// The MLP's activation (`hidden_act` in Hugging Face's config).
    #[serde(default)]
    pub hidden_act: Activation,
}

fn default_ln_eps() -> f64 {
    1e-5
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    #[serde(flatten)]
    pub tower: TowerConfig,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
}

fn default_channels() -> usize {
    3
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(flatten)]
    pub tower: TowerConfig,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// The end-of-text token whose position gives the pooled text feature.
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

fn default_eos() -> u32 {
    49407
}

/// The Hugging Face `CLIPConfig` fields the model uses (other keys are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub vision_config: VisionConfig,
    pub text_config: TextConfig,
    pub projection_dim: usize,
}

impl ClipConfig {
    /// openai/clip-vit-large-patch14 (the paper's backbone, 224 px, features of 768).
    pub fn vit_l14() -> Self {
        Self::new(
            VisionConfig {
                tower: tower(1024, 4096, 24, 16),
                image_size: 224,
                patch_size: 14,
                num_channels: 3,
            },
            TextConfig {
                tower: tower(768, 3072, 12, 12),
                vocab_size: 49408,
                max_position_embeddings: 77,
                eos_token_id: 49407,
            },
            768,
        )
    }

    /// openai/clip-vit-base-patch32.
    pub fn vit_b32() -> Self {
        Self::new(
            VisionConfig {
                tower: tower(768, 3072, 12, 12),
                image_size: 224,
                patch_size: 32,
                num_channels: 3,
            },
            TextConfig {
                tower: tower(512, 2048, 12, 8),
                vocab_size: 49408,
                max_position_embeddings: 77,
                eos_token_id: 49407,
            },
            512,
        )
    }

    /// A small CLIP for tests and the demo: 32 px images in 8 px patches, two layers per tower.
    pub fn tiny() -> Self {
        Self::new(
            VisionConfig {
                tower: tower(32, 64, 2, 4),
                image_size: 32,
                patch_size: 8,
                num_channels: 3,
            },
            TextConfig {
                tower: tower(32, 64, 2, 4),
                vocab_size: 1000,
                max_position_embeddings: 16,
                eos_token_id: 999,
            },
            16,
        )
    }

    /// The demo's model: the real input geometry (224 px, 32 px patches, 7×7 + 1 tokens, as
    /// ViT-B/32) with a tiny width and depth, so `dgs demo` trains in seconds on a CPU. Its text
    /// side fits the demo's word-level tokenizer (vocabulary 64, end token 63).
    pub fn demo() -> Self {
        Self::new(
            VisionConfig {
                tower: tower(64, 128, 2, 4),
                image_size: 224,
                patch_size: 32,
                num_channels: 3,
            },
            TextConfig {
                tower: tower(32, 64, 1, 4),
                vocab_size: 64,
                max_position_embeddings: 16,
                eos_token_id: 63,
            },
            32,
        )
    }

    fn new(vision_config: VisionConfig, text_config: TextConfig, projection_dim: usize) -> Self {
        Self {
            vision_config,
            text_config,
            projection_dim,
        }
    }

    /// Parse a Hugging Face `config.json`.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }

    /// Check the sizes fit together; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, t) in [
            ("vision_config", &self.vision_config.tower),
            ("text_config", &self.text_config.tower),
        ] {
            if t.num_attention_heads == 0 || t.hidden_size % t.num_attention_heads != 0 {
                return Err(format!(
                    "{name}.hidden_size ({}) must be a positive multiple of num_attention_heads ({})",
                    t.hidden_size, t.num_attention_heads
                ));
            }
            if t.num_hidden_layers == 0 || t.intermediate_size == 0 {
                return Err(format!(
                    "{name}: num_hidden_layers and intermediate_size must be positive"
                ));
            }
        }
        let v = &self.vision_config;
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(format!(
                "vision_config.image_size ({}) must be a multiple of patch_size ({})",
                v.image_size, v.patch_size
            ));
        }
        if self.projection_dim == 0
            || self.text_config.vocab_size == 0
            || self.text_config.max_position_embeddings == 0
        {
            return Err("projection_dim, text_config.vocab_size and max_position_embeddings must be positive".into());
        }
        Ok(())
    }
}

fn tower(hidden: usize, intermediate: usize, layers: usize, heads: usize) -> TowerConfig {
    TowerConfig {
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        layer_norm_eps: 1e-5,
        hidden_act: Activation::QuickGelu,
    }
}
