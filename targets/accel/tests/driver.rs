//! The driver's exact I2C traffic, checked against `embedded-hal-mock` buses.

use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use loam_accel::{Address, Config, DataRate, Error, Lis3dh, Range};

const LOW: u8 = 0x18;
const HIGH: u8 = 0x19;

/// The transactions of `Lis3dh::new` at `addr` with `config`: WHO_AM_I, then the two writes.
fn init(addr: u8, ctrl_reg1: u8, ctrl_reg4: u8) -> Vec<Transaction> {
    vec![
        Transaction::write_read(addr, vec![0x0F], vec![0x33]),
        Transaction::write(addr, vec![0x20, ctrl_reg1]),
        Transaction::write(addr, vec![0x23, ctrl_reg4]),
    ]
}

#[test]
fn new_checks_who_am_i_then_writes_ctrl_reg1_and_ctrl_reg4() {
    // 100 Hz (ODR 0101), normal mode, XYZ on: 0x57. BDU, ±4 g (FS 01), HR: 0x98.
    let mut bus = Mock::new(&init(LOW, 0x57, 0x98));
    let config = Config::new(DataRate::Hz100, Range::G4);
    let accel = Lis3dh::new(bus.clone(), Address::Sa0Low, config).unwrap();
    assert_eq!(accel.config(), config);
    assert_eq!(accel.address(), Address::Sa0Low);
    accel.release();
    bus.done();
}

#[test]
fn sa0_high_talks_to_0x19() {
    // 400 Hz (0111): 0x77; BDU, ±16 g (11), HR: 0xB8.
    let mut expectations = init(HIGH, 0x77, 0xB8);
    expectations.push(Transaction::write_read(HIGH, vec![0x27], vec![0x08]));
    let mut bus = Mock::new(&expectations);
    let config = Config::new(DataRate::Hz400, Range::G16);
    let mut accel = Lis3dh::new(bus.clone(), Address::Sa0High, config).unwrap();
    assert!(accel.data_ready().unwrap());
    accel.release();
    bus.done();
}

#[test]
fn config_register_values_for_every_rate_and_range() {
    let rates = [
        (DataRate::Hz1, 0x17, 1),
        (DataRate::Hz10, 0x27, 10),
        (DataRate::Hz25, 0x37, 25),
        (DataRate::Hz50, 0x47, 50),
        (DataRate::Hz100, 0x57, 100),
        (DataRate::Hz200, 0x67, 200),
        (DataRate::Hz400, 0x77, 400),
    ];
    for (rate, reg1, hz) in rates {
        assert_eq!(Config::new(rate, Range::G2).ctrl_reg1(), reg1, "{rate:?}");
        assert_eq!(rate.hz(), hz);
    }
    let ranges = [
        (Range::G2, 0x88),
        (Range::G4, 0x98),
        (Range::G8, 0xA8),
        (Range::G16, 0xB8),
    ];
    for (range, reg4) in ranges {
        assert_eq!(
            Config::new(DataRate::Hz1, range).ctrl_reg4(),
            reg4,
            "{range:?}"
        );
    }
    assert_eq!(Config::default(), Config::new(DataRate::Hz100, Range::G2));
    assert_eq!(Address::default().addr(), HIGH);
}

#[test]
fn wrong_who_am_i_is_wrong_device_and_writes_nothing() {
    let mut bus = Mock::new(&[Transaction::write_read(LOW, vec![0x0F], vec![0x32])]);
    let err = Lis3dh::new(bus.clone(), Address::Sa0Low, Config::default()).unwrap_err();
    assert_eq!(err, Error::WrongDevice { found: 0x32 });
    assert_eq!(
        err.to_string(),
        "the device is not a LIS3DH: WHO_AM_I reads 0x32, not 0x33"
    );
    bus.done();
}

#[test]
fn read_raw_is_one_auto_increment_write_read_decoding_negative_values() {
    let mut expectations = init(LOW, 0x57, 0x88);
    expectations.push(Transaction::write_read(
        LOW,
        vec![0xA8], // OUT_X_L | auto-increment
        vec![
            0xF0, 0xFF, // x: 0xFFF0 >> 4 = -1
            0x00, 0x80, // y: 0x8000 >> 4 = -2048
            0xF0, 0x7F, // z: 0x7FF0 >> 4 = 2047
        ],
    ));
    expectations.push(Transaction::write_read(
        LOW,
        vec![0xA8],
        vec![
            0x40, 0xED, // x: 0xED40 = -4800, >> 4 = -300
            0x10, 0x00, // y: 1
            0x0F, 0x00, // z: the unused low nibble is dropped: 0
        ],
    ));
    let mut bus = Mock::new(&expectations);
    let mut accel = Lis3dh::new(bus.clone(), Address::Sa0Low, Config::default()).unwrap();
    assert_eq!(accel.read_raw().unwrap(), [-1, -2048, 2047]);
    assert_eq!(accel.read_raw().unwrap(), [-300, 1, 0]);
    drop(accel);
    bus.done();
}

#[test]
fn read_g_scales_by_each_ranges_sensitivity() {
    // 1000 counts (0x3E80 = 1000 << 4) and -250 counts (0xF060) on every range.
    let sample = vec![0x80, 0x3E, 0x60, 0xF0, 0x00, 0x00];
    let cases = [
        (Range::G2, 0x88, [1.0, -0.25, 0.0]),
        (Range::G4, 0x98, [2.0, -0.5, 0.0]),
        (Range::G8, 0xA8, [4.0, -1.0, 0.0]),
        (Range::G16, 0xB8, [12.0, -3.0, 0.0]),
    ];
    for (range, reg4, expected) in cases {
        let mut expectations = init(LOW, 0x57, reg4);
        expectations.push(Transaction::write_read(LOW, vec![0xA8], sample.clone()));
        let mut bus = Mock::new(&expectations);
        let config = Config::new(DataRate::Hz100, range);
        let mut accel = Lis3dh::new(bus.clone(), Address::Sa0Low, config).unwrap();
        let g = accel.read_g().unwrap();
        for (axis, (got, want)) in g.iter().zip(expected).enumerate() {
            assert!(
                (got - want).abs() < 1e-6,
                "{range:?} axis {axis}: {got} g, expected {want} g"
            );
        }
        accel.release();
        bus.done();
    }
}

#[test]
fn data_ready_reads_status_reg_zyxda() {
    let mut expectations = init(LOW, 0x57, 0x88);
    expectations.push(Transaction::write_read(LOW, vec![0x27], vec![0x08]));
    expectations.push(Transaction::write_read(LOW, vec![0x27], vec![0xF7])); // all but bit 3
    expectations.push(Transaction::write_read(LOW, vec![0x27], vec![0xFF]));
    let mut bus = Mock::new(&expectations);
    let mut accel = Lis3dh::new(bus.clone(), Address::Sa0Low, Config::default()).unwrap();
    assert!(accel.data_ready().unwrap());
    assert!(!accel.data_ready().unwrap());
    assert!(accel.data_ready().unwrap());
    accel.release();
    bus.done();
}

#[test]
fn bus_error_during_new_is_error_bus() {
    let mut bus = Mock::new(&[
        Transaction::write_read(LOW, vec![0x0F], vec![0x00]).with_error(ErrorKind::Other)
    ]);
    let err = Lis3dh::new(bus.clone(), Address::Sa0Low, Config::default()).unwrap_err();
    assert_eq!(err, Error::Bus(ErrorKind::Other));
    assert!(err.to_string().starts_with("I2C bus error: "), "{err}");
    bus.done();

    // A failed config write is reported the same way.
    let mut bus = Mock::new(&[
        Transaction::write_read(LOW, vec![0x0F], vec![0x33]),
        Transaction::write(LOW, vec![0x20, 0x57]).with_error(ErrorKind::ArbitrationLoss),
    ]);
    let err = Lis3dh::new(bus.clone(), Address::Sa0Low, Config::default()).unwrap_err();
    assert_eq!(err, Error::Bus(ErrorKind::ArbitrationLoss));
    bus.done();
}

#[test]
fn bus_error_during_reads_is_error_bus() {
    use embedded_hal::i2c::NoAcknowledgeSource;
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let mut expectations = init(LOW, 0x57, 0x88);
    expectations.push(Transaction::write_read(LOW, vec![0xA8], vec![0; 6]).with_error(nack));
    expectations.push(Transaction::write_read(LOW, vec![0xA8], vec![0; 6]).with_error(nack));
    expectations.push(Transaction::write_read(LOW, vec![0x27], vec![0]).with_error(nack));
    let mut bus = Mock::new(&expectations);
    let mut accel = Lis3dh::new(bus.clone(), Address::Sa0Low, Config::default()).unwrap();
    assert_eq!(accel.read_raw(), Err(Error::Bus(nack)));
    assert_eq!(accel.read_g(), Err(Error::Bus(nack)));
    assert_eq!(accel.data_ready(), Err(Error::Bus(nack)));
    accel.release();
    bus.done();
}

#[test]
fn errors_are_copy_and_std_errors() {
    fn assert_error<E: core::error::Error + Copy>(_: E) {}
    assert_error(Error::<ErrorKind>::WrongDevice { found: 0 });
}
