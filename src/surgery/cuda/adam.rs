//! Adam over every trainable tensor in one launch (`kernels/adam.cu`): a tensor-list table of
//! (parameter, gradient, first moment, second moment) per tensor, the same table machinery as the
//! Gram and combine passes. The CPU twin is [`cpu::adam::update`](crate::surgery::cpu::adam);
//! the two give the same bits.

use std::sync::Arc;

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, PushKernelArg};

use super::device::{CudaSurgery, DeviceElement, dtype_index};
use super::error::{CudaResult, driver};
use super::launch::kernel_args;
use super::tensor_list::{items_config, upload_table};
use crate::surgery::SurgeryError;
use crate::surgery::contract;
use crate::surgery::cpu::adam::AdamStep;

/// `AdamArgs` of kernels/adam.cu, passed by value.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
struct AdamArgs {
    beta1: f32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    step_size: f32,
    bias2_sqrt: f32,
    eps: f32,
    grad_scale: f32,
}

kernel_args!(AdamArgs, contract::ADAM_ARGS_BYTES);

impl From<&AdamStep> for AdamArgs {
    fn from(s: &AdamStep) -> Self {
        Self {
            beta1: s.beta1,
            beta2: s.beta2,
            one_minus_beta1: s.one_minus_beta1,
            one_minus_beta2: s.one_minus_beta2,
            step_size: s.step_size,
            bias2_sqrt: s.bias2_sqrt,
            eps: s.eps,
            grad_scale: s.grad_scale,
        }
    }
}

/// One tensor's device addresses: its parameter, gradient and moments, `len` elements each.
#[derive(Clone, Copy, Debug)]
pub struct AdamTensor {
    pub param: u64,
    pub grad: u64,
    pub m: u64,
    pub v: u64,
    pub len: usize,
}

impl CudaSurgery {
    /// One Adam step over every tensor: `params`, `m` and `v` (f32) are updated in place from
    /// `grads` (of type `T`), each list holding one tensor per parameter with matching lengths.
    /// One launch (plus the table's upload), no host synchronisation.
    pub fn adam<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        params: &mut [CudaViewMut<'_, f32>],
        grads: &[CudaView<'_, T>],
        (m, v): (&mut [CudaViewMut<'_, f32>], &mut [CudaViewMut<'_, f32>]),
        step: &AdamStep,
    ) -> CudaResult<()> {
        const OP: &str = "cuda adam";
        let n = params.len();
        for (arg, got) in [("grads", grads.len()), ("m", m.len()), ("v", v.len())] {
            check_count(OP, arg, n, got)?;
        }
        let mut tensors = Vec::with_capacity(n);
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let len = p.len();
            for (arg, got) in [("grads", g.len()), ("m", m[i].len()), ("v", v[i].len())] {
                check_count(OP, arg, len, got)?;
            }
            tensors.push(AdamTensor {
                param: p.device_ptr_mut(stream).0,
                grad: g.device_ptr(stream).0,
                m: m[i].device_ptr_mut(stream).0,
                v: v[i].device_ptr_mut(stream).0,
                len,
            });
        }
        // SAFETY: every address comes from a live view of its length on this stream; params, m
        // and v are borrowed mutably (so distinct from each other and from the gradients) for the
        // whole call, which queues the launch before returning.
        unsafe { self.adam_raw::<T>(stream, &tensors, step) }
    }

    /// [`adam`](Self::adam) on raw device addresses, for callers whose tensors are not cudarc
    /// views (candle storages held for writing).
    ///
    /// # Safety
    /// For every entry, `param`, `m` and `v` address `len` live f32 elements and `grad` `len`
    /// elements of `T`, all usable on `stream` when the launch runs; no written range (param, m,
    /// v) overlaps another range of any entry.
    pub unsafe fn adam_raw<T: DeviceElement>(
        &self,
        stream: &Arc<CudaStream>,
        tensors: &[AdamTensor],
        step: &AdamStep,
    ) -> CudaResult<()> {
        const OP: &str = "cuda adam";
        self.check_stream(OP, stream)?;
        let rows = [
            tensors.iter().map(|t| t.param).collect::<Vec<_>>(),
            tensors.iter().map(|t| t.grad).collect(),
            tensors.iter().map(|t| t.m).collect(),
            tensors.iter().map(|t| t.v).collect(),
        ];
        let lens: Vec<usize> = tensors.iter().map(|t| t.len).collect();
        let (table, _tables, n_items) = upload_table(OP, stream, &rows.concat(), &lens)?;
        if n_items == 0 {
            return Ok(());
        }
        let args = AdamArgs::from(step);
        let mut launch = stream.launch_builder(&self.k.adam[dtype_index(T::DTYPE)]);
        launch.arg(&table).arg(&args);
        // SAFETY: `adam_<dtype>` takes (ListTable, AdamArgs); the table's operand rows are the
        // params, grads, m and v of `tensors` with their lengths (this function's contract), and
        // its buffers are freed stream-ordered after the launch (`_tables` drops after it is
        // queued).
        unsafe { launch.launch(items_config(n_items)) }.map_err(driver(OP))?;
        Ok(())
    }
}

fn check_count(op: &'static str, arg: &'static str, expected: usize, got: usize) -> CudaResult<()> {
    if expected != got {
        return Err(SurgeryError::LengthMismatch {
            op,
            arg,
            expected,
            got,
            why: "one entry per parameter, of the parameter's length".into(),
        }
        .into());
    }
    Ok(())
}
