import dev.loam.LoamException;
import dev.loam.LoamModel;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.zip.GZIPInputStream;

/**
 * The Java binding used the way an Android app uses it, on the host JVM: load the bundled
 * digits model, classify the digits set, fine-tune on inverted digits, save and restore a
 * checkpoint, and get exceptions with loam's messages for bad calls.
 *
 * <pre>java -Djava.library.path=DIR -cp CLASSES LoamModelTest MODEL.loam DIGITS.csv.gz SCRATCH</pre>
 *
 * Prints one "ok"/"not ok" line per check and "result: P passed, F failed"; exits 1 on a
 * failure. (JUnit is not used: the test must run where only the JDK is installed.)
 */
public final class LoamModelTest {
    private static int passed;
    private static int failed;

    private static void check(boolean ok, String name) {
        if (ok) {
            passed++;
            System.out.println("ok - " + name);
        } else {
            failed++;
            System.out.println("not ok - " + name);
        }
    }

    private interface Call {
        void run() throws Exception;
    }

    /** Checks that {@code call} throws a LoamException whose message contains {@code text}. */
    private static void throwsLoam(Call call, String text, String name) {
        try {
            call.run();
            check(false, name + " (nothing was thrown)");
        } catch (LoamException e) {
            System.out.println("  message: " + e.getMessage());
            check(e.getMessage() != null && e.getMessage().contains(text), name);
        } catch (Exception e) {
            check(false, name + " (threw " + e + ")");
        }
    }

    private static final List<float[]> PIXELS = new ArrayList<>();
    private static final List<Integer> LABELS = new ArrayList<>();

    private static void readDigits(Path csv) throws Exception {
        try (BufferedReader in = new BufferedReader(new InputStreamReader(
                new GZIPInputStream(Files.newInputStream(csv)), StandardCharsets.US_ASCII))) {
            for (String line; (line = in.readLine()) != null; ) {
                String[] cells = line.split(",");
                if (cells.length != 65) {
                    continue;
                }
                float[] row = new float[64];
                for (int i = 0; i < 64; i++) {
                    row[i] = Float.parseFloat(cells[i]);
                }
                PIXELS.add(row);
                LABELS.add(Integer.parseInt(cells[64].trim()));
            }
        }
    }

    private static float[] inverted(float[] row) {
        float[] out = new float[row.length];
        for (int i = 0; i < row.length; i++) {
            out[i] = 16f - row[i];
        }
        return out;
    }

    private static int fineTunedCorrect(LoamModel model, int from, int to) throws LoamException {
        int correct = 0;
        for (int r = from; r < to; r++) {
            float[] input = model.preprocess(inverted(PIXELS.get(r)));
            correct += model.classifyFineTuned(input) == LABELS.get(r) ? 1 : 0;
        }
        return correct;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: LoamModelTest MODEL.loam DIGITS.csv.gz SCRATCH_DIR");
            System.exit(2);
        }
        readDigits(Path.of(args[1]));
        check(PIXELS.size() > 1000, "read " + PIXELS.size() + " digits");

        throwsLoam(() -> LoamModel.load(new byte[64]), "invalid model",
                "garbage bytes throw a LoamException naming the problem");

        try (LoamModel model = LoamModel.load(Path.of(args[0]))) {
            check(Arrays.equals(model.inputShape(), new int[] {1, 8, 8, 1}),
                    "input shape " + Arrays.toString(model.inputShape()));
            check(model.inputSize() == 64 && model.outputSize() == 10, "sizes 64 and 10");
            String[] labels = model.labels();
            check(labels.length == 10 && labels[7].equals("7"), "labels " + Arrays.toString(labels));

            int correct = 0;
            for (int r = 0; r < PIXELS.size(); r++) {
                float[] output = model.run(model.preprocess(PIXELS.get(r)));
                int best = 0;
                for (int i = 1; i < output.length; i++) {
                    if (output[i] > output[best]) {
                        best = i;
                    }
                }
                correct += best == LABELS.get(r) ? 1 : 0;
            }
            System.out.println("  accuracy " + correct + "/" + PIXELS.size());
            check(correct * 100 >= PIXELS.size() * 97, "at least 97% of the digits right");

            throwsLoam(() -> model.run(new float[3]), "64 elements",
                    "a short input throws, naming the length wanted");
            throwsLoam(() -> model.fineTune(new float[64], 1), "startFineTuning",
                    "fine-tuning before starting it throws");

            model.startFineTuning(1, 0.01f);
            int before = fineTunedCorrect(model, 1000, 1400);
            float firstLoss = 0;
            float lastLoss = 0;
            for (int epoch = 0; epoch < 3; epoch++) {
                float sum = 0;
                for (int r = 0; r < 600; r++) {
                    sum += model.fineTune(model.preprocess(inverted(PIXELS.get(r))), LABELS.get(r));
                }
                if (epoch == 0) {
                    firstLoss = sum / 600;
                }
                lastLoss = sum / 600;
            }
            int after = fineTunedCorrect(model, 1000, 1400);
            System.out.printf("  inverted digits, 400 unseen: %d right before fine-tuning, %d after;"
                    + " loss %.3f -> %.3f%n", before, after, firstLoss, lastLoss);
            check(model.updates() == 1800, "1800 updates");
            check(lastLoss < firstLoss && after > before + 40, "fine-tuning learns the shifted digits");
            throwsLoam(() -> model.fineTune(new float[64], 10), "target 10",
                    "a label past the classes throws");

            String checkpoint = Path.of(args[2], "java.ckpt").toString();
            model.saveCheckpoint(checkpoint);
            float[] probe = model.preprocess(inverted(PIXELS.get(1500)));
            float[] expected = model.fineTunedLogits(probe);
            model.startFineTuning(1, 0.01f);
            check(!Arrays.equals(model.fineTunedLogits(probe), expected) && model.updates() == 0,
                    "starting over forgets what was learned");
            check(!model.restoreCheckpoint(Path.of(args[2], "none.ckpt").toString()),
                    "a missing checkpoint file is not an error");
            check(model.restoreCheckpoint(checkpoint) && model.updates() == 1800,
                    "restore the checkpoint");
            check(Arrays.equals(model.fineTunedLogits(probe), expected),
                    "the restored model predicts the same bits");
            Files.write(Path.of(checkpoint), new byte[] {1, 2, 3});
            throwsLoam(() -> model.restoreCheckpoint(checkpoint), "java.ckpt",
                    "a damaged checkpoint throws, naming the file");

        }
        LoamModel closed = LoamModel.load(Path.of(args[0]));
        closed.close();
        closed.close();
        throwsLoam(() -> closed.run(new float[64]), "closed", "a closed model throws");

        System.out.println("result: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
