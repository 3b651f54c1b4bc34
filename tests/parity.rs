//! Parity with the reference implementation: one stage-2 step of the official method in PyTorch
//! (scripts/make_torch_fixture.py), replayed through our CLIP, LoRA, surgery op and loss, on the
//! same weights and batch — once with the official DGS-Net LoRA layer (`alpha / √r`), once with
//! peft's (`alpha / r`). Losses and every trained gradient must agree to a relative error below
//! 1e-4 (f32).

use std::collections::HashMap;

use approx::{abs_diff_eq, assert_abs_diff_eq};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgs::clip::{Clip, ClipConfig, LoraConfig, LoraScaling};
use dgs::train::{Batch, Head, Stage2Config, Variant, stage2_loss};

/// The fixture's tensors and its LoRA configuration (from its metadata; fixtures without a
/// `lora_scaling` entry were made with peft).
fn fixture(path: &str) -> (HashMap<String, Tensor>, LoraConfig) {
    let bytes = std::fs::read(path).expect("fixture present");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    let scaling = match meta.get("lora_scaling").map(String::as_str) {
        Some("official") => LoraScaling::Official,
        None => LoraScaling::Peft,
        Some(other) => panic!("{path}: unknown LoRA rule {other}"),
    };
    let lora = LoraConfig {
        rank: meta["lora_rank"].parse().unwrap(),
        alpha: meta["lora_alpha"].parse().unwrap(),
        dropout: 0.0,
        scaling,
    };
    let all = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    (all, lora)
}

fn with_prefix(all: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    all.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
        .collect()
}

fn set_all(map: &VarMap, values: &HashMap<String, Tensor>, prefix: &str) {
    for (name, var) in map.data().lock().unwrap().iter() {
        let key = format!("{prefix}{name}");
        let v = values
            .get(&key)
            .unwrap_or_else(|| panic!("fixture lacks {key}"));
        var.set(v).unwrap();
    }
}

fn rel_err(ours: &Tensor, theirs: &Tensor) -> f64 {
    let (a, b) = (
        ours.to_dtype(DType::F64).unwrap(),
        theirs.to_dtype(DType::F64).unwrap(),
    );
    let num: f64 = (&a - &b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let den: f64 = b.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn one_stage2_step_matches_the_official_lora_layer() {
    let (all, lora) = fixture("tests/fixtures/stage2_tiny_official.safetensors");
    assert_eq!(lora.scaling, LoraScaling::Official);
    replay(&all, &lora);
}

#[test]
fn one_stage2_step_matches_peft() {
    let (all, lora) = fixture("tests/fixtures/stage2_tiny.safetensors");
    assert_eq!(lora.scaling, LoraScaling::Peft);
    replay(&all, &lora);
}

/// Our stage-2 step on the fixture's weights and batch against its losses and gradients.
fn replay(all: &HashMap<String, Tensor>, lora_cfg: &LoraConfig) {
    let dev = Device::Cpu;
    let base = with_prefix(all, "base.");
    let vb = VarBuilder::from_tensors(base, DType::F32, &dev);
    let (lora_vm, heads_vm) = (VarMap::new(), VarMap::new());
    let clip = Clip::new(
        ClipConfig::tiny(),
        vb,
        Some((
            lora_cfg,
            VarBuilder::from_varmap(&lora_vm, DType::F32, &dev),
        )),
    )
    .unwrap();
    let hvb = VarBuilder::from_varmap(&heads_vm, DType::F32, &dev);
    let (teacher, img_fc, text_fc) = (
        Head::new(16, hvb.pp("teacher")).unwrap(),
        Head::new(16, hvb.pp("img_fc")).unwrap(),
        Head::new(16, hvb.pp("text_fc")).unwrap(),
    );
    set_all(&lora_vm, all, "lora.");
    set_all(&heads_vm, all, "heads.");

    let ids = all["batch.ids"].to_dtype(DType::U32).unwrap();
    let batch = Batch {
        pixels: &all["batch.pixels"],
        captions: &ids,
        labels: &all["batch.labels"],
    };
    let cfg = Stage2Config {
        variant: Variant::Dgs,
        ..Default::default()
    };
    let (loss, stats) = stage2_loss(&clip, &teacher, &img_fc, &text_fc, &batch, &cfg, 0).unwrap();
    for (name, ours) in [
        ("l_img", stats.l_img),
        ("l_text", stats.l_text),
        ("l_help", stats.l_help),
        ("loss", stats.loss),
    ] {
        let theirs: f32 = all[&format!("loss.{name}")].to_vec1::<f32>().unwrap()[0];
        let (ours, theirs) = (f64::from(ours), f64::from(theirs));
        assert!(
            abs_diff_eq!(ours, theirs, epsilon = 1e-4 * theirs.abs().max(1e-12)),
            "{name}: ours {ours}, PyTorch {theirs} (rel {:e})",
            (ours - theirs).abs() / theirs.abs().max(1e-12)
        );
    }
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (prefix, map) in [("lora.", &lora_vm), ("heads.", &heads_vm)] {
        for (name, var) in map.data().lock().unwrap().iter() {
            let key = format!("grad.{prefix}{name}");
            let Some(theirs) = all.get(&key) else {
                assert!(name.starts_with("teacher"), "fixture lacks {key}");
                continue;
            };
            let ours = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let rel = rel_err(ours, theirs);
            assert!(rel < 1e-4, "{key}: relative error {rel:e}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12 + 4, "every LoRA matrix and both trained heads");
}

/// 20 stage-2 steps with Adam from the same start and batches as the official loop in PyTorch
/// (official LoRA layer, dropout 0): the losses at every step, every trainable after the last
/// step and the feature drift agree.
#[test]
fn twenty_adam_steps_follow_the_official_trajectory() {
    use dgs::train::{Detector, Stage, Stage2Trainer};
    let (all, lora) = fixture("tests/fixtures/stage2_trajectory.safetensors");
    assert_eq!(lora.scaling, LoraScaling::Official);
    let dev = Device::Cpu;
    let vb = VarBuilder::from_tensors(with_prefix(&all, "base."), DType::F32, &dev);
    let det = Detector::new(ClipConfig::tiny(), vb, lora, &dev).unwrap();
    for (name, var) in det.all_trainables() {
        let key = name.replace("teacher_head.", "heads.");
        var.set(&all[&key]).unwrap();
    }
    let cfg = Stage2Config {
        variant: Variant::Dgs,
        lr: 1e-3,
        ..Default::default()
    };
    let mut trainer = Stage2Trainer::new(det.trainables(Stage::Two), cfg).unwrap();
    let held_out = &all["held_out.pixels"];
    let drift = |det: &Detector| dgs::train::forgetting(&det.clip, held_out).unwrap();
    let theirs_drift = |k: &str| all[k].to_vec1::<f32>().unwrap()[0];
    assert_abs_diff_eq!(drift(&det), theirs_drift("drift.start"), epsilon = 1e-6);
    let losses = all["loss.steps"].to_vec1::<f32>().unwrap();
    let ids = all["batch.ids"].to_dtype(DType::U32).unwrap();
    for (step, theirs) in losses.iter().enumerate() {
        let b = step % 5;
        let (pixels, labels, captions) = (
            all["batch.pixels"].get(b).unwrap(),
            all["batch.labels"].get(b).unwrap(),
            ids.get(b).unwrap(),
        );
        let batch = Batch {
            pixels: &pixels,
            captions: &captions,
            labels: &labels,
        };
        let stats = trainer
            .step(&det.clip, &det.teacher, &det.img_fc, &det.text_fc, &batch)
            .unwrap();
        let (ours, theirs) = (f64::from(stats.loss), f64::from(*theirs));
        assert!(
            abs_diff_eq!(ours, theirs, epsilon = 1e-4 * theirs.abs()),
            "step {step}: loss {ours} vs {theirs}"
        );
    }
    let mut worst = 0f64;
    for (name, var) in det.trainables(Stage::Two) {
        let theirs = &all[&format!("final.{name}")];
        let rel = rel_err(var.as_tensor(), theirs);
        assert!(rel < 1e-4, "{name} after 20 steps: relative error {rel:e}");
        worst = worst.max(rel);
        let start = &all[&name];
        let moved = rel_err(var.as_tensor(), start);
        assert!(moved > 1e-4, "{name} must have moved ({moved:e})");
    }
    let (ours, theirs) = (drift(&det), theirs_drift("drift.end"));
    assert!(
        abs_diff_eq!(ours, theirs, epsilon = 1e-5),
        "drift {ours} vs {theirs}"
    );
    eprintln!("after 20 steps: worst relative error {worst:e}; drift {ours} (PyTorch {theirs})");
}
