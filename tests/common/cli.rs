//! Running the `dgs` binary from the tests on tiny generated data sets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dgs::data::synthetic::{Family, fake, real};
use dgs::surgery::rng::SplitMix64;

/// Run the binary and wait for it.
pub fn dgs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgs"))
        .args(args)
        .output()
        .expect("the dgs binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exit code 2 and `needle` in what the user sees.
pub fn assert_fails_with(o: &Output, needle: &str) {
    let all = format!("{}\n{}", stdout(o), stderr(o));
    assert_eq!(o.status.code(), Some(2), "{all}");
    assert!(all.contains(needle), "`{needle}` not in:\n{all}");
}

/// A line of stderr names `file` with every one of `words` (a file reported with its reason).
pub fn assert_reported(o: &Output, file: &str, words: &[&str]) {
    let err = stderr(o);
    assert!(
        err.lines()
            .any(|l| l.contains(file) && words.iter().all(|w| l.contains(w))),
        "no line with {file} and {words:?} in:\n{err}"
    );
}

/// A fresh, empty temporary folder for this test process.
pub fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dgs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` real and `n` fake PNGs under `dir/{0_real,1_fake}`.
pub fn write_split(dir: &Path, n: u64) {
    for (label, class) in [(0u8, "0_real"), (1, "1_fake")] {
        let d = dir.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            let mut rng = SplitMix64::new(100 * u64::from(label) + i);
            let (img, _) = match label {
                0 => real(96, &mut rng),
                _ => fake(Family::Upsampling, 96, &mut rng),
            };
            img.save(d.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// A quick training run: one epoch per stage, batch 4, no LoRA dropout, one fallback caption.
pub fn train_args(data: &Path, model: &Path, out: &Path) -> Vec<String> {
    [
        "train",
        "--data",
        s(data),
        "--model",
        s(model),
        "--out",
        s(out),
        "--caption-fallback",
        "a photo",
        "--stage1-epochs",
        "1",
        "--stage2-epochs",
        "1",
        "--batch-size",
        "4",
        "--lora-dropout",
        "0",
        "--quiet",
    ]
    .map(String::from)
    .to_vec()
}

/// Owned arguments as the `&str`s [`dgs`] takes.
pub fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
