//! CLIP with LoRA: the adapters are invisible at init and only in student mode; the teacher never
//! changes; a Hugging Face folder written here loads through the same path as a real one.

mod common;

use approx::assert_abs_diff_eq;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::max_abs_diff;
use dgs::clip::{Clip, ClipConfig, DropoutKey, LoraConfig, LoraScaling, Mode};

fn tiny(lora: &LoraConfig) -> (Clip, VarMap, VarMap) {
    let (base, adapters) = (VarMap::new(), VarMap::new());
    let dev = Device::Cpu;
    let vb = VarBuilder::from_varmap(&base, DType::F32, &dev);
    let lb = VarBuilder::from_varmap(&adapters, DType::F32, &dev);
    let model = Clip::new(ClipConfig::tiny(), vb, Some((lora, lb))).unwrap();
    (model, base, adapters)
}

fn pixels(b: usize, seed: u64) -> Tensor {
    let mut rng = dgs::surgery::rng::SplitMix64::new(seed);
    let v: Vec<f32> = (0..b * 3 * 32 * 32).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(v, (b, 3, 32, 32), &Device::Cpu).unwrap()
}

#[test]
fn adapters_start_invisible_and_only_act_in_student_mode() {
    let cfg = LoraConfig {
        rank: 4,
        alpha: 4.0,
        dropout: 0.5,
        scaling: LoraScaling::Official,
    };
    let (model, _base, adapters) = tiny(&cfg);
    let x = pixels(3, 1);
    let teacher = model.image_features(&x, Mode::Frozen).unwrap();
    assert_eq!(teacher.dims(), &[3, 16]);
    let student = model.image_features(&x, Mode::Student).unwrap();
    assert_eq!(
        max_abs_diff(&teacher, &student),
        0.0,
        "B = 0: LoRA must change nothing"
    );
    // Only q, k, v of each vision layer carry an adapter: 2 layers × 3 × (A, B).
    let names: Vec<String> = adapters.data().lock().unwrap().keys().cloned().collect();
    assert_eq!(names.len(), 12, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("vision_model.encoder.layers.") && n.contains("self_attn"))
    );

    for (name, var) in adapters.data().lock().unwrap().iter() {
        if name.ends_with("lora_B") {
            let t = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
        }
    }
    let student = model.image_features(&x, Mode::Student).unwrap();
    assert!(
        max_abs_diff(&teacher, &student) > 1e-4,
        "a non-zero B must change the student"
    );
    let again = model.image_features(&x, Mode::Frozen).unwrap();
    assert_eq!(
        max_abs_diff(&teacher, &again),
        0.0,
        "the teacher never changes"
    );
    let train = model
        .image_features(&x, Mode::StudentTrain(DropoutKey { seed: 1, step: 0 }))
        .unwrap();
    assert!(
        max_abs_diff(&train, &student) > 0.0,
        "dropout acts on the adapter input in training"
    );
}

#[test]
fn text_features_pool_at_the_end_token() {
    let (model, _, _) = tiny(&LoraConfig::default());
    let ids = Tensor::new(&[[5u32, 17, 999, 0, 0], [7, 8, 9, 10, 999]], &Device::Cpu).unwrap();
    let f = model.text_features(&ids).unwrap();
    assert_eq!(f.dims(), &[2, 16]);
    // Tokens after the end token do not matter (the tower is causal and pools at the end token).
    let ids2 = Tensor::new(&[[5u32, 17, 999, 3, 4], [7, 8, 9, 10, 999]], &Device::Cpu).unwrap();
    assert!(max_abs_diff(&f, &model.text_features(&ids2).unwrap()) < 1e-6);
    let too_long = Tensor::zeros((1, 17), DType::U32, &Device::Cpu).unwrap();
    let e = model.text_features(&too_long).err().unwrap().to_string();
    assert!(e.contains("longer than"), "{e}");
}

#[test]
fn a_hugging_face_folder_loads_through_the_same_path() {
    let (model, base, _) = tiny(&LoraConfig::default());
    let dir = std::env::temp_dir().join(format!("dgs-clip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    base.save(dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&ClipConfig::tiny()).unwrap(),
    )
    .unwrap();
    let loaded = Clip::load_hf(&dir, DType::F32, &Device::Cpu, None).unwrap();
    let x = pixels(2, 2);
    let a = model.image_features(&x, Mode::Frozen).unwrap();
    let b = loaded.image_features(&x, Mode::Frozen).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);

    // Broken folders: the error names the file (and the tensor).
    std::fs::write(dir.join("config.json"), "{\"projection_dim\": 16}").unwrap();
    let e = Clip::load_hf(&dir, DType::F32, &Device::Cpu, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("config.json") && e.contains("vision_config"),
        "{e}"
    );
    let mut wrong = ClipConfig::tiny();
    wrong.vision_config.tower.hidden_size = 48;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&wrong).unwrap(),
    )
    .unwrap();
    let e = Clip::load_hf(&dir, DType::F32, &Device::Cpu, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let e = Clip::load_hf(&dir, DType::F32, &Device::Cpu, None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not found"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configs_are_checked() {
    let mut c = ClipConfig::tiny();
    c.vision_config.patch_size = 7;
    assert!(c.validate().unwrap_err().contains("patch_size"));
    let mut c = ClipConfig::tiny();
    c.text_config.tower.num_attention_heads = 5;
    assert!(c.validate().unwrap_err().contains("num_attention_heads"));
    assert!(ClipConfig::vit_l14().validate().is_ok() && ClipConfig::vit_b32().validate().is_ok());
    assert_eq!(ClipConfig::vit_l14().projection_dim, 768);
}

#[test]
fn legacy_configs_pool_at_the_largest_id() {
    let mut cfg = ClipConfig::tiny();
    cfg.text_config.eos_token_id = 2;
    let vm = VarMap::new();
    let model = Clip::new(
        cfg,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        None,
    )
    .unwrap();
    let a = Tensor::new(&[[5u32, 17, 998, 3, 4]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[[5u32, 17, 998, 9, 1]], &Device::Cpu).unwrap();
    let c = Tensor::new(&[[5u32, 17, 990, 9, 1]], &Device::Cpu).unwrap();
    let (fa, fb, fc) = (
        model.text_features(&a).unwrap(),
        model.text_features(&b).unwrap(),
        model.text_features(&c).unwrap(),
    );
    assert!(
        max_abs_diff(&fa, &fb) < 1e-6,
        "tokens after the largest id do not matter"
    );
    assert!(max_abs_diff(&fa, &fc) > 1e-6);
}

#[test]
fn captions_tokenise_through_a_tokenizer_json() {
    let dir = std::env::temp_dir().join(format!("dgs-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dgs::clip::tokenizer_path(&dir);
    let json = dgs::clip::tiny_tokenizer_json(&["a", "photo", "of", "cat", "dog"], 999);
    std::fs::write(&path, json.to_string()).unwrap();
    let tok = dgs::clip::ClipTokenizer::from_file(&path, 6, 999).unwrap();
    let ids = tok
        .encode_batch(
            &["A photo of a cat", "dog", "a a a a a a a a"],
            &Device::Cpu,
        )
        .unwrap();
    let rows: Vec<Vec<u32>> = ids.to_vec2().unwrap();
    assert_eq!(rows[0], vec![998, 1, 2, 3, 1, 999], "start, words, end");
    assert_eq!(
        rows[1],
        vec![998, 5, 999, 999, 999, 999],
        "padded with the end token"
    );
    assert_eq!(rows[2][5], 999, "a caption cut short keeps its end token");
    let (model, _, _) = tiny(&LoraConfig::default());
    assert_eq!(model.text_features(&ids).unwrap().dims(), &[3, 16]);

    std::fs::write(&path, "{ broken").unwrap();
    let e = dgs::clip::ClipTokenizer::from_file(&path, 6, 999)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lora_scaling_rules() {
    let official = LoraConfig::default();
    assert_eq!(
        official.scaling,
        LoraScaling::Official,
        "the paper's recipe"
    );
    assert_abs_diff_eq!(official.scale(), 6f64.sqrt(), epsilon = 1e-15);
    let peft = LoraConfig {
        scaling: LoraScaling::Peft,
        ..official
    };
    assert_eq!(peft.scale(), 1.0);
    // Checkpoints written before the rule was recorded were trained with alpha / rank.
    let old: LoraConfig =
        serde_json::from_str(r#"{"rank": 4, "alpha": 8.0, "dropout": 0.0}"#).unwrap();
    assert_eq!(old.scaling, LoraScaling::Peft);
    assert_eq!(old.scale(), 2.0);
    let json = serde_json::to_string(&official).unwrap();
    assert!(json.contains(r#""scaling":"official""#), "{json}");
}

/// The merged export folds `s · B A` into the weights with the run's own rule.
#[test]
fn merged_export_equals_the_adapted_student() {
    for scaling in [LoraScaling::Official, LoraScaling::Peft] {
        merged_export_matches(LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            scaling,
        });
    }
}

fn merged_export_matches(cfg: LoraConfig) {
    let (model, base, adapters) = tiny(&cfg);
    for (name, var) in adapters.data().lock().unwrap().iter() {
        if name.ends_with("lora_B") {
            var.set(&Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "dgs-export-{:?}-{}",
        cfg.scaling,
        std::process::id()
    ));
    let (src, dst) = (dir.join("src"), dir.join("merged"));
    std::fs::create_dir_all(&src).unwrap();
    base.save(src.join("model.safetensors")).unwrap();
    std::fs::write(
        src.join("config.json"),
        serde_json::to_string(&ClipConfig::tiny()).unwrap(),
    )
    .unwrap();
    let tensors: std::collections::HashMap<String, Tensor> = adapters
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    dgs::clip::export_merged(&src, &dst, &cfg, &tensors).unwrap();
    let merged = Clip::load_hf(&dst, DType::F32, &Device::Cpu, None).unwrap();
    let x = pixels(2, 9);
    let student = model.image_features(&x, Mode::Student).unwrap();
    let plain = merged.image_features(&x, Mode::Frozen).unwrap();
    assert!(
        max_abs_diff(&student, &plain) < 1e-5,
        "{}",
        max_abs_diff(&student, &plain)
    );
    let teacher = model.image_features(&x, Mode::Frozen).unwrap();
    assert!(
        max_abs_diff(&teacher, &plain) > 1e-4,
        "the export must carry the adapters"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `hidden_act` from config.json picks the MLP's activation; an unknown one is refused with the
/// names that are known.
#[test]
fn hidden_act_is_honoured() {
    let dir = std::env::temp_dir().join(format!("dgs-act-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dgs::clip::write_random_folder(&dir, &ClipConfig::tiny(), 3, &["a", "photo"]).unwrap();
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        text.matches(r#""hidden_act": "quick_gelu""#).count(),
        2,
        "{text}"
    );
    let load = || Clip::load_hf(&dir, DType::F32, &Device::Cpu, None);
    let x = pixels(2, 5);
    let features = |m: &Clip| m.image_features(&x, Mode::Frozen).unwrap();
    let quick = features(&load().unwrap());
    let mut seen = vec![quick];
    for (name, act) in [
        ("gelu", dgs::clip::Activation::Gelu),
        ("gelu_pytorch_tanh", dgs::clip::Activation::GeluTanh),
        ("relu", dgs::clip::Activation::Relu),
    ] {
        std::fs::write(&config, text.replace("quick_gelu", name)).unwrap();
        let model = load().unwrap();
        assert_eq!(model.config.vision_config.tower.hidden_act, act);
        let f = features(&model);
        for other in &seen {
            assert!(
                max_abs_diff(&f, other) > 1e-6,
                "{name} changes the features"
            );
        }
        seen.push(f);
    }
    std::fs::write(&config, text.replace("quick_gelu", "swish")).unwrap();
    let e = load().err().unwrap().to_string();
    assert!(e.contains("swish") && e.contains("quick_gelu"), "{e}");
    // A config without the key (older dgs checkpoints) means quick_gelu.
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["vision_config"]
        .as_object_mut()
        .unwrap()
        .remove("hidden_act");
    let cfg: ClipConfig = serde_json::from_value(json).unwrap();
    assert_eq!(
        cfg.vision_config.tower.hidden_act,
        dgs::clip::Activation::QuickGelu
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
