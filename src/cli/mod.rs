//! The `dgs` command line.

pub mod demo;
pub mod self_check;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dgs",
    version,
    about = "DGS-Net: gradient surgery for CLIP-based AI-image detectors"
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
    /// Run every surgery op on seeded random inputs and compare it with the float64 reference.
    SelfCheck(self_check::Args),
}
