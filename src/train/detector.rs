//! A DGS-Net detector: one CLIP (frozen base weights held once, LoRA adapters on the vision
//! tower) with its three heads — the teacher's `w_t` (stage 1), the student's `img_fc` and the
//! text `text_fc` (stage 2). Owns the trainable variables by name, for optimizers and checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::checkpoint::{self, CheckpointError};
use super::heads::Head;
use super::stage2::named_vars;
use crate::clip::{Clip, LoadError, LoraConfig, Mode};

/// Which variables a training stage updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Linear probe: the teacher head only.
    One,
    /// LoRA adapters, `img_fc` and `text_fc`.
    Two,
}

pub struct Detector {
    pub clip: Clip,
    pub teacher: Head,
    pub img_fc: Head,
    pub text_fc: Head,
    pub lora_config: LoraConfig,
    teacher_vars: VarMap,
    lora_vars: VarMap,
    head_vars: VarMap,
}

/// Parameter bytes by role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamBytes {
    /// Frozen CLIP weights (one copy, shared by teacher and student).
    pub base: usize,
    pub lora: usize,
    pub heads: usize,
}

impl ParamBytes {
    pub fn total(&self) -> usize {
        self.base + self.lora + self.heads
    }
}

impl Detector {
    /// Build around frozen weights from `base` (Hugging Face names at its root). Adapters and
    /// heads are f32 on `device`, freshly initialised (LoRA B = 0, so the student starts as the
    /// teacher).
    pub fn new(
        config: crate::clip::ClipConfig,
        base: VarBuilder<'_>,
        lora_config: LoraConfig,
        device: &Device,
    ) -> Result<Self> {
        let lora_vars = VarMap::new();
        let adapters = VarBuilder::from_varmap(&lora_vars, DType::F32, device);
        let clip = Clip::new(config, base, Some((&lora_config, adapters)))?;
        Self::from_parts(clip, lora_config, lora_vars, device)
    }

    /// Load a Hugging Face CLIP folder with base weights in `dtype` (see
    /// [`Clip::load_hf`]); errors name the file and the tensor.
    pub fn from_hf(
        dir: &Path,
        dtype: DType,
        device: &Device,
        lora_config: LoraConfig,
    ) -> std::result::Result<Self, LoadError> {
        let lora_vars = VarMap::new();
        let clip = Clip::load_hf(
            dir,
            dtype,
            device,
            Some((
                &lora_config,
                VarBuilder::from_varmap(&lora_vars, DType::F32, device),
            )),
        )?;
        let weights = dir.join("model.safetensors");
        Self::from_parts(clip, lora_config, lora_vars, device).map_err(|source| {
            LoadError::Weights {
                path: weights,
                source,
            }
        })
    }

    /// Around an existing `clip` whose adapters were created in `lora_vars`.
    pub fn from_parts(
        clip: Clip,
        lora_config: LoraConfig,
        lora_vars: VarMap,
        device: &Device,
    ) -> Result<Self> {
        let (teacher_vars, head_vars) = (VarMap::new(), VarMap::new());
        let vb = |m: &VarMap| VarBuilder::from_varmap(m, DType::F32, device);
        let d = clip.config.projection_dim;
        Ok(Self {
            teacher: Head::new(d, vb(&teacher_vars).pp("teacher"))?,
            img_fc: Head::new(d, vb(&head_vars).pp("img_fc"))?,
            text_fc: Head::new(d, vb(&head_vars).pp("text_fc"))?,
            clip,
            lora_config,
            teacher_vars,
            lora_vars,
            head_vars,
        })
    }

    /// The variables `stage` trains, by checkpoint name (`teacher.*`, `lora.*`, `heads.*`).
    pub fn trainables(&self, stage: Stage) -> BTreeMap<String, Var> {
        match stage {
            Stage::One => named_vars("teacher_head.", &self.teacher_vars),
            Stage::Two => {
                let mut v = named_vars("lora.", &self.lora_vars);
                v.extend(named_vars("heads.", &self.head_vars));
                v
            }
        }
    }

    /// Set the adapters from `adapters` (names as [`Clip::new`] makes them:
    /// `….q_proj.lora_A`). An adapter the map lacks keeps its `A` and gets `B = 0`, so it changes
    /// nothing until trained. Returns how many adapter matrices were set from the map.
    pub fn load_adapters(
        &self,
        adapters: &std::collections::HashMap<String, Tensor>,
    ) -> Result<usize> {
        let data = self
            .lora_vars
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut set = 0;
        for (name, var) in data.iter() {
            match adapters.get(name) {
                Some(t) => {
                    var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
                    set += 1;
                }
                None if name.ends_with("lora_B") => var.set(&var.zeros_like()?)?,
                None => {}
            }
        }
        Ok(set)
    }

    /// Every variable training can change (both stages), by checkpoint name.
    pub fn all_trainables(&self) -> BTreeMap<String, Var> {
        let mut v = self.trainables(Stage::One);
        v.extend(self.trainables(Stage::Two));
        v
    }

    /// `P(AI-generated)` per image `[B]` (f32): the student's `img_fc` on its features — the
    /// detector the paper evaluates.
    pub fn fake_probability(&self, pixels: &Tensor) -> Result<Tensor> {
        let f = self
            .clip
            .image_features(pixels, Mode::Student)?
            .to_dtype(DType::F32)?;
        candle_nn::ops::sigmoid(&self.img_fc.logits(&f)?)
    }

    /// Redraw every randomly initialised trainable from a seeded stream (candle's CPU generator
    /// cannot be seeded), for reproducible runs: matrices uniform in `±1/√fan_in` (LoRA A as
    /// peft's Kaiming-uniform bound, head weights as PyTorch's `Linear`), head biases zero, LoRA B
    /// left at zero.
    pub fn reseed(&self, seed: u64) -> Result<()> {
        for (name, var) in self.all_trainables() {
            let dims = var.dims().to_vec();
            let t = match dims.as_slice() {
                [rows, cols] if !name.ends_with("lora_B") => {
                    let mut rng = crate::surgery::rng::SplitMix64::for_name(seed, &name);
                    let b = 1.0 / (*cols as f64).sqrt();
                    let v: Vec<f32> = (0..rows * cols)
                        .map(|_| rng.uniform(-b, b) as f32)
                        .collect();
                    Tensor::from_vec(v, (*rows, *cols), var.device())?
                }
                _ => var.as_tensor().zeros_like()?,
            };
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Save every trainable variable (both stages), `opt`'s moments and step, and `run` (any
    /// JSON: the run's configuration and progress) atomically to `path`.
    pub fn save_checkpoint(
        &self,
        path: &Path,
        opt: &super::Adam,
        run: &serde_json::Value,
    ) -> std::result::Result<(), CheckpointError> {
        checkpoint::save(path, &self.all_trainables(), opt, run)
    }

    /// Restore every trainable variable from `path` (all must be present with their shapes);
    /// returns the rest (optimizer moments, step, run JSON) for the trainer.
    pub fn restore_checkpoint(
        &self,
        path: &Path,
        device: &Device,
    ) -> std::result::Result<checkpoint::Loaded, CheckpointError> {
        let loaded = checkpoint::load(path, device)?;
        checkpoint::restore_params(path, &self.all_trainables(), &loaded.params)?;
        Ok(loaded)
    }

    /// Bytes of parameters held, base weights counted once (teacher and student share them;
    /// 0 when the model was built from a bare `VarBuilder`, which does not count).
    pub fn parameter_bytes(&self) -> ParamBytes {
        let sum = |m: &BTreeMap<String, Var>| {
            m.values()
                .map(|v| v.elem_count() * v.dtype().size_in_bytes())
                .sum()
        };
        ParamBytes {
            base: self.clip.base_bytes().unwrap_or(0),
            lora: sum(&named_vars("", &self.lora_vars)),
            heads: sum(&named_vars("", &self.head_vars)) + sum(&named_vars("", &self.teacher_vars)),
        }
    }
}
