//! `dgs bench step`: training-step throughput on random weights (see `dgs::pipeline::bench_steps`).

use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use dgs::clip::ClipConfig;
use dgs::pipeline::{
    PipelineError, StepBenchOptions, StepBenchRow, bench_steps, parse_device, parse_dtype,
};

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Time stage-2 training steps: DGS (fused surgery), DGS (surgery as stock candle ops), plain
    /// LoRA; prints images/s, step time, the surgery's share of the step, the peak memory of the
    /// timed steps (CUDA: memory-pool high-water mark; CPU: peak resident set) and the device
    /// memory in use as the driver reports it.
    Step(StepArgs),
}

#[derive(Debug, ClapArgs)]
pub struct StepArgs {
    /// Model geometries: vit-b32, vit-l14, demo, tiny (comma separated).
    #[arg(long, value_delimiter = ',', default_values = ["vit-b32", "vit-l14"])]
    pub models: Vec<String>,
    /// Compute dtypes (comma separated): f32, f16, bf16 (GPU only). Default: f32,bf16 on the
    /// GPU, f32 on the CPU.
    #[arg(long, value_delimiter = ',')]
    pub dtypes: Option<Vec<String>>,
    /// Images per step, ≥ 1.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Untimed steps first (kernel loading, memory pool growth).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps, ≥ 1.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// cuda, cuda:N or cpu. The default, cuda, needs a build with `--features cuda`.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Seed of the random weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Methods to time (comma separated): dgs, dgs-op-chain, plain-lora.
    #[arg(long, value_delimiter = ',', default_values = ["dgs", "dgs-op-chain", "plain-lora"])]
    pub methods: Vec<String>,
    /// Skip the per-phase timings of the DGS rows (e.g. under a profiler, to see one step alone).
    #[arg(long)]
    pub no_phases: bool,
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn config(name: &str) -> Result<ClipConfig, PipelineError> {
    match name {
        "vit-b32" => Ok(ClipConfig::vit_b32()),
        "vit-l14" => Ok(ClipConfig::vit_l14()),
        "demo" => Ok(ClipConfig::demo()),
        "tiny" => Ok(ClipConfig::tiny()),
        n => Err(PipelineError::Invalid(format!(
            "unknown model `{n}`: use vit-b32, vit-l14, demo or tiny"
        ))),
    }
}

fn print_row(r: &StepBenchRow) {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("—".to_string(), f);
    let gib = |b: Option<u64>| {
        b.map_or("—".to_string(), |b| {
            format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
        })
    };
    println!(
        "{:<8} {:<5} {:<13} {:>9.2} {:>9.1} {:>10} {:>8} {:>10} {:>10}",
        r.model,
        r.dtype,
        r.method,
        r.step_ms,
        r.images_per_s,
        opt(r.surgery_ms, &|v| format!("{v:.3}")),
        opt(r.surgery_share, &|v| format!("{:.2}%", 100.0 * v)),
        gib(r.peak_bytes),
        gib(r.device_bytes),
    );
    if let Some(p) = &r.phases {
        println!(
            "{:<28} student forward {:.2} ms, all forwards {:.2} ms, backward {:.2} ms, optimiser {:.2} ms",
            "", p.student_forward_ms, p.forward_ms, p.backward_ms, p.optimiser_ms,
        );
    }
}

pub fn run(b: &Bench) -> Result<(), PipelineError> {
    let Bench::Step(a) = b;
    if a.device.starts_with("cuda") && !cfg!(feature = "cuda") {
        return Err(PipelineError::Invalid(
            "dgs bench step times the GPU (--device cuda) by default, and this dgs was built \
             without CUDA support: rebuild with `--features cuda`, or time the CPU with \
             --device cpu (e.g. `dgs bench step --device cpu --models vit-b32 --batch 4`)"
                .into(),
        ));
    }
    let device = parse_device(&a.device)?;
    let models = a
        .models
        .iter()
        .map(|m| Ok((m.clone(), config(m)?)))
        .collect::<Result<Vec<_>, PipelineError>>()?;
    let default_dtypes = match device.is_cpu() {
        true => vec!["f32".to_string()],
        false => vec!["f32".to_string(), "bf16".to_string()],
    };
    let dtypes = a
        .dtypes
        .as_ref()
        .unwrap_or(&default_dtypes)
        .iter()
        .map(|d| parse_dtype(d, &device))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "{:<8} {:<5} {:<13} {:>9} {:>9} {:>10} {:>8} {:>10} {:>10}",
        "model", "dtype", "method", "step ms", "images/s", "surgery ms", "share", "peak", "device"
    );
    let opts = StepBenchOptions {
        models,
        dtypes,
        batch: a.batch,
        warmup: a.warmup,
        steps: a.steps,
        seed: a.seed,
        methods: a.methods.clone(),
        phases: !a.no_phases,
    };
    let rows = bench_steps(&opts, &device, print_row)?;
    if let Some(p) = &a.json {
        let json = serde_json::to_string_pretty(&rows)
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        std::fs::write(p, json).map_err(|source| PipelineError::Io {
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}
