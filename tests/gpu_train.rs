//! Training on the GPU (`--features cuda`): a stage-2 step on CUDA equals the CPU step on the
//! same weights and batch (f32, relative error < 1e-3), and the tiny model learns there as on the
//! CPU. Ignored unless built with DGS_GPU_TESTS=1 (scripts/build-gpu-bundle.sh --train).
#![cfg(feature = "cuda")]

use std::collections::BTreeMap;

use approx::assert_abs_diff_eq;
use candle_core::{DType, Device, Tensor};
use dgs::clip::{ClipConfig, LoraConfig, write_random_folder};
use dgs::train::{Detector, OwnedBatch, Stage, Stage2Config, Stage2Trainer, stage2_loss};

fn detector(dir: &std::path::Path, device: &Device) -> Detector {
    let lora = LoraConfig {
        dropout: 0.0,
        ..LoraConfig::default()
    };
    let det = Detector::from_hf(dir, DType::F32, device, lora).unwrap();
    det.reseed(4).unwrap();
    det
}

fn batch(n: usize, device: &Device) -> OwnedBatch {
    let mut rng = dgs::surgery::rng::SplitMix64::new(8);
    let mut px = Vec::with_capacity(n * 3 * 32 * 32);
    for i in 0..n {
        for j in 0..3 * 32 * 32 {
            let stripe = if i % 2 == 1 && j % 4 == 0 { 1.5 } else { 0.0 };
            px.push((0.5 * rng.normal() + stripe) as f32);
        }
    }
    let ids: Vec<u32> = (0..n)
        .flat_map(|i| [1 + (i % 50) as u32, 7, 999, 0])
        .collect();
    OwnedBatch {
        pixels: Tensor::from_vec(px, (n, 3, 32, 32), device).unwrap(),
        captions: Tensor::from_vec(ids, (n, 4), device).unwrap(),
        labels: Tensor::from_vec((0..n).map(|i| (i % 2) as f32).collect(), n, device).unwrap(),
    }
}

fn grads(det: &Detector, b: &OwnedBatch) -> (f32, BTreeMap<String, Vec<f32>>) {
    let (loss, stats) = stage2_loss(
        &det.clip,
        &det.teacher,
        &det.img_fc,
        &det.text_fc,
        &b.view(),
        &Stage2Config::default(),
        0,
    )
    .unwrap();
    let g = loss.backward().unwrap();
    let out = det
        .trainables(Stage::Two)
        .into_iter()
        .filter_map(|(k, v)| {
            let t = g.get(v.as_tensor())?.to_device(&Device::Cpu).ok()?;
            Some((k, t.flatten_all().ok()?.to_vec1().ok()?))
        })
        .collect();
    (stats.loss, out)
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn a_gpu_step_matches_the_cpu_step() {
    let dir = std::env::temp_dir().join(format!("dgs-gpu-{}", std::process::id()));
    write_random_folder(&dir, &ClipConfig::tiny(), 3, &["a"]).unwrap();
    let gpu = Device::new_cuda(0).expect("a CUDA device");
    let (cpu_det, gpu_det) = (detector(&dir, &Device::Cpu), detector(&dir, &gpu));
    let (l_cpu, g_cpu) = grads(&cpu_det, &batch(16, &Device::Cpu));
    let (l_gpu, g_gpu) = grads(&gpu_det, &batch(16, &gpu));
    assert_abs_diff_eq!(l_cpu, l_gpu, epsilon = 1e-3 * l_cpu.abs());
    assert_eq!(g_cpu.len(), g_gpu.len());
    for (name, c) in &g_cpu {
        let g = &g_gpu[name];
        let num: f64 = c.iter().zip(g).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let den: f64 = c.iter().map(|a| f64::from(*a).powi(2)).sum();
        let rel = (num / den.max(1e-30)).sqrt();
        assert!(rel < 1e-3, "{name}: relative error {rel}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
#[cfg_attr(
    not(dgs_gpu_tests),
    ignore = "skipped: no CUDA device (GPU cases run in a DGS_GPU_TESTS=1 build, see docs/gpu.md)"
)]
fn the_tiny_model_learns_on_the_gpu() {
    let dir = std::env::temp_dir().join(format!("dgs-gpu-learn-{}", std::process::id()));
    write_random_folder(&dir, &ClipConfig::tiny(), 3, &["a"]).unwrap();
    let gpu = Device::new_cuda(0).expect("a CUDA device");
    let det = detector(&dir, &gpu);
    let cfg = Stage2Config {
        lr: 3e-3,
        ..Default::default()
    };
    let mut trainer = Stage2Trainer::new(det.trainables(Stage::Two), cfg).unwrap();
    let b = batch(64, &gpu);
    let halves: Vec<OwnedBatch> = (0..2)
        .map(|h| OwnedBatch {
            pixels: b.pixels.narrow(0, h * 32, 32).unwrap(),
            captions: b.captions.narrow(0, h * 32, 32).unwrap(),
            labels: b.labels.narrow(0, h * 32, 32).unwrap(),
        })
        .collect();
    let mut acc = 0.0;
    for _ in 0..60 {
        acc = trainer
            .epoch(&det, halves.iter().cloned().map(Ok), |_| {})
            .unwrap()
            .accuracy;
        if acc > 0.97 {
            break;
        }
    }
    assert!(acc > 0.95, "training accuracy {acc}");
    std::fs::remove_dir_all(dir).unwrap();
}
