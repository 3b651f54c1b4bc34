//! Parallel loading with a bounded prefetch queue: a producer thread decodes and transforms each
//! batch's images in parallel (rayon) and queues up to `prefetch` ready batches, so the model
//! only waits when the disk or the decoder is the bottleneck. A file that fails is left out of
//! its batch and reported with it; the epoch goes on.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use rayon::prelude::*;

use super::decode::{DecodeOptions, load_rgb};
use super::error::FileError;
use super::layout::Item;
use super::patches::OUT_SIZE;
use super::transform::{Transform, sample_seed};
use crate::surgery::rng::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle the order every epoch (training).
    pub shuffle: bool,
    pub seed: u64,
    /// Ready batches queued ahead of the consumer, 1 to [`MAX_PREFETCH`].
    pub prefetch: usize,
    pub decode: DecodeOptions,
}

/// The most batches a loader queues ahead: each holds `batch_size` decoded images, so a queue
/// much longer than the training step's lead only holds memory.
pub const MAX_PREFETCH: usize = 256;

/// One batch of transformed images, in item order within the batch.
#[derive(Clone, Debug, Default)]
pub struct LoadedBatch {
    /// `[len, 3, 224, 224]`, flattened.
    pub pixels: Vec<f32>,
    pub labels: Vec<u8>,
    /// Indices into the loader's items.
    pub indices: Vec<usize>,
    /// Files of this batch that could not be used.
    pub failed: Vec<FileError>,
}

impl LoadedBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

pub struct Loader {
    items: Arc<Vec<Item>>,
    transform: Transform,
    cfg: LoaderConfig,
}

/// A prefetch depth the loader can allocate: 1 to [`MAX_PREFETCH`] batches.
pub fn check_prefetch(prefetch: usize) -> Result<(), String> {
    match (1..=MAX_PREFETCH).contains(&prefetch) {
        true => Ok(()),
        false => Err(format!(
            "--prefetch must be 1 to {MAX_PREFETCH} batches, got {prefetch}"
        )),
    }
}

/// Pixels per transformed image.
const IMAGE_LEN: usize = 3 * OUT_SIZE * OUT_SIZE;

impl Loader {
    pub fn new(items: Vec<Item>, transform: Transform, cfg: LoaderConfig) -> Result<Self, String> {
        if cfg.batch_size == 0 {
            return Err("batch size must be at least 1".into());
        }
        check_prefetch(cfg.prefetch)?;
        transform.augment.validate()?;
        Ok(Self {
            items: Arc::new(items),
            transform,
            cfg,
        })
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Batches in an epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.items.len().div_ceil(self.cfg.batch_size)
    }

    /// The batches of `epoch`; loading runs ahead on another thread and stops when the iterator
    /// is dropped.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = LoadedBatch> + use<> {
        let (tx, rx) = sync_channel(self.cfg.prefetch);
        let items = self.items.clone();
        let (transform, cfg) = (self.transform, self.cfg);
        let mut order: Vec<usize> = (0..items.len()).collect();
        if cfg.shuffle {
            SplitMix64::new(cfg.seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407))
                .shuffle(&mut order);
        }
        std::thread::spawn(move || {
            for chunk in order.chunks(cfg.batch_size) {
                let loaded: Vec<(usize, Result<Vec<f32>, FileError>)> = chunk
                    .par_iter()
                    .map(|&i| {
                        let item = &items[i];
                        let seed = sample_seed(cfg.seed, epoch, i as u64);
                        let px = load_rgb(&item.path, cfg.decode).and_then(|img| {
                            transform
                                .apply(img, seed)
                                .map_err(|r| FileError::new(&item.path, r))
                        });
                        (i, px)
                    })
                    .collect();
                let mut batch = LoadedBatch {
                    pixels: Vec::with_capacity(chunk.len() * IMAGE_LEN),
                    ..LoadedBatch::default()
                };
                for (i, px) in loaded {
                    match px {
                        Ok(px) => {
                            batch.pixels.extend_from_slice(&px);
                            batch.labels.push(items[i].label);
                            batch.indices.push(i);
                        }
                        Err(e) => batch.failed.push(e),
                    }
                }
                if tx.send(batch).is_err() {
                    return;
                }
            }
        });
        Batches { rx }
    }
}

struct Batches {
    rx: Receiver<LoadedBatch>,
}

impl Iterator for Batches {
    type Item = LoadedBatch;

    fn next(&mut self) -> Option<LoadedBatch> {
        self.rx.recv().ok()
    }
}
