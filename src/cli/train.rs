//! `dgs train`: stage 1 and stage 2 on an image folder, with the official options.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use dgs::clip::{ClipTokenizer, LoraConfig, tokenizer_path};
use dgs::data::{Augment, Captions, MissingCaption, discover};
use dgs::eval::training_chart;
use dgs::pipeline::{PipelineError, TrainPlan, train};
use dgs::train::{Detector, Variant};

use super::common::{ModelArgs, print_skipped};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VariantArg {
    /// The paper's method: help term and gradient surgery.
    Dgs,
    /// Help term, no surgery.
    NoSurgery,
    /// Surgery, no help term.
    NoHelp,
    /// Plain LoRA fine-tuning (L_img only).
    PlainLora,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Training images: <root>/{0_real,1_fake}, <root>/<subset>/{0_real,1_fake} or
    /// <root>/<subset>/<class>/{0_real,1_fake}.
    #[arg(long)]
    pub data: PathBuf,
    /// JSON map image path → caption (the official format).
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// Caption for images the map lacks (default: such an image is an error and is skipped).
    #[arg(long)]
    pub caption_fallback: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder: checkpoint.safetensors (after every epoch), history.json, charts.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run recorded in this checkpoint (same options).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub stage1_epochs: usize,
    #[arg(long, default_value_t = 1)]
    pub stage2_epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub stage1_lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// Weight λ of the help term.
    #[arg(long, default_value_t = 0.2)]
    pub lambda: f64,
    #[arg(long, value_enum, default_value = "dgs")]
    pub variant: VariantArg,
    #[arg(long, default_value_t = 6)]
    pub lora_rank: usize,
    #[arg(long, default_value_t = 6.0)]
    pub lora_alpha: f64,
    #[arg(long, default_value_t = 0.8)]
    pub lora_dropout: f32,
    /// Probability of Gaussian blur before patch selection.
    #[arg(long, default_value_t = 0.0)]
    pub blur_prob: f64,
    /// Blur sigma range: lo,hi.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.0, 3.0])]
    pub blur_sig: Vec<f64>,
    /// Probability of JPEG re-compression before patch selection.
    #[arg(long, default_value_t = 0.0)]
    pub jpg_prob: f64,
    /// JPEG quality range: lo,hi.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [30, 100])]
    pub jpg_qual: Vec<u8>,
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Batches decoded ahead of the model.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Training images held out for the forgetting metric (at most a tenth of the set).
    #[arg(long, default_value_t = 32)]
    pub holdout: usize,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    fn plan(&self) -> TrainPlan {
        TrainPlan {
            stage1_epochs: self.stage1_epochs,
            stage2_epochs: self.stage2_epochs,
            batch_size: self.batch_size,
            stage1_lr: self.stage1_lr,
            lr: self.lr,
            beta1: self.beta1,
            lambda: self.lambda,
            variant: match self.variant {
                VariantArg::Dgs => Variant::Dgs,
                VariantArg::NoSurgery => Variant::NoSurgery,
                VariantArg::NoHelp => Variant::NoHelp,
                VariantArg::PlainLora => Variant::PlainLora,
            },
            lora: LoraConfig {
                rank: self.lora_rank,
                alpha: self.lora_alpha,
                dropout: self.lora_dropout,
            },
            augment: Augment {
                blur_prob: self.blur_prob,
                blur_sigma: (self.blur_sig[0], self.blur_sig[1]),
                jpeg_prob: self.jpg_prob,
                jpeg_quality: (self.jpg_qual[0], self.jpg_qual[1]),
            },
            flip: !self.no_flip,
            seed: self.seed,
            prefetch: self.prefetch,
            holdout: self.holdout,
        }
    }
}

pub fn run(a: &Args) -> Result<usize, PipelineError> {
    let plan = a.plan();
    plan.validate()?;
    let (device, dtype) = a.model.device_dtype()?;
    let missing = match &a.caption_fallback {
        Some(c) => MissingCaption::Fallback(c.clone()),
        None => MissingCaption::Error,
    };
    let captions = match (&a.captions, &a.caption_fallback) {
        (Some(p), _) => Captions::from_file(p, missing)?,
        (None, Some(c)) => Captions::constant(c.clone()),
        (None, None) => {
            return Err(PipelineError::Invalid(
                "stage 2 needs captions: pass --captions FILE (and/or --caption-fallback TEXT)"
                    .into(),
            ));
        }
    };
    let data = discover(&a.data)?;
    let det = Detector::from_hf(&a.model.model, dtype, &device, plan.lora)?;
    // Seeded adapters and heads: the same options give the same run (exactly so with LoRA
    // dropout 0; candle's CPU dropout mask cannot be seeded).
    det.reseed(plan.seed)
        .map_err(|source| PipelineError::compute("seeding the adapters and heads", source))?;
    let text = &det.clip.config.text_config;
    let tokenizer = ClipTokenizer::from_file(
        &tokenizer_path(&a.model.model),
        text.max_position_embeddings,
        text.eos_token_id,
    )?;
    let items = data.all_items();
    eprintln!(
        "training on {} images ({} subsets) from {}",
        items.len(),
        data.subsets.len(),
        a.data.display()
    );
    let outcome = train(
        &det,
        items,
        &captions,
        &tokenizer,
        &plan,
        &a.out,
        a.resume.as_deref(),
        dtype,
        &device,
        a.quiet,
    )?;
    for e in &outcome.record.history {
        println!(
            "stage {} epoch {}: loss {:.4} (L_img {:.4}, L_text {:.4}, L_help {:.4}), accuracy {:.3}{}{}",
            e.stage,
            e.epoch + 1,
            e.loss,
            e.l_img,
            e.l_text,
            e.l_help,
            e.accuracy,
            e.forgetting
                .map_or(String::new(), |f| format!(", features kept {f:.4}")),
            if e.skipped_steps > 0 {
                format!(", {} steps skipped (loss scaling)", e.skipped_steps)
            } else {
                String::new()
            }
        );
    }
    let hist = a.out.join("history.json");
    let json = serde_json::to_string_pretty(&outcome.record.history)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    std::fs::write(&hist, json).map_err(|source| PipelineError::Io {
        path: hist.clone(),
        source,
    })?;
    let steps = outcome.record.stage2_steps(|e| &e.step_losses);
    let kept = outcome.record.forgetting();
    training_chart(
        &[("loss".into(), steps)],
        "stage-2 training loss",
        "step",
        &a.out.join("loss.png"),
    )
    .map_err(PipelineError::Invalid)?;
    training_chart(
        &[("features kept".into(), kept)],
        "forgetting: cosine to the frozen CLIP",
        "epoch",
        &a.out.join("forgetting.png"),
    )
    .map_err(PipelineError::Invalid)?;
    println!(
        "checkpoint: {}  (history.json, loss.png, forgetting.png in {})",
        outcome.checkpoint.display(),
        a.out.display()
    );
    let mut skipped: Vec<String> = data.skipped.iter().map(|f| f.to_string()).collect();
    skipped.extend(outcome.skipped.iter().map(|f| f.to_string()));
    print_skipped(&skipped);
    Ok(skipped.len())
}
