//! `dgs export`: the trained LoRA merged into the frozen weights, as a plain Hugging Face CLIP
//! folder any CLIP loader reads.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::clip::export_merged;
use dgs::pipeline::{PipelineError, RunRecord, refuse_overwriting_inputs};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The Hugging Face CLIP folder the run trained on.
    #[arg(long)]
    pub model: PathBuf,
    /// Checkpoint written by `dgs train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Folder to write (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: &Args) -> Result<(), PipelineError> {
    let names = ["model.safetensors", "config.json", "tokenizer.json"];
    let outputs = names.map(|f| a.out.join(f));
    let mut inputs = names.map(|f| a.model.join(f)).to_vec();
    inputs.push(a.checkpoint.clone());
    refuse_overwriting_inputs(&outputs, &inputs, "--out folder")?;
    let loaded = dgs::train::checkpoint::load(&a.checkpoint, &candle_core::Device::Cpu)?;
    let record = RunRecord::from_json(&loaded.config, &a.checkpoint)?;
    let adapters = loaded
        .params
        .iter()
        .filter_map(|(k, t)| Some((k.strip_prefix("lora.")?.to_string(), t.clone())))
        .collect();
    export_merged(&a.model, &a.out, &record.plan.lora, &adapters)?;
    println!("merged weights written to {}", a.out.display());
    Ok(())
}
