//! Images in, model-ready tensors out: data-set discovery in the layouts users have, safe
//! decoding, the DGS-Net patch-selection transform and its augmentations, captions, a parallel
//! loader with a bounded prefetch queue, and the synthetic families of the no-download demo.

mod augment;
mod captions;
mod decode;
mod error;
mod jpeg_end;
mod layout;
mod loader;
mod numpy_sort;
mod patches;
mod pil_jpeg;
mod spectral;
pub mod synthetic;
mod transform;

pub use augment::{Augment, gaussian_blur, jpeg_roundtrip};
pub use captions::{Captions, MissingCaption, official_captions_path};
pub use decode::{DecodeOptions, MAX_IMAGE_BYTES, MAX_PIXELS, load_rgb, pipeline_bytes};
pub use error::{DataError, FileError};
pub use layout::{Discovery, IMAGE_EXTENSIONS, Item, Subset, discover, find_images};
pub use loader::{LoadedBatch, Loader, LoaderConfig, MAX_PREFETCH, check_prefetch};
pub use numpy_sort::numpy_argsort;
pub use patches::{
    GRID, OUT_SIZE, PATCH, PatchSelection, ensure_min_size, patch_entropies, select_patches,
    selected_indices, stitch,
};
pub use spectral::SpectralEntropy;
pub use transform::{IMAGENET_MEAN, IMAGENET_STD, Transform, sample_seed};
