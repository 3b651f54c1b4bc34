//! Bad input as a new user meets it: each test is one reported defect, run through the `dgs`
//! binary on tiny generated files, asserting the message the user sees as well as the exit code.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::cli::{
    assert_fails_with, assert_reported, dgs, refs, s, stderr, stdout, tmp, train_args, write_split,
};
use dgs::clip::{ClipConfig, write_random_folder};
use dgs::data::synthetic::CAPTION_WORDS;
use dgs::surgery::rng::SplitMix64;
use image::{Rgb, RgbImage};

/// A tiny model folder, a data set and a trained checkpoint, made once for the whole file.
struct Trained {
    model: PathBuf,
    data: PathBuf,
    checkpoint: PathBuf,
}

fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let root = tmp("trained");
        let model = root.join("model");
        write_random_folder(&model, &ClipConfig::demo(), 5, CAPTION_WORDS).unwrap();
        let data = root.join("data");
        write_split(&data, 4);
        let out = root.join("run");
        let o = dgs(&refs(&train_args(&data, &model, &out)));
        assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
        Trained {
            model,
            data,
            checkpoint: out.join("checkpoint.safetensors"),
        }
    })
}

/// `dgs detect` with the shared model on `inputs` (plus `extra` options).
fn detect(inputs: &[&Path], extra: &[&str]) -> Output {
    let t = trained();
    let mut args = vec!["detect"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend([
        "--model",
        s(&t.model),
        "--checkpoint",
        s(&t.checkpoint),
        "--quiet",
    ]);
    args.extend(extra);
    dgs(&args)
}

fn write_png_rows(path: &Path, width: u32, height: u32) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), width, height);
    enc.set_color(png::ColorType::Rgb);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&vec![7u8; (width * height * 3) as usize])
        .unwrap();
}

// 1. Extreme aspect ratios: the guard bounds what the whole pipeline would allocate (a 1-px-high
//    image stretched to 224 px), refusing from the header; the other inputs still get scores.
#[test]
fn extreme_aspect_ratios_are_refused_before_any_large_allocation() {
    let d = tmp("aspect");
    write_png_rows(&d.join("wide.png"), 1_000_000, 1);
    write_png_rows(&d.join("wider.png"), 4_000_000, 1);
    let good = trained().data.join("0_real/0.png");
    let o = detect(&[&d.join("wide.png"), &d.join("wider.png"), &good], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("0.png"), "the good file is scored");
    for name in ["wide.png", "wider.png"] {
        assert_reported(&o, name, &["stretch", "over the limit"]);
    }
    std::fs::remove_dir_all(d).unwrap();
}

fn digest(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

// 2. No command writes over its own inputs.
#[test]
fn export_refuses_to_write_over_its_model() {
    let t = trained();
    let copy = tmp("export-model");
    for e in std::fs::read_dir(&t.model).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
    }
    let before = digest(&copy);
    // The same folder, and another spelling of it.
    let alias = copy.join("..").join(copy.file_name().unwrap());
    for out in [&copy, &alias] {
        let args = [
            "export",
            "--model",
            s(&copy),
            "--checkpoint",
            s(&t.checkpoint),
            "--out",
            s(out),
        ];
        assert_fails_with(&dgs(&args), "would write over");
        assert_eq!(digest(&copy), before, "the model folder is untouched");
    }
    std::fs::remove_dir_all(copy).unwrap();
}

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut rng = SplitMix64::new(9);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let n = (rng.next_u64() % 40) as u8;
        Rgb([(x % 200) as u8 + n, (y % 200) as u8, 90 + n])
    });
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

// 3. A JPEG cut short is a broken file (per file, in detect and eval), unless asked otherwise.
#[test]
fn truncated_jpegs_are_reported_unless_allowed() {
    let d = tmp("truncated");
    let whole = jpeg_bytes(320, 256);
    std::fs::write(d.join("whole.jpg"), &whole).unwrap();
    std::fs::write(d.join("cut.jpg"), &whole[..whole.len() / 2]).unwrap();
    let o = detect(&[&d.join("whole.jpg"), &d.join("cut.jpg")], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("whole.jpg") && !stdout(&o).contains("cut.jpg"));
    assert_reported(&o, "cut.jpg", &["truncated"]);
    let o = detect(&[&d.join("cut.jpg")], &["--allow-truncated"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("cut.jpg"));

    // In an evaluation set, the same file is listed as skipped with the reason.
    let t = trained();
    let eval_data = d.join("eval");
    write_split(&eval_data, 2);
    std::fs::write(eval_data.join("1_fake/cut.jpg"), &whole[..whole.len() / 3]).unwrap();
    let o = dgs(&[
        "eval",
        "--data",
        s(&eval_data),
        "--model",
        s(&t.model),
        "--checkpoint",
        s(&t.checkpoint),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_reported(&o, "cut.jpg", &["truncated"]);
    std::fs::remove_dir_all(d).unwrap();
}

// 4. Runs that cannot mean anything are errors, with what is missing.
#[test]
fn runs_that_cannot_mean_anything_are_errors() {
    let t = trained();
    let d = tmp("meaningless");
    // `extra` holds (option, value) pairs replacing those of `train_args`.
    let train = |data: &Path, extra: &[(&str, &str)]| {
        let mut a = train_args(data, &t.model, &d.join("out"));
        for (option, value) in extra {
            let at = a.iter().position(|x| x == option).unwrap();
            a[at + 1] = value.to_string();
        }
        a.push("--overwrite".into());
        dgs(&refs(&a))
    };

    let broken = d.join("broken");
    for class in ["0_real", "1_fake"] {
        std::fs::create_dir_all(broken.join(class)).unwrap();
        for i in 0..3 {
            std::fs::write(broken.join(class).join(format!("{i}.png")), b"no").unwrap();
        }
    }
    assert_fails_with(&train(&broken, &[]), "no usable training image");

    let one_class = d.join("one-class");
    write_split(&one_class, 2);
    std::fs::remove_dir_all(one_class.join("1_fake")).unwrap();
    assert_fails_with(&train(&one_class, &[]), "no fake images");

    let zero = [("--stage1-epochs", "0"), ("--stage2-epochs", "0")];
    assert_fails_with(&train(&t.data, &zero), "nothing to train");

    // Captions for other images only: no training image has one.
    let captions = d.join("captions.json");
    std::fs::write(&captions, r#"{"elsewhere/0_real/x.png": "a cat"}"#).unwrap();
    let mut a = train_args(&t.data, &t.model, &d.join("out"));
    let fallback = a.iter().position(|x| x == "--caption-fallback").unwrap();
    a.drain(fallback..fallback + 2);
    a.extend([
        "--captions".into(),
        s(&captions).into(),
        "--overwrite".into(),
    ]);
    assert_fails_with(&dgs(&refs(&a)), "no training image has a caption");

    let trained_args = |data: &Path| {
        vec![
            "--model".to_string(),
            s(&t.model).into(),
            "--checkpoint".into(),
            s(&t.checkpoint).into(),
            "--quiet".into(),
            "--data".into(),
            s(data).into(),
        ]
    };
    let mut eval = vec!["eval".to_string()];
    eval.extend(trained_args(&broken));
    assert_fails_with(&dgs(&refs(&eval)), "no image could be scored");

    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = detect(&[&empty], &[]);
    assert_fails_with(&o, "no images found");

    // One class in an evaluation subset: a warning, and AP undefined rather than 100.
    let mut eval = vec!["eval".to_string()];
    eval.extend(trained_args(&one_class));
    eval.extend(["--out".into(), s(&d.join("report")).into()]);
    let o = dgs(&refs(&eval));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning") && stderr(&o).contains("AP is undefined"),
        "{}",
        stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("report").join("report.json")).unwrap(),
    )
    .unwrap();
    assert!(
        report["rows"][0]["metrics"]["average_precision"].is_null(),
        "{report}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

// 5. A caption key that shares only `0_real/0.png` with an image of a nested data set is not
//    that image's caption.
#[test]
fn captions_must_name_the_data_sets_folders() {
    let t = trained();
    let d = tmp("captions");
    let data = d.join("data");
    write_split(&data.join("small").join("upsampling"), 2);
    write_split(&data.join("small").join("blur"), 2);
    let mut map = serde_json::Map::new();
    for sub in ["upsampling", "blur"] {
        for class in ["0_real", "1_fake"] {
            for i in 0..2 {
                map.insert(
                    format!("/authors/data/small/{sub}/{class}/{i}.png"),
                    format!("{sub} {class} {i}").into(),
                );
            }
        }
    }
    // One image without a key of its own; a key sharing only `1_fake/extra.png` with it is
    // another data set's image, not this one.
    std::fs::copy(
        data.join("small/blur/1_fake/1.png"),
        data.join("small/blur/1_fake/extra.png"),
    )
    .unwrap();
    map.insert("elsewhere/1_fake/extra.png".into(), "someone else's".into());
    let captions = d.join("captions.json");
    std::fs::write(&captions, serde_json::Value::Object(map).to_string()).unwrap();
    let mut a = train_args(&data, &t.model, &d.join("out"));
    let fallback = a.iter().position(|x| x == "--caption-fallback").unwrap();
    a.drain(fallback..fallback + 2);
    a.extend(["--captions".into(), s(&captions).into()]);
    let o = dgs(&refs(&a));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_reported(&o, "blur/1_fake/extra.png", &["no caption"]);
    std::fs::remove_dir_all(d).unwrap();
}

// 6a. A closed pipe ends `detect` quietly.
#[test]
fn detect_into_a_closed_pipe_exits_quietly() {
    let t = trained();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgs"))
        .args([
            "detect",
            s(&t.data),
            "--model",
            s(&t.model),
            "--checkpoint",
            s(&t.checkpoint),
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
}

// 6b. A symlink loop is followed once.
#[cfg(unix)]
#[test]
fn symlink_loops_are_followed_once() {
    let d = tmp("loop");
    let img = trained().data.join("0_real/0.png");
    std::fs::copy(&img, d.join("a.png")).unwrap();
    std::os::unix::fs::symlink(&d, d.join("again")).unwrap();
    let o = detect(&[&d], &[]);
    let scored: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(scored.len(), 1, "{scored:?}");
    assert!(stderr(&o).contains("again") && stderr(&o).contains("loop"));
    std::fs::remove_dir_all(d).unwrap();
}

// 6c. An absurd prefetch is an option error, not a panic.
#[test]
fn absurd_prefetch_is_refused() {
    let t = trained();
    let d = tmp("prefetch");
    let mut a = train_args(&t.data, &t.model, &d.join("out"));
    a.extend(["--prefetch".into(), u64::MAX.to_string()]);
    assert_fails_with(&dgs(&refs(&a)), "--prefetch");
    std::fs::remove_dir_all(d).unwrap();
}

fn with_tensor_changed(model: &Path, to: &Path, name: &str, f: impl Fn(f32) -> f32) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(model.join(file), to.join(file)).unwrap();
    }
    let dev = candle_core::Device::Cpu;
    let mut all = candle_core::safetensors::load(model.join("model.safetensors"), &dev).unwrap();
    let t = &all[name];
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let v: Vec<f32> = v.into_iter().map(&f).collect();
    let changed = candle_core::Tensor::from_vec(v, t.shape(), &dev).unwrap();
    all.insert(name.into(), changed);
    candle_core::safetensors::save(&all, to.join("model.safetensors")).unwrap();
}

// 6d. NaN weights are an error naming the tensor, not `p_fake: null`.
#[test]
fn non_finite_weights_name_the_tensor() {
    let t = trained();
    let d = tmp("nan");
    let name = "vision_model.encoder.layers.1.mlp.fc1.weight";
    with_tensor_changed(&t.model, &d, name, |_| f32::NAN);
    let img = t.data.join("0_real/0.png");
    let o = dgs(&[
        "detect",
        s(&img),
        "--model",
        s(&d),
        "--checkpoint",
        s(&t.checkpoint),
    ]);
    assert_fails_with(&o, name);
    assert!(stderr(&o).contains("NaN"), "{}", stderr(&o));
    std::fs::remove_dir_all(d).unwrap();
}

// 7a. Corrupt weight files are named, with what is wrong in our words.
#[test]
fn corrupt_safetensors_files_say_so() {
    let t = trained();
    let d = tmp("corrupt");
    let model = d.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(t.model.join(file), model.join(file)).unwrap();
    }
    let weights = std::fs::read(t.model.join("model.safetensors")).unwrap();
    std::fs::write(
        model.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let ckpt = std::fs::read(&t.checkpoint).unwrap();
    let bad_ckpt = d.join("checkpoint.safetensors");
    std::fs::write(&bad_ckpt, &ckpt[..40]).unwrap();
    let img = t.data.join("0_real/0.png");
    let o = dgs(&[
        "detect",
        s(&img),
        "--model",
        s(&model),
        "--checkpoint",
        s(&t.checkpoint),
    ]);
    assert_fails_with(&o, "not a valid safetensors file (truncated or corrupt)");
    assert!(stderr(&o).contains(s(&model.join("model.safetensors"))));
    let o = dgs(&[
        "detect",
        s(&img),
        "--model",
        s(&t.model),
        "--checkpoint",
        s(&bad_ckpt),
    ]);
    assert_fails_with(&o, "not a valid safetensors file (truncated or corrupt)");
    assert!(stderr(&o).contains(s(&bad_ckpt)));
    std::fs::remove_dir_all(d).unwrap();
}

// 7b. Resume and model mismatches name what differs; a finished run is not overwritten.
#[test]
fn mismatches_name_what_differs_and_runs_are_not_overwritten() {
    let t = trained();
    let d = tmp("mismatch");
    let out = d.join("run");
    let o = dgs(&refs(&train_args(&t.data, &t.model, &out)));
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = out.join("checkpoint.safetensors");
    let before = std::fs::read(&ckpt).unwrap();

    assert_fails_with(
        &dgs(&refs(&train_args(&t.data, &t.model, &out))),
        "--overwrite",
    );
    assert_eq!(std::fs::read(&ckpt).unwrap(), before);

    let mut a = train_args(&t.data, &t.model, &out);
    a.extend(["--resume", s(&ckpt), "--lambda", "0.5"].map(String::from));
    let o = dgs(&refs(&a));
    assert_fails_with(&o, "lambda");
    assert!(stderr(&o).contains("0.2") && stderr(&o).contains("0.5"));

    // A model of another size: the message says which dimension.
    let other = d.join("other-model");
    let mut cfg = ClipConfig::demo();
    cfg.vision_config.tower.intermediate_size = 96;
    write_random_folder(&other, &cfg, 5, CAPTION_WORDS).unwrap();
    let img = t.data.join("0_real/0.png");
    let o = dgs(&[
        "detect",
        s(&img),
        "--model",
        s(&other),
        "--checkpoint",
        s(&ckpt),
    ]);
    assert_fails_with(&o, "intermediate_size");
    assert!(stderr(&o).contains("128") && stderr(&o).contains("96"));
    std::fs::remove_dir_all(d).unwrap();
}

// 7c. SIGINT: the epochs done so far were printed as they ended, and the last line says where the
//     last checkpoint is.
#[cfg(unix)]
#[test]
fn an_interrupted_run_says_where_its_checkpoint_is() {
    let t = trained();
    let d = tmp("sigint");
    let out = d.join("run");
    let mut a = train_args(&t.data, &t.model, &out);
    let at = a.iter().position(|x| x == "--stage1-epochs").unwrap();
    a[at + 1] = "1000".into();
    let child = Command::new(env!("CARGO_BIN_EXE_dgs"))
        .args(&a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let start = std::time::Instant::now();
    while !ckpt.exists() && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ckpt.exists(), "no checkpoint after 2 minutes");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("stage 1 epoch 1/1000"),
        "{}",
        stdout(&o)
    );
    let last = stderr(&o).lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains("interrupted") && last.contains(s(&ckpt)),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(d).unwrap();
}

// 8. Help: every option described, the documented range forms parse, exit codes in `--help`,
//    and `bench step` on a CPU build says what to pass.
#[test]
fn help_describes_every_option_and_its_forms_parse() {
    let o = dgs(&["train", "--help"]);
    let help = stdout(&o);
    let mut undocumented = Vec::new();
    let lines: Vec<&str> = help.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let opt = l.trim_start();
        if !opt.starts_with("--") || opt.starts_with("--help") {
            continue;
        }
        let next = lines.get(i + 1).map_or("", |n| n.trim());
        if next.is_empty() || next.starts_with("--") || next.starts_with('[') {
            undocumented.push(opt.to_string());
        }
    }
    assert!(undocumented.is_empty(), "no description: {undocumented:?}");

    let t = trained();
    let d = tmp("forms");
    let mut a = train_args(&t.data, &t.model, &d.join("out"));
    a.extend(
        [
            "--blur-prob",
            "0.5",
            "--blur-sig",
            "0,3",
            "--jpg-prob",
            "0.5",
            "--jpg-qual",
            "30,100",
        ]
        .map(String::from),
    );
    let o = dgs(&refs(&a));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut a = train_args(&t.data, &t.model, &d.join("out2"));
    a.extend(["--blur-sig", "1.5", "--jpg-qual", "75"].map(String::from));
    let o = dgs(&refs(&a));
    assert!(o.status.success(), "single values: {}", stderr(&o));

    let o = dgs(&["--help"]);
    assert!(stdout(&o).contains("Exit codes"), "{}", stdout(&o));
    if !cfg!(feature = "cuda") {
        let o = dgs(&["bench", "step"]);
        assert_fails_with(&o, "--device cpu");
    }
    std::fs::remove_dir_all(d).unwrap();
}
