//! `dgs eval`: per-subset accuracy, AP, real and fake accuracy of a trained detector.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::clip::model_files;
use dgs::data::discover;
use dgs::eval::accuracy_chart;
use dgs::pipeline::{PipelineError, refuse_overwriting_inputs};

use super::common::{TrainedArgs, print_skipped};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Test images: <root>/<subset>/{0_real,1_fake} (or the flat / nested layouts).
    #[arg(long)]
    pub data: PathBuf,
    /// Evaluate these subsets of --data only (comma separated folder names).
    #[arg(long, value_delimiter = ',')]
    pub subsets: Option<Vec<String>>,
    #[command(flatten)]
    pub trained: TrainedArgs,
    /// Write report.json, report.md and accuracy.png here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of the model in the report.
    #[arg(long, default_value = "")]
    pub name: String,
}

const OUTPUTS: [&str; 3] = ["report.json", "report.md", "accuracy.png"];

pub fn run(a: &Args) -> Result<usize, PipelineError> {
    if let Some(out) = &a.out {
        let mut inputs = model_files(&a.trained.model.model).to_vec();
        inputs.push(a.trained.checkpoint.clone());
        refuse_overwriting_inputs(&OUTPUTS.map(|f| out.join(f)), &inputs, "--out folder")?;
    }
    let mut data = discover(&a.data)?;
    if let Some(names) = &a.subsets {
        data = data.select(&a.data, names)?;
    }
    let (det, device, dtype) = a.trained.load()?;
    let report = a
        .trained
        .scorer(&det, &device, dtype)
        .evaluate(&data, &a.name)?;
    if report.rows.is_empty() {
        print_skipped(&report.skipped);
        return Err(PipelineError::Invalid(format!(
            "no image could be scored in {}: all {} files failed (listed above)",
            a.data.display(),
            report.skipped.len()
        )));
    }
    print!("{}", report.to_text());
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).map_err(|source| PipelineError::Io {
            path: out.clone(),
            source,
        })?;
        for (name, text) in [
            (OUTPUTS[0], report.to_json().to_string()),
            (OUTPUTS[1], report.to_markdown()),
        ] {
            let p = out.join(name);
            std::fs::write(&p, text).map_err(|source| PipelineError::Io {
                path: p.clone(),
                source,
            })?;
        }
        accuracy_chart(&report, "accuracy by subset", &out.join(OUTPUTS[2]))
            .map_err(PipelineError::Invalid)?;
        println!(
            "written: report.json, report.md, accuracy.png in {}",
            out.display()
        );
    }
    print_skipped(&report.skipped);
    Ok(report.skipped.len())
}
