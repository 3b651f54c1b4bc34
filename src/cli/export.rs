//! `dgs export`: the trained LoRA merged into the frozen weights, as a plain Hugging Face CLIP
//! folder any CLIP loader reads — or the adapters alone in peft's format.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::clip::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, write_peft};
use dgs::clip::{export_merged, model_files};
use dgs::pipeline::{PipelineError, RunRecord, refuse_overwriting_inputs};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The Hugging Face CLIP folder the run trained on.
    #[arg(long)]
    pub model: PathBuf,
    /// Checkpoint written by `dgs train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Folder to write: config.json, model.safetensors, tokenizer.json (merged), or
    /// adapter_config.json, adapter_model.safetensors (peft).
    #[arg(long)]
    pub out: PathBuf,
    /// merged: the LoRA folded into the weights (a plain CLIP); peft: the adapters alone, for
    /// `PeftModel.from_pretrained` on the same CLIP.
    #[arg(long, value_enum, default_value = "merged")]
    pub format: ExportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Merged,
    Peft,
}

pub fn run(a: &Args) -> Result<(), PipelineError> {
    let outputs: Vec<PathBuf> = match a.format {
        ExportFormat::Merged => model_files(&a.out).to_vec(),
        ExportFormat::Peft => [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
            .iter()
            .map(|f| a.out.join(f))
            .collect(),
    };
    let mut inputs = model_files(&a.model).to_vec();
    inputs.push(a.checkpoint.clone());
    refuse_overwriting_inputs(&outputs, &inputs, "--out folder")?;
    let loaded = dgs::train::checkpoint::load(&a.checkpoint, &candle_core::Device::Cpu)?;
    let record = RunRecord::from_json(&loaded.config, &a.checkpoint)?;
    let adapters = loaded
        .params
        .iter()
        .filter_map(|(k, t)| Some((k.strip_prefix("lora.")?.to_string(), t.clone())))
        .collect();
    if a.format == ExportFormat::Peft {
        write_peft(&a.out, &record.plan.lora, &adapters)?;
        println!("peft adapters written to {}", a.out.display());
        return Ok(());
    }
    export_merged(&a.model, &a.out, &record.plan.lora, &adapters)?;
    println!("merged weights written to {}", a.out.display());
    Ok(())
}
