//! Stage 1 of DGS-Net: a linear probe — only the teacher head `w_t` trains, on the frozen CLIP's
//! image features, with BCE-with-logits and Adam.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var};

use super::adam::{Adam, AdamConfig};
use super::heads::Head;
use super::loss::bce_with_logits;
use super::stage2::{StepStats, accuracy};
use crate::clip::{Clip, Mode};

pub struct Stage1Trainer {
    pub opt: Adam,
}

impl Stage1Trainer {
    /// `head_vars`: the teacher head's variables by name.
    pub fn new(head_vars: BTreeMap<String, Var>, cfg: AdamConfig) -> Result<Self> {
        Ok(Self {
            opt: Adam::new(head_vars, cfg)?,
        })
    }

    /// One step on precomputed frozen features `[B, D]` (see [`frozen_features`]) and labels `[B]`.
    pub fn step(
        &mut self,
        teacher: &Head,
        features: &Tensor,
        labels: &Tensor,
    ) -> Result<StepStats> {
        let y = labels.to_dtype(candle_core::DType::F32)?;
        let z = teacher.logits(&features.detach())?;
        let loss = bce_with_logits(&z, &y)?;
        let value = loss.to_scalar::<f32>()?;
        if !value.is_finite() {
            candle_core::bail!("stage 1: the loss is {value}; stopping before the update");
        }
        let acc = accuracy(&z, &y)?;
        self.opt.step(&loss.backward()?)?;
        Ok(StepStats {
            loss: value,
            l_img: value,
            accuracy: acc,
            ..StepStats::default()
        })
    }
}

/// The frozen model's image features: computed once per image, reused every stage-1 epoch.
pub fn frozen_features(clip: &Clip, pixels: &Tensor) -> Result<Tensor> {
    clip.image_features(pixels, Mode::Frozen)?
        .detach()
        .contiguous()
}
