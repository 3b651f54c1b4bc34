//! JPEG as PIL does it, both ways, through mozjpeg (libjpeg-turbo's fork): decoding to 8-bit RGB
//! exactly as `Image.open(p).convert("RGB")` gives it (libjpeg-turbo's decoder with its defaults:
//! accurate integer IDCT, fancy upsampling), and encoding to the very bytes of PIL's
//! `save(format="jpeg", quality=q)` (libjpeg's defaults: baseline, 4:2:0, the standard tables
//! scaled by quality). Another decoder differs by a few grey levels on many pixels, enough to
//! change which patches the transform keeps.
//!
//! Grayscale is replicated to three channels. CMYK (and YCCK) data is read as CMYK, inverted as
//! PIL does ("assume Adobe conventions": Photoshop stores it inverted), and converted with PIL's
//! formula `255 − k − c·(255 − k)/255` per channel, rounded as PIL rounds.

use image::RgbImage;
use mozjpeg::{ColorSpace, Compress, Decompress};

/// The message of a libjpeg error, which mozjpeg's error manager reports by unwinding (silently:
/// no panic hook runs).
fn libjpeg_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(_) => "libjpeg failed".to_string(),
    }
}

/// `img` as PIL writes it at `quality` (1–100). The bytes equal PIL's for quality ≥ 24; below,
/// PIL caps the quantisation tables at 255 (baseline) and libjpeg's quality call here does not.
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let encode = || -> std::io::Result<Vec<u8>> {
        let mut c = Compress::new(ColorSpace::JCS_RGB);
        // libjpeg-turbo's defaults (mozjpeg's own would add trellis quantisation and more).
        c.set_fastest_defaults();
        c.set_size(img.width() as usize, img.height() as usize);
        c.set_quality(f32::from(quality.clamp(1, 100)));
        let mut started = c.start_compress(Vec::new())?;
        started.write_scanlines(img.as_raw())?;
        started.finish()
    };
    std::panic::catch_unwind(encode)
        .map_err(libjpeg_message)?
        .map_err(|e| e.to_string())
}

/// Decode a whole JPEG (its size already checked); a libjpeg error is the reason.
pub fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    // libjpeg reports fatal errors by unwinding (mozjpeg's error manager); warnings, such as a
    // missing end of data, are silenced and decoding goes on, as in PIL.
    std::panic::catch_unwind(|| decode(bytes))
        .map_err(libjpeg_message)?
        .map_err(|e| e.to_string())
}

fn decode(bytes: &[u8]) -> std::io::Result<RgbImage> {
    let d = Decompress::new_mem(bytes)?;
    let cmyk = matches!(d.color_space(), ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK);
    let gray = d.color_space() == ColorSpace::JCS_GRAYSCALE;
    let (w, h) = (d.width() as u32, d.height() as u32);
    let mut started = match (cmyk, gray) {
        (true, _) => d.to_colorspace(ColorSpace::JCS_CMYK)?,
        (_, true) => d.grayscale()?,
        _ => d.rgb()?,
    };
    let samples: Vec<u8> = started.read_scanlines()?;
    started.finish()?;
    let rgb = match (cmyk, gray) {
        (true, _) => samples.chunks_exact(4).flat_map(cmyk_to_rgb).collect(),
        (_, true) => samples.iter().flat_map(|&g| [g, g, g]).collect(),
        _ => samples,
    };
    RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| std::io::Error::other("libjpeg returned fewer pixels than the header says"))
}

/// One stored (inverted) CMYK pixel to RGB, as PIL converts it.
fn cmyk_to_rgb(stored: &[u8]) -> [u8; 3] {
    let [c, m, y, k] = [0, 1, 2, 3].map(|i| 255 - u32::from(stored[i]));
    let not_k = 255 - k;
    // PIL's MULDIV255: (a·b + 128 + ((a·b + 128) >> 8)) >> 8, the rounded a·b/255.
    let muldiv255 = |a: u32| {
        let t = a * not_k + 128;
        ((t >> 8) + t) >> 8
    };
    [c, m, y].map(|v| (not_k - muldiv255(v)) as u8)
}
