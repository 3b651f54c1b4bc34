//! K-direction row projection on the CPU: Gram–Schmidt with re-orthogonalisation on f32 copies of
//! the row's directions, then one projection of the row.

use rayon::prelude::*;

use super::block::{LANES, PARALLEL_MIN, sum_lanes};
use super::isa::multiversion;
use super::simd::F32x8;
use crate::surgery::args::{MultiProjection, check_multi_projection};
use crate::surgery::element::Element;
use crate::surgery::error::Result;

/// Project each row of `x` (`[rows, dim]`) off the span of its K directions, in place.
///
/// See [`MultiProjection`] for how near-dependent directions are skipped. `kept`, when given,
/// receives the number of directions that were used for each row. A row with no kept direction
/// is returned unchanged. A NaN or inf in a direction or (when some direction is kept) in `x` makes
/// the whole output row non-finite.
pub fn project_rows_multi<T: Element>(
    x: &mut [T],
    p: &MultiProjection<'_, T>,
    kept: Option<&mut [u8]>,
) -> Result<()> {
    check_multi_projection(
        "project_rows_multi",
        x.len(),
        p,
        kept.as_ref().map(|k| k.len()),
    )?;
    if p.rows == 0 {
        return Ok(());
    }
    let dim = p.dim;
    let k = p.directions.len();
    let min_rows = (PARALLEL_MIN / (dim * (k + 1))).max(1);
    let counts: Vec<u8> = x
        .par_chunks_mut(dim)
        .with_min_len(min_rows)
        .enumerate()
        .map_init(
            || RowScratch::new(k, dim),
            |scratch, (r, xr)| project_row(xr, p, r, scratch),
        )
        .collect();
    if let Some(kept) = kept {
        kept.copy_from_slice(&counts);
    }
    Ok(())
}

struct RowScratch {
    basis: Vec<Vec<f32>>,
    row: Vec<f32>,
}

impl RowScratch {
    fn new(k: usize, dim: usize) -> Self {
        Self {
            basis: vec![vec![0.0; dim]; k],
            row: vec![0.0; dim],
        }
    }
}

multiversion!(fn project_row<T: Element>(
    x: &mut [T],
    p: &MultiProjection<'_, T>,
    r: usize,
    s: &mut RowScratch,
) -> u8 => project_row_body);

#[inline(always)]
fn project_row_body<T: Element>(
    x: &mut [T],
    p: &MultiProjection<'_, T>,
    r: usize,
    s: &mut RowScratch,
) -> u8 {
    let dim = p.dim;
    let mut kept = 0;
    for dir in p.directions {
        let (done, rest) = s.basis.split_at_mut(kept);
        let u = &mut rest[0];
        T::widen(&dir[r * dim..(r + 1) * dim], &mut s.row);
        p.transform.apply_into(&s.row, u);
        let n0 = dot(u, u).sqrt();
        // Twice is enough: a second sweep restores orthogonality lost to cancellation.
        for _ in 0..2 {
            for q in done.iter() {
                let c = dot(u, q);
                axpy(u, -c, q);
            }
        }
        let n = dot(u, u).sqrt();
        let finite = n0.is_finite() && n.is_finite();
        if finite && n <= p.dep_tol * n0 {
            continue;
        }
        // A non-finite direction is kept on purpose: it poisons the row instead of vanishing.
        let inv = 1.0 / n;
        u.iter_mut().for_each(|v| *v *= inv);
        kept += 1;
    }
    if kept == 0 {
        return 0;
    }
    T::widen(x, &mut s.row);
    for q in &s.basis[..kept] {
        let c = dot(&s.row, q);
        axpy(&mut s.row, -c, q);
    }
    T::narrow(&s.row, x);
    kept as u8
}

/// `Σ a·b`, element `i` into lane `i % 8`, lanes added pairwise.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = F32x8::splat(0.0);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (ga, gb) in ca.zip(cb) {
        acc = acc.add(F32x8::load(lanes(ga)).mul(F32x8::load(lanes(gb))));
    }
    let mut tail = acc.to_array();
    for (l, (va, vb)) in ra.iter().zip(rb).enumerate() {
        tail[l] += va * vb;
    }
    sum_lanes(&tail)
}

#[inline(always)]
fn lanes(g: &[f32]) -> &[f32; LANES] {
    g.try_into()
        .expect("chunks_exact(LANES) yields LANES values")
}

#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(yv, xv)| *yv += a * xv);
}
