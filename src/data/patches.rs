//! The DGS-Net patch-selection transform: cut the image into 32×32 patches (row-major from the
//! top-left corner, the right and bottom remainders dropped), score each by spectral entropy,
//! keep the 24 lowest and the 25 highest, shuffle them, and stitch a 7×7 grid: 224×224.
//!
//! Two variants ([`PatchSelection`]). Ours, the default, differs from the official transform in
//! three places, each for images the official one handles poorly: a side shorter than 224 px is
//! stretched to 224 px (bilinear) first, the other side kept, so every image yields at least 49
//! distinct patches (the official transform repeats the few it has and leaves the rest of the
//! grid black — an image under 32 px becomes all black); the gray level is always divided by 255
//! (the official one skips that for patches whose gray never exceeds 1, a near-black patch); and
//! ties in entropy keep image order (a stable sort; the official order of ties is whatever numpy's
//! argsort leaves). `Official` reproduces the official transform exactly, but for its shuffle
//! (Python's generator; ours is seeded per run, epoch and image).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::numpy_sort::numpy_argsort;
use super::spectral::SpectralEntropy;
use crate::surgery::rng::SplitMix64;

/// Which patch-selection rules apply (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchSelection {
    /// Ours: short sides stretched to 224 px, gray always / 255, ties in image order.
    #[default]
    Stretch,
    /// The official transform: no stretch, its gray rule, numpy's order of ties.
    Official,
}

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

/// Spectral entropy of every whole patch, row-major (none when a side is under one patch).
pub fn patch_entropies(img: &RgbImage, selection: PatchSelection) -> Vec<f64> {
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
                    gray[y * PATCH + x] =
                        0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
                }
            }
            let dark = gray.iter().all(|&g| g <= 1.0);
            if selection == PatchSelection::Stretch || !dark {
                gray.iter_mut().for_each(|g| *g /= 255.0);
            }
            out.push(scorer.entropy(&gray));
        }
    }
    out
}

/// The patch indices kept: 24 lowest then 25 highest entropies (overlapping, so repeated, when
/// there are fewer than 49), ties ordered per `selection`.
pub fn selected_indices(entropies: &[f64], selection: PatchSelection) -> Vec<usize> {
    let order = match selection {
        PatchSelection::Official => numpy_argsort(entropies),
        PatchSelection::Stretch => {
            let mut order: Vec<usize> = (0..entropies.len()).collect();
            order.sort_by(|&a, &b| entropies[a].total_cmp(&entropies[b]));
            order
        }
    };
    let mut keep: Vec<usize> = order.iter().take(LOW).copied().collect();
    keep.extend(order.iter().skip(order.len().saturating_sub(HIGH)).copied());
    keep
}

/// The 224×224 stitched image of `img` (any size), the kept patches shuffled by `rng`; slots
/// without a patch stay black.
pub fn select_patches(img: RgbImage, rng: &mut SplitMix64, selection: PatchSelection) -> RgbImage {
    let img = match selection {
        PatchSelection::Stretch => ensure_min_size(img),
        PatchSelection::Official => img,
    };
    let mut keep = selected_indices(&patch_entropies(&img, selection), selection);
    rng.shuffle(&mut keep);
    stitch(&img, &keep)
}

/// The 224×224 grid of `img`'s patches `keep` (row-major patch indices), in order.
pub fn stitch(img: &RgbImage, keep: &[usize]) -> RgbImage {
    let cols = img.width() as usize / PATCH;
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
