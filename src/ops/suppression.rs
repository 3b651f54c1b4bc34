//! The surgery as candle custom ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

use super::dtype::element_dtype;
use crate::dispatch_dtype;
use crate::surgery::{Element, RowProjection, RowStatsMut, cpu};

/// `g ↦ g − (g·ĥ) ĥ` row by row (rows = all leading dimensions, the last one is the row), with
/// `ĥ` from the second argument. Linear and symmetric in `g`, so its backward is itself.
#[derive(Clone, Copy, Debug)]
pub struct ProjectOffHarm {
    pub eps: f32,
}

/// The identity whose backward applies [`ProjectOffHarm`] to the incoming gradient.
#[derive(Clone, Copy, Debug)]
struct Suppress {
    eps: f32,
}

/// Where the rows of a (gradient, harm) pair lie in their storages.
pub(super) struct Rows {
    pub rows: usize,
    pub dim: usize,
    /// `start..end` of each argument in its storage.
    pub grad: (usize, usize),
    pub harm: (usize, usize),
}

/// Both arguments contiguous, same shape, at least one dimension.
fn rows_of(op: &str, l1: &Layout, l2: &Layout) -> Result<Rows> {
    if l1.shape() != l2.shape() {
        candle_core::bail!(
            "{op}: the gradient has shape {:?} but harm has {:?}; they must match",
            l1.shape(),
            l2.shape()
        );
    }
    let dims = l1.shape().dims();
    let Some(&dim) = dims.last() else {
        candle_core::bail!("{op}: expected at least one dimension (rows × features), got a scalar");
    };
    let rows = dims[..dims.len() - 1].iter().product();
    let contiguous = |l: &Layout, which: &str| {
        l.contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{op}: `{which}` must be contiguous")))
    };
    Ok(Rows {
        rows,
        dim,
        grad: contiguous(l1, "grad")?,
        harm: contiguous(l2, "harm")?,
    })
}

fn project<T: Element>(g: &[T], h: &[T], rows: usize, dim: usize, eps: f32) -> Result<Vec<T>> {
    let mut out = g.to_vec();
    let p = RowProjection::new(rows, dim, h).with_eps(eps);
    cpu::dgs_rows(&mut out, &p, RowStatsMut::default()).map_err(candle_core::Error::wrap)?;
    Ok(out)
}

impl CustomOp2 for ProjectOffHarm {
    fn name(&self) -> &'static str {
        "dgs-project-off-harm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Rows {
            rows,
            dim,
            grad: (a1, b1),
            harm: (a2, b2),
        } = rows_of(self.name(), l1, l2)?;
        let dtype = element_dtype(self.name(), &[s1.dtype(), s2.dtype()])?;
        let out = dispatch_dtype!(dtype, T => {
            let (g, h) = (T::cpu_storage_as_slice(s1)?, T::cpu_storage_as_slice(s2)?);
            T::to_cpu_storage_owned(project(&g[a1..b1], &h[a2..b2], rows, dim, self.eps)?)
        });
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let r = rows_of(self.name(), l1, l2)?;
        let dtype = element_dtype(self.name(), &[s1.dtype(), s2.dtype()])?;
        let out = dispatch_dtype!(dtype, T => super::suppression_cuda::project::<T>(s1, s2, &r, self.eps)?);
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _g: &Tensor,
        harm: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // P = I − ĥĥᵀ is symmetric, so the vector-Jacobian product is P applied to the gradient.
        Ok((Some(grad_res.apply_op2_no_bwd(harm, self)?), None))
    }
}

impl CustomOp2 for Suppress {
    fn name(&self) -> &'static str {
        "dgs-orthogonal-suppression"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = rows_of(self.name(), l1, l2)?.grad;
        let dtype = element_dtype(self.name(), &[s1.dtype(), s2.dtype()])?;
        let out = dispatch_dtype!(dtype, T => {
            T::to_cpu_storage_owned(T::cpu_storage_as_slice(s1)?[a..b].to_vec())
        });
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let rows = rows_of(self.name(), l1, l2)?.grad;
        let dtype = element_dtype(self.name(), &[s1.dtype(), s2.dtype()])?;
        let out = dispatch_dtype!(dtype, T => super::suppression_cuda::copy::<T>(s1, rows)?);
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        harm: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let p = ProjectOffHarm { eps: self.eps };
        Ok((Some(grad_res.apply_op2_no_bwd(harm, &p)?), None))
    }
}

/// The official DGS hook as an op: returns `features` unchanged (a copy), and in the backward
/// pass hands `features` the gradient with, row by row, its component along
/// `ĥ = relu(harm)/(‖relu(harm)‖ + eps)` removed. `harm` (the text-branch gradient `g_text`,
/// same shape) receives no gradient. Rows are all leading dimensions; both tensors must be
/// contiguous f32, f16 or bf16 of one dtype.
pub fn orthogonal_suppression(features: &Tensor, harm: &Tensor, eps: f32) -> Result<Tensor> {
    features.apply_op2(&harm.detach(), Suppress { eps })
}

/// The same surgery written as a chain of stock candle ops (for comparison and for backends
/// without our kernel): `y = f − (f·ĥ)ĥ + stopgrad((f·ĥ)ĥ)`, so `y = f` (up to one rounding) and
/// `∂L/∂f = g − (g·ĥ)ĥ`. It launches about ten kernels and keeps their intermediates for the
/// backward pass, where [`orthogonal_suppression`] runs one fused pass.
pub fn orthogonal_suppression_op_chain(
    features: &Tensor,
    harm: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let h = harm.detach().relu()?;
    let norm = h.sqr()?.sum_keepdim(candle_core::D::Minus1)?.sqrt()?;
    let unit = h.broadcast_div(&(norm + f64::from(eps))?)?;
    let along = (features * &unit)?
        .sum_keepdim(candle_core::D::Minus1)?
        .broadcast_mul(&unit)?;
    (features - &along)? + along.detach()
}

/// [`ProjectOffHarm`] applied to a tensor (differentiable: its backward is the same projection).
pub fn project_off_harm(grad: &Tensor, harm: &Tensor, eps: f32) -> Result<Tensor> {
    grad.apply_op2(&harm.detach(), ProjectOffHarm { eps })
}
