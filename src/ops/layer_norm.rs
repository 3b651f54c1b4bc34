//! Layer normalisation over the last dimension with frozen scale and shift, as one op with a
//! backward pass for its input.
//!
//! candle-nn's fused `layer_norm` records no backward pass; written with differentiable tensor
//! ops it is about ten kernels whose intermediates (in f32) the autograd graph keeps alive. This
//! op runs one kernel forward (candle's own on CUDA: f32 statistics, one rounding) and keeps only
//! its input and output. The backward recomputes the row statistics in f32:
//! `dx = rstd · (gγ − mean(gγ) − x̂ · mean(gγ ⊙ x̂))`. The scale and shift get no gradient — they
//! are the frozen base model's — and the op refuses them if they are trainable variables.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use half::{bf16, f16};

use super::last_dim::{LastDim, last_dim};
use super::repeat::{repeat_cols, repeat_rows};
use rayon::prelude::*;

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

/// `(x − mean) / sqrt(var + eps) · w + b` per row, statistics and arithmetic in f64, one rounding.
fn layer_norm_rows<T: WithDType>(x: &[T], w: &[T], b: &[T], eps: f32) -> Vec<T> {
    let cols = w.len();
    let mut dst = vec![T::zero(); x.len()];
    x.par_chunks(cols)
        .zip(dst.par_chunks_mut(cols))
        .for_each(|(x, y)| {
            let n = cols as f64;
            let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
            let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
            let rstd = 1.0 / (var + f64::from(eps)).sqrt();
            for (((d, v), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                *d = T::from_f64((v.to_f64() - mean) * rstd * w.to_f64() + b.to_f64());
            }
        });
    dst
}

impl LayerNorm {
    fn check(&self, layout: &Layout) -> Result<LastDim> {
        let rows = last_dim(layout, "layer norm")?;
        let cols = rows.cols;
        if self.weight.dims() != [cols] || self.bias.dims() != [cols] {
            candle_core::bail!(
                "layer norm: input rows of {cols} but weight {:?} and bias {:?}",
                self.weight.dims(),
                self.bias.dims()
            )
        }
        Ok(rows)
    }
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "dgs-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let LastDim { start, end, .. } = self.check(layout)?;
        let (ws, wl) = self.weight.storage_and_layout();
        let (bs, bl) = self.bias.storage_and_layout();
        let (Storage::Cpu(ws), Storage::Cpu(bs)) = (&*ws, &*bs) else {
            candle_core::bail!("layer norm: weight and bias must be on the input's device")
        };
        fn run<T: WithDType>(
            x: &[T],
            ws: &CpuStorage,
            wl: &Layout,
            bs: &CpuStorage,
            bl: &Layout,
            eps: f32,
        ) -> Result<Vec<T>> {
            let (Some((w0, w1)), Some((b0, b1))) =
                (wl.contiguous_offsets(), bl.contiguous_offsets())
            else {
                candle_core::bail!("layer norm: weight and bias must be contiguous")
            };
            let w = &ws.as_slice::<T>()?[w0..w1];
            let b = &bs.as_slice::<T>()?[b0..b1];
            Ok(layer_norm_rows(x, w, b, eps))
        }
        let eps = self.eps;
        let out = match storage {
            CpuStorage::F32(s) => CpuStorage::F32(run(&s[start..end], ws, wl, bs, bl, eps)?),
            CpuStorage::F64(s) => CpuStorage::F64(run(&s[start..end], ws, wl, bs, bl, eps)?),
            CpuStorage::F16(s) => CpuStorage::F16(run::<f16>(&s[start..end], ws, wl, bs, bl, eps)?),
            CpuStorage::BF16(s) => {
                CpuStorage::BF16(run::<bf16>(&s[start..end], ws, wl, bs, bl, eps)?)
            }
            s => candle_core::bail!("layer norm: unsupported dtype {:?}", s.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::CudaDevice;
        use candle_core::cuda_backend::cudarc::driver::{
            CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg,
        };
        use candle_core::cuda_backend::{Map3, WrapErr, kernel_name, kernels};

        struct Launch {
            eps: f32,
        }
        impl Map3 for Launch {
            fn f<T: DeviceRepr + WithDType>(
                &self,
                src: &CudaSlice<T>,
                layout: &Layout,
                w: &CudaSlice<T>,
                wl: &Layout,
                b: &CudaSlice<T>,
                bl: &Layout,
                dev: &CudaDevice,
            ) -> Result<CudaSlice<T>> {
                let LastDim {
                    start,
                    end,
                    rows,
                    cols,
                } = last_dim(layout, "layer norm")?;
                let (Some((w0, w1)), Some((b0, b1))) =
                    (wl.contiguous_offsets(), bl.contiguous_offsets())
                else {
                    candle_core::bail!("layer norm: weight and bias must be contiguous")
                };
                let (src, w, b) = (src.slice(start..end), w.slice(w0..w1), b.slice(b0..b1));
                // candle's kernel: one block per row (a warp below 1024 columns).
                let block = if cols < 1024 { 32 } else { 1024 };
                let cfg = LaunchConfig {
                    grid_dim: (rows as u32, 1, 1),
                    block_dim: (block, 1, 1),
                    shared_mem_bytes: 0,
                };
                let func =
                    dev.get_or_load_func(&kernel_name::<T>("layernorm"), &kernels::REDUCE)?;
                // SAFETY: every element is written by the kernel before anyone reads it.
                let dst = unsafe { dev.alloc::<T>(rows * cols)? };
                let mut k = func.builder();
                k.arg(&src);
                k.arg(&dst);
                k.arg(&w);
                k.arg(&b);
                let (cols, block, eps) = (cols as i32, block as i32, self.eps);
                k.arg(&cols);
                k.arg(&block);
                k.arg(&eps);
                // SAFETY: the arguments match the kernel's (src, dst, alpha, beta, n_cols,
                // block_size, eps) signature; src and dst hold rows × cols elements, alpha and
                // beta cols (checked against the input's last dimension).
                unsafe { k.launch(cfg) }.w()?;
                Ok(dst)
            }
        }
        self.check(layout)?;
        let (ws, wl) = self.weight.storage_and_layout();
        let (bs, bl) = self.bias.storage_and_layout();
        let (Storage::Cuda(ws), Storage::Cuda(bs)) = (&*ws, &*bs) else {
            candle_core::bail!("layer norm: weight and bias must be on the input's device")
        };
        let dev = storage.device().clone();
        let slice = Launch { eps: self.eps }.map(
            &storage.slice,
            layout,
            &ws.slice,
            wl,
            &bs.slice,
            bl,
            &dev,
        )?;
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            layout.shape().clone(),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Rows flattened to [N, C]; row statistics are expanded with `repeat_cols` so that every
        // element-wise op below runs on same-shape operands.
        let shape = arg.dims().to_vec();
        let c = shape.last().copied().unwrap_or(1).max(1);
        let inv_c = 1.0 / c as f64;
        let x = arg.detach().to_dtype(DType::F32)?.reshape(((), c))?;
        let n = x.dim(0)?;
        let mean = x.sum_keepdim(1)?.affine(inv_c, 0.0)?;
        let centred = (&x - repeat_cols(&mean, c)?)?;
        let var = centred
            .sqr()?
            .sum_keepdim(1)?
            .affine(inv_c, f64::from(self.eps))?;
        let rstd = repeat_cols(&var.sqrt()?.recip()?, c)?;
        let xhat = (centred * &rstd)?;
        let weight = repeat_rows(&self.weight.to_dtype(DType::F32)?, n)?;
        let gw = (grad
            .detach()
            .to_dtype(DType::F32)?
            .contiguous()?
            .reshape((n, c))?
            * weight)?;
        let m1 = gw.sum_keepdim(1)?.affine(inv_c, 0.0)?;
        let m2 = (&gw * &xhat)?.sum_keepdim(1)?.affine(inv_c, 0.0)?;
        let inner = ((gw - repeat_cols(&m1, c)?)? - (xhat * repeat_cols(&m2, c)?)?)?;
        Ok(Some((inner * rstd)?.reshape(shape)?.to_dtype(arg.dtype())?))
    }
}

/// Layer normalisation of `x` over its last dimension with frozen `weight` and `bias` (same dtype
/// and device as `x`), differentiable with respect to `x`, one fused kernel forward.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if weight.is_variable() || bias.is_variable() {
        candle_core::bail!(
            "layer norm: the fused op gives no gradient to a trainable weight or bias; use the \
             composite form for trainable norms"
        )
    }
    if weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        candle_core::bail!(
            "layer norm: input {:?}, weight {:?}, bias {:?}: the dtypes must match",
            x.dtype(),
            weight.dtype(),
            bias.dtype()
        )
    }
    x.contiguous()?.apply_op1(LayerNorm {
        weight: weight.contiguous()?.detach(),
        bias: bias.contiguous()?.detach(),
        eps: eps as f32,
    })
}
