/*
 * The C API exercised the way an app uses it: load the bundled digits model, run every
 * sample of the digits set (read as CSV from stdin: 64 pixels then the label), from the main
 * thread and from two more at once, fine-tune on a shifted "user" distribution, save and
 * restore checkpoints, and check that bad calls fail with a message.
 *
 *   gzip -dc models/digits/data/digits.csv.gz | ./loam_test models/digits/model.loam DIR
 *
 * Prints one "ok"/"not ok" line per check, the digest of every int8 output byte (equal on
 * every ISA: `cargo xtask test` compares x86_64 with aarch64), and "result: P passed, F
 * failed"; exits non-zero if any check failed.
 */
#include "loam.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PIXELS 64
#define CLASSES 10
#define MAX_ROWS 2000

static int passed, failed;

static void check(int ok, const char *name) {
    if (ok) {
        passed++;
        printf("ok - %s\n", name);
    } else {
        failed++;
        printf("not ok - %s (last error: %s)\n", name, loam_last_error_message());
    }
}

static float rows[MAX_ROWS][PIXELS];
static int labels[MAX_ROWS];
static int row_count;

static int read_rows(void) {
    char line[4096];
    while (row_count < MAX_ROWS && fgets(line, sizeof line, stdin)) {
        char *p = line;
        int i;
        for (i = 0; i <= PIXELS; i++) {
            char *end;
            double v = strtod(p, &end);
            if (end == p) break;
            if (i < PIXELS) rows[row_count][i] = (float)v;
            else labels[row_count] = (int)v;
            p = end;
            while (*p == ',' || *p == ' ') p++;
        }
        if (i == PIXELS + 1) row_count++;
    }
    return row_count;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = malloc((size_t)n);
    if (bytes && fread(bytes, 1, (size_t)n, f) != (size_t)n) {
        free(bytes);
        bytes = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return bytes;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* A preprocessed copy of row `r`, inverted (16 - x) for the shifted user distribution. */
static void prepared(const LoamModel *model, int r, int inverted, float *out) {
    for (int i = 0; i < PIXELS; i++) out[i] = inverted ? 16.0f - rows[r][i] : rows[r][i];
    loam_model_preprocess(model, out, PIXELS, NULL);
}

/* Classifies rows [from, to) with `interpreter`; writes predictions, returns the FNV-1a digest
 * of the raw int8 outputs, or 0 on failure. */
static unsigned long long classify(const LoamModel *model, LoamInterpreter *interpreter, int from,
                                   int to, int *predictions) {
    unsigned long long digest = 1469598103934665603ULL;
    for (int r = from; r < to; r++) {
        float input[PIXELS], output[CLASSES];
        const void *raw;
        size_t raw_len;
        prepared(model, r, 0, input);
        if (loam_interpreter_set_input(interpreter, 0, input, PIXELS) != LOAM_STATUS_OK ||
            loam_interpreter_invoke(interpreter) != LOAM_STATUS_OK ||
            loam_interpreter_output(interpreter, 0, output, CLASSES) != LOAM_STATUS_OK ||
            loam_interpreter_output_data(interpreter, 0, &raw, &raw_len) != LOAM_STATUS_OK)
            return 0;
        predictions[r] = argmax(output, CLASSES);
        for (size_t i = 0; i < raw_len; i++) {
            digest ^= ((const unsigned char *)raw)[i];
            digest *= 1099511628211ULL;
        }
    }
    return digest;
}

struct worker {
    const LoamModel *model;
    int predictions[MAX_ROWS];
    unsigned long long digest;
};

static void *work(void *arg) {
    struct worker *w = arg;
    LoamInterpreter *interpreter = NULL;
    if (loam_interpreter_new(w->model, &interpreter) == LOAM_STATUS_OK) {
        w->digest = classify(w->model, interpreter, 0, row_count, w->predictions);
        loam_interpreter_free(interpreter);
    }
    return NULL;
}

static int fine_tuned_correct(LoamTrainer *trainer, const LoamModel *model, int from, int to) {
    int correct = 0;
    for (int r = from; r < to; r++) {
        float input[PIXELS], logits[CLASSES];
        prepared(model, r, 1, input);
        if (loam_trainer_predict(trainer, input, PIXELS, logits, CLASSES) != LOAM_STATUS_OK)
            return -1;
        correct += argmax(logits, CLASSES) == labels[r];
    }
    return correct;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.loam SCRATCH_DIR < digits.csv\n", argv[0]);
        return 2;
    }
    printf("loam %s\n", loam_version());
    check(read_rows() > 1000, "read the digits from stdin");

    /* Loading: garbage is refused with a message; the real model loads. */
    LoamModel *model = NULL;
    const unsigned char garbage[64] = {1, 2, 3};
    check(loam_model_load(garbage, sizeof garbage, &model) == LOAM_STATUS_INVALID_MODEL &&
              model == NULL && strstr(loam_last_error_message(), "invalid model") != NULL,
          "garbage bytes are refused as an invalid model");
    printf("  message: %s\n", loam_last_error_message());
    size_t len = 0;
    unsigned char *bytes = read_file(argv[1], &len);
    check(bytes != NULL, "read the model file");
    if (!bytes) return 1;
    check(loam_model_load(bytes, len, &model) == LOAM_STATUS_OK, "load the model");
    free(bytes); /* loading copied them */
    if (!model) return 1;

    LoamTensorInfo in, out;
    check(loam_model_input_count(model) == 1 && loam_model_output_count(model) == 1,
          "one input and one output");
    check(loam_model_input_info(model, 0, &in) == LOAM_STATUS_OK && in.rank == 4 &&
              in.dims[1] == 8 && in.dims[2] == 8 && in.elements == PIXELS &&
              in.dtype == LOAM_DTYPE_I8 && in.scale > 0.0f,
          "input 0 is int8 [1, 8, 8, 1] with a scale");
    check(loam_model_output_info(model, 0, &out) == LOAM_STATUS_OK && out.elements == CLASSES,
          "output 0 has 10 classes");
    check(loam_model_input_info(model, 1, &in) == LOAM_STATUS_INVALID_ARGUMENT &&
              strstr(loam_last_error_message(), "1 inputs") != NULL,
          "input 1 does not exist, and the message says how many there are");
    check(loam_model_label_count(model) == CLASSES && loam_model_label(model, 3) != NULL &&
              strcmp(loam_model_label(model, 3), "3") == 0 && loam_model_label(model, 10) == NULL,
          "labels");
    printf("  arena %zu bytes\n", loam_model_arena_size(model));

    /* Inference over every sample. */
    LoamInterpreter *interpreter = NULL;
    check(loam_interpreter_new(model, &interpreter) == LOAM_STATUS_OK, "make an interpreter");
    static int predictions[MAX_ROWS];
    unsigned long long digest = classify(model, interpreter, 0, row_count, predictions);
    int correct = 0;
    for (int r = 0; r < row_count; r++) correct += predictions[r] == labels[r];
    check(digest != 0, "classify every sample");
    check(correct * 100 >= row_count * 97, "at least 97% right (the model card says 97.77% on its test split)");
    printf("  accuracy %d/%d\n", correct, row_count);
    printf("digest: %016llx\n", digest);

    float short_input[3] = {0};
    check(loam_interpreter_set_input(interpreter, 0, short_input, 3) ==
                  LOAM_STATUS_INVALID_ARGUMENT &&
              strstr(loam_last_error_message(), "64 elements") != NULL,
          "a short input is refused, naming the length wanted");
    check(loam_interpreter_invoke(NULL) == LOAM_STATUS_INVALID_ARGUMENT &&
              strstr(loam_last_error_message(), "NULL") != NULL,
          "a NULL interpreter is refused");

    /* Threads: one model, an interpreter per thread, the same results. */
    static struct worker workers[2];
    pthread_t threads[2];
    for (int t = 0; t < 2; t++) {
        workers[t].model = model;
        pthread_create(&threads[t], NULL, work, &workers[t]);
    }
    for (int t = 0; t < 2; t++) pthread_join(threads[t], NULL);
    check(workers[0].digest == digest && workers[1].digest == digest &&
              memcmp(workers[0].predictions, predictions, sizeof(int) * (size_t)row_count) == 0,
          "two threads sharing the model compute the same bytes");

    /* Fine-tuning on inverted digits (a user whose pen draws light on dark): the last layer
     * learns from the first 600 samples and is scored on 400 it never saw. */
    LoamTrainConfig config = loam_train_config_default();
    config.learning_rate = 0.01f;
    LoamTrainer *trainer = NULL;
    check(loam_trainer_new(model, &config, &trainer) == LOAM_STATUS_OK, "make a trainer");
    int before = fine_tuned_correct(trainer, model, 1000, 1400);
    float first_loss = 0, last_loss = 0;
    int step_failures = 0;
    for (int epoch = 0; epoch < 3; epoch++) {
        float sum = 0;
        for (int r = 0; r < 600; r++) {
            float input[PIXELS], loss = 0;
            prepared(model, r, 1, input);
            step_failures += loam_trainer_step(trainer, input, PIXELS, (size_t)labels[r], &loss) !=
                             LOAM_STATUS_OK;
            sum += loss;
        }
        if (epoch == 0) first_loss = sum / 600;
        last_loss = sum / 600;
    }
    int after = fine_tuned_correct(trainer, model, 1000, 1400);
    printf("  inverted digits, 400 unseen: %d right before fine-tuning, %d after; loss %.3f -> %.3f\n",
           before, after, first_loss, last_loss);
    check(step_failures == 0 && loam_trainer_updates(trainer) == 1800, "1800 training steps");
    check(last_loss < first_loss && after > before + 40, "fine-tuning learns the shifted digits");
    float input[PIXELS];
    prepared(model, 0, 1, input);
    check(loam_trainer_step(trainer, input, PIXELS, 10, NULL) == LOAM_STATUS_TRAINING &&
              strstr(loam_last_error_message(), "target 10") != NULL,
          "a label past the classes is refused");

    /* Checkpoints: to a file (atomic) and to memory, restored bit for bit. */
    char path[1024], missing[1024];
    snprintf(path, sizeof path, "%s/digits.ckpt", argv[2]);
    snprintf(missing, sizeof missing, "%s/none.ckpt", argv[2]);
    check(loam_trainer_save(trainer, path) == LOAM_STATUS_OK, "save a checkpoint file");
    float expected[CLASSES], got[CLASSES];
    loam_trainer_predict(trainer, input, PIXELS, expected, CLASSES);
    LoamTrainer *restored = NULL;
    bool found = false;
    check(loam_trainer_new(model, &config, &restored) == LOAM_STATUS_OK &&
              loam_trainer_restore(restored, missing, &found) == LOAM_STATUS_OK && !found,
          "no checkpoint file yet is not an error");
    check(loam_trainer_restore(restored, path, &found) == LOAM_STATUS_OK && found &&
              loam_trainer_updates(restored) == 1800,
          "restore the checkpoint file");
    loam_trainer_predict(restored, input, PIXELS, got, CLASSES);
    check(memcmp(expected, got, sizeof got) == 0, "the restored trainer predicts the same bits");

    size_t size = loam_trainer_checkpoint_size(trainer);
    unsigned char *image = malloc(size);
    check(loam_trainer_checkpoint(trainer, image, size - 1) == LOAM_STATUS_INVALID_ARGUMENT,
          "a checkpoint buffer one byte short is refused");
    check(loam_trainer_checkpoint(trainer, image, size) == LOAM_STATUS_OK,
          "write a checkpoint to memory");
    loam_trainer_reset(restored);
    check(loam_trainer_restore_checkpoint(restored, image, size) == LOAM_STATUS_OK,
          "restore it from memory");
    loam_trainer_predict(restored, input, PIXELS, got, CLASSES);
    check(memcmp(expected, got, sizeof got) == 0, "the same bits again");
    image[size - 1] ^= 1;
    check(loam_trainer_restore_checkpoint(restored, image, size) == LOAM_STATUS_CHECKPOINT &&
              strstr(loam_last_error_message(), "checkpoint") != NULL,
          "a flipped bit is caught by the CRC");
    free(image);
    loam_trainer_free(restored);
    loam_trainer_free(trainer);

    /* The interpreter holds its own reference to the model. */
    float row0[PIXELS], before_free[CLASSES], after_free[CLASSES];
    prepared(model, 0, 0, row0);
    loam_interpreter_set_input(interpreter, 0, row0, PIXELS);
    loam_interpreter_invoke(interpreter);
    loam_interpreter_output(interpreter, 0, before_free, CLASSES);
    loam_model_free(model);
    check(loam_interpreter_set_input(interpreter, 0, row0, PIXELS) == LOAM_STATUS_OK &&
              loam_interpreter_invoke(interpreter) == LOAM_STATUS_OK &&
              loam_interpreter_output(interpreter, 0, after_free, CLASSES) == LOAM_STATUS_OK &&
              memcmp(before_free, after_free, sizeof after_free) == 0,
          "an interpreter outlives its freed model handle");
    loam_interpreter_free(interpreter);

    printf("result: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
