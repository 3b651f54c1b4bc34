//! Many tensors per launch: device tables of tensor addresses and work items (`ListTable` of
//! kernels/tensor_list.cuh), built once per set of gradient lists and reused by the Gram, combine
//! and PCGrad passes.

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{
    CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig,
};

use super::device::{CudaSurgery, DeviceElement};
use super::error::{CudaResult, CudaSurgeryError, driver};
use super::launch::{kernel_args, launch_config, transform_code};
use crate::surgery::args::{check_operand_count, check_same_shape};
use crate::surgery::contract;
use crate::surgery::transform::Transform;

/// The device buffers a [`ListTableArg`] points into: addresses, lengths, item map.
pub(super) type TableBuffers = (
    CudaSlice<u64>,
    CudaSlice<i64>,
    CudaSlice<i32>,
    CudaSlice<i64>,
);

/// `ListTable` of kernels/tensor_list.cuh, passed by value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct ListTableArg {
    ptrs: u64,
    lens: u64,
    item_tensor: u64,
    item_start: u64,
    n_tensors: i32,
    n_items: i32,
}

kernel_args!(ListTableArg, contract::LIST_TABLE_BYTES);

/// K vectors, each a list of device tensors of matching lengths, ready for Gram and combine.
///
/// Building it uploads the tensors' addresses and a (tensor, `LIST_ITEM`-element slice) work map once;
/// every later pass over the same tensors is then a launch with no host-side copy, so a whole
/// Gram → solve → combine sequence can be captured in a CUDA graph. The tensors stay borrowed
/// for the table's lifetime. Launches run on the stream given to each call: the tensors must
/// be ready on that stream (written on it, or synchronised with it by the caller).
pub struct TensorLists<'a, T> {
    pub(super) k: usize,
    pub(super) lens: Vec<usize>,
    pub(super) table: ListTableArg,
    pub(super) n_items: usize,
    /// Owned device tables that `table` points into.
    _tables: TableBuffers,
    /// Upper-triangle partial sums, one row per work item.
    pub(super) partials: CudaSlice<f32>,
    _tensors: PhantomData<&'a T>,
}

/// Upload `(addresses [k][n], lens, item map)` and describe them as a kernel argument.
pub(super) fn upload_table(
    op: &'static str,
    stream: &Arc<CudaStream>,
    addresses: &[u64],
    lens: &[usize],
) -> CudaResult<(ListTableArg, TableBuffers, usize)> {
    let mut item_tensor = Vec::new();
    let mut item_start = Vec::new();
    for (t, &len) in lens.iter().enumerate() {
        for start in (0..len).step_by(contract::LIST_ITEM) {
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
        .map_err(|_| too_large("the work-item count", item_tensor.len()))?;
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
    pub(super) lens: Vec<usize>,
    pub(super) table: ListTableArg,
    pub(super) n_items: usize,
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

/// Transform codes packed four bits per operand, operand 0 lowest (kernels/dtype.cuh).
pub(super) fn pack_transforms(
    op: &'static str,
    transforms: &[Transform],
    k: usize,
) -> CudaResult<u32> {
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

/// Threads per block of the tensor-list kernels.
pub(super) const THREADS: u32 = 256;

/// One block per work item (`LIST_ITEM` elements of one tensor).
pub(super) fn items_config(n_items: usize) -> LaunchConfig {
    launch_config(n_items, THREADS)
}
