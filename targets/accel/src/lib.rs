//! A driver for the ST LIS3DH 3-axis accelerometer over [`embedded_hal::i2c::I2c`], and
//! [`Replay`], a bus that answers like a LIS3DH from recorded samples.
//!
//! The driver is generic over the HAL: it owns any `I2c` bus (give it back with
//! [`Lis3dh::release`]) and runs the sensor in high-resolution (12-bit) mode with block data
//! update on, at the [`DataRate`] and [`Range`] of its [`Config`].
//!
//! ```
//! use loam_accel::{Address, Config, DataRate, Lis3dh, Range, Replay};
//!
//! // On a board the bus comes from the HAL; here it replays two recorded samples.
//! static RECORDING: [[i16; 3]; 2] = [[0, 0, 1000], [-500, 250, 1000]];
//! let bus = Replay::new(Address::Sa0Low, &RECORDING);
//! let config = Config::new(DataRate::Hz100, Range::G2);
//! let mut accel = Lis3dh::new(bus, Address::Sa0Low, config).unwrap();
//! assert!(accel.data_ready().unwrap());
//! assert_eq!(accel.read_raw().unwrap(), [0, 0, 1000]);
//! assert_eq!(accel.read_g().unwrap(), [-0.5, 0.25, 1.0]);
//! ```
//!
//! Cargo features:
//! - `defmt`: implements `defmt::Format` for the public types, for logging on microcontrollers.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod replay;

use embedded_hal::i2c::I2c;

pub use error::Error;
pub use replay::{Replay, ReplayError};

/// The LIS3DH's register addresses and bits that the driver and [`Replay`] use.
pub mod reg {
    /// Identifies the chip; reads [`WHO_AM_I_VALUE`].
    pub const WHO_AM_I: u8 = 0x0F;
    /// What [`WHO_AM_I`] reads on a LIS3DH.
    pub const WHO_AM_I_VALUE: u8 = 0x33;
    /// Data rate (bits 7:4), low-power enable (bit 3) and axis enables (bits 2:0).
    pub const CTRL_REG1: u8 = 0x20;
    /// Block data update (bit 7), full scale (bits 5:4) and high resolution (bit 3).
    pub const CTRL_REG4: u8 = 0x23;
    /// Data status; bit 3 ([`STATUS_ZYXDA`]) is set when a new X, Y and Z sample is ready.
    pub const STATUS_REG: u8 = 0x27;
    /// New-data bit of [`STATUS_REG`] for all three axes.
    pub const STATUS_ZYXDA: u8 = 1 << 3;
    /// The first output register; X, Y and Z follow as little-endian pairs up to `0x2D`.
    pub const OUT_X_L: u8 = 0x28;
    /// The last output register.
    pub const OUT_Z_H: u8 = 0x2D;
    /// Set in a register address to read or write consecutive registers in one transfer.
    pub const AUTO_INCREMENT: u8 = 0x80;
    /// Low-power enable in [`CTRL_REG1`].
    pub const CTRL_REG1_LPEN: u8 = 1 << 3;
    /// X, Y and Z axis enables in [`CTRL_REG1`].
    pub const CTRL_REG1_XYZ_EN: u8 = 0b111;
    /// Block data update in [`CTRL_REG4`]: the output registers are not updated between
    /// reading the low and high byte.
    pub const CTRL_REG4_BDU: u8 = 1 << 7;
    /// High-resolution (12-bit) output in [`CTRL_REG4`].
    pub const CTRL_REG4_HR: u8 = 1 << 3;
}

/// The sensor's 7-bit I2C address, set by the level of its SA0 pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Address {
    /// SA0 tied low: `0x18`.
    Sa0Low,
    /// SA0 tied high: `0x19` (most breakout boards pull it up).
    #[default]
    Sa0High,
}

impl Address {
    /// The 7-bit address on the bus.
    pub const fn addr(self) -> u8 {
        match self {
            Address::Sa0Low => 0x18,
            Address::Sa0High => 0x19,
        }
    }
}

/// Output data rate (CTRL_REG1 bits 7:4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DataRate {
    /// 1 Hz.
    Hz1,
    /// 10 Hz.
    Hz10,
    /// 25 Hz.
    Hz25,
    /// 50 Hz.
    Hz50,
    /// 100 Hz.
    #[default]
    Hz100,
    /// 200 Hz.
    Hz200,
    /// 400 Hz.
    Hz400,
}

impl DataRate {
    /// The ODR field value, `0b0001` for 1 Hz up to `0b0111` for 400 Hz.
    pub const fn odr_bits(self) -> u8 {
        match self {
            DataRate::Hz1 => 0b0001,
            DataRate::Hz10 => 0b0010,
            DataRate::Hz25 => 0b0011,
            DataRate::Hz50 => 0b0100,
            DataRate::Hz100 => 0b0101,
            DataRate::Hz200 => 0b0110,
            DataRate::Hz400 => 0b0111,
        }
    }

    /// The rate in hertz.
    pub const fn hz(self) -> u16 {
        match self {
            DataRate::Hz1 => 1,
            DataRate::Hz10 => 10,
            DataRate::Hz25 => 25,
            DataRate::Hz50 => 50,
            DataRate::Hz100 => 100,
            DataRate::Hz200 => 200,
            DataRate::Hz400 => 400,
        }
    }
}

/// Full-scale range (CTRL_REG4 bits 5:4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Range {
    /// ±2 g.
    #[default]
    G2,
    /// ±4 g.
    G4,
    /// ±8 g.
    G8,
    /// ±16 g.
    G16,
}

impl Range {
    /// The FS field value, `0b00` for ±2 g up to `0b11` for ±16 g.
    pub const fn fs_bits(self) -> u8 {
        match self {
            Range::G2 => 0b00,
            Range::G4 => 0b01,
            Range::G8 => 0b10,
            Range::G16 => 0b11,
        }
    }

    /// Sensitivity in high-resolution mode, in milli-g per count of [`Lis3dh::read_raw`]
    /// (datasheet table 4: 1, 2, 4 and 12 mg/digit).
    pub const fn mg_per_count(self) -> u8 {
        match self {
            Range::G2 => 1,
            Range::G4 => 2,
            Range::G8 => 4,
            Range::G16 => 12,
        }
    }
}

/// How [`Lis3dh::new`] sets the sensor up. The driver always uses high-resolution mode with
/// block data update and all three axes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct Config {
    /// Output data rate.
    pub data_rate: DataRate,
    /// Full-scale range.
    pub range: Range,
}

impl Config {
    /// A configuration with this data rate and range.
    pub const fn new(data_rate: DataRate, range: Range) -> Self {
        Config { data_rate, range }
    }

    /// The CTRL_REG1 value: the data rate, normal (not low-power) mode, X, Y and Z enabled.
    pub const fn ctrl_reg1(&self) -> u8 {
        (self.data_rate.odr_bits() << 4) | reg::CTRL_REG1_XYZ_EN
    }

    /// The CTRL_REG4 value: block data update, the range, high resolution.
    pub const fn ctrl_reg4(&self) -> u8 {
        reg::CTRL_REG4_BDU | (self.range.fs_bits() << 4) | reg::CTRL_REG4_HR
    }
}

/// A LIS3DH on an I2C bus that the driver owns.
#[derive(Debug)]
pub struct Lis3dh<I2C> {
    i2c: I2C,
    address: Address,
    config: Config,
}

impl<I2C: I2c> Lis3dh<I2C> {
    /// Checks that a LIS3DH answers at `address` (WHO_AM_I reads `0x33`) and configures it:
    /// CTRL_REG1 then CTRL_REG4, each in its own write.
    ///
    /// On an error the bus is dropped; a HAL whose bus must be recovered can pass `&mut bus`,
    /// which implements `I2c` too.
    pub fn new(i2c: I2C, address: Address, config: Config) -> Result<Self, Error<I2C::Error>> {
        let mut dev = Lis3dh {
            i2c,
            address,
            config,
        };
        let found = dev.read_register(reg::WHO_AM_I)?;
        if found != reg::WHO_AM_I_VALUE {
            return Err(Error::WrongDevice { found });
        }
        dev.write_register(reg::CTRL_REG1, config.ctrl_reg1())?;
        dev.write_register(reg::CTRL_REG4, config.ctrl_reg4())?;
        Ok(dev)
    }

    /// Whether a new X, Y and Z sample is ready (STATUS_REG's ZYXDA bit).
    pub fn data_ready(&mut self) -> Result<bool, Error<I2C::Error>> {
        Ok(self.read_register(reg::STATUS_REG)? & reg::STATUS_ZYXDA != 0)
    }

    /// The latest sample in counts, `[x, y, z]`, each in -2048..=2047; multiply by
    /// [`Range::mg_per_count`] for milli-g. Reads the six output registers in one transfer.
    pub fn read_raw(&mut self) -> Result<[i16; 3], Error<I2C::Error>> {
        let mut buf = [0u8; 6];
        self.i2c
            .write_read(
                self.address.addr(),
                &[reg::OUT_X_L | reg::AUTO_INCREMENT],
                &mut buf,
            )
            .map_err(Error::Bus)?;
        // Each axis is a little-endian, left-justified 12-bit value in high-resolution mode.
        let axis = |i: usize| i16::from_le_bytes([buf[2 * i], buf[2 * i + 1]]) >> 4;
        Ok([axis(0), axis(1), axis(2)])
    }

    /// The latest sample in g, `[x, y, z]`, scaled by the configured range's sensitivity.
    pub fn read_g(&mut self) -> Result<[f32; 3], Error<I2C::Error>> {
        let raw = self.read_raw()?;
        let mg = f32::from(self.config.range.mg_per_count());
        Ok(raw.map(|count| f32::from(count) * mg / 1000.0))
    }

    /// The configuration the sensor was set up with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The address the sensor answers at.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Gives the bus back; the sensor keeps running as configured.
    pub fn release(self) -> I2C {
        self.i2c
    }

    fn read_register(&mut self, register: u8) -> Result<u8, Error<I2C::Error>> {
        let mut value = [0u8];
        self.i2c
            .write_read(self.address.addr(), &[register], &mut value)
            .map_err(Error::Bus)?;
        Ok(value[0])
    }

    fn write_register(&mut self, register: u8, value: u8) -> Result<(), Error<I2C::Error>> {
        self.i2c
            .write(self.address.addr(), &[register, value])
            .map_err(Error::Bus)
    }
}
