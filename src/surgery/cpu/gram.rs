//! Gram matrix over tensor lists on the CPU: one pass over memory, chunked, deterministic.

use rayon::prelude::*;

use super::block::{
    CHUNK, LANES, PARALLEL_MIN, SEGMENT, chunk_table, sum_lanes, widen_transformed,
};
use super::isa::multiversion;
use super::simd::F32x8;
use crate::surgery::args::{MAX_OPERANDS, Operand, check_gram};
use crate::surgery::element::Element;
use crate::surgery::error::Result;
use crate::surgery::solve::Gram;

const PAIRS: usize = MAX_OPERANDS * (MAX_OPERANDS + 1) / 2;
/// Products are summed in f32 over blocks of this many elements, blocks in f64.
const BLOCK: usize = 64;

/// `G[i][j] = transform_i(v_i) · transform_j(v_j)` over the whole tensor lists.
///
/// Products are summed in f32 within blocks of 64 elements (element `i` of a block into lane
/// `i % 8`, lanes added pairwise), blocks in f64 within a 65536-element chunk, chunks in f64 in a
/// fixed order: the result does not depend on the thread count. NaN and inf propagate into the
/// entries they touch, by IEEE arithmetic.
pub fn gram<T: Element>(operands: &[Operand<'_, T>]) -> Result<Gram> {
    let lens = check_gram("gram", operands)?;
    let k = operands.len();
    let table = chunk_table(&lens);
    let total: usize = lens.iter().sum();
    let chunk = |scratch: &mut Vec<f32>, &(t, start, len): &(usize, usize, usize)| {
        chunk_partials(operands, t, start, len, scratch)
    };
    let partials: Vec<[f64; PAIRS]> = if total * k < PARALLEL_MIN {
        let mut scratch = Vec::new();
        table.iter().map(|c| chunk(&mut scratch, c)).collect()
    } else {
        table.par_iter().map_init(Vec::new, chunk).collect()
    };
    let mut upper = [0.0f64; PAIRS];
    for p in &partials {
        upper.iter_mut().zip(p).for_each(|(u, v)| *u += v);
    }
    let mut g = Gram::zeros(k);
    let mut idx = 0;
    for i in 0..k {
        for j in i..k {
            g.set(i, j, upper[idx] as f32);
            idx += 1;
        }
    }
    Ok(g)
}

multiversion!(fn chunk_partials<T: Element>(
    operands: &[Operand<'_, T>],
    t: usize,
    start: usize,
    len: usize,
    scratch: &mut Vec<f32>,
) -> [f64; PAIRS] => chunk_partials_body);

/// The upper-triangle partial sums of one chunk. Each segment of every operand is widened and
/// transformed into `scratch` once, then every pair is reduced from there.
#[inline(always)]
fn chunk_partials_body<T: Element>(
    operands: &[Operand<'_, T>],
    t: usize,
    start: usize,
    len: usize,
    scratch: &mut Vec<f32>,
) -> [f64; PAIRS] {
    debug_assert!(len <= CHUNK);
    let k = operands.len();
    if scratch.len() < 2 * k * SEGMENT {
        scratch.resize(2 * k * SEGMENT, 0.0);
    }
    let (bufs, raw) = scratch.split_at_mut(k * SEGMENT);
    let mut acc = [0.0f64; PAIRS];
    for seg in (start..start + len).step_by(SEGMENT) {
        let end = (seg + SEGMENT).min(start + len);
        // Zero padding to whole blocks leaves every dot product unchanged.
        let padded = (end - seg).div_ceil(BLOCK) * BLOCK;
        for (o, buf) in operands.iter().zip(bufs.chunks_exact_mut(SEGMENT)) {
            widen_transformed(
                &o.tensors[t][seg..end],
                o.transform,
                &mut raw[..SEGMENT],
                buf,
            );
            buf[end - seg..padded].fill(0.0);
        }
        let mut idx = 0;
        for i in 0..k {
            for j in i..k {
                let a = &bufs[i * SEGMENT..i * SEGMENT + padded];
                let b = &bufs[j * SEGMENT..j * SEGMENT + padded];
                acc[idx] += block_dots(a, b);
                idx += 1;
            }
        }
    }
    acc
}

/// `Σ_blocks f64(Σ_block a·b in f32 lanes)`; `a.len()` is a multiple of [`BLOCK`].
#[inline(always)]
fn block_dots(a: &[f32], b: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for (ab, bb) in a.chunks_exact(BLOCK).zip(b.chunks_exact(BLOCK)) {
        let mut lanes = F32x8::splat(0.0);
        for (ag, bg) in ab.chunks_exact(LANES).zip(bb.chunks_exact(LANES)) {
            let (ag, bg): (&[f32; LANES], &[f32; LANES]) = (
                ag.try_into().expect("group of LANES"),
                bg.try_into().expect("group of LANES"),
            );
            lanes = lanes.add(F32x8::load(ag).mul(F32x8::load(bg)));
        }
        total += f64::from(sum_lanes(&lanes.to_array()));
    }
    total
}
