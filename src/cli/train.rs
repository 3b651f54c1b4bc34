//! `dgs train`: stage 1 and stage 2 on an image folder, with the official options.

use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use dgs::clip::peft::read_peft;
use dgs::clip::{ClipTokenizer, LoraConfig, LoraScaling, model_files, tokenizer_path};
use dgs::data::{
    Augment, Captions, DecodeOptions, MissingCaption, discover, official_captions_path,
};
use dgs::eval::training_chart;
use dgs::pipeline::{EpochRecord, PipelineError, TrainJob, TrainPlan, train};
use dgs::train::{Detector, Variant};

use super::common::{ModelArgs, PatchArg, print_skipped};
use super::interrupt::{LastCheckpoint, on_interrupt};
use super::ranges::{parse_quality_range, parse_sigma_range};

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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScalingArg {
    /// alpha / √rank, as the official DGS-Net code trains.
    Official,
    /// alpha / rank, peft's rule.
    Peft,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Training images: <root>/{0_real,1_fake}, <root>/<class>/{0_real,1_fake} or
    /// <root>/<subset>/<class>/{0_real,1_fake}.
    #[arg(long)]
    pub data: PathBuf,
    /// Train on these class folders of --data only (comma separated, e.g. car,cat,chair,horse).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// JSON map image path → caption (the official format). Default: the official location
    /// beside the data folder (for --data /d/AIGIBench/train, /d/AIGIBench_text/train.json).
    #[arg(long)]
    pub captions: Option<PathBuf>,
    /// Caption for images the map lacks (default: such an image is skipped with a message).
    #[arg(long)]
    pub caption_fallback: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder: checkpoint.safetensors (after every epoch), history.json, charts.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run recorded in this checkpoint (same options; epoch counts may grow).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Replace a training run already in --out (without it, that is an error).
    #[arg(long)]
    pub overwrite: bool,
    /// Start stage 2 from these LoRA adapters: a peft folder (adapter_config.json,
    /// adapter_model.safetensors) whose rank, alpha and scaling match the LoRA options.
    #[arg(long)]
    pub init_adapters: Option<PathBuf>,
    /// Stage-1 epochs (linear probe of the teacher head on frozen features), ≥ 0.
    #[arg(long, default_value_t = 3)]
    pub stage1_epochs: usize,
    /// Stage-2 epochs (LoRA under DGS), ≥ 0; the two counts may not both be 0.
    #[arg(long, default_value_t = 1)]
    pub stage2_epochs: usize,
    /// Images per training step, ≥ 1.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Adam learning rate of stage 1, > 0.
    #[arg(long, default_value_t = 1e-4)]
    pub stage1_lr: f64,
    /// Adam learning rate of stage 2, > 0.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Adam β₁, in [0, 1) (β₂ is 0.999).
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// Weight λ of the help term L_help, ≥ 0.
    #[arg(long, default_value_t = 0.2)]
    pub lambda: f64,
    /// The method: DGS or one of its ablations.
    #[arg(long, value_enum, default_value = "dgs")]
    pub variant: VariantArg,
    /// LoRA rank r of the q/k/v adapters of every vision layer, ≥ 1.
    #[arg(long, default_value_t = 6)]
    pub lora_rank: usize,
    /// LoRA alpha, > 0: the update is scaled by alpha / √rank (official) or alpha / rank (peft).
    #[arg(long, default_value_t = 6.0)]
    pub lora_alpha: f64,
    /// LoRA scaling rule: official (alpha / √rank, the official DGS-Net code's) or peft
    /// (alpha / rank).
    #[arg(long, value_enum, default_value = "official")]
    pub lora_scaling: ScalingArg,
    /// Dropout probability on the adapters' input, in [0, 1).
    #[arg(long, default_value_t = 0.8)]
    pub lora_dropout: f32,
    /// Probability of a Gaussian blur before patch selection, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub blur_prob: f64,
    /// Blur sigma in pixels: lo,hi (uniform in the range) or one value.
    #[arg(long, value_parser = parse_sigma_range, default_value = "0,3")]
    pub blur_sig: (f64, f64),
    /// Probability of a JPEG re-compression before patch selection, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub jpg_prob: f64,
    /// JPEG quality, 1 to 100: lo,hi (uniform over the integers, inclusive) or one value.
    #[arg(long, value_parser = parse_quality_range, default_value = "30,100")]
    pub jpg_qual: (u8, u8),
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Patch selection: ours (short sides stretched to 224 px) or official (the official
    /// transform exactly; see docs/reproduce.md).
    #[arg(long, value_enum, default_value = "stretch")]
    pub patch_selection: PatchArg,
    /// Seed of the adapters, heads, shuffles and augmentations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Batches decoded ahead of the model, 1 to 256.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Training images held out for the forgetting metric (at most a tenth of the set).
    #[arg(long, default_value_t = 32)]
    pub holdout: usize,
    /// Train on JPEGs cut short too (the decoder fills the missing part) instead of skipping
    /// them as broken.
    #[arg(long)]
    pub allow_truncated: bool,
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
                scaling: match self.lora_scaling {
                    ScalingArg::Official => LoraScaling::Official,
                    ScalingArg::Peft => LoraScaling::Peft,
                },
            },
            augment: Augment {
                blur_prob: self.blur_prob,
                blur_sigma: self.blur_sig,
                jpeg_prob: self.jpg_prob,
                jpeg_quality: self.jpg_qual,
            },
            patch_selection: self.patch_selection.into(),
            flip: !self.no_flip,
            seed: self.seed,
            prefetch: self.prefetch,
            holdout: self.holdout,
        }
    }
}

fn captions(a: &Args) -> Result<(Captions, Option<PathBuf>), PipelineError> {
    let missing = match &a.caption_fallback {
        Some(c) => MissingCaption::Fallback(c.clone()),
        None => MissingCaption::Error,
    };
    let official = official_captions_path(&a.data);
    let file = a
        .captions
        .clone()
        .or_else(|| official.clone().filter(|p| p.is_file()));
    let map = match (&file, &a.caption_fallback) {
        (Some(p), _) => {
            if a.captions.is_none() {
                eprintln!("captions: {} (the official location)", p.display());
            }
            Captions::from_file(p, missing)?
        }
        (None, Some(c)) => Captions::constant(c.clone()),
        (None, None) => {
            let looked = official.map_or(String::new(), |p| format!(" (none at {})", p.display()));
            return Err(PipelineError::Invalid(format!(
                "stage 2 needs captions: pass --captions FILE (and/or --caption-fallback TEXT){looked}"
            )));
        }
    };
    Ok((map.with_data_root(&a.data), file))
}

/// Load peft adapters into `det`, which must have been set up with the same rank, alpha and
/// scaling.
fn init_adapters(
    det: &Detector,
    dir: &Path,
    lora: &LoraConfig,
    resuming: bool,
) -> Result<(), PipelineError> {
    if resuming {
        return Err(PipelineError::Invalid(
            "--init-adapters starts a run; --resume continues one with its own adapters: use one"
                .into(),
        ));
    }
    let peft = read_peft(dir, &det.clip.config)?;
    if (peft.rank, peft.alpha, peft.scaling) != (lora.rank, lora.alpha, lora.scaling) {
        let scaling = match peft.scaling {
            LoraScaling::Official => "official",
            LoraScaling::Peft => "peft",
        };
        return Err(PipelineError::Invalid(format!(
            "{}: the adapters are rank {}, alpha {} with {scaling} scaling; pass --lora-rank {} \
             --lora-alpha {} --lora-scaling {scaling}",
            dir.display(),
            peft.rank,
            peft.alpha,
            peft.rank,
            peft.alpha
        )));
    }
    let set = det
        .load_adapters(&peft.adapters)
        .map_err(|e| PipelineError::compute("setting the adapters", e))?;
    eprintln!("adapters: {set} matrices from {}", dir.display());
    Ok(())
}

fn print_epoch(e: &EpochRecord, total: usize) {
    println!(
        "stage {} epoch {}/{total}: loss {:.4} (L_img {:.4}, L_text {:.4}, L_help {:.4}), accuracy {:.3}{}{}",
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

pub fn run(a: &Args) -> Result<usize, PipelineError> {
    let plan = a.plan();
    plan.validate()?;
    let (device, dtype) = a.model.device_dtype()?;
    let (captions, captions_file) = captions(a)?;
    let mut data = discover(&a.data)?;
    if let Some(classes) = &a.classes {
        data = data.select(&a.data, classes)?;
    }
    let det = Detector::from_hf(&a.model.model, dtype, &device, plan.lora)?;
    // Seeded adapters and heads: the same options give the same run. On the CPU the LoRA dropout
    // masks are keyed by the seed and the step; on CUDA they still come from candle's generator,
    // so a CUDA run repeats exactly only with dropout 0.
    det.reseed(plan.seed)
        .map_err(|source| PipelineError::compute("seeding the adapters and heads", source))?;
    if let Some(dir) = &a.init_adapters {
        init_adapters(&det, dir, &plan.lora, a.resume.is_some())?;
    }
    let text = &det.clip.config.text_config;
    let tokenizer_file = tokenizer_path(&a.model.model);
    let tokenizer = ClipTokenizer::from_file(
        &tokenizer_file,
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
    let last = LastCheckpoint::default();
    on_interrupt(last.clone());
    let on_epoch = |e: &EpochRecord, path: &Path| {
        let total = [plan.stage1_epochs, plan.stage2_epochs][usize::from(e.stage == 2)];
        print_epoch(e, total);
        let what = format!("stage {} epoch {}/{total} done", e.stage, e.epoch + 1);
        if let Ok(mut l) = last.lock() {
            *l = Some((path.to_path_buf(), what));
        }
    };
    let mut inputs = model_files(&a.model.model).to_vec();
    inputs.extend(captions_file);
    let outcome = train(TrainJob {
        det: &det,
        items,
        captions: &captions,
        tokenizer: &tokenizer,
        plan: &plan,
        out: &a.out,
        resume: a.resume.as_deref(),
        overwrite: a.overwrite,
        inputs,
        decode: DecodeOptions {
            allow_truncated: a.allow_truncated,
        },
        dtype,
        device: &device,
        quiet: a.quiet,
        on_epoch: &on_epoch,
    })?;
    write_records(&outcome.record, &a.out)?;
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

/// history.json and the two charts.
fn write_records(record: &dgs::pipeline::RunRecord, out: &Path) -> Result<(), PipelineError> {
    let hist = out.join("history.json");
    let json = serde_json::to_string_pretty(&record.history)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    std::fs::write(&hist, json).map_err(|source| PipelineError::Io {
        path: hist.clone(),
        source,
    })?;
    let steps = record.stage2_steps(|e| &e.step_losses);
    training_chart(
        &[("loss".into(), steps)],
        "stage-2 training loss",
        "step",
        &out.join("loss.png"),
    )
    .map_err(PipelineError::Invalid)?;
    training_chart(
        &[("features kept".into(), record.forgetting())],
        "forgetting: cosine to the frozen CLIP",
        "epoch",
        &out.join("forgetting.png"),
    )
    .map_err(PipelineError::Invalid)
}
