//! `dgs import`: a tiny model with the official DGS-Net structure, saved by PyTorch
//! (scripts/make_import_fixture.py) once in training mode and once after `eval()` (LoRA merged
//! into q/k/v), imported and run: its logits, its teacher's and its text features equal
//! PyTorch's within 1e-5; wrong files get clear errors.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::cli::{assert_fails_with, dgs, s, stdout, tmp};
use common::max_abs_diff;
use dgs::clip::openai::{OpenAiError, translate};
use dgs::clip::{LoraConfig, Mode};
use dgs::pipeline::{ImportOptions, import_official, load_detector};

const FIXTURES: &str = "tests/fixtures";

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn import(pth: &str, out: &Path, alpha: f64) -> Result<dgs::pipeline::Imported, String> {
    let opts = ImportOptions {
        lora_alpha: alpha,
        tokenizer: None,
        overwrite: true,
    };
    import_official(&fixture(pth), out, &opts).map_err(|e| e.to_string())
}

#[test]
fn official_checkpoints_import_to_the_same_logits() {
    let dev = Device::Cpu;
    let expected = candle_core::safetensors::load(fixture("official_expected.safetensors"), &dev)
        .expect("fixture present");
    let pixels = &expected["pixels"];
    let ids = expected["ids"].to_dtype(DType::U32).unwrap();
    let root = tmp("import");
    for (pth, merged) in [
        ("official_unmerged.pth", false),
        ("official_merged.pth", true),
    ] {
        let out = root.join(pth);
        let done = import(pth, &out, 6.0).unwrap();
        assert_eq!(done.merged, merged, "{pth}");
        assert_eq!(done.lora.rank, 6);
        // What `eval` and `detect` load.
        let (det, _) = load_detector(
            &out,
            Some(&done.checkpoint),
            LoraConfig::default(),
            DType::F32,
            &dev,
        )
        .unwrap();
        let student = det.clip.image_features(pixels, Mode::Student).unwrap();
        let logits = det.img_fc.logits(&student).unwrap().flatten_all().unwrap();
        let d = max_abs_diff(&logits, &expected["logits"]);
        assert!(d < 1e-5, "{pth}: logits differ by {d}");
        let frozen = det.clip.image_features(pixels, Mode::Frozen).unwrap();
        let teacher = det.teacher.logits(&frozen).unwrap().flatten_all().unwrap();
        let d = max_abs_diff(&teacher, &expected["teacher_logits"]);
        assert!(d < 1e-5, "{pth}: teacher logits differ by {d}");
        let text = det.clip.text_features(&ids).unwrap();
        let d = max_abs_diff(&text, &expected["text_features"]);
        assert!(d < 1e-5, "{pth}: text features differ by {d}");
    }
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn the_command_and_wrong_files() {
    let root = tmp("import-cli");
    let out = root.join("imported");
    let pth = fixture("official_merged.pth");
    let o = dgs(&["import", "--pth", s(&pth), "--out", s(&out)]);
    assert!(o.status.success(), "{:?}", o);
    assert!(stdout(&o).contains("LoRA rank 6") && stdout(&o).contains("merged"));
    for f in ["config.json", "model.safetensors", "checkpoint.safetensors"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // A second import into the same folder needs --overwrite.
    let again = dgs(&["import", "--pth", s(&pth), "--out", s(&out)]);
    assert_fails_with(&again, "--overwrite");
    // The imported run exports like any dgs run.
    let merged = root.join("merged");
    let ckpt = out.join("checkpoint.safetensors");
    let args = [
        "export",
        "--model",
        s(&out),
        "--checkpoint",
        s(&ckpt),
        "--out",
    ];
    let o = dgs(&[&args[..], &[s(&merged)]].concat());
    assert!(o.status.success(), "{o:?}");

    // Another alpha than the merged weights were made with is caught.
    let e = import("official_merged.pth", &root.join("alpha"), 3.0)
        .err()
        .unwrap();
    assert!(e.contains("--lora-alpha"), "{e}");
    // Not a PyTorch checkpoint at all.
    let not_pth = fixture("official_expected.safetensors");
    let o = dgs(&["import", "--pth", s(&not_pth), "--out", s(&root.join("x"))]);
    assert_fails_with(&o, "not a PyTorch checkpoint");
    std::fs::remove_dir_all(root).unwrap();
}

/// The state dict of the merged fixture, to break by hand.
fn state() -> HashMap<String, Tensor> {
    let t = candle_core::pickle::PthTensors::new(fixture("official_merged.pth"), None).unwrap();
    t.tensor_infos()
        .keys()
        .map(|k| (k.clone(), t.get(k).unwrap().unwrap()))
        .collect()
}

#[test]
fn broken_state_dicts_name_the_tensor() {
    let k = "clip_model.visual.transformer.resblocks.0.attn.k_proj";
    let mut missing = state();
    missing.remove("clip_model.visual.ln_post.weight");
    match translate(&missing, "clip_model.").err().unwrap() {
        OpenAiError::Missing(k) => assert_eq!(k, "clip_model.visual.ln_post.weight"),
        e => panic!("{e}"),
    }
    // k's adapter of rank 4 where q's has 6.
    let mut rank = state();
    let (a, b) = (format!("{k}.w_lora_A"), format!("{k}.w_lora_B"));
    let smaller_a = rank[&a].narrow(0, 0, 4).unwrap();
    let smaller_b = rank[&b].narrow(1, 0, 4).unwrap();
    rank.insert(a.clone(), smaller_a);
    rank.insert(b, smaller_b);
    let e = translate(&rank, "clip_model.").err().unwrap().to_string();
    assert!(
        e.contains("LoRA rank 4") && e.contains("6 elsewhere") && e.contains(&a),
        "{e}"
    );
    let mut shape = state();
    let b = "clip_model.visual.transformer.resblocks.0.attn.q_proj.w_lora_B";
    let wrong = Tensor::zeros((64, 5), DType::F32, &Device::Cpu).unwrap();
    shape.insert(b.into(), wrong);
    let e = translate(&shape, "clip_model.").err().unwrap().to_string();
    assert!(e.contains("w_lora_B") && e.contains("[64, 5]"), "{e}");
}
