//! The executor: runs a validated model's ops in order over one caller-given arena.

use crate::error::Error;
use crate::format::{ARENA_ALIGN, DecodedOp, DecodedTensor, Model, TensorRecord};
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
    /// Every tensor's record decoded once, in the arena past the plan; empty when the arena
    /// has no room for them.
    decoded: &'a [DecodedTensor],
    /// Every op's record decoded once, after the tensors'; empty with them.
    decoded_ops: &'a [DecodedOp],
    /// The ops' prepared words ([`ops::prepare`]), after their records.
    prepared: &'a [i32],
    half_precision_inputs: bool,
}

impl<'m, 'a> Interpreter<'m, 'a> {
    /// Binds a model to an arena, checking its size once. The arena's start is aligned up to
    /// [`ARENA_ALIGN`] bytes; an arena that is already aligned needs exactly
    /// [`Model::arena_size`] bytes.
    ///
    /// An arena of at least [`Interpreter::arena_size_with_records`] bytes also holds every
    /// tensor's record decoded, once, here. Each op then copies its operands' records instead
    /// of decoding them from the file each time it runs, which is most of a small layer's
    /// overhead (see `loam bench`). Results are the same either way.
    pub fn new(model: &'m Model<'m>, arena: &'a mut [u8]) -> Result<Self, Error> {
        let skip = arena.as_ptr().align_offset(ARENA_ALIGN);
        let required = model.arena_size().saturating_add(skip);
        if skip >= ARENA_ALIGN || arena.len() < required {
            return Err(Error::ArenaTooSmall {
                required,
                actual: arena.len(),
            });
        }
        let (arena, spare) = arena[skip..].split_at_mut(model.arena_size());
        let kept = decode_records(model, spare).unwrap_or_default();
        Ok(Interpreter {
            model,
            arena,
            decoded: kept.tensors,
            decoded_ops: kept.ops,
            prepared: kept.words,
            half_precision_inputs: false,
        })
    }

    /// Bytes of arena with which [`Interpreter::new`] keeps every tensor's and op's record
    /// decoded, and the constants some ops derive from the model (an int8 fully-connected
    /// layer's bias with its input zero point folded in, one word per output channel; an int8
    /// softmax's table of exponentials, 256 words; on x86_64 CPUs with AVX-512 VNNI, the
    /// packed weights of the int8 fully-connected layers and pointwise convolutions that the
    /// GEMMs run, about the size of those weights):
    /// [`Model::arena_size`], plus those records and words, plus room to align them. The
    /// record sizes are this runtime's, not the file's, so this is computed here rather than
    /// stored in the model. It depends on the model and, through the packed weights, on the
    /// CPU: the same on every CPU without AVX-512 VNNI (every Arm target among them), larger
    /// on those with it. An arena sized on one machine and used on another still runs the
    /// model; it keeps the records only where they fit.
    pub fn arena_size_with_records(model: &Model<'_>) -> usize {
        let words = (0..model.op_count())
            .map(|i| prepared_len(model, i))
            .fold(0usize, usize::saturating_add);
        let bytes = [
            (model.tensor_count(), core::mem::size_of::<DecodedTensor>()),
            (model.op_count(), core::mem::size_of::<DecodedOp>()),
            (words, core::mem::size_of::<i32>()),
        ]
        .iter()
        .fold(0usize, |sum, &(n, size)| {
            sum.saturating_add(n.saturating_mul(size))
        });
        // Each of the three tables may start up to its alignment (at most 4) past the end
        // of the one before it.
        model
            .arena_size()
            .saturating_add(bytes)
            .saturating_add(ARENA_ALIGN - 1 + 3 * 3)
    }

    /// Bytes past the plan's arena that hold the decoded records and prepared words (0 when
    /// the arena had no room for them): RAM to count beside [`Model::arena_size`].
    pub fn records_bytes(&self) -> usize {
        core::mem::size_of_val(self.decoded)
            + core::mem::size_of_val(self.decoded_ops)
            + core::mem::size_of_val(self.prepared)
    }

    /// Prepared words the ops keep ([`ops::prepared_len`]).
    #[cfg(test)]
    pub(crate) fn prepared_words(&self) -> usize {
        self.prepared.len()
    }

    /// Whether this interpreter keeps its tensors' records decoded (its arena had room,
    /// [`Interpreter::arena_size_with_records`]).
    pub fn keeps_records_decoded(&self) -> bool {
        self.decoded.len() == self.model.tensor_count()
            && self.decoded_ops.len() == self.model.op_count()
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
        let (record, prepared) = match self.decoded_ops.get(index) {
            Some(op) => (
                op.record(self.model),
                self.prepared.get(op.prepared()).unwrap_or(&[]),
            ),
            None => (self.model.op(index), &[][..]),
        };
        let record = record.ok_or(Error::CorruptModel)?;
        let kind = OpKind::from_code(record.kind).ok_or(Error::CorruptModel)?;
        let ctx = Ctx {
            node: Node {
                model: self.model,
                record,
                decoded: self.decoded,
                prepared,
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

/// Op `index`'s [`ops::prepared_len`] (0 for an op that does not decode).
fn prepared_len(model: &Model<'_>, index: usize) -> usize {
    let Some(record) = model.op(index) else {
        return 0;
    };
    match OpKind::from_code(record.kind) {
        Some(kind) => ops::prepared_len(kind, &Node::new(model, record)),
        None => 0,
    }
}

/// What an interpreter keeps past the plan: every tensor's and op's record decoded, and the
/// ops' prepared words.
#[derive(Default)]
struct Kept<'a> {
    tensors: &'a [DecodedTensor],
    ops: &'a [DecodedOp],
    words: &'a [i32],
}

/// Decodes every tensor's and op's record of `model` into `spare` (the arena past the plan)
/// and prepares the ops' words after them, or `None` when they do not fit.
fn decode_records<'a>(model: &Model<'_>, spare: &'a mut [u8]) -> Option<Kept<'a>> {
    let (tensors, spare) = place(spare, model.tensor_count(), |i| {
        DecodedTensor::decode(model, i)
    })?;
    let mut next = 0usize;
    let (ops, spare) = place(spare, model.op_count(), |i| {
        let len = prepared_len(model, i);
        let op = DecodedOp::decode(model, i, (next, len))?;
        next = next.checked_add(len)?;
        Some(op)
    })?;
    let (words, _) = place(spare, next, |_| Some(0i32))?;
    for (index, op) in ops.iter().enumerate() {
        let record = model.op(index)?;
        let kind = OpKind::from_code(record.kind)?;
        ops::prepare(
            kind,
            &Node::new(model, record),
            words.get_mut(op.prepared())?,
        )?;
    }
    Some(Kept {
        tensors,
        ops,
        words,
    })
}

/// Fills the first `count` aligned records of `spare` with `decode(0..count)`; the records
/// and the bytes after them, or `None` when they do not fit or one fails to decode.
fn place<T: bytemuck::Pod>(
    spare: &mut [u8],
    count: usize,
    mut decode: impl FnMut(usize) -> Option<T>,
) -> Option<(&mut [T], &mut [u8])> {
    let skip = spare.as_ptr().align_offset(core::mem::align_of::<T>());
    let len = count.checked_mul(core::mem::size_of::<T>())?;
    let end = skip.checked_add(len)?;
    if end > spare.len() {
        return None;
    }
    let (bytes, rest) = spare.split_at_mut(end);
    let records: &mut [T] = bytemuck::try_cast_slice_mut(&mut bytes[skip..]).ok()?;
    for (index, slot) in records.iter_mut().enumerate() {
        *slot = decode(index)?;
    }
    Some((records, rest))
}
