//! LoRA on a frozen linear layer: `y = W x + b + s · B A dropout(x)`, with `s` the scaling of
//! [`LoraScaling`]. The scaling applies to the low-rank term only; dropout acts on the LoRA input
//! only and only in training, with its own mask per layer (q, k and v each draw one). `A` starts
//! Kaiming-uniform (`U(±1/√in)`, PyTorch's `kaiming_uniform_(a = √5)`), `B` at zero, so a fresh
//! adapter changes nothing.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Dropout, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

pub use crate::ops::block::DropoutKey;

/// How the low-rank update is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoraScaling {
    /// `alpha / √rank`: the LoRA layer the official DGS-Net code trains with (√6 ≈ 2.449 for
    /// the paper's rank 6, alpha 6).
    Official,
    /// `alpha / rank`: peft's rule (1 for rank 6, alpha 6).
    Peft,
}

impl LoraScaling {
    /// What checkpoints written before the rule was recorded were trained with.
    pub fn recorded_before_choice() -> Self {
        Self::Peft
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    #[serde(default = "LoraScaling::recorded_before_choice")]
    pub scaling: LoraScaling,
}

impl LoraConfig {
    /// The factor of the low-rank term.
    pub fn scale(&self) -> f64 {
        match self.scaling {
            LoraScaling::Official => self.alpha / (self.rank as f64).sqrt(),
            LoraScaling::Peft => self.alpha / self.rank as f64,
        }
    }
}

impl Default for LoraConfig {
    /// The paper's settings: rank 6, alpha 6, dropout 0.8, the official scaling.
    fn default() -> Self {
        Self {
            rank: 6,
            alpha: 6.0,
            dropout: 0.8,
            scaling: LoraScaling::Official,
        }
    }
}

/// Whether a forward pass uses the adapters, and whether it is a training pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The frozen model (the teacher): adapters off.
    Frozen,
    /// The student in evaluation: adapters on, no dropout.
    Student,
    /// The student in training: adapters on, dropout on the adapter input, its masks drawn
    /// from the key's stream (the run's seed and the step).
    StudentTrain(DropoutKey),
}

/// One adapter's variables in `vb`: `lora_A` (rank × in, Kaiming-uniform like peft) and
/// `lora_B` (out × rank, zeros).
pub(crate) fn adapter_vars(
    cfg: &LoraConfig,
    vb: VarBuilder<'_>,
    out_dim: usize,
    in_dim: usize,
) -> Result<(Tensor, Tensor)> {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let uniform = candle_nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let a = vb.get_with_hints((cfg.rank, in_dim), "lora_A", uniform)?;
    let b = vb.get_with_hints((out_dim, cfg.rank), "lora_B", candle_nn::Init::Const(0.0))?;
    Ok((a, b))
}

/// A frozen linear layer with an optional trainable low-rank adapter.
#[derive(Clone, Debug)]
pub struct LoraLinear {
    base: Linear,
    adapter: Option<Adapter>,
}

#[derive(Clone, Debug)]
struct Adapter {
    a: Tensor,
    b: Tensor,
    scaling: f64,
    dropout: Dropout,
}

impl LoraLinear {
    /// `base` is the frozen layer; `lora` (a `VarBuilder` over trainable variables) creates
    /// `lora_A` (rank × in, Kaiming-uniform like peft) and `lora_B` (out × rank, zeros).
    pub fn new(base: Linear, cfg: Option<(&LoraConfig, VarBuilder<'_>)>) -> Result<Self> {
        let adapter = match cfg {
            None => None,
            Some((cfg, vb)) => {
                let (out_dim, in_dim) = base.weight().dims2()?;
                let (a, b) = adapter_vars(cfg, vb, out_dim, in_dim)?;
                Some(Adapter {
                    a,
                    b,
                    scaling: cfg.scale(),
                    dropout: Dropout::new(cfg.dropout),
                })
            }
        };
        Ok(Self { base, adapter })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_with_cast(x, None, mode)
    }

    /// The dtype the adapter computes in (f32 even over f16/bf16 base weights), if it has one.
    pub fn adapter_dtype(&self) -> Option<DType> {
        self.adapter.as_ref().map(|ad| ad.a.dtype())
    }

    /// [`forward`](Self::forward) given `x` already cast to the adapter's dtype, so that layers
    /// sharing an input (q, k, v) cast it once.
    pub fn forward_with_cast(
        &self,
        x: &Tensor,
        x_cast: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        let y = crate::ops::frozen_linear(&self.base, x)?;
        match (&self.adapter, mode) {
            (None, _) | (_, Mode::Frozen) => Ok(y),
            (Some(ad), mode) => {
                let x32 = match x_cast {
                    Some(c) if c.dtype() == ad.a.dtype() => c.clone(),
                    _ => x.to_dtype(ad.a.dtype())?,
                };
                let xin = ad
                    .dropout
                    .forward(&x32, matches!(mode, Mode::StudentTrain(_)))?;
                let low = xin
                    .broadcast_matmul(&ad.a.t()?)?
                    .broadcast_matmul(&ad.b.t()?)?;
                let low = (low * ad.scaling)?.to_dtype(y.dtype())?;
                y + low
            }
        }
    }
}
