//! The metrics of the official evaluation. Predictions are `P(fake)`; an image counts as fake
//! when `p > 0.5`. Average precision is scikit-learn's `average_precision_score`:
//! `AP = Σₙ (Rₙ − Rₙ₋₁) Pₙ` over the distinct score thresholds, highest first (tied scores form
//! one threshold).

use serde::{Deserialize, Serialize};

/// Average precision of `scores` for `labels` (1 positive). With no positive label the recall is
/// undefined; like scikit-learn we then return 0.
pub fn average_precision(scores: &[f32], labels: &[u8]) -> f64 {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let positives = labels.iter().filter(|&&l| l == 1).count();
    if positives == 0 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut ap, mut prev_recall) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        // Everything tied at this score enters together.
        while i < order.len() && scores[order[i]].total_cmp(&s).is_eq() {
            match labels[order[i]] {
                1 => tp += 1,
                _ => fp += 1,
            }
            i += 1;
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    ap
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubsetMetrics {
    pub n_real: usize,
    pub n_fake: usize,
    /// Accuracy over all images (threshold 0.5).
    pub accuracy: f64,
    /// `None` when the subset lacks real or fake images: precision against recall needs both
    /// (scikit-learn would report 0 or 1, a number that means nothing).
    pub average_precision: Option<f64>,
    /// Accuracy on real images (`None` when there are none).
    pub real_accuracy: Option<f64>,
    pub fake_accuracy: Option<f64>,
}

/// The metrics of one subset; see [`SubsetMetrics::one_class`] for subsets with one label.
pub fn subset_metrics(scores: &[f32], labels: &[u8]) -> SubsetMetrics {
    let correct = |want: Option<u8>| {
        let picked: Vec<bool> = scores
            .iter()
            .zip(labels)
            .filter(|(_, l)| want.is_none_or(|w| **l == w))
            .map(|(&s, &l)| (s > 0.5) == (l == 1))
            .collect();
        match picked.len() {
            0 => None,
            n => Some(picked.iter().filter(|&&c| c).count() as f64 / n as f64),
        }
    };
    let n_real = labels.iter().filter(|&&l| l == 0).count();
    let n_fake = labels.len() - n_real;
    SubsetMetrics {
        n_real,
        n_fake,
        accuracy: correct(None).unwrap_or(0.0),
        average_precision: (n_real > 0 && n_fake > 0).then(|| average_precision(scores, labels)),
        real_accuracy: correct(Some(0)),
        fake_accuracy: correct(Some(1)),
    }
}

impl SubsetMetrics {
    /// The label a one-class subset lacks (`"real"` or `"fake"`), if it lacks one.
    pub fn one_class(&self) -> Option<&'static str> {
        match (self.n_real, self.n_fake) {
            (0, _) => Some("real"),
            (_, 0) => Some("fake"),
            _ => None,
        }
    }
}
