//! What every op's tests share: running each kernel of an op's table against its reference,
//! and running a one-op model through the interpreter.

use std::string::String;
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::format::{AlignedBytes, Model};
use crate::interpreter::Interpreter;
use crate::isa::Kernel;

/// Runs every kernel in `table` that this CPU can run (the reference is the first entry) and
/// checks each output against the reference's with `same(reference, got, kernel_name)`.
/// Returns how many fast paths were compared.
pub(crate) fn compare_kernels<F: Copy, T: Clone>(
    table: &[Kernel<F>],
    call: impl Fn(F) -> Vec<T>,
    same: impl Fn(&[T], &[T]) -> Result<(), String>,
) -> Result<usize, TestCaseError> {
    let want = call(table[0].run);
    let mut compared = 0;
    for k in &table[1..] {
        if !k.isa.available() {
            continue;
        }
        let got = call(k.run);
        if let Err(e) = same(&want, &got) {
            return Err(TestCaseError::fail(std::format!(
                "kernel {} ({}) differs from the reference: {e}",
                k.name,
                k.isa.name()
            )));
        }
        compared += 1;
    }
    Ok(compared)
}

/// Exact equality, reporting the first difference.
pub(crate) fn exact<T: PartialEq + core::fmt::Debug>(want: &[T], got: &[T]) -> Result<(), String> {
    if want.len() != got.len() {
        return Err(std::format!("length {} vs {}", want.len(), got.len()));
    }
    match want.iter().zip(got).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(std::format!(
            "element {i}: want {:?}, got {:?}",
            want[i],
            got[i]
        )),
    }
}

/// Loads `bytes`, fills the graph inputs with `inputs` (raw bytes each), runs once and
/// returns every output's bytes.
pub(crate) fn run_model(bytes: &[u8], inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, String> {
    let aligned = AlignedBytes::new(bytes);
    let model = Model::from_bytes(&aligned).map_err(|e| std::format!("load: {e}"))?;
    model.check_plan().map_err(|e| std::format!("plan: {e}"))?;
    let mut arena = vec![0u8; model.arena_size() + 16];
    let mut interpreter =
        Interpreter::new(&model, &mut arena).map_err(|e| std::format!("interpreter: {e}"))?;
    for (i, data) in inputs.iter().enumerate() {
        let slot = interpreter
            .input_bytes_mut(i)
            .map_err(|e| std::format!("input {i}: {e}"))?;
        if slot.len() != data.len() {
            return Err(std::format!(
                "input {i}: {} bytes, model needs {}",
                data.len(),
                slot.len()
            ));
        }
        slot.copy_from_slice(data);
    }
    interpreter
        .invoke()
        .map_err(|e| std::format!("invoke: {e}"))?;
    (0..interpreter.output_count())
        .map(|i| {
            interpreter
                .output_bytes(i)
                .map(<[u8]>::to_vec)
                .map_err(|e| std::format!("output {i}: {e}"))
        })
        .collect()
}

/// Random int8 data of length `n`.
pub(crate) fn i8s(n: usize) -> impl Strategy<Value = Vec<i8>> {
    prop::collection::vec(any::<i8>(), n)
}

/// Random floats of length `n` in `[-range, range]`.
pub(crate) fn f32s(n: usize, range: f32) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-range..=range, n)
}

/// A fixed pseudo-random byte stream (xorshift64) for tests that need more bytes than a
/// proptest strategy should shrink: the same `seed` gives the same bytes on every target.
pub(crate) fn xorshift_bytes(seed: u64) -> impl FnMut() -> i8 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as i8
    }
}
