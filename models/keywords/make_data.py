#!/usr/bin/env python3
"""Synthesises data/, the bundled keyword-spotting data set: spoken words in the layout of
Google's Speech Commands, made here with the espeak-ng speech synthesizer.

    python3 make_data.py           # writes data/ (replacing it), prints counts and CRC-32s
    python3 make_data.py --check   # regenerates into a temporary folder and compares

What it makes (16 kHz, mono, 16-bit PCM WAV clips, one folder per class):

    data/yes/ no/ up/ down/ left/ right/ on/ off/ stop/ go/   the 10 keywords
    data/_unknown_/    other short words: bed bird cat dog house tree wow happy zero one
                       two three four five marvin
    data/_silence_/    background noise only, 1.0 s each
    data/_background_noise_/   6 noise recordings of 6.0 s to mix under clips (not a class)
    data/validation_list.txt, data/testing_list.txt   the split, Speech Commands' format
    data/voices.csv    every speaker: its espeak-ng voice, speed, pitch, part, unknown words
    data/clips.csv     every clip: word, speed used, noise, SNR, hum, peak level

Clips are named `<speaker>_nohash_<n>.wav` as in Speech Commands. A "voice" (v01..v26) is
an English accent of espeak-ng (en-us, en-us-nyc, en (British), en-gb-scotland,
en-gb-x-rp, en-gb-x-gbclan, en-gb-x-gbcwmd, en-029) with a variant: a female one (f1-f5 and
some named ones), a male formant one (m1-m8) or one of the Klatt synthesizers (klatt to
klatt6, male). The first 20 voices (v01..v20) are 10 female, 6 male formant and 4 Klatt,
each accent used 2 or 3 times; the 6 variants they leave unused (2 of each kind) become
v21..v26, for training only. Every voice is distinct (check_voices has each say a probe
sentence, as espeak-ng silently substitutes for a voice it lacks). Each voice has "speaker
settings" (v07s1, v07s2, ...), alternately slower (120-159 words a minute) and faster
(160-200), each with its own pitch (espeak's -p, 25-75): 2 for a held-out voice, 4 for a
training voice. Each setting says every keyword once (n = 0), two unknown words
(n = 0, 1; dealt from a shuffled deck so that every word appears about equally often) and
gets one silence clip.

How a clip is made: espeak-ng writes the word at 22050 Hz; the utterance is found (samples
above -45 dB of its peak), resampled to 16 kHz by FFT (band-limited: the spectrum is cut at
8 kHz with a raised-cosine roll-off from 7.0 to 7.8 kHz, on a zero-padded copy so nothing
wraps around) and cut to the utterance plus 40 ms either side. If that is longer than 1.0 s
the word is spoken again 10 words a minute faster until it fits (counted and printed; it
does not happen with the ranges above). Background noise is mixed in at an SNR drawn from
10-35 dB (against the utterance's own power): white, pink or brown (1/f^0, 1/f^1, 1/f^2
power above 20 Hz, equally often), in a quarter of clips with a mains hum (50 or 60 Hz and
5 harmonics) taking 30-90% of the noise power. Then the clip is scaled to a peak drawn from
-24 to -1 dBFS. Silence clips are the same kinds of noise, 1.0 s long, at an RMS level from
-65 to -20 dBFS (peaks kept at or below -1 dBFS). Nothing clips.

data/_background_noise_/ is the folder of that name in Speech Commands: long noise
recordings, not a class (it is in neither list nor clips.csv), that a loader mixes under
every clip: loam's (a stretch of one recording, picked per clip, at a gain drawn from
[data.audio] background_volume in loam.toml) and TensorFlow's Speech Commands input
pipeline (a random stretch of a random file at a volume drawn up to --background_volume)
alike. So the zero padding of a short clip never shows as digital silence, and the model
hears words over noise, as a device does. Its 6 files, 6.0 s each: white_noise, pink_noise
and brown_noise (1/f^0, 1/f^1, 1/f^2 as above); hum_50hz (50 Hz mains hum with 7 harmonics,
plus pink noise 15 dB below it); fan (brown and pink noise whose level wobbles slowly, with a
blade tone of 90-130 Hz and 2 harmonics 12 dB below it, like a fan or air conditioner); and
traffic (a non-stationary one: low-passed brown noise whose level drifts, with 5 passing
vehicles, each a burst of low-passed pink noise swelling and fading over 1-2 s). None is
speech, not even babble, so that nothing in it sounds like a word of _unknown_. Each is
scaled to an RMS of -20 dBFS, with its peak below -3 dBFS.

Split by voice, never by setting: 4 voices of the first 20 (all their settings) validate
and 4 test; the other 12 and v21..v26 train (18 voices, 72 settings, 936 clips against 104
validation and 104 test clips). The held-out voices are drawn (seeded) until each held-out group has 2 female
and 2 male voices, 4 different accents (American or Caribbean and British both among them),
a Klatt voice, and training keeps every accent; voices.csv says which voice went where.

Deterministic: the plan (voices, settings, split, unknown words) comes from one generator
seeded with SEED (the training-only additions from a second one seeded with SEED + 1 and
drawn after the split, so they leave the held-out voices and every other clip as they were), and each clip's noise and level from a generator seeded with SEED and the
clip's path (each background recording's from SEED and its own path), all built on
random.random() alone (whose sequence Python keeps stable across versions), so a change to
one clip touches no other. espeak-ng runs with a fixed
environment (LC_ALL=C, PATH=/usr/bin:/bin and nothing else: no ESPEAK_DATA_PATH, no HOME),
one process per word, and is then deterministic for a given version and its data (this was
made with espeak-ng 1.51; another version says its words differently and --check will show
it). numpy does the signal processing; a last-bit
difference in another build's FFT or sin would have to straddle a rounding boundary of the
16-bit samples to show, which --check would also tell. WAV headers carry no dates.

The data are written to a hidden folder beside data/ and renamed into place (an old data/
is renamed away first and deleted afterwards), so an interrupted run leaves the old data.

Licence: espeak-ng is GPL-3.0-or-later software, used here as a program; the audio it synthesizes is
this script's output, not a copy of espeak-ng, and is not covered by its licence. The data
set is made here and distributed with loam under the project's licence, MIT OR Apache-2.0.

Needs: Python 3.9+, numpy, espeak-ng on PATH (Debian: apt-get install espeak-ng). It takes
about 30 s on two cores (espeak-ng's 1100 runs are most of it), and --check as long.
"""

import argparse
import concurrent.futures
import filecmp
import hashlib
import io
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
import zlib
from pathlib import Path

import numpy as np

SEED = 20250811
ESPEAK_VERSION = "1.51"
RATE = 16000
ESPEAK_RATE = 22050
# 22050 Hz to 16000 Hz is 441 samples in to 320 out.
UP, DOWN = 320, 441

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = (
    "bed", "bird", "cat", "dog", "house", "tree", "wow", "happy", "zero",
    "one", "two", "three", "four", "five", "marvin",
)  # fmt: skip
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
BACKGROUND = "_background_noise_"

# "en" is espeak-ng's British English (gmw/en). Not "en-gb": espeak-ng 1.51 finds that name
# through a language alias and then drops the variant, so en-gb+f1 and en-gb+m3 are the same
# male voice (check_voices catches such things).
ACCENTS = (
    "en-us", "en-us-nyc", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-029",
)  # fmt: skip
AMERICAS = ("en-us", "en-us-nyc", "en-029")
FEMALE = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty",
          "linda", "steph")  # fmt: skip
MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8")
KLATT = ("klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6")
VOICES_FEMALE = 10
VOICES_MALE = 6
VOICES_KLATT = 4
SETTINGS = 2
TRAIN_SETTINGS = 4  # settings of every training voice (held-out voices keep SETTINGS)
UNKNOWN_PER_SETTING = 2
HELD_OUT = 4  # voices in validation, and again in testing

SLOW = (120, 159)  # words a minute, the first setting of a voice draws from one of these
FAST = (160, 200)
PITCH = (25, 75)
SPEED_STEP = 10  # how much faster a word is said again when it does not fit in 1 s

TRIM_DB = -45.0  # the utterance: samples above this, relative to its peak
MARGIN = RATE * 40 // 1000
MAX_SAMPLES = RATE
SNR_DB = (10.0, 35.0)
PEAK_DBFS = (-24.0, -1.0)
SILENCE_RMS_DBFS = (-65.0, -20.0)
CEILING_DBFS = -1.0
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # the exponent of the power spectrum
HUM_CHANCE = 0.25
BACKGROUND_SAMPLES = 6 * RATE
BACKGROUND_RMS_DBFS = -20.0
BACKGROUND_PEAK_DBFS = -3.0  # every recording's peak stays below this

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
FULL_SCALE = 32768.0


class Rng:
    """Draws built on random.random() only."""

    def __init__(self, seed):
        self.r = random.Random(seed)

    def uniform(self, lo, hi):
        return lo + (hi - lo) * self.r.random()

    def chance(self, p):
        return self.r.random() < p

    def below(self, n):
        return min(int(self.r.random() * n), n - 1)

    def integer(self, lo, hi):
        """lo..hi inclusive."""
        return lo + self.below(hi - lo + 1)

    def choice(self, items):
        return items[self.below(len(items))]

    def shuffled(self, items):
        items = list(items)
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]
        return items

    def uniforms(self, n):
        r = self.r.random
        return np.array([r() for _ in range(n)], dtype=np.float64)

    def gaussians(self, n):
        """Box-Muller on pairs of uniforms; 1 - u is in (0, 1], so the log is finite."""
        m = (n + 1) // 2
        u = 1.0 - self.uniforms(m)
        v = self.uniforms(m)
        r = np.sqrt(-2.0 * np.log(u))
        return np.concatenate([r * np.cos(2.0 * np.pi * v), r * np.sin(2.0 * np.pi * v)])[:n]


def clip_rng(name):
    digest = hashlib.sha256(f"{SEED}/{name}".encode()).digest()
    return Rng(int.from_bytes(digest[:8], "little"))


# ---------------------------------------------------------------------------------------
# The plan: voices, their settings, the split, the unknown words.


def sex_of(variant):
    return "F" if variant in FEMALE else "M"


def synth_of(variant):
    return "klatt" if variant in KLATT else "formant"


def held_out_ok(group):
    accents = [v["accent"] for v in group]
    return (
        sum(v["sex"] == "F" for v in group) == HELD_OUT // 2
        and len(set(accents)) == len(group)
        and any(a in AMERICAS for a in accents)
        and any(a not in AMERICAS for a in accents)
        and any(v["synth"] == "klatt" for v in group)
    )


def plan():
    rng = Rng(SEED)
    variants = (
        rng.shuffled(FEMALE)[:VOICES_FEMALE]
        + rng.shuffled(MALE)[:VOICES_MALE]
        + rng.shuffled(KLATT)[:VOICES_KLATT]
    )
    variants = rng.shuffled(variants)
    order = rng.shuffled(ACCENTS)
    accents = [order[i % len(order)] for i in range(len(variants))]
    voices = []
    for i, (variant, accent) in enumerate(zip(variants, accents)):
        voice = {
            "id": f"v{i + 1:02d}",
            "accent": accent,
            "variant": variant,
            "voice": f"{accent}+{variant}",
            "sex": sex_of(variant),
            "synth": synth_of(variant),
        }
        slow_first = rng.chance(0.5)
        voice["settings"] = []
        for s in range(SETTINGS):
            lo, hi = SLOW if (s == 0) == slow_first else FAST
            voice["settings"].append(
                {
                    "id": f"{voice['id']}s{s + 1}",
                    "speed": rng.integer(lo, hi),
                    "pitch": rng.integer(*PITCH),
                }
            )
        voices.append(voice)

    # The split: shuffle until both held-out groups pass and training keeps every accent.
    for attempt in range(1, 100001):
        perm = rng.shuffled(range(len(voices)))
        val = [voices[i] for i in perm[:HELD_OUT]]
        test = [voices[i] for i in perm[HELD_OUT : 2 * HELD_OUT]]
        train = [voices[i] for i in perm[2 * HELD_OUT :]]
        if (
            held_out_ok(val)
            and held_out_ok(test)
            and {v["accent"] for v in train} == set(ACCENTS)
            and {v["synth"] for v in train} == {"klatt", "formant"}
        ):
            break
    else:
        raise RuntimeError("no split satisfies the constraints")
    for part, group in (("validation", val), ("testing", test), ("train", train)):
        for v in group:
            v["part"] = part

    # Unknown words: dealt from a deck, reshuffled when it runs out, two different per setting.
    deck = []
    for v in voices:
        for s in v["settings"]:
            words = []
            while len(words) < UNKNOWN_PER_SETTING:
                if not deck:
                    deck = rng.shuffled(UNKNOWN_WORDS)
                w = deck.pop()
                if w in words:  # only possible right after a reshuffle: take the next one
                    deck.insert(0, w)
                    continue
                words.append(w)
            s["unknown"] = words

    # More for training only, from a generator of its own drawn after everything above, so
    # the held-out voices, the split and every clip made before stay exactly as they were:
    # the variants not yet used become training voices too, and every training voice gets
    # more settings (alternately slow and fast, each with its own pitch).
    more = Rng(SEED + 1)
    used = {v["variant"] for v in voices}
    extra = [x for x in more.shuffled(FEMALE + MALE + KLATT) if x not in used]
    order = more.shuffled(ACCENTS)
    for i, variant in enumerate(extra):
        accent = order[i % len(order)]
        voices.append(
            {
                "id": f"v{len(voices) + 1:02d}",
                "accent": accent,
                "variant": variant,
                "voice": f"{accent}+{variant}",
                "sex": sex_of(variant),
                "synth": synth_of(variant),
                "part": "train",
                "settings": [],
            }
        )
    deck = []
    for v in voices:
        if v["part"] != "train":
            continue
        slow_first = more.chance(0.5)
        for s in range(len(v["settings"]), TRAIN_SETTINGS):
            lo, hi = SLOW if (s % 2 == 0) == slow_first else FAST
            words = []
            while len(words) < UNKNOWN_PER_SETTING:
                if not deck:
                    deck = more.shuffled(UNKNOWN_WORDS)
                w = deck.pop()
                if w in words:
                    deck.insert(0, w)
                    continue
                words.append(w)
            v["settings"].append(
                {
                    "id": f"{v['id']}s{s + 1}",
                    "speed": more.integer(lo, hi),
                    "pitch": more.integer(*PITCH),
                    "unknown": words,
                }
            )
    return voices, attempt


def clip_jobs(voices):
    """(class, file name, word, setting, voice) for every spoken clip, sorted by path."""
    jobs = []
    for v in voices:
        for s in v["settings"]:
            for word in KEYWORDS:
                jobs.append((word, f"{s['id']}_nohash_0.wav", word, s, v))
            for n, word in enumerate(s["unknown"]):
                jobs.append((UNKNOWN, f"{s['id']}_nohash_{n}.wav", word, s, v))
    return sorted(jobs, key=lambda j: (j[0], j[1]))


# ---------------------------------------------------------------------------------------
# espeak-ng.


def espeak_path():
    path = shutil.which("espeak-ng")
    if path is None:
        sys.exit("espeak-ng is not on PATH (Debian: apt-get install espeak-ng)")
    return path


ENV = {"LC_ALL": "C", "LANG": "C", "PATH": "/usr/bin:/bin"}


def espeak_version(exe):
    """The version and the data folder: "eSpeak NG text-to-speech: 1.51  Data at: DIR"."""
    out = subprocess.run([exe, "--version"], env=ENV, capture_output=True, text=True, check=True)
    m = re.match(r"eSpeak NG text-to-speech: (\S+)\s+Data at: (.*)$", out.stdout.strip())
    if not m:
        sys.exit(f"cannot read espeak-ng's version from {out.stdout!r}")
    return m.group(1), m.group(2)


PROBE = "stop four house right go"  # words every pair of our accents says differently


def check_voices(exe, data_dir, voices):
    """Every accent and variant exists, and every voice sounds different.

    espeak-ng says nothing when it does not know a voice: it falls back to another, or (for
    en-gb+VARIANT in 1.51) ignores the variant. So besides the names, each accent alone and
    each voice say PROBE, and all of those must differ."""
    langs = subprocess.run(
        [exe, "--voices=en"], env=ENV, capture_output=True, text=True, check=True
    ).stdout
    known = set(re.findall(r"\((\S+) \d+\)", langs))  # "Other Languages": (en 2)
    known |= {line.split()[1] for line in langs.splitlines()[1:] if line.split()}
    missing = [a for a in ACCENTS if a not in known]
    variants = Path(data_dir) / "voices" / "!v"
    missing += [f"+{v}" for v in FEMALE + MALE + KLATT if not (variants / v).is_file()]
    if missing:
        sys.exit(f"espeak-ng lacks these voices: {' '.join(missing)}")
    names = list(ACCENTS) + [v["voice"] for v in voices]
    sounds = {}
    for name in names:
        x = speak(exe, name, 175, 50, PROBE)
        sounds.setdefault(x.tobytes(), []).append(name)
    same = [" = ".join(group) for group in sounds.values() if len(group) > 1]
    if same:
        sys.exit(f"espeak-ng says these the same, so a voice is not what it claims: {same}")


def speak(exe, voice, speed, pitch, word):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", "100", "-b", "1",
               "-z", "-w", str(out), word]  # fmt: skip
        subprocess.run(cmd, env=ENV, cwd=tmp, check=True, capture_output=True)
        with wave.open(str(out), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, ESPEAK_RATE):
                raise RuntimeError(f"{cmd}: unexpected WAV format")
            data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / FULL_SCALE


def utterance(x):
    """First and last sample (inclusive) above TRIM_DB of the peak."""
    peak = np.max(np.abs(x)) if len(x) else 0.0
    if peak == 0.0:
        return None
    idx = np.nonzero(np.abs(x) > peak * 10.0 ** (TRIM_DB / 20.0))[0]
    return int(idx[0]), int(idx[-1])


def span16(a, b):
    """The utterance's [start, end) at 16 kHz, and the clip's with the margins."""
    a16 = a * UP // DOWN
    b16 = -(-(b + 1) * UP // DOWN)
    return a16, b16, b16 - a16 + 2 * MARGIN


def synthesize(exe, voice, speed, pitch, word):
    """The word at 22050 Hz, said fast enough to fit, and the speed it took."""
    while True:
        x = speak(exe, voice, speed, pitch, word)
        span = utterance(x)
        if span is None:
            raise RuntimeError(f"espeak-ng said nothing for {word!r} in {voice} at {speed}")
        if span16(*span)[2] <= MAX_SAMPLES or speed >= 400:
            return x, span, speed
        speed += SPEED_STEP


# ---------------------------------------------------------------------------------------
# Signal processing.

PAD = 2 * DOWN  # zeros either side before resampling: 40 ms at 22050 Hz, 2 * UP at 16 kHz


def resample(x):
    """22050 Hz to 16000 Hz by FFT, band-limited to 7.8 kHz with a raised-cosine roll-off.

    Output sample i is at input time i * 441 / 320, as in a polyphase resampler: the input is
    zero-padded by PAD (a multiple of 441) either side and to a multiple of 441, so its
    spectrum's first 320/441 is exactly the output's and nothing wraps round."""
    blocks = -(-(len(x) + 2 * PAD) // DOWN)
    n_in = blocks * DOWN
    n_out = blocks * UP
    padded = np.zeros(n_in)
    padded[PAD : PAD + len(x)] = x
    spectrum = np.fft.rfft(padded)[: n_out // 2 + 1]
    hz = np.arange(len(spectrum)) * (ESPEAK_RATE / n_in)
    lo, hi = 7000.0, 7800.0
    taper = np.clip((hi - hz) / (hi - lo), 0.0, 1.0)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    y = np.fft.irfft(spectrum * taper, n=n_out) * (n_out / n_in)
    return y[PAD * UP // DOWN :]


def coloured(rng, n, exponent):
    """Unit-RMS Gaussian noise whose power falls as 1/f^exponent above 20 Hz."""
    white = rng.gaussians(n)
    if exponent != 0.0:
        spectrum = np.fft.rfft(white)
        hz = np.maximum(np.fft.rfftfreq(n, 1.0 / RATE), 20.0)
        gain = hz ** (-exponent / 2.0)
        gain[0] = 0.0
        white = np.fft.irfft(spectrum * gain, n=n)
    else:
        white = white - white.mean()
    return white / np.sqrt(np.mean(white * white))


def hum(rng, n):
    """Unit-RMS mains hum: 50 or 60 Hz (within 0.5%) and 5 harmonics of random strength."""
    f0 = rng.choice((50.0, 60.0)) * rng.uniform(0.995, 1.005)
    t = np.arange(n) / RATE
    decay = rng.uniform(0.5, 1.5)
    y = np.zeros(n)
    for k in range(1, 7):
        amplitude = rng.uniform(0.2, 1.0) * k ** (-decay)
        y += amplitude * np.sin(2.0 * np.pi * k * f0 * t + rng.uniform(0.0, 2.0 * np.pi))
    return f0, y / np.sqrt(np.mean(y * y))


def background(rng, n):
    colour = rng.choice(sorted(COLOURS))
    noise = coloured(rng, n, COLOURS[colour])
    hum_hz = 0.0
    if rng.chance(HUM_CHANCE):
        share = rng.uniform(0.3, 0.9)
        hum_hz, h = hum(rng, n)
        noise = math.sqrt(1.0 - share) * noise + math.sqrt(share) * h
        noise /= np.sqrt(np.mean(noise * noise))
    return colour, hum_hz, noise


def lowpass(x, hz, order=2):
    """x through a zero-phase Butterworth-shaped magnitude response (by FFT)."""
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / RATE)
    return np.fft.irfft(spectrum / np.sqrt(1.0 + (f / hz) ** (2 * order)), n=len(x))


def unit(x):
    return x / np.sqrt(np.mean(x * x))


def tones(rng, n, f0, weights):
    """Unit-RMS sum of harmonics k * f0 (k = 1, 2, ...) of the given weights, random phases."""
    t = np.arange(n) / RATE
    y = np.zeros(n)
    for k, w in enumerate(weights, start=1):
        y += w * np.sin(2.0 * np.pi * k * f0 * t + rng.uniform(0.0, 2.0 * np.pi))
    return unit(y)


def hum_noise(rng, n):
    """50 Hz mains hum: the fundamental and 7 harmonics (100 Hz strongest, as from a
    transformer's magnetostriction), plus pink noise 15 dB below it."""
    weights = [rng.uniform(0.5, 1.0) * w for w in (0.6, 1.0, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07)]
    h = tones(rng, n, 50.0, weights)
    return h + 10.0 ** (-15.0 / 20.0) * coloured(rng, n, 1.0)


def fan_noise(rng, n):
    """A fan or air conditioner: brown and pink noise (3:1 in power) whose level wobbles by a
    few dB over seconds, and a blade tone of 90-130 Hz with 2 harmonics 12 dB below it."""
    t = np.arange(n) / RATE
    noise = math.sqrt(0.75) * coloured(rng, n, 2.0) + math.sqrt(0.25) * coloured(rng, n, 1.0)
    wobble = (
        1.0
        + 0.2 * np.sin(2.0 * np.pi * rng.uniform(0.3, 0.6) * t + rng.uniform(0.0, 2.0 * np.pi))
        + 0.1 * np.sin(2.0 * np.pi * rng.uniform(0.1, 0.2) * t + rng.uniform(0.0, 2.0 * np.pi))
    )
    blade = tones(rng, n, rng.uniform(90.0, 130.0), (1.0, 0.5, 0.25))
    return unit(noise * wobble) + 10.0 ** (-12.0 / 20.0) * blade


def traffic_noise(rng, n):
    """Distant traffic, a non-stationary noise: brown noise low-passed at 600 Hz whose level
    drifts slowly, and 5 passing vehicles (one in each 1.2 s of the recording), each pink
    noise low-passed at 500-1500 Hz under a Gaussian swell of 0.25-0.5 s deviation, peaking
    at 1.5-3 times the rumble's level."""
    t = np.arange(n) / RATE
    drift = 1.0 + 0.3 * np.sin(2.0 * np.pi * rng.uniform(0.08, 0.15) * t
                               + rng.uniform(0.0, 2.0 * np.pi))  # fmt: skip
    y = unit(lowpass(coloured(rng, n, 2.0), 600.0)) * drift
    cars = 5
    span = n / RATE / cars
    for i in range(cars):
        centre = (i + rng.uniform(0.2, 0.8)) * span
        width = rng.uniform(0.25, 0.5)
        level = rng.uniform(1.5, 3.0)
        burst = unit(lowpass(coloured(rng, n, 1.0), rng.uniform(500.0, 1500.0)))
        y += level * np.exp(-0.5 * ((t - centre) / width) ** 2) * burst
    return y


BACKGROUNDS = {
    "white_noise.wav": lambda rng, n: coloured(rng, n, 0.0),
    "pink_noise.wav": lambda rng, n: coloured(rng, n, 1.0),
    "brown_noise.wav": lambda rng, n: coloured(rng, n, 2.0),
    "hum_50hz.wav": hum_noise,
    "fan.wav": fan_noise,
    "traffic.wav": traffic_noise,
}


def background_recording(name):
    """One file of _background_noise_, from its own generator, at BACKGROUND_RMS_DBFS."""
    rng = clip_rng(f"{BACKGROUND}/{name}")
    y = BACKGROUNDS[name](rng, BACKGROUND_SAMPLES)
    y = y - y.mean()
    y *= 10.0 ** (BACKGROUND_RMS_DBFS / 20.0) / np.sqrt(np.mean(y * y))
    peak = float(np.max(np.abs(y)))
    if peak >= 10.0 ** (BACKGROUND_PEAK_DBFS / 20.0):
        raise RuntimeError(f"{BACKGROUND}/{name}: peak {db(peak):.1f} dBFS is too high")
    return to_pcm(y)


def to_pcm(y):
    s = np.rint(y * FULL_SCALE)
    clipped = int(np.count_nonzero((s > 32767) | (s < -32768)))
    return np.clip(s, -32768, 32767).astype("<i2"), clipped


def wav_bytes(samples):
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def db(x):
    return 20.0 * math.log10(x) if x > 0 else -math.inf


def speech_clip(name, x, span):
    rng = clip_rng(name)
    y = resample(x)
    a16, b16, n = span16(*span)
    start = a16 - MARGIN
    clip = np.zeros(n)
    lo, hi = max(start, 0), min(start + n, len(y))
    clip[lo - start : hi - start] = y[lo:hi]
    speech = y[a16:b16]
    speech_rms = math.sqrt(float(np.mean(speech * speech)))
    colour, hum_hz, noise = background(rng, n)
    snr = rng.uniform(*SNR_DB)
    clip = clip + noise * speech_rms * 10.0 ** (-snr / 20.0)
    peak_db = rng.uniform(*PEAK_DBFS)
    clip *= 10.0 ** (peak_db / 20.0) / np.max(np.abs(clip))
    pcm, clipped = to_pcm(clip)
    return pcm, clipped, {"noise": colour, "hum_hz": hum_hz, "snr_db": snr}


def silence_clip(name):
    rng = clip_rng(name)
    colour, hum_hz, noise = background(rng, MAX_SAMPLES)
    level = rng.uniform(*SILENCE_RMS_DBFS)
    clip = noise * 10.0 ** (level / 20.0)
    ceiling = 10.0 ** (CEILING_DBFS / 20.0)
    peak = np.max(np.abs(clip))
    if peak > ceiling:
        clip *= ceiling / peak
    pcm, clipped = to_pcm(clip)
    return pcm, clipped, {"noise": colour, "hum_hz": hum_hz, "snr_db": None}


# ---------------------------------------------------------------------------------------
# The data set.


def build(root, workers):
    """Writes the data set under root (which must not exist); returns a report."""
    exe = espeak_path()
    version, data_dir = espeak_version(exe)
    voices, attempts = plan()
    check_voices(exe, data_dir, voices)
    jobs = clip_jobs(voices)

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        spoken = list(
            pool.map(
                lambda j: synthesize(exe, j[4]["voice"], j[3]["speed"], j[3]["pitch"], j[2]),
                jobs,
            )
        )

    root.mkdir(parents=True)
    for cls in KEYWORDS + (UNKNOWN, SILENCE, BACKGROUND):
        (root / cls).mkdir()
    part_of = {s["id"]: v["part"] for v in voices for s in v["settings"]}
    rows = []  # (path, word, speaker, speed, noise, hum, snr, samples, peak, rms)
    clipped_total = 0
    faster = []

    def record(path, word, speaker, speed, pcm, info):
        (root / path).write_bytes(wav_bytes(pcm))
        f = pcm.astype(np.float64)
        rows.append(
            {
                "path": path,
                "word": word,
                "speaker": speaker,
                "speed": speed,
                "samples": len(pcm),
                "peak_dbfs": db(float(np.max(np.abs(f))) / FULL_SCALE),
                "rms_dbfs": db(math.sqrt(float(np.mean(f * f))) / FULL_SCALE),
                **info,
            }
        )

    for (cls, fname, word, s, _v), (x, span, speed) in zip(jobs, spoken):
        path = f"{cls}/{fname}"
        if speed != s["speed"]:
            faster.append(f"{path} ({word}, {s['speed']} -> {speed} wpm)")
        pcm, clipped, info = speech_clip(path, x, span)
        clipped_total += clipped
        record(path, word, s["id"], speed, pcm, info)
    for v in voices:
        for s in v["settings"]:
            path = f"{SILENCE}/{s['id']}_nohash_0.wav"
            pcm, clipped, info = silence_clip(path)
            clipped_total += clipped
            record(path, "", s["id"], "", pcm, info)
    rows.sort(key=lambda r: r["path"])

    # Not clips: in neither list nor clips.csv.
    backgrounds = []
    for name in sorted(BACKGROUNDS):
        pcm, clipped = background_recording(name)
        clipped_total += clipped
        (root / BACKGROUND / name).write_bytes(wav_bytes(pcm))
        f = pcm.astype(np.float64)
        backgrounds.append(
            {
                "name": name,
                "seconds": len(pcm) / RATE,
                "rms_dbfs": db(math.sqrt(float(np.mean(f * f))) / FULL_SCALE),
                "peak_dbfs": db(float(np.max(np.abs(f))) / FULL_SCALE),
            }
        )

    for part, list_name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        lines = [r["path"] for r in rows if part_of[r["speaker"]] == part]
        (root / list_name).write_text("".join(p + "\n" for p in sorted(lines)), newline="\n")

    lines = ["speaker,voice,accent,variant,sex,synth,speed,pitch,part,unknown_0,unknown_1"]
    for v in voices:
        for s in v["settings"]:
            lines.append(
                f"{s['id']},{v['voice']},{v['accent']},{v['variant']},{v['sex']},{v['synth']},"
                f"{s['speed']},{s['pitch']},{v['part']},{s['unknown'][0]},{s['unknown'][1]}"
            )
    (root / "voices.csv").write_text("\n".join(lines) + "\n", newline="\n")

    lines = ["path,word,speaker,part,speed,samples,noise,hum_hz,snr_db,peak_dbfs,rms_dbfs"]
    for r in rows:
        snr = "" if r["snr_db"] is None else f"{r['snr_db']:.1f}"
        hum_hz = f"{r['hum_hz']:.2f}" if r["hum_hz"] else ""
        lines.append(
            f"{r['path']},{r['word']},{r['speaker']},{part_of[r['speaker']]},{r['speed']},"
            f"{r['samples']},{r['noise']},{hum_hz},{snr},{r['peak_dbfs']:.1f},"
            f"{r['rms_dbfs']:.1f}"
        )
    (root / "clips.csv").write_text("\n".join(lines) + "\n", newline="\n")
    return {
        "version": version,
        "voices": voices,
        "rows": rows,
        "backgrounds": backgrounds,
        "part_of": part_of,
        "attempts": attempts,
        "faster": faster,
        "clipped": clipped_total,
    }


def files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def crc_of(root, names):
    """CRC-32 of the files' bytes one after another, and their total size."""
    crc = 0
    total = 0
    for n in names:
        data = (root / n).read_bytes()
        crc = zlib.crc32(data, crc)
        total += len(data)
    return crc, total


def checksums(root):
    """CRC-32s of the clips, of _background_noise_ and of the text files, apart."""
    names = files(root)
    noise = [n for n in names if n.startswith(BACKGROUND + "/")]
    wavs = [n for n in names if n.endswith(".wav") and n not in noise]
    others = [n for n in names if not n.endswith(".wav") and n not in noise]
    crc_wav, wav_total = crc_of(root, wavs)
    crc_noise, noise_total = crc_of(root, noise)
    crc_lists, other_total = crc_of(root, others)
    return {
        "wav_files": len(wavs),
        "wav_bytes": wav_total,
        "crc_wav": crc_wav,
        "noise_files": len(noise),
        "noise_bytes": noise_total,
        "crc_noise": crc_noise,
        "other_files": others,
        "other_bytes": other_total,
        "crc_lists": crc_lists,
    }


def summary(root, report):
    rows, part_of = report["rows"], report["part_of"]
    classes = sorted({r["path"].split("/")[0] for r in rows})
    parts = ("train", "validation", "testing")
    print(f"espeak-ng {report['version']}; split found after {report['attempts']} draws")
    if report["version"] != ESPEAK_VERSION:
        print(f"warning: made with espeak-ng {ESPEAK_VERSION}; this one will differ")
    print(f"{'class':<11}" + "".join(f"{p:>11}" for p in parts) + f"{'all':>7}")
    for cls in classes:
        counts = [sum(1 for r in rows if r["path"].startswith(cls + "/")
                      and part_of[r["speaker"]] == p) for p in parts]  # fmt: skip
        print(f"{cls:<11}" + "".join(f"{c:>11}" for c in counts) + f"{sum(counts):>7}")
    totals = [sum(1 for r in rows if part_of[r["speaker"]] == p) for p in parts]
    print(f"{'all':<11}" + "".join(f"{c:>11}" for c in totals) + f"{len(rows):>7}")
    for p in parts:
        vs = [v for v in report["voices"] if v["part"] == p]
        print(f"{p}: " + ", ".join(f"{v['id']} {v['voice']}" for v in vs))
    speech = [r for r in rows if r["snr_db"] is not None]
    secs = [r["samples"] / RATE for r in speech]
    print(
        f"spoken clips: {min(secs):.3f}-{max(secs):.3f} s (mean {sum(secs) / len(secs):.3f}); "
        f"peaks {min(r['peak_dbfs'] for r in rows):.1f} to "
        f"{max(r['peak_dbfs'] for r in rows):.1f} dBFS; "
        f"{report['clipped']} samples clipped"
    )
    print(f"said faster to fit in 1 s: {len(report['faster'])}")
    for f in report["faster"]:
        print(f"  {f}")
    print(f"{BACKGROUND}:")
    for b in report["backgrounds"]:
        size = (root / BACKGROUND / b["name"]).stat().st_size
        print(
            f"  {b['name']:<16}{b['seconds']:.1f} s, {size} bytes, RMS {b['rms_dbfs']:.1f} dBFS, "
            f"peak {b['peak_dbfs']:.1f} dBFS"
        )
    c = checksums(root)
    print(
        f"{c['wav_files']} clips, {c['wav_bytes']} bytes, crc32 {c['crc_wav']:08x}; "
        f"{c['noise_files']} {BACKGROUND} files, {c['noise_bytes']} bytes, "
        f"crc32 {c['crc_noise']:08x}; "
        f"{', '.join(c['other_files'])}: {c['other_bytes']} bytes, crc32 {c['crc_lists']:08x}; "
        f"total {c['wav_bytes'] + c['noise_bytes'] + c['other_bytes']} bytes"
    )


def compare(new, old):
    a, b = set(files(new)), set(files(old))
    bad = sorted(f"missing: {n}" for n in a - b)
    bad += sorted(f"extra: {n}" for n in b - a)
    bad += sorted(
        f"differs: {n}" for n in a & b if not filecmp.cmp(new / n, old / n, shallow=False)
    )
    return bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="regenerate into a temporary folder and compare"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="espeak-ng runs at once"
    )
    args = parser.parse_args()
    t0 = time.monotonic()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "data"
            report = build(root, args.jobs)
            summary(root, report)
            bad = compare(root, DATA) if DATA.is_dir() else [f"missing: {DATA}"]
        if bad:
            print(f"{DATA} differs from what make_data.py generates ({len(bad)} files):")
            for line in bad:
                print(f"  {line}")
            sys.exit(1)
        print(f"{DATA}: up to date ({time.monotonic() - t0:.1f} s)")
        return
    tmp = HERE / f".data.new-{os.getpid()}"
    old = HERE / f".data.old-{os.getpid()}"
    try:
        report = build(tmp, args.jobs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if DATA.exists():
        DATA.rename(old)
    try:
        tmp.rename(DATA)
    except BaseException:
        if old.exists():
            old.rename(DATA)
        raise
    shutil.rmtree(old, ignore_errors=True)
    summary(DATA, report)
    print(f"wrote {DATA} in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
