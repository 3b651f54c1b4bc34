//! The demo's synthetic data, generated deterministically from a seed with no downloads.
//!
//! "Real" images have natural-image statistics: a 1/f^α colour noise field (random phases in the
//! Fourier domain), a few smooth shapes with soft edges and shading, and faint sensor noise.
//! "Fake" images are made from scenes of the same kind by one of several *generator families*,
//! each leaving a different fingerprint:
//!
//! - [`Family::Upsampling`]: rendered at half size and upsampled by zero insertion and an
//!   uneven kernel, as a transposed convolution does — a checkerboard at period 2;
//! - [`Family::SpectralPeaks`]: a faint periodic grid (period 8 px), i.e. peaks in the spectrum;
//! - [`Family::OverSmooth`]: denoised too well — blurred, with no sensor noise;
//! - [`Family::ColourShift`]: shifted colour statistics (saturation and a warm cast).

use image::{Rgb, RgbImage};
use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

use super::augment::gaussian_blur;
use crate::surgery::rng::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Upsampling,
    SpectralPeaks,
    OverSmooth,
    ColourShift,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Upsampling,
        Family::SpectralPeaks,
        Family::OverSmooth,
        Family::ColourShift,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Family::Upsampling => "upsampling",
            Family::SpectralPeaks => "spectral-peaks",
            Family::OverSmooth => "over-smooth",
            Family::ColourShift => "colour-shift",
        }
    }
}

/// A scene description, also used for its caption.
struct Scene {
    field: Vec<[f64; 3]>,
    shapes: usize,
    warm: bool,
}

/// A 1/f^α field, `size × size`, zero mean, unit standard deviation.
fn pink_field(size: usize, alpha: f64, rng: &mut SplitMix64) -> Vec<f64> {
    let mut buf = vec![Complex64::default(); size * size];
    for (i, b) in buf.iter_mut().enumerate() {
        let (y, x) = (i / size, i % size);
        let fy = y.min(size - y) as f64;
        let fx = x.min(size - x) as f64;
        let f = (fx * fx + fy * fy).sqrt();
        if f > 0.0 {
            let amp = f.powf(-alpha) * rng.normal().abs();
            let phase = rng.uniform(0.0, std::f64::consts::TAU);
            *b = Complex64::from_polar(amp, phase);
        }
    }
    let fft = FftPlanner::new().plan_fft_inverse(size);
    fft.process(&mut buf);
    let mut col = vec![Complex64::default(); size];
    for x in 0..size {
        for y in 0..size {
            col[y] = buf[y * size + x];
        }
        fft.process(&mut col);
        for y in 0..size {
            buf[y * size + x] = col[y];
        }
    }
    let v: Vec<f64> = buf.iter().map(|c| c.re).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / v.len() as f64)
        .sqrt()
        .max(1e-12);
    v.into_iter().map(|a| (a - mean) / sd).collect()
}

fn scene(size: usize, rng: &mut SplitMix64) -> Scene {
    let alpha = rng.uniform(1.6, 2.2);
    let lum = pink_field(size, alpha, rng);
    let chroma1 = pink_field(size, alpha, rng);
    let chroma2 = pink_field(size, alpha, rng);
    let base = [
        rng.uniform(0.3, 0.6),
        rng.uniform(0.3, 0.6),
        rng.uniform(0.3, 0.6),
    ];
    let mut field: Vec<[f64; 3]> = (0..size * size)
        .map(|i| {
            let l = 0.12 * lum[i];
            [
                base[0] + l + 0.03 * chroma1[i],
                base[1] + l - 0.02 * chroma1[i] + 0.02 * chroma2[i],
                base[2] + l - 0.03 * chroma2[i],
            ]
        })
        .collect();
    let shapes = 1 + rng.below(4);
    for _ in 0..shapes {
        let (cx, cy) = (rng.uniform(0.0, size as f64), rng.uniform(0.0, size as f64));
        let (rx, ry) = (
            rng.uniform(0.08, 0.3) * size as f64,
            rng.uniform(0.08, 0.3) * size as f64,
        );
        let colour = [rng.next_f64(), rng.next_f64(), rng.next_f64()];
        let shade = rng.uniform(-0.3, 0.3);
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = ((x as f64 - cx) / rx, (y as f64 - cy) / ry);
                let r = (dx * dx + dy * dy).sqrt();
                // Soft edge over ~2 px, shading across the shape.
                let cover = (1.0 - (r - 1.0) * rx.min(ry) / 2.0).clamp(0.0, 1.0);
                if cover > 0.0 {
                    let lit = 1.0 + shade * dx;
                    let px = &mut field[y * size + x];
                    for c in 0..3 {
                        px[c] = px[c] * (1.0 - cover) + cover * colour[c] * lit;
                    }
                }
            }
        }
    }
    Scene {
        field,
        shapes,
        warm: base[0] > base[2],
    }
}

fn to_image(field: &[[f64; 3]], size: usize, noise: f64, rng: &mut SplitMix64) -> RgbImage {
    RgbImage::from_fn(size as u32, size as u32, |x, y| {
        let px = field[y as usize * size + x as usize];
        Rgb(std::array::from_fn(|c| {
            let v = px[c] + noise * rng.normal();
            (v * 255.0).round().clamp(0.0, 255.0) as u8
        }))
    })
}

const SENSOR_NOISE: f64 = 2.0 / 255.0;

/// A "real" image, `size × size`.
pub fn real(size: usize, rng: &mut SplitMix64) -> (RgbImage, String) {
    let s = scene(size, rng);
    (to_image(&s.field, size, SENSOR_NOISE, rng), caption(&s))
}

/// A "fake" image of `family`, `size × size` (`size` even).
pub fn fake(family: Family, size: usize, rng: &mut SplitMix64) -> (RgbImage, String) {
    match family {
        Family::Upsampling => {
            let half = size / 2;
            let s = scene(half, rng);
            // Zero insertion, then an uneven 3-tap kernel per axis: even and odd output phases
            // receive different total weight — the checkerboard of a strided transposed conv.
            let k = [0.45, 1.0, 0.75];
            let mut up = vec![[0.0f64; 3]; size * size];
            for y in 0..size {
                for x in 0..size {
                    let mut acc = [0.0; 3];
                    for (dy, ky) in k.iter().enumerate() {
                        for (dx, kx) in k.iter().enumerate() {
                            let (sy, sx) =
                                (y as isize + dy as isize - 1, x as isize + dx as isize - 1);
                            if sy < 0 || sx < 0 || sy % 2 == 1 || sx % 2 == 1 {
                                continue;
                            }
                            let (sy, sx) = ((sy / 2) as usize, (sx / 2) as usize);
                            if sy >= half || sx >= half {
                                continue;
                            }
                            let v = s.field[sy * half + sx];
                            for c in 0..3 {
                                acc[c] += ky * kx * v[c];
                            }
                        }
                    }
                    up[y * size + x] = acc.map(|a| a / 1.1);
                }
            }
            (to_image(&up, size, SENSOR_NOISE, rng), caption(&s))
        }
        Family::SpectralPeaks => {
            let mut s = scene(size, rng);
            let amp = rng.uniform(0.04, 0.06);
            let (px, py) = (rng.uniform(0.0, 8.0), rng.uniform(0.0, 8.0));
            for y in 0..size {
                for x in 0..size {
                    let g = ((x as f64 + px) * std::f64::consts::TAU / 8.0).cos()
                        + ((y as f64 + py) * std::f64::consts::TAU / 8.0).cos();
                    for c in s.field[y * size + x].iter_mut() {
                        *c += amp * g;
                    }
                }
            }
            (to_image(&s.field, size, SENSOR_NOISE, rng), caption(&s))
        }
        Family::OverSmooth => {
            let s = scene(size, rng);
            let img = to_image(&s.field, size, 0.0, rng);
            (gaussian_blur(&img, rng.uniform(1.2, 2.0)), caption(&s))
        }
        Family::ColourShift => {
            let mut s = scene(size, rng);
            let sat = rng.uniform(1.5, 1.9);
            for px in s.field.iter_mut() {
                let l = (px[0] + px[1] + px[2]) / 3.0;
                *px = [
                    l + sat * (px[0] - l) + 0.06,
                    l + sat * (px[1] - l) + 0.02,
                    l + sat * (px[2] - l) - 0.05,
                ];
            }
            (
                to_image(&s.field, size, SENSOR_NOISE * 0.5, rng),
                caption(&s),
            )
        }
    }
}

/// The words the demo's captions use (the demo's tokenizer vocabulary).
pub const CAPTION_WORDS: &[&str] = &[
    "a",
    "photo",
    "of",
    "one",
    "two",
    "three",
    "four",
    "soft",
    "shapes",
    "on",
    "warm",
    "cool",
    "textured",
    "background",
];

fn caption(s: &Scene) -> String {
    let n = ["one", "two", "three", "four"][(s.shapes - 1).min(3)];
    let tone = if s.warm { "warm" } else { "cool" };
    format!("a photo of {n} soft shapes on a {tone} textured background")
}
