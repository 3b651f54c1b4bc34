//! What a training run is (its plan), what it has done (its record, stored in every
//! checkpoint so `--resume`, `eval` and `detect` need nothing else), and how the model is set up.

use std::path::Path;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::error::PipelineError;
use crate::clip::{ClipConfig, LoraConfig};
use crate::data::{Augment, PatchSelection, check_prefetch};
use crate::train::{Detector, LossScaler, Variant};

/// Every hyper-parameter of a run; defaults are the paper's (official options).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    /// Stage 1 (linear probe of the teacher head) epochs.
    pub stage1_epochs: usize,
    /// Stage 2 (DGS) epochs.
    pub stage2_epochs: usize,
    pub batch_size: usize,
    pub stage1_lr: f64,
    pub lr: f64,
    pub beta1: f64,
    /// λ of `L_help`.
    pub lambda: f64,
    pub variant: Variant,
    pub lora: LoraConfig,
    pub augment: Augment,
    /// Patch-selection rules (checkpoints from before the choice used ours).
    #[serde(default)]
    pub patch_selection: PatchSelection,
    /// Random horizontal flips in training.
    pub flip: bool,
    pub seed: u64,
    /// Batches loaded ahead of the model.
    pub prefetch: usize,
    /// Training images held out (never trained on) for the forgetting metric.
    pub holdout: usize,
}

impl Default for TrainPlan {
    fn default() -> Self {
        Self {
            stage1_epochs: 3,
            stage2_epochs: 1,
            batch_size: 32,
            stage1_lr: 1e-4,
            lr: 1e-4,
            beta1: 0.9,
            lambda: 0.2,
            variant: Variant::Dgs,
            lora: LoraConfig::default(),
            augment: Augment::default(),
            patch_selection: PatchSelection::default(),
            flip: true,
            seed: 0,
            prefetch: 4,
            holdout: 32,
        }
    }
}

impl TrainPlan {
    pub fn validate(&self) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Invalid(m));
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if self.stage1_epochs + self.stage2_epochs == 0 {
            return bad("nothing to train: --stage1-epochs and --stage2-epochs are both 0".into());
        }
        check_prefetch(self.prefetch).map_err(PipelineError::Invalid)?;
        for (name, lr) in [("stage-1 lr", self.stage1_lr), ("lr", self.lr)] {
            if !(lr > 0.0 && lr.is_finite()) {
                return bad(format!("{name} must be positive, got {lr}"));
            }
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad(format!("beta1 must be in [0, 1), got {}", self.beta1));
        }
        if !self.lambda.is_finite() || self.lambda < 0.0 {
            return bad(format!("lambda must be ≥ 0, got {}", self.lambda));
        }
        if self.lora.rank == 0 || !(0.0..1.0).contains(&self.lora.dropout) {
            return bad(format!(
                "LoRA rank must be ≥ 1 and dropout in [0, 1), got {} / {}",
                self.lora.rank, self.lora.dropout
            ));
        }
        self.augment.validate().map_err(PipelineError::Invalid)
    }
}

/// One finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub stage: u8,
    pub epoch: usize,
    pub steps: usize,
    pub skipped_steps: usize,
    pub loss: f32,
    pub l_img: f32,
    pub l_text: f32,
    pub l_help: f32,
    pub accuracy: f32,
    /// Mean cosine similarity of student and teacher features on the held-out batch.
    pub forgetting: Option<f32>,
    /// Per-step total loss and image loss `L_img`, for the curves.
    pub step_losses: Vec<f32>,
    pub step_l_img: Vec<f32>,
}

/// What a checkpoint records besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: String,
    pub model: ClipConfig,
    pub plan: TrainPlan,
    /// Epochs finished: stage 1 then stage 2.
    pub stage1_done: usize,
    pub stage2_done: usize,
    pub history: Vec<EpochRecord>,
    pub scaler: Option<LossScaler>,
}

impl RunRecord {
    pub const FORMAT: &'static str = "dgs-run-1";

    /// Chart points `(stage-2 step, value)` of a per-step series of the history (e.g.
    /// `|e| &e.step_l_img`).
    pub fn stage2_steps(&self, series: impl Fn(&EpochRecord) -> &[f32]) -> Vec<(f64, f64)> {
        self.history
            .iter()
            .filter(|e| e.stage == 2)
            .flat_map(|e| series(e).iter())
            .enumerate()
            .map(|(i, &v)| (i as f64, f64::from(v)))
            .collect()
    }

    /// Chart points `(epoch, features kept)` of the stage-2 epochs.
    pub fn forgetting(&self) -> Vec<(f64, f64)> {
        self.history
            .iter()
            .filter_map(|e| Some(((e.epoch + 1) as f64, f64::from(e.forgetting?))))
            .collect()
    }

    pub fn from_json(v: &serde_json::Value, path: &Path) -> Result<Self, PipelineError> {
        let r: RunRecord = serde_json::from_value(v.clone()).map_err(|e| {
            PipelineError::Invalid(format!(
                "{}: not a dgs training checkpoint ({e})",
                path.display()
            ))
        })?;
        if r.format != Self::FORMAT {
            return Err(PipelineError::Invalid(format!(
                "{}: run format `{}`, this build reads `{}`",
                path.display(),
                r.format,
                Self::FORMAT
            )));
        }
        Ok(r)
    }
}

/// `cpu` or `cuda` (`cuda:N` for another GPU).
pub fn parse_device(name: &str) -> Result<Device, PipelineError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ordinal: usize =
                n.strip_prefix("cuda:")
                    .map_or(Ok(0), str::parse)
                    .map_err(|_| {
                        PipelineError::Invalid(format!("bad device `{n}`: use cuda or cuda:N"))
                    })?;
            if !cfg!(feature = "cuda") {
                return Err(PipelineError::Invalid(
                    "this dgs was built without CUDA support: rebuild with `--features cuda`"
                        .into(),
                ));
            }
            let device = Device::new_cuda(ordinal).map_err(|source| {
                PipelineError::compute(format!("opening CUDA device {ordinal}"), source)
            })?;
            #[cfg(feature = "cuda")]
            if let Device::Cuda(d) = &device {
                configure_cuda(d);
            }
            Ok(device)
        }
        n => Err(PipelineError::Invalid(format!(
            "unknown device `{n}`: use cpu or cuda"
        ))),
    }
}

/// The device settings of a dgs run, before anything is allocated on it: freed memory stays in
/// the pool for the next step, and allocations carry no per-use events. A pool setting the
/// device refuses (one without memory pools) is said once and skipped.
#[cfg(feature = "cuda")]
fn configure_cuda(d: &candle_core::cuda_backend::CudaDevice) {
    if let Err(e) = super::cuda_pool::keep_freed_memory(d) {
        eprintln!("note: freed GPU memory goes back to the driver each step ({e})");
    }
    // SAFETY: every device operation of a dgs run is issued from the thread that opened the
    // device (the loader's threads only fill host buffers), so all of them go to that thread's one
    // stream, in order: no buffer is used, written or freed on a second stream, which is what the
    // events would guard.
    unsafe { d.disable_event_tracking() };
}

/// `f32`, `f16` or `bf16` (the frozen weights' and activations' dtype; adapters, heads and
/// losses stay f32). bf16 needs a GPU: candle's CPU matmul has none.
pub fn parse_dtype(name: &str, device: &Device) -> Result<DType, PipelineError> {
    let d = match name {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        n => {
            return Err(PipelineError::Invalid(format!(
                "unknown dtype `{n}`: use f32, f16 or bf16"
            )));
        }
    };
    if d == DType::BF16 && device.is_cpu() {
        return Err(PipelineError::Invalid(
            "bf16 runs on the GPU only (candle's CPU matmul has no bf16); use f32 or f16 on the CPU".into(),
        ));
    }
    Ok(d)
}

/// The detector of model folder `model` with, when given, a checkpoint's trained weights; the
/// LoRA configuration comes from the checkpoint (else `lora`).
pub fn load_detector(
    model: &Path,
    checkpoint: Option<&Path>,
    lora: LoraConfig,
    dtype: DType,
    device: &Device,
) -> Result<(Detector, Option<RunRecord>), PipelineError> {
    let record = match checkpoint {
        Some(p) => {
            let loaded = crate::train::checkpoint::load(p, &Device::Cpu)?;
            Some(RunRecord::from_json(&loaded.config, p)?)
        }
        None => None,
    };
    let lora = record.as_ref().map_or(lora, |r| r.plan.lora);
    let det = Detector::from_hf(model, dtype, device, lora)?;
    if let (Some(p), Some(r)) = (checkpoint, &record) {
        if r.model != det.clip.config {
            return Err(PipelineError::Invalid(format!(
                "{} was trained on a different CLIP than {} ({}; checkpoint → model folder)",
                p.display(),
                model.join("config.json").display(),
                super::guard::differences(&r.model, &det.clip.config).join(", ")
            )));
        }
        det.restore_checkpoint(p, device)?;
    }
    Ok((det, record))
}
