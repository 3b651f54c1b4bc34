//! `dgs import`: a checkpoint of the official DGS-Net code (a PyTorch `.pth` state dict of its
//! `CLIPModel`) as a dgs model folder and checkpoint that `eval`, `detect`, `train --resume` and
//! `export` take.
//!
//! The state dict holds the student CLIP (`clip_model.*`, OpenAI layout, LoRA'd vision attention),
//! the frozen copy (`clip_model_frozen.clip_model_frozen.*`) with the teacher head
//! (`clip_model_frozen.img_frozen_fc`), and the heads `img_fc` and `text_fc`. The frozen copy
//! becomes the model folder's weights (it is the pretrained CLIP), the adapters and heads the
//! checkpoint. The official LoRA layer adds its update into q, k and v when the model is put in
//! evaluation mode, and a checkpoint saved then holds the merged weights; we tell the two apart
//! by comparing the student's q/k/v with the frozen copy's, which also checks the LoRA alpha.

use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, PthTensors, Stack};
use candle_core::{DType, Device, Tensor};

use super::error::PipelineError;
use super::guard::{differences, refuse_overwriting_inputs};
use super::run::{RunRecord, TrainPlan};
use crate::clip::openai::{Translated, translate};
use crate::clip::staged::StagedFolder;
use crate::clip::{ClipConfig, LoraConfig, LoraScaling, model_files};
use crate::train::{Adam, AdamConfig, Detector, Stage};

const STUDENT: &str = "clip_model.";
const FROZEN: &str = "clip_model_frozen.clip_model_frozen.";
const HEADS: [(&str, &str); 3] = [
    ("clip_model_frozen.img_frozen_fc", "teacher_head.teacher"),
    ("img_fc", "heads.img_fc"),
    ("text_fc", "heads.text_fc"),
];

pub struct ImportOptions {
    /// The LoRA alpha the model was trained with (the checkpoint does not record it).
    pub lora_alpha: f64,
    /// A Hugging Face `tokenizer.json` for the text tower (needed to train further).
    pub tokenizer: Option<PathBuf>,
    /// Replace files already in the output folder.
    pub overwrite: bool,
}

/// What was imported.
pub struct Imported {
    pub config: ClipConfig,
    pub lora: LoraConfig,
    /// The checkpoint held q/k/v with the LoRA update already added.
    pub merged: bool,
    pub checkpoint: PathBuf,
}

fn invalid(pth: &Path, message: impl std::fmt::Display) -> PipelineError {
    PipelineError::Invalid(format!("{}: {message}", pth.display()))
}

/// Import `pth` into the folder `out` (see the module docs).
pub fn import_official(
    pth: &Path,
    out: &Path,
    opts: &ImportOptions,
) -> Result<Imported, PipelineError> {
    let mut outputs = model_files(out).to_vec();
    outputs.push(out.join("checkpoint.safetensors"));
    let mut inputs = vec![pth.to_path_buf()];
    inputs.extend(opts.tokenizer.clone());
    refuse_overwriting_inputs(&outputs, &inputs, "--out folder")?;
    if let Some(existing) = outputs
        .iter()
        .find(|p| p.exists())
        .filter(|_| !opts.overwrite)
    {
        return Err(PipelineError::Invalid(format!(
            "{} exists already: choose another --out folder or pass --overwrite",
            existing.display()
        )));
    }
    let state = read_state_dict(pth)?;
    let fail = |e: crate::clip::openai::OpenAiError| invalid(pth, e);
    let student = translate(&state, STUDENT).map_err(fail)?;
    let frozen = translate(&state, FROZEN).map_err(fail)?;
    let differ = differences(&frozen.config, &student.config);
    if !differ.is_empty() {
        return Err(invalid(
            pth,
            format!(
                "the student and the frozen copy differ in size ({})",
                differ.join(", ")
            ),
        ));
    }
    let rank = student.rank.ok_or_else(|| {
        invalid(
            pth,
            "no LoRA adapters (`w_lora_A`) in the student's vision tower",
        )
    })?;
    let lora = LoraConfig {
        rank,
        alpha: opts.lora_alpha,
        scaling: LoraScaling::Official,
        ..LoraConfig::default()
    };
    let merged = merged_or_not(&student, &frozen, lora.scale()).map_err(|m| invalid(pth, m))?;
    let heads = heads(&state, frozen.config.projection_dim).map_err(|m| invalid(pth, m))?;
    write_model(out, &frozen, opts)?;
    let checkpoint = out.join("checkpoint.safetensors");
    write_checkpoint(out, &checkpoint, lora, &student.adapters, &heads)?;
    Ok(Imported {
        config: frozen.config,
        lora,
        merged,
        checkpoint,
    })
}

/// Every tensor of the state dict in `pth`, which may sit at the top level or under `model` or
/// `state_dict` (training scripts save `{"model": …, "optimizer": …}`); a `module.` prefix
/// (DataParallel) is dropped.
fn read_state_dict(pth: &Path) -> Result<HashMap<String, Tensor>, PipelineError> {
    let key = state_dict_key(pth).map_err(|m| {
        invalid(
            pth,
            format!("not a PyTorch checkpoint in torch.save's zip format ({m})"),
        )
    })?;
    let tensors = PthTensors::new(pth, key).map_err(|e| invalid(pth, e))?;
    let mut out = HashMap::new();
    for name in tensors.tensor_infos().keys() {
        let t = tensors
            .get(name)
            .map_err(|e| invalid(pth, format!("tensor `{name}`: {e}")))?
            .ok_or_else(|| invalid(pth, format!("tensor `{name}` cannot be read")))?;
        let name = name.strip_prefix("module.").unwrap_or(name);
        out.insert(
            name.to_string(),
            t.to_dtype(DType::F32).map_err(|e| invalid(pth, e))?,
        );
    }
    if out.is_empty() {
        return Err(invalid(pth, "holds no tensors: not a state dict"));
    }
    Ok(out)
}

/// The key the state dict sits under, from a look at the pickle's top-level dictionary.
fn state_dict_key(pth: &Path) -> Result<Option<&'static str>, String> {
    let file = std::fs::File::open(pth).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| e.to_string())?;
    let pickle = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or("no data.pkl inside")?;
    let mut reader = BufReader::new(zip.by_name(&pickle).map_err(|e| e.to_string())?);
    let mut stack = Stack::empty();
    stack.read_loop(&mut reader).map_err(|e| e.to_string())?;
    let Object::Dict(entries) = stack.finalize().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    Ok(["model", "state_dict"].into_iter().find(|key| {
        entries
            .iter()
            .any(|(k, v)| *k == Object::Unicode(key.to_string()) && matches!(v, Object::Dict(_)))
    }))
}

fn max_abs(t: &Tensor) -> candle_core::Result<f32> {
    t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// How far the student's tensor `s` is from the frozen `w`: the tolerance (relative to `w`), the
/// largest `|s − w|` and, for an adapted projection, the largest `|s − w − s·B·A|`.
fn gaps(
    s: &Tensor,
    w: &Tensor,
    adapter: Option<(&Tensor, &Tensor)>,
    scale: f64,
) -> candle_core::Result<(f32, f32, Option<f32>)> {
    let diff = (s - w)?;
    let with = match adapter {
        Some((a, b)) => Some(max_abs(&(&diff - (b.matmul(a)? * scale)?)?)?),
        None => None,
    };
    Ok((1e-5 * (1.0 + max_abs(w)?), max_abs(&diff)?, with))
}

/// Whether the student's q/k/v hold the LoRA update (`W + s·B·A`) or not (`W`), `W` being the
/// frozen copy's; anything else (another alpha, another model) is an error. Every other
/// student tensor must equal the frozen copy's.
fn merged_or_not(student: &Translated, frozen: &Translated, scale: f64) -> Result<bool, String> {
    let mut verdict: Option<bool> = None;
    for (name, w) in &frozen.tensors {
        let prefix = name.strip_suffix(".weight").unwrap_or(name);
        let adapter = student
            .adapters
            .get(&format!("{prefix}.lora_A"))
            .zip(student.adapters.get(&format!("{prefix}.lora_B")));
        let (tol, plain, with) =
            gaps(&student.tensors[name], w, adapter, scale).map_err(|e| e.to_string())?;
        let this = match (plain <= tol, with) {
            (true, _) => false,
            (false, Some(d)) if d <= tol => true,
            (false, None) => {
                return Err(format!(
                    "the student's `{name}` differs from the frozen copy's by {plain:e}: it should \
                     be frozen"
                ));
            }
            (false, Some(d)) => {
                return Err(format!(
                    "the student's `{name}` is neither the frozen weight ({plain:e} apart) nor it \
                     plus the LoRA update at this alpha ({d:e} apart): pass the alpha the model \
                     was trained with (--lora-alpha)"
                ));
            }
        };
        if adapter.is_none() {
            continue;
        }
        if verdict.is_some_and(|v| v != this) {
            return Err("some q/k/v weights hold the LoRA update and some do not".into());
        }
        verdict = Some(this);
    }
    Ok(verdict.unwrap_or(false))
}

/// The three heads under our checkpoint names, each `Linear(dim, 1)`.
fn heads(state: &HashMap<String, Tensor>, dim: usize) -> Result<HashMap<String, Tensor>, String> {
    let mut out = HashMap::new();
    for (from, to) in HEADS {
        for (p, shape) in [("weight", vec![1, dim]), ("bias", vec![1])] {
            let key = format!("{from}.{p}");
            let t = state
                .get(&key)
                .ok_or_else(|| format!("tensor `{key}` is missing"))?;
            if t.dims() != shape.as_slice() {
                return Err(format!(
                    "tensor `{key}` has shape {:?}, expected {shape:?} (one logit per image)",
                    t.dims()
                ));
            }
            out.insert(format!("{to}.{p}"), t.clone());
        }
    }
    Ok(out)
}

/// config.json, model.safetensors (the frozen copy) and, when given, tokenizer.json, staged
/// ([`StagedFolder`]).
fn write_model(out: &Path, frozen: &Translated, opts: &ImportOptions) -> Result<(), PipelineError> {
    let io_err = |(path, source)| PipelineError::Io { path, source };
    let mut folder = StagedFolder::create(out).map_err(io_err)?;
    let config = serde_json::to_string_pretty(&frozen.config)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    let config_path = folder.path("config.json");
    std::fs::write(&config_path, config).map_err(|e| io_err((config_path, e)))?;
    let weights = folder.path("model.safetensors");
    candle_core::safetensors::save(&frozen.tensors, &weights)
        .map_err(|e| PipelineError::compute(format!("writing {}", weights.display()), e))?;
    if let Some(t) = &opts.tokenizer {
        std::fs::copy(t, folder.path("tokenizer.json")).map_err(|e| io_err((t.clone(), e)))?;
    }
    folder.commit().map_err(io_err)
}

/// A dgs checkpoint of the imported adapters and heads: the official recipe's plan with both
/// stages done, and a fresh stage-2 optimizer (the official checkpoint keeps none we use).
fn write_checkpoint(
    model: &Path,
    path: &Path,
    lora: LoraConfig,
    adapters: &HashMap<String, Tensor>,
    heads: &HashMap<String, Tensor>,
) -> Result<(), PipelineError> {
    let device = Device::Cpu;
    let det = Detector::from_hf(model, DType::F32, &device, lora)?;
    for (name, var) in det.all_trainables() {
        let value = match name.strip_prefix("lora.") {
            Some(adapter) => adapters.get(adapter),
            None => heads.get(&name),
        }
        .ok_or_else(|| PipelineError::Invalid(format!("the import has no `{name}`")))?;
        var.set(value)
            .map_err(|e| PipelineError::compute(format!("setting `{name}`"), e))?;
    }
    let plan = TrainPlan {
        lora,
        ..TrainPlan::default()
    };
    let record = RunRecord {
        format: RunRecord::FORMAT.into(),
        model: det.clip.config.clone(),
        stage1_done: plan.stage1_epochs,
        stage2_done: plan.stage2_epochs,
        plan,
        history: Vec::new(),
        scaler: None,
    };
    let adam: BTreeMap<_, _> = det.trainables(Stage::Two);
    let opt = Adam::new(adam, AdamConfig::default())
        .map_err(|e| PipelineError::compute("the optimizer state", e))?;
    let json = serde_json::to_value(&record).map_err(|e| PipelineError::Invalid(e.to_string()))?;
    det.save_checkpoint(path, &opt, &json)?;
    Ok(())
}
