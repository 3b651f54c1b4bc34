//! `dgs eval`: per-subset accuracy, AP, real and fake accuracy of a trained detector.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::data::discover;
use dgs::eval::accuracy_chart;
use dgs::pipeline::{PipelineError, evaluate};

use super::common::{TrainedArgs, print_skipped};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Test images: <root>/<subset>/{0_real,1_fake} (or the flat / nested layouts).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub trained: TrainedArgs,
    /// Write report.json, report.md and accuracy.png here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of the model in the report.
    #[arg(long, default_value = "")]
    pub name: String,
}

pub fn run(a: &Args) -> Result<usize, PipelineError> {
    let data = discover(&a.data)?;
    let (det, device, dtype) = a.trained.load()?;
    let report = evaluate(
        &det,
        &data,
        &a.name,
        a.trained.batch_size,
        dtype,
        &device,
        a.trained.quiet,
    )?;
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
