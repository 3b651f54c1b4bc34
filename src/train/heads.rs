//! The linear heads `D → 1`: the teacher's `w_t`, the student's `img_fc`, the text `text_fc`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

#[derive(Clone, Debug)]
pub struct Head {
    linear: Linear,
}

impl Head {
    pub fn new(dim: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            linear: candle_nn::linear(dim, 1, vb)?,
        })
    }

    /// Logits `[B]` of features `[B, D]`, in the head's dtype (f32 heads over bf16/f16
    /// features compute in f32).
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        let f = features.to_dtype(self.linear.weight().dtype())?;
        self.linear.forward(&f)?.squeeze(1)
    }

    /// `∂L/∂features` for a loss whose gradient with respect to the logits is `dlogits` (`[B]`):
    /// `dlogits_b · w`, `[B, D]`.
    pub fn input_grad(&self, dlogits: &Tensor) -> Result<Tensor> {
        dlogits.unsqueeze(1)?.broadcast_mul(self.linear.weight())
    }
}
