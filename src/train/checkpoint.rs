//! Checkpoints: only what training changes (LoRA adapters, heads), the optimizer state and step,
//! and the run's configuration, in one safetensors file written atomically (temporary file, then
//! rename), so an interrupted write never replaces the last good checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};

use super::adam::Adam;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const PARAM: &str = "param/";
const OPTIM: &str = "adam/";

/// Write `params` (trainable tensors by name), the optimizer state, and `config` (any JSON) to
/// `path`.
pub fn save(
    path: &Path,
    params: &BTreeMap<String, Var>,
    adam: &Adam,
    config: &serde_json::Value,
) -> Result<(), CheckpointError> {
    let format = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut tensors: Vec<(String, Tensor)> = params
        .iter()
        .map(|(k, v)| (format!("{PARAM}{k}"), v.as_tensor().clone()))
        .collect();
    tensors.extend(
        adam.state()
            .map(|(k, t)| (format!("{OPTIM}{k}"), t.clone())),
    );
    let mut meta = HashMap::new();
    meta.insert("config".to_string(), config.to_string());
    meta.insert("step".to_string(), adam.step_count().to_string());
    meta.insert("format".to_string(), "dgs-checkpoint-1".to_string());
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        Some(meta),
        &tmp,
    )
    .map_err(|e| format(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What [`load`] returns.
pub struct Loaded {
    pub params: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub step: u64,
    pub config: serde_json::Value,
}

pub fn load(path: &Path, device: &Device) -> Result<Loaded, CheckpointError> {
    let format = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |e: &dyn std::fmt::Display| {
        format(format!(
            "not a valid safetensors file (truncated or corrupt): {e}"
        ))
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(&e))?;
    let info = meta.metadata().clone().unwrap_or_default();
    if info.get("format").map(String::as_str) != Some("dgs-checkpoint-1") {
        return Err(format(
            "not a dgs checkpoint (metadata `format` is missing or unknown)".into(),
        ));
    }
    let step = info
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format("metadata `step` is missing".into()))?;
    let config = info
        .get("config")
        .map(|c| serde_json::from_str(c))
        .transpose()
        .map_err(|e| format(format!("metadata `config`: {e}")))?
        .unwrap_or(serde_json::Value::Null);
    let all = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| corrupt(&e))?;
    let (mut params, mut optimizer) = (HashMap::new(), HashMap::new());
    for (k, t) in all {
        if let Some(name) = k.strip_prefix(PARAM) {
            params.insert(name.to_string(), t);
        } else if let Some(name) = k.strip_prefix(OPTIM) {
            optimizer.insert(name.to_string(), t);
        }
    }
    Ok(Loaded {
        params,
        optimizer,
        step,
        config,
    })
}

/// Copy checkpointed values into the live parameters; every parameter must be present with its
/// shape.
pub fn restore_params(
    path: &Path,
    params: &BTreeMap<String, Var>,
    saved: &HashMap<String, Tensor>,
) -> Result<(), CheckpointError> {
    let format = |message: String| CheckpointError::Format {
        path: path.to_path_buf(),
        message,
    };
    for (name, var) in params {
        let t = saved
            .get(name)
            .ok_or_else(|| format(format!("tensor `{name}` is missing")))?;
        if t.shape() != var.shape() {
            return Err(format(format!(
                "tensor `{name}` has shape {:?}, the model needs {:?}",
                t.shape(),
                var.shape()
            )));
        }
        var.set(t).map_err(|e| format(e.to_string()))?;
    }
    Ok(())
}
