//! The data pipeline and the metrics: hand-computed metric cases, spectral entropy, patch
//! selection, layouts, captions, decoding of awkward files, transforms and the loader.

use std::path::{Path, PathBuf};

use approx::{abs_diff_eq, assert_abs_diff_eq};
use dgs::data::{
    Augment, Captions, DecodeOptions, Item, Loader, LoaderConfig, MissingCaption, PATCH,
    PatchSelection, Transform, discover, ensure_min_size, gaussian_blur, load_rgb, numpy_argsort,
    patch_entropies, select_patches, selected_indices,
};
use dgs::eval::{average_precision, subset_metrics};
use dgs::surgery::rng::SplitMix64;
use image::{Rgb, RgbImage};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dgs-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn average_precision_matches_hand_computed_cases() {
    // P@1 = 1 (R ½), P@3 = ⅔ (R 1): ½·1 + ½·⅔.
    let ap = average_precision(&[0.9, 0.8, 0.7, 0.6], &[1, 0, 1, 0]);
    assert_abs_diff_eq!(ap, 0.5 + 1.0 / 3.0, epsilon = 1e-12);
    // Three tied at 0.5 enter together: R ⅔, P ⅔; then R 1, P ¾.
    let ap = average_precision(&[0.5, 0.5, 0.5, 0.1], &[1, 0, 1, 1]);
    assert_abs_diff_eq!(ap, 4.0 / 9.0 + 0.25, epsilon = 1e-12);
    // Order inside a tie does not matter.
    let ap2 = average_precision(&[0.5, 0.5, 0.5, 0.1], &[0, 1, 1, 1]);
    assert_abs_diff_eq!(ap, ap2, epsilon = 1e-12);
    assert_abs_diff_eq!(
        average_precision(&[0.2, 0.9], &[1, 1]),
        1.0,
        epsilon = 1e-12
    );
    assert!(
        abs_diff_eq!(
            average_precision(&[0.2, 0.9], &[0, 0]),
            0.0,
            epsilon = 1e-12
        ),
        "no positives: 0 like sklearn"
    );
    // Perfect ranking, and the reverse.
    assert_abs_diff_eq!(
        average_precision(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]),
        1.0,
        epsilon = 1e-12
    );
    let worst = average_precision(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]);
    assert_abs_diff_eq!(worst, 0.5 * (1.0 / 3.0) + 0.5 * 0.5, epsilon = 1e-12);
}

#[test]
fn accuracies_use_a_strict_half_threshold_and_handle_one_class_subsets() {
    let m = subset_metrics(&[0.5, 0.51, 0.2, 0.9], &[0, 0, 1, 1]);
    assert_eq!((m.n_real, m.n_fake), (2, 2));
    assert_abs_diff_eq!(m.accuracy, 0.5, epsilon = 1e-12); // 0.5 → real (correct), 0.51 → fake (wrong), 0.2 wrong, 0.9 right
    assert_eq!(m.real_accuracy, Some(0.5));
    assert_eq!(m.fake_accuracy, Some(0.5));
    let fakes = subset_metrics(&[0.7, 0.2, 0.6], &[1, 1, 1]);
    assert_eq!(fakes.real_accuracy, None);
    assert_abs_diff_eq!(fakes.fake_accuracy.unwrap(), 2.0 / 3.0, epsilon = 1e-12);
    assert_eq!(fakes.average_precision, None, "one class: AP undefined");
}

fn gray_patch(mut f: impl FnMut(usize, usize) -> f64) -> Vec<f64> {
    (0..PATCH * PATCH)
        .map(|i| f(i % PATCH, i / PATCH))
        .collect()
}

#[test]
fn spectral_entropy_of_known_patches() {
    let mut s = dgs::data::SpectralEntropy::new(PATCH);
    // All power in the DC term: zero entropy.
    assert_abs_diff_eq!(s.entropy(&gray_patch(|_, _| 0.7)), 0.0, epsilon = 1e-9);
    assert_abs_diff_eq!(s.entropy(&gray_patch(|_, _| 0.0)), 0.0, epsilon = 1e-9);
    // A 0/1 checkerboard: DC and the (N/2, N/2) term, equal power: exactly one bit.
    let h = s.entropy(&gray_patch(|x, y| ((x + y) % 2) as f64));
    assert_abs_diff_eq!(h, 1.0, epsilon = 1e-9);
    // Zero-mean white noise spreads power over all 1024 terms: close to log₂ 1024 = 10 bits.
    let mut rng = SplitMix64::new(1);
    let h = s.entropy(&gray_patch(|_, _| rng.next_f64() - 0.5));
    assert!(h > 8.0 && h < 10.0, "{h}");
}

/// A 256×256 image of 64 patches, patch `rank` a checkerboard of amplitude growing with
/// `rank` (so its entropy grows with it), placed at a scrambled position.
fn ranked_patches() -> (RgbImage, Vec<usize>) {
    let mut pos: Vec<usize> = (0..64).collect();
    SplitMix64::new(9).shuffle(&mut pos);
    let mut img = RgbImage::new(256, 256);
    for (rank, &p) in pos.iter().enumerate() {
        let amp = 1.0 + rank as f64 * 1.5;
        let (r0, c0) = ((p / 8) * PATCH, (p % 8) * PATCH);
        for y in 0..PATCH {
            for x in 0..PATCH {
                let sign = if (x + y) % 2 == 0 { 1.0 } else { -1.0 };
                let v = (120.0 + sign * amp).round() as u8;
                img.put_pixel((c0 + x) as u32, (r0 + y) as u32, Rgb([v, v, v]));
            }
        }
    }
    (img, pos)
}

#[test]
fn patch_selection_keeps_the_24_lowest_and_25_highest() {
    let (img, pos) = ranked_patches();
    let ent = patch_entropies(&img, PatchSelection::Stretch);
    assert_eq!(ent.len(), 64);
    for w in 0..63 {
        assert!(ent[pos[w]] < ent[pos[w + 1]], "entropy grows with rank");
    }
    let mut want: Vec<usize> = pos[..24].iter().chain(&pos[39..]).copied().collect();
    let mut got = selected_indices(&ent, PatchSelection::Stretch);
    assert_eq!(got[..24], want[..24], "lowest first, in entropy order");
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // The stitched image holds exactly those patches, shuffled, and nothing else.
    let out = select_patches(
        img.clone(),
        &mut SplitMix64::new(3),
        PatchSelection::Stretch,
    );
    assert_eq!(out.dimensions(), (224, 224));
    let tile = |im: &RgbImage, r: usize, c: usize| -> Vec<u8> {
        (0..PATCH)
            .flat_map(|y| (0..PATCH).map(move |x| (x, y)))
            .map(|(x, y)| {
                im.get_pixel((c * PATCH + x) as u32, (r * PATCH + y) as u32)
                    .0[0]
            })
            .collect()
    };
    let mut source: Vec<Vec<u8>> = want.iter().map(|&p| tile(&img, p / 8, p % 8)).collect();
    let mut stitched: Vec<Vec<u8>> = (0..49).map(|i| tile(&out, i / 7, i % 7)).collect();
    let in_order = stitched.clone();
    source.sort();
    stitched.sort();
    assert_eq!(source, stitched);
    let again = select_patches(img, &mut SplitMix64::new(4), PatchSelection::Stretch);
    let other: Vec<Vec<u8>> = (0..49).map(|i| tile(&again, i / 7, i % 7)).collect();
    assert_ne!(in_order, other, "another seed, another arrangement");
}

#[test]
fn small_and_thin_images_are_stretched_to_224_before_selection() {
    assert_eq!(
        ensure_min_size(RgbImage::new(1, 300)).dimensions(),
        (224, 300)
    );
    assert_eq!(
        ensure_min_size(RgbImage::new(100, 50)).dimensions(),
        (224, 224)
    );
    assert_eq!(
        ensure_min_size(RgbImage::new(300, 500)).dimensions(),
        (300, 500)
    );
    for (w, h) in [(1, 1), (1, 5000), (31, 31), (224, 224), (225, 257)] {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let out = select_patches(img, &mut SplitMix64::new(1), PatchSelection::Stretch);
        assert_eq!(out.dimensions(), (224, 224), "{w}×{h}");
    }
}

fn touch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    RgbImage::new(4, 4).save(p).unwrap();
}

#[test]
fn every_layout_is_discovered() {
    let flat = tmp("flat");
    touch(&flat.join("0_real/a.png"));
    touch(&flat.join("1_fake/b.png"));
    touch(&flat.join("1_fake/deeper/c.PNG"));
    std::fs::write(flat.join("1_fake/notes.txt"), "x").unwrap();
    std::fs::create_dir_all(flat.join("0_real/folder.jpg")).unwrap();
    let d = discover(&flat).unwrap();
    assert_eq!(d.subsets.len(), 1);
    assert_eq!(d.subsets[0].count(0), 1);
    assert_eq!(d.subsets[0].count(1), 2);
    assert_eq!(d.skipped.len(), 2, "{:?}", d.skipped);
    assert!(
        d.skipped
            .iter()
            .any(|s| s.reason.contains("directory named like an image"))
    );

    let subsets = tmp("subsets");
    for s in ["biggan", "stylegan"] {
        touch(&subsets.join(s).join("0_real/1.png"));
        touch(&subsets.join(s).join("1_fake/1.png"));
    }
    let d = discover(&subsets).unwrap();
    let names: Vec<&str> = d.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["biggan", "stylegan"]);

    let nested = tmp("nested");
    for class in ["car", "cat", "horse"] {
        touch(&nested.join("progan").join(class).join("0_real/1.png"));
        touch(&nested.join("progan").join(class).join("1_fake/1.png"));
    }
    touch(&nested.join("dalle/0_real/1.png"));
    let d = discover(&nested).unwrap();
    assert_eq!(d.subsets.len(), 2);
    let progan = d.subsets.iter().find(|s| s.name == "progan").unwrap();
    assert_eq!((progan.count(0), progan.count(1)), (3, 3), "classes pooled");

    let empty = tmp("empty");
    let e = discover(&empty).unwrap_err().to_string();
    assert!(e.contains("no images found") && e.contains("0_real"), "{e}");
    for d in [flat, subsets, nested, empty] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn captions_match_by_trailing_path_and_refuse_to_guess() {
    let map = [
        ("./dataset/train/car/0_real/1.png", "a red car"),
        ("./dataset/train/cat/0_real/1.png", "a cat"),
        ("x/0_real/2.png", "two"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let c = Captions::from_map(map, MissingCaption::Error, "captions.json".into());
    assert_eq!(
        c.get(Path::new("/data/train/car/0_real/1.png")).unwrap(),
        "a red car"
    );
    assert_eq!(c.get(Path::new("/elsewhere/0_real/2.png")).unwrap(), "two");
    // `0_real/1.png` alone is ambiguous (car or cat): not guessed.
    let e = c.get(Path::new("/data/dog/0_real/1.png")).unwrap_err();
    assert!(e.contains("no caption in captions.json"), "{e}");
    let map2 = [("a/1.png".to_string(), "x".to_string())]
        .into_iter()
        .collect();
    let f = Captions::from_map(map2, MissingCaption::Fallback("a photo".into()), "m".into());
    assert_eq!(f.get(Path::new("/z/9.png")).unwrap(), "a photo");
}

#[test]
fn transforms_are_seeded_and_the_eval_transform_never_flips() {
    let mut rng = SplitMix64::new(5);
    let img = RgbImage::from_fn(256, 256, |_, _| {
        Rgb([
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        ])
    });
    let train = Transform::train(Augment::default());
    let a = train.apply(img.clone(), 11).unwrap();
    assert_eq!(a.len(), 3 * 224 * 224);
    assert_eq!(
        a,
        train.apply(img.clone(), 11).unwrap(),
        "same seed, same pixels"
    );
    assert_ne!(a, train.apply(img.clone(), 12).unwrap());
    let e = Transform::eval();
    assert_eq!(e.apply(img.clone(), 1).unwrap().len(), a.len());
    // ImageNet normalisation: black is −mean/std.
    let black = e.apply(RgbImage::new(224, 224), 0).unwrap();
    assert_abs_diff_eq!(black[0], -0.485 / 0.229, epsilon = 1e-6);
    assert_abs_diff_eq!(black[2 * 224 * 224], -0.406 / 0.225, epsilon = 1e-6);
}

#[test]
fn augmentations_blur_and_recompress() {
    let img = RgbImage::from_fn(48, 48, |x, y| {
        let v = if (x / 4 + y / 4) % 2 == 0 { 250 } else { 5 };
        Rgb([v, v, v])
    });
    assert_eq!(gaussian_blur(&img, 0.0), img);
    let var = |im: &RgbImage| {
        let v: Vec<f64> = im.pixels().map(|p| f64::from(p.0[0])).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / v.len() as f64
    };
    assert!(var(&gaussian_blur(&img, 2.0)) < 0.5 * var(&img));
    let j = dgs::data::jpeg_roundtrip(&img, 30).unwrap();
    assert_eq!(j.dimensions(), img.dimensions());
    assert_ne!(j, img);
    let bad = Augment {
        blur_prob: 1.5,
        ..Augment::default()
    };
    assert!(bad.validate().unwrap_err().contains("blur probability"));
    let bad = Augment {
        jpeg_quality: (90, 10),
        ..Augment::default()
    };
    assert!(bad.validate().unwrap_err().contains("JPEG quality"));
}

#[test]
fn the_loader_batches_reports_failures_and_shuffles_reproducibly() {
    let d = tmp("loader");
    let mut items = Vec::new();
    for i in 0..10 {
        let p = d.join(format!("{i}.png"));
        RgbImage::from_pixel(64, 64, Rgb([i as u8 * 20, 0, 0]))
            .save(&p)
            .unwrap();
        items.push(Item {
            path: p,
            label: (i % 2) as u8,
        });
    }
    std::fs::write(d.join("bad.png"), b"nope").unwrap();
    items.push(Item {
        path: d.join("bad.png"),
        label: 1,
    });
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: true,
        seed: 3,
        prefetch: 2,
        decode: DecodeOptions::default(),
    };
    let loader = Loader::new(items, Transform::train(Augment::default()), cfg).unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    let epoch = |e| loader.epoch(e).collect::<Vec<_>>();
    let a = epoch(0);
    assert_eq!(a.iter().map(|b| b.len()).sum::<usize>(), 10);
    let failed: Vec<_> = a.iter().flat_map(|b| b.failed.clone()).collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].path.ends_with("bad.png"));
    let order = |bs: &[dgs::data::LoadedBatch]| {
        bs.iter()
            .flat_map(|b| b.indices.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&a), order(&epoch(0)), "same epoch, same order");
    assert_ne!(order(&a), order(&epoch(1)), "next epoch, new order");
    assert_eq!(a[0].pixels, epoch(0)[0].pixels, "same pixels");
    assert!(
        Loader::new(
            vec![],
            Transform::eval(),
            LoaderConfig {
                batch_size: 0,
                ..cfg
            }
        )
        .is_err()
    );
    std::fs::remove_dir_all(d).unwrap();
}

/// With the data folder known, a caption key must cover the image's path inside it.
#[test]
fn caption_keys_must_cover_the_path_inside_the_data_folder() {
    let map = [
        ("/authors/train/small/up/0_real/0.png", "full"),
        ("0_real/1.png", "short"),
        ("other/up/0_real/2.png", "wrong subset"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let root = Path::new("/data/train");
    let c = Captions::from_map(map, MissingCaption::Error, "m.json".into()).with_data_root(root);
    assert_eq!(c.get(&root.join("small/up/0_real/0.png")).unwrap(), "full");
    for (image, want) in [
        ("small/up/0_real/1.png", "small/up/0_real/1.png"),
        ("small/up/0_real/2.png", "small/up/0_real/2.png"),
    ] {
        let e = c.get(&root.join(image)).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
    // A flat data set needs only the label folder.
    let flat = Path::new("/data/flat");
    let map = [("x/0_real/1.png".to_string(), "one".to_string())]
        .into_iter()
        .collect();
    let c = Captions::from_map(map, MissingCaption::Error, "m".into()).with_data_root(flat);
    assert_eq!(c.get(&flat.join("0_real/1.png")).unwrap(), "one");
}

/// `--classes` / `--subsets`: exactly the named folders; an unknown name lists the real ones.
#[test]
fn classes_are_selected_by_name() {
    let root = tmp("classes");
    for class in ["car", "cat", "horse"] {
        touch(&root.join(class).join("0_real/1.png"));
        touch(&root.join(class).join("1_fake/1.png"));
    }
    std::fs::write(root.join("cat/1_fake/notes.txt"), "x").unwrap();
    std::fs::write(root.join("car/1_fake/notes.txt"), "x").unwrap();
    let picked = discover(&root)
        .unwrap()
        .select(&root, &["horse".into(), "car".into()])
        .unwrap();
    let names: Vec<&str> = picked.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["horse", "car"]);
    assert_eq!(picked.all_items().len(), 4);
    assert!(
        picked
            .all_items()
            .iter()
            .all(|i| !i.path.starts_with(root.join("cat")))
    );
    assert_eq!(picked.skipped.len(), 1, "only the chosen folders' skips");
    let e = discover(&root)
        .unwrap()
        .select(&root, &["dog".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`dog`") && e.contains("car, cat, horse"), "{e}");
    std::fs::remove_dir_all(root).unwrap();
}

/// Symbolic links are followed once: a loop is listed, not searched forever.
#[cfg(unix)]
#[test]
fn a_symlink_loop_is_searched_once() {
    let root = tmp("symlinks");
    touch(&root.join("0_real/a.png"));
    touch(&root.join("1_fake/b.png"));
    std::os::unix::fs::symlink(root.join("0_real"), root.join("0_real/again")).unwrap();
    let d = discover(&root).unwrap();
    assert_eq!(d.all_items().len(), 2);
    assert!(
        d.skipped.iter().any(|f| f.reason.contains("symlink loop")),
        "{:?}",
        d.skipped
    );
    std::fs::remove_dir_all(root).unwrap();
}

/// The loader refuses a prefetch it could not allocate.
#[test]
fn the_loader_refuses_an_absurd_prefetch() {
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: false,
        seed: 0,
        prefetch: usize::MAX,
        decode: DecodeOptions::default(),
    };
    let e = Loader::new(vec![], Transform::eval(), cfg).err().unwrap();
    assert!(e.contains("--prefetch"), "{e}");
}

/// `--patch-selection official` selects exactly the patches the official transform does, in its
/// order before the shuffle (numpy's argsort of the entropies included), on generated images of
/// every awkward size (scripts/make_transform_fixture.py).
#[test]
fn the_official_patch_selection_matches_numpy() {
    let dir = Path::new("tests/fixtures/official_transform");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let as_indices = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            .collect()
    };
    let official = PatchSelection::Official;
    for (name, want) in expected["selected"].as_object().unwrap() {
        let img = load_rgb(&dir.join(format!("{name}.png")), DecodeOptions::default()).unwrap();
        let got = selected_indices(&patch_entropies(&img, official), official);
        assert_eq!(got, as_indices(want), "{name}");
        // Slots beyond the kept patches stay black; an image under 32 px is all black.
        let out = select_patches(img, &mut SplitMix64::new(2), official);
        assert_eq!(out.dimensions(), (224, 224));
        let black_slots = (0..49)
            .filter(|s| out.get_pixel((s % 7 * 32) as u32, (s / 7 * 32) as u32).0 == [0, 0, 0])
            .count();
        assert!(black_slots >= 49 - got.len(), "{name}");
    }
    for case in expected["argsort"].as_array().unwrap() {
        let values: Vec<f64> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        assert_eq!(
            numpy_argsort(&values),
            as_indices(&case["order"]),
            "{} values",
            values.len()
        );
    }
}
