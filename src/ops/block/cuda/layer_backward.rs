//! The layer op's backward on the device, the CPU twin's (`ops::block::cpu::backward`) step for
//! step: the MLP's input gradient (the activation's derivative applied in place), layer norm 2's
//! backward added into the residual stream's gradient, the out-projection's input gradient, the
//! fused attention backward into the packed q/k/v gradient, the adapters' gradients, and, when
//! the input needs one, q/k/v's input gradient and layer norm 1's backward. Only activations'
//! gradients and the adapters' are formed: the base weights are frozen. Each kept buffer is
//! dropped (back to the pool) once its last use has been queued.

use cudarc::driver::{CudaSlice, CudaView};

use super::layer::{
    DeviceAdapters, DeviceSaved, DeviceWeights, LayerCall, LayerEngine, adapter_input, scratch,
    z_stride,
};
use super::{DeviceDropout, GemmOperands, GemmShape, LeadingDims};
use crate::ops::attention::cuda::Heads;
use crate::ops::block::dims::Dims;
use crate::surgery::cuda::error::driver;
use crate::surgery::cuda::{CudaResult, DeviceElement};

/// The gradients the backward returns: the input's (when asked for), and the adapters'
/// (`[3, r, C]` and `[3, C, r]`, when the layer has adapters).
pub struct DeviceGrads<T> {
    pub dx: Option<CudaSlice<T>>,
    pub adapters: Option<(CudaSlice<T>, CudaSlice<T>)>,
}

/// `dy` is the gradient at the output (`[N, C]`); `x` the layer's input; `saved` what the
/// forward kept (consumed).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: DeviceElement>(
    e: &LayerEngine,
    call: &LayerCall,
    x: &CudaView<'_, T>,
    w: &DeviceWeights<'_, T>,
    lora: Option<&DeviceAdapters<'_, T>>,
    saved: DeviceSaved<T>,
    dy: &CudaView<'_, T>,
    want_dx: bool,
) -> CudaResult<DeviceGrads<T>> {
    let (s, d) = (e.stream(), call.d);
    let (n, c, i) = (d.tokens(), d.channels, d.intermediate);
    let shape = call.attention::<T>()?;
    let DeviceSaved {
        stats1,
        qkv,
        z,
        o,
        lse,
        res1,
        stats2,
        h,
    } = saved;
    // MLP: dh = (dy · W₂) ⊙ act'(h); dln₂ = dh · W₁.
    // SAFETY (each `scratch` below): the products, kernels and copies write every element of
    // their outputs before anything reads them.
    let mut dh = unsafe { scratch::<T>(s, n * i) }?;
    let (w2, w1, wo) = (&w.fc2.0, &w.fc1.0, &w.out.0);
    let ops = GemmOperands::new(dy, w2);
    e.gemms
        .matmul(GemmShape::product(n, i, c), &ops, &mut dh.slice_mut(..))?;
    let activation = call.cfg.activation;
    e.kernels
        .activation_backward(s, activation, &h.slice(..), &mut dh.slice_mut(..))?;
    drop(h);
    let mut dln = unsafe { scratch::<T>(s, n * c) }?;
    let dh_view = dh.slice(..);
    let ops = GemmOperands::new(&dh_view, w1);
    e.gemms
        .matmul(GemmShape::product(n, c, i), &ops, &mut dln.slice_mut(..))?;
    drop(dh);
    // The residual stream: dres₁ = dy + LN₂'s input gradient.
    let mut dres1 = s.clone_dtod(dy).map_err(driver("layer op copy"))?;
    let ln2_weight = &w.ln2.0;
    e.kernels.layer_norm_backward(
        s,
        &res1.slice(..),
        ln2_weight,
        &stats2.slice(..),
        &dln.slice(..),
        &mut dres1.slice_mut(..),
    )?;
    drop((res1, stats2));

    // Attention: dO = dres₁ · Wₒ (into dln's buffer, free again), then dq/dk/dv packed.
    let dres1_view = dres1.slice(..);
    let ops = GemmOperands::new(&dres1_view, wo);
    e.gemms
        .matmul(GemmShape::product(n, c, c), &ops, &mut dln.slice_mut(..))?;
    let d_o = dln;
    let mut dqkv = unsafe { scratch::<T>(s, n * 3 * c) }?;
    let mut delta = unsafe { scratch::<f32>(s, d.batch * d.heads * d.seq) }?;
    let merged = call.merged();
    let (o_view, d_o_view) = (o.slice(..), d_o.slice(..));
    let out_heads = [
        Heads {
            data: &o_view,
            layout: merged,
        },
        Heads {
            data: &d_o_view,
            layout: merged,
        },
    ];
    e.attention.backward_packed(
        s,
        &shape,
        &qkv.slice(..),
        out_heads,
        &lse.slice(..),
        &mut dqkv.slice_mut(..),
        &mut delta.slice_mut(..),
    )?;
    drop((o, lse, delta, qkv));

    // The layer norm 1 output's gradient reuses dO's buffer.
    let mut dln = d_o;
    let adapters = match (lora, z) {
        (Some(l), Some(z)) => {
            let dln = want_dx.then_some(&mut dln);
            Some(lora_backward(e, call, x, w, l, &z, &dqkv, dln)?)
        }
        _ => None,
    };
    if !want_dx {
        return Ok(DeviceGrads { dx: None, adapters });
    }
    // dln (+)= dqkv · W_qkv, then dx = dres₁ + LN₁'s input gradient.
    let dqkv_view = dqkv.slice(..);
    let ops = GemmOperands {
        accumulate: adapters.is_some(),
        ..GemmOperands::new(&dqkv_view, &w.qkv.0)
    };
    e.gemms.matmul(
        GemmShape::product(n, c, 3 * c),
        &ops,
        &mut dln.slice_mut(..),
    )?;
    drop(dqkv);
    let mut dx = dres1;
    e.kernels.layer_norm_backward(
        s,
        x,
        &w.ln1.0,
        &stats1.slice(..),
        &dln.slice(..),
        &mut dx.slice_mut(..),
    )?;
    Ok(DeviceGrads {
        dx: Some(dx),
        adapters,
    })
}

/// The adapters' gradients: `dBₚ = s · dqkvₚᵀ zₚ`, `dzₚ = s · dqkvₚ Bₚ`, `dAₚ = dzₚᵀ drop(ln)`;
/// with `dln`, their share of the layer-norm output's gradient `Σₚ drop'(dzₚ Aₚ)` is written into
/// it (overwriting it). The layer norm output is recomputed from `x`; the masks from their key.
#[allow(clippy::too_many_arguments)]
fn lora_backward<T: DeviceElement>(
    e: &LayerEngine,
    call: &LayerCall,
    x: &CudaView<'_, T>,
    w: &DeviceWeights<'_, T>,
    l: &DeviceAdapters<'_, T>,
    z: &CudaSlice<T>,
    dqkv: &CudaSlice<T>,
    mut dln: Option<&mut CudaSlice<T>>,
) -> CudaResult<(CudaSlice<T>, CudaSlice<T>)> {
    let (s, d) = (e.stream(), call.d);
    let (n, c, r, zs) = (d.tokens(), d.channels, l.rank, z_stride(d, l.rank));
    // SAFETY (each `scratch` below): written in full by the layer norm or the products before
    // any read (dA and dB block by block, one projection at a time).
    let mut ln = unsafe { scratch::<T>(s, n * c) }?;
    e.kernels
        .layer_norm(s, x, &call.norm(&w.ln1), &mut ln.slice_mut(..), None)?;
    let mut da = unsafe { scratch::<T>(s, 3 * r * c) }?;
    let mut db = unsafe { scratch::<T>(s, 3 * c * r) }?;
    let mut dz = unsafe { scratch::<T>(s, n * r) }?;
    let mut dropped = l.dropout_buffer(s, n * c)?;
    for p in 0..3 {
        let (a, b) = l.projection(p, c);
        let g = dqkv.slice(p * c..);
        let zp = z.slice(p * zs..p * zs + n * r);
        let blocks = |a_transposed| GemmShape {
            a_transposed,
            ld: Some(LeadingDims {
                a: 3 * c,
                b: r,
                d: r,
            }),
            ..GemmShape::product(
                if a_transposed { c } else { n },
                r,
                if a_transposed { n } else { c },
            )
        };
        let scaled = |a, b| GemmOperands {
            alpha: l.scale,
            ..GemmOperands::new(a, b)
        };
        let db_p = &mut db.slice_mut(p * c * r..(p + 1) * c * r);
        e.gemms.matmul(blocks(true), &scaled(&g, &zp), db_p)?;
        e.gemms
            .matmul(blocks(false), &scaled(&g, &b), &mut dz.slice_mut(..))?;
        let mask = l.mask(p);
        let input = adapter_input(e, &ln, &mut dropped, mask.as_ref())?;
        let da_shape = GemmShape {
            a_transposed: true,
            ..GemmShape::product(r, c, n)
        };
        let da_p = &mut da.slice_mut(p * r * c..(p + 1) * r * c);
        let dz_view = dz.slice(..);
        e.gemms
            .matmul(da_shape, &GemmOperands::new(&dz_view, &input), da_p)?;
        if let Some(dln) = dln.as_deref_mut() {
            input_share(e, (d, r), (&dz_view, &a), mask, p, &mut dropped, dln)?;
        }
    }
    Ok((da, db))
}

/// Projection `p`'s share of the layer-norm output's gradient, `drop'(dzₚ Aₚ)`, written into
/// `dln` for the first projection and added for the others. `spare` is an `[N, C]` buffer when
/// the pass has dropout (the product goes there before the mask).
fn input_share<T: DeviceElement>(
    e: &LayerEngine,
    (d, r): (Dims, usize),
    (dz, a): (&CudaView<'_, T>, &CudaView<'_, T>),
    mask: Option<DeviceDropout>,
    p: usize,
    spare: &mut Option<CudaSlice<T>>,
    dln: &mut CudaSlice<T>,
) -> CudaResult<()> {
    let (s, n, c) = (e.stream(), d.tokens(), d.channels);
    let shape = GemmShape::product(n, c, r);
    match (spare, mask) {
        (Some(buf), Some(mask)) => {
            let ops = GemmOperands::new(dz, a);
            e.gemms.matmul(shape, &ops, &mut buf.slice_mut(..))?;
            let (product, out) = (buf.slice(..), &mut dln.slice_mut(..));
            match p {
                0 => e.kernels.dropout(s, &product, out, &mask),
                _ => e.kernels.dropout_add(s, &product, out, &mask),
            }
        }
        _ => {
            let ops = GemmOperands {
                accumulate: p > 0,
                ..GemmOperands::new(dz, a)
            };
            e.gemms.matmul(shape, &ops, &mut dln.slice_mut(..))
        }
    }
}
