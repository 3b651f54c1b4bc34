//! Evaluation: per-subset accuracy at 0.5, average precision, real and fake accuracy, the mean
//! row; as a text table, JSON and Markdown; PNG charts of accuracies and training curves.

mod chart;
mod metrics;
mod report;

pub use chart::{accuracy_chart, training_chart};
pub use metrics::{SubsetMetrics, average_precision, subset_metrics};
pub use report::{Report, ReportRow};
