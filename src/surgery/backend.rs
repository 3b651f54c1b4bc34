//! One interface over host slices for every backend, so a single test body or self-check runs
//! the same cases on each: the CPU backend computes in place, a device backend copies in, runs its
//! kernels and copies out.

use super::args::{MultiProjection, Operand, RowProjection, RowStatsMut};
use super::cpu;
use super::element::Element;
use super::error::Result;
use super::solve::Gram;
use super::transform::Transform;

pub trait HostBackend: Sync {
    fn name(&self) -> &'static str;

    fn dgs_rows<T: Element>(
        &self,
        x: &mut [T],
        p: &RowProjection<'_, T>,
        stats: RowStatsMut<'_>,
    ) -> Result<()>;

    fn project_rows_multi<T: Element>(
        &self,
        x: &mut [T],
        p: &MultiProjection<'_, T>,
        kept: Option<&mut [u8]>,
    ) -> Result<()>;

    fn gram<T: Element>(&self, operands: &[Operand<'_, T>]) -> Result<Gram>;

    fn combine<T: Element>(
        &self,
        out: &mut [&mut [T]],
        out_term: Option<(f32, Transform)>,
        operands: &[Operand<'_, T>],
        weights: &[f32],
    ) -> Result<()>;
}

/// The fast CPU backend ([`cpu`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl HostBackend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn dgs_rows<T: Element>(
        &self,
        x: &mut [T],
        p: &RowProjection<'_, T>,
        stats: RowStatsMut<'_>,
    ) -> Result<()> {
        cpu::dgs_rows(x, p, stats)
    }

    fn project_rows_multi<T: Element>(
        &self,
        x: &mut [T],
        p: &MultiProjection<'_, T>,
        kept: Option<&mut [u8]>,
    ) -> Result<()> {
        cpu::project_rows_multi(x, p, kept)
    }

    fn gram<T: Element>(&self, operands: &[Operand<'_, T>]) -> Result<Gram> {
        cpu::gram(operands)
    }

    fn combine<T: Element>(
        &self,
        out: &mut [&mut [T]],
        out_term: Option<(f32, Transform)>,
        operands: &[Operand<'_, T>],
        weights: &[f32],
    ) -> Result<()> {
        cpu::combine(out, out_term, operands, weights)
    }
}
