//! An op's view of its operands: [`Node`] when a model is validated (records only) and
//! [`Ctx`] when it runs (records plus the arena holding the activations).

use core::marker::PhantomData;
use core::ptr::NonNull;

use serde::Deserialize;

use crate::error::{Error, OpProblem, Slot};
use crate::fixed_point::QuantizedMultiplier;
use crate::format::{DecodedTensor, Model, NO_TENSOR, OpRecord, Storage, TensorIds, TensorRecord};
use crate::tensor::{DType, Element, Quantization};

/// One operand of an op: the tensor's index, which slot of the op it fills, and its record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'m> {
    pub slot: Slot,
    pub record: TensorRecord<'m>,
}

impl<'m> Operand<'m> {
    /// Fails unless the operand's element type is one of `allowed`.
    pub fn expect_dtype(&self, allowed: &[DType]) -> Result<DType, OpProblem> {
        if allowed.contains(&self.record.dtype) {
            Ok(self.record.dtype)
        } else {
            Err(OpProblem::DType(self.slot))
        }
    }

    /// The per-tensor `(scale, zero point)`; fails for any other quantization.
    pub fn per_tensor(&self) -> Result<(f32, i32), OpProblem> {
        match self.record.quantization {
            Quantization::PerTensor { scale, zero_point } => Ok((scale, zero_point)),
            _ => Err(OpProblem::Quantization(
                self.slot,
                "per-tensor scale and zero point required",
            )),
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[u32] {
        self.record.shape.dims()
    }

    /// Dimension `i` (0 when out of range).
    pub fn dim(&self, i: usize) -> usize {
        self.record.shape.dim(i)
    }

    /// Element count (validated at load, so it fits in `usize`).
    pub fn elements(&self) -> usize {
        self.record.shape.elements().unwrap_or(0)
    }

    /// Fails with a shape problem unless `ok`.
    pub fn shape_if(&self, ok: bool, what: &'static str) -> Result<(), OpProblem> {
        if ok {
            Ok(())
        } else {
            Err(OpProblem::Shape(self.slot, what))
        }
    }

    fn arena_range(&self) -> Option<(usize, usize)> {
        match self.record.storage {
            Storage::Arena { offset } => {
                Some((offset as usize, self.record.byte_len().unwrap_or(0)))
            }
            Storage::Constant { .. } => None,
        }
    }
}

/// An op record with access to its model's tensors.
#[derive(Clone, Copy)]
pub(crate) struct Node<'m> {
    pub model: &'m Model<'m>,
    pub record: OpRecord<'m>,
    /// Every tensor of the model decoded (an interpreter with room for them), or empty: then
    /// each operand is decoded from the file as the op asks for it.
    pub decoded: &'m [DecodedTensor],
    /// The op's [`prepared`](crate::ops::prepare) words, when its interpreter keeps them;
    /// empty otherwise.
    pub prepared: &'m [i32],
}

impl<'m> Node<'m> {
    /// The node of `record`, its operands decoded from the file as the op asks for them.
    pub fn new(model: &'m Model<'m>, record: OpRecord<'m>) -> Node<'m> {
        Node {
            model,
            record,
            decoded: &[],
            prepared: &[],
        }
    }

    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    fn operand(&self, ids: TensorIds<'m>, i: usize, slot: Slot) -> Result<Operand<'m>, OpProblem> {
        self.optional_operand(ids, i, slot)?
            .ok_or(OpProblem::Missing(slot))
    }

    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    fn optional_operand(
        &self,
        ids: TensorIds<'m>,
        i: usize,
        slot: Slot,
    ) -> Result<Option<Operand<'m>>, OpProblem> {
        match ids.get(i) {
            None | Some(NO_TENSOR) => Ok(None),
            Some(id) => self
                .tensor(usize::from(id))
                .map(|record| Some(Operand { slot, record }))
                .ok_or(OpProblem::Missing(slot)),
        }
    }

    /// Input `i` as checked `[multiplier, shift]` pairs: a weighted layer's requantization
    /// multipliers. `None` if the input is absent, not an int32 constant, or holds a pair out
    /// of range.
    pub fn multipliers_input(&self, i: usize) -> Option<&'m [QuantizedMultiplier]> {
        let id = usize::from(self.record.inputs.get(i).filter(|&id| id != NO_TENSOR)?);
        match self.decoded.get(id) {
            Some(decoded) if decoded.holds_multipliers() => {
                let raw = self.model.constant_data::<i32>(&decoded.record()?)?;
                Some(QuantizedMultiplier::slice_from_checked_raw(raw))
            }
            Some(_) => None,
            None => {
                let record = self.model.operand_tensor(id)?;
                QuantizedMultiplier::slice_from_raw(self.model.constant_data::<i32>(&record)?)
            }
        }
    }

    /// Tensor `id`'s record as the ops see it: from the interpreter's decoded copy when it
    /// has one, else decoded from the file.
    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    fn tensor(&self, id: usize) -> Option<TensorRecord<'m>> {
        match self.decoded.get(id) {
            Some(decoded) => decoded.record(),
            None => self.model.operand_tensor(id),
        }
    }

    /// Input `i`, which must be present.
    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn input(&self, i: usize) -> Result<Operand<'m>, OpProblem> {
        self.operand(self.record.inputs, i, Slot::Input(i as u8))
    }

    /// Input `i`, which may be absent.
    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn optional_input(&self, i: usize) -> Result<Option<Operand<'m>>, OpProblem> {
        self.optional_operand(self.record.inputs, i, Slot::Input(i as u8))
    }

    /// Output `i`.
    #[cfg_attr(target_os = "none", inline)]
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub fn output(&self, i: usize) -> Result<Operand<'m>, OpProblem> {
        self.operand(self.record.outputs, i, Slot::Output(i as u8))
    }

    /// Temporary `i`, which may be absent.
    pub fn temporary(&self, i: usize) -> Result<Option<Operand<'m>>, OpProblem> {
        self.optional_operand(self.record.temporaries, i, Slot::Temporary(i as u8))
    }

    /// Number of entries in the input list.
    pub fn input_count(&self) -> usize {
        self.record.inputs.len()
    }

    /// Checks the operand counts: inputs within `inputs`, exactly `outputs` outputs.
    pub fn arity(&self, inputs: (u8, u8), outputs: u8) -> Result<(), OpProblem> {
        let count = |ids: TensorIds<'_>| ids.len().min(255) as u8;
        let n = count(self.record.inputs);
        if n < inputs.0 || n > inputs.1 {
            return Err(OpProblem::Arity {
                slot: Slot::Input(0),
                min: inputs.0,
                max: inputs.1,
                actual: n,
            });
        }
        let n = count(self.record.outputs);
        if n != outputs {
            return Err(OpProblem::Arity {
                slot: Slot::Output(0),
                min: outputs,
                max: outputs,
                actual: n,
            });
        }
        Ok(())
    }

    /// The op's attributes decoded as `A`.
    pub fn attributes<A: Deserialize<'m>>(&self) -> Result<A, OpProblem> {
        crate::format::decode_exact(self.record.attributes).ok_or(OpProblem::Attributes)
    }

    /// A constant operand's elements, in place in the blob.
    pub fn constant<T: Element>(&self, operand: &Operand<'m>) -> Result<&'m [T], OpProblem> {
        if operand.record.dtype != T::DTYPE {
            return Err(OpProblem::DType(operand.slot));
        }
        self.model
            .constant_data(&operand.record)
            .ok_or(OpProblem::NotConstant(operand.slot))
    }

    /// Checks a weight operand's quantization: symmetric, per tensor or per channel along
    /// `axis` (the output-channel axis), with its scales inside the blob.
    pub fn check_weight_quantization(
        &self,
        operand: &Operand<'m>,
        axis: usize,
    ) -> Result<(), OpProblem> {
        let fail = |what| Err(OpProblem::Quantization(operand.slot, what));
        match operand.record.quantization {
            Quantization::PerTensor { zero_point: 0, .. } => Ok(()),
            Quantization::PerTensor { .. } => fail("weights must be symmetric (zero point 0)"),
            Quantization::PerChannel { axis: a, .. } if usize::from(a) == axis => {
                match self.model.channel_scales(&operand.record) {
                    Some(_) => Ok(()),
                    None => fail("scales out of bounds"),
                }
            }
            Quantization::PerChannel { .. } => {
                fail("per-channel axis is not the output-channel axis")
            }
            Quantization::None => fail("quantized weights need a scale"),
        }
    }
}

/// The arena while an interpreter runs: a pointer and length checked against the plan once.
#[derive(Clone, Copy)]
pub(crate) struct ArenaPtr<'r> {
    ptr: NonNull<u8>,
    len: usize,
    _borrow: PhantomData<&'r mut [u8]>,
}

impl<'r> ArenaPtr<'r> {
    pub fn new(arena: &'r mut [u8]) -> ArenaPtr<'r> {
        ArenaPtr {
            len: arena.len(),
            ptr: NonNull::from(arena).cast(),
            _borrow: PhantomData,
        }
    }
}

/// An op while it runs: its node and the arena.
pub(crate) struct Ctx<'m, 'r> {
    pub node: Node<'m>,
    pub(crate) arena: ArenaPtr<'r>,
    /// Whether f16-weight layers may round their inputs to f16
    /// ([`crate::Interpreter::set_half_precision_inputs`]).
    pub half_precision_inputs: bool,
}

impl<'m> Ctx<'m, '_> {
    fn arena_slice<T: Element>(&self, operand: &Operand<'m>) -> Result<(*mut T, usize), Error> {
        if operand.record.dtype != T::DTYPE {
            return Err(Error::CorruptModel);
        }
        let (offset, bytes) = operand.arena_range().ok_or(Error::CorruptModel)?;
        let end = offset.checked_add(bytes).ok_or(Error::CorruptModel)?;
        if end > self.arena.len || offset % core::mem::align_of::<T>() != 0 {
            return Err(Error::CorruptModel);
        }
        // SAFETY: `offset..end` lies inside the arena (checked just above).
        let ptr = unsafe { self.arena.ptr.as_ptr().add(offset) };
        if ptr as usize % core::mem::align_of::<T>() != 0 {
            return Err(Error::CorruptModel);
        }
        Ok((ptr.cast::<T>(), bytes / core::mem::size_of::<T>()))
    }

    /// An operand's elements for reading: in place in the blob for constants, in the arena
    /// otherwise.
    pub fn read<T: Element>(&self, operand: &Operand<'m>) -> Result<&[T], Error> {
        if operand.record.is_constant() {
            return self
                .node
                .model
                .constant_data(&operand.record)
                .ok_or(Error::CorruptModel);
        }
        let (ptr, len) = self.arena_slice::<T>(operand)?;
        // SAFETY: the range is inside the arena, aligned for `T`, and every bit pattern is a
        // valid `T` (`Element: Pod`). Load-time validation guarantees no output of this op
        // overlaps it unless the op runs in place, in which case the op reads through
        // `write` alone (see `write`).
        Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
    }

    /// An output (or temporary) operand's elements for writing.
    ///
    /// # Safety
    /// The caller must not hold, while the returned slice lives, any other slice of an
    /// operand that overlaps this one. Validation at load guarantees that outputs and
    /// temporaries overlap no other operand of the op, except an output that exactly shares
    /// an input's storage in an op that computes in place ([`OpKind::in_place_inputs`]); such
    /// an op must check [`Ctx::shares_storage`] and then use this slice alone.
    ///
    /// [`OpKind::in_place_inputs`]: crate::ops::OpKind::in_place_inputs
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn write<T: Element>(&self, operand: &Operand<'m>) -> Result<&mut [T], Error> {
        let (ptr, len) = self.arena_slice::<T>(operand)?;
        // SAFETY: in bounds and aligned (checked by `arena_slice`); exclusive by the caller's
        // contract.
        Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
    }

    /// Whether two operands occupy the same arena bytes (an op computing in place).
    pub fn shares_storage(&self, a: &Operand<'m>, b: &Operand<'m>) -> bool {
        same_range(a, b)
    }
}

/// Whether two operands' arena ranges overlap (constants never do).
pub(crate) fn overlaps(a: &Operand<'_>, b: &Operand<'_>) -> bool {
    match (a.arena_range(), b.arena_range()) {
        (Some((a0, alen)), Some((b0, blen))) => a0 < b0 + blen && b0 < a0 + alen,
        _ => false,
    }
}

/// Whether two operands occupy exactly the same arena range.
pub(crate) fn same_range(a: &Operand<'_>, b: &Operand<'_>) -> bool {
    matches!((a.arena_range(), b.arena_range()), (Some(x), Some(y)) if x == y)
}
