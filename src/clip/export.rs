//! Export: fold trained LoRA adapters into the frozen weights and write a plain Hugging Face
//! CLIP folder (`config.json`, `model.safetensors`, and `tokenizer.json` when present) that any
//! CLIP loader reads, with no adapter code.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::lora::LoraConfig;
use super::model::LoadError;
use super::staged::StagedFolder;

/// Write `dst` from the Hugging Face folder `src` with every adapter in `adapters` (names as
/// created by [`Clip::new`](super::Clip::new): `….{q,k,v}_proj.lora_{A,B}`) merged:
/// `W ← W + s · B A` with the run's scaling `s` ([`LoraConfig::scale`]). Writes go to temporary files renamed into place; the caller
/// makes sure `dst` is not `src`.
pub fn export_merged(
    src: &Path,
    dst: &Path,
    lora: &LoraConfig,
    adapters: &HashMap<String, Tensor>,
) -> Result<(), LoadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| LoadError::Io { path, source }
    };
    let weights_path = src.join("model.safetensors");
    let weights_err = |source: candle_core::Error| LoadError::Weights {
        path: weights_path.clone(),
        source,
    };
    let mut tensors =
        candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(weights_err)?;
    let scaling = lora.scale();
    let mut merged = 0;
    for (name, a) in adapters {
        let Some(prefix) = name.strip_suffix(".lora_A") else {
            continue;
        };
        let b = adapters
            .get(&format!("{prefix}.lora_B"))
            .ok_or_else(|| LoadError::Config {
                path: dst.to_path_buf(),
                message: format!("adapter `{prefix}` has lora_A but no lora_B"),
            })?;
        let key = format!("{prefix}.weight");
        let w = tensors.get(&key).ok_or_else(|| LoadError::Config {
            path: weights_path.clone(),
            message: format!("tensor `{key}` (adapted by `{prefix}`) is missing"),
        })?;
        let delta = (b
            .to_dtype(DType::F32)
            .map_err(weights_err)?
            .matmul(&a.to_dtype(DType::F32).map_err(weights_err)?)
            .map_err(weights_err)?
            * scaling)
            .map_err(weights_err)?;
        let new = (w.to_dtype(DType::F32).map_err(weights_err)? + delta)
            .and_then(|t| t.to_dtype(w.dtype()))
            .map_err(weights_err)?;
        tensors.insert(key, new);
        merged += 1;
    }
    if merged == 0 && !adapters.is_empty() {
        return Err(LoadError::Config {
            path: dst.to_path_buf(),
            message: "no `lora_A` tensors among the adapters".into(),
        });
    }
    let io_err = |(path, source)| LoadError::Io { path, source };
    let mut folder = StagedFolder::create(dst).map_err(io_err)?;
    let weights = folder.path("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights).map_err(|source| LoadError::Weights {
        path: weights.clone(),
        source,
    })?;
    for file in ["config.json", "tokenizer.json"] {
        let from = src.join(file);
        if from.is_file() {
            std::fs::copy(&from, folder.path(file)).map_err(io(&from))?;
        }
    }
    folder.commit().map_err(io_err)
}
