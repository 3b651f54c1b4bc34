//! Many tensors per launch: device tables of tensor addresses and work items, built once per set
//! of gradient lists, and the Gram / combine / PCGrad passes over them.

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{
    CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
    LaunchConfig, PushKernelArg,
};

use super::device::{CudaSurgery, DeviceElement, dtype_index};
use super::error::{CudaResult, CudaSurgeryError, driver};
use super::rows::transform_code;
use crate::surgery::args::{check_operand_count, check_same_shape};
use crate::surgery::contract;
use crate::surgery::cpu::CHUNK;
use crate::surgery::solve::Reduction;
use crate::surgery::transform::Transform;

/// The device buffers a [`ListTableArg`] points into: addresses, lengths, item map.
type TableBuffers = (
    CudaSlice<u64>,
    CudaSlice<i64>,
    CudaSlice<i32>,
    CudaSlice<i64>,
);

/// `ListTable` of kernels/tensor_list.cuh, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ListTableArg {
    ptrs: u64,
    lens: u64,
    item_tensor: u64,
    item_start: u64,
    n_tensors: i32,
    n_items: i32,
}

// SAFETY: `ListTableArg` is `repr(C)` with the field order and types of `dgs::ListTable`
// (four 8-byte addresses, then two i32), so its bytes are a valid kernel argument.
unsafe impl DeviceRepr for ListTableArg {}

// Both sides check the size against the contract (the kernel side with a static_assert).
const _: () = assert!(std::mem::size_of::<ListTableArg>() == contract::LIST_TABLE_BYTES);

/// K vectors, each a list of device tensors of matching lengths, ready for Gram and combine.
///
/// Building it uploads the tensors' addresses and a (tensor, 65536-element chunk) work map once;
/// every later pass over the same tensors is then a launch with no host-side copy, so a whole
/// Gram → solve → combine sequence can be captured in a CUDA graph. The tensors stay borrowed
/// for the table's lifetime. Launches run on the stream given to each call: the tensors must
/// be ready on that stream (written on it, or synchronised with it by the caller).
pub struct TensorLists<'a, T> {
    k: usize,
    lens: Vec<usize>,
    table: ListTableArg,
    n_items: usize,
    /// Owned device tables that `table` points into.
    _tables: TableBuffers,
    /// Upper-triangle partial sums, one row per work item.
    partials: CudaSlice<f32>,
    _tensors: PhantomData<&'a T>,
}

/// Upload `(addresses [k][n], lens, item map)` and describe them as a kernel argument.
fn upload_table(
    op: &'static str,
    stream: &Arc<CudaStream>,
    addresses: &[u64],
    lens: &[usize],
) -> CudaResult<(ListTableArg, TableBuffers, usize)> {
    let mut item_tensor = Vec::new();
    let mut item_start = Vec::new();
    for (t, &len) in lens.iter().enumerate() {
        for start in (0..len).step_by(CHUNK) {
            item_tensor.push(t as i32);
            item_start.push(start as i64);
        }
    }
    let too_large = |what, got| CudaSurgeryError::TooLarge {
        op,
        what,
        got,
        max: i32::MAX as usize,
    };
    let n_tensors =
        i32::try_from(lens.len()).map_err(|_| too_large("the tensor count", lens.len()))?;
    let n_items = i32::try_from(item_tensor.len())
        .map_err(|_| too_large("the chunk count", item_tensor.len()))?;
    // Device tables may not be empty allocations; pad with one unused entry.
    let pad_u64 = |v: &[u64]| if v.is_empty() { vec![0] } else { v.to_vec() };
    let lens_i64: Vec<i64> = lens.iter().map(|&l| l as i64).collect();
    let ptrs = stream.clone_htod(&pad_u64(addresses)).map_err(driver(op))?;
    let lens_d = stream
        .clone_htod(&if lens_i64.is_empty() {
            vec![0]
        } else {
            lens_i64
        })
        .map_err(driver(op))?;
    let it = stream
        .clone_htod(&if item_tensor.is_empty() {
            vec![0]
        } else {
            item_tensor.clone()
        })
        .map_err(driver(op))?;
    let is = stream
        .clone_htod(&if item_start.is_empty() {
            vec![0]
        } else {
            item_start
        })
        .map_err(driver(op))?;
    let table = ListTableArg {
        ptrs: address(&ptrs, stream),
        lens: address(&lens_d, stream),
        item_tensor: address(&it, stream),
        item_start: address(&is, stream),
        n_tensors,
        n_items,
    };
    Ok((table, (ptrs, lens_d, it, is), item_tensor.len()))
}

/// The device address of a buffer this module owns and keeps alive with the table.
fn address<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    s.device_ptr(stream).0
}

impl<'a, T: DeviceElement> TensorLists<'a, T> {
    /// `operands[k]` is the k-th vector as a list of tensors; all lists must have the same
    /// number of tensors with the same lengths (checked, with the CPU backend's errors).
    pub fn new(
        surgery: &CudaSurgery,
        stream: &Arc<CudaStream>,
        operands: &[&[CudaView<'a, T>]],
    ) -> CudaResult<Self> {
        const OP: &str = "cuda TensorLists::new";
        surgery.check_stream(OP, stream)?;
        check_operand_count(OP, operands.len())?;
        let lens = check_same_shape(
            OP,
            operands.iter().enumerate().map(|(k, list)| {
                (
                    format!("operands[{k}]"),
                    list.iter().map(|t| t.len()).collect(),
                )
            }),
        )?;
        let addresses: Vec<u64> = operands
            .iter()
            .flat_map(|list| list.iter().map(|t| t.device_ptr(stream).0))
            .collect();
        let (table, tables, n_items) = upload_table(OP, stream, &addresses, &lens)?;
        let k = operands.len();
        let pairs = k * (k + 1) / 2;
        let partials = stream
            .alloc_zeros::<f32>((n_items * pairs).max(1))
            .map_err(driver(OP))?;
        Ok(Self {
            k,
            lens,
            table,
            n_items,
            _tables: tables,
            partials,
            _tensors: PhantomData,
        })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn tensor_lens(&self) -> &[usize] {
        &self.lens
    }
}

/// The output of a combine: one list of device tensors, mutably borrowed for the table's life.
/// Its table also carries the work map, so a combine of zero operands still writes every tensor.
pub struct OutputList<'a, T> {
    lens: Vec<usize>,
    table: ListTableArg,
    n_items: usize,
    _tables: TableBuffers,
    _tensors: PhantomData<&'a mut T>,
}

impl<'a, T: DeviceElement> OutputList<'a, T> {
    pub fn new(
        surgery: &CudaSurgery,
        stream: &Arc<CudaStream>,
        tensors: &'a mut [CudaViewMut<'_, T>],
    ) -> CudaResult<Self> {
        const OP: &str = "cuda OutputList::new";
        surgery.check_stream(OP, stream)?;
        let lens: Vec<usize> = tensors.iter().map(|t| t.len()).collect();
        let addresses: Vec<u64> = tensors
            .iter_mut()
            .map(|t| t.device_ptr_mut(stream).0)
            .collect();
        let (table, tables, n_items) = upload_table(OP, stream, &addresses, &lens)?;
        Ok(Self {
            lens,
            table,
            n_items,
            _tables: tables,
            _tensors: PhantomData,
        })
    }
}

/// Device buffers PCGrad works in: the Gram matrix (K×K f32) and the combine weights (K f32).
/// Allocate once and reuse every step.
pub struct PcGradScratch {
    pub gram: CudaSlice<f32>,
    pub weights: CudaSlice<f32>,
}

impl PcGradScratch {
    pub fn new(stream: &Arc<CudaStream>, k: usize) -> CudaResult<Self> {
        const OP: &str = "cuda PcGradScratch::new";
        Ok(Self {
            gram: stream
                .alloc_zeros::<f32>((k * k).max(1))
                .map_err(driver(OP))?,
            weights: stream.alloc_zeros::<f32>(k.max(1)).map_err(driver(OP))?,
        })
    }
}

/// Transform codes packed four bits per operand, operand 0 lowest (kernels/dtype.cuh).
fn pack_transforms(op: &'static str, transforms: &[Transform], k: usize) -> CudaResult<u32> {
    if transforms.len() != k {
        return Err(crate::surgery::SurgeryError::LengthMismatch {
            op,
            arg: "transforms",
            expected: k,
            got: transforms.len(),
            why: "one transform per operand".into(),
        }
        .into());
    }
    Ok(transforms.iter().enumerate().fold(0u32, |acc, (i, &t)| {
        acc | ((transform_code(t) as u32) << (contract::TRANSFORM_BITS as usize * i))
    }))
}

const THREADS: u32 = 256;

fn items_config(n_items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n_items.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaSurgery {
    /// The Gram matrix of the lists (after `transforms`, one per operand) into `gram`
    /// (K×K f32, row-major), in two launches: per-chunk partial sums, then a fixed-order
    /// finishing sum in double. Deterministic, no atomics, no host synchronisation.
    pub fn gram<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        lists: &TensorLists<'_, T>,
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
        let (partials, _p_sync) = lists.partials.device_ptr(stream);
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
        let (n_items, k_i) = (lists.n_items as i32, k as i32);
        let mut launch = stream.launch_builder(&self.k.gram_finish);
        launch.arg(&partials).arg(&n_items).arg(&k_i).arg(&g);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `gram_finish`; partials holds n_items × K(K+1)/2 floats, gram K×K.
        unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        Ok(())
    }

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

    /// PCGrad over the K task gradients in `tasks`, merged into `out`: Gram pass, the solve on
    /// the device (one thread, same arithmetic and visiting order as
    /// [`solve::pcgrad`](crate::surgery::solve::pcgrad)), combine pass. Three kernels and no host
    /// round trip, so the sequence can be captured in a CUDA graph.
    pub fn pcgrad<T: DeviceElement>(
        &self,
        stream: &CudaStream,
        tasks: &TensorLists<'_, T>,
        out: &mut OutputList<'_, T>,
        seed: u64,
        reduction: Reduction,
        scratch: &mut PcGradScratch,
    ) -> CudaResult<()> {
        const OP: &str = "cuda pcgrad";
        let k = tasks.k;
        if scratch.gram.len() < (k * k).max(1) || scratch.weights.len() < k.max(1) {
            return Err(crate::surgery::SurgeryError::LengthMismatch {
                op: OP,
                arg: "scratch",
                expected: k * k,
                got: scratch.gram.len(),
                why: "PcGradScratch::new(stream, K) for K tasks".into(),
            }
            .into());
        }
        let identity = vec![Transform::Identity; k];
        self.gram(
            stream,
            tasks,
            &identity,
            &mut scratch.gram.slice_mut(..k * k),
        )?;
        {
            let (g, _g_sync) = scratch.gram.device_ptr(stream);
            let (w, _w_sync) = scratch.weights.device_ptr_mut(stream);
            let (k_i, mean) = (k as i32, i32::from(reduction == Reduction::Mean));
            let mut launch = stream.launch_builder(&self.k.pcgrad_solve);
            launch.arg(&g).arg(&k_i).arg(&seed).arg(&mean).arg(&w);
            let cfg = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (32, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: matches `pcgrad_solve` (kernels/pcgrad.cu); gram holds K×K floats and
            // weights K floats (checked above), K ≤ 8 (TensorLists checks the operand count).
            unsafe { launch.launch(cfg) }.map_err(driver(OP))?;
        }
        self.combine(
            stream,
            out,
            None,
            tasks,
            &identity,
            &scratch.weights.slice(..k),
        )
    }
}
