// Using loam from Swift through the C header (include/loam.h). Add libloam_mobile.a for your
// targets (see ../README.md) to the Xcode project, put `#include "loam.h"` in the bridging
// header, and bundle the .loam file as a resource.
//
// Threads: a LoamClassifier owns one interpreter; use it from one thread (or a serial queue)
// at a time. The model handle inside may be shared: make more interpreters from it for
// parallel queues.

import Foundation

struct LoamError: Error, CustomStringConvertible {
    let status: LoamStatus
    let message: String
    var description: String { "loam: \(message)" }

    /// Throws with the thread's last loam message unless `status` is LOAM_STATUS_OK.
    static func check(_ status: LoamStatus) throws {
        guard status != LOAM_STATUS_OK else { return }
        throw LoamError(status: status, message: String(cString: loam_last_error_message()))
    }
}

final class LoamClassifier {
    private var model: OpaquePointer?
    private var interpreter: OpaquePointer?
    private var trainer: OpaquePointer?
    let inputSize: Int
    let labels: [String]

    init(modelURL: URL) throws {
        let bytes = try Data(contentsOf: modelURL)
        try bytes.withUnsafeBytes { raw in
            try LoamError.check(loam_model_load(
                raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &model))
        }
        var info = LoamTensorInfo()
        try LoamError.check(loam_model_input_info(model, 0, &info))
        inputSize = info.elements
        labels = (0..<loam_model_label_count(model)).map {
            String(cString: loam_model_label(model, $0))
        }
        try LoamError.check(loam_interpreter_new(model, &interpreter))
    }

    deinit {
        loam_trainer_free(trainer)
        loam_interpreter_free(interpreter)
        loam_model_free(model)
    }

    /// The model's outputs for raw feature values (preprocessed as in training).
    func run(_ raw: [Float]) throws -> [Float] {
        var input = raw
        try LoamError.check(loam_model_preprocess(model, &input, input.count, nil))
        try LoamError.check(loam_interpreter_set_input(interpreter, 0, input, input.count))
        try LoamError.check(loam_interpreter_invoke(interpreter))
        var info = LoamTensorInfo()
        try LoamError.check(loam_model_output_info(model, 0, &info))
        var output = [Float](repeating: 0, count: info.elements)
        try LoamError.check(loam_interpreter_output(interpreter, 0, &output, output.count))
        return output
    }

    /// The most likely label.
    func classify(_ raw: [Float]) throws -> String {
        let output = try run(raw)
        let best = output.indices.max { output[$0] < output[$1] } ?? 0
        return best < labels.count ? labels[best] : String(best)
    }

    /// Learns from one example the user labelled; returns the loss before the update.
    func learn(_ raw: [Float], label: Int) throws -> Float {
        try startTrainerIfNeeded()
        var input = raw
        try LoamError.check(loam_model_preprocess(model, &input, input.count, nil))
        var loss: Float = 0
        try LoamError.check(loam_trainer_step(trainer, input, input.count, label, &loss))
        return loss
    }

    /// Saves what was learned, atomically, e.g. to Application Support.
    func save(to url: URL) throws {
        try startTrainerIfNeeded()
        try LoamError.check(loam_trainer_save(trainer, url.path))
    }

    /// Restores what was learned; false if nothing was saved yet.
    func restore(from url: URL) throws -> Bool {
        try startTrainerIfNeeded()
        var found = false
        try LoamError.check(loam_trainer_restore(trainer, url.path, &found))
        return found
    }

    /// Fine-tunes the last layer with Adam at 0.01 (see LoamTrainConfig for the options).
    private func startTrainerIfNeeded() throws {
        guard trainer == nil else { return }
        var config = loam_train_config_default()
        config.learning_rate = 0.01
        try LoamError.check(loam_trainer_new(model, &config, &trainer))
    }
}
