//! Row-wise DGS projection on the CPU: one read of each input row to reduce, one write, f32
//! throughout, on f32 copies of the row held in scratch.

use rayon::prelude::*;

use super::isa::multiversion;
use std::ops::Range;

use super::block::{LANES, PARALLEL_MIN, sum_lanes};
use super::simd::F32x8;
use crate::surgery::args::{RowProjection, RowStatsMut, check_row_projection};
use crate::surgery::element::{DType, Element};
use crate::surgery::error::Result;

/// Apply the row-wise DGS projection to `x` (`[rows, dim]`, row-major) in place.
///
/// Each row becomes `x' − (x'·ĥ) ĥ` where `x' = x + c·min(a, 0)` when a help term is given and
/// `ĥ = relu(h) / (‖relu(h)‖₂ + eps)`. Sums run in f32 whatever the storage type.
///
/// Special values, row by row (rows never affect each other):
/// - if `relu(h)` is all zero (every `h ≤ 0`, `−inf` included) the row is returned as `x'`, with
///   any NaN or inf in it left where it was, whatever `eps` is;
/// - otherwise a NaN or inf in `x'`, or a NaN or `+inf` in `h`, makes every element of the output
///   row NaN or ±inf, and its statistics non-finite: the projection is undefined, and a poisoned row
///   is easier to find than a plausible wrong one.
///
/// `min(a, 0)` clears `a = +inf`; NaN passes through `relu` and `min` as in PyTorch.
pub fn dgs_rows<T: Element>(
    x: &mut [T],
    p: &RowProjection<'_, T>,
    stats: RowStatsMut<'_>,
) -> Result<()> {
    check_row_projection("dgs_rows", x.len(), p, &stats)?;
    if p.rows == 0 {
        return Ok(());
    }
    let dim = p.dim;
    let row = |scratch: &mut Scratch, (r, xr): (usize, &mut [T])| {
        let help = p.help.map(|h| (&h.grad[r * dim..(r + 1) * dim], h.coef));
        project_row(xr, &p.harm[r * dim..(r + 1) * dim], help, p.eps, scratch)
    };
    let rows = x
        .par_chunks_mut(dim)
        .with_min_len((PARALLEL_MIN / dim).max(1))
        .enumerate();
    if stats.coef.is_none() && stats.harm_norm.is_none() {
        rows.for_each_init(Scratch::default, |s, item| {
            row(s, item);
        });
        return Ok(());
    }
    let per_row: Vec<(f32, f32)> = rows.map_init(Scratch::default, row).collect();
    if let Some(coef) = stats.coef {
        coef.iter_mut().zip(&per_row).for_each(|(c, s)| *c = s.0);
    }
    if let Some(norm) = stats.harm_norm {
        norm.iter_mut().zip(&per_row).for_each(|(n, s)| *n = s.1);
    }
    Ok(())
}

/// Rows are processed in segments of this many elements, converted to f32 in scratch. A row that
/// fits in one segment (every feature dimension in practice) is read from memory once and written
/// once; a longer row is converted twice, once per pass. A multiple of [`LANES`].
const SEGMENT: usize = 16 * 1024;

/// f32 copies of one segment: `x'` and `relu(h)`, and for f16/bf16 rows the widened inputs.
#[derive(Default)]
pub(super) struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    raw: [Vec<f32>; 3],
}

type V8 = [f32; LANES];

#[inline(always)]
fn group(g: &[f32]) -> &[f32; LANES] {
    g.try_into()
        .expect("chunks_exact(LANES) yields LANES values")
}

#[inline(always)]
fn group_mut(g: &mut [f32]) -> &mut [f32; LANES] {
    g.try_into()
        .expect("chunks_exact_mut(LANES) yields LANES values")
}

/// Zero-padded copy of a tail shorter than a group.
#[inline(always)]
fn pad(tail: &[f32]) -> V8 {
    let mut g = [0.0; LANES];
    g[..tail.len()].copy_from_slice(tail);
    g
}

/// `(x', relu(h))` of one group, and its contribution to the two sums.
#[inline(always)]
fn load_group<const HELP: bool>(
    x: &V8,
    h: &V8,
    a: &V8,
    c: F32x8,
    d: &mut F32x8,
    q: &mut F32x8,
) -> (F32x8, F32x8) {
    let hv = F32x8::load(h).relu();
    let mut xv = F32x8::load(x);
    if HELP {
        xv = xv.add(c.mul(F32x8::load(a).negative_part()));
    }
    *d = d.add(xv.mul(hv));
    *q = q.add(hv.mul(hv));
    (xv, hv)
}

/// Pass 1 over one segment: store `x'` and `relu(h)` in `xs`, `hs` (as long as `x`) and add
/// `x'·relu(h)` and `relu(h)²` into lane `i % 8` of `dot` and `sq`.
#[inline(always)]
fn load_segment<const HELP: bool>(
    x: &[f32],
    h: &[f32],
    a: &[f32],
    c: f32,
    (xs, hs): (&mut [f32], &mut [f32]),
    (dot, sq): (&mut V8, &mut V8),
) {
    let (mut d, mut q) = (F32x8::load(dot), F32x8::load(sq));
    let c = F32x8::splat(c);
    let full = x.len() / LANES * LANES;
    let inputs = x
        .chunks_exact(LANES)
        .zip(h.chunks_exact(LANES))
        .zip(a.chunks_exact(LANES));
    let kept = xs.chunks_exact_mut(LANES).zip(hs.chunks_exact_mut(LANES));
    for (((xg, hg), ag), (xk, hk)) in inputs.zip(kept) {
        let (xv, hv) = load_group::<HELP>(group(xg), group(hg), group(ag), c, &mut d, &mut q);
        xv.store(group_mut(xk));
        hv.store(group_mut(hk));
    }
    let n = x.len() - full;
    if n > 0 {
        let a_tail = if HELP { pad(&a[full..]) } else { [0.0; LANES] };
        let (xt, ht) = (pad(&x[full..]), pad(&h[full..]));
        let (xv, hv) = load_group::<HELP>(&xt, &ht, &a_tail, c, &mut d, &mut q);
        xs[full..].copy_from_slice(&xv.to_array()[..n]);
        hs[full..].copy_from_slice(&hv.to_array()[..n]);
    }
    d.store(dot);
    q.store(sq);
}

/// `x = xs − scale·hs` over one segment.
#[inline(always)]
fn project_segment(x: &mut [f32], xs: &[f32], hs: &[f32], scale: f32) {
    let sv = F32x8::splat(scale);
    let full = x.len() / LANES * LANES;
    let kept = xs.chunks_exact(LANES).zip(hs.chunks_exact(LANES));
    for (xg, (xk, hk)) in x.chunks_exact_mut(LANES).zip(kept) {
        let out = F32x8::load(group(xk)).sub(sv.mul(F32x8::load(group(hk))));
        out.store(group_mut(xg));
    }
    let n = x.len() - full;
    if n > 0 {
        let (xt, ht) = (pad(&xs[full..]), pad(&hs[full..]));
        let out = F32x8::load(&xt).sub(sv.mul(F32x8::load(&ht)));
        x[full..].copy_from_slice(&out.to_array()[..n]);
    }
}

fn segments(dim: usize) -> impl Iterator<Item = Range<usize>> {
    (0..dim)
        .step_by(SEGMENT)
        .map(move |a| a..(a + SEGMENT).min(dim))
}

/// [`load_segment`] on `range` of the row, with the help term or without. f16 and bf16 inputs
/// are first widened in bulk (eight per instruction) and then run through the f32 loop, which
/// vectorises far better than converting inside it.
#[inline(always)]
fn load_range<T: Element>(
    x: &[T],
    h: &[T],
    help: Option<(&[T], f32)>,
    r: Range<usize>,
    s: &mut Scratch,
    acc: (&mut V8, &mut V8),
) {
    let n = r.len();
    let kept = (&mut s.x[..n], &mut s.h[..n]);
    let [rx, rh, ra] = &mut s.raw;
    let (x, h, a) = (&x[r.clone()], &h[r.clone()], help.map(|(a, _)| &a[r]));
    let x = as_f32(x, rx);
    let h = as_f32(h, rh);
    match help {
        Some((_, c)) => {
            let a = as_f32(a.unwrap_or_default(), ra);
            load_segment::<true>(x, h, a, c, kept, acc);
        }
        None => load_segment::<false>(x, h, h, 0.0, kept, acc),
    }
}

/// The values as f32: the slice itself for f32 storage, else widened into `buf` (which is only
/// sized for f16 and bf16 rows).
#[inline(always)]
fn as_f32<'a, T: Element>(v: &'a [T], buf: &'a mut [f32]) -> &'a [f32] {
    if T::DTYPE == DType::F32 {
        bytemuck::cast_slice(v)
    } else {
        let buf = &mut buf[..v.len()];
        T::widen(v, buf);
        buf
    }
}

/// [`project_segment`] into the row, through a bulk narrowing for f16 and bf16.
#[inline(always)]
fn project_range<T: Element>(x: &mut [T], s: &mut Scratch, scale: f32) {
    let n = x.len();
    let (xs, hs) = (&s.x[..n], &s.h[..n]);
    if T::DTYPE == DType::F32 {
        project_segment(bytemuck::cast_slice_mut(x), xs, hs, scale);
    } else {
        let out = &mut s.raw[0][..n];
        project_segment(out, xs, hs, scale);
        T::narrow(out, x);
    }
}

multiversion!(fn project_row<T: Element>(
    x: &mut [T],
    h: &[T],
    help: Option<(&[T], f32)>,
    eps: f32,
    scratch: &mut Scratch,
) -> (f32, f32) => project_row_body);

/// Project one row in place; returns `(x'·ĥ, ‖relu(h)‖)`. The lane order is fixed, so results
/// never depend on threads or instruction set.
#[inline(always)]
fn project_row_body<T: Element>(
    x: &mut [T],
    h: &[T],
    help: Option<(&[T], f32)>,
    eps: f32,
    s: &mut Scratch,
) -> (f32, f32) {
    let dim = x.len();
    let seg_max = dim.min(SEGMENT);
    if s.x.len() < seg_max {
        let wide = T::DTYPE != DType::F32;
        for v in [&mut s.x, &mut s.h]
            .into_iter()
            .chain(s.raw.iter_mut().filter(|_| wide))
        {
            v.resize(seg_max, 0.0);
        }
    }
    let (mut dot, mut sq) = ([0.0f32; LANES], [0.0f32; LANES]);
    for range in segments(dim) {
        load_range(x, h, help, range, s, (&mut dot, &mut sq));
    }
    let norm = sum_lanes(&sq).sqrt();
    if norm == 0.0 && help.is_none() {
        return (0.0, 0.0);
    }
    // ĥ = 0 leaves the row at x' exactly, whatever eps is (eps = 0 would otherwise give 0/0).
    let (coef, scale) = if norm == 0.0 {
        (0.0, 0.0)
    } else {
        let denom = norm + eps;
        let coef = sum_lanes(&dot) / denom;
        (coef, coef / denom)
    };
    let single = dim <= SEGMENT;
    for range in segments(dim) {
        if !single {
            // Long rows were only summed in pass 1; convert this segment again.
            load_range(
                x,
                h,
                help,
                range.clone(),
                s,
                (&mut [0.0; LANES], &mut [0.0; LANES]),
            );
        }
        project_range(&mut x[range], s, scale);
    }
    (coef, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surgery::verify::{Magnitude, random_elems};

    /// The AVX2 build and the baseline build of the row kernel give the same bits.
    #[test]
    fn instruction_sets_agree_bit_for_bit() {
        let mut rng = crate::surgery::rng::SplitMix64::new(4);
        for dim in [1, 7, 768, 769, 40_000] {
            let x: Vec<half::f16> = random_elems(&mut rng, dim, Magnitude::Normal(2.0));
            let h: Vec<half::f16> = random_elems(&mut rng, dim, Magnitude::Normal(1.0));
            let a: Vec<half::f16> = random_elems(&mut rng, dim, Magnitude::Normal(1.0));
            let (mut fast, mut base) = (x.clone(), x.clone());
            let (mut s1, mut s2) = (Scratch::default(), Scratch::default());
            let r1 = project_row(&mut fast, &h, Some((&a, 0.1)), 1e-6, &mut s1);
            let r2 = project_row_body(&mut base, &h, Some((&a, 0.1)), 1e-6, &mut s2);
            assert_eq!(r1.0.to_bits(), r2.0.to_bits());
            assert_eq!(r1.1.to_bits(), r2.1.to_bits());
            assert!(
                fast.iter()
                    .zip(&base)
                    .all(|(u, v)| u.to_bits() == v.to_bits()),
                "dim {dim}"
            );
        }
    }
}
