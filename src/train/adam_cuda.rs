//! Adam on CUDA: every f32 parameter with an f32 gradient updated by one launch of the surgery
//! library's multi-tensor kernel ([`CudaSurgery::adam_raw`](crate::surgery::cuda::CudaSurgery)),
//! instead of ten tensor ops per parameter. Parameters and moments are updated in place in their
//! candle storages, each held for writing (candle's in-place op) while the launch is queued.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use candle_core::backprop::GradStore;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
use candle_core::{CpuStorage, CudaStorage, DType, Device, InplaceOp1, Layout, Result, Storage};
use candle_core::{Tensor, Var};

use crate::surgery::cpu::adam::AdamStep;
use crate::surgery::cuda::AdamTensor;

/// What the launch runs once every storage is held: the written tensors' addresses, in order.
type Last<'a> = Box<dyn FnOnce(&[u64]) -> Result<()> + 'a>;

/// Holds one tensor's storage for writing, records its address and goes on to the next; after
/// the last one it runs `last` with every address while all the storages are still held.
struct HoldForWriting<'a, 'f> {
    rest: &'a [&'a Tensor],
    addresses: &'a RefCell<Vec<u64>>,
    last: &'a RefCell<Option<Last<'f>>>,
}

impl InplaceOp1 for HoldForWriting<'_, '_> {
    fn name(&self) -> &'static str {
        "dgs adam (hold for writing)"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> Result<()> {
        candle_core::bail!("the multi-tensor Adam takes CUDA tensors only")
    }

    fn cuda_fwd(&self, s: &mut CudaStorage, l: &Layout) -> Result<()> {
        let stream = s.device.cuda_stream();
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("adam: parameters and moments must be contiguous")
        };
        let mut view = s.as_cuda_slice_mut::<f32>()?.slice_mut(start..end);
        // The guard records the write when this level returns, after the launch is queued.
        let (address, _written) = view.device_ptr_mut(&stream);
        self.addresses.borrow_mut().push(address);
        match self.rest.split_first() {
            Some((next, rest)) => next.inplace_op1(&HoldForWriting { rest, ..*self }),
            None => match self.last.borrow_mut().take() {
                Some(last) => last(&self.addresses.borrow()),
                None => candle_core::bail!("adam: the launch ran already"),
            },
        }
    }
}

/// Whether a parameter takes this path: f32 on CUDA, with an f32 gradient, all contiguous.
fn applies(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> bool {
    let f32_cuda = |t: &Tensor| {
        matches!(t.device(), Device::Cuda(_)) && t.dtype() == DType::F32 && t.is_contiguous()
    };
    [p, g, m, v].into_iter().all(f32_cuda) && [g, m, v].iter().all(|t| t.shape() == p.shape())
}

/// One launch over every parameter that [`applies`]; returns their names (the caller updates
/// the others).
pub fn update_all(
    params: &BTreeMap<String, Var>,
    (m, v): (&BTreeMap<String, Tensor>, &BTreeMap<String, Tensor>),
    grads: &GradStore,
    step: &AdamStep,
) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    let (mut written, mut read) = (Vec::new(), Vec::new());
    for (name, p) in params {
        let (p, mv) = (p.as_tensor(), (&m[name], &v[name]));
        let Some(g) = grads.get(p) else { continue };
        if applies(p, g, mv.0, mv.1) {
            names.insert(name.clone());
            written.extend([p, mv.0, mv.1]);
            read.push(g);
        }
    }
    let Some(Device::Cuda(device)) = written.first().map(|t| t.device()) else {
        return Ok(names);
    };
    let stream = device.cuda_stream();
    let surgery = crate::ops::surgery_for(stream.context())?;
    let guards: Vec<_> = read.iter().map(|g| g.storage_and_layout()).collect();
    let mut grads = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        let (Storage::Cuda(s), Some((start, end))) = (&**storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("adam: a gradient is not a contiguous CUDA tensor")
        };
        let view = s.as_cuda_slice::<f32>()?.slice(start..end);
        grads.push((view.device_ptr(&stream).0, end - start));
    }
    let launch: Last<'_> = Box::new(|addresses: &[u64]| {
        let tensors: Vec<AdamTensor> = addresses
            .chunks(3)
            .zip(&grads)
            .map(|(pmv, &(grad, len))| AdamTensor {
                param: pmv[0],
                grad,
                m: pmv[1],
                v: pmv[2],
                len,
            })
            .collect();
        // SAFETY: each parameter, first and second moment is held for writing (candle's in-place
        // op) around this call and has its gradient's length (`applies` checked the shapes); the
        // gradients are held for reading by `guards`; all are distinct storages on `stream`.
        unsafe { surgery.adam_raw::<f32>(&stream, &tensors, step) }
            .map_err(candle_core::Error::wrap)
    });
    let (addresses, last) = (RefCell::new(Vec::new()), RefCell::new(Some(launch)));
    let Some((first, rest)) = written.split_first() else {
        return Ok(names);
    };
    first.inplace_op1(&HoldForWriting {
        rest,
        addresses: &addresses,
        last: &last,
    })?;
    drop(guards);
    Ok(names)
}
