//! The CUDA ops on host slices: copy in, run the kernels, copy out. This is what lets the test
//! bodies and `dgs self-check` hold the CUDA backend to exactly the cases the CPU backend meets.

use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView, DeviceRepr, ValidAsZeroBits};

use super::device::{CudaSurgery, DeviceElement};
use super::error::{CudaResult, CudaSurgeryError, driver};
use super::rowwise::{DeviceRowProjection, DeviceRowStats};
use super::tensor_list::{OutputList, TensorLists};
use crate::surgery::args::{
    MultiProjection, Operand, RowProjection, RowStatsMut, check_combine, check_gram,
    check_multi_projection, check_row_projection,
};
use crate::surgery::backend::HostBackend;
use crate::surgery::error::{BackendFailure, Result, SurgeryError};
use crate::surgery::solve::Gram;
use crate::surgery::transform::Transform;

/// [`HostBackend`] on a CUDA device, on its default stream.
pub struct CudaBackend {
    surgery: CudaSurgery,
    stream: Arc<CudaStream>,
}

impl CudaBackend {
    pub fn new(ordinal: usize) -> CudaResult<Self> {
        let surgery = CudaSurgery::new(ordinal)?;
        let stream = surgery.default_stream();
        Ok(Self { surgery, stream })
    }

    pub fn surgery(&self) -> &CudaSurgery {
        &self.surgery
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

fn host_error(e: CudaSurgeryError) -> SurgeryError {
    match e {
        CudaSurgeryError::Arguments(a) => a,
        other => SurgeryError::Backend {
            backend: "cuda",
            source: BackendFailure::new(other),
        },
    }
}

const OP: &str = "cuda host copy";

/// A device copy of `data`; an empty slice gets a one-element buffer (zero-size allocations are
/// not allowed), to be viewed as `..0`.
fn upload<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    data: &[T],
) -> CudaResult<CudaSlice<T>> {
    if data.is_empty() {
        return stream.alloc_zeros::<T>(1).map_err(driver(OP));
    }
    stream.clone_htod(data).map_err(driver(OP))
}

/// One device buffer holding a whole tensor list back to back, and each tensor's range in it.
fn upload_list<T: DeviceElement>(
    stream: &Arc<CudaStream>,
    list: &[&[T]],
) -> CudaResult<(CudaSlice<T>, Vec<Range<usize>>)> {
    let mut ranges = Vec::with_capacity(list.len());
    let mut off = 0;
    for t in list {
        ranges.push(off..off + t.len());
        off += t.len();
    }
    Ok((upload(stream, &list.concat())?, ranges))
}

type Uploaded<T> = Vec<(CudaSlice<T>, Vec<Range<usize>>)>;

/// Every operand's tensor list on the device, one buffer per operand.
fn upload_operands<T: DeviceElement>(
    stream: &Arc<CudaStream>,
    operands: &[Operand<'_, T>],
) -> CudaResult<Uploaded<T>> {
    operands
        .iter()
        .map(|o| upload_list(stream, o.tensors))
        .collect()
}

/// Per operand, a view of each tensor in its buffer.
fn operand_views<T>(bufs: &Uploaded<T>) -> Vec<Vec<CudaView<'_, T>>> {
    bufs.iter()
        .map(|(buf, ranges)| ranges.iter().map(|r| buf.slice(r.clone())).collect())
        .collect()
}

fn table_of<'a, T: DeviceElement>(
    surgery: &CudaSurgery,
    stream: &Arc<CudaStream>,
    lists: &[Vec<CudaView<'a, T>>],
) -> CudaResult<TensorLists<'a, T>> {
    let refs: Vec<&[CudaView<'a, T>]> = lists.iter().map(Vec::as_slice).collect();
    TensorLists::new(surgery, stream, &refs)
}

fn download<T: DeviceRepr>(
    stream: &Arc<CudaStream>,
    src: &CudaView<'_, T>,
    dst: &mut [T],
) -> CudaResult<()> {
    if !dst.is_empty() {
        stream.memcpy_dtoh(src, dst).map_err(driver(OP))?;
    }
    Ok(())
}

impl CudaBackend {
    fn run_rows<T: DeviceElement>(
        &self,
        x: &mut [T],
        p: &RowProjection<'_, T>,
        stats: RowStatsMut<'_>,
    ) -> CudaResult<()> {
        let s = &self.stream;
        let n = x.len();
        let mut xd = upload(s, x)?;
        let hd = upload(s, p.harm)?;
        let ad = p.help.as_ref().map(|h| upload(s, h.grad)).transpose()?;
        let RowStatsMut { coef, harm_norm } = stats;
        let mut cd = coef.as_deref().map(|c| upload(s, c)).transpose()?;
        let mut nd = harm_norm.as_deref().map(|c| upload(s, c)).transpose()?;
        let rows = p.rows;
        let dp = DeviceRowProjection {
            rows,
            dim: p.dim,
            harm: hd.slice(..n),
            help: ad
                .as_ref()
                .zip(p.help.as_ref())
                .map(|(a, h)| (a.slice(..n), h.coef)),
            eps: p.eps,
        };
        let mut cv = cd.as_mut().map(|c| c.slice_mut(..rows));
        let mut nv = nd.as_mut().map(|c| c.slice_mut(..rows));
        self.surgery.dgs_rows(
            s,
            &mut xd.slice_mut(..n),
            &dp,
            DeviceRowStats {
                coef: cv.as_mut(),
                harm_norm: nv.as_mut(),
            },
        )?;
        download(s, &xd.slice(..n), x)?;
        if let (Some(host), Some(dev)) = (coef, cd.as_ref()) {
            download(s, &dev.slice(..rows), host)?;
        }
        if let (Some(host), Some(dev)) = (harm_norm, nd.as_ref()) {
            download(s, &dev.slice(..rows), host)?;
        }
        s.synchronize().map_err(driver(OP))
    }

    fn run_multi<T: DeviceElement>(
        &self,
        x: &mut [T],
        p: &MultiProjection<'_, T>,
        kept: Option<&mut [u8]>,
    ) -> CudaResult<()> {
        let s = &self.stream;
        let n = x.len();
        let mut xd = upload(s, x)?;
        let dirs: Vec<CudaSlice<T>> = p
            .directions
            .iter()
            .map(|d| upload(s, d))
            .collect::<CudaResult<_>>()?;
        let dir_views: Vec<CudaView<'_, T>> = dirs.iter().map(|d| d.slice(..n)).collect();
        let mut kd = kept.as_deref().map(|k| upload(s, k)).transpose()?;
        let mut kv = kd.as_mut().map(|k| k.slice_mut(..p.rows));
        self.surgery.project_rows_multi(
            s,
            &mut xd.slice_mut(..n),
            p.rows,
            p.dim,
            &dir_views,
            p.transform,
            Some(p.dep_tol),
            kv.as_mut(),
        )?;
        download(s, &xd.slice(..n), x)?;
        if let (Some(host), Some(dev)) = (kept, kd.as_ref()) {
            download(s, &dev.slice(..p.rows), host)?;
        }
        s.synchronize().map_err(driver(OP))
    }

    fn run_gram<T: DeviceElement>(&self, operands: &[Operand<'_, T>]) -> CudaResult<Gram> {
        let s = &self.stream;
        let k = operands.len();
        let bufs = upload_operands(s, operands)?;
        let lists = operand_views(&bufs);
        let mut table = table_of(&self.surgery, s, &lists)?;
        let transforms: Vec<Transform> = operands.iter().map(|o| o.transform).collect();
        let mut gd = s.alloc_zeros::<f32>((k * k).max(1)).map_err(driver(OP))?;
        self.surgery
            .gram(s, &mut table, &transforms, &mut gd.slice_mut(..k * k))?;
        let mut host = vec![f32::NAN; k * k];
        download(s, &gd.slice(..k * k), &mut host)?;
        s.synchronize().map_err(driver(OP))?;
        Ok(Gram::from_row_major(k, host)?)
    }

    fn run_combine<T: DeviceElement>(
        &self,
        out: &mut [&mut [T]],
        out_term: Option<(f32, Transform)>,
        operands: &[Operand<'_, T>],
        weights: &[f32],
    ) -> CudaResult<()> {
        let s = &self.stream;
        let bufs = upload_operands(s, operands)?;
        let lists = operand_views(&bufs);
        // One buffer per output tensor: each gets its own mutable view.
        let mut out_bufs: Vec<CudaSlice<T>> = out
            .iter()
            .map(|t| upload(s, t))
            .collect::<CudaResult<_>>()?;
        let transforms: Vec<Transform> = operands.iter().map(|o| o.transform).collect();
        let mut w = weights.to_vec();
        w.extend(out_term.map(|(wo, _)| wo));
        let wd = upload(s, &w)?;
        let table = table_of(&self.surgery, s, &lists)?;
        {
            let mut out_views: Vec<_> = out_bufs
                .iter_mut()
                .zip(out.iter())
                .map(|(b, t)| b.slice_mut(..t.len()))
                .collect();
            let mut out_list = OutputList::new(&self.surgery, s, &mut out_views)?;
            self.surgery.combine(
                s,
                &mut out_list,
                out_term.map(|(_, t)| t),
                &table,
                &transforms,
                &wd.slice(..w.len()),
            )?;
        }
        for (dst, buf) in out.iter_mut().zip(&out_bufs) {
            let n = dst.len();
            download(s, &buf.slice(..n), dst)?;
        }
        s.synchronize().map_err(driver(OP))
    }
}

impl HostBackend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn dgs_rows<T: DeviceElement>(
        &self,
        x: &mut [T],
        p: &RowProjection<'_, T>,
        stats: RowStatsMut<'_>,
    ) -> Result<()> {
        check_row_projection("cuda dgs_rows", x.len(), p, &stats)?;
        self.run_rows(x, p, stats).map_err(host_error)
    }

    fn project_rows_multi<T: DeviceElement>(
        &self,
        x: &mut [T],
        p: &MultiProjection<'_, T>,
        kept: Option<&mut [u8]>,
    ) -> Result<()> {
        let kept_len = kept.as_ref().map(|k| k.len());
        check_multi_projection("cuda project_rows_multi", x.len(), p, kept_len)?;
        self.run_multi(x, p, kept).map_err(host_error)
    }

    fn gram<T: DeviceElement>(&self, operands: &[Operand<'_, T>]) -> Result<Gram> {
        check_gram("cuda gram", operands)?;
        self.run_gram(operands).map_err(host_error)
    }

    fn combine<T: DeviceElement>(
        &self,
        out: &mut [&mut [T]],
        out_term: Option<(f32, Transform)>,
        operands: &[Operand<'_, T>],
        weights: &[f32],
    ) -> Result<()> {
        let out_lens: Vec<usize> = out.iter().map(|t| t.len()).collect();
        check_combine("cuda combine", &out_lens, out_term, operands, weights)?;
        self.run_combine(out, out_term, operands, weights)
            .map_err(host_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_failure_reaches_the_caller_typed() {
        let err = host_error(CudaSurgeryError::NoCudaDevice("device 3: gone".into()));
        let SurgeryError::Backend { backend, source } = &err else {
            panic!("expected a backend failure, got {err:?}");
        };
        assert_eq!(*backend, "cuda");
        assert!(matches!(
            source.downcast_ref::<CudaSurgeryError>(),
            Some(CudaSurgeryError::NoCudaDevice(m)) if m == "device 3: gone"
        ));
        assert_eq!(
            err.to_string(),
            "cuda backend: no CUDA device: device 3: gone"
        );
    }

    #[test]
    fn argument_errors_stay_argument_errors() {
        let args = SurgeryError::ZeroDim { op: "op", rows: 2 };
        assert_eq!(host_error(CudaSurgeryError::Arguments(args.clone())), args);
    }
}
