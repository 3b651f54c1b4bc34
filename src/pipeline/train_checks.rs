//! The checks before a training run touches data or writes anything: the plan (options, the
//! model's input size, outputs that would overwrite inputs or an existing run), the record to
//! start from (a resumed run's options must match, and the message names what differs), and the
//! data (both classes, and captions when stage 2 is still to run).

use candle_core::DType;

use super::error::PipelineError;
use super::guard::{differences, refuse_overwriting_inputs};
use super::run::{RunRecord, TrainPlan};
use super::train::{TrainJob, run_outputs};
use crate::data::OUT_SIZE;
use crate::train::LossScaler;
use crate::train::checkpoint::Loaded;

/// Options, model and outputs, before anything is loaded or written.
pub(super) fn check_plan(job: &TrainJob<'_>) -> Result<(), PipelineError> {
    job.plan.validate()?;
    let image_size = job.det.clip.config.vision_config.image_size;
    if image_size != OUT_SIZE {
        return Err(PipelineError::Invalid(format!(
            "the model takes {image_size} px images; the DGS-Net transform makes {OUT_SIZE} px"
        )));
    }
    let outputs = run_outputs(job.out);
    refuse_overwriting_inputs(&outputs, &job.inputs, "--out")?;
    let checkpoint = &outputs[0];
    let same_as_resume = job
        .resume
        .is_some_and(|r| std::fs::canonicalize(r).ok() == std::fs::canonicalize(checkpoint).ok());
    if checkpoint.exists() && !same_as_resume && !job.overwrite {
        return Err(PipelineError::Invalid(format!(
            "{} holds a training run already: pass --resume {} to continue it, or --overwrite \
             to replace it",
            checkpoint.display(),
            checkpoint.display()
        )));
    }
    Ok(())
}

/// A fresh record, or the resumed run's (its options must match but for the epoch counts).
pub(super) fn start_record(
    job: &TrainJob<'_>,
) -> Result<(RunRecord, Option<Loaded>), PipelineError> {
    let (det, plan) = (job.det, job.plan);
    let fresh = RunRecord {
        format: RunRecord::FORMAT.into(),
        model: det.clip.config.clone(),
        plan: plan.clone(),
        stage1_done: 0,
        stage2_done: 0,
        history: Vec::new(),
        scaler: (job.dtype == DType::F16).then(LossScaler::default),
    };
    let Some(path) = job.resume else {
        return Ok((fresh, None));
    };
    let loaded = det.restore_checkpoint(path, job.device)?;
    let r = RunRecord::from_json(&loaded.config, path)?;
    let recorded = TrainPlan {
        stage1_epochs: plan.stage1_epochs,
        stage2_epochs: plan.stage2_epochs,
        ..r.plan.clone()
    };
    let mut differ = differences(&recorded, plan);
    differ.extend(
        differences(&r.model, &det.clip.config)
            .into_iter()
            .map(|d| format!("model {d}")),
    );
    if !differ.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "{}: recorded with other options ({}; checkpoint → now); resume with the same \
             options (only the epoch counts may change)",
            path.display(),
            differ.join(", ")
        )));
    }
    if r.stage2_done > 0 && plan.stage1_epochs != r.plan.stage1_epochs {
        return Err(PipelineError::Invalid(format!(
            "{}: stage 2 has started; stage-1 epochs cannot change now",
            path.display()
        )));
    }
    let record = RunRecord {
        plan: plan.clone(),
        ..r
    };
    Ok((record, Some(loaded)))
}

/// Training data that can mean something: both classes, and captions for stage 2.
pub(super) fn check_data(job: &TrainJob<'_>, record: &RunRecord) -> Result<(), PipelineError> {
    if job.items.is_empty() {
        return Err(PipelineError::Invalid("no training images".into()));
    }
    for (label, name, folder) in [(0, "real", "0_real"), (1, "fake", "1_fake")] {
        if !job.items.iter().any(|i| i.label == label) {
            return Err(PipelineError::Invalid(format!(
                "the training data has no {name} images (no image files under any {folder} \
                 folder): a detector needs both classes"
            )));
        }
    }
    if record.stage2_done < job.plan.stage2_epochs
        && !job.items.iter().any(|i| job.captions.get(&i.path).is_ok())
    {
        let example = job
            .captions
            .get(&job.items[0].path)
            .err()
            .unwrap_or_default();
        return Err(PipelineError::Invalid(format!(
            "no training image has a caption in {}, and stage 2 needs them; e.g. {}: {example}",
            job.captions.source(),
            job.items[0].path.display()
        )));
    }
    Ok(())
}
