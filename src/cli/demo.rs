//! `dgs demo`: the no-download demonstration (see `dgs::pipeline::demo`).

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::pipeline::{DemoOptions, PipelineError, parse_device, run_demo};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Folder for the generated data, the model, checkpoints, reports and charts.
    #[arg(long, default_value = "dgs-demo")]
    pub out: PathBuf,
    /// Seed of everything random (data, weights, shuffles).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Training images per class per family.
    #[arg(long, default_value_t = DemoOptions::default().train_per_class)]
    pub train_per_class: usize,
    /// Test images per class per family.
    #[arg(long, default_value_t = DemoOptions::default().test_per_class)]
    pub test_per_class: usize,
    /// Stage-2 epochs.
    #[arg(long, default_value_t = DemoOptions::default().stage2_epochs)]
    pub epochs: usize,
    /// Where the model trains and is evaluated: cpu, cuda or cuda:N (cuda needs a build with
    /// `--features cuda`). The data is generated on the CPU either way.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: &Args) -> Result<(), PipelineError> {
    if a.train_per_class < 8 || a.test_per_class < 1 {
        return Err(PipelineError::Invalid(
            "use at least 8 training and 1 test image per class".into(),
        ));
    }
    run_demo(&DemoOptions {
        out: a.out.clone(),
        seed: a.seed,
        train_per_class: a.train_per_class,
        test_per_class: a.test_per_class,
        stage2_epochs: a.epochs,
        device: parse_device(&a.device)?,
        ..DemoOptions::default()
    })?;
    Ok(())
}
