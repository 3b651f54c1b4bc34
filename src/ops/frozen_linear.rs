//! A linear layer with frozen weights whose backward pass returns only the input gradient.
//!
//! candle's autograd differentiates every input of every op: through a frozen `Linear` it also
//! computes the weight gradient (a GEMM as large as the forward one) and the bias gradient, and
//! accumulates each into a fresh zero tensor the size of the operand (for the bias: the size of
//! the output). A DGS step needs none of these — the base weights are frozen — and the GPU
//! profile (docs/perf.md) shows them among the largest costs of the backward. Here the forward
//! runs on a detached input (the same numbers as candle-nn's `Linear`, bias added without the
//! broadcasting kernel), and one op ties the output back to the input with the backward
//! `dx = g · W`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use candle_nn::Linear;

use super::repeat::repeat_rows;

struct InputGradOnly {
    weight: Tensor,
}

/// The output is handed back unchanged (one copy: a custom op must return its own storage).
fn check_fresh(layout: &Layout) -> Result<()> {
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        candle_core::bail!("frozen linear: the output must be a fresh contiguous tensor")
    }
    Ok(())
}

impl CustomOp2 for InputGradOnly {
    fn name(&self) -> &'static str {
        "dgs-frozen-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        y: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        check_fresh(yl)?;
        Ok((y.try_clone(yl)?, yl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        y: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        check_fresh(yl)?;
        Ok((y.try_clone(yl)?, yl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // As candle-nn's forward does: rows flattened to one [N, out] × [out, in] product, so the
        // input gradient is the same product plain autograd computes.
        let dx = grad
            .detach()
            .contiguous()?
            .reshape(((), self.weight.dim(0)?))?
            .matmul(&self.weight)?
            .reshape(x.shape())?;
        Ok((Some(dx), None))
    }
}

/// `x · Wᵀ + b` on untracked tensors, with the same numbers as candle-nn's `Linear` (rows
/// flattened to one product). The bias is expanded to the output's shape first
/// ([`repeat_rows`]): candle's broadcasting add was the largest forward cost in the GPU profile;
/// the expansion is exact, so the sum is the same.
fn forward(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (out, inp) = layer.weight().dims2()?;
    if dims.last() != Some(&inp) {
        candle_core::bail!(
            "frozen linear: input {dims:?} does not end in the layer's {inp} features"
        )
    }
    let mut y = x
        .contiguous()?
        .reshape(((), inp))?
        .matmul(&layer.weight().t()?)?;
    if let Some(b) = layer.bias() {
        y = (&y + repeat_rows(b, y.dim(0)?)?)?;
    }
    let mut shape = dims;
    if let Some(last) = shape.last_mut() {
        *last = out;
    }
    y.reshape(shape)
}

/// `layer(x)` for a `Linear` whose weight and bias are frozen: candle-nn's forward (same
/// numbers), differentiable with respect to `x` only (no weight or bias gradients are computed).
/// A layer whose weight or bias is a trainable variable takes candle-nn's own path, so that it
/// gets its gradients.
pub fn frozen_linear(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    if layer.weight().is_variable() || layer.bias().is_some_and(Tensor::is_variable) {
        return candle_core::Module::forward(layer, x);
    }
    if !x.track_op() {
        return forward(layer, x);
    }
    let mut y = forward(layer, &x.detach())?;
    if !y.is_contiguous() || y.layout().start_offset() != 0 {
        y = y.copy()?;
    }
    x.apply_op2(
        &y,
        InputGradOnly {
            weight: layer.weight().detach(),
        },
    )
}
