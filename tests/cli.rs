//! The `dgs` command line end to end on a temporary folder: train (with a broken file in the
//! data), resume, evaluate, detect good and broken files, export; and clear errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dgs::clip::{Clip, ClipConfig, write_random_folder};
use dgs::data::synthetic::{CAPTION_WORDS, Family, fake, real};
use dgs::surgery::rng::SplitMix64;

fn dgs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgs"))
        .args(args)
        .output()
        .expect("the dgs binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Fixture {
    root: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

fn fixture() -> Fixture {
    let root = std::env::temp_dir().join(format!("dgs-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let model = root.join("model");
    write_random_folder(&model, &ClipConfig::demo(), 5, CAPTION_WORDS).unwrap();
    let data = root.join("data");
    for (label, class) in [(0u8, "0_real"), (1, "1_fake")] {
        let dir = data.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..8 {
            let mut rng = SplitMix64::new(100 * u64::from(label) + i);
            let (img, _) = match label {
                0 => real(128, &mut rng),
                _ => fake(Family::Upsampling, 128, &mut rng),
            };
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(data.join("1_fake/broken.png"), b"not a png").unwrap();
    Fixture { root, model, data }
}

fn train_args<'a>(f: &'a Fixture, out: &'a str, stage2: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        s(&f.data),
        "--model",
        s(&f.model),
        "--out",
        out,
        "--caption-fallback",
        "a photo",
        "--stage1-epochs",
        "1",
        "--stage2-epochs",
        stage2,
        "--batch-size",
        "8",
        "--lora-dropout",
        "0",
        "--lr",
        "1e-3",
        "--quiet",
    ]
}

fn params(ckpt: &Path) -> Vec<(String, Vec<f32>)> {
    let loaded = dgs::train::checkpoint::load(ckpt, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = loaded
        .params
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn the_command_line_end_to_end() {
    let f = fixture();
    let out_a = f.root.join("run-a");
    let o = dgs(&train_args(&f, s(&out_a), "2"));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("stage 2 epoch 2") && stdout.contains("features kept"),
        "{stdout}"
    );
    assert!(
        stderr.contains("broken.png") && stderr.contains("skipped"),
        "{stderr}"
    );
    let ckpt = out_a.join("checkpoint.safetensors");
    for name in ["history.json", "loss.png", "forgetting.png"] {
        assert!(out_a.join(name).is_file(), "{name}");
    }

    // Resume: one stage-2 epoch, then continue to two — the same weights as the straight run.
    let out_b = f.root.join("run-b");
    assert!(dgs(&train_args(&f, s(&out_b), "1")).status.success());
    let ckpt_b = out_b.join("checkpoint.safetensors");
    let mut resume = train_args(&f, s(&out_b), "2");
    resume.extend(["--resume", s(&ckpt_b)]);
    let o = dgs(&resume);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        params(&ckpt),
        params(&ckpt_b),
        "resume continues the run exactly"
    );
    let mut wrong = train_args(&f, s(&out_b), "2");
    wrong.extend(["--resume", s(&ckpt_b), "--lambda", "0.5"]);
    let o = dgs(&wrong);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("resume with the same options"),
        "{:?}",
        text(&o)
    );

    // Evaluate.
    let eval_dir = f.root.join("eval");
    let o = dgs(&[
        "eval",
        "--data",
        s(&f.data),
        "--model",
        s(&f.model),
        "--checkpoint",
        s(&ckpt),
        "--out",
        s(&eval_dir),
        "--quiet",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("mean") && stdout.contains("AP"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["rows"][0]["metrics"]["n_real"], 8);
    assert!(eval_dir.join("accuracy.png").is_file());

    // Detect: good files give probabilities, every broken one a reason; exit code 1.
    let bad = f.root.join("bad");
    std::fs::create_dir_all(bad.join("folder.png")).unwrap();
    std::fs::write(bad.join("empty.jpg"), b"").unwrap();
    std::fs::write(bad.join("text.png"), b"hello").unwrap();
    let good = f.data.join("0_real/0.png");
    let missing = f.root.join("nope.png");
    let o = dgs(&[
        "detect",
        s(&good),
        s(&bad),
        s(&missing),
        "--model",
        s(&f.model),
        "--checkpoint",
        s(&ckpt),
        "--format",
        "jsonl",
        "--quiet",
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok: Vec<_> = lines.iter().filter(|l| l.get("p_fake").is_some()).collect();
    assert_eq!(ok.len(), 1);
    let p = ok[0]["p_fake"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    let errors: Vec<String> = lines
        .iter()
        .filter_map(|l| Some(format!("{} {}", l["path"], l.get("error")?)))
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    for want in ["folder.png", "empty.jpg", "text.png", "nope.png"] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want}: {errors:?}"
        );
    }
    assert!(stderr.contains("4 of 5 input(s) failed"), "{stderr}");
    let o = dgs(&[
        "detect",
        s(&good),
        "--model",
        s(&f.model),
        "--checkpoint",
        s(&ckpt),
        "--quiet",
    ]);
    assert!(o.status.success());
    assert!(text(&o).0.contains("0.png"));

    // Export: a plain HF folder that loads without adapters.
    let merged = f.root.join("merged");
    let o = dgs(&[
        "export",
        "--model",
        s(&f.model),
        "--checkpoint",
        s(&ckpt),
        "--out",
        s(&merged),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    Clip::load_hf(
        &merged,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
        None,
    )
    .unwrap();

    // The step benchmark runs on the CPU too (timings here mean nothing; the command is checked).
    let bench_json = f.root.join("bench.json");
    let o = dgs(&[
        "bench",
        "step",
        "--models",
        "tiny",
        "--dtypes",
        "f32",
        "--device",
        "cpu",
        "--batch",
        "4",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--json",
        s(&bench_json),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bench_json).unwrap()).unwrap();
    let methods: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["dgs", "dgs-op-chain", "plain-lora"]);
    for r in rows.as_array().unwrap() {
        // Peak resident set on the CPU: at least the process's own code and the model.
        assert!(r["peak_bytes"].as_u64().unwrap() > 1 << 20, "{r}");
        assert!(r["step_ms"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The phases are parts of measured steps: each one positive (an optimiser time found as the
    // difference of two noisy means once came out negative).
    let phases = &rows[0]["phases"];
    for part in [
        "student_forward_ms",
        "forward_ms",
        "backward_ms",
        "optimiser_ms",
    ] {
        let ms = phases[part].as_f64();
        assert!(ms.is_some_and(|ms| ms > 0.0), "{part}: {phases}");
    }
    assert!(rows[1]["phases"].is_null() && rows[2]["phases"].is_null());

    // Clear errors, exit code 2.
    let fails_with = |args: &[&str], needle: &str| {
        let o = dgs(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o).1.contains(needle), "{needle}: {:?}", text(&o));
    };
    let (data, model, root, ckpt) = (s(&f.data), s(&f.model), s(&f.root), s(&ckpt));
    fails_with(
        &[
            "eval",
            "--data",
            data,
            "--model",
            root,
            "--checkpoint",
            ckpt,
        ],
        "config.json",
    );
    let bf16 = [
        "detect",
        s(&good),
        "--model",
        model,
        "--checkpoint",
        ckpt,
        "--dtype",
        "bf16",
    ];
    fails_with(&bf16, "bf16");
    let out = s(&out_b);
    fails_with(
        &["train", "--data", data, "--model", model, "--out", out],
        "--captions",
    );
    std::fs::remove_dir_all(&f.root).unwrap();
}
