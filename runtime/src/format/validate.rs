//! Load-time validation: after [`model`] accepts a file, every record decodes, every tensor's
//! data lies inside the blob or the planned arena, and every op's operands have the types,
//! shapes and quantization its kernels assume. Kernels then index without further checks.

use crate::error::{LoadError, OpProblem, PlanProblem, Slot, TensorProblem};
use crate::format::{
    ARENA_ALIGN, LayerUpdate, Model, NO_TENSOR, OpRecord, Storage, Table, TensorIds, TrainingPlan,
};
use crate::ops::{self, Node, OpKind};
use crate::tensor::{DType, Quantization};

use super::schema::{ConstantRecord, TensorRecord};

pub(super) fn model(m: &Model<'_>, check_scratch: bool) -> Result<(), LoadError> {
    let h = &m.header;
    table(&h.tensors, "tensor table")?;
    table(&h.ops, "op table")?;
    table(&h.metadata.labels, "label table")?;
    table(&h.metadata.constants, "constant table")?;
    if h.tensors.len() >= usize::from(NO_TENSOR) {
        return Err(LoadError::Header("more than 65534 tensors"));
    }
    if h.ops.len() > usize::from(u16::MAX) {
        return Err(LoadError::Header("more than 65535 ops"));
    }
    for i in 0..h.metadata.labels.len() {
        h.metadata
            .labels
            .get::<&str>(i)
            .ok_or(LoadError::Header("a label does not decode"))?;
    }
    for i in 0..h.metadata.constants.len() {
        let c = h
            .metadata
            .constants
            .get::<ConstantRecord<'_>>(i)
            .ok_or(LoadError::Header("a constant does not decode"))?;
        if c.values.len() % 4 != 0 {
            return Err(LoadError::Header("a constant's values are not whole f32s"));
        }
    }
    for i in 0..h.tensors.len() {
        tensor(m, i).map_err(|problem| LoadError::Tensor {
            index: i as u16,
            problem,
        })?;
    }
    graph_io(m, h.inputs, false)?;
    graph_io(m, h.outputs, true)?;
    for i in 0..h.ops.len() {
        let record: Option<OpRecord<'_>> = h.ops.get(i);
        let Some(record) = record else {
            return Err(LoadError::Op {
                index: i as u16,
                kind: u16::MAX,
                problem: OpProblem::Malformed,
            });
        };
        op(m, record, check_scratch).map_err(|problem| LoadError::Op {
            index: i as u16,
            kind: record.kind,
            problem,
        })?;
    }
    if let Some(plan) = m.training {
        training(m, plan)?;
    }
    Ok(())
}

/// A training plan names 1 to [`crate::train::MAX_TRAINED_LAYERS`] FullyConnected ops in
/// increasing order, the first of them updated, and only channels its weights have. Whether
/// the layers form a head the trainer can train is the trainer's check (it says why not).
fn training(m: &Model<'_>, plan: TrainingPlan<'_>) -> Result<(), LoadError> {
    table(&plan.layers, "training plan")?;
    let error = |layer: usize, problem| LoadError::Training {
        layer: layer as u16,
        problem,
    };
    if plan.is_empty() || plan.len() > crate::train::MAX_TRAINED_LAYERS {
        return Err(error(0, "a plan names 1 to MAX_TRAINED_LAYERS layers"));
    }
    let mut previous: Option<usize> = None;
    for i in 0..plan.len() {
        let layer = plan.layer(i).ok_or(error(i, "does not decode"))?;
        let index = layer.op as usize;
        if previous.is_some_and(|p| index <= p) {
            return Err(error(i, "layers are not in increasing op order"));
        }
        previous = Some(index);
        let record = m.op(index).ok_or(error(i, "names an op past the last"))?;
        if OpKind::from_code(record.kind) != Some(OpKind::FullyConnected) {
            return Err(error(i, "names an op that is not FullyConnected"));
        }
        let outputs = record
            .inputs
            .get(1)
            .and_then(|w| m.tensor(usize::from(w)))
            .map_or(0, |w| w.shape.dim(0));
        match layer.update {
            LayerUpdate::Frozen if i == 0 => {
                return Err(error(i, "the first layer of a plan must be updated"));
            }
            LayerUpdate::Channels(channels) => {
                if channels.is_empty() || channels.0.len() % 2 != 0 {
                    return Err(error(i, "a channel list is empty or not whole u16s"));
                }
                let mut last: Option<u16> = None;
                for c in channels.iter() {
                    if last.is_some_and(|l| c <= l) || usize::from(c) >= outputs {
                        return Err(error(
                            i,
                            "channels are not increasing or exceed the layer's outputs",
                        ));
                    }
                    last = Some(c);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn table(t: &Table<'_>, what: &'static str) -> Result<(), LoadError> {
    if t.index.len() % 4 != 0 {
        return Err(LoadError::Header(what));
    }
    let mut previous = 0usize;
    for (i, b) in t.index.chunks_exact(4).enumerate() {
        let offset = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if (i == 0 && offset != 0) || offset < previous || offset > t.records.len() {
            return Err(LoadError::Header(what));
        }
        previous = offset;
    }
    if t.index.is_empty() && !t.records.is_empty() {
        return Err(LoadError::Header(what));
    }
    Ok(())
}

fn ids(list: TensorIds<'_>) -> bool {
    list.0.len() % 2 == 0
}

fn tensor(m: &Model<'_>, i: usize) -> Result<(), TensorProblem> {
    let t: TensorRecord<'_> = m.header.tensors.get(i).ok_or(TensorProblem::Malformed)?;
    if !t.shape.is_well_formed() {
        return Err(TensorProblem::Shape);
    }
    let len = t.byte_len().ok_or(TensorProblem::Shape)?;
    if u32::try_from(len).is_err() {
        return Err(TensorProblem::Shape);
    }
    match t.storage {
        Storage::Arena { offset } => {
            let offset = offset as usize;
            if offset % ARENA_ALIGN != 0 {
                return Err(TensorProblem::ArenaMisaligned);
            }
            if offset + len > m.arena_size() {
                return Err(TensorProblem::ArenaOutOfBounds);
            }
        }
        Storage::Constant { offset } => {
            let offset = offset as usize;
            if offset % t.dtype.size() != 0 {
                return Err(TensorProblem::DataMisaligned);
            }
            if offset + len > m.blob.len() {
                return Err(TensorProblem::DataOutOfBounds);
            }
        }
    }
    quantization(m, &t)
}

fn quantization(m: &Model<'_>, t: &TensorRecord<'_>) -> Result<(), TensorProblem> {
    let bad = TensorProblem::Quantization;
    match t.quantization {
        Quantization::None => Ok(()),
        Quantization::PerTensor { scale, zero_point } => {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(bad("scale is not positive and finite"));
            }
            let range = match t.dtype {
                DType::I8 => -128..=127,
                DType::I16 => -32768..=32767,
                DType::I32 => 0..=0,
                DType::F32 | DType::F16 => return Err(bad("float tensors are not quantized")),
            };
            if !range.contains(&zero_point) {
                return Err(bad("zero point outside the element type's range"));
            }
            Ok(())
        }
        Quantization::PerChannel {
            axis,
            scales_offset,
        } => {
            if !matches!(t.dtype, DType::I8 | DType::I16 | DType::I32) {
                return Err(bad("only integer tensors are quantized per channel"));
            }
            if usize::from(axis) >= t.shape.rank() {
                return Err(bad("per-channel axis beyond the tensor's rank"));
            }
            if scales_offset % 4 != 0 {
                return Err(bad("per-channel scales are misaligned"));
            }
            let scales = m
                .channel_scales(t)
                .ok_or(bad("per-channel scales lie outside the blob"))?;
            if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(bad("a per-channel scale is not positive and finite"));
            }
            Ok(())
        }
    }
}

fn graph_io(m: &Model<'_>, list: TensorIds<'_>, output: bool) -> Result<(), LoadError> {
    let fail = |index: usize, problem| LoadError::GraphIo {
        output,
        index: index as u16,
        problem,
    };
    if !ids(list) {
        return Err(LoadError::Header(
            "graph input/output list has an odd length",
        ));
    }
    for (i, id) in list.iter().enumerate() {
        let t = m
            .tensor(usize::from(id))
            .ok_or(fail(i, "tensor index out of range"))?;
        if t.is_constant() {
            return Err(fail(i, "is a constant, not an arena tensor"));
        }
        if list.iter().take(i).any(|earlier| earlier == id) {
            return Err(fail(i, "listed twice"));
        }
    }
    Ok(())
}

fn op(m: &Model<'_>, record: OpRecord<'_>, check_scratch: bool) -> Result<(), OpProblem> {
    let kind = OpKind::from_code(record.kind).ok_or(OpProblem::UnknownKind)?;
    if !(ids(record.inputs) && ids(record.outputs) && ids(record.temporaries)) {
        return Err(OpProblem::Malformed);
    }
    if record.inputs.len() > 255 || record.outputs.len() > 255 || record.temporaries.len() > 255 {
        return Err(OpProblem::Malformed);
    }
    let node = Node::new(m, record);
    // Every listed tensor must exist (absent optional inputs aside).
    for i in 0..record.inputs.len() {
        node.optional_input(i)?;
    }
    for i in 0..record.outputs.len() {
        let out = node.output(i)?;
        if out.record.is_constant() {
            return Err(OpProblem::NotInArena(out.slot));
        }
        if m.inputs().iter().any(|g| Some(g) == record.outputs.get(i)) {
            return Err(OpProblem::Aliasing(out.slot));
        }
        for j in 0..i {
            if ops::node::overlaps(&out, &node.output(j)?) {
                return Err(OpProblem::Aliasing(out.slot));
            }
        }
        for k in 0..record.inputs.len() {
            let Some(input) = node.optional_input(k)? else {
                continue;
            };
            if ops::node::overlaps(&out, &input) {
                let in_place = i == 0
                    && kind.in_place_inputs().contains(&(k as u8))
                    && ops::node::same_range(&out, &input)
                    && out.record.dtype == input.record.dtype;
                if !in_place {
                    return Err(OpProblem::Aliasing(out.slot));
                }
            }
        }
    }
    for i in 0..record.temporaries.len() {
        let Some(temp) = node.temporary(i)? else {
            return Err(OpProblem::Missing(Slot::Temporary(i as u8)));
        };
        if temp.record.is_constant() {
            return Err(OpProblem::NotInArena(temp.slot));
        }
        let clashes = (0..record.inputs.len())
            .filter_map(|k| node.optional_input(k).ok().flatten())
            .chain((0..record.outputs.len()).filter_map(|k| node.output(k).ok()))
            .chain((0..i).filter_map(|k| node.temporary(k).ok().flatten()))
            .any(|other| ops::node::overlaps(&temp, &other));
        if clashes {
            return Err(OpProblem::Aliasing(temp.slot));
        }
    }
    ops::check(kind, &node)?;
    let needed = ops::scratch_bytes(kind, &node)?;
    if check_scratch && needed > 0 {
        let have = node
            .temporary(0)?
            .map_or(0, |t| t.record.byte_len().unwrap_or(0));
        if have < needed {
            return Err(OpProblem::ScratchTooSmall {
                needed: needed as u32,
            });
        }
    }
    Ok(())
}

/// The first op that writes each tensor and the last that reads it, found by scanning the ops
/// (no heap, so this is recomputed per tensor: O(tensors x ops)).
fn live_range(m: &Model<'_>, t: u16) -> Result<Option<(usize, usize)>, LoadError> {
    let is_input = m.inputs().iter().any(|g| g == t);
    let is_output = m.outputs().iter().any(|g| g == t);
    let mut first: Option<usize> = is_input.then_some(0);
    let mut last: Option<usize> = None;
    let mut writes = 0usize;
    for (i, op) in m.ops().enumerate() {
        let writes_here = op
            .outputs
            .iter()
            .chain(op.temporaries.iter())
            .any(|x| x == t);
        let reads_here = op.inputs.iter().any(|x| x == t);
        if reads_here && first.is_none() {
            return Err(LoadError::Plan {
                tensor: t,
                problem: PlanProblem::ReadBeforeWritten(i as u16),
            });
        }
        if writes_here {
            writes += 1;
            if writes > 1 || is_input {
                return Err(LoadError::Plan {
                    tensor: t,
                    problem: PlanProblem::WrittenTwice,
                });
            }
            first = Some(i);
            last = Some(last.map_or(i, |l: usize| l.max(i)));
        }
        if reads_here {
            last = Some(i);
        }
    }
    if is_output {
        last = Some(m.op_count());
    }
    Ok(first.map(|f| (f, last.unwrap_or(f))))
}

/// Checks that the memory plan never lets two tensors that are live at the same time share
/// arena bytes (an op computing in place aside), and that no op reads an arena tensor before
/// something writes it. O(tensors^2 + tensors x ops), no heap.
pub(super) fn plan(m: &Model<'_>) -> Result<(), LoadError> {
    let arena = |t: &TensorRecord<'_>| match t.storage {
        Storage::Arena { offset } => Some((offset as usize, t.byte_len().unwrap_or(0))),
        Storage::Constant { .. } => None,
    };
    for a in 0..m.tensor_count() {
        let ta = m.tensor(a).ok_or(LoadError::Header("tensor table"))?;
        let Some((a0, alen)) = arena(&ta) else {
            continue;
        };
        let Some((a_first, a_last)) = live_range(m, a as u16)? else {
            continue;
        };
        for b in 0..a {
            let tb = m.tensor(b).ok_or(LoadError::Header("tensor table"))?;
            let Some((b0, blen)) = arena(&tb) else {
                continue;
            };
            if !(a0 < b0 + blen && b0 < a0 + alen) {
                continue;
            }
            let Some((b_first, b_last)) = live_range(m, b as u16)? else {
                continue;
            };
            // Lifetimes that only touch at the op that consumes one and produces the other
            // are fine when that op computes in place with exactly these two.
            let disjoint = a_last < b_first || b_last < a_first;
            let handover = (a_last == b_first && in_place_pair(m, b_first, a as u16, b as u16))
                || (b_last == a_first && in_place_pair(m, a_first, b as u16, a as u16));
            if !(disjoint || handover) {
                return Err(LoadError::Plan {
                    tensor: a as u16,
                    problem: PlanProblem::Overlaps(b as u16),
                });
            }
        }
    }
    Ok(())
}

/// Whether op `index` reads `from` and writes `to` in place (same arena range, allowed slot).
fn in_place_pair(m: &Model<'_>, index: usize, from: u16, to: u16) -> bool {
    let Some(op) = m.op(index) else {
        return false;
    };
    let Some(kind) = OpKind::from_code(op.kind) else {
        return false;
    };
    op.outputs.get(0) == Some(to)
        && kind
            .in_place_inputs()
            .iter()
            .any(|&k| op.inputs.get(usize::from(k)) == Some(from))
}
