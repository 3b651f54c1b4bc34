//! LoRA adapters in peft's format, both ways: a folder with `adapter_config.json` and
//! `adapter_model.safetensors` (tensors named
//! `base_model.model.vision_model.encoder.layers.N.self_attn.q_proj.lora_A.weight`), as peft's
//! `save_pretrained` writes it and `PeftModel.from_pretrained` reads it.
//!
//! peft's `use_rslora` scales by alpha / √r — the official DGS-Net rule — and plain peft by
//! alpha / r, so both of our scalings travel exactly. dgs adapts the q, k and v projections of the
//! vision layers; a peft folder may adapt a subset of them (q and v is common), anything else is
//! refused. Per-module ranks or alphas (`rank_pattern`, `alpha_pattern`), DoRA, LoRA biases and
//! `fan_in_fan_out` are refused too: none has an equivalent here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use super::config::ClipConfig;
use super::lora::{LoraConfig, LoraScaling};
use super::staged::StagedFolder;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";
/// The modules dgs adapts, as a peft `target_modules` pattern.
const TARGETS: &str = r".*vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)";

#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Adapters read from a peft folder, under our names (`….q_proj.lora_A`).
pub struct PeftAdapters {
    pub rank: usize,
    pub alpha: f64,
    pub scaling: LoraScaling,
    pub adapters: HashMap<String, Tensor>,
}

fn invalid(path: &Path, message: impl Into<String>) -> PeftError {
    PeftError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Read the peft folder `dir` for a model of `config` (see the module docs).
pub fn read_peft(dir: &Path, config: &ClipConfig) -> Result<PeftAdapters, PeftError> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|source| PeftError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| invalid(&cfg_path, format!("not a JSON adapter config: {e}")))?;
    let (rank, alpha, scaling) = settings(&cfg).map_err(|m| invalid(&cfg_path, m))?;
    let weights_path = dir.join(ADAPTER_WEIGHTS);
    let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| {
        invalid(
            &weights_path,
            format!("not a valid safetensors file (truncated or corrupt): {e}"),
        )
    })?;
    let hidden = config.vision_config.tower.hidden_size;
    let layers = config.vision_config.tower.num_hidden_layers;
    let mut adapters = HashMap::new();
    for (key, t) in tensors {
        let name = ours(&key, layers).ok_or_else(|| {
            invalid(
                &weights_path,
                format!(
                    "`{key}` is not an adapter dgs has: it adapts q_proj, k_proj and v_proj of \
                     the {layers} vision layers only"
                ),
            )
        })?;
        let want = match name.ends_with("lora_A") {
            true => [rank, hidden],
            false => [hidden, rank],
        };
        if t.dims() != want {
            return Err(invalid(
                &weights_path,
                format!(
                    "`{key}` has shape {:?}, expected {want:?} (rank {rank})",
                    t.dims()
                ),
            ));
        }
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| invalid(&weights_path, e.to_string()))?;
        adapters.insert(name, t);
    }
    for name in adapters.keys() {
        let twin = match name.strip_suffix("lora_A") {
            Some(p) => format!("{p}lora_B"),
            None => name.replace("lora_B", "lora_A"),
        };
        if !adapters.contains_key(&twin) {
            return Err(invalid(&weights_path, format!("`{name}` has no `{twin}`")));
        }
    }
    Ok(PeftAdapters {
        rank,
        alpha,
        scaling,
        adapters,
    })
}

/// Rank, alpha and scaling from a peft config, refusing what has no equivalent here.
fn settings(cfg: &Value) -> Result<(usize, f64, LoraScaling), String> {
    let field = |k: &str| cfg.get(k).unwrap_or(&Value::Null);
    if field("peft_type").as_str() != Some("LORA") {
        return Err(format!("peft_type is {}, not \"LORA\"", field("peft_type")));
    }
    for unsupported in ["use_dora", "fan_in_fan_out", "lora_bias"] {
        if field(unsupported).as_bool() == Some(true) {
            return Err(format!("{unsupported} is set; dgs has no equivalent"));
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if field(pattern).as_object().is_some_and(|m| !m.is_empty()) {
            return Err(format!(
                "{pattern} gives modules their own values; dgs has one rank and alpha"
            ));
        }
    }
    if field("bias").as_str().is_some_and(|b| b != "none") {
        return Err(format!("bias is {}; dgs trains no biases", field("bias")));
    }
    let rank = field("r")
        .as_u64()
        .filter(|&r| r > 0)
        .ok_or("`r` must be a positive integer")? as usize;
    let alpha = field("lora_alpha")
        .as_f64()
        .filter(|a| *a > 0.0)
        .ok_or("`lora_alpha` must be a positive number")?;
    let scaling = match field("use_rslora").as_bool().unwrap_or(false) {
        true => LoraScaling::Official,
        false => LoraScaling::Peft,
    };
    Ok((rank, alpha, scaling))
}

/// Our adapter name for a peft tensor name, if it is one of the adapters dgs has.
fn ours(key: &str, layers: usize) -> Option<String> {
    let name = key.strip_prefix(PREFIX)?.strip_suffix(".weight")?;
    let rest = name.strip_prefix("vision_model.encoder.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok().filter(|&l| l < layers)?;
    let (proj, matrix) = rest.strip_prefix("self_attn.")?.split_once('.')?;
    let known =
        ["q_proj", "k_proj", "v_proj"].contains(&proj) && ["lora_A", "lora_B"].contains(&matrix);
    known.then(|| format!("vision_model.encoder.layers.{layer}.self_attn.{proj}.{matrix}"))
}

/// Write `adapters` (our names) with `lora`'s settings as a peft folder `dir`, each file under a
/// temporary name first ([`StagedFolder`]).
pub fn write_peft(
    dir: &Path,
    lora: &LoraConfig,
    adapters: &HashMap<String, Tensor>,
) -> Result<(), PeftError> {
    let io_err = |(path, source)| PeftError::Io { path, source };
    let mut folder = StagedFolder::create(dir).map_err(io_err)?;
    let config = json!({
        "peft_type": "LORA",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "use_rslora": lora.scaling == LoraScaling::Official,
        "target_modules": TARGETS,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": null,
        "task_type": null,
        "base_model_name_or_path": null,
    });
    let tensors: HashMap<String, Tensor> = adapters
        .iter()
        .map(|(k, t)| (format!("{PREFIX}{k}.weight"), t.clone()))
        .collect();
    let text = serde_json::to_string_pretty(&config).map_err(|e| invalid(dir, e.to_string()))?;
    let config_path = folder.path(ADAPTER_CONFIG);
    std::fs::write(&config_path, text).map_err(|e| io_err((config_path, e)))?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    let weights_path = folder.path(ADAPTER_WEIGHTS);
    safetensors::serialize_to_file(&tensors, metadata, &weights_path)
        .map_err(|e| invalid(&weights_path, e.to_string()))?;
    folder.commit().map_err(io_err)
}
