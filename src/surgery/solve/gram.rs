//! The K×K Gram matrix the solvers work on.

use crate::surgery::args::MAX_OPERANDS;
use crate::surgery::error::{Result, SurgeryError};

/// A symmetric K×K matrix of dot products, stored in full, row-major, in f32 (what the Gram pass
/// produces on every backend).
#[derive(Clone, Debug, PartialEq)]
pub struct Gram {
    k: usize,
    data: Vec<f32>,
}

impl Gram {
    pub fn zeros(k: usize) -> Self {
        Self {
            k,
            data: vec![0.0; k * k],
        }
    }

    /// From a row-major K×K matrix; it must be symmetric (bitwise) and K ≤ [`MAX_OPERANDS`].
    pub fn from_row_major(k: usize, data: Vec<f32>) -> Result<Self> {
        const OP: &str = "Gram::from_row_major";
        if k > MAX_OPERANDS {
            return Err(SurgeryError::TooMany {
                op: OP,
                what: "vectors",
                got: k,
                max: MAX_OPERANDS,
            });
        }
        if data.len() != k * k {
            return Err(SurgeryError::LengthMismatch {
                op: OP,
                arg: "data",
                expected: k * k,
                got: data.len(),
                why: format!("a {k}×{k} matrix"),
            });
        }
        for i in 0..k {
            for j in 0..i {
                let (a, b) = (data[i * k + j], data[j * k + i]);
                if a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()) {
                    return Err(SurgeryError::InvalidValue {
                        op: OP,
                        arg: "data",
                        value: format!("G[{i}][{j}] = {a}, G[{j}][{i}] = {b}"),
                        why: "a Gram matrix is symmetric",
                    });
                }
            }
        }
        Ok(Self { k, data })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.k + j]
    }

    /// Sets both `G[i][j]` and `G[j][i]`.
    pub fn set(&mut self, i: usize, j: usize, v: f32) {
        self.data[i * self.k + j] = v;
        self.data[j * self.k + i] = v;
    }

    pub fn as_row_major(&self) -> &[f32] {
        &self.data
    }

    pub(crate) fn get_f64(&self, i: usize, j: usize) -> f64 {
        f64::from(self.get(i, j))
    }

    pub(crate) fn check_index(&self, op: &'static str, arg: &'static str, i: usize) -> Result<()> {
        if i >= self.k {
            return Err(SurgeryError::IndexOutOfRange {
                op,
                arg,
                index: i,
                len: self.k,
            });
        }
        Ok(())
    }
}
