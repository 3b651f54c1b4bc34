//! Epoch loops: run a trainer over an iterator of batches (whatever produces them — the data
//! pipeline, a synthetic set), reporting each step to a callback and returning the epoch's means.

use candle_core::{Result, Tensor};

use super::detector::Detector;
use super::stage1::Stage1Trainer;
use super::stage2::{Batch, Stage2Trainer, StepStats};

/// A batch that owns its tensors (what loaders yield).
#[derive(Clone, Debug)]
pub struct OwnedBatch {
    /// Normalised pixels `[B, 3, H, W]`.
    pub pixels: Tensor,
    /// Caption token ids `[B, T]` (u32).
    pub captions: Tensor,
    /// Labels `[B]` (0 real, 1 fake).
    pub labels: Tensor,
}

impl OwnedBatch {
    pub fn view(&self) -> Batch<'_> {
        Batch {
            pixels: &self.pixels,
            captions: &self.captions,
            labels: &self.labels,
        }
    }
}

/// Means over an epoch's applied steps (skipped ones are only counted).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EpochSummary {
    pub steps: usize,
    pub skipped: usize,
    pub loss: f32,
    pub l_img: f32,
    pub l_text: f32,
    pub l_help: f32,
    pub accuracy: f32,
}

impl EpochSummary {
    fn add(&mut self, s: &StepStats) {
        if s.skipped {
            self.skipped += 1;
            return;
        }
        self.steps += 1;
        self.loss += s.loss;
        self.l_img += s.l_img;
        self.l_text += s.l_text;
        self.l_help += s.l_help;
        self.accuracy += s.accuracy;
    }

    fn finish(mut self) -> Self {
        let n = self.steps.max(1) as f32;
        for v in [
            &mut self.loss,
            &mut self.l_img,
            &mut self.l_text,
            &mut self.l_help,
            &mut self.accuracy,
        ] {
            *v /= n;
        }
        self
    }
}

impl Stage2Trainer {
    /// One pass over `batches`; the first failing batch or step ends it with that error.
    pub fn epoch(
        &mut self,
        det: &Detector,
        batches: impl IntoIterator<Item = Result<OwnedBatch>>,
        mut on_step: impl FnMut(&StepStats),
    ) -> Result<EpochSummary> {
        let mut sum = EpochSummary::default();
        for batch in batches {
            let batch = batch?;
            let s = self.step(
                &det.clip,
                &det.teacher,
                &det.img_fc,
                &det.text_fc,
                &batch.view(),
            )?;
            on_step(&s);
            sum.add(&s);
        }
        Ok(sum.finish())
    }
}

impl Stage1Trainer {
    /// One pass of the linear probe over precomputed `(features, labels)` batches (see
    /// [`frozen_features`](super::frozen_features)).
    pub fn epoch(
        &mut self,
        det: &Detector,
        batches: impl IntoIterator<Item = Result<(Tensor, Tensor)>>,
        mut on_step: impl FnMut(&StepStats),
    ) -> Result<EpochSummary> {
        let mut sum = EpochSummary::default();
        for batch in batches {
            let (features, labels) = batch?;
            let s = self.step(&det.teacher, &features, &labels)?;
            on_step(&s);
            sum.add(&s);
        }
        Ok(sum.finish())
    }
}
