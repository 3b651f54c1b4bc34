//! Binary cross-entropy on logits, in the numerically stable form PyTorch's `BCEWithLogitsLoss`
//! uses, and its gradient with respect to the logits.

use candle_core::{Result, Tensor};

/// `mean_b [max(z, 0) − z·y + log(1 + e^{−|z|})]` over logits `z` and targets `y` (both `[B]`).
pub fn bce_with_logits(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    let soft = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((z.relu()? - (z * y)?)? + soft)?.mean_all()
}

/// `∂ mean BCE / ∂z_b = (σ(z_b) − y_b) / B`.
pub fn bce_logit_grad(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    let b = z.dim(0)? as f64;
    (candle_nn::ops::sigmoid(z)? - y)? / b
}
