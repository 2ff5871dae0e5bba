package dev.loam;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A .loam model running in this process through the loam native library
 * ({@code libloam_mobile.so}, built from targets/mobile with the {@code jni} feature).
 *
 * <p>Each instance owns one interpreter (and, once {@link #startFineTuning} is called, one
 * trainer). Its methods are synchronized, so an instance may be shared between threads, but
 * calls on one instance run one at a time: give each busy thread its own instance for
 * parallelism. Call {@link #close} (or use try-with-resources) to free the native memory.
 */
public final class LoamModel implements AutoCloseable {
    static {
        System.loadLibrary("loam_mobile");
    }

    private long handle;

    private LoamModel(long handle) {
        this.handle = handle;
    }

    /** Loads a model from the bytes of a .loam file (copied; validated completely). */
    public static LoamModel load(byte[] bytes) throws LoamException {
        return new LoamModel(nativeLoad(bytes));
    }

    /** Loads a model from a .loam file, e.g. one an Android app copied out of its assets. */
    public static LoamModel load(Path path) throws LoamException, IOException {
        return load(Files.readAllBytes(path));
    }

    private long live() throws LoamException {
        if (handle == 0) {
            throw new LoamException("the model is closed");
        }
        return handle;
    }

    /** The dimensions of input 0 (NHWC for images). */
    public synchronized int[] inputShape() throws LoamException {
        return nativeInputShape(live());
    }

    /** The number of values input 0 takes. */
    public synchronized int inputSize() throws LoamException {
        int size = 1;
        for (int d : nativeInputShape(live())) {
            size *= d;
        }
        return size;
    }

    /** The number of values output 0 gives. */
    public synchronized int outputSize() throws LoamException {
        return nativeOutputSize(live());
    }

    /** The class labels stored in the model (empty if it has none). */
    public synchronized String[] labels() throws LoamException {
        return nativeLabels(live());
    }

    /**
     * Applies the preprocessing stored in the model (fitted by {@code loam train}) to raw input
     * values, returning a new array; returns a copy when the model stores none.
     */
    public synchronized float[] preprocess(float[] raw) throws LoamException {
        return nativePreprocess(live(), raw);
    }

    /**
     * Runs the model as it was exported: output 0 as real numbers (dequantized for int8
     * models). {@code input} holds input 0's values, already preprocessed.
     */
    public synchronized float[] run(float[] input) throws LoamException {
        return nativeRun(live(), input);
    }

    /** The index of the largest output of {@link #run}. */
    public int classify(float[] input) throws LoamException {
        return argmax(run(input));
    }

    /**
     * Starts fine-tuning the model's last {@code layers} fully-connected layers in memory with
     * Adam and cross-entropy ({@code 0}: what the model's stored training plan says); the model
     * file is not changed. Starts over if already started.
     */
    public synchronized void startFineTuning(int layers, float learningRate) throws LoamException {
        nativeStartFineTuning(live(), layers, learningRate);
    }

    /** Trains on one sample of class {@code label}; returns the loss before the update. */
    public synchronized float fineTune(float[] input, int label) throws LoamException {
        return nativeFineTune(live(), input, label);
    }

    /** The fine-tuned model's outputs (logits, before any softmax) for one input. */
    public synchronized float[] fineTunedLogits(float[] input) throws LoamException {
        return nativeFineTunedLogits(live(), input);
    }

    /** The class the fine-tuned model predicts. */
    public int classifyFineTuned(float[] input) throws LoamException {
        return argmax(fineTunedLogits(input));
    }

    /** Optimizer updates applied since fine-tuning started (or in the restored checkpoint). */
    public synchronized int updates() throws LoamException {
        return nativeUpdates(live());
    }

    /**
     * Saves what fine-tuning learned to {@code path} atomically: if the app is killed during
     * the save, the previous checkpoint is still there.
     */
    public synchronized void saveCheckpoint(String path) throws LoamException {
        nativeSaveCheckpoint(live(), path);
    }

    /**
     * Restores a checkpoint of this model; returns false when the file does not exist. A
     * damaged file or one of another model throws and leaves the trainer as it was.
     */
    public synchronized boolean restoreCheckpoint(String path) throws LoamException {
        return nativeRestoreCheckpoint(live(), path);
    }

    /** Frees the native memory; the instance cannot be used afterwards. Idempotent. */
    @Override
    public synchronized void close() {
        nativeFree(handle);
        handle = 0;
    }

    private static int argmax(float[] values) {
        int best = 0;
        for (int i = 1; i < values.length; i++) {
            if (values[i] > values[best]) {
                best = i;
            }
        }
        return best;
    }

    private static native long nativeLoad(byte[] bytes) throws LoamException;

    private static native void nativeFree(long handle);

    private static native int[] nativeInputShape(long handle) throws LoamException;

    private static native int nativeOutputSize(long handle) throws LoamException;

    private static native String[] nativeLabels(long handle) throws LoamException;

    private static native float[] nativePreprocess(long handle, float[] raw) throws LoamException;

    private static native float[] nativeRun(long handle, float[] input) throws LoamException;

    private static native void nativeStartFineTuning(long handle, int layers, float learningRate)
            throws LoamException;

    private static native float nativeFineTune(long handle, float[] input, int label)
            throws LoamException;

    private static native float[] nativeFineTunedLogits(long handle, float[] input)
            throws LoamException;

    private static native int nativeUpdates(long handle) throws LoamException;

    private static native void nativeSaveCheckpoint(long handle, String path) throws LoamException;

    private static native boolean nativeRestoreCheckpoint(long handle, String path)
            throws LoamException;
}
