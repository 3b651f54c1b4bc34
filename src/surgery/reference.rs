//! The float64 reference: the same math written the plainest way, one formula per pass, in f64
//! from the same (already rounded) inputs. It is the oracle of the tests and of `dgs self-check`,
//! never the path training takes.
//!
//! Besides values, each function returns a per-value `scale`: the sum of the magnitudes of the
//! terms that produced it. Rounding in an f32 computation is proportional to that, not to the
//! result (which may be a small difference of large terms), so tolerances multiply it.

use crate::surgery::args::{
    MultiProjection, Operand, RowProjection, RowStatsMut, check_combine, check_gram,
    check_multi_projection, check_row_projection,
};
use crate::surgery::compare::AtScale;
use crate::surgery::element::Element;
use crate::surgery::error::Result;
use crate::surgery::transform::Transform;

/// Values and the magnitude scale each one was computed at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scaled {
    pub values: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Scaled {
    fn with_capacity(n: usize) -> Self {
        Self {
            values: Vec::with_capacity(n),
            scale: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, value: f64, scale: f64) {
        self.values.push(value);
        self.scale.push(scale);
    }

    /// Value `i` with its scale.
    pub fn at(&self, i: usize) -> AtScale {
        AtScale {
            value: self.values[i],
            scale: self.scale[i],
        }
    }

    /// Every value with its scale, in order.
    pub fn iter(&self) -> impl Iterator<Item = AtScale> + '_ {
        self.values
            .iter()
            .zip(&self.scale)
            .map(|(&value, &scale)| AtScale { value, scale })
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowsReference {
    pub out: Scaled,
    /// `x'·ĥ` per row.
    pub coef: Scaled,
    /// `‖relu(h)‖` per row.
    pub harm_norm: Scaled,
}

fn widen<T: Element>(v: &[T], t: Transform) -> Vec<f64> {
    v.iter().map(|e| t.apply_f64(e.to_f64())).collect()
}

/// Reference of [`cpu::dgs_rows`](crate::surgery::cpu::dgs_rows).
pub fn dgs_rows<T: Element>(x: &[T], p: &RowProjection<'_, T>) -> Result<RowsReference> {
    check_row_projection("reference::dgs_rows", x.len(), p, &RowStatsMut::default())?;
    let mut r = RowsReference::default();
    let eps = f64::from(p.eps);
    for row in 0..p.rows {
        let span = row * p.dim..(row + 1) * p.dim;
        let x0 = widen(&x[span.clone()], Transform::Identity);
        let help: Vec<f64> = match &p.help {
            Some(h) => widen(&h.grad[span.clone()], Transform::NegativePart)
                .into_iter()
                .map(|a| f64::from(h.coef) * a)
                .collect(),
            None => vec![0.0; p.dim],
        };
        let xv: Vec<f64> = x0.iter().zip(&help).map(|(a, b)| a + b).collect();
        let hr = widen(&p.harm[span], Transform::Relu);
        let norm = hr.iter().map(|v| v * v).sum::<f64>().sqrt();
        r.harm_norm.push(norm, norm);
        if norm == 0.0 {
            r.coef.push(0.0, 0.0);
            for d in 0..p.dim {
                r.out.push(xv[d], x0[d].abs() + help[d].abs());
            }
            continue;
        }
        let hhat: Vec<f64> = hr.iter().map(|v| v / (norm + eps)).collect();
        let coef: f64 = xv.iter().zip(&hhat).map(|(a, b)| a * b).sum();
        let coef_scale: f64 = xv.iter().zip(&hhat).map(|(a, b)| (a * b).abs()).sum();
        r.coef.push(coef, coef_scale);
        for d in 0..p.dim {
            let scale = x0[d].abs() + help[d].abs() + coef_scale * hhat[d].abs();
            r.out.push(xv[d] - coef * hhat[d], scale);
        }
    }
    Ok(r)
}

/// Reference of [`cpu::project_rows_multi`](crate::surgery::cpu::project_rows_multi): modified
/// Gram–Schmidt with one re-orthogonalisation, in f64, with the same skipping rule.
/// Returns the rows and the number of kept directions per row.
pub fn project_rows_multi<T: Element>(
    x: &[T],
    p: &MultiProjection<'_, T>,
) -> Result<(Scaled, Vec<u8>)> {
    check_multi_projection("reference::project_rows_multi", x.len(), p, None)?;
    let mut out = Scaled::with_capacity(x.len());
    let mut kept_counts = Vec::with_capacity(p.rows);
    let tol = f64::from(p.dep_tol);
    for row in 0..p.rows {
        let span = row * p.dim..(row + 1) * p.dim;
        let mut basis: Vec<Vec<f64>> = Vec::new();
        for dir in p.directions {
            let mut u = widen(&dir[span.clone()], p.transform);
            let n0 = norm(&u);
            for _ in 0..2 {
                for q in &basis {
                    let c = dot(&u, q);
                    u.iter_mut().zip(q).for_each(|(a, b)| *a -= c * b);
                }
            }
            let n = norm(&u);
            if n0.is_finite() && n.is_finite() && n <= tol * n0 {
                continue;
            }
            u.iter_mut().for_each(|a| *a /= n);
            basis.push(u);
        }
        kept_counts.push(basis.len() as u8);
        let x0 = widen(&x[span], Transform::Identity);
        let xnorm = norm(&x0);
        let mut xv = x0.clone();
        for q in &basis {
            let c = dot(&xv, q);
            xv.iter_mut().zip(q).for_each(|(a, b)| *a -= c * b);
        }
        for d in 0..p.dim {
            let spread: f64 = basis.iter().map(|q| q[d].abs()).sum();
            out.push(xv[d], x0[d].abs() + xnorm * spread);
        }
    }
    Ok((out, kept_counts))
}

/// Reference of [`cpu::gram`](crate::surgery::cpu::gram): the K×K matrix, row-major.
pub fn gram<T: Element>(operands: &[Operand<'_, T>]) -> Result<Scaled> {
    check_gram("reference::gram", operands)?;
    let flat: Vec<Vec<f64>> = operands.iter().map(flatten).collect();
    let k = operands.len();
    let mut g = Scaled::with_capacity(k * k);
    for a in &flat {
        for b in &flat {
            let value = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let scale = a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum();
            g.push(value, scale);
        }
    }
    Ok(g)
}

/// Reference of [`cpu::combine`](crate::surgery::cpu::combine), flattened over `out`'s tensors.
pub fn combine<T: Element>(
    out: &[&[T]],
    out_term: Option<(f32, Transform)>,
    operands: &[Operand<'_, T>],
    weights: &[f32],
) -> Result<Scaled> {
    let out_lens: Vec<usize> = out.iter().map(|t| t.len()).collect();
    check_combine("reference::combine", &out_lens, out_term, operands, weights)?;
    let flat: Vec<Vec<f64>> = operands.iter().map(flatten).collect();
    let initial: Vec<f64> = match out_term {
        Some((w, t)) => flatten(&Operand::new(out, t))
            .into_iter()
            .map(|v| f64::from(w) * v)
            .collect(),
        None => vec![0.0; out_lens.iter().sum()],
    };
    let mut r = Scaled::with_capacity(initial.len());
    for (i, &init) in initial.iter().enumerate() {
        let terms = flat.iter().zip(weights).map(|(v, &w)| f64::from(w) * v[i]);
        let (value, scale) = terms.fold((init, init.abs()), |(s, m), t| (s + t, m + t.abs()));
        r.push(value, scale);
    }
    Ok(r)
}

/// One operand's tensors, transformed and concatenated in f64.
pub fn flatten<T: Element>(o: &Operand<'_, T>) -> Vec<f64> {
    o.tensors
        .iter()
        .flat_map(|t| t.iter().map(|e| o.transform.apply_f64(e.to_f64())))
        .collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// The literal sequential PCGrad of Yu et al. on flattened f64 vectors, visiting tasks in
/// [`pcgrad_visit_order`](crate::surgery::solve::pcgrad_visit_order): for each task, copy it and
/// subtract its conflicting components one dot product at a time, then merge.
pub fn pcgrad_sequential<T: Element>(
    tasks: &[&[&[T]]],
    seed: u64,
    reduction: crate::surgery::Reduction,
) -> Scaled {
    let flat: Vec<Vec<f64>> = tasks
        .iter()
        .map(|t| flatten(&Operand::identity(t)))
        .collect();
    let n = flat.first().map_or(0, Vec::len);
    let mut merged = vec![0.0; n];
    let mut scale = vec![0.0; n];
    for (i, gi) in flat.iter().enumerate() {
        let mut g = gi.clone();
        let mut used: Vec<(usize, f64)> = Vec::new();
        for j in crate::surgery::solve::pcgrad_visit_order(seed, flat.len(), i) {
            let gj = &flat[j];
            let along = dot(&g, gj);
            let norm_sq = dot(gj, gj);
            if along < 0.0 && norm_sq > 0.0 {
                let c = along / norm_sq;
                g.iter_mut().zip(gj).for_each(|(a, b)| *a -= c * b);
                used.push((j, c));
            }
        }
        for d in 0..n {
            merged[d] += g[d];
            scale[d] += gi[d].abs()
                + used
                    .iter()
                    .map(|&(j, c)| (c * flat[j][d]).abs())
                    .sum::<f64>();
        }
    }
    if reduction == crate::surgery::Reduction::Mean && !flat.is_empty() {
        let k = flat.len() as f64;
        merged
            .iter_mut()
            .chain(scale.iter_mut())
            .for_each(|v| *v /= k);
    }
    Scaled {
        values: merged,
        scale,
    }
}
