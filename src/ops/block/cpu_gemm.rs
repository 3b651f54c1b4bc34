//! Strided f32 matrix products on the CPU (the `gemm` crate, which candle's CPU backend also
//! uses), with the two things the layer needs that a tensor `matmul` does not give: operands
//! read through any strides (a head's slice of the fused q/k/v rows, a transposed weight) with no
//! copy, and accumulation into the destination (bias and residual preloaded, gradients summed).

use gemm::Parallelism;

/// A read-only `rows × cols` view: element `(r, c)` at `data[r · row_stride + c · col_stride]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// `cols` columns from `offset` of a row-major matrix whose rows are `stride` long.
    pub fn block(data: &'a [f32], rows: usize, cols: usize, offset: usize, stride: usize) -> Self {
        Self {
            data: &data[offset.min(data.len())..],
            rows,
            cols,
            row_stride: stride,
            col_stride: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// The last element read is inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// The destination: `rows × cols`, rows `row_stride` apart, columns contiguous.
pub struct Dst<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

impl<'a> Dst<'a> {
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
        }
    }

    pub fn block(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        offset: usize,
        stride: usize,
    ) -> Self {
        let len = data.len();
        Self {
            data: &mut data[offset.min(len)..],
            rows,
            cols,
            row_stride: stride,
        }
    }
}

/// Whether the product runs on the rayon pool or on the calling thread (inside a parallel loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    Pool,
    Caller,
}

/// `dst = scale · a · b`, or `dst += scale · a · b` when `accumulate`.
///
/// Panics on mismatched shapes or views that reach outside their slices: the callers build them
/// from sizes they checked, so a mismatch is a bug in this module, not bad input.
pub fn matmul(
    dst: Dst<'_>,
    a: View<'_>,
    b: View<'_>,
    scale: f32,
    accumulate: bool,
    threads: Threads,
) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions");
    assert_eq!(
        (dst.rows, dst.cols),
        (a.rows, b.cols),
        "matmul: output shape"
    );
    assert!(
        a.in_bounds() && b.in_bounds(),
        "matmul: operand view out of bounds"
    );
    let dst_in_bounds = dst.rows == 0
        || dst.cols == 0
        || (dst.rows - 1) * dst.row_stride + dst.cols <= dst.data.len();
    assert!(dst_in_bounds, "matmul: destination view out of bounds");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let parallelism = match threads {
        Threads::Pool => Parallelism::Rayon(rayon::current_num_threads()),
        Threads::Caller => Parallelism::None,
    };
    // SAFETY: the three views were checked above to stay inside their slices for the shapes
    // given; `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            a.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `scale · a · b` into a new row-major `[a.rows, b.cols]`.
pub fn product(a: View<'_>, b: View<'_>, scale: f32, threads: Threads) -> Vec<f32> {
    let mut out = match threads {
        Threads::Pool => super::cpu_rows::zeros(a.rows * b.cols),
        Threads::Caller => vec![0.0; a.rows * b.cols],
    };
    matmul(
        Dst::rows(&mut out, a.rows, b.cols),
        a,
        b,
        scale,
        false,
        threads,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_transposed_and_accumulated() {
        // a: 2×3 taken from columns 1..4 of a 2×5 matrix; b = cᵀ with c 2×3.
        let a_src = [0., 1., 2., 3., 0., 0., 4., 5., 6., 0.];
        let c = [1., 0., 2., 0., 1., 1.];
        let a = View::block(&a_src, 2, 3, 1, 5);
        let b = View::rows(&c, 2, 3).t();
        let mut out = vec![10.0f32; 4];
        matmul(Dst::rows(&mut out, 2, 2), a, b, 2.0, true, Threads::Caller);
        // a·cᵀ = [[1+6, 2+3], [4+12, 5+6]]
        assert_eq!(out, vec![10. + 14., 10. + 10., 10. + 32., 10. + 22.]);
    }
}
