//! On-device learning, with numbers: the bundled digits model (`models/digits`, trained on a
//! laptop, deployed frozen int8) meets a user whose camera sees digits mirrored and gets most
//! of them wrong. The drift monitor notices (from the training statistics the model carries),
//! and the board trains the model's last layer on 400 of that user's samples
//! (`runtime/tests/data/digits-mirrored.lmus`, recorded with the host's figures) and measures
//! the other 139 before and after. On a 16 KiB board (the micro:bit) it trains what the
//! model's stored training plan says instead: the part of the last layer that fits 9 KiB
//! (`runtime/tests/data/digits-small-ram.{loam,lmus}`: 8 of its 10 rows, kept int8; see
//! build.rs). It logs the accuracy gained, the RAM and flash used and the instructions per
//! training step, then (boards with RAM to spare) saves what it learned to NOR flash and
//! reads it back. Exits 0 only if it
//! reproduced the host's accuracy and checkpoint bits exactly and gained at least 40 points.
//!
//! Instruction counts come from SysTick under `qemu-system-arm -icount shift=0` (one
//! instruction per nanosecond of virtual time), calibrated against a loop of known length; on
//! a real board the same figure is a cycle count.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

#[entry]
fn main() -> ! {
    demo::run()
}

mod demo {
    use cortex_m::peripheral::SYST;
    use cortex_m::peripheral::syst::SystClkSource;
    use loam::Model;
    use loam::train::Trainer;
    use loam::train::replay::{Recording, replay};
    #[cfg(not(loam_small_ram))]
    use loam_firmware::flash_round_trip;
    use loam_firmware::{exit, fail};

    // models/digits/model.loam and runtime/tests/data/digits-mirrored.lmus unless the build
    // names others (see build.rs).
    static MODEL: &[u8] = loam::include_model!(concat!(env!("OUT_DIR"), "/learn-model.loam"));
    const ARENA_SIZE: usize = loam::format::arena_size(include_bytes!(concat!(
        env!("OUT_DIR"),
        "/learn-model.loam"
    )));
    static RECORDING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/learn-user.lmus"));
    include!(concat!(env!("OUT_DIR"), "/learn-state.rs"));
    #[cfg(not(loam_small_ram))]
    const SLOT: usize = 8192;

    #[repr(C, align(16))]
    struct Arena([u8; ARENA_SIZE]);

    static mut ARENA: Arena = Arena([0; ARENA_SIZE]);
    static mut STATE: [f32; STATE_LEN] = [0.0; STATE_LEN];
    #[cfg(not(loam_small_ram))]
    static mut FLASH: [u8; 2 * SLOT] = [0xFF; 2 * SLOT];

    /// SysTick's elapsed ticks, shifted into the top 24 bits of a `u32` so that wrapping
    /// differences of two readings are right across the 24-bit counter's wrap.
    fn ticks() -> u32 {
        (0x00FF_FFFF - SYST::get_current()) << 8
    }

    /// Runs `iterations` of a two-instruction loop (`subs`, `bne`).
    fn spin(iterations: u32) {
        // SAFETY: a register-only countdown loop; it touches no memory and no stack.
        unsafe {
            core::arch::asm!(
                "1:",
                "subs {n}, #1",
                "bne 1b",
                n = inout(reg) iterations => _,
                options(nomem, nostack),
            );
        }
    }

    /// Stack bytes used so far: the distance from the top of RAM to the deepest word no longer
    /// holding the paint [`paint_stack`] laid down.
    fn stack_used() -> usize {
        unsafe extern "C" {
            static mut __ebss: u32;
            static mut _stack_start: u32;
        }
        let bottom = core::ptr::addr_of_mut!(__ebss);
        let top = core::ptr::addr_of_mut!(_stack_start) as usize;
        let mut p = bottom;
        // SAFETY: reads words between the end of .bss and the top of RAM, all RAM.
        unsafe {
            while (p as usize) < top && core::ptr::read_volatile(p) == PAINT {
                p = p.add(1);
            }
        }
        top - p as usize
    }

    const PAINT: u32 = 0x5EED_5EED;

    /// Fills the free RAM between .bss and the current stack pointer with [`PAINT`].
    fn paint_stack() {
        unsafe extern "C" {
            static mut __ebss: u32;
        }
        let mut p = core::ptr::addr_of_mut!(__ebss);
        // Leave this function's own frame (well under 256 bytes) alone.
        let limit = cortex_m::register::msp::read() as usize - 256;
        // SAFETY: writes only words between the end of .bss and below the live stack.
        unsafe {
            while (p as usize) < limit {
                core::ptr::write_volatile(p, PAINT);
                p = p.add(1);
            }
        }
    }

    pub fn run() -> ! {
        paint_stack();
        let mut core = cortex_m::Peripherals::take().unwrap_or_else(|| fail("peripherals", 0u8));
        core.SYST.set_clock_source(SystClkSource::Core);
        core.SYST.set_reload(0x00FF_FFFF);
        core.SYST.clear_current();
        core.SYST.enable_counter();
        const CALIBRATION: u32 = 1_000_000;
        let start = ticks();
        spin(CALIBRATION);
        let calibration_ticks = (ticks().wrapping_sub(start) >> 8).max(1);

        let model = Model::from_bytes(MODEL).unwrap_or_else(|e| fail("model", e));
        let recording = Recording::parse(RECORDING).unwrap_or_else(|e| fail("recording", e));
        let needed =
            Trainer::state_len(&model, &recording.config).unwrap_or_else(|e| fail("head", e));
        defmt::info!(
            "on-device learning on {}: model {=usize} B + user data {=usize} B flash; arena {=usize} B + training state {=usize} B RAM",
            env!("LOAM_FIRMWARE_TARGET"),
            MODEL.len(),
            RECORDING.len(),
            ARENA_SIZE,
            4 * needed
        );
        if needed != STATE_LEN {
            defmt::error!(
                "state needs {=usize} values, firmware has {=usize}",
                needed,
                STATE_LEN
            );
            exit(1)
        }
        // SAFETY: `main` runs once and is the only code touching these statics.
        let (arena, state) = unsafe {
            (
                &mut (*core::ptr::addr_of_mut!(ARENA)).0,
                &mut *core::ptr::addr_of_mut!(STATE),
            )
        };
        let mut trainer = Trainer::new(&model, arena, state, recording.config)
            .unwrap_or_else(|e| fail("trainer", e));
        let drift = drift(&model, &mut trainer, &recording);
        defmt::info!(
            "drift monitor on the user's data: score {=f32} ({}) {}",
            drift.score,
            if drift.is_drifting() {
                "drifting: fine-tune"
            } else {
                "no drift"
            },
            drift
        );
        if !drift.is_drifting() {
            defmt::error!("the monitor missed the user's shift");
            exit(1)
        }
        let report =
            replay(&mut trainer, &recording, &mut ticks).unwrap_or_else(|e| fail("training", e));
        let percent = |n: u16| 100.0 * f32::from(n) / f32::from(report.holdout);
        let per_step = (report.step_ticks >> 8) / u64::from(report.steps.max(1));
        // Instructions per tick, from the calibration loop's known length.
        let instructions = per_step * 2 * u64::from(CALIBRATION) / u64::from(calibration_ticks);
        defmt::info!(
            "user's {=u16} held-out digits: {=f32}% correct before, {=f32}% after {=u32} steps ({=usize} epochs of {=usize} samples); loss {=f32} -> {=f32}",
            report.holdout,
            percent(report.correct_before),
            percent(report.correct_after),
            report.steps,
            recording.epochs,
            recording.train,
            report.first_loss,
            report.last_loss
        );
        defmt::info!(
            "{=u64} instructions per training step ({=u64} SysTick ticks); stack {=usize} B at most",
            instructions,
            per_step,
            stack_used()
        );
        if !report.matches(&recording.expected) {
            defmt::error!(
                "host recorded {}, this board got {}",
                recording.expected,
                report
            );
            exit(1)
        }
        // Both demos gain far more (the full last layer 68 points, the 9 KiB plan 54).
        if percent(report.correct_after) < percent(report.correct_before) + 40.0 {
            defmt::error!("training gained less than 40 points of accuracy");
            exit(1)
        }
        defmt::info!(
            "checkpoint digest {=u32:#010x} and accuracies match the host's",
            report.digest
        );
        save_and_reload(&model, &mut trainer)
    }

    /// What the drift monitor makes of the user's held-out samples and the deployed model's
    /// answers, against the training statistics `loam train` stored in the model.
    fn drift(
        model: &Model<'_>,
        trainer: &mut Trainer<'_, '_, '_>,
        recording: &Recording<'_>,
    ) -> loam::monitor::DriftReport {
        use loam::monitor::{DriftMonitor, DriftReference};
        let reference = DriftReference::from_model(model).unwrap_or_else(|e| fail("drift", e));
        let mut monitor =
            DriftMonitor::<64, 10>::new(reference, 256).unwrap_or_else(|e| fail("drift", e));
        let interpreter = trainer.interpreter_mut();
        let scales = |t: Option<loam::format::TensorRecord<'_>>| match t.map(|t| t.quantization) {
            Some(loam::Quantization::PerTensor { scale, zero_point }) => (scale, zero_point),
            _ => fail("drift", "the model's input and output are not int8"),
        };
        let (input, output) = (
            scales(
                model
                    .inputs()
                    .get(0)
                    .and_then(|i| model.tensor(usize::from(i))),
            ),
            scales(
                model
                    .outputs()
                    .get(0)
                    .and_then(|i| model.tensor(usize::from(i))),
            ),
        );
        for i in recording.train..recording.train + recording.holdout {
            let x = recording.sample(i);
            let _ = monitor.observe_input_i8(x, input.0, input.1);
            let run = interpreter
                .input_mut::<i8>(0)
                .map(|slot| slot.copy_from_slice(x))
                .and_then(|()| interpreter.invoke())
                .and_then(|()| interpreter.output::<i8>(0));
            match run {
                Ok(p) => monitor.observe_probabilities_i8(p, output.0, output.1),
                Err(e) => fail("drift", e),
            }
        }
        monitor.report()
    }

    /// A 16 KiB board has no RAM for a RAM-backed flash beside the demo; on the board itself
    /// the checkpoint goes to its NOR flash through the same `CheckpointStore`, which the
    /// `checkpoint` firmware tests on this board.
    #[cfg(loam_small_ram)]
    fn save_and_reload(_: &Model<'_>, _: &mut Trainer<'_, '_, '_>) -> ! {
        defmt::info!("flash round trip left out: no RAM for a simulated flash on this board");
        exit(0)
    }

    /// Saves the trained layer to (RAM-backed) NOR flash, then restores it into the trainer
    /// after a reset, as a board does across a power cycle.
    #[cfg(not(loam_small_ram))]
    fn save_and_reload(model: &Model<'_>, trainer: &mut Trainer<'_, '_, '_>) -> ! {
        // SAFETY: called once from `main`, the only code touching FLASH.
        let flash = unsafe { &mut *core::ptr::addr_of_mut!(FLASH) };
        let mut payload = [0u8; SLOT];
        let (len, slot) = flash_round_trip(model, trainer, flash, &mut payload);
        defmt::info!(
            "learned layer ({=usize} B) saved to flash slot {=usize} and restored",
            len,
            slot
        );
        exit(0)
    }
}
