use core::fmt;

use embedded_hal::i2c::{self, ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::{Address, reg};

/// Registers 0x00..=0x3F; the LIS3DH has none above.
const REGISTERS: usize = 0x40;

/// An I2C bus with a simulated LIS3DH on it that plays back recorded samples, so firmware can
/// run the real [`crate::Lis3dh`] driver where there is no sensor (under QEMU, in tests).
///
/// It answers at one [`Address`] like the chip does:
/// - WHO_AM_I reads `0x33`;
/// - the control and interrupt registers (`0x1E..=0x26`, `0x2E..=0x3F`) accept writes and keep
///   them, so [`Replay::ctrl_reg1`], [`Replay::ctrl_reg4`] and [`Replay::register`] show how the
///   driver configured the sensor;
/// - STATUS_REG always reads `0x0F`: a new X, Y and Z sample is always ready;
/// - OUT_X_L..OUT_Z_H (`0x28..=0x2D`) hold the next recorded sample, encoded as the chip does in
///   high-resolution mode (little-endian, 12 bits left-justified). A sample is taken from the
///   recording when a read reaches the first output byte and is used up when a read reaches
///   OUT_Z_H, so reading the six bytes in one transfer, as the driver does, uses one sample.
/// - A register address with bit 7 set ([`reg::AUTO_INCREMENT`]) steps through consecutive
///   registers; without it, repeated bytes go to the same register.
///
/// The samples are raw counts as [`crate::Lis3dh::read_raw`] returns them (-2048..=2047; larger
/// values are clamped), recorded at the range the replaying firmware configures. A bus made by
/// [`Replay::new`] plays the recording over and over; one made by [`Replay::once`] plays it
/// once and then answers reads of the output registers with [`ReplayError::Exhausted`].
/// An empty recording answers them with `Exhausted` either way.
#[derive(Debug, Clone)]
pub struct Replay<'a> {
    address: u8,
    samples: &'a [[i16; 3]],
    cycle: bool,
    /// Index of the next sample to take from the recording.
    next: usize,
    /// Samples used up so far, counting every pass over the recording.
    samples_read: usize,
    /// The sample in the output registers while a read of them is under way.
    latched: Option<[u8; 6]>,
    registers: [u8; REGISTERS],
    /// The register the next byte reads or writes, and whether it steps after each byte.
    pointer: u8,
    auto_increment: bool,
}

/// What the [`Replay`] bus answers with when the driver does something a LIS3DH would not
/// accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReplayError {
    /// Nothing answers at this 7-bit address.
    NoDevice {
        /// The address that was sent.
        address: u8,
    },
    /// The register does not exist (above `0x3F`).
    NoSuchRegister {
        /// The register address, without the auto-increment bit.
        register: u8,
    },
    /// The register is read-only.
    ReadOnly {
        /// The register address, without the auto-increment bit.
        register: u8,
    },
    /// The recording has no more samples (or none at all).
    Exhausted,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::NoDevice { address } => {
                write!(f, "no device answers at address {address:#04x}")
            }
            ReplayError::NoSuchRegister { register } => {
                write!(f, "the LIS3DH has no register {register:#04x}")
            }
            ReplayError::ReadOnly { register } => {
                write!(f, "register {register:#04x} is read-only")
            }
            ReplayError::Exhausted => f.write_str("the recording has no more samples"),
        }
    }
}

impl core::error::Error for ReplayError {}

impl i2c::Error for ReplayError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReplayError::NoDevice { .. } => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
            // The chip would not acknowledge a write it cannot take.
            ReplayError::NoSuchRegister { .. } | ReplayError::ReadOnly { .. } => {
                ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)
            }
            ReplayError::Exhausted => ErrorKind::Other,
        }
    }
}

impl<'a> Replay<'a> {
    /// A bus with a LIS3DH at `address` that plays `samples` over and over.
    pub const fn new(address: Address, samples: &'a [[i16; 3]]) -> Self {
        Self::with_cycle(address, samples, true)
    }

    /// A bus with a LIS3DH at `address` that plays `samples` once, then answers reads of the
    /// output registers with [`ReplayError::Exhausted`].
    pub const fn once(address: Address, samples: &'a [[i16; 3]]) -> Self {
        Self::with_cycle(address, samples, false)
    }

    const fn with_cycle(address: Address, samples: &'a [[i16; 3]], cycle: bool) -> Self {
        let mut registers = [0u8; REGISTERS];
        // Power-on values from the datasheet's register map.
        registers[reg::WHO_AM_I as usize] = reg::WHO_AM_I_VALUE;
        registers[0x1E] = 0x10; // CTRL_REG0
        registers[reg::CTRL_REG1 as usize] = 0x07; // power-down, X, Y and Z enabled
        Replay {
            address: address.addr(),
            samples,
            cycle,
            next: 0,
            samples_read: 0,
            latched: None,
            registers,
            pointer: 0,
            auto_increment: false,
        }
    }

    /// The value of a register as the driver left it; `0` above `0x3F`. The output and status
    /// registers read as stored, not as the recording answers them.
    pub fn register(&self, register: u8) -> u8 {
        self.registers
            .get(usize::from(register))
            .copied()
            .unwrap_or(0)
    }

    /// CTRL_REG1 as the driver last wrote it (the power-on `0x07` if it has not).
    pub fn ctrl_reg1(&self) -> u8 {
        self.register(reg::CTRL_REG1)
    }

    /// CTRL_REG4 as the driver last wrote it (`0x00` if it has not).
    pub fn ctrl_reg4(&self) -> u8 {
        self.register(reg::CTRL_REG4)
    }

    /// How many samples reads have used up, counting every pass over the recording.
    pub fn samples_read(&self) -> usize {
        self.samples_read
    }

    /// Whether a bus made by [`Replay::once`] has played its whole recording (always `false`
    /// for one made by [`Replay::new`] with samples in it).
    pub fn is_exhausted(&self) -> bool {
        self.next >= self.samples.len() && (!self.cycle || self.samples.is_empty())
    }

    /// The output registers' bytes for the next sample of the recording.
    fn take_sample(&mut self) -> Result<[u8; 6], ReplayError> {
        if self.next >= self.samples.len() {
            if !self.cycle || self.samples.is_empty() {
                return Err(ReplayError::Exhausted);
            }
            self.next = 0;
        }
        let sample = self.samples[self.next];
        self.next += 1;
        let mut bytes = [0u8; 6];
        for (axis, &count) in sample.iter().enumerate() {
            // High-resolution mode: 12 bits, left-justified in a little-endian i16.
            let word = count.clamp(-2048, 2047) << 4;
            bytes[2 * axis..2 * axis + 2].copy_from_slice(&word.to_le_bytes());
        }
        Ok(bytes)
    }

    /// Moves to the next register if the sub-address asked for auto-increment.
    fn step(&mut self) {
        if self.auto_increment {
            self.pointer = self.pointer.wrapping_add(1) & 0x7F;
        }
    }

    fn read_byte(&mut self) -> Result<u8, ReplayError> {
        let register = self.pointer;
        let value = match register {
            reg::STATUS_REG => 0x0F, // ZYXDA and XDA, YDA, ZDA: always new data
            reg::OUT_X_L..=reg::OUT_Z_H => {
                let bytes = match self.latched {
                    Some(bytes) => bytes,
                    None => {
                        let bytes = self.take_sample()?;
                        self.latched = Some(bytes);
                        bytes
                    }
                };
                if register == reg::OUT_Z_H {
                    self.latched = None;
                    self.samples_read += 1;
                }
                bytes[usize::from(register - reg::OUT_X_L)]
            }
            _ => *self
                .registers
                .get(usize::from(register))
                .ok_or(ReplayError::NoSuchRegister { register })?,
        };
        self.step();
        Ok(value)
    }

    fn write_byte(&mut self, value: u8) -> Result<(), ReplayError> {
        let register = self.pointer;
        match register {
            0x1E..=0x26 | 0x2E..=0x3F => self.registers[usize::from(register)] = value,
            0x00..=0x1D | reg::STATUS_REG..=reg::OUT_Z_H => {
                return Err(ReplayError::ReadOnly { register });
            }
            _ => return Err(ReplayError::NoSuchRegister { register }),
        }
        self.step();
        Ok(())
    }
}

impl ErrorType for Replay<'_> {
    type Error = ReplayError;
}

impl I2c for Replay<'_> {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        if address != self.address {
            return Err(ReplayError::NoDevice { address });
        }
        // The first byte written after a (repeated) start is the register sub-address;
        // adjacent write operations are one transfer, so only the first of a run sets it.
        let mut after_write = false;
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    let mut bytes = bytes.iter();
                    if !after_write {
                        if let Some(&sub) = bytes.next() {
                            self.pointer = sub & !reg::AUTO_INCREMENT;
                            self.auto_increment = sub & reg::AUTO_INCREMENT != 0;
                            after_write = true;
                        }
                    }
                    for &value in bytes {
                        self.write_byte(value)?;
                    }
                }
                Operation::Read(buffer) => {
                    after_write = false;
                    for byte in buffer.iter_mut() {
                        *byte = self.read_byte()?;
                    }
                }
            }
        }
        Ok(())
    }
}
