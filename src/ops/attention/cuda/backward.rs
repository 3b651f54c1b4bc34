//! The attention backward's launches: dQ, dK and dV from the forward's output and log-sum-exp,
//! for separate q/k/v operands or for the fused projection's packed `[batch, t, 3, heads, 64]`.

use std::sync::Arc;

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, PushKernelArg};

use super::check::{check_disjoint, check_operand, check_stats};
use super::{
    AttentionArgs, AttentionKernels, AttentionShape, Heads, THREADS, address, base_args,
    packed_layout,
};
use crate::surgery::SurgeryError;
use crate::surgery::cuda::error::{driver, invalid};
use crate::surgery::cuda::launch::launch_config;
use crate::surgery::cuda::{CudaResult, DeviceElement};

impl AttentionKernels {
    /// dQ, dK and dV (`grads`, laid out as Q, K and V) of `Σ O ⊙ dO`, from the forward's output
    /// `o` and `lse`; `d_o` has `o`'s layout; `delta` (`[batch, heads, t]` f32) is workspace.
    /// Three launches, no atomics, no host synchronisation.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        shape: &AttentionShape,
        [q, k, v]: [Heads<'_, T>; 3],
        [o, d_o]: [Heads<'_, T>; 2],
        lse: &CudaView<'_, f32>,
        [dq, dk, dv]: [&mut CudaViewMut<'_, T>; 3],
        delta: &mut CudaViewMut<'_, f32>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda attention backward";
        let kernel = self.check_backward(OP, stream, shape, [&q, &k, &v, &o, &d_o], lse, delta)?;
        for (arg, g, layout) in [
            ("dq", &dq, q.layout),
            ("dk", &dk, k.layout),
            ("dv", &dv, v.layout),
        ] {
            check_operand(OP, arg, shape, layout, g.len(), g.device_ptr(stream).0)?;
            check_disjoint(OP, arg, shape, layout)?;
        }
        if shape.batch * shape.heads * shape.t == 0 {
            return Ok(());
        }
        let (dq_ptr, _dq) = dq.device_ptr_mut(stream);
        let (dk_ptr, _dk) = dk.device_ptr_mut(stream);
        let (dv_ptr, _dv) = dv.device_ptr_mut(stream);
        let grads = [dq_ptr, dk_ptr, dv_ptr];
        self.launch_backward(
            OP,
            stream,
            shape,
            kernel,
            [q, k, v, o, d_o],
            lse,
            grads,
            delta,
        )
    }

    /// [`backward`](Self::backward) for q, k and v packed in one `[batch, t, 3, heads, 64]`
    /// buffer (the fused projection, `[N, 3C]`), their gradients written packed the same way
    /// into `dqkv`, which has `qkv`'s length.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_packed<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        shape: &AttentionShape,
        qkv: &CudaView<'_, T>,
        [o, d_o]: [Heads<'_, T>; 2],
        lse: &CudaView<'_, f32>,
        dqkv: &mut CudaViewMut<'_, T>,
        delta: &mut CudaViewMut<'_, f32>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda attention backward (packed q/k/v)";
        let (layout, part) = packed_layout(shape);
        let packed_len = 3 * part * shape.batch * shape.t;
        for (arg, len) in [("qkv", qkv.len()), ("dqkv", dqkv.len())] {
            if len != packed_len {
                return Err(SurgeryError::LengthMismatch {
                    op: OP,
                    arg,
                    expected: packed_len,
                    got: len,
                    why: format!("[{}, {}, 3, {}, 64]", shape.batch, shape.t, shape.heads),
                }
                .into());
            }
        }
        if packed_len == 0 {
            self.check(OP, stream, shape, T::DTYPE)?;
            return Ok(());
        }
        let views = [0, 1, 2].map(|p| qkv.slice(p * part..));
        let [q, k, v] = [0, 1, 2].map(|p| Heads {
            data: &views[p],
            layout,
        });
        let kernel = self.check_backward(OP, stream, shape, [&q, &k, &v, &o, &d_o], lse, delta)?;
        // dqkv's buffer is 16-byte aligned like qkv's (checked with it) and each part starts a
        // whole number of 16-byte units in (C = 64·heads elements).
        check_operand(
            OP,
            "dqkv",
            shape,
            layout,
            dqkv.len(),
            dqkv.device_ptr(stream).0,
        )?;
        let (dqkv_ptr, _g) = dqkv.device_ptr_mut(stream);
        let step = (part * size_of::<T>()) as u64;
        let grads = [0, 1, 2].map(|p| dqkv_ptr + p * step);
        self.launch_backward(
            OP,
            stream,
            shape,
            kernel,
            [q, k, v, o, d_o],
            lse,
            grads,
            delta,
        )
    }

    /// The checks of the operands every backward shares; returns the kernel index.
    fn check_backward<T: DeviceElement>(
        &self,
        op: &'static str,
        stream: &Arc<CudaStream>,
        shape: &AttentionShape,
        operands: [&Heads<'_, T>; 5],
        lse: &CudaView<'_, f32>,
        delta: &mut CudaViewMut<'_, f32>,
    ) -> CudaResult<usize> {
        let kernel = self.check(op, stream, shape, T::DTYPE)?;
        for (arg, h) in ["q", "k", "v", "o", "d_o"].into_iter().zip(operands) {
            check_operand(
                op,
                arg,
                shape,
                h.layout,
                h.data.len(),
                address(h.data, stream),
            )?;
        }
        let [.., o, d_o] = operands;
        if d_o.layout != o.layout {
            let why = "dO must have O's layout";
            return Err(invalid(op, "d_o", format!("{:?}", d_o.layout), why));
        }
        check_stats(op, "lse", shape, lse.len())?;
        check_stats(op, "delta", shape, delta.len())?;
        Ok(kernel)
    }

    /// The delta, dK/dV and dQ launches, the gradients at `grads` (checked by the caller to
    /// fit q, k and v's layouts without overlap).
    #[allow(clippy::too_many_arguments)]
    fn launch_backward<T: DeviceElement>(
        &self,
        op: &'static str,
        stream: &Arc<CudaStream>,
        shape: &AttentionShape,
        kernel: usize,
        [q, k, v, o, d_o]: [Heads<'_, T>; 5],
        lse: &CudaView<'_, f32>,
        [dq, dk, dv]: [u64; 3],
        delta: &mut CudaViewMut<'_, f32>,
    ) -> CudaResult<()> {
        // The guards keep each buffer's stream ordering in force until the launches are queued.
        let (q_ptr, _q) = q.data.device_ptr(stream);
        let (k_ptr, _k) = k.data.device_ptr(stream);
        let (v_ptr, _v) = v.data.device_ptr(stream);
        let (o_ptr, _o) = o.data.device_ptr(stream);
        let (do_ptr, _do) = d_o.data.device_ptr(stream);
        let (lse_ptr, _l) = lse.device_ptr(stream);
        let (delta_ptr, _d) = delta.device_ptr_mut(stream);
        let args = AttentionArgs {
            q: q_ptr,
            k: k_ptr,
            v: v_ptr,
            o: o_ptr,
            lse: lse_ptr,
            d_o: do_ptr,
            dq,
            dk,
            dv,
            delta: delta_ptr,
            sq: q.layout.into(),
            sk: k.layout.into(),
            sv: v.layout.into(),
            so: o.layout.into(),
            ..base_args(shape)
        };
        let rows = shape.batch * shape.heads * shape.t;
        let delta_cfg = launch_config(rows.div_ceil(THREADS as usize / 32).min(1 << 16), THREADS);
        for (f, cfg) in [
            (&self.delta[kernel], delta_cfg),
            (&self.dk_dv[kernel], self.blocks(shape)),
            (&self.dq[kernel], self.blocks(shape)),
        ] {
            let mut launch = stream.launch_builder(f);
            launch.arg(&args);
            // SAFETY: each kernel takes one `AttentionArgs`; every operand and gradient fits its
            // buffer under its layout with 8-element strides and 16-byte alignment, the
            // gradients do not overlap, lse and delta hold batch × heads × t floats (all checked
            // by the callers). delta is written by the first launch before the next two read it
            // (same stream).
            unsafe { launch.launch(cfg) }.map_err(driver(op))?;
        }
        Ok(())
    }
}
