//! The DGS-Net patch-selection transform: cut the image into 32×32 patches (row-major from the
//! top-left corner, the right and bottom remainders dropped), score each by spectral entropy,
//! keep the 24 lowest and the 25 highest, shuffle them, and stitch a 7×7 grid: 224×224.
//!
//! Small images (our rule; the official code would silently return a partly black grid): a side
//! shorter than 224 px is stretched to 224 px (bilinear) first, the other side kept, so every
//! image yields at least 49 patches. Ties in entropy keep image order (a stable sort).

use image::RgbImage;

use super::spectral::SpectralEntropy;
use crate::surgery::rng::SplitMix64;

pub const PATCH: usize = 32;
pub const GRID: usize = 7;
pub const OUT_SIZE: usize = PATCH * GRID;
const LOW: usize = GRID * GRID / 2;
const HIGH: usize = GRID * GRID - LOW;

/// Stretch any side shorter than [`OUT_SIZE`] to it (see the module docs); larger images are
/// returned as they are.
pub fn ensure_min_size(img: RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let min = OUT_SIZE as u32;
    if w >= min && h >= min {
        return img;
    }
    image::imageops::resize(
        &img,
        w.max(min),
        h.max(min),
        image::imageops::FilterType::Triangle,
    )
}

/// Spectral entropy of every whole patch, row-major; the image must be at least one patch.
pub fn patch_entropies(img: &RgbImage) -> Vec<f64> {
    let (cols, rows) = (img.width() as usize / PATCH, img.height() as usize / PATCH);
    let mut scorer = SpectralEntropy::new(PATCH);
    let mut gray = vec![0.0f64; PATCH * PATCH];
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            for y in 0..PATCH {
                for x in 0..PATCH {
                    let p = img
                        .get_pixel((c * PATCH + x) as u32, (r * PATCH + y) as u32)
                        .0;
                    gray[y * PATCH + x] = (0.299 * f64::from(p[0])
                        + 0.587 * f64::from(p[1])
                        + 0.114 * f64::from(p[2]))
                        / 255.0;
                }
            }
            out.push(scorer.entropy(&gray));
        }
    }
    out
}

/// The patch indices kept: 24 lowest then 25 highest entropies (stable order on ties).
pub fn selected_indices(entropies: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entropies.len()).collect();
    order.sort_by(|&a, &b| entropies[a].total_cmp(&entropies[b]));
    let mut keep: Vec<usize> = order.iter().take(LOW).copied().collect();
    keep.extend(order.iter().skip(order.len().saturating_sub(HIGH)).copied());
    keep
}

/// The 224×224 stitched image of `img` (any size; see [`ensure_min_size`]), the kept patches
/// shuffled by `rng`.
pub fn select_patches(img: RgbImage, rng: &mut SplitMix64) -> RgbImage {
    let img = ensure_min_size(img);
    let cols = img.width() as usize / PATCH;
    let mut keep = selected_indices(&patch_entropies(&img));
    rng.shuffle(&mut keep);
    let mut out = RgbImage::new(OUT_SIZE as u32, OUT_SIZE as u32);
    for (slot, &idx) in keep.iter().enumerate() {
        let (sr, sc) = (idx / cols, idx % cols);
        let (dr, dc) = (slot / GRID, slot % GRID);
        for y in 0..PATCH {
            for x in 0..PATCH {
                let p = *img.get_pixel((sc * PATCH + x) as u32, (sr * PATCH + y) as u32);
                out.put_pixel((dc * PATCH + x) as u32, (dr * PATCH + y) as u32, p);
            }
        }
    }
    out
}
