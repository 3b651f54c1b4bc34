//! The two towers and their projections.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Linear, VarBuilder};

use super::config::ClipConfig;
use super::encoder::Builders;
use super::lora::{LoraConfig, Mode};
use super::towers::{TextTower, VisionTower, projection};
use super::weights::{Counted, RequireFinite};

pub struct Clip {
    pub config: ClipConfig,
    vision: VisionTower,
    visual_projection: Linear,
    text: TextTower,
    text_projection: Linear,
    base_bytes: Option<usize>,
}

impl Clip {
    /// Frozen weights from `vb` (Hugging Face names at its root); LoRA adapters, when `lora` is
    /// given, are created in (or loaded from) `lora_vb` under
    /// `vision_model.encoder.layers.{i}.self_attn.{q,k,v}_proj.lora_{A,B}`.
    pub fn new(
        config: ClipConfig,
        vb: VarBuilder<'_>,
        lora: Option<(&LoraConfig, VarBuilder<'_>)>,
    ) -> Result<Self> {
        config.validate().map_err(candle_core::Error::Msg)?;
        let b = Builders {
            vb: vb.clone(),
            lora,
        };
        let (v, t) = (&config.vision_config, &config.text_config);
        Ok(Self {
            vision: VisionTower::new(v, &b.pp("vision_model"))?,
            visual_projection: projection(
                v.tower.hidden_size,
                config.projection_dim,
                vb.pp("visual_projection"),
            )?,
            text: TextTower::new(
                t,
                &Builders {
                    vb: vb.pp("text_model"),
                    lora: None,
                },
            )?,
            text_projection: projection(
                t.tower.hidden_size,
                config.projection_dim,
                vb.pp("text_projection"),
            )?,
            config,
            base_bytes: None,
        })
    }

    /// Like [`Clip::new`], with the frozen weights from `backend` (tensors converted to `dtype` on
    /// `device`), counting their bytes: see [`Clip::base_bytes`].
    pub fn from_backend(
        config: ClipConfig,
        backend: Box<dyn SimpleBackend + '_>,
        dtype: DType,
        device: &Device,
        lora: Option<(&LoraConfig, VarBuilder<'_>)>,
    ) -> Result<Self> {
        let (counted, count) = Counted::new(backend);
        let vb = VarBuilder::from_backend(Box::new(counted), dtype, device.clone());
        let mut clip = Self::new(config, vb, lora)?;
        clip.base_bytes = Some(count.bytes());
        Ok(clip)
    }

    /// Bytes of frozen weights this model holds — one copy, which teacher and student share.
    /// Known when built with [`Clip::from_backend`] or [`Clip::load_hf`].
    pub fn base_bytes(&self) -> Option<usize> {
        self.base_bytes
    }

    /// Image features `[B, projection_dim]` from pixels `[B, 3, H, W]` (normalised).
    pub fn image_features(&self, pixels: &Tensor, mode: Mode) -> Result<Tensor> {
        crate::ops::frozen_linear(&self.visual_projection, &self.vision.forward(pixels, mode)?)
    }

    /// Student (in `mode`) and teacher image features of the same pixels, the embeddings computed
    /// once (and on the CPU the two passes batched into one): what a DGS step needs. The
    /// teacher's carry no gradient.
    pub fn image_features_pair(&self, pixels: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        let embedded = self.vision.embed(pixels)?;
        let project = |pooled: Tensor| crate::ops::frozen_linear(&self.visual_projection, &pooled);
        let (student, teacher) = self.vision.pool_pair(&embedded, mode)?;
        Ok((project(student)?, project(teacher)?))
    }

    /// Text features `[B, projection_dim]` from token ids `[B, T]` (u32).
    pub fn text_features(&self, ids: &Tensor) -> Result<Tensor> {
        self.text_projection.forward(&self.text.forward(ids)?)
    }
}

/// Why a model folder could not be loaded; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable CLIP config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: not a valid safetensors file (truncated or corrupt): {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

impl Clip {
    /// Load a Hugging Face CLIP folder (`config.json`, `model.safetensors`), as downloaded for
    /// e.g. openai/clip-vit-large-patch14. Weights are converted to `dtype` on load; a missing or
    /// mis-shaped tensor is an error naming the file and the tensor.
    pub fn load_hf(
        dir: &Path,
        dtype: DType,
        device: &Device,
        lora: Option<(&LoraConfig, VarBuilder<'_>)>,
    ) -> std::result::Result<Self, LoadError> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| LoadError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config = ClipConfig::from_json(&text).map_err(|e| LoadError::Config {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| LoadError::Config {
            path: config_path,
            message,
        })?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(LoadError::Io {
                path: weights,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model.safetensors not found",
                ),
            });
        }
        // SAFETY: the file is memory-mapped read-only for the model's lifetime; like every
        // mmap-based loader this assumes nobody truncates it meanwhile.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(&weights) }
            .map_err(|e| LoadError::Corrupt {
                path: weights.clone(),
                detail: e.to_string(),
            })?;
        let checked = RequireFinite(Box::new(tensors));
        Self::from_backend(config, Box::new(checked), dtype, device, lora).map_err(|source| {
            LoadError::Weights {
                path: weights,
                source,
            }
        })
    }
}
