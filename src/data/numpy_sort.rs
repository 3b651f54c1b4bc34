//! numpy's default `argsort` for float64 (`kind="quicksort"`: an introsort), step for step, so
//! that equal values come out in the order numpy gives them. The official transform ranks patches
//! with it, and flat or black patches tie. This is numpy's portable path; where numpy dispatches
//! to a vectorised sort (x86-simd-sort: AVX-512 since numpy 1.25, AVX2 since numpy 2) the order
//! of ties differs, and depends on the CPU.

/// Below this many elements a partition is finished by insertion sort.
const SMALL_QUICKSORT: usize = 15;

/// numpy's order for floats: NaN after everything.
fn less(a: f64, b: f64) -> bool {
    a < b || (b.is_nan() && !a.is_nan())
}

/// The permutation that sorts `v`, as `numpy.argsort(v)` returns it.
pub fn numpy_argsort(v: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    if v.len() < 2 {
        return idx;
    }
    let msb = (usize::BITS - 1 - v.len().leading_zeros()) as i64;
    // (left, right, depth budget) of partitions still to sort, as numpy's explicit stack.
    let mut stack: Vec<(usize, usize, i64)> = Vec::new();
    let (mut pl, mut pr, mut depth) = (0usize, v.len() - 1, msb * 2);
    loop {
        if depth < 0 {
            heapsort(v, &mut idx[pl..=pr]);
        } else {
            while pr - pl > SMALL_QUICKSORT {
                let pi = partition(v, &mut idx, pl, pr);
                depth -= 1;
                // Push the larger side, go on with the smaller.
                if pi - pl < pr - pi {
                    stack.push((pi + 1, pr, depth));
                    pr = pi - 1;
                } else {
                    stack.push((pl, pi - 1, depth));
                    pl = pi + 1;
                }
            }
            insertion_sort(v, &mut idx[pl..=pr]);
        }
        match stack.pop() {
            Some((l, r, d)) => (pl, pr, depth) = (l, r, d),
            None => return idx,
        }
    }
}

/// Median-of-three pivot moved to `pr − 1`, then numpy's two-pointer partition; returns the
/// pivot's final place.
fn partition(v: &[f64], idx: &mut [usize], pl: usize, pr: usize) -> usize {
    let pm = pl + ((pr - pl) >> 1);
    if less(v[idx[pm]], v[idx[pl]]) {
        idx.swap(pm, pl);
    }
    if less(v[idx[pr]], v[idx[pm]]) {
        idx.swap(pr, pm);
    }
    if less(v[idx[pm]], v[idx[pl]]) {
        idx.swap(pm, pl);
    }
    let pivot = v[idx[pm]];
    let (mut pi, mut pj) = (pl, pr - 1);
    idx.swap(pm, pj);
    loop {
        pi += 1;
        while less(v[idx[pi]], pivot) {
            pi += 1;
        }
        pj -= 1;
        while less(pivot, v[idx[pj]]) {
            pj -= 1;
        }
        if pi >= pj {
            break;
        }
        idx.swap(pi, pj);
    }
    idx.swap(pi, pr - 1);
    pi
}

fn insertion_sort(v: &[f64], idx: &mut [usize]) {
    for i in 1..idx.len() {
        let vi = idx[i];
        let mut j = i;
        while j > 0 && less(v[vi], v[idx[j - 1]]) {
            idx[j] = idx[j - 1];
            j -= 1;
        }
        idx[j] = vi;
    }
}

/// numpy's `aheapsort` (when the depth budget runs out), on one-based heap indices.
fn heapsort(v: &[f64], idx: &mut [usize]) {
    let mut n = idx.len();
    // a[k] is idx[k - 1].
    let sift = |idx: &mut [usize], mut i: usize, n: usize, tmp: usize| {
        let mut j = i * 2;
        while j <= n {
            if j < n && less(v[idx[j - 1]], v[idx[j]]) {
                j += 1;
            }
            if less(v[tmp], v[idx[j - 1]]) {
                idx[i - 1] = idx[j - 1];
                i = j;
                j += j;
            } else {
                break;
            }
        }
        idx[i - 1] = tmp;
    };
    for l in (1..=n / 2).rev() {
        let tmp = idx[l - 1];
        sift(idx, l, n, tmp);
    }
    while n > 1 {
        let tmp = idx[n - 1];
        idx[n - 1] = idx[0];
        n -= 1;
        sift(idx, 1, n, tmp);
    }
}
