//! The stage-2 DGS step on a tiny CLIP: losses, gradients, what changes, and that it learns.

use approx::{assert_abs_diff_eq, assert_relative_eq};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use dgs::clip::{Clip, ClipConfig, LoraConfig, LoraScaling};
use dgs::train::{
    Batch, Head, Stage2Config, Stage2Trainer, Variant, bce_logit_grad, bce_with_logits, checkpoint,
    forgetting, named_vars,
};

fn dev() -> Device {
    Device::Cpu
}

#[test]
fn bce_is_stable_and_its_gradient_is_exact() {
    let z = Tensor::new(&[-100f32, -3.0, -0.5, 0.0, 0.7, 4.0, 100.0], &dev()).unwrap();
    let y = Tensor::new(&[0f32, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0], &dev()).unwrap();
    let loss: f32 = bce_with_logits(&z, &y).unwrap().to_scalar().unwrap();
    let zs: Vec<f32> = z.to_vec1().unwrap();
    let ys: Vec<f32> = y.to_vec1().unwrap();
    let naive: f64 = zs
        .iter()
        .zip(&ys)
        .map(|(&z, &y)| {
            let (z, y) = (f64::from(z), f64::from(y));
            z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
        })
        .sum::<f64>()
        / 7.0;
    assert_abs_diff_eq!(f64::from(loss), naive, epsilon = 1e-6);
    let v = Var::from_tensor(&z).unwrap();
    let g = bce_with_logits(v.as_tensor(), &y)
        .unwrap()
        .backward()
        .unwrap();
    let auto: Vec<f32> = g.get(v.as_tensor()).unwrap().to_vec1().unwrap();
    let closed: Vec<f32> = bce_logit_grad(&z, &y).unwrap().to_vec1().unwrap();
    for (a, c) in auto.iter().zip(&closed) {
        assert_abs_diff_eq!(*a, *c, epsilon = 1e-6);
    }
}

#[test]
fn head_input_grad_is_the_autograd_gradient() {
    let vm = VarMap::new();
    let head = Head::new(8, VarBuilder::from_varmap(&vm, DType::F32, &dev())).unwrap();
    let f = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 8), &dev()).unwrap()).unwrap();
    let y = Tensor::new(&[0f32, 1.0, 1.0, 0.0, 1.0], &dev()).unwrap();
    let z = head.logits(f.as_tensor()).unwrap();
    let auto = bce_with_logits(&z, &y)
        .unwrap()
        .backward()
        .unwrap()
        .get(f.as_tensor())
        .unwrap()
        .clone();
    let closed = head.input_grad(&bce_logit_grad(&z, &y).unwrap()).unwrap();
    let d: f32 = (auto - closed)
        .unwrap()
        .abs()
        .unwrap()
        .max_keepdim(0)
        .unwrap()
        .max_keepdim(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!(d < 1e-6, "{d}");
}

struct Setup {
    clip: Clip,
    teacher_vm: VarMap,
    base: VarMap,
    lora: VarMap,
    heads: VarMap,
    teacher: Head,
    img_fc: Head,
    text_fc: Head,
}

impl Setup {
    fn teacher_from(&self, other: &Setup) {
        let theirs = other.teacher_vm.data().lock().unwrap();
        for (k, v) in self.teacher_vm.data().lock().unwrap().iter() {
            v.set(theirs[k].as_tensor()).unwrap();
        }
    }

    fn trainables(&self) -> std::collections::BTreeMap<String, Var> {
        let mut v = named_vars("lora.", &self.lora);
        v.extend(named_vars("heads.", &self.heads));
        v
    }
}

fn setup(dropout: f32) -> Setup {
    setup_on(dropout, VarMap::new())
}

/// A copy of `of`'s variables, as a fresh map (the frozen weights of a second, identical model).
fn copy_of(of: &VarMap) -> VarMap {
    let copy = VarMap::new();
    for (k, v) in of.data().lock().unwrap().iter() {
        let t = v.as_tensor().copy().unwrap();
        let var = candle_core::Var::from_tensor(&t).unwrap();
        copy.data().lock().unwrap().insert(k.clone(), var);
    }
    copy
}

/// [`setup`] over the frozen weights in `base` (those it lacks are created).
fn setup_on(dropout: f32, base: VarMap) -> Setup {
    let (lora, heads, tvm) = (VarMap::new(), VarMap::new(), VarMap::new());
    let cfg = LoraConfig {
        rank: 4,
        alpha: 4.0,
        dropout,
        scaling: LoraScaling::Official,
    };
    let vb = |m: &VarMap| VarBuilder::from_varmap(m, DType::F32, &dev());
    let clip = Clip::new(ClipConfig::tiny(), vb(&base), Some((&cfg, vb(&lora)))).unwrap();
    let d = clip.config.projection_dim;
    Setup {
        teacher: Head::new(d, vb(&tvm).pp("teacher")).unwrap(),
        img_fc: Head::new(d, vb(&heads).pp("img_fc")).unwrap(),
        text_fc: Head::new(d, vb(&heads).pp("text_fc")).unwrap(),
        clip,
        teacher_vm: tvm,
        base,
        lora,
        heads,
    }
}

/// A separable set: "fake" images carry a bright diagonal stripe pattern, "real" ones do not.
fn data(n: usize, seed: u64) -> (Tensor, Tensor, Tensor) {
    let mut rng = dgs::surgery::rng::SplitMix64::new(seed);
    let mut pix = Vec::with_capacity(n * 3 * 32 * 32);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let fake = i % 2 == 1;
        labels.push(if fake { 1f32 } else { 0.0 });
        for _c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let stripe = if fake && (x + y) % 4 == 0 { 1.5 } else { 0.0 };
                    pix.push((0.5 * rng.normal() + stripe) as f32);
                }
            }
        }
    }
    let ids: Vec<u32> = (0..n)
        .flat_map(|i| [1 + (i % 50) as u32, 7, 999, 0])
        .collect();
    (
        Tensor::from_vec(pix, (n, 3, 32, 32), &dev()).unwrap(),
        Tensor::from_vec(ids, (n, 4), &dev()).unwrap(),
        Tensor::from_vec(labels, n, &dev()).unwrap(),
    )
}

fn snapshot(m: &VarMap) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = m
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn a_step_changes_only_lora_and_heads() {
    let s = setup(0.0);
    let (pixels, captions, labels) = data(8, 1);
    let batch = Batch {
        pixels: &pixels,
        captions: &captions,
        labels: &labels,
    };
    let (base0, lora0, heads0) = (snapshot(&s.base), snapshot(&s.lora), snapshot(&s.heads));
    let mut trainer = Stage2Trainer::new(
        s.trainables(),
        Stage2Config {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let stats = trainer
        .step(&s.clip, &s.teacher, &s.img_fc, &s.text_fc, &batch)
        .unwrap();
    assert!(stats.loss.is_finite() && stats.l_help != 0.0, "{stats:?}");
    assert_eq!(
        snapshot(&s.base),
        base0,
        "the frozen CLIP (the teacher) must not change"
    );
    let lora1 = snapshot(&s.lora);
    let changed = lora1.iter().zip(&lora0).filter(|(a, b)| a.1 != b.1).count();
    // lora_A gets no gradient while lora_B is still zero; every lora_B moves.
    assert_eq!(
        changed,
        lora0.len() / 2,
        "exactly the lora_B matrices move on the first step"
    );
    assert_ne!(snapshot(&s.heads), heads0);
}

#[test]
fn a_tiny_model_learns_a_separable_set() {
    for variant in [Variant::Dgs, Variant::PlainLora] {
        let s = setup(0.0);
        let (pixels, captions, labels) = data(64, 2);
        let cfg = Stage2Config {
            variant,
            lr: 3e-3,
            ..Default::default()
        };
        let mut trainer = Stage2Trainer::new(s.trainables(), cfg).unwrap();
        let mut last = 0.0;
        for epoch in 0..60 {
            let mut correct = 0.0;
            for b in 0..2 {
                let (p, c, l) = (
                    pixels.narrow(0, b * 32, 32).unwrap(),
                    captions.narrow(0, b * 32, 32).unwrap(),
                    labels.narrow(0, b * 32, 32).unwrap(),
                );
                let st = trainer
                    .step(
                        &s.clip,
                        &s.teacher,
                        &s.img_fc,
                        &s.text_fc,
                        &Batch {
                            pixels: &p,
                            captions: &c,
                            labels: &l,
                        },
                    )
                    .unwrap();
                correct += st.accuracy / 2.0;
            }
            last = correct;
            if epoch > 5 && last > 0.97 {
                break;
            }
        }
        assert!(last > 0.95, "{variant:?}: training accuracy {last}");
        let kept = forgetting(&s.clip, &pixels).unwrap();
        assert!(kept.is_finite() && kept <= 1.0 + 1e-5, "{kept}");
    }
}

#[test]
fn adam_follows_the_pytorch_rule() {
    let p = Var::new(&[1.0f32], &dev()).unwrap();
    let params = std::collections::BTreeMap::from([("p".to_string(), p.clone())]);
    let mut adam = dgs::train::Adam::new(
        params,
        dgs::train::AdamConfig {
            lr: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    for expected in [0.9f32, 0.8, 0.7] {
        // d(0.5·p)/dp = 0.5 every step; Adam's steps are then exactly lr.
        let loss = (p.as_tensor() * 0.5).unwrap().sum_all().unwrap();
        adam.step(&loss.backward().unwrap()).unwrap();
        let now: f32 = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert_abs_diff_eq!(now, expected, epsilon = 1e-6);
    }
}

/// Two steps, save, two more — equals a fresh process resuming from the checkpoint and taking
/// the same two steps, bit for bit; with the LoRA dropout on too (its masks are keyed by the
/// step, not drawn from a generator's state).
#[test]
fn resume_restores_the_run_exactly() {
    for dropout in [0.0, 0.8] {
        resume_restores_the_run_with(dropout);
    }
}

fn resume_restores_the_run_with(dropout: f32) {
    let (pixels, captions, labels) = data(16, 3);
    let batch = Batch {
        pixels: &pixels,
        captions: &captions,
        labels: &labels,
    };
    let dir = std::env::temp_dir().join(format!("dgs-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stage2.safetensors");
    let cfg = Stage2Config {
        lr: 1e-2,
        ..Default::default()
    };
    let config_json = serde_json::json!({"lambda": 0.2, "note": "test"});

    let a = setup(dropout);
    let mut ta = Stage2Trainer::new(a.trainables(), cfg).unwrap();
    for _ in 0..2 {
        ta.step(&a.clip, &a.teacher, &a.img_fc, &a.text_fc, &batch)
            .unwrap();
    }
    checkpoint::save(&path, ta.opt.params(), &ta.opt, &config_json).unwrap();
    assert!(
        !path.with_extension("safetensors.tmp").exists(),
        "the temporary file is renamed away"
    );
    for _ in 0..2 {
        ta.step(&a.clip, &a.teacher, &a.img_fc, &a.text_fc, &batch)
            .unwrap();
    }

    // A fresh model with the same frozen weights (same seed-free init: copy them), resumed.
    let b = setup_on(dropout, copy_of(&a.base));
    b.teacher_from(&a);
    let loaded = checkpoint::load(&path, &dev()).unwrap();
    assert_eq!(loaded.step, 2);
    assert_eq!(loaded.config, config_json);
    let mut tb = Stage2Trainer::new(b.trainables(), cfg).unwrap();
    checkpoint::restore_params(&path, tb.opt.params(), &loaded.params).unwrap();
    tb.opt.restore(&loaded.optimizer, loaded.step).unwrap();
    for _ in 0..2 {
        tb.step(&b.clip, &b.teacher, &b.img_fc, &b.text_fc, &batch)
            .unwrap();
    }
    assert_eq!(snapshot(&a.lora), snapshot(&b.lora));
    assert_eq!(snapshot(&a.heads), snapshot(&b.heads));

    std::fs::write(&path, b"not a checkpoint").unwrap();
    let e = checkpoint::load(&path, &dev()).err().unwrap().to_string();
    assert!(e.contains("stage2.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stage1_probes_the_frozen_features() {
    let s = setup(0.0);
    let (pixels, _, labels) = data(64, 4);
    let feats = dgs::train::frozen_features(&s.clip, &pixels).unwrap();
    let vars = named_vars("teacher.", &s.teacher_vm);
    let mut t = dgs::train::Stage1Trainer::new(
        vars,
        dgs::train::AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let base0 = snapshot(&s.base);
    let mut acc = 0.0;
    for _ in 0..300 {
        acc = t.step(&s.teacher, &feats, &labels).unwrap().accuracy;
        if acc > 0.97 {
            break;
        }
    }
    assert!(acc > 0.95, "linear probe accuracy {acc}");
    assert_eq!(snapshot(&s.base), base0, "stage 1 trains the head only");
}

#[test]
fn a_non_finite_gradient_updates_nothing() {
    let p = Var::new(&[1.0f32, 2.0], &dev()).unwrap();
    let params = std::collections::BTreeMap::from([("p".to_string(), p.clone())]);
    let mut adam = dgs::train::Adam::new(params, dgs::train::AdamConfig::default()).unwrap();
    let bad = Tensor::new(&[f32::INFINITY, 1.0], &dev()).unwrap();
    let loss = (p.as_tensor() * &bad).unwrap().sum_all().unwrap();
    let e = adam
        .step(&loss.backward().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`p`") && e.contains("not finite"), "{e}");
    assert_eq!(p.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);
    assert_eq!(adam.step_count(), 0);
}

/// Frozen weights in f16 (candle's CPU matmul has no bf16; bf16 is for the GPU), adapters and
/// heads in f32: one stage-2 step runs and trains f32
/// adapters.
#[test]
fn half_precision_base_weights_with_f32_adapters() {
    let (base, lora, heads) = (VarMap::new(), VarMap::new(), VarMap::new());
    let cfg = LoraConfig {
        rank: 4,
        alpha: 4.0,
        dropout: 0.0,
        scaling: LoraScaling::Official,
    };
    let clip = Clip::new(
        ClipConfig::tiny(),
        VarBuilder::from_varmap(&base, DType::F16, &dev()),
        Some((&cfg, VarBuilder::from_varmap(&lora, DType::F32, &dev()))),
    )
    .unwrap();
    let hvb = VarBuilder::from_varmap(&heads, DType::F32, &dev());
    let (teacher, img_fc, text_fc) = (
        Head::new(16, hvb.pp("teacher")).unwrap(),
        Head::new(16, hvb.pp("img_fc")).unwrap(),
        Head::new(16, hvb.pp("text_fc")).unwrap(),
    );
    let (pixels, captions, labels) = data(8, 5);
    let pixels = pixels.to_dtype(DType::F16).unwrap();
    let mut vars = named_vars("lora.", &lora);
    vars.extend(named_vars("heads.", &heads));
    let before = snapshot(&lora);
    let mut trainer = Stage2Trainer::new(
        vars,
        Stage2Config {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let batch = Batch {
        pixels: &pixels,
        captions: &captions,
        labels: &labels,
    };
    let stats = trainer
        .step(&clip, &teacher, &img_fc, &text_fc, &batch)
        .unwrap();
    assert!(stats.loss.is_finite(), "{stats:?}");
    let after = snapshot(&lora);
    assert_ne!(before, after, "the f32 adapters train over f16 weights");
    assert!(base.all_vars().iter().all(|v| v.dtype() == DType::F16));
}

fn owned_batches(n: usize, seed: u64, dtype: DType) -> Vec<dgs::train::OwnedBatch> {
    let (pixels, captions, labels) = data(n, seed);
    let pixels = pixels.to_dtype(dtype).unwrap();
    (0..n / 16)
        .map(|b| dgs::train::OwnedBatch {
            pixels: pixels.narrow(0, b * 16, 16).unwrap(),
            captions: captions.narrow(0, b * 16, 16).unwrap(),
            labels: labels.narrow(0, b * 16, 16).unwrap(),
        })
        .collect()
}

fn random_detector(dtype: DType, tag: &str) -> (dgs::train::Detector, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("dgs-det-{tag}-{}", std::process::id()));
    dgs::clip::write_random_folder(&dir, &ClipConfig::tiny(), 7, &["a", "photo"]).unwrap();
    let lora = LoraConfig {
        rank: 4,
        alpha: 4.0,
        dropout: 0.0,
        scaling: LoraScaling::Official,
    };
    let det = dgs::train::Detector::from_hf(&dir, dtype, &dev(), lora).unwrap();
    (det, dir)
}

fn values(vars: &std::collections::BTreeMap<String, Var>) -> Vec<Vec<f32>> {
    vars.values()
        .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
fn random_folders_are_seeded_and_count_their_bytes_once() {
    let (a, dir_a) = random_detector(DType::F32, "a");
    let (b, dir_b) = random_detector(DType::F16, "b");
    let file = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(file(&dir_a), file(&dir_b), "same seed, same bytes");
    let pa = a.parameter_bytes();
    let pb = b.parameter_bytes();
    assert!(pa.base > 0 && pa.base == 2 * pb.base, "{pa:?} {pb:?}");
    let stored: usize = candle_core::safetensors::load(dir_a.join("model.safetensors"), &dev())
        .unwrap()
        .values()
        .map(|t| t.elem_count() * 4)
        .sum();
    assert_eq!(pa.base, stored, "every stored tensor is held exactly once");
    assert_eq!(pa.lora, pb.lora, "adapters stay f32 over f16 weights");
    for d in [dir_a, dir_b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn loss_scaling_skips_overflowing_steps_and_adapts() {
    use dgs::train::{LossScaler, ScaleDecision};
    let mut s = LossScaler {
        growth_interval: 3,
        ..LossScaler::default()
    };
    assert_eq!(s.update(false).unwrap(), ScaleDecision::Skip);
    assert_eq!(s.scale, 32768.0);
    for _ in 0..2 {
        assert_eq!(s.update(true).unwrap(), ScaleDecision::Apply(1.0 / 32768.0));
    }
    assert_eq!(
        s.scale, 32768.0,
        "grows only after growth_interval good steps"
    );
    s.update(true).unwrap();
    assert_eq!(s.scale, 65536.0);
    let e = (0..LossScaler::MAX_SKIPS_IN_A_ROW)
        .map(|_| s.update(false))
        .find_map(Result::err)
        .expect("endless overflow stops training");
    assert!(e.contains("non-finite"), "{e}");
}

/// f16 compute with dynamic loss scaling: a scale far too large overflows the f16 activation
/// gradients, those steps are skipped with nothing updated, the scale falls, and training then
/// learns the separable set like f32 does.
#[test]
fn f16_training_with_loss_scaling_learns() {
    let (det, dir) = random_detector(DType::F16, "f16");
    let cfg = Stage2Config {
        lr: 3e-3,
        ..Default::default()
    };
    let vars = det.trainables(dgs::train::Stage::Two);
    let start = values(&vars);
    let mut trainer = Stage2Trainer::new(vars.clone(), cfg)
        .unwrap()
        .with_loss_scaling(dgs::train::LossScaler {
            scale: 2f64.powi(40),
            ..Default::default()
        });
    let batches = owned_batches(64, 2, DType::F16);
    let mut first = Vec::new();
    let mut skipped_first = 0;
    trainer
        .epoch(&det, batches.iter().take(1).cloned().map(Ok), |s| {
            first.push(*s)
        })
        .unwrap();
    if first[0].skipped {
        skipped_first += 1;
        assert_eq!(values(&vars), start, "a skipped step changes nothing");
    }
    assert_eq!(skipped_first, 1, "2^40 overflows f16");
    let mut last = dgs::train::EpochSummary::default();
    for _ in 0..60 {
        last = trainer
            .epoch(&det, batches.iter().cloned().map(Ok), |_| {})
            .unwrap();
        if last.accuracy > 0.97 && last.skipped == 0 {
            break;
        }
    }
    let scale = trainer.scaler.unwrap().scale;
    assert!(scale < 2f64.powi(40) && scale >= 1.0, "{scale}");
    assert!(last.accuracy > 0.95, "{last:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A NaN loss stops training with a message; the checkpoint written before it still restores
/// the run exactly.
#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_checkpoint() {
    let (det, dir) = random_detector(DType::F32, "nan");
    let vars = det.trainables(dgs::train::Stage::Two);
    let mut trainer = Stage2Trainer::new(vars.clone(), Stage2Config::default()).unwrap();
    let batches = owned_batches(32, 3, DType::F32);
    trainer
        .epoch(&det, batches.iter().cloned().map(Ok), |_| {})
        .unwrap();
    let ckpt = dir.join("last.safetensors");
    let run = serde_json::json!({"epoch": 1});
    det.save_checkpoint(&ckpt, &trainer.opt, &run).unwrap();
    let saved = values(&det.all_trainables());
    let mut poisoned = batches[0].clone();
    poisoned.pixels = (poisoned.pixels * f64::NAN).unwrap();
    let e = trainer
        .epoch(&det, [Ok(poisoned)], |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("loss is NaN"), "{e}");
    assert_eq!(values(&det.all_trainables()), saved, "nothing was updated");

    let (fresh, dir2) = random_detector(DType::F32, "nan2");
    let loaded = fresh.restore_checkpoint(&ckpt, &dev()).unwrap();
    assert_eq!(loaded.step, 2);
    assert_eq!(loaded.config, run);
    assert_eq!(values(&fresh.all_trainables()), saved);
    for d in [dir, dir2] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// The CPU's one-pass Adam (f32 parameters) against the tensor-op form the other devices run
/// (taken here by f64 parameters), over steps with loss scaling and uneven sizes.
#[test]
fn cpu_adam_pass_equals_the_tensor_form() {
    let mut rng = dgs::surgery::rng::SplitMix64::new(17);
    let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.normal()).collect() };
    let sizes = [1usize, 7, 40_000];
    let start: Vec<Vec<f64>> = sizes.iter().map(|n| draw(*n)).collect();
    let grads: Vec<Vec<Vec<f64>>> = (0..4)
        .map(|_| sizes.iter().map(|n| draw(*n)).collect())
        .collect();
    let run = |dtype: DType| -> Vec<Vec<f64>> {
        let vars: Vec<Var> = start
            .iter()
            .map(|v| {
                Var::from_tensor(
                    &Tensor::new(v.as_slice(), &dev())
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        let params = vars
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("p{i}"), v.clone()))
            .collect();
        let cfg = dgs::train::AdamConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let mut adam = dgs::train::Adam::new(params, cfg).unwrap();
        for (step, g) in grads.iter().enumerate() {
            // Σ p ⊙ g has gradient g.
            let mut loss = Tensor::zeros((), dtype, &dev()).unwrap();
            for (v, g) in vars.iter().zip(g) {
                let g = Tensor::new(g.as_slice(), &dev())
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                loss = (loss + (v.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
            }
            let grads = loss.backward().unwrap();
            match step % 2 {
                0 => adam.step(&grads).unwrap(),
                _ => adam.step_scaled(&grads, 0.5).unwrap(),
            }
        }
        vars.iter()
            .map(|v| {
                v.as_tensor()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    };
    let (cpu_pass, tensor_form) = (run(DType::F32), run(DType::F64));
    for (a, b) in cpu_pass.iter().zip(&tensor_form) {
        for (x, y) in a.iter().zip(b) {
            assert_relative_eq!(*x, *y, epsilon = 1e-6, max_relative = 1e-5);
        }
    }
}
