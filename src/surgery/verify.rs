//! Seeded comparisons of a backend with the float64 reference: the bodies shared by the test
//! suite and `dgs self-check`, so every backend is held to the same cases and tolerances.

use super::args::{MultiProjection, Operand, RowProjection, RowStatsMut};
use super::backend::HostBackend;
use super::compare::{Report, Tolerance, compare, to_f64};
use super::element::Element;
use super::error::Result;
use super::reference;
use super::rng::SplitMix64;
use super::solve::{self, Reduction};
use super::transform::Transform;

/// How random inputs are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Magnitude {
    /// Normal with this standard deviation.
    Normal(f64),
    /// Uniform in `±[lo, hi]`, random sign: large values whose squares overflow f16.
    Band(f64, f64),
}

pub fn random_elems<T: Element>(rng: &mut SplitMix64, n: usize, m: Magnitude) -> Vec<T> {
    (0..n)
        .map(|_| {
            let v = match m {
                Magnitude::Normal(s) => s * rng.normal(),
                Magnitude::Band(lo, hi) => {
                    let v = rng.uniform(lo, hi);
                    if rng.next_u64() & 1 == 0 { v } else { -v }
                }
            };
            T::from_f32(v as f32)
        })
        .collect()
}

/// Random tensors of the given lengths.
pub fn random_list<T: Element>(rng: &mut SplitMix64, lens: &[usize], m: Magnitude) -> Vec<Vec<T>> {
    lens.iter().map(|&n| random_elems(rng, n, m)).collect()
}

pub fn as_slices<T>(list: &[Vec<T>]) -> Vec<&[T]> {
    list.iter().map(Vec::as_slice).collect()
}

/// `k` random tensor lists of the given lengths, normal(0, 1).
pub fn random_lists<T: Element>(
    rng: &mut SplitMix64,
    k: usize,
    lens: &[usize],
) -> Vec<Vec<Vec<T>>> {
    (0..k)
        .map(|_| random_list(rng, lens, Magnitude::Normal(1.0)))
        .collect()
}

/// Borrow each list of [`random_lists`] as slices, ready for [`Operand`]s.
pub fn lists_as_slices<T>(lists: &[Vec<Vec<T>>]) -> Vec<Vec<&[T]>> {
    lists.iter().map(|l| as_slices(l)).collect()
}

/// Reports of one row-projection check.
#[derive(Clone, Debug)]
pub struct RowsCheck {
    pub out: Report,
    pub coef: Report,
    pub harm_norm: Report,
}

impl RowsCheck {
    pub fn passed(&self) -> bool {
        self.out.passed() && self.coef.passed() && self.harm_norm.passed()
    }

    /// The worst err/bound ratio of the three.
    pub fn worst_ratio(&self) -> f64 {
        self.out
            .worst_ratio
            .max(self.coef.worst_ratio)
            .max(self.harm_norm.worst_ratio)
    }
}

/// Row-wise DGS projection on `rows × dim` random inputs, with the help term `0.2/rows · min(a, 0)`
/// when `with_help`.
pub fn check_dgs_rows<T: Element, B: HostBackend>(
    backend: &B,
    rows: usize,
    dim: usize,
    with_help: bool,
    m: Magnitude,
    seed: u64,
) -> Result<RowsCheck> {
    let mut rng = SplitMix64::new(seed);
    let n = rows * dim;
    let x: Vec<T> = random_elems(&mut rng, n, m);
    let harm: Vec<T> = random_elems(&mut rng, n, m);
    let help: Vec<T> = random_elems(&mut rng, n, m);
    let mut p = RowProjection::new(rows, dim, &harm);
    if with_help {
        p = p.with_help(&help, 0.2 / rows.max(1) as f32);
    }
    let expected = reference::dgs_rows(&x, &p)?;
    let mut out = x.clone();
    let (mut coef, mut norm) = (vec![f32::NAN; rows], vec![f32::NAN; rows]);
    let stats = RowStatsMut {
        coef: Some(&mut coef),
        harm_norm: Some(&mut norm),
    };
    backend.dgs_rows(&mut out, &p, stats)?;
    let stat_tol = Tolerance::for_dtype(super::DType::F32);
    Ok(RowsCheck {
        out: compare(&to_f64(&out), &expected.out, Tolerance::for_dtype(T::DTYPE)),
        coef: compare(&to_f64(&coef), &expected.coef, stat_tol),
        harm_norm: compare(&to_f64(&norm), &expected.harm_norm, stat_tol),
    })
}

/// K-direction projection on random inputs; also checks the kept counts equal the reference's.
pub fn check_project_rows_multi<T: Element, B: HostBackend>(
    backend: &B,
    rows: usize,
    dim: usize,
    k: usize,
    transform: Transform,
    seed: u64,
) -> Result<(Report, bool)> {
    let mut rng = SplitMix64::new(seed);
    let m = Magnitude::Normal(1.0);
    let x: Vec<T> = random_elems(&mut rng, rows * dim, m);
    let dirs: Vec<Vec<T>> = (0..k)
        .map(|_| random_elems(&mut rng, rows * dim, m))
        .collect();
    let dir_refs = as_slices(&dirs);
    let p = MultiProjection::new(rows, dim, &dir_refs).with_transform(transform);
    let (expected, expected_kept) = reference::project_rows_multi(&x, &p)?;
    let mut out = x.clone();
    let mut kept = vec![u8::MAX; rows];
    backend.project_rows_multi(&mut out, &p, Some(&mut kept))?;
    let report = compare(&to_f64(&out), &expected, Tolerance::for_dtype(T::DTYPE));
    Ok((report, kept == expected_kept))
}

/// Gram over K random tensor lists with the given tensor lengths; `transforms[k % len]` per operand.
pub fn check_gram<T: Element, B: HostBackend>(
    backend: &B,
    lens: &[usize],
    k: usize,
    transforms: &[Transform],
    seed: u64,
) -> Result<Report> {
    let mut rng = SplitMix64::new(seed);
    let lists = random_lists::<T>(&mut rng, k, lens);
    let slices = lists_as_slices(&lists);
    let operands: Vec<Operand<'_, T>> = slices
        .iter()
        .enumerate()
        .map(|(i, s)| Operand::new(s, transforms[i % transforms.len()]))
        .collect();
    let expected = reference::gram(&operands)?;
    let got = backend.gram(&operands)?;
    let got: Vec<f64> = got.as_row_major().iter().map(|&v| f64::from(v)).collect();
    Ok(compare(
        &got,
        &expected,
        Tolerance::for_dtype(super::DType::F32),
    ))
}

/// Combine of K random tensor lists with random weights; `in_place` reads `out` as an extra
/// operand. The output buffer is poisoned with NaN first when it is overwritten, so an element
/// the backend forgets to write fails.
pub fn check_combine<T: Element, B: HostBackend>(
    backend: &B,
    lens: &[usize],
    k: usize,
    in_place: bool,
    seed: u64,
) -> Result<Report> {
    let mut rng = SplitMix64::new(seed);
    let m = Magnitude::Normal(1.0);
    let lists = random_lists::<T>(&mut rng, k, lens);
    let slices = lists_as_slices(&lists);
    let transforms = [
        Transform::Identity,
        Transform::Relu,
        Transform::NegativePart,
    ];
    let operands: Vec<Operand<'_, T>> = slices
        .iter()
        .enumerate()
        .map(|(i, s)| Operand::new(s, transforms[i % 3]))
        .collect();
    let weights: Vec<f32> = (0..k).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
    let mut out: Vec<Vec<T>> = if in_place {
        random_list(&mut rng, lens, m)
    } else {
        lens.iter()
            .map(|&n| vec![T::from_f32(f32::NAN); n])
            .collect()
    };
    let out_term = in_place.then_some((0.75, Transform::Identity));
    let expected = reference::combine(&as_slices(&out), out_term, &operands, &weights)?;
    let mut out_refs: Vec<&mut [T]> = out.iter_mut().map(Vec::as_mut_slice).collect();
    backend.combine(&mut out_refs, out_term, &operands, &weights)?;
    let got: Vec<f64> = out.iter().flat_map(|t| to_f64(t)).collect();
    Ok(compare(&got, &expected, Tolerance::for_dtype(T::DTYPE)))
}

/// PCGrad through Gram → solve → combine against the literal sequential implementation.
pub fn check_pcgrad<T: Element, B: HostBackend>(
    backend: &B,
    lens: &[usize],
    tasks: usize,
    reduction: Reduction,
    seed: u64,
) -> Result<Report> {
    let mut rng = SplitMix64::new(seed);
    let lists = random_lists::<T>(&mut rng, tasks, lens);
    let slices = lists_as_slices(&lists);
    let task_refs: Vec<&[&[T]]> = slices.iter().map(Vec::as_slice).collect();
    let operands: Vec<Operand<'_, T>> = task_refs.iter().map(|s| Operand::identity(s)).collect();
    let order_seed = rng.next_u64();
    let expected = reference::pcgrad_sequential(&task_refs, order_seed, reduction);
    let gram = backend.gram(&operands)?;
    let plan = solve::pcgrad(&gram, order_seed, reduction)?;
    let mut out: Vec<Vec<T>> = lens
        .iter()
        .map(|&n| vec![T::from_f32(f32::NAN); n])
        .collect();
    let mut out_refs: Vec<&mut [T]> = out.iter_mut().map(Vec::as_mut_slice).collect();
    backend.combine(&mut out_refs, None, &operands, &plan.weights)?;
    let got: Vec<f64> = out.iter().flat_map(|t| to_f64(t)).collect();
    Ok(compare(&got, &expected, pcgrad_tolerance(T::DTYPE)))
}

/// The Gram entries carry f32 rounding into the solve, where each conflict projection divides by
/// a squared norm; allow for that amplification on top of the combine's own rounding.
pub fn pcgrad_tolerance(dtype: super::DType) -> Tolerance {
    let t = Tolerance::for_dtype(dtype);
    Tolerance {
        atol: 8.0 * t.atol,
        ..t
    }
}
