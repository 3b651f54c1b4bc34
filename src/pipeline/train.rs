//! A training run over an image folder: stage 1 (linear probe) then stage 2 (DGS or an
//! ablation), a checkpoint after every epoch (atomic: the last good one survives a crash or a
//! NaN), the forgetting metric on a held-out batch after every stage-2 epoch, and exact resume.
//!
//! The run is a sequence of steps, each with its own checks: the plan, the record to start from
//! and the data (`train_checks`), then each stage; an epoch in which no batch could be used is an
//! error.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::batch::to_tensors;
use super::error::{Context, PipelineError};
use super::progress::bar;
use super::run::{EpochRecord, RunRecord, TrainPlan};
use super::train_checks::{check_data, check_plan, start_record};
use crate::clip::ClipTokenizer;
use crate::data::{
    Captions, DecodeOptions, FileError, Item, LoadedBatch, Loader, LoaderConfig, Transform,
};
use crate::surgery::rng::SplitMix64;
use crate::train::checkpoint::Loaded;
use crate::train::{
    AdamConfig, Detector, EpochSummary, OwnedBatch, Stage, Stage1Trainer, Stage2Config,
    Stage2Trainer, forgetting, frozen_features,
};

/// Everything a training run needs.
pub struct TrainJob<'a> {
    pub det: &'a Detector,
    pub items: Vec<Item>,
    pub captions: &'a Captions,
    pub tokenizer: &'a ClipTokenizer,
    pub plan: &'a TrainPlan,
    /// Output folder: `checkpoint.safetensors` after every epoch.
    pub out: &'a Path,
    /// Continue the run recorded in this checkpoint (same plan) from its next epoch.
    pub resume: Option<&'a Path>,
    /// Replace a run already in `out` (without it, that is an error).
    pub overwrite: bool,
    /// Files the run reads (model files, captions): none may be an output.
    pub inputs: Vec<PathBuf>,
    pub decode: DecodeOptions,
    pub dtype: DType,
    pub device: &'a Device,
    pub quiet: bool,
    /// Called as each epoch's checkpoint is written, with the epoch and the checkpoint's path.
    pub on_epoch: &'a dyn Fn(&EpochRecord, &Path),
}

pub struct TrainOutcome {
    pub record: RunRecord,
    pub checkpoint: PathBuf,
    /// Files left out (unreadable, undecodable, no caption), each once.
    pub skipped: Vec<FileError>,
}

/// The files a run writes into `out`.
pub fn run_outputs(out: &Path) -> [PathBuf; 4] {
    [
        "checkpoint.safetensors",
        "history.json",
        "loss.png",
        "forgetting.png",
    ]
    .map(|f| out.join(f))
}

/// Train per `job`, writing `out/checkpoint.safetensors` after every epoch.
pub fn train(job: TrainJob<'_>) -> Result<TrainOutcome, PipelineError> {
    check_plan(&job)?;
    let (record, resumed) = start_record(&job)?;
    check_data(&job, &record)?;
    let mut run = Run::new(&job, record)?;
    let resumed_in_stage2 = run.record.stage2_done > 0;
    let mut resumed = resumed;
    if run.record.stage1_done < job.plan.stage1_epochs {
        run.stage1(resumed.take())?;
    }
    if run.record.stage2_done < job.plan.stage2_epochs {
        // The optimizer state in a checkpoint is that of the stage it was written in.
        run.stage2(resumed.take().filter(|_| resumed_in_stage2))?;
    }
    Ok(TrainOutcome {
        record: run.record,
        checkpoint: run.checkpoint,
        skipped: run.skipped,
    })
}

/// A run in progress: the loader, the held-out batch, the record and the files left out.
struct Run<'j, 'a> {
    job: &'j TrainJob<'a>,
    loader: Loader,
    holdout: Option<Tensor>,
    record: RunRecord,
    checkpoint: PathBuf,
    skipped: Vec<FileError>,
}

impl<'j, 'a> Run<'j, 'a> {
    fn new(job: &'j TrainJob<'a>, record: RunRecord) -> Result<Self, PipelineError> {
        let plan = job.plan;
        let (holdout_items, train_items) = split_holdout(&job.items, plan);
        let loader_cfg = LoaderConfig {
            batch_size: plan.batch_size,
            shuffle: true,
            seed: plan.seed,
            prefetch: plan.prefetch,
            decode: job.decode,
        };
        let mut transform = Transform::train(plan.augment);
        transform.flip = plan.flip;
        transform.patches = plan.patch_selection;
        let loader =
            Loader::new(train_items, transform, loader_cfg).map_err(PipelineError::Invalid)?;
        std::fs::create_dir_all(job.out).map_err(|source| PipelineError::Io {
            path: job.out.to_path_buf(),
            source,
        })?;
        let [checkpoint, ..] = run_outputs(job.out);
        let mut skipped = Vec::new();
        let holdout = holdout_batch(holdout_items, job, &mut skipped)?;
        Ok(Self {
            job,
            loader,
            holdout,
            record,
            checkpoint,
            skipped,
        })
    }

    /// Stage 1: the teacher head on frozen features.
    fn stage1(&mut self, resumed: Option<Loaded>) -> Result<(), PipelineError> {
        let (job, plan) = (self.job, self.job.plan);
        let adam = AdamConfig {
            lr: plan.stage1_lr,
            beta1: plan.beta1,
            ..AdamConfig::default()
        };
        let mut t1 = Stage1Trainer::new(job.det.trainables(Stage::One), adam)
            .context(|| "stage 1 optimizer".into())?;
        if let Some(l) = resumed {
            t1.opt
                .restore(&l.optimizer, l.step)
                .context(|| "restoring the stage-1 optimizer".into())?;
        }
        for epoch in self.record.stage1_done..plan.stage1_epochs {
            let title = format!("stage 1 epoch {}/{}", epoch + 1, plan.stage1_epochs);
            let pb = bar(self.loader.items().len(), title, job.quiet);
            let (mut losses, mut failed) = (Vec::new(), Vec::new());
            let batches = model_batches(
                self.loader.epoch(epoch as u64),
                self.loader.items(),
                None,
                job,
                &pb,
                &mut failed,
            )
            .map(|r| {
                r.and_then(|ob| frozen_features(&job.det.clip, &ob.pixels).map(|f| (f, ob.labels)))
            });
            let summary = t1
                .epoch(job.det, batches, |s| losses.push((s.loss, s.l_img)))
                .context(|| format!("stage 1, epoch {}", epoch + 1))?;
            pb.finish_and_clear();
            self.note(failed, &summary, 1, epoch)?;
            self.record.stage1_done = epoch + 1;
            self.finish_epoch(record_of(1, epoch, &summary, losses), &t1.opt)?;
        }
        Ok(())
    }

    /// Stage 2: LoRA + img_fc + text_fc under the chosen variant.
    fn stage2(&mut self, resumed: Option<Loaded>) -> Result<(), PipelineError> {
        let (job, plan) = (self.job, self.job.plan);
        let cfg = Stage2Config {
            variant: plan.variant,
            lambda: plan.lambda,
            lr: plan.lr,
            beta1: plan.beta1,
            dropout_seed: plan.seed,
            ..Stage2Config::default()
        };
        let mut t2 = Stage2Trainer::new(job.det.trainables(Stage::Two), cfg)
            .context(|| "stage 2 optimizer".into())?;
        if let Some(s) = self.record.scaler {
            t2 = t2.with_loss_scaling(s);
        }
        if let Some(l) = resumed {
            t2.opt
                .restore(&l.optimizer, l.step)
                .context(|| "restoring the stage-2 optimizer".into())?;
        }
        for epoch in self.record.stage2_done..plan.stage2_epochs {
            let title = format!("stage 2 epoch {}/{}", epoch + 1, plan.stage2_epochs);
            let pb = bar(self.loader.items().len(), title, job.quiet);
            let (mut losses, mut failed) = (Vec::new(), Vec::new());
            let batches = model_batches(
                self.loader.epoch(1_000_000 + epoch as u64),
                self.loader.items(),
                Some((job.captions, job.tokenizer)),
                job,
                &pb,
                &mut failed,
            );
            let summary = t2
                .epoch(job.det, batches, |s| losses.push((s.loss, s.l_img)))
                .context(|| format!("stage 2, epoch {}", epoch + 1))?;
            pb.finish_and_clear();
            self.note(failed, &summary, 2, epoch)?;
            let mut rec = record_of(2, epoch, &summary, losses);
            if let Some(px) = &self.holdout {
                rec.forgetting =
                    Some(forgetting(&job.det.clip, px).context(|| "forgetting metric".into())?);
            }
            self.record.stage2_done = epoch + 1;
            self.record.scaler = t2.scaler;
            self.finish_epoch(rec, &t2.opt)?;
        }
        Ok(())
    }

    /// Keep the epoch's left-out files; an epoch that trained on nothing is an error.
    fn note(
        &mut self,
        failed: Vec<FileError>,
        summary: &EpochSummary,
        stage: u8,
        epoch: usize,
    ) -> Result<(), PipelineError> {
        if summary.steps == 0 && summary.skipped == 0 {
            let first = failed
                .first()
                .map_or(String::new(), |f| format!("; e.g. {f}"));
            return Err(PipelineError::Invalid(format!(
                "no usable training image in stage {stage}, epoch {}: all {} files failed{first}",
                epoch + 1,
                self.loader.items().len()
            )));
        }
        for f in failed {
            if !self.skipped.contains(&f) {
                self.skipped.push(f);
            }
        }
        Ok(())
    }

    /// Record the epoch, write the checkpoint, then tell the caller.
    fn finish_epoch(
        &mut self,
        rec: EpochRecord,
        opt: &crate::train::Adam,
    ) -> Result<(), PipelineError> {
        self.record.history.push(rec);
        let json = serde_json::to_value(&self.record)
            .map_err(|e| PipelineError::Invalid(format!("run record: {e}")))?;
        self.job.det.save_checkpoint(&self.checkpoint, opt, &json)?;
        if let Some(rec) = self.record.history.last() {
            (self.job.on_epoch)(rec, &self.checkpoint);
        }
        Ok(())
    }
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

/// A few images held out (never trained on) for the forgetting metric, and the rest sorted.
fn split_holdout(items: &[Item], plan: &TrainPlan) -> (Vec<Item>, Vec<Item>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    SplitMix64::new(plan.seed ^ 0x5EED).shuffle(&mut order);
    let holdout_n = plan.holdout.min(items.len() / 10);
    let holdout = order[..holdout_n]
        .iter()
        .map(|&i| items[i].clone())
        .collect();
    let mut train: Vec<Item> = order[holdout_n..]
        .iter()
        .map(|&i| items[i].clone())
        .collect();
    train.sort_by(|a, b| a.path.cmp(&b.path));
    (holdout, train)
}

/// Loaded batches as model inputs, counting progress and collecting the files left out; a
/// batch with nothing usable is dropped.
fn model_batches<'a>(
    batches: impl Iterator<Item = LoadedBatch> + 'a,
    items: &'a [Item],
    text: Option<(&'a Captions, &'a ClipTokenizer)>,
    job: &'a TrainJob<'a>,
    pb: &'a indicatif::ProgressBar,
    failed: &'a mut Vec<FileError>,
) -> impl Iterator<Item = candle_core::Result<OwnedBatch>> + 'a {
    batches.filter_map(move |b| {
        pb.inc((b.len() + b.failed.len()) as u64);
        match to_tensors(b, items, text, job.dtype, job.device) {
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
    job: &TrainJob<'_>,
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
        decode: job.decode,
    };
    let transform = Transform {
        patches: job.plan.patch_selection,
        ..Transform::eval()
    };
    let loader = Loader::new(items, transform, cfg).map_err(PipelineError::Invalid)?;
    let Some(b) = loader.epoch(0).next() else {
        return Ok(None);
    };
    let (ob, rest) = to_tensors(b, loader.items(), None, job.dtype, job.device)?;
    skipped.extend(rest.failed);
    Ok(ob.map(|o| o.pixels))
}
