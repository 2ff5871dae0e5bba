//! The executor: runs a validated model's ops in order over one caller-given arena.

use crate::error::Error;
use crate::format::{ARENA_ALIGN, Model, TensorRecord};
use crate::ops::node::ArenaPtr;
use crate::ops::{self, Ctx, Node, OpKind};
use crate::tensor::Element;

/// One op's timing from [`Interpreter::invoke_profiled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OpProfile {
    /// The op's position in execution order.
    pub index: usize,
    /// What it is.
    pub kind: OpKind,
    /// Clock units between its start and end, as the caller's clock counts them (cycles from
    /// a cycle counter, nanoseconds from a host clock).
    pub elapsed: u64,
}

/// Runs a model. Holds the model and the arena; allocates nothing.
///
/// ```ignore
/// let model = Model::from_bytes(MODEL)?;
/// let mut arena = [0u8; ARENA_SIZE];
/// let mut interpreter = Interpreter::new(&model, &mut arena)?;
/// interpreter.input_mut::<i8>(0)?.copy_from_slice(&sample);
/// interpreter.invoke()?;
/// let scores = interpreter.output::<i8>(0)?;
/// ```
pub struct Interpreter<'m, 'a> {
    model: &'m Model<'m>,
    arena: &'a mut [u8],
    half_precision_inputs: bool,
}

impl<'m, 'a> Interpreter<'m, 'a> {
    /// Binds a model to an arena, checking its size once. The arena's start is aligned up to
    /// [`ARENA_ALIGN`] bytes; an arena that is already aligned needs exactly
    /// [`Model::arena_size`] bytes.
    pub fn new(model: &'m Model<'m>, arena: &'a mut [u8]) -> Result<Self, Error> {
        let skip = arena.as_ptr().align_offset(ARENA_ALIGN);
        let required = model.arena_size().saturating_add(skip);
        if skip >= ARENA_ALIGN || arena.len() < required {
            return Err(Error::ArenaTooSmall {
                required,
                actual: arena.len(),
            });
        }
        let arena = &mut arena[skip..required];
        Ok(Interpreter {
            model,
            arena,
            half_precision_inputs: false,
        })
    }

    /// Lets fully-connected layers with f16 weights round their inputs to f16 too, so that
    /// CPUs that multiply binary16 pairs natively (aarch64 with FEAT_FHM: `fmlal`, products
    /// accumulated in f32) run them in half-precision arithmetic. Off by default: it changes
    /// results by up to 2^-11 of each output's `sum |x * w|` (the same size as the weights'
    /// own rounding), so a board would no longer compute what the laptop computes. A row
    /// with an input beyond f16's range runs in f32 as before. The definition is
    /// [`crate::ops::fully_connected::reference::fully_connected_f16_half_inputs`].
    pub fn set_half_precision_inputs(&mut self, allow: bool) {
        self.half_precision_inputs = allow;
    }

    /// The model this interpreter runs.
    pub fn model(&self) -> &'m Model<'m> {
        self.model
    }

    /// Runs every op once. Inputs must have been written first; outputs are valid after.
    /// Inputs are consumed: the memory plan may reuse their memory for later tensors, so write
    /// them again before the next call.
    pub fn invoke(&mut self) -> Result<(), Error> {
        for index in 0..self.model.op_count() {
            self.run_op(index)?;
        }
        Ok(())
    }

    /// Runs the ops at positions `ops` (in execution order) once: a prefix of the graph, as
    /// the trainer runs the frozen layers before the ones it trains. Fails with
    /// [`Error::NoSuchTensor`] for a range past the last op.
    pub fn invoke_ops(&mut self, ops: core::ops::Range<usize>) -> Result<(), Error> {
        if ops.start > ops.end || ops.end > self.model.op_count() {
            return Err(Error::NoSuchTensor);
        }
        for index in ops {
            self.run_op(index)?;
        }
        Ok(())
    }

    /// The bytes of any arena tensor (an intermediate activation, not only a graph output),
    /// as the last invocation left them.
    pub fn tensor_bytes(&self, tensor: &TensorRecord<'_>) -> Result<&[u8], Error> {
        let range = self.range_any(tensor)?;
        self.arena.get(range).ok_or(Error::CorruptModel)
    }

    /// Runs every op once like [`Interpreter::invoke`], reading `clock` before and after
    /// each op and reporting the difference, for per-op profiling (`loam bench`).
    pub fn invoke_profiled(
        &mut self,
        mut clock: impl FnMut() -> u64,
        mut report: impl FnMut(OpProfile),
    ) -> Result<(), Error> {
        for index in 0..self.model.op_count() {
            let start = clock();
            let kind = self.run_op(index)?;
            let elapsed = clock().wrapping_sub(start);
            report(OpProfile {
                index,
                kind,
                elapsed,
            });
        }
        Ok(())
    }

    fn run_op(&mut self, index: usize) -> Result<OpKind, Error> {
        let record = self.model.op(index).ok_or(Error::CorruptModel)?;
        let kind = OpKind::from_code(record.kind).ok_or(Error::CorruptModel)?;
        let ctx = Ctx {
            node: Node {
                model: self.model,
                record,
            },
            arena: ArenaPtr::new(self.arena),
            half_precision_inputs: self.half_precision_inputs,
        };
        ops::run(kind, &ctx)?;
        Ok(kind)
    }

    /// Number of graph inputs.
    pub fn input_count(&self) -> usize {
        self.model.inputs().len()
    }

    /// Number of graph outputs.
    pub fn output_count(&self) -> usize {
        self.model.outputs().len()
    }

    /// The record (name, shape, element type, quantization) of graph input `i`.
    pub fn input_tensor(&self, i: usize) -> Result<TensorRecord<'m>, Error> {
        self.io_tensor(self.model.inputs().get(i))
    }

    /// The record of graph output `i`.
    pub fn output_tensor(&self, i: usize) -> Result<TensorRecord<'m>, Error> {
        self.io_tensor(self.model.outputs().get(i))
    }

    fn io_tensor(&self, id: Option<u16>) -> Result<TensorRecord<'m>, Error> {
        id.and_then(|id| self.model.tensor(usize::from(id)))
            .ok_or(Error::NoSuchTensor)
    }

    fn range<T: Element>(&self, t: &TensorRecord<'_>) -> Result<core::ops::Range<usize>, Error> {
        if t.dtype != T::DTYPE {
            return Err(Error::DTypeMismatch {
                expected: t.dtype,
                actual: T::DTYPE,
            });
        }
        self.range_any(t)
    }

    fn view<T: Element>(&self, t: &TensorRecord<'_>) -> Result<&[T], Error> {
        let range = self.range::<T>(t)?;
        let bytes = self.arena.get(range).ok_or(Error::CorruptModel)?;
        bytemuck::try_cast_slice(bytes).map_err(|_| Error::CorruptModel)
    }

    fn view_mut<T: Element>(&mut self, t: &TensorRecord<'_>) -> Result<&mut [T], Error> {
        let range = self.range::<T>(t)?;
        let bytes = self.arena.get_mut(range).ok_or(Error::CorruptModel)?;
        bytemuck::try_cast_slice_mut(bytes).map_err(|_| Error::CorruptModel)
    }

    /// Graph input `i`'s elements, to fill before [`Interpreter::invoke`].
    pub fn input_mut<T: Element>(&mut self, i: usize) -> Result<&mut [T], Error> {
        let t = self.input_tensor(i)?;
        self.view_mut(&t)
    }

    /// Graph input `i`'s elements as last written.
    pub fn input<T: Element>(&self, i: usize) -> Result<&[T], Error> {
        self.view(&self.input_tensor(i)?)
    }

    /// Graph output `i`'s elements.
    pub fn output<T: Element>(&self, i: usize) -> Result<&[T], Error> {
        self.view(&self.output_tensor(i)?)
    }

    /// The graph input called `name`, to fill before [`Interpreter::invoke`].
    pub fn input_by_name_mut<T: Element>(&mut self, name: &str) -> Result<&mut [T], Error> {
        let i = self.model.input_position(name).ok_or(Error::NoSuchTensor)?;
        self.input_mut(i)
    }

    /// The graph output called `name`.
    pub fn output_by_name<T: Element>(&self, name: &str) -> Result<&[T], Error> {
        let i = self
            .model
            .output_position(name)
            .ok_or(Error::NoSuchTensor)?;
        self.output(i)
    }

    /// Graph input `i`'s raw bytes (any element type), to fill before invoking.
    pub fn input_bytes_mut(&mut self, i: usize) -> Result<&mut [u8], Error> {
        let t = self.input_tensor(i)?;
        let range = self.range_any(&t)?;
        self.arena.get_mut(range).ok_or(Error::CorruptModel)
    }

    /// Graph output `i`'s raw bytes (any element type).
    pub fn output_bytes(&self, i: usize) -> Result<&[u8], Error> {
        let t = self.output_tensor(i)?;
        let range = self.range_any(&t)?;
        self.arena.get(range).ok_or(Error::CorruptModel)
    }

    fn range_any(&self, t: &TensorRecord<'_>) -> Result<core::ops::Range<usize>, Error> {
        match t.storage {
            crate::format::Storage::Arena { offset } => {
                let start = offset as usize;
                Ok(start..start + t.byte_len().ok_or(Error::CorruptModel)?)
            }
            crate::format::Storage::Constant { .. } => Err(Error::CorruptModel),
        }
    }
}
