package dev.loam;

/** A loam call failed: the message names the tensor, field or file, and why. */
public class LoamException extends Exception {
    private static final long serialVersionUID = 1L;

    /** An exception with loam's message. */
    public LoamException(String message) {
        super(message);
    }
}
