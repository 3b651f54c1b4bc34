//! Scoring images with a detector, and the per-subset evaluation report.

use candle_core::{DType, Device};

use super::batch::to_tensors;
use super::error::{Context, PipelineError};
use super::progress::bar;
use crate::data::{Discovery, FileError, Item, Loader, LoaderConfig, Transform};
use crate::eval::{Report, ReportRow, subset_metrics};
use crate::train::Detector;

/// Scores of the images that could be read, by index into the input, and the files that could
/// not.
pub struct Scored {
    pub scores: Vec<(usize, f32)>,
    pub failed: Vec<FileError>,
}

/// `P(AI-generated)` of each item (eval transform: patch selection, no flip), in batches of
/// `batch_size`, with a progress bar labelled `label`.
pub fn score_items(
    det: &Detector,
    items: &[Item],
    batch_size: usize,
    dtype: DType,
    device: &Device,
    label: &str,
    quiet: bool,
) -> Result<Scored, PipelineError> {
    let cfg = LoaderConfig {
        batch_size,
        shuffle: false,
        seed: 0,
        prefetch: 4,
    };
    let loader =
        Loader::new(items.to_vec(), Transform::eval(), cfg).map_err(PipelineError::Invalid)?;
    let pb = bar(items.len(), label, quiet);
    let mut out = Scored {
        scores: Vec::with_capacity(items.len()),
        failed: Vec::new(),
    };
    for b in loader.epoch(0) {
        pb.inc((b.len() + b.failed.len()) as u64);
        let (ob, rest) = to_tensors(b, loader.items(), None, dtype, device)?;
        out.failed.extend(rest.failed);
        let Some(ob) = ob else { continue };
        let p: Vec<f32> = det
            .fake_probability(&ob.pixels)
            .and_then(|p| p.to_vec1())
            .context(|| format!("scoring a batch of {label}"))?;
        out.scores.extend(rest.indices.iter().copied().zip(p));
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Evaluate every subset of `data`; rows are named `method`.
pub fn evaluate(
    det: &Detector,
    data: &Discovery,
    method: &str,
    batch_size: usize,
    dtype: DType,
    device: &Device,
    quiet: bool,
) -> Result<Report, PipelineError> {
    let mut report = Report {
        skipped: data.skipped.iter().map(|f| f.to_string()).collect(),
        ..Report::default()
    };
    for subset in &data.subsets {
        let label = match method.is_empty() {
            true => subset.name.clone(),
            false => format!("{method}: {}", subset.name),
        };
        let scored = score_items(det, &subset.items, batch_size, dtype, device, &label, quiet)?;
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
        report.rows.push(ReportRow {
            method: method.to_string(),
            subset: subset.name.clone(),
            metrics: subset_metrics(&scores, &labels),
        });
    }
    Ok(report)
}
