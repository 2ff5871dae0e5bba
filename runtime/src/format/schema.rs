//! The records a `.loam` file is made of, as serde types encoded with postcard.
//!
//! Every variable-length list is stored as borrowed bytes (`&'a [u8]`) inside the record that
//! owns it, so a file is read in place with no heap: a [`Table`] keeps an index of record
//! offsets for random access, a [`TensorIds`] is a run of little-endian `u16`. The same types
//! serialize the file in the writer, which is what keeps reader and writer in step.
//!
//! Compatibility rule (see `runtime/FORMAT.md`): within a major version, a new minor version
//! only appends trailing fields and adds enum variants or op kinds; it never changes the
//! meaning of what an earlier minor version wrote.

use serde::{Deserialize, Serialize};

use crate::tensor::{DType, Quantization, Shape};

/// Marks an optional operand that is absent (a convolution without bias, say).
pub const NO_TENSOR: u16 = u16::MAX;

/// Where a tensor's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Storage {
    /// In the caller's arena at this byte offset (activations, graph inputs and outputs,
    /// scratch). Offsets come from the offline memory plan.
    Arena {
        /// Byte offset from the start of the arena; a multiple of [`super::ARENA_ALIGN`].
        offset: u32,
    },
    /// In the file's weight blob at this byte offset, read in place.
    Constant {
        /// Byte offset from the start of the blob; a multiple of the element size.
        offset: u32,
    },
}

/// One tensor of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord<'a> {
    /// The name it had in the source model (graph inputs and outputs are looked up by it).
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Dimensions (NHWC for images).
    pub shape: Shape,
    /// How integers map to reals.
    pub quantization: Quantization,
    /// Arena or blob.
    pub storage: Storage,
}

impl TensorRecord<'_> {
    /// Bytes the tensor occupies (`elements * dtype size`), or `None` on overflow.
    pub fn byte_len(&self) -> Option<usize> {
        self.shape.elements()?.checked_mul(self.dtype.size())
    }

    /// Whether the tensor's data is in the weight blob.
    pub fn is_constant(&self) -> bool {
        matches!(self.storage, Storage::Constant { .. })
    }
}

/// [`TensorRecord`] as ops decode it each time they run: the same encoding, with the name
/// taken as plain bytes. The name was checked as UTF-8 when the file loaded, and no op reads
/// it, so the run skips checking it again (a measurable share of a small layer's time).
#[derive(Deserialize)]
pub(crate) struct OperandRecord<'a> {
    _name: &'a [u8],
    dtype: DType,
    shape: Shape,
    quantization: Quantization,
    storage: Storage,
}

impl<'a> OperandRecord<'a> {
    /// Record `i` of `tensors`, its name left empty.
    pub(crate) fn decode(tensors: &Table<'a>, i: usize) -> Option<TensorRecord<'a>> {
        let OperandRecord {
            dtype,
            shape,
            quantization,
            storage,
            ..
        } = tensors.get(i)?;
        Some(TensorRecord {
            name: "",
            dtype,
            shape,
            quantization,
            storage,
        })
    }
}

/// The accessors of a borrowed run of little-endian `u16`s (a trailing odd byte is
/// rejected when the file loads). A macro rather than a generic type so that each list keeps
/// its own name, and `TensorIds(bytes)` stays a constructor.
macro_rules! u16_list {
    ($name:ident, $what:literal) => {
        impl<'a> $name<'a> {
            #[doc = concat!("Number of ", $what, ".")]
            pub fn len(&self) -> usize {
                self.0.len() / 2
            }

            #[doc = concat!("Whether there are no ", $what, ".")]
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Entry `i`, or `None` past the end.
            pub fn get(&self, i: usize) -> Option<u16> {
                let b = self.0.get(2 * i..2 * i + 2)?;
                Some(u16::from_le_bytes([b[0], b[1]]))
            }

            /// All entries in order.
            pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
                self.0
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
            }
        }
    };
}

/// A run of tensor indices, each a little-endian `u16`; [`NO_TENSOR`] marks an absent
/// optional operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TensorIds<'a>(#[serde(borrow)] pub &'a [u8]);

u16_list!(TensorIds, "entries");

/// A run of little-endian `u16` channel indices (the output channels of a sparse update).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelIds<'a>(#[serde(borrow)] pub &'a [u8]);

u16_list!(ChannelIds, "channels");

/// What on-device training updates in one layer (format 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerUpdate<'a> {
    /// Nothing: the layer computes in `f32` from its weights in flash so that gradients pass
    /// through it to the trained layers before it.
    Frozen,
    /// Weights and bias.
    Full,
    /// The bias only (TinyTL's bias-only update): the weights stay in flash.
    Bias,
    /// The weight rows of these output channels (strictly increasing) and the whole bias; the
    /// other rows stay in flash.
    Channels(#[serde(borrow)] ChannelIds<'a>),
}

/// One layer of a [`TrainingPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainedLayerRecord<'a> {
    /// The op's position in execution order (a FullyConnected op).
    pub op: u32,
    /// What training updates in it.
    #[serde(borrow)]
    pub update: LayerUpdate<'a>,
}

/// The part of the model on-device training updates, chosen when the file was written
/// (`loam export --trainable`): the trained head's layers from the first one updated to the
/// last one of the graph, one [`TrainedLayerRecord`] each in graph order. A trailing header
/// field since format 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingPlan<'a> {
    /// [`TrainedLayerRecord`]s.
    #[serde(borrow)]
    pub layers: Table<'a>,
    /// How the trained weight rows are held in RAM.
    pub weights: WeightStorage,
}

/// How a training plan holds the weight rows it trains (biases are always `f32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WeightStorage {
    /// `f32`, dequantized from the file.
    F32,
    /// int8 on the layer's own per-channel (or per-tensor) scale, a quarter of the RAM:
    /// an update moves the real weight as the `f32` update would (for SGD that is MCUNetV3's
    /// quantization-aware scaling of the gradient), rounded stochastically (a counter-based
    /// hash, the same on every target) so that steps smaller than one int8 step still move
    /// it on average. Needs int8 weights in the file.
    Int8,
}

impl<'a> TrainingPlan<'a> {
    /// Layers in the plan.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the plan names no layer (such a file is refused at load).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Layer `i`'s record; `None` past the end (records were checked at load).
    pub fn layer(&self, i: usize) -> Option<TrainedLayerRecord<'a>> {
        self.layers.get(i)
    }
}

/// One operator: its kind, operands and kind-specific attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord<'a> {
    /// The operator, an [`crate::ops::OpKind`] code. Unknown codes are rejected at load.
    pub kind: u16,
    /// The node's name in the source model, for reports.
    pub name: &'a str,
    /// Operand tensors read by the op, in the order the op defines.
    #[serde(borrow)]
    pub inputs: TensorIds<'a>,
    /// Tensors the op writes.
    #[serde(borrow)]
    pub outputs: TensorIds<'a>,
    /// Arena scratch tensors the op may use while it runs and discards afterwards.
    #[serde(borrow)]
    pub temporaries: TensorIds<'a>,
    /// The op's attributes, a postcard record whose type the op kind defines.
    pub attributes: &'a [u8],
}

/// A list of postcard records with an index for random access: `index` holds one
/// little-endian `u32` per record, the record's start in `records`; each record ends where the
/// next starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Table<'a> {
    /// Record start offsets.
    pub index: &'a [u8],
    /// The concatenated records.
    pub records: &'a [u8],
}

impl<'a> Table<'a> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.index.len() / 4
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded bytes of record `i`, or `None` if the index is out of range or
    /// inconsistent.
    pub fn raw(&self, i: usize) -> Option<&'a [u8]> {
        let offset = |i: usize| -> Option<usize> {
            let b = self.index.get(4 * i..4 * i + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let start = offset(i)?;
        let end = if i + 1 == self.len() {
            self.records.len()
        } else {
            offset(i + 1)?
        };
        self.records.get(start..end)
    }

    /// Record `i` decoded; `None` if absent or malformed (including trailing bytes).
    pub fn get<T: Deserialize<'a>>(&self, i: usize) -> Option<T> {
        decode_exact(self.raw(i)?)
    }
}

/// Decodes exactly one `T` that must span all of `bytes`.
pub(crate) fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

/// A named list of numbers carried with the model, such as the mean and scale the device must
/// apply to raw sensor values before inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConstantRecord<'a> {
    /// What the numbers are, e.g. `input.mean`.
    pub name: &'a str,
    /// Little-endian f32 values.
    pub values: &'a [u8],
}

impl ConstantRecord<'_> {
    /// The values as `f32`.
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        self.values
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Who made the model and what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Metadata<'a> {
    /// Model name.
    pub name: &'a str,
    /// The model's own version (not the format's).
    pub version: &'a str,
    /// Free text.
    pub description: &'a str,
    /// The program that wrote the file, e.g. `loam-tools 0.1.0`.
    pub producer: &'a str,
    /// Class labels, one `&str` record each, in output order.
    #[serde(borrow)]
    pub labels: Table<'a>,
    /// Preprocessing constants, one [`ConstantRecord`] each.
    #[serde(borrow)]
    pub constants: Table<'a>,
}

/// Everything between the preamble and the weight blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// Model description.
    #[serde(borrow)]
    pub metadata: Metadata<'a>,
    /// [`TensorRecord`]s; an op refers to a tensor by its position here.
    #[serde(borrow)]
    pub tensors: Table<'a>,
    /// [`OpRecord`]s in execution order.
    #[serde(borrow)]
    pub ops: Table<'a>,
    /// The graph inputs, which the caller fills before each invocation.
    #[serde(borrow)]
    pub inputs: TensorIds<'a>,
    /// The graph outputs, valid after each invocation.
    #[serde(borrow)]
    pub outputs: TensorIds<'a>,
}
