//! Writing `.loam` files: describe the graph with [`ModelBuilder`], and [`ModelBuilder::build`]
//! adds the scratch buffers each op needs, plans the arena, serializes, and checks the result
//! by loading it back.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use serde::Serialize;

use crate::error::LoadError;
use crate::format::schema::{
    ConstantRecord, Header, Metadata, OpRecord, Storage, Table, TensorIds, TensorRecord,
};
use crate::format::{
    ARENA_ALIGN, BLOB_ALIGN, FORMAT_MAJOR, Model, NO_TENSOR, PREAMBLE_LEN, Preamble, checksum,
};
use crate::ops::{self, Node, OpKind};
use crate::planner::{BufferRequest, GreedyBySize, MemoryPlanner};
use crate::tensor::{DType, Element, Quantization, Shape};

/// A tensor's index in the model being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u16);

/// Quantization of a tensor being built; per-channel scales are written into the blob.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantSpec {
    /// Not quantized.
    None,
    /// One scale and zero point.
    PerTensor {
        /// Real value of one step.
        scale: f32,
        /// Integer standing for real 0.
        zero_point: i32,
    },
    /// Symmetric, one scale per slice along `axis`.
    PerChannel {
        /// The channel dimension.
        axis: u8,
        /// One scale per channel.
        scales: Vec<f32>,
    },
}

/// Weights of an int8 layer that are already integers (from a quantized ONNX model, say), so
/// the builder keeps them as they are instead of quantizing float weights itself.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedWeights<'a> {
    /// Symmetric int8 weights (zero point 0) in the layer's weight layout.
    pub values: &'a [i8],
    /// One scale per output channel.
    pub scales: &'a [f32],
    /// The bias as int32 in the accumulator's scale (`input_scale * scales[c]`).
    pub bias: Option<&'a [i32]>,
}

#[derive(Debug, Clone)]
struct TensorSpec {
    name: String,
    dtype: DType,
    shape: Shape,
    quantization: QuantSpec,
    data: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
struct OpSpec {
    kind: OpKind,
    name: String,
    inputs: Vec<Option<TensorId>>,
    outputs: Vec<TensorId>,
    attributes: Vec<u8>,
}

/// Model description fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataSpec {
    /// Model name.
    pub name: String,
    /// The model's version.
    pub version: String,
    /// Free text.
    pub description: String,
    /// The writing program.
    pub producer: String,
    /// Class labels in output order.
    pub labels: Vec<String>,
    /// Named preprocessing constants.
    pub constants: Vec<(String, Vec<f32>)>,
}

/// Why a model could not be written.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BuildError {
    /// More tensors than the format can index.
    TooManyTensors,
    /// A shape has more dimensions than [`crate::tensor::MAX_RANK`] or a dimension too large.
    BadShape(String),
    /// Constant data does not match its tensor's shape and type.
    DataLength(String),
    /// An op refers to a tensor id that was not created by this builder.
    UnknownTensor(TensorId),
    /// The file the builder produced does not load (an op's operands are inconsistent, say);
    /// the error names the tensor or op.
    Invalid(LoadError),
    /// The file exceeds 4 GiB.
    TooLarge,
    /// A value cannot be stored in the asked-for type (an f32 weight beyond f16's range).
    OutOfRange(String),
}

/// What [`ModelBuilder::store_float_weights_as_f16`] converted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HalfWeights {
    /// Weight tensors now stored as f16.
    pub tensors: usize,
    /// Weights in them.
    pub weights: usize,
    /// The largest `|f16(w) - w| / |w|` over the weights in f16's normal range (magnitude at
    /// least 2^-14): at most 2^-11.
    pub largest_relative_error: f64,
    /// Nonzero weights smaller than 2^-14, stored as f16 subnormals or 0: each moves by at
    /// most 2^-25 (half the smallest subnormal step), a larger share of its own size.
    pub below_normal: usize,
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::TooManyTensors => f.write_str("more than 65534 tensors"),
            BuildError::BadShape(t) => write!(f, "tensor `{t}`: unsupported shape"),
            BuildError::DataLength(t) => {
                write!(f, "tensor `{t}`: data length does not match its shape")
            }
            BuildError::UnknownTensor(id) => write!(f, "unknown tensor id {}", id.0),
            BuildError::Invalid(e) => write!(f, "the model does not validate: {e}"),
            BuildError::TooLarge => f.write_str("the model exceeds 4 GiB"),
            BuildError::OutOfRange(t) => {
                write!(f, "tensor `{t}`: a value is beyond f16's range (65504)")
            }
        }
    }
}

impl core::error::Error for BuildError {}

impl From<LoadError> for BuildError {
    fn from(e: LoadError) -> Self {
        BuildError::Invalid(e)
    }
}

/// What planning achieved, for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanReport {
    /// Bytes of arena the planned model needs.
    pub arena_size: usize,
    /// Bytes it would need with every activation and scratch buffer in its own place.
    pub naive_size: usize,
    /// The op at which the most bytes are live.
    pub peak_op: usize,
    /// Bytes live at that op.
    pub peak_live: usize,
}

/// A written model.
#[derive(Debug, Clone)]
pub struct Built {
    /// The `.loam` file.
    pub bytes: Vec<u8>,
    /// The memory plan's figures.
    pub plan: PlanReport,
}

/// Describes a graph and writes it as a `.loam` file.
#[derive(Debug, Clone, Default)]
pub struct ModelBuilder {
    /// Name, version, labels and preprocessing constants.
    pub metadata: MetadataSpec,
    tensors: Vec<TensorSpec>,
    ops: Vec<OpSpec>,
    inputs: Vec<TensorId>,
    outputs: Vec<TensorId>,
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing into a Vec cannot fail for these types (no maps with non-string keys, no
    // sequences of unknown length).
    postcard::to_allocvec(value).unwrap_or_default()
}

fn table<T: Serialize>(records: &[T]) -> (Vec<u8>, Vec<u8>) {
    let mut index = Vec::with_capacity(records.len() * 4);
    let mut bytes = Vec::new();
    for r in records {
        index.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&encode(r));
    }
    (index, bytes)
}

fn id_bytes(ids: impl IntoIterator<Item = u16>) -> Vec<u8> {
    ids.into_iter().flat_map(u16::to_le_bytes).collect()
}

impl ModelBuilder {
    /// An empty model called `name`.
    pub fn new(name: &str) -> ModelBuilder {
        ModelBuilder {
            metadata: MetadataSpec {
                name: name.to_string(),
                version: "1".to_string(),
                producer: concat!("loam ", env!("CARGO_PKG_VERSION")).to_string(),
                ..MetadataSpec::default()
            },
            ..ModelBuilder::default()
        }
    }

    fn push(&mut self, spec: TensorSpec) -> Result<TensorId, BuildError> {
        if self.tensors.len() >= usize::from(NO_TENSOR) - 1 {
            return Err(BuildError::TooManyTensors);
        }
        self.tensors.push(spec);
        Ok(TensorId((self.tensors.len() - 1) as u16))
    }

    /// An arena tensor (activation, graph input or output).
    pub fn tensor(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[usize],
        quantization: QuantSpec,
    ) -> Result<TensorId, BuildError> {
        let shape = Shape::new(dims).ok_or_else(|| BuildError::BadShape(name.to_string()))?;
        self.push(TensorSpec {
            name: name.to_string(),
            dtype,
            shape,
            quantization,
            data: None,
        })
    }

    /// A constant tensor whose elements go into the weight blob.
    pub fn constant<T: Element>(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[T],
        quantization: QuantSpec,
    ) -> Result<TensorId, BuildError> {
        self.constant_bytes(
            name,
            T::DTYPE,
            dims,
            bytemuck::cast_slice(data).to_vec(),
            quantization,
        )
    }

    /// A constant tensor from raw little-endian bytes (f16 weights, say).
    pub fn constant_bytes(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[usize],
        data: Vec<u8>,
        quantization: QuantSpec,
    ) -> Result<TensorId, BuildError> {
        let shape = Shape::new(dims).ok_or_else(|| BuildError::BadShape(name.to_string()))?;
        if shape.elements().and_then(|n| n.checked_mul(dtype.size())) != Some(data.len()) {
            return Err(BuildError::DataLength(name.to_string()));
        }
        self.push(TensorSpec {
            name: name.to_string(),
            dtype,
            shape,
            quantization,
            data: Some(data),
        })
    }

    /// Appends an op (ops run in the order they are added). `None` marks an absent optional
    /// input; `attributes` is the op kind's attribute record.
    pub fn op<A: Serialize>(
        &mut self,
        kind: OpKind,
        name: &str,
        inputs: &[Option<TensorId>],
        outputs: &[TensorId],
        attributes: &A,
    ) -> Result<(), BuildError> {
        for id in inputs.iter().flatten().chain(outputs) {
            if usize::from(id.0) >= self.tensors.len() {
                return Err(BuildError::UnknownTensor(*id));
            }
        }
        self.ops.push(OpSpec {
            kind,
            name: name.to_string(),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
            attributes: encode(attributes),
        });
        Ok(())
    }

    /// A builder holding everything `model` holds (tensors, constants, ops with their
    /// attributes, graph inputs and outputs, metadata), ready to be changed and written again
    /// with a fresh memory plan. The op temporaries are left out (building plans its own), and
    /// so is a training plan (add it again with [`with_training_plan`]).
    pub fn from_model(model: &Model<'_>) -> Result<ModelBuilder, BuildError> {
        let name = |i: usize| alloc::format!("tensor {i}");
        let temporaries: alloc::collections::BTreeSet<u16> = model
            .ops()
            .flat_map(|op| op.temporaries.iter().collect::<Vec<_>>())
            .collect();
        let mut b = ModelBuilder::new(model.metadata().name);
        let meta = model.metadata();
        b.metadata.version = meta.version.to_string();
        b.metadata.description = meta.description.to_string();
        b.metadata.producer = meta.producer.to_string();
        b.metadata.labels = model.labels().map(str::to_string).collect();
        b.metadata.constants = (0..meta.constants.len())
            .filter_map(|i| meta.constants.get::<super::ConstantRecord<'_>>(i))
            .map(|c| (c.name.to_string(), c.values().collect()))
            .collect();
        let mut ids: Vec<Option<TensorId>> = alloc::vec![None; model.tensor_count()];
        for (i, id) in ids.iter_mut().enumerate() {
            if temporaries.contains(&(i as u16)) {
                continue;
            }
            let t = model
                .tensor(i)
                .ok_or_else(|| BuildError::BadShape(name(i)))?;
            let quantization = match t.quantization {
                Quantization::None => QuantSpec::None,
                Quantization::PerTensor { scale, zero_point } => {
                    QuantSpec::PerTensor { scale, zero_point }
                }
                Quantization::PerChannel { axis, .. } => QuantSpec::PerChannel {
                    axis,
                    scales: model
                        .channel_scales(&t)
                        .ok_or_else(|| BuildError::DataLength(t.name.to_string()))?
                        .to_vec(),
                },
            };
            let dims: Vec<usize> = t.shape.dims().iter().map(|&d| d as usize).collect();
            *id = Some(if t.is_constant() {
                let data = model
                    .constant_bytes(&t)
                    .ok_or_else(|| BuildError::DataLength(t.name.to_string()))?;
                b.constant_bytes(t.name, t.dtype, &dims, data.to_vec(), quantization)?
            } else {
                b.tensor(t.name, t.dtype, &dims, quantization)?
            });
        }
        let id = |t: u16| -> Result<TensorId, BuildError> {
            ids.get(usize::from(t))
                .copied()
                .flatten()
                .ok_or(BuildError::UnknownTensor(TensorId(t)))
        };
        for op in model.ops() {
            let kind = OpKind::from_code(op.kind)
                .ok_or_else(|| BuildError::DataLength(op.name.to_string()))?;
            let inputs = op
                .inputs
                .iter()
                .map(|t| (t != NO_TENSOR).then(|| id(t)).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            let outputs = op.outputs.iter().map(id).collect::<Result<Vec<_>, _>>()?;
            b.ops.push(OpSpec {
                kind,
                name: op.name.to_string(),
                inputs,
                outputs,
                attributes: op.attributes.to_vec(),
            });
        }
        for t in model.inputs().iter() {
            b.input(id(t)?);
        }
        for t in model.outputs().iter() {
            b.output(id(t)?);
        }
        Ok(b)
    }

    /// Stores the weights of every float FullyConnected, Conv2d and DepthwiseConv2d layer as
    /// f16 (rounded to nearest, ties to even), half their flash; the layers keep computing
    /// in f32. The layers named in `keep_f32` (by op name or output tensor name: the layers
    /// to fine-tune on the device, say) and weight tensors that anything else also reads stay
    /// f32. Fails, naming the tensor, when a weight is beyond f16's range (65504), which
    /// would become infinite; the builder is then left as it was.
    pub fn store_float_weights_as_f16(
        &mut self,
        keep_f32: &[&str],
    ) -> Result<HalfWeights, BuildError> {
        self.convert_float_weights(keep_f32, false)
    }

    /// Stores as f16 the float layers' weight tensors whose every value f16 holds exactly
    /// (weights that came from an f16 model, say), changing no result; other tensors stay
    /// f32. Returns what was converted.
    pub fn store_exact_float_weights_as_f16(&mut self) -> HalfWeights {
        // Never fails: a tensor with a value f16 cannot hold is skipped, not refused.
        self.convert_float_weights(&[], true).unwrap_or_default()
    }

    fn convert_float_weights(
        &mut self,
        keep_f32: &[&str],
        exact_only: bool,
    ) -> Result<HalfWeights, BuildError> {
        let kept = |op: &OpSpec| {
            keep_f32.contains(&op.name.as_str())
                || op
                    .outputs
                    .iter()
                    .any(|o| keep_f32.contains(&self.tensors[usize::from(o.0)].name.as_str()))
        };
        let mut report = HalfWeights::default();
        let mut converted = Vec::new();
        for t in 0..self.tensors.len() {
            let spec = &self.tensors[t];
            let (DType::F32, Some(data)) = (spec.dtype, spec.data.as_ref()) else {
                continue;
            };
            let id = Some(TensorId(t as u16));
            let mut readers = self
                .ops
                .iter()
                .flat_map(|op| op.inputs.iter().enumerate().map(move |(k, i)| (op, k, i)))
                .filter(|(_, _, i)| **i == id)
                .peekable();
            if readers.peek().is_none() {
                continue;
            }
            let only_float_weights = readers.all(|(op, k, _)| {
                k == 1
                    && op.kind.is_weighted_layer()
                    && !kept(op)
                    && self.input_dtype(op) == Some(DType::F32)
            });
            if !only_float_weights {
                continue;
            }
            let values: &[f32] = bytemuck::try_cast_slice(data)
                .map_err(|_| BuildError::DataLength(spec.name.clone()))?;
            if exact_only
                && values
                    .iter()
                    .any(|&w| half::f16::from_f32(w).to_f32().to_bits() != w.to_bits())
            {
                continue;
            }
            let mut halves = Vec::with_capacity(values.len());
            for &w in values {
                let h = half::f16::from_f32(w);
                if w.is_finite() && h.is_infinite() {
                    return Err(BuildError::OutOfRange(spec.name.clone()));
                }
                if w.abs() >= half::f16::MIN_POSITIVE.to_f32() && w.is_finite() {
                    let error = f64::from((h.to_f32() - w).abs()) / f64::from(w.abs());
                    report.largest_relative_error = report.largest_relative_error.max(error);
                } else if w != 0.0 {
                    report.below_normal += 1;
                }
                halves.push(h);
            }
            report.tensors += 1;
            report.weights += values.len();
            converted.push((t, bytemuck::cast_slice(&halves).to_vec()));
        }
        // Only now, so that a refused model is left as it was.
        for (t, data) in converted {
            self.tensors[t].dtype = DType::F16;
            self.tensors[t].data = Some(data);
        }
        Ok(report)
    }

    /// Marks a tensor as a graph input.
    pub fn input(&mut self, id: TensorId) {
        self.inputs.push(id);
    }

    /// Marks a tensor as a graph output.
    pub fn output(&mut self, id: TensorId) {
        self.outputs.push(id);
    }

    /// The shape of a tensor added earlier.
    pub fn shape(&self, id: TensorId) -> Option<Shape> {
        self.tensors.get(usize::from(id.0)).map(|t| t.shape)
    }

    /// The element type of a tensor added earlier.
    pub fn dtype(&self, id: TensorId) -> Option<DType> {
        self.tensors.get(usize::from(id.0)).map(|t| t.dtype)
    }

    /// The quantization of a tensor added earlier.
    pub fn quantization(&self, id: TensorId) -> Option<&QuantSpec> {
        self.tensors.get(usize::from(id.0)).map(|t| &t.quantization)
    }

    /// The per-tensor quantization of a tensor added earlier, if it has one.
    pub fn per_tensor(&self, id: TensorId) -> Option<crate::quant::QuantParams> {
        match self.quantization(id)? {
            QuantSpec::PerTensor { scale, zero_point } => Some(crate::quant::QuantParams {
                scale: *scale,
                zero_point: *zero_point,
            }),
            _ => None,
        }
    }

    /// The number of tensors so far.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Plans with [`GreedyBySize`] and writes the file.
    pub fn build(&self) -> Result<Built, BuildError> {
        self.build_with(&GreedyBySize)
    }

    /// Plans with `planner` and writes the file, then loads it back to check it (the op
    /// checks, and the plan's liveness).
    pub fn build_with(&self, planner: &dyn MemoryPlanner) -> Result<Built, BuildError> {
        // Pass 1: lay the arena out without reuse and ask each op how much scratch it needs.
        let mut tensors = self.tensors.clone();
        let mut temporaries: Vec<Vec<u16>> = vec![Vec::new(); self.ops.len()];
        let naive = naive_offsets(&tensors);
        let provisional = self.serialize(&tensors, &temporaries, &naive.0, naive.1)?;
        {
            let model = Model::from_unplanned(&provisional.0)?;
            for (i, op) in model.ops().enumerate() {
                let kind = self.ops[i].kind;
                let node = Node::new(&model, op);
                let bytes = ops::scratch_bytes(kind, &node).map_err(|problem| LoadError::Op {
                    index: i as u16,
                    kind: kind.code(),
                    problem,
                })?;
                if bytes > 0 {
                    let name = alloc::format!("{}/scratch", self.ops[i].name);
                    tensors.push(TensorSpec {
                        name,
                        dtype: DType::I8,
                        shape: Shape::new(&[bytes]).ok_or(BuildError::TooLarge)?,
                        quantization: QuantSpec::None,
                        data: None,
                    });
                    if tensors.len() >= usize::from(NO_TENSOR) {
                        return Err(BuildError::TooManyTensors);
                    }
                    temporaries[i].push((tensors.len() - 1) as u16);
                }
            }
        }

        // Pass 2: lifetimes, in-place sharing, plan.
        let (buffers, buffer_of) = self.buffers(&tensors, &temporaries);
        let plan = planner.plan(&buffers, ARENA_ALIGN);
        let mut offsets = vec![0usize; tensors.len()];
        for (t, b) in buffer_of.iter().enumerate() {
            if let Some(b) = b {
                offsets[t] = plan.offsets[*b];
            }
        }
        let (bytes, _) = self.serialize(&tensors, &temporaries, &offsets, plan.arena_size)?;
        let model = Model::from_bytes(&bytes)?;
        model.check_plan()?;
        let naive_size = naive_offsets(&tensors).1;
        let (peak_op, peak_live) = peak(&buffers, self.ops.len());
        Ok(Built {
            plan: PlanReport {
                arena_size: plan.arena_size,
                naive_size,
                peak_op,
                peak_live,
            },
            bytes,
        })
    }

    /// One buffer per group of tensors that share storage, and each arena tensor's buffer.
    fn buffers(
        &self,
        tensors: &[TensorSpec],
        temporaries: &[Vec<u16>],
    ) -> (Vec<BufferRequest>, Vec<Option<usize>>) {
        let n = tensors.len();
        let end = self.ops.len();
        let (first, last) = lifetimes(self, tensors.len(), temporaries);
        // Union-find over in-place pairs: an op's output takes over an input's storage when
        // the input dies at that op and is not a graph input or output.
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let is_io = |t: usize| {
            self.inputs
                .iter()
                .chain(&self.outputs)
                .any(|g| usize::from(g.0) == t)
        };
        for (i, op) in self.ops.iter().enumerate() {
            let Some(&out) = op.outputs.first() else {
                continue;
            };
            let out = usize::from(out.0);
            for &k in op.kind.in_place_inputs() {
                let Some(Some(input)) = op.inputs.get(usize::from(k)) else {
                    continue;
                };
                let input = usize::from(input.0);
                let (ti, to) = (&tensors[input], &tensors[out]);
                let shareable = ti.data.is_none()
                    && !is_io(input)
                    && last[input] == Some(i)
                    && ti.dtype == to.dtype
                    && ti.shape.elements() == to.shape.elements()
                    && root(&mut parent, input) != root(&mut parent, out);
                if shareable {
                    let r = root(&mut parent, input);
                    parent[out] = r;
                    break;
                }
            }
        }
        let mut buffers: Vec<BufferRequest> = Vec::new();
        let mut buffer_of_root: Vec<Option<usize>> = vec![None; n];
        let mut buffer_of: Vec<Option<usize>> = vec![None; n];
        for t in 0..n {
            if tensors[t].data.is_some() {
                continue;
            }
            let Some(f) = first[t] else { continue };
            let l = last[t].unwrap_or(f).min(end);
            let size = tensors[t].shape.elements().unwrap_or(0) * tensors[t].dtype.size();
            let r = root(&mut parent, t);
            let b = match buffer_of_root[r] {
                Some(b) => {
                    let buf: &mut BufferRequest = &mut buffers[b];
                    buf.first = buf.first.min(f);
                    buf.last = buf.last.max(l);
                    buf.size = buf.size.max(size);
                    b
                }
                None => {
                    buffers.push(BufferRequest {
                        size,
                        first: f,
                        last: l,
                    });
                    buffer_of_root[r] = Some(buffers.len() - 1);
                    buffers.len() - 1
                }
            };
            buffer_of[t] = Some(b);
        }
        (buffers, buffer_of)
    }

    fn serialize(
        &self,
        tensors: &[TensorSpec],
        temporaries: &[Vec<u16>],
        arena_offsets: &[usize],
        arena_size: usize,
    ) -> Result<(Vec<u8>, usize), BuildError> {
        // The blob: each constant 16-byte aligned, per-channel scales after their tensor.
        let mut blob: Vec<u8> = Vec::new();
        let pad = |blob: &mut Vec<u8>| {
            let aligned = blob.len().div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
            blob.resize(aligned, 0);
        };
        let mut records: Vec<TensorRecord<'_>> = Vec::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let storage = match &t.data {
                Some(data) => {
                    pad(&mut blob);
                    let offset = u32::try_from(blob.len()).map_err(|_| BuildError::TooLarge)?;
                    blob.extend_from_slice(data);
                    Storage::Constant { offset }
                }
                None => Storage::Arena {
                    offset: u32::try_from(arena_offsets[i]).map_err(|_| BuildError::TooLarge)?,
                },
            };
            let quantization = match &t.quantization {
                QuantSpec::None => Quantization::None,
                QuantSpec::PerTensor { scale, zero_point } => Quantization::PerTensor {
                    scale: *scale,
                    zero_point: *zero_point,
                },
                QuantSpec::PerChannel { axis, scales } => {
                    pad(&mut blob);
                    let scales_offset =
                        u32::try_from(blob.len()).map_err(|_| BuildError::TooLarge)?;
                    for s in scales {
                        blob.extend_from_slice(&s.to_le_bytes());
                    }
                    Quantization::PerChannel {
                        axis: *axis,
                        scales_offset,
                    }
                }
            };
            records.push(TensorRecord {
                name: &t.name,
                dtype: t.dtype,
                shape: t.shape,
                quantization,
                storage,
            });
        }
        let op_ids: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = self
            .ops
            .iter()
            .zip(temporaries)
            .map(|(op, temps)| {
                (
                    id_bytes(op.inputs.iter().map(|i| i.map_or(NO_TENSOR, |t| t.0))),
                    id_bytes(op.outputs.iter().map(|t| t.0)),
                    id_bytes(temps.iter().copied()),
                )
            })
            .collect();
        let op_records: Vec<OpRecord<'_>> = self
            .ops
            .iter()
            .zip(&op_ids)
            .map(|(op, (i, o, t))| OpRecord {
                kind: op.kind.code(),
                name: &op.name,
                inputs: TensorIds(i),
                outputs: TensorIds(o),
                temporaries: TensorIds(t),
                attributes: &op.attributes,
            })
            .collect();
        let labels: Vec<&str> = self.metadata.labels.iter().map(String::as_str).collect();
        let constant_values: Vec<Vec<u8>> = self
            .metadata
            .constants
            .iter()
            .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let constants: Vec<ConstantRecord<'_>> = self
            .metadata
            .constants
            .iter()
            .zip(&constant_values)
            .map(|((name, _), values)| ConstantRecord { name, values })
            .collect();
        let (tensor_index, tensor_bytes) = table(&records);
        let (op_index, op_bytes) = table(&op_records);
        let (label_index, label_bytes) = table(&labels);
        let (constant_index, constant_bytes) = table(&constants);
        let inputs = id_bytes(self.inputs.iter().map(|t| t.0));
        let outputs = id_bytes(self.outputs.iter().map(|t| t.0));
        let header = Header {
            metadata: Metadata {
                name: &self.metadata.name,
                version: &self.metadata.version,
                description: &self.metadata.description,
                producer: &self.metadata.producer,
                labels: Table {
                    index: &label_index,
                    records: &label_bytes,
                },
                constants: Table {
                    index: &constant_index,
                    records: &constant_bytes,
                },
            },
            tensors: Table {
                index: &tensor_index,
                records: &tensor_bytes,
            },
            ops: Table {
                index: &op_index,
                records: &op_bytes,
            },
            inputs: TensorIds(&inputs),
            outputs: TensorIds(&outputs),
        };
        let mut header = encode(&header);
        // The lowest minor version that expresses the file: the builder writes no training
        // plan (see `with_training_plan`), so its files load in every 1.x reader unless they
        // have 16x8 layers, which 1.2 added.
        let minor = self.layers_minor();
        if minor > 0 {
            // A 1.1+ header carries the (absent) training plan.
            header.extend_from_slice(&encode(&None::<super::TrainingPlan<'_>>));
        }
        let blob_offset = (PREAMBLE_LEN + header.len()).div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
        let file_len = blob_offset + blob.len();
        let too_large = |x: usize| u32::try_from(x).map_err(|_| BuildError::TooLarge);
        let mut preamble = Preamble {
            major: FORMAT_MAJOR,
            minor,
            file_len: too_large(file_len)?,
            header_len: too_large(header.len())?,
            blob_offset: too_large(blob_offset)?,
            blob_len: too_large(blob.len())?,
            crc32: 0,
            arena_size: u32::try_from(arena_size).map_err(|_| BuildError::TooLarge)?,
        };
        let mut file = Vec::with_capacity(file_len);
        file.extend_from_slice(&preamble.to_bytes());
        file.extend_from_slice(&header);
        file.resize(blob_offset, 0);
        file.extend_from_slice(&blob);
        preamble.crc32 = checksum(&file);
        file[..PREAMBLE_LEN].copy_from_slice(&preamble.to_bytes());
        Ok((file, arena_size))
    }
}

impl ModelBuilder {
    /// The lowest minor version whose readers run every layer: 1.3 for f16 weights, 1.2 for
    /// 16x8 layers, else 1.0.
    fn layers_minor(&self) -> u16 {
        if self.tensors.iter().any(|t| t.dtype == DType::F16) {
            super::MINOR_F16_WEIGHTS
        } else if self.has_int16_layers() {
            super::MINOR_INT16_LAYERS
        } else {
            0
        }
    }

    /// Whether a weighted layer runs on int16 activations (format 1.2).
    fn has_int16_layers(&self) -> bool {
        self.ops
            .iter()
            .any(|op| op.kind.is_weighted_layer() && self.input_dtype(op) == Some(DType::I16))
    }

    /// The element type of an op's first input.
    fn input_dtype(&self, op: &OpSpec) -> Option<DType> {
        op.inputs
            .first()
            .copied()
            .flatten()
            .and_then(|id| self.dtype(id))
    }
}

/// Each arena tensor at its own offset.
fn naive_offsets(tensors: &[TensorSpec]) -> (Vec<usize>, usize) {
    let mut offset = 0usize;
    let offsets = tensors
        .iter()
        .map(|t| {
            if t.data.is_some() {
                return 0;
            }
            let at = offset;
            let len = t.shape.elements().unwrap_or(0) * t.dtype.size();
            offset = (offset + len).div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
            at
        })
        .collect();
    (offsets, offset)
}

/// First op writing each tensor (0 for graph inputs) and last op reading it (the op count for
/// graph outputs).
fn lifetimes(
    builder: &ModelBuilder,
    count: usize,
    temporaries: &[Vec<u16>],
) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    let mut first: Vec<Option<usize>> = vec![None; count];
    let mut last: Vec<Option<usize>> = vec![None; count];
    for g in &builder.inputs {
        first[usize::from(g.0)] = Some(0);
    }
    for (i, op) in builder.ops.iter().enumerate() {
        for t in op.inputs.iter().flatten() {
            last[usize::from(t.0)] = Some(i);
        }
        for t in op
            .outputs
            .iter()
            .map(|t| usize::from(t.0))
            .chain(temporaries[i].iter().map(|&t| usize::from(t)))
        {
            first[t].get_or_insert(i);
            last[t] = Some(last[t].map_or(i, |l| l.max(i)));
        }
    }
    for g in &builder.outputs {
        last[usize::from(g.0)] = Some(builder.ops.len());
    }
    (first, last)
}

/// The op with the most live bytes, and how many.
fn peak(buffers: &[BufferRequest], ops: usize) -> (usize, usize) {
    (0..ops.max(1))
        .map(|i| {
            let live = buffers
                .iter()
                .filter(|b| b.first <= i && i <= b.last)
                .map(|b| b.size)
                .sum::<usize>();
            (i, live)
        })
        .max_by_key(|&(i, live)| (live, core::cmp::Reverse(i)))
        .unwrap_or((0, 0))
}

/// What training updates in one layer: the owned form of [`super::LayerUpdate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedUpdate {
    /// Nothing; gradients pass through.
    Frozen,
    /// Weights and bias.
    Full,
    /// The bias only.
    Bias,
    /// These output channels' weight rows (strictly increasing) and the whole bias.
    Channels(Vec<u16>),
}

/// One layer of a training plan to write: the owned form of [`super::TrainedLayerRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// The FullyConnected op's position in execution order.
    pub op: usize,
    /// What training updates in it.
    pub update: PlannedUpdate,
}

/// A training plan to write: the owned form of [`super::TrainingPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTraining {
    /// The trained head's layers, from the first updated one to the last, in graph order.
    pub layers: Vec<PlannedLayer>,
    /// How the trained weight rows are held in RAM.
    pub weights: super::WeightStorage,
}

/// A copy of `model` with its training plan replaced (`None` removes it). Only the header
/// changes: the blob is copied as it is (its offsets are relative to its start), so weights,
/// memory plan and arena size stay the same. The copy is loaded before it is returned, so a
/// plan the runtime would refuse is refused here with the same error.
pub fn with_training_plan(
    model: &Model<'_>,
    plan: Option<&PlannedTraining>,
) -> Result<Vec<u8>, BuildError> {
    let too_large = |x: usize| u32::try_from(x).map_err(|_| BuildError::TooLarge);
    let layers = plan.map_or(&[][..], |p| &p.layers[..]);
    let channel_bytes: Vec<Vec<u8>> = layers
        .iter()
        .map(|l| match &l.update {
            PlannedUpdate::Channels(c) => id_bytes(c.iter().copied()),
            _ => Vec::new(),
        })
        .collect();
    let records = layers
        .iter()
        .zip(&channel_bytes)
        .map(|(l, channels)| {
            Ok(super::TrainedLayerRecord {
                op: too_large(l.op)?,
                update: match l.update {
                    PlannedUpdate::Frozen => super::LayerUpdate::Frozen,
                    PlannedUpdate::Full => super::LayerUpdate::Full,
                    PlannedUpdate::Bias => super::LayerUpdate::Bias,
                    PlannedUpdate::Channels(_) => {
                        super::LayerUpdate::Channels(super::ChannelIds(channels))
                    }
                },
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    let (index, bytes) = table(&records);
    let mut header = encode(model.header());
    // The file keeps what its layers need (1.2 for 16x8 layers, 1.3 for f16 weights); the
    // plan needs 1.1.
    let layers_minor = if model.preamble().minor >= super::MINOR_INT16_LAYERS {
        model.preamble().minor.min(super::FORMAT_MINOR)
    } else {
        0
    };
    let minor = if let Some(plan) = plan {
        let training = super::TrainingPlan {
            layers: Table {
                index: &index,
                records: &bytes,
            },
            weights: plan.weights,
        };
        header.extend_from_slice(&encode(&Some(training)));
        layers_minor.max(super::MINOR_TRAINING_PLAN)
    } else {
        if layers_minor > 0 {
            header.extend_from_slice(&encode(&None::<super::TrainingPlan<'_>>));
        }
        layers_minor
    };
    let blob = model.blob();
    let blob_offset = (PREAMBLE_LEN + header.len()).div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
    let file_len = blob_offset + blob.len();
    let mut preamble = Preamble {
        minor,
        file_len: too_large(file_len)?,
        header_len: too_large(header.len())?,
        blob_offset: too_large(blob_offset)?,
        crc32: 0,
        ..*model.preamble()
    };
    let mut file = Vec::with_capacity(file_len);
    file.extend_from_slice(&preamble.to_bytes());
    file.extend_from_slice(&header);
    file.resize(blob_offset, 0);
    file.extend_from_slice(blob);
    preamble.crc32 = checksum(&file);
    file[..PREAMBLE_LEN].copy_from_slice(&preamble.to_bytes());
    Model::from_bytes(&super::AlignedBytes::new(&file)).map_err(BuildError::Invalid)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::FusedActivation;

    fn input(b: &mut ModelBuilder) -> TensorId {
        let x = b.tensor("x", DType::F32, &[1, 4], QuantSpec::None).unwrap();
        b.input(x);
        x
    }

    #[test]
    fn weights_something_else_reads_stay_f32() {
        let mut b = ModelBuilder::new("shared");
        let x = input(&mut b);
        let w = b
            .constant("w", &[1, 4], &[0.1f32, 0.2, 0.3, 0.4], QuantSpec::None)
            .unwrap();
        let attributes = crate::ops::fully_connected::FullyConnectedAttributes {
            activation: FusedActivation::NONE,
        };
        let y = b.tensor("y", DType::F32, &[1, 1], QuantSpec::None).unwrap();
        b.op(
            OpKind::FullyConnected,
            "fc",
            &[Some(x), Some(w)],
            &[y],
            &attributes,
        )
        .unwrap();
        let z = b.add_f32("add", x, w, FusedActivation::NONE).unwrap();
        b.output(y);
        b.output(z);
        let converted = b.store_float_weights_as_f16(&[]).unwrap();
        assert_eq!(converted.tensors, 0);
        assert_eq!(b.dtype(w), Some(DType::F32));
        b.build().unwrap();

        let mut b = ModelBuilder::new("own");
        let x = input(&mut b);
        let y = b
            .fully_connected_f32("fc", x, &[0.1, 0.2, 0.3, 0.4], None, FusedActivation::NONE)
            .unwrap();
        b.output(y);
        let mut kept = b.clone();
        let converted = b.store_float_weights_as_f16(&[]).unwrap();
        assert_eq!((converted.tensors, converted.weights), (1, 4));
        // Kept by op name, or by output name (the builder names a layer's output after it).
        assert_eq!(kept.store_float_weights_as_f16(&["fc"]).unwrap().tensors, 0);
        assert_eq!(kept.layers_minor(), 0);
        assert_eq!(b.layers_minor(), super::super::MINOR_F16_WEIGHTS);
    }

    #[test]
    fn only_weights_f16_holds_exactly_convert_losslessly() {
        let mut b = ModelBuilder::new("exact");
        let x = input(&mut b);
        let h = b
            .fully_connected_f32(
                "halves",
                x,
                &[0.5, -0.25, 1.0, 3.0],
                None,
                FusedActivation::NONE,
            )
            .unwrap();
        let y = b
            .fully_connected_f32("tenth", h, &[0.1], None, FusedActivation::NONE)
            .unwrap();
        b.output(y);
        let converted = b.store_exact_float_weights_as_f16();
        assert_eq!((converted.tensors, converted.weights), (1, 4));
        assert_eq!(converted.largest_relative_error, 0.0);
        let dtypes: Vec<_> = b
            .tensors
            .iter()
            .filter(|t| t.data.is_some())
            .map(|t| t.dtype)
            .collect();
        assert_eq!(dtypes, [DType::F16, DType::F32]);
    }

    #[test]
    fn a_weight_beyond_f16_is_refused_by_name() {
        let mut b = ModelBuilder::new("big");
        let x = input(&mut b);
        let h = b
            .fully_connected_f32("fc0", x, &[0.5; 16], None, FusedActivation::NONE)
            .unwrap();
        let y = b
            .fully_connected_f32(
                "fc",
                h,
                &[1.0, 7.0e4, 0.0, 1.0],
                None,
                FusedActivation::NONE,
            )
            .unwrap();
        b.output(y);
        let e = b.store_float_weights_as_f16(&[]).unwrap_err();
        assert_eq!(e, BuildError::OutOfRange("fc.weight".into()));
        assert!(e.to_string().contains("fc.weight"), "{e}");
        // Nothing changed, not even the first layer's weights, which do fit.
        assert!(b.tensors.iter().all(|t| t.dtype != DType::F16));
    }
}
