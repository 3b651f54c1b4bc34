//! Scoring images with a detector, and the per-subset evaluation report.

use candle_core::{DType, Device};

use super::batch::to_tensors;
use super::error::{Context, PipelineError};
use super::progress::bar;
use crate::data::{
    DecodeOptions, Discovery, FileError, Item, Loader, LoaderConfig, PatchSelection, Transform,
};
use crate::eval::{Report, ReportRow, subset_metrics};
use crate::train::Detector;

/// Scores of the images that could be read, by index into the input, and the files that could
/// not.
pub struct Scored {
    pub scores: Vec<(usize, f32)>,
    pub failed: Vec<FileError>,
}

/// A detector and how to feed it: batches of `batch_size` in `dtype` on `device`, files decoded
/// per `decode`, patches selected per `patches`, progress bars unless `quiet`.
pub struct Scorer<'a> {
    pub det: &'a Detector,
    pub batch_size: usize,
    pub dtype: DType,
    pub device: &'a Device,
    pub decode: DecodeOptions,
    pub patches: PatchSelection,
    pub quiet: bool,
}

impl Scorer<'_> {
    /// `P(AI-generated)` of each item (eval transform: patch selection, no flip), with a progress
    /// bar labelled `label`.
    pub fn score(&self, items: &[Item], label: &str) -> Result<Scored, PipelineError> {
        let cfg = LoaderConfig {
            batch_size: self.batch_size,
            shuffle: false,
            seed: 0,
            prefetch: 4,
            decode: self.decode,
        };
        let transform = Transform {
            patches: self.patches,
            ..Transform::eval()
        };
        let loader = Loader::new(items.to_vec(), transform, cfg).map_err(PipelineError::Invalid)?;
        let pb = bar(items.len(), label, self.quiet);
        let mut out = Scored {
            scores: Vec::with_capacity(items.len()),
            failed: Vec::new(),
        };
        for b in loader.epoch(0) {
            pb.inc((b.len() + b.failed.len()) as u64);
            let (ob, rest) = to_tensors(b, loader.items(), None, self.dtype, self.device)?;
            out.failed.extend(rest.failed);
            let Some(ob) = ob else { continue };
            let p: Vec<f32> = self
                .det
                .fake_probability(&ob.pixels)
                .and_then(|p| p.to_vec1())
                .context(|| format!("scoring a batch of {label}"))?;
            if let Some(k) = p.iter().position(|v| !v.is_finite()) {
                return Err(PipelineError::Invalid(format!(
                    "the model gave a non-finite score ({}) for {}: its weights or inputs hold \
                     NaN/inf",
                    p[k],
                    loader.items()[rest.indices[k]].path.display()
                )));
            }
            out.scores.extend(rest.indices.iter().copied().zip(p));
        }
        pb.finish_and_clear();
        Ok(out)
    }

    /// Evaluate every subset of `data`; rows are named `method`. A subset lacking real or fake
    /// images gets a warning (its AP is undefined).
    pub fn evaluate(&self, data: &Discovery, method: &str) -> Result<Report, PipelineError> {
        let mut report = Report {
            skipped: data.skipped.iter().map(|f| f.to_string()).collect(),
            ..Report::default()
        };
        for subset in &data.subsets {
            let label = match method.is_empty() {
                true => subset.name.clone(),
                false => format!("{method}: {}", subset.name),
            };
            let scored = self.score(&subset.items, &label)?;
            report
                .skipped
                .extend(scored.failed.iter().map(|f| f.to_string()));
            if scored.scores.is_empty() {
                continue;
            }
            let scores: Vec<f32> = scored.scores.iter().map(|&(_, s)| s).collect();
            let labels: Vec<u8> = scored
                .scores
                .iter()
                .map(|&(i, _)| subset.items[i].label)
                .collect();
            let metrics = subset_metrics(&scores, &labels);
            if let Some(lacking) = metrics.one_class() {
                report.warnings.push(format!(
                    "subset `{}` has no {lacking} images: AP is undefined (shown as —) and the \
                     accuracy covers one class only",
                    subset.name
                ));
            }
            report.rows.push(ReportRow {
                method: method.to_string(),
                subset: subset.name.clone(),
                metrics,
            });
        }
        Ok(report)
    }
}
