//! `dgs eval`: per-subset accuracy, AP, real and fake accuracy of a trained detector.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::clip::LoraConfig;
use dgs::data::discover;
use dgs::eval::accuracy_chart;
use dgs::pipeline::{PipelineError, evaluate, load_detector};

use super::common::{ModelArgs, print_skipped};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Test images: <root>/<subset>/{0_real,1_fake} (or the flat / nested layouts).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Checkpoint written by `dgs train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Write report.json, report.md and accuracy.png here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Name of the model in the report.
    #[arg(long, default_value = "")]
    pub name: String,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: &Args) -> Result<usize, PipelineError> {
    if a.batch_size == 0 {
        return Err(PipelineError::Invalid(
            "batch size must be at least 1".into(),
        ));
    }
    let (device, dtype) = a.model.device_dtype()?;
    let data = discover(&a.data)?;
    let (det, _) = load_detector(
        &a.model.model,
        Some(&a.checkpoint),
        LoraConfig::default(),
        dtype,
        &device,
    )?;
    let report = evaluate(&det, &data, &a.name, a.batch_size, dtype, &device, a.quiet)?;
    print!("{}", report.to_text());
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).map_err(|source| PipelineError::Io {
            path: out.clone(),
            source,
        })?;
        for (name, text) in [
            ("report.json", report.to_json().to_string()),
            ("report.md", report.to_markdown()),
        ] {
            let p = out.join(name);
            std::fs::write(&p, text).map_err(|source| PipelineError::Io {
                path: p.clone(),
                source,
            })?;
        }
        accuracy_chart(&report, "accuracy by subset", &out.join("accuracy.png"))
            .map_err(PipelineError::Invalid)?;
        println!(
            "written: report.json, report.md, accuracy.png in {}",
            out.display()
        );
    }
    print_skipped(&report.skipped);
    Ok(report.skipped.len())
}
