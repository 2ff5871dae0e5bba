//! The replay bus: the real driver running over a recording, and the bus's LIS3DH behaviour.

use embedded_hal::i2c::{Error as _, ErrorKind, I2c, NoAcknowledgeSource, Operation};
use loam_accel::{Address, Config, DataRate, Error, Lis3dh, Range, Replay, ReplayError};

/// A short recording: the board lying flat, then tilted, then a negative spike.
static RECORDING: [[i16; 3]; 3] = [[0, 0, 500], [-250, 125, 433], [-2048, 2047, -1]];

#[test]
fn driver_runs_over_a_recording_and_configures_the_replayed_sensor() {
    let bus = Replay::once(Address::Sa0High, &RECORDING);
    let config = Config::new(DataRate::Hz50, Range::G4);
    let mut accel = Lis3dh::new(bus, Address::Sa0High, config).unwrap();

    let mut samples = Vec::new();
    while accel.data_ready().unwrap() {
        match accel.read_raw() {
            Ok(raw) => samples.push(raw),
            Err(Error::Bus(ReplayError::Exhausted)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(samples, RECORDING);

    let bus = accel.release();
    assert_eq!(
        bus.ctrl_reg1(),
        Config::new(DataRate::Hz50, Range::G4).ctrl_reg1()
    );
    assert_eq!(bus.ctrl_reg1(), 0x47);
    assert_eq!(bus.ctrl_reg4(), 0x98);
    assert_eq!(bus.samples_read(), 3);
    assert!(bus.is_exhausted());
}

#[test]
fn read_g_over_the_replay_uses_the_configured_range() {
    let bus = Replay::new(Address::Sa0Low, &RECORDING);
    let config = Config::new(DataRate::Hz100, Range::G4);
    let mut accel = Lis3dh::new(bus, Address::Sa0Low, config).unwrap();
    assert_eq!(accel.read_g().unwrap(), [0.0, 0.0, 1.0]); // 500 counts at 2 mg
    assert_eq!(accel.read_g().unwrap(), [-0.5, 0.25, 0.866]);
}

#[test]
fn new_cycles_through_the_recording() {
    let bus = Replay::new(Address::Sa0Low, &RECORDING);
    let mut accel = Lis3dh::new(bus, Address::Sa0Low, Config::default()).unwrap();
    for pass in 0..3 {
        for &sample in &RECORDING {
            assert_eq!(accel.read_raw().unwrap(), sample, "pass {pass}");
        }
    }
    let bus = accel.release();
    assert_eq!(bus.samples_read(), 9);
    assert!(!bus.is_exhausted());
}

#[test]
fn empty_recording_is_exhausted_but_still_a_lis3dh() {
    let mut accel = Lis3dh::new(
        Replay::new(Address::Sa0Low, &[]),
        Address::Sa0Low,
        Config::default(),
    )
    .unwrap();
    assert!(accel.data_ready().unwrap());
    assert_eq!(accel.read_raw(), Err(Error::Bus(ReplayError::Exhausted)));
    assert_eq!(ReplayError::Exhausted.kind(), ErrorKind::Other);
}

#[test]
fn wrong_address_is_not_acknowledged() {
    let err = Lis3dh::new(
        Replay::new(Address::Sa0High, &RECORDING),
        Address::Sa0Low,
        Config::default(),
    )
    .unwrap_err();
    assert_eq!(err, Error::Bus(ReplayError::NoDevice { address: 0x18 }));
    assert_eq!(
        ReplayError::NoDevice { address: 0x18 }.kind(),
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
    );
}

#[test]
fn registers_answer_like_a_lis3dh() {
    let mut bus = Replay::new(Address::Sa0Low, &RECORDING);
    let mut byte = [0u8];
    bus.write_read(0x18, &[0x0F], &mut byte).unwrap();
    assert_eq!(byte, [0x33]);
    bus.write_read(0x18, &[0x27], &mut byte).unwrap();
    assert_eq!(byte, [0x0F]);
    // Power-on CTRL_REG1; then an auto-increment write of CTRL_REG1..CTRL_REG4 in one transfer.
    bus.write_read(0x18, &[0x20], &mut byte).unwrap();
    assert_eq!(byte, [0x07]);
    bus.write(0x18, &[0x20 | 0x80, 0x57, 0x00, 0x00, 0x88])
        .unwrap();
    assert_eq!((bus.ctrl_reg1(), bus.ctrl_reg4()), (0x57, 0x88));
    let mut regs = [0u8; 4];
    bus.write_read(0x18, &[0xA0], &mut regs).unwrap();
    assert_eq!(regs, [0x57, 0, 0, 0x88]);

    // Read-only and missing registers are refused.
    assert_eq!(
        bus.write(0x18, &[0x0F, 0x00]),
        Err(ReplayError::ReadOnly { register: 0x0F })
    );
    assert_eq!(
        bus.write(0x18, &[0x28, 0x00]),
        Err(ReplayError::ReadOnly { register: 0x28 })
    );
    assert_eq!(
        bus.write_read(0x18, &[0x40], &mut byte),
        Err(ReplayError::NoSuchRegister { register: 0x40 })
    );
}

#[test]
fn output_bytes_are_left_justified_and_one_sample_spans_split_reads() {
    let mut bus = Replay::new(Address::Sa0Low, &[[1, -1, 3000], [7, 8, 9]]);
    // Without auto-increment the pointer stays on OUT_X_L.
    let mut two = [0u8; 2];
    bus.write_read(0x18, &[0x28], &mut two).unwrap();
    assert_eq!(two, [0x10, 0x10]);
    // The rest of the same sample, register by register, in one transaction.
    let mut rest = [0u8; 5];
    bus.transaction(
        0x18,
        &mut [Operation::Write(&[0x29 | 0x80]), Operation::Read(&mut rest)],
    )
    .unwrap();
    // x high 0x00; y = -1 << 4 = 0xFFF0; z clamped to 2047 << 4 = 0x7FF0.
    assert_eq!(rest, [0x00, 0xF0, 0xFF, 0xF0, 0x7F]);
    assert_eq!(bus.samples_read(), 1);
    let mut all = [0u8; 6];
    bus.write_read(0x18, &[0xA8], &mut all).unwrap();
    assert_eq!(all, [0x70, 0x00, 0x80, 0x00, 0x90, 0x00]);
    assert_eq!(bus.samples_read(), 2);
}

#[test]
fn replay_error_messages() {
    assert_eq!(
        ReplayError::NoDevice { address: 0x18 }.to_string(),
        "no device answers at address 0x18"
    );
    assert_eq!(
        ReplayError::Exhausted.to_string(),
        "the recording has no more samples"
    );
    assert_eq!(
        Error::<ReplayError>::Bus(ReplayError::Exhausted).to_string(),
        "I2C bus error: Exhausted"
    );
}
