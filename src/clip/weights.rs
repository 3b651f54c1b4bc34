//! `VarBuilder` backends for the frozen weights: [`SeededWeights`] draws every tensor a fresh
//! model asks for from a SplitMix64 stream keyed by the seed and the tensor's name (so values do
//! not depend on construction order), honouring the model's init hints, and keeps them (for
//! writing the demo's and tests' random CLIP folders); [`Counted`] wraps any backend and counts
//! the bytes it hands out, which is how a model reports the parameter bytes it holds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::Init;
use candle_nn::var_builder::SimpleBackend;

use super::config::ClipConfig;
use super::model::LoadError;
use crate::surgery::rng::SplitMix64;

/// How a [`SeededWeights`] backend fills tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Draw from the init hint with the seeded stream.
    Seeded(u64),
    /// Zeros everywhere (fast; for counting bytes of large models).
    Zeros,
}

/// A `VarBuilder` backend producing plain (non-trainable) tensors; see the module docs.
#[derive(Clone)]
pub struct SeededWeights {
    fill: Fill,
    made: Arc<Mutex<HashMap<String, Tensor>>>,
}

impl SeededWeights {
    pub fn new(fill: Fill) -> Self {
        Self {
            fill,
            made: Arc::default(),
        }
    }

    /// Every tensor handed out so far, by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tensor>> {
        self.made.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn draw(&self, shape: &Shape, name: &str, init: Init) -> Vec<f32> {
        let n = shape.elem_count();
        let seed = match self.fill {
            Fill::Zeros => return vec![0.0; n],
            Fill::Seeded(seed) => seed,
        };
        let mut rng = SplitMix64::for_name(seed, name);
        let std_of = |fan: usize, gain: f64| gain / (fan.max(1) as f64).sqrt();
        let mut sample: Box<dyn FnMut(&mut SplitMix64) -> f64> = match init {
            Init::Const(c) => Box::new(move |_| c),
            Init::Uniform { lo, up } => Box::new(move |r| r.uniform(lo, up)),
            Init::Randn { mean, stdev } => Box::new(move |r| mean + stdev * r.normal()),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = std_of(fan.for_shape(shape), non_linearity.gain());
                match dist {
                    candle_nn::init::NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        Box::new(move |r| r.uniform(-bound, bound))
                    }
                    candle_nn::init::NormalOrUniform::Normal => Box::new(move |r| std * r.normal()),
                }
            }
        };
        (0..n).map(|_| sample(&mut rng) as f32).collect()
    }
}

impl SimpleBackend for SeededWeights {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some(t) = self.lock().get(name) {
            if t.shape() != &s {
                candle_core::bail!(
                    "`{name}` was made with shape {:?}, now asked for {s:?}",
                    t.shape()
                );
            }
            return Ok(t.clone());
        }
        let t = match self.fill {
            // Zeros straight in the target dtype: no f32 staging copy for large models.
            Fill::Zeros => Tensor::zeros(&s, dtype, dev)?,
            Fill::Seeded(_) => {
                Tensor::from_vec(self.draw(&s, name, h), &s, dev)?.to_dtype(dtype)?
            }
        };
        self.lock().insert(name.to_string(), t.clone());
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        self.lock().get(name).cloned().ok_or_else(|| {
            candle_core::Error::Msg(format!("`{name}` has no shape yet: ask with a shape first"))
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}

/// Any backend, counting the bytes of each distinct tensor it hands out.
pub struct Counted<'a> {
    inner: Box<dyn SimpleBackend + 'a>,
    bytes: Arc<Mutex<HashMap<String, usize>>>,
}

impl<'a> Counted<'a> {
    /// The wrapper and a handle on its running count.
    pub fn new(inner: Box<dyn SimpleBackend + 'a>) -> (Self, ByteCount) {
        let bytes = Arc::<Mutex<HashMap<String, usize>>>::default();
        (
            Self {
                inner,
                bytes: bytes.clone(),
            },
            ByteCount(bytes),
        )
    }

    fn record(&self, name: &str, t: &Tensor) {
        let mut m = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(name.to_string(), t.elem_count() * t.dtype().size_in_bytes());
    }
}

/// Bytes handed out by a [`Counted`] backend so far, each name once.
#[derive(Clone, Debug)]
pub struct ByteCount(Arc<Mutex<HashMap<String, usize>>>);

impl ByteCount {
    pub fn bytes(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

impl SimpleBackend for Counted<'_> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self.inner.get(s, name, h, dtype, dev)?;
        self.record(name, &t);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let t = self.inner.get_unchecked(name, dtype, dev)?;
        self.record(name, &t);
        Ok(t)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Any backend, refusing a tensor that holds NaN or ±inf (as stored, or after the conversion to
/// the model's dtype, where a value too large for f16 becomes inf): such a model scores every
/// image NaN, so loading it is the place to say which tensor is broken.
pub struct RequireFinite<'a>(pub Box<dyn SimpleBackend + 'a>);

fn finite(name: &str, t: Tensor) -> Result<Tensor> {
    // x − x is 0 for finite x and NaN otherwise; the sum is NaN if any element is not finite.
    let probe = t
        .sub(&t)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    match probe.is_nan() {
        true => Err(candle_core::Error::Msg(format!(
            "tensor `{name}` holds NaN or infinite values ({:?}); the weights are broken",
            t.dtype()
        ))),
        false => Ok(t),
    }
}

impl SimpleBackend for RequireFinite<'_> {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        finite(name, self.0.get(s, name, h, dtype, dev)?)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        finite(name, self.0.get_unchecked(name, dtype, dev)?)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// Write a Hugging Face CLIP folder with seeded random weights: `config.json`,
/// `model.safetensors` (f32) and a word-level `tokenizer.json` over `words`. It loads through
/// [`Clip::load_hf`](super::Clip::load_hf) exactly like a downloaded openai/clip-vit-* folder.
pub fn write_random_folder(
    dir: &Path,
    config: &ClipConfig,
    seed: u64,
    words: &[&str],
) -> std::result::Result<(), LoadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| LoadError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let weights_path = dir.join("model.safetensors");
    let weights_err = |source: candle_core::Error| LoadError::Weights {
        path: weights_path.clone(),
        source,
    };
    let backend = SeededWeights::new(Fill::Seeded(seed));
    super::Clip::from_backend(
        config.clone(),
        Box::new(backend.clone()),
        DType::F32,
        &Device::Cpu,
        None,
    )
    .map_err(weights_err)?;
    candle_core::safetensors::save(&backend.tensors(), &weights_path).map_err(weights_err)?;
    let config_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(config).map_err(|e| LoadError::Config {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&config_path, text).map_err(io(&config_path))?;
    let tok_path = dir.join("tokenizer.json");
    let tok = super::tiny_tokenizer_json(words, config.text_config.eos_token_id);
    std::fs::write(&tok_path, tok.to_string()).map_err(io(&tok_path))?;
    Ok(())
}
