use core::fmt;

/// Everything the driver can report. Small and `Copy` (when the bus error is) so it costs
/// nothing to return on a microcontroller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error<E> {
    /// The I2C bus reported an error (no acknowledge, arbitration loss, ...).
    Bus(E),
    /// The device at the address is not a LIS3DH: WHO_AM_I did not read `0x33`.
    WrongDevice {
        /// The WHO_AM_I value that was read.
        found: u8,
    },
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bus(e) => write!(f, "I2C bus error: {e:?}"),
            Error::WrongDevice { found } => write!(
                f,
                "the device is not a LIS3DH: WHO_AM_I reads {found:#04x}, not 0x33"
            ),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}
