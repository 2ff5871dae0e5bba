//! The native half of the Java class `dev.loam.LoamModel` (java/dev/loam/LoamModel.java).
//!
//! The Java object keeps a pointer to a [`JavaModel`] in a `long`; every method is
//! `synchronized` on the Java side, so one `JavaModel` is never used by two threads at once.
//! Failures become a `dev.loam.LoamException` carrying the same message the C API gives.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use jni::JNIEnv;
use jni::objects::{JByteArray, JClass, JFloatArray, JObject, JString};
use jni::sys::{jboolean, jfloat, jint, jintArray, jlong, jobjectArray};
use loam::train::{Loss, Optimizer, TrainConfig};

use crate::session::{Failure, Session, SharedModel, TrainerSession, argument};

const EXCEPTION: &str = "dev/loam/LoamException";

/// What a Java `LoamModel` owns: an interpreter, and a trainer once fine-tuning starts.
pub struct JavaModel {
    session: Session,
    trainer: Option<TrainerSession>,
}

/// Why a JNI call failed: ours (thrown as `LoamException`) or the JVM's (already pending).
enum JavaFailure {
    Loam(Failure),
    Jvm,
}

impl From<Failure> for JavaFailure {
    fn from(f: Failure) -> Self {
        JavaFailure::Loam(f)
    }
}

impl From<jni::errors::Error> for JavaFailure {
    fn from(_: jni::errors::Error) -> Self {
        JavaFailure::Jvm
    }
}

/// Runs `body`; on failure throws (unless the JVM already has an exception pending) and
/// returns `fallback`, which Java never sees.
fn call<'local, T>(
    env: &mut JNIEnv<'local>,
    fallback: T,
    body: impl FnOnce(&mut JNIEnv<'local>) -> Result<T, JavaFailure>,
) -> T {
    let message = match catch_unwind(AssertUnwindSafe(|| body(env))) {
        Ok(Ok(value)) => return value,
        Ok(Err(JavaFailure::Loam(failure))) => failure.to_string(),
        Ok(Err(JavaFailure::Jvm)) => return fallback,
        Err(_) => "internal error in loam (please report)".to_string(),
    };
    if !env.exception_check().unwrap_or(true) {
        let _ = env.throw_new(EXCEPTION, message);
    }
    fallback
}

fn model_mut<'h>(handle: jlong) -> Result<&'h mut JavaModel, JavaFailure> {
    // SAFETY: the handle is 0 (closed) or came from `nativeLoad`; the Java class serialises
    // calls and clears the handle when it frees it.
    unsafe { (handle as *mut JavaModel).as_mut() }
        .ok_or_else(|| argument("the model is closed").into())
}

fn floats(env: &mut JNIEnv<'_>, array: &JFloatArray<'_>) -> Result<Vec<f32>, JavaFailure> {
    if array.is_null() {
        return Err(argument("the input array is null").into());
    }
    let len = env.get_array_length(array)? as usize;
    let mut values = vec![0f32; len];
    env.get_float_array_region(array, 0, &mut values)?;
    Ok(values)
}

fn float_array(env: &mut JNIEnv<'_>, values: &[f32]) -> Result<jni::sys::jfloatArray, JavaFailure> {
    let array = env.new_float_array(values.len() as i32)?;
    env.set_float_array_region(&array, 0, values)?;
    Ok(array.into_raw())
}

fn output_len(model: &JavaModel) -> Result<usize, Failure> {
    Ok(model
        .session
        .model()
        .output(0)?
        .shape
        .elements()
        .unwrap_or(0))
}

/// `static native long nativeLoad(byte[] bytes)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeLoad<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    bytes: JByteArray<'local>,
) -> jlong {
    call(&mut env, 0, |env| {
        if bytes.is_null() {
            return Err(argument("the model bytes are null").into());
        }
        let bytes = env.convert_byte_array(&bytes)?;
        let shared = SharedModel::load(&bytes)?;
        let session = Session::new(shared)?;
        let model = Box::new(JavaModel {
            session,
            trainer: None,
        });
        Ok(Box::into_raw(model) as jlong)
    })
}

/// `static native void nativeFree(long handle)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeFree<'local>(
    _env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    if handle != 0 {
        // SAFETY: made by `Box::into_raw` in `nativeLoad`; the Java side frees it once.
        drop(unsafe { Box::from_raw(handle as *mut JavaModel) });
    }
}

/// `static native int[] nativeInputShape(long handle)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeInputShape<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jintArray {
    call(&mut env, std::ptr::null_mut(), |env| {
        let model = model_mut(handle)?;
        let record = model.session.model().input(0)?;
        let dims: Vec<i32> = record.shape.dims().iter().map(|&d| d as i32).collect();
        let array = env.new_int_array(dims.len() as i32)?;
        env.set_int_array_region(&array, 0, &dims)?;
        Ok(array.into_raw())
    })
}

/// `static native int nativeOutputSize(long handle)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeOutputSize<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jint {
    call(&mut env, 0, |_| Ok(output_len(model_mut(handle)?)? as jint))
}

/// `static native String[] nativeLabels(long handle)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeLabels<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jobjectArray {
    call(&mut env, std::ptr::null_mut(), |env| {
        let model = model_mut(handle)?;
        let labels = model.session.model().labels();
        let array =
            env.new_object_array(labels.len() as i32, "java/lang/String", JObject::null())?;
        for (i, label) in labels.iter().enumerate() {
            let text = env.new_string(label.to_string_lossy())?;
            env.set_object_array_element(&array, i as i32, text)?;
        }
        Ok(array.into_raw())
    })
}

/// `static native float[] nativePreprocess(long handle, float[] raw)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativePreprocess<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    raw: JFloatArray<'local>,
) -> jni::sys::jfloatArray {
    call(&mut env, std::ptr::null_mut(), |env| {
        let model = model_mut(handle)?;
        let mut values = floats(env, &raw)?;
        model.session.model().preprocess(&mut values)?;
        float_array(env, &values)
    })
}

/// `static native float[] nativeRun(long handle, float[] input)`: the frozen model's output 0.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeRun<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    input: JFloatArray<'local>,
) -> jni::sys::jfloatArray {
    call(&mut env, std::ptr::null_mut(), |env| {
        let model = model_mut(handle)?;
        let values = floats(env, &input)?;
        model.session.set_input(0, &values)?;
        model.session.invoke()?;
        let mut out = vec![0f32; output_len(model)?];
        model.session.output(0, &mut out)?;
        float_array(env, &out)
    })
}

/// `static native void nativeStartFineTuning(long handle, int layers, float learningRate)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeStartFineTuning<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    layers: jint,
    learning_rate: jfloat,
) {
    call(&mut env, (), |_| {
        let model = model_mut(handle)?;
        let layers = usize::try_from(layers).map_err(|_| argument("layers is negative"))?;
        let config = TrainConfig {
            layers,
            loss: Loss::CrossEntropy,
            optimizer: Optimizer::adam(learning_rate),
            clip_norm: None,
            accumulate: 1,
        };
        let shared = model.session.model().clone();
        model.trainer = Some(TrainerSession::new(shared, config)?);
        Ok(())
    })
}

fn trainer(model: &mut JavaModel) -> Result<&mut TrainerSession, JavaFailure> {
    model
        .trainer
        .as_mut()
        .ok_or_else(|| argument("fine-tuning was not started (call startFineTuning)").into())
}

/// `static native float nativeFineTune(long handle, float[] input, int label)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeFineTune<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    input: JFloatArray<'local>,
    label: jint,
) -> jfloat {
    call(&mut env, f32::NAN, |env| {
        let values = floats(env, &input)?;
        let label = usize::try_from(label).map_err(|_| argument("label is negative"))?;
        Ok(trainer(model_mut(handle)?)?.step_class(&values, label)?)
    })
}

/// `static native float[] nativeFineTunedLogits(long handle, float[] input)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeFineTunedLogits<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    input: JFloatArray<'local>,
) -> jni::sys::jfloatArray {
    call(&mut env, std::ptr::null_mut(), |env| {
        let values = floats(env, &input)?;
        let logits = trainer(model_mut(handle)?)?.predict(&values)?.to_vec();
        float_array(env, &logits)
    })
}

fn path_of(env: &mut JNIEnv<'_>, path: &JString<'_>) -> Result<String, JavaFailure> {
    if path.is_null() {
        return Err(argument("the path is null").into());
    }
    Ok(env.get_string(path)?.into())
}

/// `static native void nativeSaveCheckpoint(long handle, String path)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeSaveCheckpoint<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    path: JString<'local>,
) {
    call(&mut env, (), |env| {
        let path = path_of(env, &path)?;
        Ok(trainer(model_mut(handle)?)?.save(Path::new(&path))?)
    })
}

/// `static native boolean nativeRestoreCheckpoint(long handle, String path)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeRestoreCheckpoint<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    path: JString<'local>,
) -> jboolean {
    call(&mut env, 0, |env| {
        let path = path_of(env, &path)?;
        let found = trainer(model_mut(handle)?)?.restore(Path::new(&path))?;
        Ok(jboolean::from(found))
    })
}

/// `static native int nativeUpdates(long handle)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_dev_loam_LoamModel_nativeUpdates<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jint {
    call(&mut env, 0, |_| {
        Ok(trainer(model_mut(handle)?)?.updates() as jint)
    })
}
