//! `dgs import`: a checkpoint of the official DGS-Net code as a dgs model folder and checkpoint.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::pipeline::{ImportOptions, PipelineError, import_official};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The official checkpoint: a PyTorch .pth state dict of DGS-Net's CLIPModel.
    #[arg(long)]
    pub pth: PathBuf,
    /// Folder to write: config.json, model.safetensors (and tokenizer.json), checkpoint.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Hugging Face tokenizer.json of the CLIP (e.g. openai/clip-vit-large-patch14's), copied
    /// into the folder; needed to train further, not to evaluate or detect.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The LoRA alpha the model was trained with (the .pth does not record it; the official
    /// default is 6). Checked against the weights when they were saved merged.
    #[arg(long, default_value_t = 6.0)]
    pub lora_alpha: f64,
    /// Replace files already in --out.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(a: &Args) -> Result<(), PipelineError> {
    if !(a.lora_alpha > 0.0 && a.lora_alpha.is_finite()) {
        return Err(PipelineError::Invalid(format!(
            "--lora-alpha must be positive, got {}",
            a.lora_alpha
        )));
    }
    let opts = ImportOptions {
        lora_alpha: a.lora_alpha,
        tokenizer: a.tokenizer.clone(),
        overwrite: a.overwrite,
    };
    let done = import_official(&a.pth, &a.out, &opts)?;
    let (v, t) = (&done.config.vision_config, &done.config.text_config);
    println!(
        "imported {}: vision {} layers × {} wide ({} px, {} px patches), text {} layers × {} wide, \
         features {}; LoRA rank {} (alpha {}, official scaling), q/k/v saved {}",
        a.pth.display(),
        v.tower.num_hidden_layers,
        v.tower.hidden_size,
        v.image_size,
        v.patch_size,
        t.tower.num_hidden_layers,
        t.tower.hidden_size,
        done.config.projection_dim,
        done.lora.rank,
        done.lora.alpha,
        if done.merged {
            "with the update merged (taken apart again)"
        } else {
            "apart from the update"
        }
    );
    println!(
        "written: {} (model folder) and {}\nevaluate with: dgs eval --model {} --checkpoint {} --data <test folder>",
        a.out.display(),
        done.checkpoint.display(),
        a.out.display(),
        done.checkpoint.display()
    );
    if a.tokenizer.is_none() {
        println!("(no tokenizer.json: pass --tokenizer to train this model further)");
    }
    Ok(())
}
