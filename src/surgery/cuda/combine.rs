//! The linear combination of K tensor lists into an output list on the device
//! (`kernels/combine.cu`).

use cudarc::driver::{CudaStream, CudaView, DevicePtr, PushKernelArg};

use super::device::{CudaSurgery, DeviceElement, dtype_index};
use super::error::{CudaResult, driver};
use super::launch::transform_code;
use super::tensor_list::{OutputList, TensorLists, items_config, pack_transforms};
use crate::surgery::args::check_same_shape;
use crate::surgery::transform::Transform;

impl CudaSurgery {
    /// `out = [w_out · t_out(out)] + Σ_k w_k · t_k(v_k)` with the weights read from device
    /// memory: `weights[0..K]` for the operands and, when `out_term` is given, `weights[K]` for
    /// `out` itself (the in-place form). One launch, no host synchronisation.
    pub fn combine<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        out: &mut OutputList<'_, T>,
        out_term: Option<Transform>,
        lists: &TensorLists<'_, T>,
        transforms: &[Transform],
        weights: &CudaView<'_, f32>,
    ) -> CudaResult<()> {
        const OP: &str = "cuda combine";
        self.check_stream(OP, stream)?;
        let k = lists.k;
        let packed = pack_transforms(OP, transforms, k)?;
        if k > 0 {
            check_same_shape(
                OP,
                [
                    ("out".to_string(), out.lens.clone()),
                    ("operands".to_string(), lists.lens.clone()),
                ],
            )?;
        }
        let need = k + usize::from(out_term.is_some());
        if weights.len() != need {
            return Err(crate::surgery::SurgeryError::LengthMismatch {
                op: OP,
                arg: "weights",
                expected: need,
                got: weights.len(),
                why: "one weight per operand, then one for `out` when it is read".into(),
            }
            .into());
        }
        if out.n_items == 0 {
            return Ok(());
        }
        let (w, _w_sync) = weights.device_ptr(stream);
        let (k_i, out_code) = (k as i32, out_term.map_or(-1, transform_code));
        let f = &self.k.combine[dtype_index(T::DTYPE)];
        let mut launch = stream.launch_builder(f);
        launch
            .arg(&out.table)
            .arg(&lists.table)
            .arg(&k_i)
            .arg(&packed)
            .arg(&out_code)
            .arg(&w);
        // SAFETY: matches `combine_<dtype>` (kernels/combine.cu); out and every operand list have
        // the same tensor lengths (checked; with K = 0 no operand is read), the weights hold
        // K (+1) floats (checked), and the tables keep their tensors borrowed (out mutably).
        unsafe { launch.launch(items_config(out.n_items)) }.map_err(driver(OP))?;
        Ok(())
    }
}
