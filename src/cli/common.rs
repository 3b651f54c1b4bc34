//! Options shared by the commands that run a model.

use std::path::PathBuf;

use candle_core::{DType, Device};
use clap::Args as ClapArgs;
use dgs::clip::LoraConfig;
use dgs::data::{DecodeOptions, PatchSelection};
use dgs::pipeline::{PipelineError, Scorer, load_detector, parse_device, parse_dtype};
use dgs::train::Detector;

#[derive(Debug, Clone, ClapArgs)]
pub struct ModelArgs {
    /// Hugging Face CLIP folder (config.json, model.safetensors, tokenizer.json), e.g.
    /// openai/clip-vit-large-patch14 as downloaded.
    #[arg(long)]
    pub model: PathBuf,
    /// cpu, cuda or cuda:N (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype of the frozen weights: f32, f16 (loss-scaled in training) or bf16 (GPU).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    pub fn device_dtype(&self) -> Result<(Device, DType), PipelineError> {
        let device = parse_device(&self.device)?;
        let dtype = parse_dtype(&self.dtype, &device)?;
        Ok((device, dtype))
    }
}

/// `--patch-selection`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PatchArg {
    /// Ours: sides under 224 px stretched to 224 px first, ties in image order.
    Stretch,
    /// The official transform: no stretch (black slots, repeated patches), its gray rule,
    /// numpy's order of ties.
    Official,
}

impl From<PatchArg> for PatchSelection {
    fn from(a: PatchArg) -> Self {
        match a {
            PatchArg::Stretch => PatchSelection::Stretch,
            PatchArg::Official => PatchSelection::Official,
        }
    }
}

/// A trained detector to run: the model folder and the checkpoint `dgs train` wrote.
#[derive(Debug, Clone, ClapArgs)]
pub struct TrainedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Checkpoint written by `dgs train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images per forward pass, ≥ 1.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Patch selection: ours (short sides stretched to 224 px) or official (the official
    /// transform exactly, for comparing with published numbers; see docs/reproduce.md).
    #[arg(long, value_enum, default_value = "stretch")]
    pub patch_selection: PatchArg,
    /// Score JPEGs cut short too (the decoder fills the missing part) instead of reporting them
    /// as broken.
    #[arg(long)]
    pub allow_truncated: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainedArgs {
    /// The detector, its device and dtype (see [`TrainedArgs::scorer`]).
    pub fn load(&self) -> Result<(Detector, Device, DType), PipelineError> {
        if self.batch_size == 0 {
            return Err(PipelineError::Invalid(
                "batch size must be at least 1".into(),
            ));
        }
        let (device, dtype) = self.model.device_dtype()?;
        let lora = LoraConfig::default();
        let (det, _) = load_detector(
            &self.model.model,
            Some(&self.checkpoint),
            lora,
            dtype,
            &device,
        )?;
        Ok((det, device, dtype))
    }

    /// How to score images with `det` on `device` per these options.
    pub fn scorer<'a>(&self, det: &'a Detector, device: &'a Device, dtype: DType) -> Scorer<'a> {
        Scorer {
            det,
            batch_size: self.batch_size,
            dtype,
            device,
            decode: DecodeOptions {
                allow_truncated: self.allow_truncated,
            },
            patches: self.patch_selection.into(),
            quiet: self.quiet,
        }
    }
}

/// Print the files that were left out, and how many.
pub fn print_skipped<S: std::fmt::Display>(skipped: &[S]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!("\n{} file(s) skipped:", skipped.len());
    for s in skipped.iter().take(50) {
        eprintln!("  {s}");
    }
    if skipped.len() > 50 {
        eprintln!("  … and {} more", skipped.len() - 50);
    }
}
