//! LoRA adapters in peft's format: folders written by peft (scripts/make_peft_fixture.py, on the
//! base weights of tests/fixtures/stage2_tiny.safetensors) load and give peft's student features
//! within 1e-5, with either scaling; ours round-trip and carry peft's names and settings; what
//! dgs has no equivalent for is refused; the CLI exports and starts training from them.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::cli::{assert_fails_with, dgs, refs, s, stderr, tmp, train_args, write_split};
use common::max_abs_diff;
use dgs::clip::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_peft, write_peft};
use dgs::clip::{ClipConfig, LoraConfig, LoraScaling, Mode, write_random_folder};
use dgs::data::synthetic::CAPTION_WORDS;
use dgs::train::Detector;

fn base() -> HashMap<String, Tensor> {
    let all =
        candle_core::safetensors::load("tests/fixtures/stage2_tiny.safetensors", &Device::Cpu)
            .unwrap();
    all.into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("base.")?.to_string(), v)))
        .collect()
}

fn detector(lora: LoraConfig) -> Detector {
    let vb = VarBuilder::from_tensors(base(), DType::F32, &Device::Cpu);
    Detector::new(ClipConfig::tiny(), vb, lora, &Device::Cpu).unwrap()
}

#[test]
fn peft_folders_give_peft_features() {
    for (case, scaling, adapted) in [
        ("plain", LoraScaling::Peft, 8),
        ("rslora", LoraScaling::Official, 12),
    ] {
        let dir = Path::new("tests/fixtures/peft").join(case);
        let peft = read_peft(&dir, &ClipConfig::tiny()).unwrap();
        assert_eq!((peft.rank, peft.alpha, peft.scaling), (4, 8.0, scaling));
        let lora = LoraConfig {
            rank: peft.rank,
            alpha: peft.alpha,
            dropout: 0.0,
            scaling,
        };
        let det = detector(lora);
        assert_eq!(det.load_adapters(&peft.adapters).unwrap(), adapted);
        let expected =
            candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
        let ours = det
            .clip
            .image_features(&expected["pixels"], Mode::Student)
            .unwrap();
        let d = max_abs_diff(&ours, &expected["features"]);
        assert!(d < 1e-5, "{case}: features differ by {d}");
    }
}

#[test]
fn our_adapters_round_trip_in_peft_names() {
    let src = Path::new("tests/fixtures/peft/rslora");
    let peft = read_peft(src, &ClipConfig::tiny()).unwrap();
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        scaling: LoraScaling::Official,
    };
    let out = tmp("peft-out");
    write_peft(&out, &lora, &peft.adapters).unwrap();
    let keys = |dir: &Path| {
        let mut k: Vec<String> =
            candle_core::safetensors::load(dir.join(ADAPTER_WEIGHTS), &Device::Cpu)
                .unwrap()
                .into_keys()
                .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&out), keys(src), "peft's tensor names");
    let config = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap()).unwrap()
    };
    let (ours, theirs) = (config(&out), config(src));
    for field in [
        "peft_type",
        "r",
        "lora_alpha",
        "use_rslora",
        "target_modules",
        "bias",
    ] {
        assert_eq!(ours[field], theirs[field], "{field}");
    }
    let back = read_peft(&out, &ClipConfig::tiny()).unwrap();
    for (k, t) in &peft.adapters {
        assert_eq!(max_abs_diff(t, &back.adapters[k]), 0.0, "{k}");
    }
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn what_dgs_cannot_hold_is_refused() {
    let src = Path::new("tests/fixtures/peft/plain");
    let text = std::fs::read_to_string(src.join(ADAPTER_CONFIG)).unwrap();
    let weights = std::fs::read(src.join(ADAPTER_WEIGHTS)).unwrap();
    let d = tmp("peft-bad");
    let with = |config: &str, tensors: Option<HashMap<String, Tensor>>| {
        std::fs::write(d.join(ADAPTER_CONFIG), config).unwrap();
        match tensors {
            Some(t) => candle_core::safetensors::save(&t, d.join(ADAPTER_WEIGHTS)).unwrap(),
            None => std::fs::write(d.join(ADAPTER_WEIGHTS), &weights).unwrap(),
        }
        read_peft(&d, &ClipConfig::tiny())
            .err()
            .unwrap()
            .to_string()
    };
    let e = with(
        &text.replace("\"use_dora\": false", "\"use_dora\": true"),
        None,
    );
    assert!(e.contains("use_dora"), "{e}");
    let e = with(
        &text.replace("\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 8}"),
        None,
    );
    assert!(e.contains("rank_pattern"), "{e}");
    let text_adapter =
        "base_model.model.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight";
    let mut tensors =
        candle_core::safetensors::load(src.join(ADAPTER_WEIGHTS), &Device::Cpu).unwrap();
    let a = tensors.values().next().unwrap().clone();
    tensors.insert(text_adapter.into(), a);
    let e = with(&text, Some(tensors));
    assert!(
        e.contains(text_adapter) && e.contains("vision layers only"),
        "{e}"
    );
    let e = with(&text.replace("\"r\": 4", "\"r\": 5"), None);
    assert!(e.contains("(rank 5)"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn the_cli_exports_peft_and_trains_from_it() {
    let root = tmp("peft-cli");
    let model = root.join("model");
    write_random_folder(&model, &ClipConfig::demo(), 5, CAPTION_WORDS).unwrap();
    let data = root.join("data");
    write_split(&data, 3);
    let out = root.join("run");
    let o = dgs(&refs(&train_args(&data, &model, &out)));
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = out.join("checkpoint.safetensors");
    let adapters = root.join("adapters");
    let args = [
        "export",
        "--format",
        "peft",
        "--model",
        s(&model),
        "--checkpoint",
    ];
    let o = dgs(&[&args[..], &[s(&ckpt), "--out", s(&adapters)]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let peft = read_peft(&adapters, &ClipConfig::demo()).unwrap();
    assert_eq!((peft.rank, peft.scaling), (6, LoraScaling::Official));

    let mut again = train_args(&data, &model, &root.join("run2"));
    again.extend(["--init-adapters".into(), s(&adapters).into()]);
    let o = dgs(&refs(&again));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("adapters: 12 matrices"),
        "{}",
        stderr(&o)
    );
    let mut wrong = train_args(&data, &model, &root.join("run3"));
    wrong.extend(["--init-adapters", s(&adapters), "--lora-rank", "4"].map(String::from));
    assert_fails_with(&dgs(&refs(&wrong)), "--lora-rank 6");
    std::fs::remove_dir_all(root).unwrap();
}
