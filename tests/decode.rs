//! Decoding the files users have: awkward but valid images convert to RGB as PIL does, JPEGs to
//! PIL's exact pixels (libjpeg-turbo's decoder), broken and truncated files fail with a reason,
//! and the memory guard refuses from the header what the pipeline could not hold.

mod common;

use std::path::Path;

use common::cli::tmp;
use dgs::data::{DecodeOptions, load_rgb};
use image::{Rgb, RgbImage};

/// Awkward but valid images decode to RGB; broken ones fail with a reason naming the problem.
#[test]
fn awkward_files_decode_or_fail_with_a_reason() {
    let d = tmp("decode");
    let gray = image::GrayImage::from_fn(40, 30, |x, _| image::Luma([(x * 6) as u8]));
    gray.save(d.join("gray.png")).unwrap();
    let rgba = image::RgbaImage::from_fn(20, 20, |_, _| image::Rgba([10, 20, 30, 0]));
    rgba.save(d.join("rgba.png")).unwrap();
    let deep: image::ImageBuffer<Rgb<u16>, Vec<u16>> =
        image::ImageBuffer::from_fn(8, 8, |_, _| Rgb([65535, 32768, 0]));
    deep.save(d.join("deep.png")).unwrap();
    {
        let f = std::fs::File::create(d.join("palette.png")).unwrap();
        let mut enc = png::Encoder::new(f, 4, 2);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0, 1, 0, 1, 1, 0, 1, 0]).unwrap();
    }
    {
        let f = std::fs::File::create(d.join("anim.gif")).unwrap();
        let mut enc = image::codecs::gif::GifEncoder::new(f);
        let frames = [[255u8, 0, 0, 255], [0, 255, 0, 255]]
            .map(|c| image::Frame::new(image::RgbaImage::from_pixel(6, 6, image::Rgba(c))));
        enc.encode_frames(frames).unwrap();
    }
    {
        let enc = jpeg_encoder::Encoder::new_file(d.join("cmyk.jpg"), 90).unwrap();
        let data: Vec<u8> = (0..16 * 16).flat_map(|_| [0u8, 255, 255, 0]).collect();
        enc.encode(&data, 16, 16, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
    }
    RgbImage::from_pixel(1, 700, Rgb([1, 2, 3]))
        .save(d.join("thin.png"))
        .unwrap();

    assert_eq!(
        load_rgb(&d.join("gray.png"), DecodeOptions::default())
            .unwrap()
            .get_pixel(5, 0)
            .0,
        [30, 30, 30]
    );
    assert_eq!(
        load_rgb(&d.join("rgba.png"), DecodeOptions::default())
            .unwrap()
            .get_pixel(0, 0)
            .0,
        [10, 20, 30]
    );
    assert_eq!(
        load_rgb(&d.join("deep.png"), DecodeOptions::default())
            .unwrap()
            .get_pixel(0, 0)
            .0,
        [255, 128, 0]
    );
    assert_eq!(
        load_rgb(&d.join("palette.png"), DecodeOptions::default())
            .unwrap()
            .get_pixel(1, 0)
            .0,
        [0, 0, 255]
    );
    assert_eq!(
        load_rgb(&d.join("anim.gif"), DecodeOptions::default())
            .unwrap()
            .get_pixel(2, 2)
            .0,
        [255, 0, 0],
        "first frame"
    );
    let cmyk = load_rgb(&d.join("cmyk.jpg"), DecodeOptions::default()).unwrap();
    assert_eq!(cmyk.dimensions(), (16, 16));
    assert_eq!(
        load_rgb(&d.join("thin.png"), DecodeOptions::default())
            .unwrap()
            .dimensions(),
        (1, 700)
    );

    std::fs::write(d.join("empty.png"), b"").unwrap();
    let mut good = Vec::new();
    RgbImage::from_pixel(64, 64, Rgb([9, 9, 9]))
        .write_to(
            &mut std::io::Cursor::new(&mut good),
            image::ImageFormat::Png,
        )
        .unwrap();
    std::fs::write(d.join("truncated.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(d.join("text.png"), b"this is not an image at all").unwrap();
    std::fs::create_dir_all(d.join("dir.png")).unwrap();
    {
        // A header declaring 100000×100000 and a few bytes of pixel data: refused from the
        // header, before anything of that size is allocated.
        let f = std::fs::File::create(d.join("bomb.png")).unwrap();
        let mut enc = png::Encoder::new(f, 100_000, 100_000);
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().unwrap();
        w.write_chunk(
            png::chunk::IDAT,
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        )
        .unwrap();
    }
    let reason = |name: &str| {
        load_rgb(&d.join(name), DecodeOptions::default())
            .unwrap_err()
            .to_string()
    };
    assert!(reason("empty.png").contains("empty file"));
    assert!(
        reason("truncated.png").contains("cannot decode"),
        "{}",
        reason("truncated.png")
    );
    assert!(
        reason("text.png").contains("not an image"),
        "{}",
        reason("text.png")
    );
    assert!(reason("dir.png").contains("directory"));
    assert!(reason("missing.png").contains("cannot read"));
    let bomb = reason("bomb.png");
    assert!(
        bomb.contains("over the limit") && bomb.contains("100000×100000"),
        "{bomb}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

/// A JPEG cut anywhere before its end-of-image marker is truncated; whole files (baseline,
/// progressive, with restart markers or trailing bytes) are not.
#[test]
fn truncated_jpegs_are_told_from_whole_ones() {
    let d = tmp("jpeg-end");
    let img: Vec<u8> = (0..96 * 80)
        .flat_map(|i| [(i % 251) as u8, (i * 7 % 253) as u8, (i / 96) as u8])
        .collect();
    let encode = |progressive: bool, restart: u16| {
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 85);
        enc.set_progressive(progressive);
        enc.set_restart_interval(restart);
        enc.encode(&img, 96, 80, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    };
    for (name, bytes) in [
        ("baseline", encode(false, 0)),
        ("progressive", encode(true, 0)),
        ("restarts", encode(false, 2)),
    ] {
        let whole = d.join(format!("{name}.jpg"));
        std::fs::write(&whole, &bytes).unwrap();
        load_rgb(&whole, DecodeOptions::default()).unwrap();
        let mut padded = bytes.clone();
        padded.extend_from_slice(b"trailing bytes some writers add");
        std::fs::write(&whole, &padded).unwrap();
        load_rgb(&whole, DecodeOptions::default()).unwrap();
        for cut in [bytes.len() - 1, bytes.len() * 3 / 4, bytes.len() / 2, 700] {
            let p = d.join(format!("{name}-{cut}.jpg"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let e = load_rgb(&p, DecodeOptions::default()).unwrap_err();
            assert!(
                e.reason.contains("truncated JPEG"),
                "{name} cut at {cut}: {e}"
            );
            let allow = DecodeOptions {
                allow_truncated: true,
            };
            if cut > bytes.len() / 2 {
                assert_eq!(load_rgb(&p, allow).unwrap().dimensions(), (96, 80));
            }
        }
    }
    std::fs::remove_dir_all(d).unwrap();
}

/// The memory guard counts the stretch of a short side to 224 px, from the header.
#[test]
fn the_size_guard_bounds_the_whole_pipeline() {
    use dgs::data::{MAX_IMAGE_BYTES, pipeline_bytes};
    assert_eq!(pipeline_bytes(300, 400, 3), 300 * 400 * 6, "no stretch");
    // 1 × 700 → 224 × 700: a 1 × 700 buffer of four f32, then 224 × 700 RGB.
    assert_eq!(
        pipeline_bytes(1, 700, 3),
        700 * 6 + 700 * 16 + 224 * 700 * 3
    );
    assert!(pipeline_bytes(1_000_000, 1, 3) > MAX_IMAGE_BYTES);
    assert!(
        pipeline_bytes(10_000, 10_000, 8) <= MAX_IMAGE_BYTES,
        "100 MP 16-bit RGBA fits"
    );
    let d = tmp("guard");
    let f = std::fs::File::create(d.join("strip.png")).unwrap();
    let mut enc = png::Encoder::new(f, 1_000_000, 1);
    enc.set_color(png::ColorType::Rgb);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&vec![0u8; 3_000_000]).unwrap();
    drop(w);
    let e = load_rgb(&d.join("strip.png"), DecodeOptions::default()).unwrap_err();
    assert!(
        e.reason.contains("1000000×224") && e.reason.contains("over the limit"),
        "{e}"
    );
    std::fs::remove_dir_all(d).unwrap();
}

/// JPEGs decode to the RGB bytes PIL gives (libjpeg-turbo's decoder), for every kind of JPEG
/// (scripts/make_jpeg_fixture.py): baseline 4:2:0 / 4:2:2 / 4:4:4, progressive, odd sizes,
/// grayscale, CMYK.
#[test]
fn jpegs_decode_to_pils_pixels() {
    let dir = Path::new("tests/fixtures/jpeg_pil");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let jpg = entry.unwrap().path();
        if jpg.extension().is_none_or(|e| e != "jpg") {
            continue;
        }
        let pil = jpg.with_extension("pil.png");
        let ours = load_rgb(&jpg, DecodeOptions::default()).unwrap();
        let theirs = load_rgb(&pil, DecodeOptions::default()).unwrap();
        assert_eq!(ours.dimensions(), theirs.dimensions(), "{}", jpg.display());
        let differing = ours
            .as_raw()
            .iter()
            .zip(theirs.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "{}: bytes differ from PIL's", jpg.display());
        checked += 1;
    }
    assert_eq!(checked, 7, "the seven kinds of JPEG");
}

/// The JPEG augmentation gives PIL's pixels: `save(format="jpeg", quality=q)` then `open`, for
/// the qualities of the official range and the edge below it (scripts/make_jpeg_fixture.py).
#[test]
fn the_jpeg_augmentation_round_trips_like_pil() {
    let dir = Path::new("tests/fixtures/jpeg_pil");
    let original = load_rgb(&dir.join("roundtrip.png"), DecodeOptions::default()).unwrap();
    for q in [24u8, 30, 55, 75, 95, 100] {
        let theirs = load_rgb(
            &dir.join(format!("roundtrip_q{q}.pil.png")),
            DecodeOptions::default(),
        )
        .unwrap();
        let ours = dgs::data::jpeg_roundtrip(&original, q).unwrap();
        assert!(ours == theirs, "quality {q}: pixels differ from PIL's");
    }
}
