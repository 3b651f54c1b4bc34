//! A training run over an image folder: stage 1 (linear probe) then stage 2 (DGS or an
//! ablation), a checkpoint after every epoch (atomic: the last good one survives a crash or a
//! NaN), the forgetting metric on a held-out batch after every stage-2 epoch, and exact resume.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::batch::to_tensors;
use super::error::{Context, PipelineError};
use super::progress::bar;
use super::run::{EpochRecord, RunRecord, TrainPlan};
use crate::clip::ClipTokenizer;
use crate::data::{
    Captions, FileError, Item, LoadedBatch, Loader, LoaderConfig, OUT_SIZE, Transform,
};
use crate::surgery::rng::SplitMix64;
use crate::train::{
    AdamConfig, Detector, EpochSummary, LossScaler, OwnedBatch, Stage, Stage1Trainer, Stage2Config,
    Stage2Trainer, forgetting, frozen_features,
};

pub struct TrainOutcome {
    pub record: RunRecord,
    pub checkpoint: PathBuf,
    /// Files left out (unreadable, undecodable, no caption), each once.
    pub skipped: Vec<FileError>,
}

fn record_of(stage: u8, epoch: usize, s: &EpochSummary, losses: Vec<(f32, f32)>) -> EpochRecord {
    EpochRecord {
        stage,
        epoch,
        steps: s.steps,
        skipped_steps: s.skipped,
        loss: s.loss,
        l_img: s.l_img,
        l_text: s.l_text,
        l_help: s.l_help,
        accuracy: s.accuracy,
        forgetting: None,
        step_losses: losses.iter().map(|l| l.0).collect(),
        step_l_img: losses.iter().map(|l| l.1).collect(),
    }
}

/// Train `det` on `items` per `plan`, writing `out/checkpoint.safetensors` after every epoch.
/// With `resume`, continue the run recorded there (same plan) from its next epoch.
#[allow(clippy::too_many_arguments)]
pub fn train(
    det: &Detector,
    items: Vec<Item>,
    captions: &Captions,
    tokenizer: &ClipTokenizer,
    plan: &TrainPlan,
    out: &Path,
    resume: Option<&Path>,
    dtype: DType,
    device: &Device,
    quiet: bool,
) -> Result<TrainOutcome, PipelineError> {
    plan.validate()?;
    let image_size = det.clip.config.vision_config.image_size;
    if image_size != OUT_SIZE {
        return Err(PipelineError::Invalid(format!(
            "the model takes {image_size} px images; the DGS-Net transform makes {OUT_SIZE} px"
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| PipelineError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let checkpoint = out.join("checkpoint.safetensors");
    let mut record = RunRecord {
        format: RunRecord::FORMAT.into(),
        model: det.clip.config.clone(),
        plan: plan.clone(),
        stage1_done: 0,
        stage2_done: 0,
        history: Vec::new(),
        scaler: (dtype == DType::F16).then(LossScaler::default),
    };
    let mut resumed = None;
    if let Some(path) = resume {
        let loaded = det.restore_checkpoint(path, device)?;
        let r = RunRecord::from_json(&loaded.config, path)?;
        // Epoch counts may grow (train longer); every other option must match.
        let same_run = TrainPlan {
            stage1_epochs: plan.stage1_epochs,
            stage2_epochs: plan.stage2_epochs,
            ..r.plan.clone()
        } == *plan;
        if !same_run || r.model != det.clip.config {
            return Err(PipelineError::Invalid(format!(
                "{}: recorded with other options or another model; resume with the same options \
                 (only the epoch counts may change)",
                path.display()
            )));
        }
        if r.stage2_done > 0 && plan.stage1_epochs != r.plan.stage1_epochs {
            return Err(PipelineError::Invalid(format!(
                "{}: stage 2 has started; stage-1 epochs cannot change now",
                path.display()
            )));
        }
        record = RunRecord {
            plan: plan.clone(),
            ..r
        };
        resumed = Some(loaded);
    }

    // The optimizer state in a checkpoint is that of the stage it was written in.
    let resumed_in_stage2 = record.stage2_done > 0;

    // Hold out a few images (never trained on) for the forgetting metric.
    let mut order: Vec<usize> = (0..items.len()).collect();
    SplitMix64::new(plan.seed ^ 0x5EED).shuffle(&mut order);
    let holdout_n = plan.holdout.min(items.len() / 10);
    let holdout: Vec<Item> = order[..holdout_n]
        .iter()
        .map(|&i| items[i].clone())
        .collect();
    let mut train_items: Vec<Item> = order[holdout_n..]
        .iter()
        .map(|&i| items[i].clone())
        .collect();
    train_items.sort_by(|a, b| a.path.cmp(&b.path));
    if train_items.is_empty() {
        return Err(PipelineError::Invalid("no training images".into()));
    }
    let loader_cfg = LoaderConfig {
        batch_size: plan.batch_size,
        shuffle: true,
        seed: plan.seed,
        prefetch: plan.prefetch,
    };
    let mut transform = Transform::train(plan.augment);
    transform.flip = plan.flip;
    let loader = Loader::new(train_items, transform, loader_cfg).map_err(PipelineError::Invalid)?;
    let mut skipped: Vec<FileError> = Vec::new();
    let holdout_pixels = holdout_batch(holdout, dtype, device, &mut skipped)?;
    let note = |failed: Vec<FileError>, skipped: &mut Vec<FileError>| {
        for f in failed {
            if !skipped.contains(&f) {
                skipped.push(f);
            }
        }
    };
    let n_images = loader.items().len();
    let save = |record: &RunRecord, opt: &crate::train::Adam| -> Result<(), PipelineError> {
        let json = serde_json::to_value(record)
            .map_err(|e| PipelineError::Invalid(format!("run record: {e}")))?;
        det.save_checkpoint(&checkpoint, opt, &json)?;
        Ok(())
    };

    // Stage 1: the teacher head on frozen features.
    if record.stage1_done < plan.stage1_epochs {
        let adam = AdamConfig {
            lr: plan.stage1_lr,
            beta1: plan.beta1,
            ..AdamConfig::default()
        };
        let mut t1 = Stage1Trainer::new(det.trainables(Stage::One), adam)
            .context(|| "stage 1 optimizer".into())?;
        if let Some(l) = resumed.take() {
            t1.opt
                .restore(&l.optimizer, l.step)
                .context(|| "restoring the stage-1 optimizer".into())?;
        }
        for epoch in record.stage1_done..plan.stage1_epochs {
            let pb = bar(
                n_images,
                format!("stage 1 epoch {}/{}", epoch + 1, plan.stage1_epochs),
                quiet,
            );
            let mut losses = Vec::new();
            let mut failed = Vec::new();
            let batches = model_batches(
                loader.epoch(epoch as u64),
                loader.items(),
                None,
                (dtype, device),
                &pb,
                &mut failed,
            )
            .map(|r| {
                r.and_then(|ob| frozen_features(&det.clip, &ob.pixels).map(|f| (f, ob.labels)))
            });
            let summary = t1
                .epoch(det, batches, |s| losses.push((s.loss, s.l_img)))
                .context(|| format!("stage 1, epoch {}", epoch + 1))?;
            pb.finish_and_clear();
            note(failed, &mut skipped);
            record.stage1_done = epoch + 1;
            record.history.push(record_of(1, epoch, &summary, losses));
            save(&record, &t1.opt)?;
        }
    }

    // Stage 2: LoRA + img_fc + text_fc under the chosen variant.
    if record.stage2_done < plan.stage2_epochs {
        let cfg = Stage2Config {
            variant: plan.variant,
            lambda: plan.lambda,
            lr: plan.lr,
            beta1: plan.beta1,
            ..Stage2Config::default()
        };
        let mut t2 = Stage2Trainer::new(det.trainables(Stage::Two), cfg)
            .context(|| "stage 2 optimizer".into())?;
        if let Some(s) = record.scaler {
            t2 = t2.with_loss_scaling(s);
        }
        if let Some(l) = resumed.take().filter(|_| resumed_in_stage2) {
            t2.opt
                .restore(&l.optimizer, l.step)
                .context(|| "restoring the stage-2 optimizer".into())?;
        }
        for epoch in record.stage2_done..plan.stage2_epochs {
            let pb = bar(
                n_images,
                format!("stage 2 epoch {}/{}", epoch + 1, plan.stage2_epochs),
                quiet,
            );
            let mut losses = Vec::new();
            let mut failed = Vec::new();
            let batches = model_batches(
                loader.epoch(1_000_000 + epoch as u64),
                loader.items(),
                Some((captions, tokenizer)),
                (dtype, device),
                &pb,
                &mut failed,
            );
            let summary = t2
                .epoch(det, batches, |s| losses.push((s.loss, s.l_img)))
                .context(|| format!("stage 2, epoch {}", epoch + 1))?;
            pb.finish_and_clear();
            note(failed, &mut skipped);
            let mut rec = record_of(2, epoch, &summary, losses);
            if let Some(px) = &holdout_pixels {
                rec.forgetting =
                    Some(forgetting(&det.clip, px).context(|| "forgetting metric".into())?);
            }
            record.stage2_done = epoch + 1;
            record.scaler = t2.scaler;
            record.history.push(rec);
            save(&record, &t2.opt)?;
        }
    }
    Ok(TrainOutcome {
        record,
        checkpoint,
        skipped,
    })
}

/// Loaded batches as model inputs, counting progress and collecting the files left out; a
/// batch with nothing usable is dropped.
fn model_batches<'a>(
    batches: impl Iterator<Item = LoadedBatch> + 'a,
    items: &'a [Item],
    text: Option<(&'a Captions, &'a ClipTokenizer)>,
    (dtype, device): (DType, &'a Device),
    pb: &'a indicatif::ProgressBar,
    failed: &'a mut Vec<FileError>,
) -> impl Iterator<Item = candle_core::Result<OwnedBatch>> + 'a {
    batches.filter_map(move |b| {
        pb.inc((b.len() + b.failed.len()) as u64);
        match to_tensors(b, items, text, dtype, device) {
            Ok((ob, rest)) => {
                failed.extend(rest.failed);
                ob.map(Ok)
            }
            Err(e) => Some(Err(candle_core::Error::Msg(e.to_string()))),
        }
    })
}

/// The held-out images as one eval-transformed batch (`None` when there are none).
fn holdout_batch(
    items: Vec<Item>,
    dtype: DType,
    device: &Device,
    skipped: &mut Vec<FileError>,
) -> Result<Option<Tensor>, PipelineError> {
    if items.is_empty() {
        return Ok(None);
    }
    let cfg = LoaderConfig {
        batch_size: items.len(),
        shuffle: false,
        seed: 0,
        prefetch: 1,
    };
    let loader = Loader::new(items, Transform::eval(), cfg).map_err(PipelineError::Invalid)?;
    let Some(b) = loader.epoch(0).next() else {
        return Ok(None);
    };
    let (ob, rest) = to_tensors(b, loader.items(), None, dtype, device)?;
    skipped.extend(rest.failed);
    Ok(ob.map(|o| o.pixels))
}
