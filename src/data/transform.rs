//! From a decoded image to the model's input: augment (training, optional) → patch selection →
//! horizontal flip (training, p = 0.5) → `[3, 224, 224]` f32 normalised with the ImageNet
//! mean and std. Every random choice comes from a SplitMix64 seeded by (run seed, epoch, image
//! index), so a run is reproducible whatever the thread count.

use image::RgbImage;

use super::augment::Augment;
use super::patches::{PatchSelection, select_patches};
use crate::surgery::rng::SplitMix64;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    /// Training: augmentations and random flips on.
    pub train: bool,
    pub flip: bool,
    pub augment: Augment,
    pub patches: PatchSelection,
}

impl Transform {
    pub fn train(augment: Augment) -> Self {
        Self {
            train: true,
            flip: true,
            augment,
            patches: PatchSelection::default(),
        }
    }

    pub fn eval() -> Self {
        Self {
            train: false,
            flip: false,
            augment: Augment::default(),
            patches: PatchSelection::default(),
        }
    }

    /// `[3 × 224 × 224]` channel-major normalised pixels.
    pub fn apply(&self, img: RgbImage, seed: u64) -> Result<Vec<f32>, String> {
        let mut rng = SplitMix64::new(seed);
        let img = match self.train {
            true => self.augment.apply(img, &mut rng)?,
            false => img,
        };
        let mut img = select_patches(img, &mut rng, self.patches);
        if self.train && self.flip && rng.next_f64() < 0.5 {
            image::imageops::flip_horizontal_in_place(&mut img);
        }
        Ok(normalise(&img))
    }
}

/// `[3, H, W]` from an RGB image: `(v / 255 − mean) / std` per channel.
pub fn normalise(img: &RgbImage) -> Vec<f32> {
    let n = (img.width() * img.height()) as usize;
    let mut out = vec![0.0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = (f32::from(p.0[c]) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}

/// The seed of image `index` in `epoch` of a run seeded `seed`.
pub fn sample_seed(seed: u64, epoch: u64, index: u64) -> u64 {
    let mut r = SplitMix64::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.next_u64() ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)
}
