//! Gesture recognition from an accelerometer: the bundled gestures model (`models/gestures`,
//! int8, a 1-D CNN over 2 s of 3-axis readings at 50 Hz) fed by a LIS3DH through the
//! `loam-accel` driver over `embedded-hal` 1.0 I2C. Under QEMU there is no sensor, so the bus
//! is `loam_accel::Replay`, which answers like the chip from recordings of people the model
//! never saw (`data/gestures-lis3dh.bin`, made by `tools/tests/gestures_replay.rs`). On a board,
//! the same code takes the HAL's I2C bus instead.
//!
//! Per recording it polls the sensor for 100 readings, applies the preprocessing stored in the
//! model, quantizes, runs the model and logs the gesture with the instructions the inference
//! took. Exits 0 only if every prediction is the one the host made from the same counts.
//!
//! Instruction counts come from SysTick under `qemu-system-arm -icount shift=0` (one
//! instruction per nanosecond of virtual time); on a board they are cycles.
#![no_std]
#![no_main]

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::entry;
use loam::preprocess::Preprocessing;
use loam::quant::QuantParams;
use loam::{Interpreter, Model, Quantization};
use loam_accel::{Address, Config, DataRate, Lis3dh, Range, Replay};
use loam_firmware::{exit, fail};

/// `MODEL`, `ARENA_SIZE` and `Arena`, written by `loam export models/gestures/model.loam -o
/// src/bin/gestures/model.rs` (with the `.loam` beside it; `tools/tests/gestures_replay.rs`
/// checks both are current).
mod model;

use model::{ARENA_SIZE, Arena, MODEL};

/// The recording, aligned so its counts can be read in place as `[i16; 3]`.
#[repr(C, align(4))]
struct Aligned<B: ?Sized>(B);
static RECORDING: &Aligned<[u8]> = &Aligned(*include_bytes!("../../../data/gestures-lis3dh.bin"));
const HEADER: usize = 16;
/// Readings per recording: 2 s at 50 Hz.
const STEPS: usize = 100;
const FEATURES: usize = 3 * STEPS;

static mut ARENA: Arena = Arena::new();

/// The recording's parts: the counts, a label per recording and the host's prediction.
struct Recording {
    samples: &'static [[i16; 3]],
    labels: &'static [u8],
    predicted: &'static [u8],
    mg_per_count: u16,
}

fn recording() -> Recording {
    let bytes = &RECORDING.0;
    let word = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    if bytes.len() < HEADER || &bytes[..4] != b"LMGR" || word(4) != 1 {
        fail("recording", "not a version 1 gestures recording");
    }
    let (windows, steps) = (usize::from(word(6)), usize::from(word(8)));
    let samples_len = windows * steps;
    if steps != STEPS || bytes.len() != HEADER + 6 * samples_len + 2 * windows {
        fail("recording", "its length does not match its header");
    }
    let counts = &bytes[HEADER..HEADER + 6 * samples_len];
    // SAFETY: `counts` starts 16 bytes into a 4-aligned static, so at 2-byte alignment, and
    // holds `samples_len` little-endian `[i16; 3]` (this target is little-endian); `[i16; 3]`
    // has no invalid bit patterns.
    let samples =
        unsafe { core::slice::from_raw_parts(counts.as_ptr().cast::<[i16; 3]>(), samples_len) };
    let tail = &bytes[HEADER + 6 * samples_len..];
    Recording {
        samples,
        labels: &tail[..windows],
        predicted: &tail[windows..],
        mg_per_count: word(10),
    }
}

/// SysTick's elapsed ticks in the top 24 bits of a `u32`, so wrapping differences of two
/// readings are right across the 24-bit counter's wrap.
fn ticks() -> u32 {
    (0x00FF_FFFF - SYST::get_current()) << 8
}

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap_or_else(|| fail("peripherals", 0u8));
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(0x00FF_FFFF);
    core.SYST.clear_current();
    core.SYST.enable_counter();

    let recording = recording();
    let range = Range::G8;
    if recording.mg_per_count != u16::from(range.mg_per_count()) {
        fail("recording", "it was recorded at another range");
    }
    let model = Model::from_bytes(MODEL).unwrap_or_else(|e| fail("model", e));
    let input = model
        .inputs()
        .get(0)
        .and_then(|i| model.tensor(usize::from(i)))
        .unwrap_or_else(|| fail("model", "no input"));
    let Quantization::PerTensor { scale, zero_point } = input.quantization else {
        fail("model", "the input is not int8")
    };
    let quant = QuantParams { scale, zero_point };
    let preprocessing = match Preprocessing::from_model(&model) {
        Ok(Some(p)) => p,
        Ok(None) => fail("model", "no stored preprocessing"),
        Err(e) => fail("model", e),
    };
    let name = |class: usize| model.labels().nth(class).unwrap_or("?");

    let bus = Replay::once(Address::Sa0High, recording.samples);
    let mut sensor = Lis3dh::new(bus, Address::Sa0High, Config::new(DataRate::Hz50, range))
        .unwrap_or_else(|e| fail("sensor", e));
    defmt::info!(
        "gestures on {}: LIS3DH at {=u8:#04x}, 50 Hz, ±8 g; model {=usize} B flash, arena {=usize} B RAM",
        env!("LOAM_FIRMWARE_TARGET"),
        sensor.address().addr(),
        MODEL.len(),
        ARENA_SIZE
    );
    // SAFETY: `main` runs once and is the only code that touches ARENA.
    let arena = unsafe { &mut (*core::ptr::addr_of_mut!(ARENA)).0 };
    let mut interpreter = Interpreter::new(&model, arena).unwrap_or_else(|e| fail("arena", e));

    let (mut correct, mut same_as_host) = (0usize, 0usize);
    let mut slowest = 0u32;
    for (window, (&label, &host)) in recording.labels.iter().zip(recording.predicted).enumerate() {
        let mut g = [0f32; FEATURES];
        for reading in g.chunks_exact_mut(3) {
            // The replay bus always has a reading ready; a real sensor makes this wait 20 ms.
            while !sensor.data_ready().unwrap_or_else(|e| fail("sensor", e)) {}
            reading.copy_from_slice(&sensor.read_g().unwrap_or_else(|e| fail("sensor", e)));
        }
        let slot = interpreter
            .input_mut::<i8>(0)
            .unwrap_or_else(|e| fail("input", e));
        for (j, (q, &x)) in slot.iter_mut().zip(&g).enumerate() {
            *q = quant.quantize(preprocessing.apply(j, x), -128, 127) as i8;
        }
        let start = ticks();
        interpreter.invoke().unwrap_or_else(|e| fail("invoke", e));
        let took = ticks().wrapping_sub(start) >> 8;
        slowest = slowest.max(took);
        let p = interpreter
            .output::<i8>(0)
            .unwrap_or_else(|e| fail("output", e));
        let mut best = 0;
        for (c, &v) in p.iter().enumerate() {
            if v > p[best] {
                best = c;
            }
        }
        correct += usize::from(best == usize::from(label));
        same_as_host += usize::from(best == usize::from(host));
        defmt::debug!(
            "recording {=usize}: {=str} (was {=str}), {=u32} instructions",
            window,
            name(best),
            name(usize::from(label)),
            took
        );
    }
    let windows = recording.labels.len();
    defmt::info!(
        "{=usize} recordings of people the model never saw: {=usize} right; {=usize} of {=usize} predictions identical to the host's; at most {=u32} instructions per inference",
        windows,
        correct,
        same_as_host,
        windows,
        slowest
    );
    exit(if same_as_host == windows { 0 } else { 1 })
}
