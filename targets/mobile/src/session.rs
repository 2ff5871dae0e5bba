//! The owned objects behind the C and JNI handles: a loaded model shared by reference count,
//! an interpreter and a trainer that each own their arena.
//!
//! The runtime borrows everything it touches (`Interpreter<'model, 'arena>`), which suits a
//! microcontroller's statics but not a handle that a C or Java caller keeps for as long as it
//! likes. So each handle owns its memory on the heap and lends it to the runtime for `'static`:
//! the borrower is declared before what it borrows, so it is dropped first, and the heap
//! blocks never move while the handle lives.

use std::ffi::CString;
use std::fmt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use loam::format::AlignedBytes;
use loam::format::TensorRecord;
use loam::preprocess::Preprocessing;
use loam::quant::QuantParams;
use loam::store::{CheckpointHeader, ModelId, SlotProblem, decode_image, file, payload_crc};
use loam::train::{Target, TrainConfig, TrainError, Trainer};
use loam::{DType, Error, Interpreter, LoadError, Model, Quantization};

/// Why a call failed: the kind (a status code for C, an exception for Java) and the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A null pointer, a wrong length or an index out of range; the text says which.
    Argument(String),
    /// The bytes are not a valid `.loam` model.
    Load(LoadError),
    /// Running the model failed.
    Runtime(Error),
    /// Training refused a configuration or a step.
    Train(TrainError),
    /// A checkpoint could not be saved or restored; the text names the file and the reason.
    Checkpoint(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Argument(what) => f.write_str(what),
            Failure::Load(e) => write!(f, "invalid model: {e}"),
            Failure::Runtime(e) => write!(f, "running the model: {e}"),
            Failure::Train(e) => write!(f, "fine-tuning: {e}"),
            Failure::Checkpoint(what) => f.write_str(what),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Runtime(e)
    }
}

impl From<TrainError> for Failure {
    fn from(e: TrainError) -> Self {
        Failure::Train(e)
    }
}

/// A short-hand for argument errors.
pub fn argument(what: impl Into<String>) -> Failure {
    Failure::Argument(what.into())
}

/// A validated model and the aligned copy of the bytes it reads in place. Immutable, so one
/// can be shared by every interpreter and trainer, on any thread.
pub struct SharedModel {
    // Declared before `_bytes`: it borrows them and must be dropped first.
    model: Model<'static>,
    _bytes: AlignedBytes,
    labels: Vec<CString>,
}

impl SharedModel {
    /// Copies `bytes` into aligned memory and validates them as a model, plan included.
    pub fn load(bytes: &[u8]) -> Result<Arc<SharedModel>, Failure> {
        let owned = AlignedBytes::new(bytes);
        // SAFETY: the slice points into `owned`'s heap block, which moves with `owned` into
        // the returned `SharedModel` without being reallocated and is freed only after
        // `model`, the sole borrower, is dropped.
        let view: &'static [u8] = unsafe { &*(&*owned as *const [u8]) };
        let model = Model::from_bytes(view).map_err(Failure::Load)?;
        model.check_plan().map_err(Failure::Load)?;
        // Labels are handed to C as NUL-terminated strings; one holding a NUL byte is cut
        // there rather than refused, since it only affects display.
        let labels = model
            .labels()
            .map(|l| CString::new(l.split('\0').next().unwrap_or("")).unwrap_or_default())
            .collect();
        Ok(Arc::new(SharedModel {
            model,
            _bytes: owned,
            labels,
        }))
    }

    /// The model.
    pub fn model(&self) -> &Model<'static> {
        &self.model
    }

    /// The class labels in the model's metadata, NUL-terminated.
    pub fn labels(&self) -> &[CString] {
        &self.labels
    }

    /// Applies the preprocessing the tools fitted on the training data and stored in the
    /// model (`(x - preprocess.offset) * preprocess.scale`, per feature) to raw input values.
    /// Returns whether the model had any; without it the values are left as they are.
    pub fn preprocess(&self, values: &mut [f32]) -> Result<bool, Failure> {
        let failed = |e: loam::preprocess::PreprocessError| argument(e.to_string());
        match Preprocessing::from_model(&self.model).map_err(failed)? {
            Some(p) => p.apply_all(values).map(|()| true).map_err(failed),
            None => Ok(false),
        }
    }

    /// Graph input `index`.
    pub fn input(&self, index: usize) -> Result<TensorRecord<'static>, Failure> {
        io_record(&self.model, index, false)
    }

    /// Graph output `index`.
    pub fn output(&self, index: usize) -> Result<TensorRecord<'static>, Failure> {
        io_record(&self.model, index, true)
    }
}

fn io_record(
    model: &Model<'static>,
    index: usize,
    output: bool,
) -> Result<TensorRecord<'static>, Failure> {
    let (ids, kind) = if output {
        (model.outputs(), "output")
    } else {
        (model.inputs(), "input")
    };
    let count = ids.len();
    let id = ids
        .get(index)
        .ok_or_else(|| argument(format!("the model has {count} {kind}s, not {}", index + 1)))?;
    model
        .tensor(usize::from(id))
        .ok_or(Failure::Runtime(Error::CorruptModel))
}

/// Heap memory lent to the runtime for `'static`; freed on drop, so its owner must drop the
/// borrower first (by declaring it earlier).
struct Lent<T: Copy + Default + 'static>(NonNull<[T]>);

impl<T: Copy + Default + 'static> Lent<T> {
    fn zeroed(len: usize) -> (Lent<T>, &'static mut [T]) {
        let block: &'static mut [T] = Box::leak(vec![T::default(); len].into_boxed_slice());
        let lent = Lent(NonNull::from(&mut *block));
        (lent, block)
    }
}

impl<T: Copy + Default + 'static> Drop for Lent<T> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak` in `zeroed`, and the one borrow handed out
        // there is gone (its holder was dropped before this field).
        unsafe { drop(Box::from_raw(self.0.as_ptr())) }
    }
}

// SAFETY: `Lent` is an owned heap block like a `Box<[T]>`; moving it to another thread moves
// the ownership with it.
unsafe impl<T: Copy + Default + Send + 'static> Send for Lent<T> {}

/// An interpreter with its own arena. Not shared between threads at once (one per thread);
/// it may move between threads.
pub struct Session {
    // Field order is drop order: the interpreter borrows the arena and the model.
    interpreter: Interpreter<'static, 'static>,
    _arena: Lent<u8>,
    model: Arc<SharedModel>,
}

impl Session {
    /// An interpreter for `model` with an arena of the plan's size plus room for the decoded
    /// records it keeps ([`Interpreter::arena_size_with_records`]).
    pub fn new(model: Arc<SharedModel>) -> Result<Session, Failure> {
        let (arena_owner, arena) =
            Lent::zeroed(Interpreter::arena_size_with_records(model.model()));
        // SAFETY: `model` lives on the `Arc`'s heap block, which `Session::model` keeps alive
        // and in place for longer than the interpreter (dropped first).
        let borrowed: &'static Model<'static> = unsafe { &*(model.model() as *const _) };
        let interpreter = Interpreter::new(borrowed, arena)?;
        Ok(Session {
            interpreter,
            _arena: arena_owner,
            model,
        })
    }

    /// The model it runs.
    pub fn model(&self) -> &Arc<SharedModel> {
        &self.model
    }

    /// Writes real values into input `index`, quantizing them for an integer input.
    pub fn set_input(&mut self, index: usize, values: &[f32]) -> Result<(), Failure> {
        let record = self.model.input(index)?;
        let bytes = self.interpreter.input_bytes_mut(index)?;
        write_real(&record, index, values, bytes)
    }

    /// The raw bytes of input `index`, to fill in the tensor's own type.
    pub fn input_bytes_mut(&mut self, index: usize) -> Result<&mut [u8], Failure> {
        Ok(self.interpreter.input_bytes_mut(index)?)
    }

    /// Runs the model on the inputs written since the last call.
    pub fn invoke(&mut self) -> Result<(), Failure> {
        Ok(self.interpreter.invoke()?)
    }

    /// Output `index` as real values (dequantized for an integer output).
    pub fn output(&self, index: usize, out: &mut [f32]) -> Result<(), Failure> {
        let record = self.model.output(index)?;
        let bytes = self.interpreter.output_bytes(index)?;
        read_real(&record, index, bytes, out)
    }

    /// The raw bytes of output `index`.
    pub fn output_bytes(&self, index: usize) -> Result<&[u8], Failure> {
        Ok(self.interpreter.output_bytes(index)?)
    }
}

/// A trainer with its own arena and state: fine-tunes the model's last layers in RAM.
pub struct TrainerSession {
    // Field order is drop order: the trainer borrows the arena, the state and the model.
    trainer: Trainer<'static, 'static, 'static>,
    _arena: Lent<u8>,
    _state: Lent<f32>,
    model: Arc<SharedModel>,
}

impl TrainerSession {
    /// A trainer for `model` with `config`, starting from the model's own weights.
    pub fn new(model: Arc<SharedModel>, config: TrainConfig) -> Result<TrainerSession, Failure> {
        let state_len = Trainer::state_len(model.model(), &config)?;
        // Room for the decoded records too: the frozen layers' forward passes run faster.
        let (arena_owner, arena) =
            Lent::zeroed(Interpreter::arena_size_with_records(model.model()));
        let (state_owner, state) = Lent::zeroed(state_len);
        // SAFETY: as in `Session::new`; the trainer is dropped before `model`.
        let borrowed: &'static Model<'static> = unsafe { &*(model.model() as *const _) };
        let trainer = Trainer::new(borrowed, arena, state, config)?;
        Ok(TrainerSession {
            trainer,
            _arena: arena_owner,
            _state: state_owner,
            model,
        })
    }

    fn fill(&mut self, input: &[f32]) -> Result<(), Failure> {
        let record = self.model.input(0)?;
        let bytes = self.trainer.interpreter_mut().input_bytes_mut(0)?;
        write_real(&record, 0, input, bytes)
    }

    /// One training sample with a class target; returns the loss before the update.
    pub fn step_class(&mut self, input: &[f32], class: usize) -> Result<f32, Failure> {
        self.fill(input)?;
        Ok(self.trainer.step_filled(Target::Class(class))?)
    }

    /// One training sample with a vector target (mean squared error).
    pub fn step_values(&mut self, input: &[f32], target: &[f32]) -> Result<f32, Failure> {
        self.fill(input)?;
        Ok(self.trainer.step_filled(Target::Values(target))?)
    }

    /// The trained head's outputs (logits) for `input`.
    pub fn predict(&mut self, input: &[f32]) -> Result<&[f32], Failure> {
        self.fill(input)?;
        Ok(self.trainer.predict_filled()?)
    }

    /// Optimizer updates applied since the start (or the restored checkpoint's count).
    pub fn updates(&self) -> u32 {
        self.trainer.updates()
    }

    /// Back to the model's own weights.
    pub fn reset(&mut self) -> Result<(), Failure> {
        Ok(self.trainer.reset()?)
    }

    fn model_id(&self) -> ModelId {
        ModelId::of(self.model.model())
    }

    /// Saves the trained parameters and optimizer state to `path` atomically (a temporary
    /// file, synced, renamed over the old one).
    pub fn save(&mut self, path: &Path) -> Result<(), Failure> {
        let id = self.model_id();
        file::save(path, id, &self.trainer.checkpoint())
            .map(|_| ())
            .map_err(|e| Failure::Checkpoint(format!("saving {}: {e}", path.display())))
    }

    /// Restores from `path`; `Ok(false)` when there is no file yet.
    pub fn restore(&mut self, path: &Path) -> Result<bool, Failure> {
        let failed = |e: &dyn fmt::Display| {
            Failure::Checkpoint(format!("restoring {}: {e}", path.display()))
        };
        match file::load(path, self.model_id()) {
            Ok(None) => Ok(false),
            Ok(Some((_, payload))) => self
                .trainer
                .restore(&payload)
                .map(|()| true)
                .map_err(|e| failed(&e)),
            Err(e) => Err(failed(&e)),
        }
    }

    /// Bytes of [`TrainerSession::checkpoint_image`].
    pub fn checkpoint_len(&self) -> usize {
        loam::store::HEADER_LEN + self.trainer.checkpoint_len()
    }

    /// The checkpoint as one image (header then payload, as a file or flash slot holds it),
    /// for apps that keep it somewhere of their own.
    pub fn checkpoint_image(&mut self) -> Vec<u8> {
        let id = self.model_id();
        let sequence = self.trainer.updates();
        let capacity = self.checkpoint_len();
        let parts = self.trainer.checkpoint();
        let len = parts.iter().map(|p| p.len()).sum::<usize>() as u32;
        let header = CheckpointHeader::new(sequence, id, len, payload_crc(&parts));
        let mut image = Vec::with_capacity(capacity);
        image.extend_from_slice(&header.encode());
        for part in parts {
            image.extend_from_slice(part);
        }
        image
    }

    /// Restores from an image [`TrainerSession::checkpoint_image`] made.
    pub fn restore_image(&mut self, image: &[u8]) -> Result<(), Failure> {
        let failed = |e: &dyn fmt::Display| Failure::Checkpoint(format!("checkpoint image: {e}"));
        let (header, payload) = decode_image(image).map_err(|e: SlotProblem| failed(&e))?;
        if header.model != self.model_id() {
            return Err(failed(&format_args!(
                "it belongs to another model ({})",
                header.model
            )));
        }
        self.trainer.restore(payload).map_err(|e| failed(&e))
    }
}

/// Per-tensor quantization of an integer tensor, or an error naming the tensor.
fn per_tensor(record: &TensorRecord<'_>, what: &str) -> Result<QuantParams, Failure> {
    match record.quantization {
        Quantization::PerTensor { scale, zero_point } => Ok(QuantParams { scale, zero_point }),
        _ => Err(argument(format!(
            "{what} ('{}') is {} without per-tensor quantization; use its raw bytes",
            record.name, record.dtype
        ))),
    }
}

fn check_len(record: &TensorRecord<'_>, what: &str, given: usize) -> Result<(), Failure> {
    let expected = record.shape.elements().unwrap_or(0);
    if given == expected {
        Ok(())
    } else {
        Err(argument(format!(
            "{what} ('{}') has {expected} elements, {given} were given",
            record.name
        )))
    }
}

/// Writes real values into a tensor's bytes, quantizing them for an integer tensor with the
/// tensor's own parameters (round half away from zero, saturating, as the runtime's
/// Quantize op does).
fn write_real(
    record: &TensorRecord<'_>,
    index: usize,
    values: &[f32],
    bytes: &mut [u8],
) -> Result<(), Failure> {
    let what = format!("input {index}");
    check_len(record, &what, values.len())?;
    match record.dtype {
        DType::F32 => {
            for (dst, v) in bytes.chunks_exact_mut(4).zip(values) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::I8 => {
            let q = per_tensor(record, &what)?;
            for (dst, &v) in bytes.iter_mut().zip(values) {
                *dst = q.quantize(v, -128, 127) as i8 as u8;
            }
        }
        DType::I16 => {
            let q = per_tensor(record, &what)?;
            for (dst, &v) in bytes.chunks_exact_mut(2).zip(values) {
                dst.copy_from_slice(&(q.quantize(v, -32768, 32767) as i16).to_le_bytes());
            }
        }
        other => {
            return Err(argument(format!(
                "{what} ('{}') is {other}; use its raw bytes",
                record.name
            )));
        }
    }
    Ok(())
}

/// Reads a tensor's bytes as real values, dequantizing an integer tensor.
fn read_real(
    record: &TensorRecord<'_>,
    index: usize,
    bytes: &[u8],
    out: &mut [f32],
) -> Result<(), Failure> {
    let what = format!("output {index}");
    check_len(record, &what, out.len())?;
    match record.dtype {
        DType::F32 => {
            for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
            }
        }
        DType::I8 => {
            let q = per_tensor(record, &what)?;
            for (dst, &b) in out.iter_mut().zip(bytes) {
                *dst = q.dequantize(i32::from(b as i8));
            }
        }
        DType::I16 => {
            let q = per_tensor(record, &what)?;
            for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *dst = q.dequantize(i32::from(i16::from_le_bytes([src[0], src[1]])));
            }
        }
        other => {
            return Err(argument(format!(
                "{what} ('{}') is {other}; use its raw bytes",
                record.name
            )));
        }
    }
    Ok(())
}
