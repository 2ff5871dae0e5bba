//! A bounds-checked face on `matrixmultiply::sgemm`, the matrix product every backward pass
//! reduces to (weights' gradients and inputs' gradients of dense and convolution layers).

/// A matrix view: `data[row * row_stride + col * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Elements.
    pub data: &'a [f32],
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> View<'a> {
        View {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> View<'a> {
        View {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }

    /// Whether every element of a `rows x cols` view lies inside `data`.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `c = a * b + beta * c` with `a: m x k`, `b: k x n` and `c` row-major `m x n`.
///
/// # Panics
/// If a view is too short for its shape: the callers derive every shape from one layer's
/// geometry, so a mismatch is a bug in the engine, and it must not reach the unchecked
/// product.
pub fn gemm(m: usize, k: usize, n: usize, a: View<'_>, b: View<'_>, beta: f32, c: &mut [f32]) {
    assert!(
        a.holds(m, k) && b.holds(k, n) && c.len() >= m * n,
        "gemm operands shorter than {m}x{k} * {k}x{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    let stride = |s: usize| s as isize;
    // SAFETY: the assertion above keeps every element sgemm reads or writes inside the
    // slices, and `c` is borrowed mutably, so it aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            stride(a.row_stride),
            stride(a.col_stride),
            b.data.as_ptr(),
            stride(b.row_stride),
            stride(b.col_stride),
            beta,
            c.as_mut_ptr(),
            stride(n),
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_definition() {
        // a: 2x3, b: 3x2 given transposed (2x3 row-major).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [1.0; 4];
        gemm(
            2,
            3,
            2,
            View::rows(&a, 3),
            View::transposed(&bt, 3),
            1.0,
            &mut c,
        );
        assert_eq!(c, [51.0, 69.0, 123.0, 168.0]);
    }

    #[test]
    #[should_panic(expected = "gemm operands shorter")]
    fn short_operands_are_refused() {
        let mut c = [0.0; 4];
        gemm(
            2,
            3,
            2,
            View::rows(&[0.0; 5], 3),
            View::rows(&[0.0; 6], 2),
            0.0,
            &mut c,
        );
    }
}
