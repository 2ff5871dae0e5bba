//! The C API: opaque handles, status codes, and a per-thread message for the last failure.
//!
//! Every function catches panics at the boundary (unwinding into C is undefined behaviour)
//! and reports them as [`LoamStatus::Panic`]. Pointers are checked for null; lengths are the
//! caller's to get right, as everywhere in C.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use loam::DType;
use loam::train::{Loss, Optimizer, TrainConfig};

use crate::session::{Failure, Session, SharedModel, TrainerSession, argument};

/// Most dimensions a tensor has (the runtime's `MAX_RANK`).
pub const LOAM_MAX_RANK: usize = 6;
const _: () = assert!(LOAM_MAX_RANK == loam::tensor::MAX_RANK);

/// What a call returned. `LOAM_STATUS_OK` is zero; for any other value,
/// `loam_last_error_message()` says what went wrong.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoamStatus {
    /// Success.
    Ok = 0,
    /// A null pointer, a wrong length or an index out of range.
    InvalidArgument = 1,
    /// The bytes are not a valid `.loam` model.
    InvalidModel = 2,
    /// Running the model failed.
    Runtime = 3,
    /// Fine-tuning refused its configuration or a sample.
    Training = 4,
    /// A checkpoint could not be saved or restored.
    Checkpoint = 5,
    /// A bug in loam: a panic was caught at the API boundary.
    Panic = 6,
}

impl From<&Failure> for LoamStatus {
    fn from(f: &Failure) -> Self {
        match f {
            Failure::Argument(_) => LoamStatus::InvalidArgument,
            Failure::Load(_) => LoamStatus::InvalidModel,
            Failure::Runtime(_) => LoamStatus::Runtime,
            Failure::Train(_) => LoamStatus::Training,
            Failure::Checkpoint(_) => LoamStatus::Checkpoint,
        }
    }
}

/// Element types of tensors.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoamDtype {
    /// 32-bit float.
    F32 = 0,
    /// 16-bit float (weights only).
    F16 = 1,
    /// Signed 8-bit integer.
    I8 = 2,
    /// Signed 16-bit integer.
    I16 = 3,
    /// Signed 32-bit integer.
    I32 = 4,
}

/// A graph input or output: element type, shape and quantization.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LoamTensorInfo {
    /// Element type.
    pub dtype: LoamDtype,
    /// Number of dimensions.
    pub rank: usize,
    /// Dimensions (NHWC for images); entries past `rank` are 0.
    pub dims: [usize; LOAM_MAX_RANK],
    /// Elements (the product of the dimensions).
    pub elements: usize,
    /// Bytes of the tensor's data.
    pub bytes: usize,
    /// `real = scale * (q - zero_point)` for integer tensors; 0 for float ones.
    pub scale: f32,
    /// See `scale`.
    pub zero_point: i32,
}

/// The loss a trainer minimises.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoamLoss {
    /// Softmax cross-entropy against a class index (`loam_trainer_step`).
    CrossEntropy = 0,
    /// Mean squared error against a vector (`loam_trainer_step_values`).
    MeanSquaredError = 1,
}

/// The optimizer of a trainer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoamOptimizer {
    /// Stochastic gradient descent with momentum (`momentum` 0 for plain SGD).
    Sgd = 0,
    /// Adam with beta1 0.9, beta2 0.999, epsilon 1e-8.
    Adam = 1,
}

/// What to fine-tune and how; start from `loam_train_config_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LoamTrainConfig {
    /// Fully-connected layers trained in full, counted from the end of the model (1 to 4); 0
    /// trains what the model's stored training plan says (`loam export --trainable`).
    pub layers: u32,
    /// The loss.
    pub loss: LoamLoss,
    /// The optimizer.
    pub optimizer: LoamOptimizer,
    /// Step size.
    pub learning_rate: f32,
    /// Momentum of SGD (ignored by Adam).
    pub momentum: f32,
    /// Largest L2 norm of an update; 0 for no clipping.
    pub clip_norm: f32,
    /// Samples averaged into one update (a mini-batch).
    pub accumulate: u32,
}

impl LoamTrainConfig {
    fn to_runtime(self) -> TrainConfig {
        TrainConfig {
            layers: self.layers as usize,
            loss: match self.loss {
                LoamLoss::CrossEntropy => Loss::CrossEntropy,
                LoamLoss::MeanSquaredError => Loss::MeanSquaredError,
            },
            optimizer: match self.optimizer {
                LoamOptimizer::Sgd => Optimizer::Sgd {
                    learning_rate: self.learning_rate,
                    momentum: self.momentum,
                    nesterov: false,
                },
                LoamOptimizer::Adam => Optimizer::adam(self.learning_rate),
            },
            clip_norm: (self.clip_norm != 0.0).then_some(self.clip_norm),
            accumulate: self.accumulate,
        }
    }
}

/// A loaded model. Immutable: share one between threads and between any number of
/// interpreters and trainers. Freed with `loam_model_free` once they are freed too (each
/// holds a reference, so freeing the model first is also safe).
pub struct LoamModel {
    shared: Arc<SharedModel>,
}

/// An interpreter with its own arena. Use one per thread; it may move between threads.
pub struct LoamInterpreter {
    session: Session,
}

/// A fine-tuning session with its own arena and state. Use one per thread.
pub struct LoamTrainer {
    session: TrainerSession,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs `body`, turning a failure or a panic into a status and the thread's message.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> LoamStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => LoamStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(&failure.to_string());
            LoamStatus::from(&failure)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(&format!("internal error (please report): {what}"));
            LoamStatus::Panic
        }
    }
}

fn non_null<'p, T>(ptr: *const T, name: &str) -> Result<&'p T, Failure> {
    // SAFETY: the caller passes a pointer to a live object or null; null is refused here.
    unsafe { ptr.as_ref() }.ok_or_else(|| argument(format!("{name} is NULL")))
}

fn non_null_mut<'p, T>(ptr: *mut T, name: &str) -> Result<&'p mut T, Failure> {
    // SAFETY: as `non_null`, and the caller does not use the object from another thread at
    // the same time (documented per handle).
    unsafe { ptr.as_mut() }.ok_or_else(|| argument(format!("{name} is NULL")))
}

fn slice<'p, T>(ptr: *const T, len: usize, name: &str) -> Result<&'p [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(argument(format!("{name} is NULL")));
    }
    // SAFETY: the caller promises `len` readable elements at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

fn slice_mut<'p, T>(ptr: *mut T, len: usize, name: &str) -> Result<&'p mut [T], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(argument(format!("{name} is NULL")));
    }
    // SAFETY: the caller promises `len` writable elements at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

fn path<'p>(ptr: *const c_char) -> Result<&'p Path, Failure> {
    if ptr.is_null() {
        return Err(argument("path is NULL"));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| argument("path is not UTF-8"))?;
    Ok(Path::new(text))
}

fn write_out<T>(out: *mut T, value: T, name: &str) -> Result<(), Failure> {
    *non_null_mut(out, name)? = value;
    Ok(())
}

/// Boxes `value` and writes the pointer to `*out` for the caller to free with the matching
/// `loam_*_free`; with a NULL `out` nothing is handed out and the box is dropped.
fn hand_out<T>(out: *mut *mut T, value: T) -> Result<(), Failure> {
    let slot = non_null_mut(out, "out")?;
    *slot = Box::into_raw(Box::new(value));
    Ok(())
}

/// The library's version, e.g. "0.1.0".
#[unsafe(no_mangle)]
pub extern "C" fn loam_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last call on this thread that did not return `LOAM_STATUS_OK`: what
/// failed and why, naming the tensor, field or file. Valid until the next failing call on
/// this thread; empty if none failed.
#[unsafe(no_mangle)]
pub extern "C" fn loam_last_error_message() -> *const c_char {
    // The pointer stays valid after `with` returns: the CString lives in the thread-local
    // until the next failure replaces it.
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A fixed description of a status code.
#[unsafe(no_mangle)]
pub extern "C" fn loam_status_name(status: LoamStatus) -> *const c_char {
    let text: &'static str = match status {
        LoamStatus::Ok => "ok\0",
        LoamStatus::InvalidArgument => "invalid argument\0",
        LoamStatus::InvalidModel => "invalid model\0",
        LoamStatus::Runtime => "runtime error\0",
        LoamStatus::Training => "training error\0",
        LoamStatus::Checkpoint => "checkpoint error\0",
        LoamStatus::Panic => "internal error\0",
    };
    text.as_ptr().cast()
}

/// Loads a `.loam` model from `len` bytes at `bytes` (copied: the caller may free them after
/// the call), validating it completely. On success `*out` is a model to free with
/// `loam_model_free`.
///
/// # Safety
/// `bytes` points to `len` readable bytes; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_load(
    bytes: *const u8,
    len: usize,
    out: *mut *mut LoamModel,
) -> LoamStatus {
    guard(|| {
        let bytes = slice(bytes, len, "bytes")?;
        let shared = SharedModel::load(bytes)?;
        hand_out(out, LoamModel { shared })
    })
}

/// Frees a model (NULL is ignored). Interpreters and trainers made from it stay usable.
///
/// # Safety
/// `model` came from `loam_model_load` and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_free(model: *mut LoamModel) {
    if !model.is_null() {
        // SAFETY: made by `Box::into_raw` in `loam_model_load`.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// Bytes of RAM the model's tensors need (the plan's arena). Each interpreter allocates this
/// plus the decoded records it keeps beside them, which make small layers faster: 56 bytes
/// per tensor, 44 per op, 4 per output channel of int8 fully-connected layers whose input is
/// not a ReLU's, and 1 KiB per int8 softmax.
///
/// # Safety
/// `model` is a live model.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_arena_size(model: *const LoamModel) -> usize {
    // SAFETY: the caller passes a live model or null.
    unsafe { model.as_ref() }.map_or(0, |m| m.shared.model().arena_size())
}

/// Number of graph inputs (0 for NULL).
///
/// # Safety
/// `model` is a live model or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_input_count(model: *const LoamModel) -> usize {
    // SAFETY: the caller passes a live model or null.
    unsafe { model.as_ref() }.map_or(0, |m| m.shared.model().inputs().len())
}

/// Number of graph outputs (0 for NULL).
///
/// # Safety
/// `model` is a live model or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_output_count(model: *const LoamModel) -> usize {
    // SAFETY: the caller passes a live model or null.
    unsafe { model.as_ref() }.map_or(0, |m| m.shared.model().outputs().len())
}

fn tensor_info(record: &loam::format::TensorRecord<'_>) -> LoamTensorInfo {
    let mut dims = [0usize; LOAM_MAX_RANK];
    for (d, &s) in dims.iter_mut().zip(record.shape.dims()) {
        *d = s as usize;
    }
    LoamTensorInfo {
        dtype: match record.dtype {
            DType::F32 => LoamDtype::F32,
            DType::F16 => LoamDtype::F16,
            DType::I8 => LoamDtype::I8,
            DType::I16 => LoamDtype::I16,
            _ => LoamDtype::I32,
        },
        rank: record.shape.rank(),
        dims,
        elements: record.shape.elements().unwrap_or(0),
        bytes: record.byte_len().unwrap_or(0),
        scale: record.quantization.scale().unwrap_or(0.0),
        zero_point: record.quantization.zero_point(),
    }
}

/// Describes graph input `index`.
///
/// # Safety
/// `model` is a live model; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_input_info(
    model: *const LoamModel,
    index: usize,
    out: *mut LoamTensorInfo,
) -> LoamStatus {
    guard(|| {
        let record = non_null(model, "model")?.shared.input(index)?;
        write_out(out, tensor_info(&record), "out")
    })
}

/// Describes graph output `index`.
///
/// # Safety
/// `model` is a live model; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_output_info(
    model: *const LoamModel,
    index: usize,
    out: *mut LoamTensorInfo,
) -> LoamStatus {
    guard(|| {
        let record = non_null(model, "model")?.shared.output(index)?;
        write_out(out, tensor_info(&record), "out")
    })
}

/// Number of class labels in the model's metadata (0 if it has none).
///
/// # Safety
/// `model` is a live model or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_label_count(model: *const LoamModel) -> usize {
    // SAFETY: the caller passes a live model or null.
    unsafe { model.as_ref() }.map_or(0, |m| m.shared.labels().len())
}

/// Class label `index`, NUL-terminated, valid as long as the model; NULL if out of range.
///
/// # Safety
/// `model` is a live model or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_label(model: *const LoamModel, index: usize) -> *const c_char {
    // SAFETY: the caller passes a live model or null.
    unsafe { model.as_ref() }
        .and_then(|m| m.shared.labels().get(index))
        .map_or(std::ptr::null(), |l| l.as_ptr())
}

/// Turns raw input values (as the training data had them) into what the model takes, in
/// place, with the preprocessing stored in the model (`(x - offset) * scale` per feature,
/// fitted by `loam train`). `*applied` (if not NULL) says whether the model had any; without
/// it the values are unchanged.
///
/// # Safety
/// `model` is live; `values` has `len` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_model_preprocess(
    model: *const LoamModel,
    values: *mut f32,
    len: usize,
    applied: *mut bool,
) -> LoamStatus {
    guard(|| {
        let model = non_null(model, "model")?;
        let done = model.shared.preprocess(slice_mut(values, len, "values")?)?;
        if !applied.is_null() {
            write_out(applied, done, "applied")?;
        }
        Ok(())
    })
}

/// Makes an interpreter of `model`, allocating its arena (`loam_model_arena_size` bytes, plus
/// the decoded records it keeps).
///
/// # Safety
/// `model` is a live model; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_interpreter_new(
    model: *const LoamModel,
    out: *mut *mut LoamInterpreter,
) -> LoamStatus {
    guard(|| {
        let shared = Arc::clone(&non_null(model, "model")?.shared);
        let session = Session::new(shared)?;
        hand_out(out, LoamInterpreter { session })
    })
}

/// Frees an interpreter (NULL is ignored).
///
/// # Safety
/// `interpreter` came from `loam_interpreter_new` and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_interpreter_free(interpreter: *mut LoamInterpreter) {
    if !interpreter.is_null() {
        // SAFETY: made by `Box::into_raw` in `loam_interpreter_new`.
        drop(unsafe { Box::from_raw(interpreter) });
    }
}

/// Writes `len` real values into input `index`, quantizing them with the input's scale and
/// zero point when it is an integer tensor. `len` must be the input's element count.
///
/// # Safety
/// `interpreter` is live and not in use on another thread; `values` has `len` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_interpreter_set_input(
    interpreter: *mut LoamInterpreter,
    index: usize,
    values: *const f32,
    len: usize,
) -> LoamStatus {
    guard(|| {
        let interpreter = non_null_mut(interpreter, "interpreter")?;
        interpreter
            .session
            .set_input(index, slice(values, len, "values")?)
    })
}

/// The raw data of input `index` in its own element type (`loam_model_input_info`), to write
/// directly. Valid until the interpreter is freed.
///
/// # Safety
/// `interpreter` is live; `data` and `len` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_interpreter_input_data(
    interpreter: *mut LoamInterpreter,
    index: usize,
    data: *mut *mut c_void,
    len: *mut usize,
) -> LoamStatus {
    guard(|| {
        let interpreter = non_null_mut(interpreter, "interpreter")?;
        let bytes = interpreter.session.input_bytes_mut(index)?;
        let (ptr, n) = (bytes.as_mut_ptr().cast::<c_void>(), bytes.len());
        write_out(data, ptr, "data")?;
        write_out(len, n, "len")
    })
}

/// Runs the model on the inputs written so far. Inputs are consumed: the memory plan may
/// reuse their memory for later tensors, so write every input again before the next invoke.
///
/// # Safety
/// `interpreter` is live and not in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_interpreter_invoke(interpreter: *mut LoamInterpreter) -> LoamStatus {
    guard(|| non_null_mut(interpreter, "interpreter")?.session.invoke())
}

/// Reads output `index` as `len` real values (dequantized when it is an integer tensor).
///
/// # Safety
/// `interpreter` is live; `values` has room for `len` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_interpreter_output(
    interpreter: *const LoamInterpreter,
    index: usize,
    values: *mut f32,
    len: usize,
) -> LoamStatus {
    guard(|| {
        let interpreter = non_null(interpreter, "interpreter")?;
        interpreter
            .session
            .output(index, slice_mut(values, len, "values")?)
    })
}

/// The raw data of output `index` in its own element type. Valid until the next invoke.
///
/// # Safety
/// `interpreter` is live; `data` and `len` are writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_interpreter_output_data(
    interpreter: *const LoamInterpreter,
    index: usize,
    data: *mut *const c_void,
    len: *mut usize,
) -> LoamStatus {
    guard(|| {
        let interpreter = non_null(interpreter, "interpreter")?;
        let bytes = interpreter.session.output_bytes(index)?;
        write_out(data, bytes.as_ptr().cast::<c_void>(), "data")?;
        write_out(len, bytes.len(), "len")
    })
}

/// A configuration to start from: the last layer, cross-entropy, Adam at 0.001, no clipping,
/// one sample per update.
#[unsafe(no_mangle)]
pub extern "C" fn loam_train_config_default() -> LoamTrainConfig {
    LoamTrainConfig {
        layers: 1,
        loss: LoamLoss::CrossEntropy,
        optimizer: LoamOptimizer::Adam,
        learning_rate: 1e-3,
        momentum: 0.0,
        clip_norm: 0.0,
        accumulate: 1,
    }
}

/// Makes a trainer that fine-tunes `model`'s last fully-connected layers in RAM, starting from
/// the model's weights. The model itself is never changed.
///
/// # Safety
/// `model` is live; `config` is readable; `out` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_new(
    model: *const LoamModel,
    config: *const LoamTrainConfig,
    out: *mut *mut LoamTrainer,
) -> LoamStatus {
    guard(|| {
        let shared = Arc::clone(&non_null(model, "model")?.shared);
        let config = non_null(config, "config")?.to_runtime();
        let session = TrainerSession::new(shared, config)?;
        hand_out(out, LoamTrainer { session })
    })
}

/// Frees a trainer (NULL is ignored).
///
/// # Safety
/// `trainer` came from `loam_trainer_new` and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_free(trainer: *mut LoamTrainer) {
    if !trainer.is_null() {
        // SAFETY: made by `Box::into_raw` in `loam_trainer_new`.
        drop(unsafe { Box::from_raw(trainer) });
    }
}

/// Trains on one sample of class `label` (cross-entropy); `*loss` (if not NULL) receives the
/// loss before the update. Input 0 takes `len` real values, quantized as needed.
///
/// # Safety
/// `trainer` is live and not in use on another thread; `input` has `len` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_step(
    trainer: *mut LoamTrainer,
    input: *const f32,
    len: usize,
    label: usize,
    loss: *mut f32,
) -> LoamStatus {
    guard(|| {
        let trainer = non_null_mut(trainer, "trainer")?;
        let value = trainer
            .session
            .step_class(slice(input, len, "input")?, label)?;
        if !loss.is_null() {
            write_out(loss, value, "loss")?;
        }
        Ok(())
    })
}

/// Trains on one sample with a target vector (mean squared error).
///
/// # Safety
/// `trainer` is live; `input` has `len` floats and `target` `target_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_step_values(
    trainer: *mut LoamTrainer,
    input: *const f32,
    len: usize,
    target: *const f32,
    target_len: usize,
    loss: *mut f32,
) -> LoamStatus {
    guard(|| {
        let trainer = non_null_mut(trainer, "trainer")?;
        let value = trainer.session.step_values(
            slice(input, len, "input")?,
            slice(target, target_len, "target")?,
        )?;
        if !loss.is_null() {
            write_out(loss, value, "loss")?;
        }
        Ok(())
    })
}

/// The fine-tuned model's outputs (logits, before any softmax) for one input, written to
/// `out` (`out_len` must be the output count of the last layer).
///
/// # Safety
/// `trainer` is live; `input` has `len` floats; `out` has room for `out_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_predict(
    trainer: *mut LoamTrainer,
    input: *const f32,
    len: usize,
    out: *mut f32,
    out_len: usize,
) -> LoamStatus {
    guard(|| {
        let trainer = non_null_mut(trainer, "trainer")?;
        let logits = trainer.session.predict(slice(input, len, "input")?)?;
        if logits.len() != out_len {
            return Err(argument(format!(
                "the trained head has {} outputs, out_len is {out_len}",
                logits.len()
            )));
        }
        slice_mut(out, out_len, "out")?.copy_from_slice(logits);
        Ok(())
    })
}

/// Optimizer updates applied (restored with a checkpoint); 0 for NULL.
///
/// # Safety
/// `trainer` is live or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_updates(trainer: *const LoamTrainer) -> u32 {
    // SAFETY: the caller passes a live trainer or null.
    unsafe { trainer.as_ref() }.map_or(0, |t| t.session.updates())
}

/// Forgets everything learned: back to the model's weights.
///
/// # Safety
/// `trainer` is live and not in use on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_reset(trainer: *mut LoamTrainer) -> LoamStatus {
    guard(|| non_null_mut(trainer, "trainer")?.session.reset())
}

/// Saves what the trainer learned (parameters and optimizer state) to the file at `path`,
/// atomically: a crash during the save leaves the previous checkpoint intact.
///
/// # Safety
/// `trainer` is live; `path` is a NUL-terminated UTF-8 string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_save(
    trainer: *mut LoamTrainer,
    path: *const c_char,
) -> LoamStatus {
    guard(|| {
        let path = self::path(path)?;
        non_null_mut(trainer, "trainer")?.session.save(path)
    })
}

/// Restores a checkpoint saved by `loam_trainer_save` for the same model. `*found` (if not
/// NULL) is false when there is no file, which is not an error. A file of another model or a
/// damaged one is refused, and the trainer is left as it was.
///
/// # Safety
/// `trainer` is live; `path` is a NUL-terminated UTF-8 string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_restore(
    trainer: *mut LoamTrainer,
    path: *const c_char,
    found: *mut bool,
) -> LoamStatus {
    guard(|| {
        let path = self::path(path)?;
        let was_there = non_null_mut(trainer, "trainer")?.session.restore(path)?;
        if !found.is_null() {
            write_out(found, was_there, "found")?;
        }
        Ok(())
    })
}

/// Bytes `loam_trainer_checkpoint` writes.
///
/// # Safety
/// `trainer` is live or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_checkpoint_size(trainer: *const LoamTrainer) -> usize {
    // SAFETY: the caller passes a live trainer or null.
    unsafe { trainer.as_ref() }.map_or(0, |t| t.session.checkpoint_len())
}

/// Writes the checkpoint (header with the model's hash and a CRC, then the payload) to `buf`,
/// for apps that store it themselves. `cap` must be at least `loam_trainer_checkpoint_size`.
///
/// # Safety
/// `trainer` is live; `buf` has room for `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_checkpoint(
    trainer: *mut LoamTrainer,
    buf: *mut u8,
    cap: usize,
) -> LoamStatus {
    guard(|| {
        let trainer = non_null_mut(trainer, "trainer")?;
        let image = trainer.session.checkpoint_image();
        if cap < image.len() {
            return Err(argument(format!(
                "the checkpoint needs {} bytes, cap is {cap}",
                image.len()
            )));
        }
        slice_mut(buf, image.len(), "buf")?.copy_from_slice(&image);
        Ok(())
    })
}

/// Restores a checkpoint `loam_trainer_checkpoint` wrote (checked: model hash, length, CRC).
///
/// # Safety
/// `trainer` is live; `bytes` has `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn loam_trainer_restore_checkpoint(
    trainer: *mut LoamTrainer,
    bytes: *const u8,
    len: usize,
) -> LoamStatus {
    guard(|| {
        let trainer = non_null_mut(trainer, "trainer")?;
        trainer.session.restore_image(slice(bytes, len, "bytes")?)
    })
}
