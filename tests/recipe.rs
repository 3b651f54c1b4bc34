//! The paper's recipe as its README writes it: `--classes` picks class folders of one data root,
//! the captions are found where the official code looks for them, and `eval --subsets` picks
//! subsets.

mod common;

use std::path::Path;

use common::cli::{assert_fails_with, dgs, refs, s, stderr, stdout, tmp, train_args, write_split};
use dgs::clip::{ClipConfig, write_random_folder};
use dgs::data::synthetic::CAPTION_WORDS;

/// `<root>/train/{car,cat,horse}/{0_real,1_fake}` (2 + 2 images each) and, beside `<root>`, the
/// captions JSON at the official location `<root>_text/train.json`, keyed by the authors' paths.
fn aigibench_like(root: &Path) -> std::path::PathBuf {
    let train = root.join("train");
    let mut map = serde_json::Map::new();
    for class in ["car", "cat", "horse"] {
        write_split(&train.join(class), 2);
        for label in ["0_real", "1_fake"] {
            for i in 0..2 {
                let key = format!("/authors/AIGIBench/train/{class}/{label}/{i}.png");
                map.insert(key, format!("a photo of a {class}").into());
            }
        }
    }
    let mut text_dir = root.as_os_str().to_owned();
    text_dir.push("_text");
    let text_dir = std::path::PathBuf::from(text_dir);
    std::fs::create_dir_all(&text_dir).unwrap();
    let captions = text_dir.join("train.json");
    std::fs::write(&captions, serde_json::Value::Object(map).to_string()).unwrap();
    train
}

#[test]
fn classes_and_the_official_captions_location() {
    let root = tmp("recipe");
    let model = root.join("model");
    write_random_folder(&model, &ClipConfig::demo(), 5, CAPTION_WORDS).unwrap();
    let train = aigibench_like(&root.join("AIGIBench"));
    let out = root.join("run");

    let mut a = train_args(&train, &model, &out);
    let fallback = a.iter().position(|x| x == "--caption-fallback").unwrap();
    a.drain(fallback..fallback + 2);
    a.extend(["--classes".into(), "horse,car".into()]);
    let o = dgs(&refs(&a));
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let official = root.join("AIGIBench_text").join("train.json");
    let official = std::fs::canonicalize(official).unwrap();
    assert!(
        stderr(&o).contains(&format!(
            "captions: {} (the official location)",
            official.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("training on 8 images (2 subsets)"),
        "exactly the two classes' images: {}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("no caption"), "{}", stderr(&o));

    // An unknown class names the ones there are.
    let mut a = train_args(&train, &model, &root.join("run2"));
    a.extend(["--classes".into(), "car,dog".into()]);
    assert_fails_with(&dgs(&refs(&a)), "`dog`");
    assert_fails_with(&dgs(&refs(&a)), "car, cat, horse");

    // Without captions anywhere, the error says where it looked.
    let bare = root.join("bare");
    write_split(&bare.join("car"), 2);
    let mut a = train_args(&bare, &model, &root.join("run3"));
    let fallback = a.iter().position(|x| x == "--caption-fallback").unwrap();
    a.drain(fallback..fallback + 2);
    assert_fails_with(&dgs(&refs(&a)), "_text/bare.json");

    // `eval --subsets`: the chosen subsets only, in the order given.
    let ckpt = out.join("checkpoint.safetensors");
    let o = dgs(&[
        "eval",
        "--data",
        s(&train),
        "--subsets",
        "horse,cat",
        "--model",
        s(&model),
        "--checkpoint",
        s(&ckpt),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(rows, ["horse", "cat", "mean"], "{table}");
    std::fs::remove_dir_all(root).unwrap();
}
