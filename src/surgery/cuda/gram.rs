//! The Gram matrix of K tensor lists on the device (`kernels/gram.cu`).

use cudarc::driver::{CudaStream, CudaViewMut, DevicePtrMut, PushKernelArg};

use super::device::{CudaSurgery, DeviceElement, dtype_index};
use super::error::{CudaResult, driver};
use super::launch::launch_config;
use super::tensor_list::{THREADS, TensorLists, items_config, pack_transforms};
use crate::surgery::transform::Transform;

impl CudaSurgery {
    /// The Gram matrix of the lists (after `transforms`, one per operand) into `gram`
    /// (K×K f32, row-major), in two launches: per-chunk partial sums, then a fixed-order
    /// finishing sum in double. Deterministic, no atomics, no host synchronisation. The lists are
    /// borrowed mutably because the partial sums are written into their scratch buffer.
    pub fn gram<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        lists: &mut TensorLists<'_, T>,
        transforms: &[Transform],
        gram: &mut CudaViewMut<'_, f32>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda gram";
        self.check_stream(OP, stream)?;
        let k = lists.k;
        let packed = pack_transforms(OP, transforms, k)?;
        if gram.len() != k * k {
            return Err(crate::surgery::SurgeryError::LengthMismatch {
                op: OP,
                arg: "gram",
                expected: k * k,
                got: gram.len(),
                why: format!("a {k}×{k} matrix"),
            }
            .into());
        }
        if k == 0 {
            return Ok(());
        }
        let (n_items, k_i) = (lists.n_items as i32, k as i32);
        // Written here: a write guard, so another stream's use of these lists waits for it.
        let (partials, _p_sync) = lists.partials.device_ptr_mut(stream);
        if lists.n_items > 0 {
            let f = &self.k.gram_partials[dtype_index(T::DTYPE)][k - 1];
            let mut launch = stream.launch_builder(f);
            launch.arg(&lists.table).arg(&packed).arg(&partials);
            // SAFETY: matches `gram_partials_<K>_<dtype>` (kernels/gram.cu); the table was built
            // from k lists of matching tensors (checked in TensorLists::new), which the table
            // keeps borrowed; partials holds n_items × K(K+1)/2 floats.
            unsafe { launch.launch(items_config(lists.n_items)) }.map_err(driver(OP))?;
        }
        let (g, _g_sync) = gram.device_ptr_mut(stream);
        let mut launch = stream.launch_builder(&self.k.gram_finish);
        launch.arg(&partials).arg(&n_items).arg(&k_i).arg(&g);
        let cfg = launch_config(1, THREADS);
        // SAFETY: matches `gram_finish`; partials holds n_items × K(K+1)/2 floats, gram K×K.
        unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        Ok(())
    }
}
