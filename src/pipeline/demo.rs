//! `dgs demo`: the whole pipeline with no downloads. It writes a synthetic data set (PNG files in
//! the UniversalFakeDetect layout, with a captions JSON) and a tiny random CLIP folder, trains
//! DGS and plain LoRA on two generator families, evaluates both on those families and on two
//! held-out ones, and writes the table (text, JSON, Markdown) and charts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use rayon::prelude::*;

use super::error::PipelineError;
use super::evaluate::Scorer;
use super::progress::bar;
use super::run::TrainPlan;
use super::train::{TrainJob, train};
use crate::clip::{ClipConfig, ClipTokenizer, LoraConfig, tokenizer_path, write_random_folder};
use crate::data::synthetic::{CAPTION_WORDS, Family, fake, real};
use crate::data::{Captions, DecodeOptions, MissingCaption, PatchSelection, discover};
use crate::eval::{Report, accuracy_chart, training_chart};
use crate::surgery::rng::SplitMix64;
use crate::train::{Detector, Variant};

/// Families the demo trains on; the others are held out.
pub const TRAIN_FAMILIES: [Family; 2] = [Family::Upsampling, Family::SpectralPeaks];

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub seed: u64,
    /// Training images per class per family.
    pub train_per_class: usize,
    /// Test images per class per family.
    pub test_per_class: usize,
    /// Generated image side, pixels.
    pub image_size: usize,
    pub stage1_epochs: usize,
    pub stage2_epochs: usize,
    pub lr: f64,
    /// Where the model trains and is evaluated (the data is generated on the CPU either way).
    pub device: Device,
    pub quiet: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            out: PathBuf::from("dgs-demo"),
            seed: 1,
            train_per_class: 96,
            test_per_class: 48,
            image_size: 256,
            stage1_epochs: 3,
            stage2_epochs: 6,
            lr: 2e-3,
            device: Device::Cpu,
            quiet: false,
        }
    }
}

pub struct DemoOutcome {
    pub report: Report,
    /// Files written: reports and charts.
    pub files: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `<root>/<family>/{0_real,1_fake}/NNNN.png` for each family; returns relative path →
/// caption.
fn write_split(
    root: &Path,
    families: &[Family],
    per_class: usize,
    size: usize,
    (seed, quiet): (u64, bool),
) -> Result<HashMap<String, String>, PipelineError> {
    let jobs: Vec<(Family, u8, usize)> = families
        .iter()
        .flat_map(|&f| (0..2u8).flat_map(move |label| (0..per_class).map(move |i| (f, label, i))))
        .collect();
    for &f in families {
        for class in ["0_real", "1_fake"] {
            let d = root.join(f.name()).join(class);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
    }
    let name = root
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy().into_owned());
    let pb = bar(jobs.len(), format!("generating {name}"), quiet);
    let written: Vec<Result<(String, String), PipelineError>> = jobs
        .par_iter()
        .map(|&(family, label, i)| {
            pb.inc(1);
            let class = if label == 0 { "0_real" } else { "1_fake" };
            let mut rng = SplitMix64::for_name(seed, &format!("{}/{class}/{i}", family.name()));
            let (img, caption) = match label {
                0 => real(size, &mut rng),
                _ => fake(family, size, &mut rng),
            };
            let rel = format!("{}/{class}/{i:04}.png", family.name());
            let path = root.join(&rel);
            img.save(&path)
                .map_err(|e| PipelineError::Invalid(format!("{}: {e}", path.display())))?;
            Ok((path.display().to_string(), caption))
        })
        .collect();
    pb.finish_and_clear();
    written.into_iter().collect()
}

/// Run the demo; prints progress and the table unless `quiet`.
pub fn run_demo(opts: &DemoOptions) -> Result<DemoOutcome, PipelineError> {
    let say = |s: &str| {
        if !opts.quiet {
            println!("{s}");
        }
    };
    say("dgs demo — a tiny random CLIP trained on synthetic images, with no downloads.");
    say(
        "Note: this is NOT the paper's pretrained ViT-L/14: the model is a tiny random CLIP, so the",
    );
    say("numbers show the pipeline working, not the method's published accuracy.\n");
    let data = opts.out.join("data");
    let started = std::time::Instant::now();
    let captions_map = write_split(
        &data.join("train"),
        &TRAIN_FAMILIES,
        opts.train_per_class,
        opts.image_size,
        (opts.seed, opts.quiet),
    )?;
    write_split(
        &data.join("test"),
        &Family::ALL,
        opts.test_per_class,
        opts.image_size,
        (opts.seed ^ 0x7E57, opts.quiet),
    )?;
    let captions_path = data.join("train_captions.json");
    let json = serde_json::to_string_pretty(&captions_map)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    std::fs::write(&captions_path, json).map_err(io(&captions_path))?;
    say(&format!(
        "data: {} training images ({}), {} test images (all four families) in {} [{:.1} s]",
        4 * opts.train_per_class,
        TRAIN_FAMILIES.map(|f| f.name()).join(", "),
        8 * opts.test_per_class,
        data.display(),
        started.elapsed().as_secs_f64()
    ));

    let model_dir = opts.out.join("model");
    let config = ClipConfig::demo();
    write_random_folder(&model_dir, &config, opts.seed, CAPTION_WORDS)?;
    let tokenizer = ClipTokenizer::from_file(
        &tokenizer_path(&model_dir),
        config.text_config.max_position_embeddings,
        config.text_config.eos_token_id,
    )?;
    let captions = Captions::from_file(&captions_path, MissingCaption::Error)?
        .with_data_root(&data.join("train"));
    let train_data = discover(&data.join("train"))?;
    let test_data = discover(&data.join("test"))?;
    let (device, dtype) = (opts.device.clone(), DType::F32);

    let mut report = Report::default();
    let mut loss_curves = Vec::new();
    let mut forgetting_curves = Vec::new();
    for (method, variant) in [("DGS", Variant::Dgs), ("plain LoRA", Variant::PlainLora)] {
        let t0 = std::time::Instant::now();
        // LoRA dropout off: on CUDA the layers still draw their masks from candle's generator,
        // which cannot be seeded, and the demo must print the same table on every device.
        let lora = LoraConfig {
            dropout: 0.0,
            ..LoraConfig::default()
        };
        let det = Detector::from_hf(&model_dir, dtype, &device, lora)?;
        det.reseed(opts.seed)
            .map_err(|source| PipelineError::compute("seeding the adapters and heads", source))?;
        let plan = TrainPlan {
            stage1_epochs: opts.stage1_epochs,
            stage2_epochs: opts.stage2_epochs,
            stage1_lr: opts.lr,
            lr: opts.lr,
            variant,
            lora,
            seed: opts.seed,
            ..TrainPlan::default()
        };
        let run_dir = opts.out.join(method.replace(' ', "-").to_lowercase());
        let outcome = train(TrainJob {
            det: &det,
            items: train_data.all_items(),
            captions: &captions,
            tokenizer: &tokenizer,
            plan: &plan,
            out: &run_dir,
            resume: None,
            // The demo owns its folder: a second demo replaces the first one's runs.
            overwrite: true,
            inputs: vec![captions_path.clone()],
            decode: DecodeOptions::default(),
            dtype,
            device: &device,
            quiet: opts.quiet,
            on_epoch: &|_, _| {},
        })?;
        let scorer = Scorer {
            det: &det,
            batch_size: 64,
            dtype,
            device: &device,
            decode: DecodeOptions::default(),
            patches: PatchSelection::default(),
            quiet: opts.quiet,
        };
        let mut r = scorer.evaluate(&test_data, method)?;
        for row in &mut r.rows {
            let seen = TRAIN_FAMILIES.iter().any(|f| f.name() == row.subset);
            row.subset = format!(
                "{} ({})",
                row.subset,
                if seen { "trained" } else { "held-out" }
            );
        }
        report.rows.extend(r.rows);
        report.skipped.extend(r.skipped);
        let losses = outcome.record.stage2_steps(|e| &e.step_l_img);
        let kept = outcome.record.forgetting();
        say(&format!(
            "{method}: trained in {:.1} s; features kept (cosine to the frozen model) {}",
            t0.elapsed().as_secs_f64(),
            kept.last().map_or("—".into(), |k| format!("{:.3}", k.1))
        ));
        loss_curves.push((method.to_string(), losses));
        forgetting_curves.push((method.to_string(), kept));
    }

    let mut files = Vec::new();
    let write = |name: &str, text: String, files: &mut Vec<PathBuf>| -> Result<(), PipelineError> {
        let p = opts.out.join(name);
        std::fs::write(&p, text).map_err(io(&p))?;
        files.push(p);
        Ok(())
    };
    write("report.txt", report.to_text(), &mut files)?;
    write("report.md", report.to_markdown(), &mut files)?;
    write("report.json", report.to_json().to_string(), &mut files)?;
    let charts = [
        ("accuracy.png", None),
        (
            "loss.png",
            Some((&loss_curves, "stage-2 image loss L_img", "step")),
        ),
        (
            "forgetting.png",
            Some((
                &forgetting_curves,
                "features kept (cosine to frozen CLIP)",
                "epoch",
            )),
        ),
    ];
    for (name, curves) in charts {
        let p = opts.out.join(name);
        match curves {
            None => accuracy_chart(
                &report,
                "accuracy by family (tiny random CLIP, synthetic data)",
                &p,
            ),
            Some((c, title, x)) => training_chart(c, title, x, &p),
        }
        .map_err(PipelineError::Invalid)?;
        files.push(p);
    }
    say(&format!("\n{}", report.to_text()));
    say(&format!(
        "finished in {:.1} s; written: {}",
        started.elapsed().as_secs_f64(),
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(DemoOutcome { report, files })
}
