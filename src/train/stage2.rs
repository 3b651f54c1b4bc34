//! Stage 2 of DGS-Net (SPEC §1): the student's LoRA, `img_fc` and `text_fc` trained with
//! `L = L_img + L_text + λ·L_help`, the gradient reaching the student features projected off
//! `relu(g_text)` (Orthogonal Suppression) and pulled towards the teacher's helpful direction
//! (Prior Alignment).

use std::collections::BTreeMap;

use candle_core::{DType, Result, Tensor, Var};

use super::adam::{Adam, AdamConfig};
use super::heads::Head;
use super::loss::{bce_logit_grad, bce_with_logits};
use super::scaler::{LossScaler, ScaleDecision};
use crate::clip::{Clip, DropoutKey, Mode};
use crate::ops::{orthogonal_suppression, orthogonal_suppression_op_chain};

/// The method and its ablations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Help term and surgery (the paper's method).
    Dgs,
    /// Help term, no projection of the gradient.
    NoSurgery,
    /// Projection, no help term.
    NoHelp,
    /// Plain LoRA fine-tuning: `L_img` only.
    PlainLora,
}

/// How the gradient surgery runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SurgeryImpl {
    /// Our fused op ([`orthogonal_suppression`]): the CPU backend or our CUDA kernel.
    #[default]
    Fused,
    /// The same math as stock candle ops ([`orthogonal_suppression_op_chain`]).
    OpChain,
}

#[derive(Clone, Copy, Debug)]
pub struct Stage2Config {
    pub variant: Variant,
    pub surgery: SurgeryImpl,
    /// λ, the weight of `L_help` (0.2).
    pub lambda: f64,
    /// Added to `‖relu(g_text)‖` (1e-6).
    pub eps: f32,
    pub lr: f64,
    pub beta1: f64,
    /// Keys the LoRA dropout masks with the step: a resumed run draws what the uninterrupted
    /// one would have.
    pub dropout_seed: u64,
}

impl Default for Stage2Config {
    fn default() -> Self {
        Self {
            variant: Variant::Dgs,
            surgery: SurgeryImpl::Fused,
            lambda: 0.2,
            eps: 1e-6,
            lr: 1e-4,
            beta1: 0.9,
            dropout_seed: 0,
        }
    }
}

/// One stage-2 batch: normalised pixels `[B, 3, H, W]`, caption token ids `[B, T]` (u32),
/// labels `[B]` (0 real, 1 fake).
pub struct Batch<'a> {
    pub pixels: &'a Tensor,
    pub captions: &'a Tensor,
    pub labels: &'a Tensor,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StepStats {
    pub loss: f32,
    pub l_img: f32,
    pub l_text: f32,
    pub l_help: f32,
    /// Student accuracy on the batch at threshold 0.5 (before the update).
    pub accuracy: f32,
    /// Loss scaling skipped this step's update (its gradients overflowed).
    pub skipped: bool,
}

/// The stage-2 losses for one batch; returns the total loss (to differentiate) and its parts.
/// `step` keys the LoRA dropout masks (with `cfg.dropout_seed`).
pub fn stage2_loss(
    clip: &Clip,
    teacher: &Head,
    img_fc: &Head,
    text_fc: &Head,
    batch: &Batch<'_>,
    cfg: &Stage2Config,
    step: u64,
) -> Result<(Tensor, StepStats)> {
    let dropout = DropoutKey {
        seed: cfg.dropout_seed,
        step,
    };
    let y = batch.labels.to_dtype(DType::F32)?;
    // Features are [B, D]: the losses and the surgery run on them in f32 whatever the model's
    // compute dtype (the cast is differentiable, so gradients return in that dtype).
    let train = Mode::StudentTrain(dropout);
    let img_logits_of = |f: &Tensor| img_fc.logits(f);
    if cfg.variant == Variant::PlainLora {
        let f = clip
            .image_features(batch.pixels, train)?
            .to_dtype(DType::F32)?;
        let z = img_logits_of(&f)?;
        let l_img = bce_with_logits(&z, &y)?;
        let zero = l_img.zeros_like()?;
        let stats = read_stats([&l_img, &l_img, &zero, &zero, &accuracy_of(&z, &y)?])?;
        return Ok((l_img, stats));
    }
    // Teacher and text features carry no gradient; their losses' gradients with respect to them
    // are the closed forms of a linear head under BCE (what autograd.grad gives the official code).
    let (f, ft) = clip.image_features_pair(batch.pixels, train)?;
    let f = f.to_dtype(DType::F32)?;
    let ft = ft.to_dtype(DType::F32)?.detach();
    let fx = clip
        .text_features(batch.captions)?
        .to_dtype(DType::F32)?
        .detach();
    let g_img = teacher
        .input_grad(&bce_logit_grad(&teacher.logits(&ft)?, &y)?)?
        .detach();
    let z_text = text_fc.logits(&fx)?;
    let g_text = text_fc
        .input_grad(&bce_logit_grad(&z_text.detach(), &y)?)?
        .detach();

    let f = match cfg.variant {
        Variant::Dgs | Variant::NoHelp => match cfg.surgery {
            SurgeryImpl::Fused => orthogonal_suppression(&f, &g_text, cfg.eps)?,
            SurgeryImpl::OpChain => orthogonal_suppression_op_chain(&f, &g_text, cfg.eps)?,
        },
        _ => f,
    };
    let z_img = img_logits_of(&f)?;
    let l_img = bce_with_logits(&z_img, &y)?;
    let l_text = bce_with_logits(&z_text, &y)?;
    let mut loss = (&l_img + &l_text)?;
    let mut l_help = l_img.zeros_like()?;
    if matches!(cfg.variant, Variant::Dgs | Variant::NoSurgery) {
        let g_help = g_img.minimum(0f32)?;
        l_help = (&f * &g_help)?.sum(1)?.mean_all()?;
        loss = (loss + (&l_help * cfg.lambda)?)?;
    }
    let stats = read_stats([&loss, &l_img, &l_text, &l_help, &accuracy_of(&z_img, &y)?])?;
    Ok((loss, stats))
}

/// The step's scalars `[loss, L_img, L_text, L_help, accuracy]` read in one device-to-host copy:
/// the step's only synchronisation besides the finiteness check of the gradients.
fn read_stats(parts: [&Tensor; 5]) -> Result<StepStats> {
    let parts = parts.map(|t| t.to_dtype(DType::F32).and_then(|t| t.reshape(1)));
    let parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
    let v = Tensor::cat(&parts, 0)?.to_vec1::<f32>()?;
    Ok(StepStats {
        loss: v[0],
        l_img: v[1],
        l_text: v[2],
        l_help: v[3],
        accuracy: v[4],
        skipped: false,
    })
}

/// Share of `σ(z) > 0.5` (i.e. `z > 0`) that matches the labels, as a device scalar.
fn accuracy_of(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    let pred = z.gt(0f32)?.to_dtype(DType::F32)?;
    pred.eq(y)?.to_dtype(DType::F32)?.mean_all()
}

/// Share of `σ(z) > 0.5` (i.e. `z > 0`) that matches the labels.
pub fn accuracy(z: &Tensor, y: &Tensor) -> Result<f32> {
    accuracy_of(z, y)?.to_scalar::<f32>()
}

/// Adam over the stage-2 trainables (LoRA, `img_fc`, `text_fc`), by name, with dynamic loss
/// scaling when the model computes in f16.
pub struct Stage2Trainer {
    pub opt: Adam,
    pub cfg: Stage2Config,
    pub scaler: Option<LossScaler>,
}

impl Stage2Trainer {
    pub fn new(trainables: BTreeMap<String, Var>, cfg: Stage2Config) -> Result<Self> {
        let adam = AdamConfig {
            lr: cfg.lr,
            beta1: cfg.beta1,
            ..AdamConfig::default()
        };
        Ok(Self {
            opt: Adam::new(trainables, adam)?,
            cfg,
            scaler: None,
        })
    }

    /// Scale the loss dynamically (for f16 compute).
    pub fn with_loss_scaling(mut self, scaler: LossScaler) -> Self {
        self.scaler = Some(scaler);
        self
    }

    /// One optimisation step. Without loss scaling a non-finite loss or gradient stops with an
    /// error before any update; with it, such a step is skipped and the scale lowered (an error
    /// only when that keeps happening).
    pub fn step(
        &mut self,
        clip: &Clip,
        teacher: &Head,
        img_fc: &Head,
        text_fc: &Head,
        batch: &Batch<'_>,
    ) -> Result<StepStats> {
        self.step_marked(clip, teacher, img_fc, text_fc, batch, &mut |_| Ok(()))
    }

    /// [`step`](Self::step), calling `mark` when the forward (every loss) is done and again
    /// when the backward is: `dgs bench step` synchronises the device there to split one step's
    /// time into its phases.
    pub fn step_marked(
        &mut self,
        clip: &Clip,
        teacher: &Head,
        img_fc: &Head,
        text_fc: &Head,
        batch: &Batch<'_>,
        mark: &mut dyn FnMut(StepPhase) -> Result<()>,
    ) -> Result<StepStats> {
        let step = self.opt.step_count();
        let (loss, mut stats) =
            stage2_loss(clip, teacher, img_fc, text_fc, batch, &self.cfg, step)?;
        mark(StepPhase::ForwardDone)?;
        if let Some(scaler) = &mut self.scaler {
            let grads = match stats.loss.is_finite() {
                true => Some((loss * scaler.scale)?.backward()?),
                false => None,
            };
            mark(StepPhase::BackwardDone)?;
            let finite = match &grads {
                Some(g) => self.opt.first_non_finite(g)?.is_none(),
                None => false,
            };
            let decision = scaler.update(finite).map_err(candle_core::Error::Msg)?;
            match (decision, grads) {
                (ScaleDecision::Apply(inv), Some(g)) => self.opt.step_scaled(&g, inv)?,
                _ => stats.skipped = true,
            }
            return Ok(stats);
        }
        if !stats.loss.is_finite() {
            candle_core::bail!(
                "stage 2: the loss is {} (L_img {}, L_text {}, L_help {}); stopping before the update",
                stats.loss,
                stats.l_img,
                stats.l_text,
                stats.l_help
            );
        }
        let grads = loss.backward()?;
        mark(StepPhase::BackwardDone)?;
        self.opt.step(&grads)?;
        Ok(stats)
    }
}

/// The points inside a training step at which [`Stage2Trainer::step_marked`] calls its mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPhase {
    /// The forwards and every loss are computed; the backward has not started.
    ForwardDone,
    /// The gradients are computed; the optimiser has not started.
    BackwardDone,
}

/// Mean cosine similarity between student and teacher image features on `pixels` — how much of
/// the pretrained representation the student kept.
pub fn forgetting(clip: &Clip, pixels: &Tensor) -> Result<f32> {
    let s = clip.image_features(pixels, Mode::Student)?;
    let t = clip.image_features(pixels, Mode::Frozen)?;
    let (s, t) = (s.to_dtype(DType::F32)?, t.to_dtype(DType::F32)?);
    let dot = (&s * &t)?.sum(1)?;
    let norms = (s.sqr()?.sum(1)?.sqrt()? * t.sqr()?.sum(1)?.sqrt()?)?;
    (dot / (norms + 1e-12)?)?.mean_all()?.to_scalar::<f32>()
}

/// The variables of `map` by name, each prefixed (e.g. `lora.` / `heads.`), for an optimizer
/// and for checkpoints.
pub fn named_vars(prefix: &str, map: &candle_nn::VarMap) -> BTreeMap<String, Var> {
    let data = map.data().lock().unwrap_or_else(|p| p.into_inner());
    data.iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect()
}
