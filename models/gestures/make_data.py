#!/usr/bin/env python3
"""Synthesises data/gestures.csv.gz: 2-second, 3-axis accelerometer recordings of six hand
gestures by 20 made-up people, for the bundled gestures model.

    python3 make_data.py           # writes data/gestures.csv.gz, prints its checksums
    python3 make_data.py --check   # regenerates in memory and compares with the file

Only the standard library is used and every random draw comes from one seeded generator
(`random.random()` alone, whose sequence Python keeps stable across versions), so the CSV
text is the same on every run; values are rounded to 0.01 g before they are written, so a
last-bit difference in another platform's sin/exp/log would have to straddle a rounding
boundary to show (`--check` tells). The gzip stream is written
with mtime 0 and no file name; its bytes can still differ with the zlib build, which is why
the checks (here and in the Rust tests) are on the uncompressed CSV.

The physics: a wrist-worn sensor measures specific force, the hand's acceleration minus
gravity, in the device's own frame. Each recording is built in the body frame (x to the
right, y forward, z up) from the hand's motions and orientation R(t); the sensor reads
R(t)^T (a(t) + g z) / g, then a per-person gain, bias and white noise, and is clipped to
+-8 g and sampled at 50 Hz. a(t) sums each motion's p''(t) (a central second difference of
its path) weighted by the motion's envelope, which fades a gesture in and out.

Each person has their own style: amplitude, tempo, handedness (a mirror of the lateral
motion and of the turning sense), how the device sits on the wrist, how still they hold it,
their sensor's bias and noise. Each recording adds its own posture, mounting jitter, phase,
start time and duration, so the gesture can start before the window, end inside it or run
past it.

Rows are grouped by person: persons 1-14, then 15-17, then 18-20, each with 15 recordings of
every gesture in shuffled order. A `time-ordered` split of 70/15/15% therefore trains on the
first 14 people and validates and tests on people it has never seen.
"""

import argparse
import gzip
import hashlib
import io
import math
import random
import sys
import zlib
from pathlib import Path

SEED = 20250704
RATE_HZ = 50
FRAMES = 100
G = 9.81
RANGE_G = 8.0
PEOPLE = 20
REPEATS = 15
GESTURES = ("idle", "wave", "circle", "punch", "shake", "flip")
TAU = 2.0 * math.pi
DEG = math.pi / 180.0
# Step of the second difference: small against every motion's time scale (the fastest, a
# 7 Hz shake, has a 140 ms period), large enough that rounding stays far below 0.01 g.
H = 1e-3

OUT = Path(__file__).resolve().parent / "data" / "gestures.csv.gz"


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

    def gauss(self):
        # Box-Muller; 1 - random() is in (0, 1], so the log is finite.
        u = 1.0 - self.r.random()
        v = self.r.random()
        return math.sqrt(-2.0 * math.log(u)) * math.cos(TAU * v)

    def direction(self):
        while True:
            v = [self.gauss(), self.gauss(), self.gauss()]
            n = math.sqrt(sum(x * x for x in v))
            if n > 1e-6:
                return [x / n for x in v]

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return ((1.0, 0.0, 0.0), (0.0, c, -s), (0.0, s, c))


def rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return ((c, 0.0, s), (0.0, 1.0, 0.0), (-s, 0.0, c))


def rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0))


def matmul(a, b):
    return tuple(
        tuple(sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)) for i in range(3)
    )


def smoother(u):
    """0 before 0, 1 after 1, C2 in between, so accelerations stay continuous."""
    if u <= 0.0:
        return 0.0
    if u >= 1.0:
        return 1.0
    return u * u * u * (u * (6.0 * u - 15.0) + 10.0)


def envelope(t, start, end, ramp):
    return smoother((t - start) / ramp) * smoother((end - t) / ramp)


def along(direction, length):
    return tuple(length * d for d in direction)


def about(axis, angle):
    """A turn by `angle` about body axis `axis` (0 x, 1 y, 2 z)."""
    return tuple(angle if i == axis else 0.0 for i in range(3))


# The device on a right wrist, palm down, forearm pointing forward: its x axis along the
# forearm (body y), its z axis out of the back of the wrist (body z), its y axis to the left.
WRIST = ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))


def person(rng):
    return {
        "amplitude": rng.uniform(0.75, 1.3),
        "tempo": rng.uniform(0.8, 1.25),
        # Left-handed people mirror the lateral motion and the sense of every turn.
        "mirror": -1.0 if rng.chance(0.3) else 1.0,
        "mount": [rng.uniform(-25.0, 25.0) * DEG for _ in range(3)],
        "sway": rng.uniform(1.0, 4.0) * DEG,
        "tremor": rng.uniform(0.002, 0.012),
        "gain": [rng.uniform(0.97, 1.03) for _ in range(3)],
        "bias": [rng.uniform(-0.04, 0.04) for _ in range(3)],
        "noise": rng.uniform(0.006, 0.02),
    }


def sinusoid(amplitude, freq, phase):
    return lambda t: amplitude * math.sin(TAU * freq * t + phase)


def recording(rng, who, gesture):
    """Returns the 100 x 3 readings (g) of one recording."""
    m = who["mirror"]
    amp = who["amplitude"]
    tempo = who["tempo"]
    # Motions as (p, e): functions t -> (x, y, z) in metres and t -> weight. The hand's
    # acceleration is e(t) p''(t), not (e p)'': an envelope that fades a wave in over
    # 0.2 s would otherwise add the jolt of jumping onto the wave's path.
    position = []
    turn = []  # functions t -> (about x, about y, about z), radians

    # Everybody sways and trembles a little, whatever they do.
    sway = who["sway"] * (rng.uniform(1.0, 2.5) if gesture == "idle" else 1.0)
    for axis in range(3):
        for _ in range(2):
            s = sinusoid(
                sway * rng.uniform(0.3, 1.0), rng.uniform(0.15, 0.7), rng.uniform(0.0, TAU)
            )
            turn.append(lambda t, s=s, axis=axis: about(axis, s(t)))
    drift = [
        sinusoid(rng.uniform(0.003, 0.012), rng.uniform(0.2, 0.8), rng.uniform(0.0, TAU))
        for _ in range(3)
    ]
    position.append((lambda t: (drift[0](t), drift[1](t), drift[2](t)), None))
    f = rng.uniform(8.0, 12.0)
    a = who["tremor"] * G / (TAU * f) ** 2
    d = rng.direction()
    ph = rng.uniform(0.0, TAU)
    # Defaults bind today's values: the gestures below reuse these names.
    def tremor(t, a=a, f=f, d=d, ph=ph):
        return along(d, a * math.sin(TAU * f * t + ph))

    position.append((tremor, None))

    # The forearm's posture for this recording, and how the device sits on the wrist today.
    posture = [rng.uniform(-20.0, 20.0) * DEG for _ in range(3)]
    posture = matmul(rot_z(posture[0]), matmul(rot_x(posture[1]), rot_y(posture[2])))
    mount = [a + rng.uniform(-8.0, 8.0) * DEG for a in who["mount"]]
    device = matmul(WRIST, matmul(rot_z(mount[0]), matmul(rot_y(mount[1]), rot_x(mount[2]))))

    # When the gesture happens inside the 2 s window.
    start = rng.uniform(-0.4, 0.5)
    end = start + rng.uniform(1.3, 2.6)
    ramp = rng.uniform(0.1, 0.25)

    if gesture == "idle":
        if rng.chance(0.5):  # a fidget: a small nudge of the hand
            L = rng.uniform(0.01, 0.04)
            w = rng.uniform(0.1, 0.25)
            tc = rng.uniform(0.2, 1.8)
            d = rng.direction()
            position.append((lambda t: along(d, L * math.exp(-0.5 * ((t - tc) / w) ** 2)), None))
        if rng.chance(0.35):  # settling into a new posture, slowly
            angle = rng.uniform(10.0, 35.0) * DEG * (1 if rng.chance(0.5) else -1)
            axis = rng.below(3)
            t0 = rng.uniform(-0.2, 1.2)
            T = rng.uniform(0.8, 1.5)
            turn.append(lambda t: about(axis, angle * smoother((t - t0) / T)))

    elif gesture == "wave":
        f = tempo * rng.uniform(1.5, 2.3)
        A = amp * rng.uniform(0.05, 0.09)
        lift = rng.uniform(0.0, 0.3)
        tilt = rng.uniform(10.0, 30.0) * DEG
        ph = rng.uniform(0.0, TAU)
        wob = (rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.0, TAU))

        def phase(t, f=f, ph=ph, wob=wob):
            return TAU * f * t + ph + wob[0] * math.sin(TAU * wob[1] * t + wob[2])

        # The hand swings on an arc about the elbow: it rises at both ends (twice per
        # cycle) and leans into the swing.
        def active(t):
            return envelope(t, start, end, ramp)

        def arc(t):
            return (m * A * math.sin(phase(t)), 0.0, A * lift * math.cos(2.0 * phase(t)))

        position.append((arc, active))
        turn.append(lambda t: about(1, m * tilt * active(t) * math.sin(phase(t))))

    elif gesture == "circle":
        f = tempo * rng.uniform(0.8, 1.3)
        r = amp * rng.uniform(0.10, 0.18)
        ratio = rng.uniform(0.7, 1.0)
        sense = m * (1.0 if rng.chance(0.8) else -1.0)
        incline = rng.uniform(-30.0, 30.0) * DEG
        ph = rng.uniform(0.0, TAU)
        roll = rng.uniform(0.0, 10.0) * DEG

        def circle(t):
            th = sense * TAU * f * t + ph
            w = r * ratio * math.sin(th)
            return (r * math.cos(th), w * math.sin(incline), w * math.cos(incline))

        def active(t):
            return envelope(t, start, end, ramp)

        position.append((circle, active))
        turn.append(lambda t: about(1, roll * active(t) * math.cos(sense * TAU * f * t + ph)))

    elif gesture == "punch":
        count = (1, 2, 2, 3)[rng.below(4)]
        tc = rng.uniform(0.25, 0.8)
        for _ in range(count):
            if tc > 1.9:
                break
            L = amp * rng.uniform(0.18, 0.32)
            rise = rng.uniform(0.07, 0.11) / math.sqrt(tempo)
            fall = rise * rng.uniform(1.3, 2.0)
            up = rng.uniform(-0.1, 0.2)
            twist = m * rng.uniform(20.0, 70.0) * DEG

            # Out fast, back slower: a Gaussian bump with a wider tail after the peak.
            def bump(t, tc=tc, rise=rise, fall=fall):
                w = rise if t < tc else fall
                return math.exp(-0.5 * ((t - tc) / w) ** 2)

            position.append(
                (lambda t, L=L, up=up, bump=bump: (0.0, L * bump(t), L * up * bump(t)), None)
            )
            turn.append(lambda t, twist=twist, bump=bump: (0.0, twist * bump(t), 0.0))
            tc += rng.uniform(0.45, 0.75) / tempo

    elif gesture == "shake":
        f = math.sqrt(tempo) * rng.uniform(4.5, 7.0)
        acc = amp * rng.uniform(0.6, 1.4) * G
        A = acc / (TAU * f) ** 2
        d = rng.direction()
        ph = rng.uniform(0.0, TAU)
        wob = (rng.uniform(0.2, 0.6), rng.uniform(0.5, 1.5), rng.uniform(0.0, TAU))
        jiggle = rng.uniform(3.0, 12.0) * DEG
        jiggle_axis = rng.direction()
        start = rng.uniform(-0.3, 0.6)
        end = start + rng.uniform(0.9, 2.4)

        def phase(t):
            return TAU * f * t + ph + wob[0] * math.sin(TAU * wob[1] * t + wob[2])

        def active(t):
            return envelope(t, start, end, 0.1)

        position.append((lambda t: along(d, A * math.sin(phase(t))), active))
        turn.append(lambda t: along(jiggle_axis, jiggle * active(t) * math.sin(phase(t) + 0.5)))

    elif gesture == "flip":
        angle = m * rng.uniform(120.0, 180.0) * DEG
        # Mostly a turn about the forearm (palm down to palm up), partly a tilt of the wrist.
        lean = rng.uniform(-25.0, 25.0) * DEG
        T = rng.uniform(0.25, 0.55) / tempo
        t0 = rng.uniform(0.1, 0.9)
        back = rng.chance(0.65)
        t1 = t0 + T + rng.uniform(0.25, 0.7)
        T1 = rng.uniform(0.25, 0.55) / tempo

        def amount(t):
            a = smoother((t - t0) / T)
            if back:
                a -= smoother((t - t1) / T1)
            return angle * a

        turn.append(lambda t: (amount(t) * math.sin(lean), amount(t) * math.cos(lean), 0.0))

    else:
        raise ValueError(gesture)

    def acceleration(t):
        a = [0.0, 0.0, 0.0]
        for p, e in position:
            before, now, after = p(t - H), p(t), p(t + H)
            w = 1.0 if e is None else e(t)
            for i in range(3):
                a[i] += w * (after[i] - 2.0 * now[i] + before[i]) / (H * H)
        return a

    def orientation(t):
        q = [0.0, 0.0, 0.0]
        for fn in turn:
            for i, v in enumerate(fn(t)):
                q[i] += v
        hand = matmul(rot_z(q[2]), matmul(rot_y(q[1]), rot_x(q[0])))
        return matmul(posture, matmul(hand, device))

    rows = []
    for k in range(FRAMES):
        t = k / RATE_HZ
        force = acceleration(t)
        force[2] += G
        R = orientation(t)
        for axis in range(3):
            # R maps device to body coordinates; its transpose takes the force back.
            v = sum(R[i][axis] * force[i] for i in range(3)) / G
            v = v * who["gain"][axis] + who["bias"][axis] + who["noise"] * rng.gauss()
            rows.append(max(-RANGE_G, min(RANGE_G, v)))
    return rows


def number(v):
    s = f"{v:.2f}"
    return "0.00" if s == "-0.00" else s


def csv_text():
    rng = Rng(SEED)
    lines = [",".join(f"t{k}_{a}" for k in range(FRAMES) for a in "xyz") + ",label"]
    for _ in range(PEOPLE):
        who = person(rng)
        jobs = [g for g in GESTURES for _ in range(REPEATS)]
        rng.shuffle(jobs)
        for gesture in jobs:
            lines.append(",".join(number(v) for v in recording(rng, who, gesture)) + "," + gesture)
    return ("\n".join(lines) + "\n").encode("ascii")


def gzipped(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as z:
        z.write(data)
    return out.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the file instead of writing it"
    )
    args = parser.parse_args()
    text = csv_text()
    summary = (
        f"{len(text)} bytes of CSV, crc32 {zlib.crc32(text):08x}, "
        f"sha256 {hashlib.sha256(text).hexdigest()}"
    )
    if args.check:
        old = gzip.decompress(OUT.read_bytes())
        if old != text:
            sys.exit(f"{OUT} differs from what make_data.py generates ({summary})")
        print(f"{OUT}: up to date ({summary})")
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzipped(text))
    print(f"wrote {OUT}: {OUT.stat().st_size} bytes gzipped, {summary}")


if __name__ == "__main__":
    main()
