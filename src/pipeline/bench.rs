//! `dgs bench step`: the time of a stage-2 training step (after warm-up, device-synchronised) on
//! random weights, for DGS with our fused surgery, DGS with the surgery as a chain of stock candle
//! ops, and plain LoRA; with the time the surgery alone takes on the step's feature batch, and
//! the peak memory of the timed steps.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

use super::error::{Context, PipelineError};
use super::peak_memory;
use crate::clip::{Clip, ClipConfig, DropoutKey, Fill, LoraConfig, Mode, SeededWeights};
use crate::ops::{orthogonal_suppression, orthogonal_suppression_op_chain};
use crate::train::{
    Detector, LossScaler, OwnedBatch, Stage, Stage2Config, Stage2Trainer, StepPhase, SurgeryImpl,
    Variant,
};

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct StepBenchRow {
    pub model: String,
    pub dtype: String,
    pub method: String,
    pub batch: usize,
    /// Mean wall time of one training step, milliseconds.
    pub step_ms: f64,
    pub images_per_s: f64,
    /// Forward + backward of the surgery alone on `[batch, projection_dim]` f32 features (with
    /// a linear loss on top), milliseconds; `None` for plain LoRA.
    pub surgery_ms: Option<f64>,
    pub surgery_share: Option<f64>,
    /// Peak memory over the timed steps: on CUDA the high-water mark of the device's memory pool
    /// (live allocations: weights, activations, gradients, optimiser state — what
    /// `torch.cuda.max_memory_allocated` counts); on the CPU the process's peak resident set.
    pub peak_bytes: Option<u64>,
    /// CUDA only: device memory in use after the timed steps as the driver reports it (the
    /// context, cuBLAS workspaces and the pool's cached blocks included).
    pub device_bytes: Option<u64>,
    /// Where a DGS step's time goes (`dgs` rows only).
    pub phases: Option<StepPhases>,
}

/// Where a DGS step's time goes: synchronised steps split where the forward and the backward
/// end (so forward + backward + optimiser is one step's time), and the student's image forward
/// timed on its own beside them. Means over the repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct StepPhases {
    /// The student's image forward alone (LoRA on, dropout on, graph kept): a part of
    /// `forward_ms`.
    pub student_forward_ms: f64,
    /// Every forward of the step and the losses (student, teacher, text, heads, surgery).
    pub forward_ms: f64,
    /// The backward pass.
    pub backward_ms: f64,
    /// The optimiser update.
    pub optimiser_ms: f64,
}

pub struct StepBenchOptions {
    pub models: Vec<(String, ClipConfig)>,
    pub dtypes: Vec<DType>,
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
    pub seed: u64,
    /// Which of `dgs`, `dgs-op-chain`, `plain-lora` to time.
    pub methods: Vec<String>,
    /// Time the phases of the DGS rows ([`StepPhases`]).
    pub phases: bool,
}

const METHODS: [(&str, Variant, SurgeryImpl); 3] = [
    ("dgs", Variant::Dgs, SurgeryImpl::Fused),
    ("dgs-op-chain", Variant::Dgs, SurgeryImpl::OpChain),
    ("plain-lora", Variant::PlainLora, SurgeryImpl::Fused),
];

fn random_batch(
    cfg: &ClipConfig,
    batch: usize,
    dtype: DType,
    device: &Device,
    seed: u64,
) -> candle_core::Result<OwnedBatch> {
    let mut rng = crate::surgery::rng::SplitMix64::new(seed);
    let v = &cfg.vision_config;
    let n = batch * v.num_channels * v.image_size * v.image_size;
    let pixels: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let t = cfg.text_config.max_position_embeddings;
    let eos = cfg.text_config.eos_token_id;
    let ids: Vec<u32> = (0..batch * t)
        .map(|i| match i % t {
            j if j == t - 1 => eos,
            _ => rng.below(eos as usize) as u32,
        })
        .collect();
    Ok(OwnedBatch {
        pixels: Tensor::from_vec(
            pixels,
            (batch, v.num_channels, v.image_size, v.image_size),
            device,
        )?
        .to_dtype(dtype)?,
        captions: Tensor::from_vec(ids, (batch, t), device)?,
        labels: Tensor::from_vec((0..batch).map(|i| (i % 2) as f32).collect(), batch, device)?,
    })
}

/// Mean milliseconds of `f` over `reps` device-synchronised runs, after `warmup` runs. The peak
/// memory mark restarts with the timed runs ([`peak_memory::peak_bytes`] right after reads theirs).
fn mean_ms(
    device: &Device,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    device.synchronize()?;
    peak_memory::reset_peak(device);
    let t0 = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    device.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() * 1e3 / reps as f64)
}

/// [`StepPhases`] of `trainer`'s step over `reps` steps, after one untimed step.
fn step_phases(
    trainer: &mut Stage2Trainer,
    det: &Detector,
    batch: &OwnedBatch,
    device: &Device,
    reps: usize,
) -> candle_core::Result<StepPhases> {
    step_parts_ms(trainer, det, batch, device)?;
    let mut total = [0.0f64; 4];
    for _ in 0..reps {
        let parts = step_parts_ms(trainer, det, batch, device)?;
        total.iter_mut().zip(parts).for_each(|(t, p)| *t += p);
    }
    let mean = total.map(|t| t / reps.max(1) as f64);
    Ok(StepPhases {
        student_forward_ms: mean[0],
        forward_ms: mean[1],
        backward_ms: mean[2],
        optimiser_ms: mean[3],
    })
}

/// One synchronised student forward, then one step split at its marks: milliseconds of the
/// student forward, the forward, the backward and the optimiser.
fn step_parts_ms(
    trainer: &mut Stage2Trainer,
    det: &Detector,
    batch: &OwnedBatch,
    device: &Device,
) -> candle_core::Result<[f64; 4]> {
    let ms = |since: Instant| since.elapsed().as_secs_f64() * 1e3;
    let mut parts = [0.0f64; 4];
    device.synchronize()?;
    let t0 = Instant::now();
    let student = Mode::StudentTrain(DropoutKey { seed: 0, step: 0 });
    drop(det.clip.image_features(&batch.pixels, student)?);
    device.synchronize()?;
    parts[0] = ms(t0);
    let mut last = Instant::now();
    let mut mark = |phase| {
        device.synchronize()?;
        let part = match phase {
            StepPhase::ForwardDone => 1,
            StepPhase::BackwardDone => 2,
        };
        parts[part] = ms(last);
        last = Instant::now();
        Ok(())
    };
    let view = batch.view();
    trainer.step_marked(
        &det.clip,
        &det.teacher,
        &det.img_fc,
        &det.text_fc,
        &view,
        &mut mark,
    )?;
    device.synchronize()?;
    parts[3] = ms(last);
    Ok(parts)
}

/// Forward + backward of the surgery alone, `reps` times, milliseconds per repetition.
fn surgery_ms(
    how: SurgeryImpl,
    rows: usize,
    dim: usize,
    device: &Device,
    reps: usize,
) -> candle_core::Result<f64> {
    let f = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, dim), device)?)?;
    let harm = Tensor::randn(0f32, 1.0, (rows, dim), device)?;
    let w = Tensor::randn(0f32, 1.0, (rows, dim), device)?;
    let once = || -> candle_core::Result<()> {
        let y = match how {
            SurgeryImpl::Fused => orthogonal_suppression(f.as_tensor(), &harm, 1e-6)?,
            SurgeryImpl::OpChain => orthogonal_suppression_op_chain(f.as_tensor(), &harm, 1e-6)?,
        };
        (y * &w)?.sum_all()?.backward()?;
        Ok(())
    };
    mean_ms(device, 3, reps, once)
}

/// Run every model × dtype × method; `on_row` sees each result as it is measured.
pub fn bench_steps(
    opts: &StepBenchOptions,
    device: &Device,
    mut on_row: impl FnMut(&StepBenchRow),
) -> Result<Vec<StepBenchRow>, PipelineError> {
    if opts.batch == 0 || opts.steps == 0 {
        return Err(PipelineError::Invalid(
            "batch and steps must be at least 1".into(),
        ));
    }
    if let Some(m) = opts
        .methods
        .iter()
        .find(|m| !METHODS.iter().any(|(name, _, _)| name == m))
    {
        return Err(PipelineError::Invalid(format!(
            "unknown method `{m}`: use dgs, dgs-op-chain or plain-lora"
        )));
    }
    let mut rows = Vec::new();
    for (name, config) in &opts.models {
        for &dtype in &opts.dtypes {
            let ctx = || format!("{name} {dtype:?}");
            let lora_vars = candle_nn::VarMap::new();
            let lora = LoraConfig::default();
            let clip = Clip::from_backend(
                config.clone(),
                Box::new(SeededWeights::new(Fill::Seeded(opts.seed))),
                dtype,
                device,
                Some((
                    &lora,
                    candle_nn::VarBuilder::from_varmap(&lora_vars, DType::F32, device),
                )),
            )
            .context(ctx)?;
            let det = Detector::from_parts(clip, lora, lora_vars, device).context(ctx)?;
            let batch = random_batch(config, opts.batch, dtype, device, opts.seed).context(ctx)?;
            let chosen = METHODS
                .into_iter()
                .filter(|(m, _, _)| opts.methods.iter().any(|c| c == m));
            for (method, variant, surgery) in chosen {
                let cfg = Stage2Config {
                    variant,
                    surgery,
                    ..Stage2Config::default()
                };
                let mut trainer =
                    Stage2Trainer::new(det.trainables(Stage::Two), cfg).context(ctx)?;
                if dtype == DType::F16 {
                    trainer = trainer.with_loss_scaling(LossScaler::default());
                }
                let step_ms = mean_ms(device, opts.warmup, opts.steps, || {
                    trainer.epoch(&det, [Ok(batch.clone())], |_| {}).map(drop)
                })
                .context(ctx)?;
                let peak_bytes = peak_memory::peak_bytes(device);
                let phases = match method {
                    "dgs" if opts.phases => Some(
                        step_phases(&mut trainer, &det, &batch, device, opts.steps.min(5))
                            .context(ctx)?,
                    ),
                    _ => None,
                };
                let surgery = match variant {
                    Variant::PlainLora => None,
                    _ => Some(
                        surgery_ms(surgery, opts.batch, config.projection_dim, device, 20)
                            .context(ctx)?,
                    ),
                };
                let row = StepBenchRow {
                    model: name.clone(),
                    dtype: format!("{dtype:?}").to_lowercase(),
                    method: method.into(),
                    batch: opts.batch,
                    step_ms,
                    images_per_s: opts.batch as f64 / (step_ms / 1e3),
                    surgery_ms: surgery,
                    surgery_share: surgery.map(|s| s / step_ms),
                    peak_bytes,
                    device_bytes: peak_memory::device_in_use(device),
                    phases,
                };
                on_row(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
