//! The official optional augmentations, applied to the decoded image before patch selection:
//! Gaussian blur (with probability `blur_prob`, sigma uniform in `blur_sigma`; scipy's
//! `gaussian_filter`: kernel truncated at 4σ, mirrored edges) and JPEG re-compression (with
//! probability `jpeg_prob`, quality uniform over `jpeg_quality`, inclusive).

use image::RgbImage;

use super::pil_jpeg::{decode_jpeg, encode_jpeg};
use crate::surgery::rng::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    pub blur_prob: f64,
    pub blur_sigma: (f64, f64),
    pub jpeg_prob: f64,
    pub jpeg_quality: (u8, u8),
}

impl Default for Augment {
    /// Off, as in the paper's runs; the ranges are the official defaults when switched on.
    fn default() -> Self {
        Self {
            blur_prob: 0.0,
            blur_sigma: (0.0, 3.0),
            jpeg_prob: 0.0,
            jpeg_quality: (30, 100),
        }
    }
}

impl Augment {
    /// Check ranges before any data is touched.
    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, p: f64| match (0.0..=1.0).contains(&p) {
            true => Ok(()),
            false => Err(format!("{name} must be in [0, 1], got {p}")),
        };
        prob("blur probability", self.blur_prob)?;
        prob("JPEG probability", self.jpeg_prob)?;
        let (lo, hi) = self.blur_sigma;
        if !(lo >= 0.0 && hi >= lo && hi.is_finite()) {
            return Err(format!(
                "blur sigma range must be 0 ≤ lo ≤ hi, got {lo}..{hi}"
            ));
        }
        let (lo, hi) = self.jpeg_quality;
        if !(1 <= lo && lo <= hi && hi <= 100) {
            return Err(format!(
                "JPEG quality range must be 1 ≤ lo ≤ hi ≤ 100, got {lo}..{hi}"
            ));
        }
        Ok(())
    }

    pub fn apply(&self, mut img: RgbImage, rng: &mut SplitMix64) -> Result<RgbImage, String> {
        if self.blur_prob > 0.0 && rng.next_f64() < self.blur_prob {
            let sigma = rng.uniform(self.blur_sigma.0, self.blur_sigma.1);
            img = gaussian_blur(&img, sigma);
        }
        if self.jpeg_prob > 0.0 && rng.next_f64() < self.jpeg_prob {
            let (lo, hi) = self.jpeg_quality;
            let q = lo + rng.below(usize::from(hi - lo) + 1) as u8;
            img = jpeg_roundtrip(&img, q)?;
        }
        Ok(img)
    }
}

/// Mirror index into `0..n` the way scipy's `reflect` mode does (`d c b a | a b c d | d c b a`).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - 1 - i;
    }
    i as usize
}

/// Separable Gaussian blur of each channel; `sigma ≤ 0` returns the image unchanged.
pub fn gaussian_blur(img: &RgbImage, sigma: f64) -> RgbImage {
    if sigma <= 0.0 {
        return img.clone();
    }
    let radius = (4.0 * sigma + 0.5) as isize;
    let mut kernel: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x as f64 / sigma).powi(2)).exp())
        .collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src: Vec<f64> = img.as_raw().iter().map(|&v| f64::from(v)).collect();
    let pass = |src: &[f64], horizontal: bool| {
        let mut dst = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut acc = 0.0;
                    for (k, &wt) in kernel.iter().enumerate() {
                        let d = k as isize - radius;
                        let (sx, sy) = match horizontal {
                            true => (reflect(x as isize + d, w), y),
                            false => (x, reflect(y as isize + d, h)),
                        };
                        acc += wt * src[(sy * w + sx) * 3 + c];
                    }
                    dst[(y * w + x) * 3 + c] = acc;
                }
            }
        }
        dst
    };
    let out = pass(&pass(&src, true), false);
    let bytes = out
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    RgbImage::from_raw(w as u32, h as u32, bytes).unwrap_or_else(|| img.clone())
}

/// Encode as JPEG at `quality` and decode again, to the pixels PIL's `save` + `open` give.
pub fn jpeg_roundtrip(img: &RgbImage, quality: u8) -> Result<RgbImage, String> {
    let bytes = encode_jpeg(img, quality)
        .map_err(|e| format!("JPEG augmentation: encoding failed: {e}"))?;
    decode_jpeg(&bytes).map_err(|e| format!("JPEG augmentation: decoding failed: {e}"))
}
