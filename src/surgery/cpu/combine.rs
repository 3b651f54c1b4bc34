//! Linear combination of tensor lists on the CPU: one pass, in place allowed.

use rayon::prelude::*;

use super::block::{CHUNK, PARALLEL_MIN, SEGMENT, widen_transformed};
use super::isa::multiversion;
use crate::surgery::args::{Operand, check_combine};
use crate::surgery::element::Element;
use crate::surgery::error::Result;
use crate::surgery::transform::Transform;

/// `out = [w_out · t_out(out)] + Σ_k weights[k] · transform_k(operands[k])`, element by element
/// in f32 (terms added in that order), rounded once into `out`.
///
/// `out_term = Some((w, t))` reads `out` as an extra operand (the in-place form: to update a
/// gradient list `g ← g + Σ …`, pass it as `out` with `Some((1.0, Transform::Identity))`);
/// `None` overwrites `out`. NaN and inf propagate by IEEE arithmetic; a weight of 0 still
/// multiplies, so `0 · inf` gives NaN rather than hiding a bad input.
pub fn combine<T: Element>(
    out: &mut [&mut [T]],
    out_term: Option<(f32, Transform)>,
    operands: &[Operand<'_, T>],
    weights: &[f32],
) -> Result<()> {
    let out_lens: Vec<usize> = out.iter().map(|t| t.len()).collect();
    check_combine("combine", &out_lens, out_term, operands, weights)?;
    let total: usize = out_lens.iter().sum();
    let work = |scratch: &mut Vec<f32>, t: usize, c: usize, dst: &mut [T]| {
        combine_chunk(dst, t, c * CHUNK, out_term, operands, weights, scratch);
    };
    if total * (operands.len() + 1) < PARALLEL_MIN {
        let mut scratch = Vec::new();
        for (t, tensor) in out.iter_mut().enumerate() {
            for (c, dst) in tensor.chunks_mut(CHUNK).enumerate() {
                work(&mut scratch, t, c, dst);
            }
        }
    } else {
        out.par_iter_mut().enumerate().for_each(|(t, tensor)| {
            tensor
                .par_chunks_mut(CHUNK)
                .enumerate()
                .for_each_init(Vec::new, |scratch, (c, dst)| work(scratch, t, c, dst));
        });
    }
    Ok(())
}

multiversion!(fn combine_chunk<T: Element>(
    dst: &mut [T],
    t: usize,
    base: usize,
    out_term: Option<(f32, Transform)>,
    operands: &[Operand<'_, T>],
    weights: &[f32],
    scratch: &mut Vec<f32>,
) -> () => combine_chunk_body);

#[inline(always)]
fn combine_chunk_body<T: Element>(
    dst: &mut [T],
    t: usize,
    base: usize,
    out_term: Option<(f32, Transform)>,
    operands: &[Operand<'_, T>],
    weights: &[f32],
    scratch: &mut Vec<f32>,
) {
    if scratch.len() < 3 * SEGMENT {
        scratch.resize(3 * SEGMENT, 0.0);
    }
    let (acc, rest) = scratch.split_at_mut(SEGMENT);
    let (raw, term) = rest.split_at_mut(SEGMENT);
    for (s, dst_seg) in dst.chunks_mut(SEGMENT).enumerate() {
        let off = base + s * SEGMENT;
        let n = dst_seg.len();
        let acc = &mut acc[..n];
        match out_term {
            Some((w, tr)) => {
                widen_transformed(dst_seg, tr, &mut raw[..n], &mut term[..n]);
                acc.iter_mut().zip(&term[..n]).for_each(|(a, v)| *a = w * v);
            }
            None => acc.fill(0.0),
        }
        for (o, &w) in operands.iter().zip(weights) {
            let src = &o.tensors[t][off..off + n];
            widen_transformed(src, o.transform, &mut raw[..n], &mut term[..n]);
            acc.iter_mut()
                .zip(&term[..n])
                .for_each(|(a, v)| *a += w * v);
        }
        T::narrow(acc, dst_seg);
    }
}
