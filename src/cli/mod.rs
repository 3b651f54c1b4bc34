//! The `dgs` command line.

pub mod bench;
mod common;
pub mod demo;
pub mod detect;
pub mod eval;
pub mod export;
pub mod import;
mod interrupt;
mod ranges;
pub mod self_check;
pub mod train;

use clap::{Parser, Subcommand};

/// Shown by `dgs --help`; `main` maps results to these codes.
const EXIT_CODES: &str = "Exit codes:
  0    success (train and eval list skipped files and still exit 0)
  1    finished, but detect had inputs that failed, or self-check found a mismatch
  2    an error stopped the command: bad options, unusable model or data, training stopped
  130  train interrupted (Ctrl-C); the last checkpoint is named";

#[derive(Debug, Parser)]
#[command(
    name = "dgs",
    version,
    about = "DGS-Net: gradient surgery for CLIP-based AI-image detectors",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate synthetic data and a tiny random CLIP, train DGS and plain LoRA, evaluate on
    /// held-out generator families, and write the table and charts (no downloads).
    Demo(demo::Args),
    /// Train a detector on an image folder: stage 1 (linear probe), then stage 2 (DGS).
    Train(train::Args),
    /// Evaluate a trained detector per subset: accuracy, AP, real and fake accuracy.
    Eval(eval::Args),
    /// Print the probability that each image is AI-generated.
    Detect(detect::Args),
    /// Merge the trained LoRA into the base weights and write a Hugging Face CLIP folder.
    Export(export::Args),
    /// Read a checkpoint of the official DGS-Net code (.pth) into a model folder + checkpoint.
    Import(import::Args),
    /// Benchmarks of the training step.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Run every surgery op on seeded random inputs and compare it with the float64 reference.
    SelfCheck(self_check::Args),
}
