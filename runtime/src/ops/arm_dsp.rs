//! The Arm DSP extension's SIMD instructions that the int8 kernels build on, as safe
//! functions over `asm!` (the `core::arch::arm` intrinsics are not stable). Compiled only for
//! cores that have them (`loam_arm_dsp`, set by build.rs), so executing them is always valid;
//! none touches memory or flags.
//!
//! A 32-bit word holds two 16-bit lanes: `(hi, lo)`. `sxtb16` sign-extends bytes 0 and 2 of a
//! word into the lanes, `sxtb16_ror8` bytes 1 and 3; `smlad` adds both lane products to an
//! accumulator (wrapping, like the reference kernels' `wrapping_add`).

use core::arch::asm;

/// Bytes 0 and 2 of `x`, sign-extended to 16-bit lanes.
#[inline(always)]
pub(crate) fn sxtb16(x: u32) -> u32 {
    let out: u32;
    // SAFETY: a register-only instruction this core has (see the module comment).
    unsafe {
        asm!("sxtb16 {o}, {x}", o = lateout(reg) out, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    out
}

/// Bytes 1 and 3 of `x`, sign-extended to 16-bit lanes.
#[inline(always)]
pub(crate) fn sxtb16_ror8(x: u32) -> u32 {
    let out: u32;
    // SAFETY: as above.
    unsafe {
        asm!("sxtb16 {o}, {x}, ror #8", o = lateout(reg) out, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    out
}

/// Lanes of `a` plus bytes 0 and 2 of `x` sign-extended (16-bit lane arithmetic).
#[inline(always)]
pub(crate) fn sxtab16(a: u32, x: u32) -> u32 {
    let out: u32;
    // SAFETY: as above.
    unsafe {
        asm!("sxtab16 {o}, {a}, {x}", o = lateout(reg) out, a = in(reg) a, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    out
}

/// Lanes of `a` plus bytes 1 and 3 of `x` sign-extended.
#[inline(always)]
pub(crate) fn sxtab16_ror8(a: u32, x: u32) -> u32 {
    let out: u32;
    // SAFETY: as above.
    unsafe {
        asm!("sxtab16 {o}, {a}, {x}, ror #8", o = lateout(reg) out, a = in(reg) a, x = in(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    out
}

/// The per-byte signed maximum of `a` and `b`: `ssub8` sets each byte lane's GE flag where
/// `a - b >= 0`, then `sel` takes `a`'s byte there and `b`'s elsewhere.
#[inline(always)]
pub(crate) fn max_i8x4(a: u32, b: u32) -> u32 {
    let out: u32;
    // SAFETY: as above; the GE flags the pair sets are read by `sel` inside the same block
    // (so no `preserves_flags`).
    unsafe {
        asm!("ssub8 {o}, {a}, {b}", "sel {o}, {a}, {b}", o = out(reg) out, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack))
    };
    out
}

/// The per-byte signed minimum of `a` and `b`.
#[inline(always)]
pub(crate) fn min_i8x4(a: u32, b: u32) -> u32 {
    let out: u32;
    // SAFETY: as in `max_i8x4`.
    unsafe {
        asm!("ssub8 {o}, {a}, {b}", "sel {o}, {b}, {a}", o = out(reg) out, a = in(reg) a, b = in(reg) b, options(pure, nomem, nostack))
    };
    out
}

/// `acc + a.lo * b.lo + a.hi * b.hi` (signed 16-bit lanes), wrapping.
#[inline(always)]
pub(crate) fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let out: i32;
    // SAFETY: as above. SMLAD sets the Q flag on overflow, which nothing reads; the sum
    // itself wraps modulo 2^32.
    unsafe {
        asm!("smlad {o}, {a}, {b}, {c}", o = lateout(reg) out, a = in(reg) a, b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack))
    };
    out
}

/// `acc + a.lo * b.lo` (signed 16-bit), wrapping.
#[inline(always)]
pub(crate) fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
    let out: i32;
    // SAFETY: as for `smlad`.
    unsafe {
        asm!("smlabb {o}, {a}, {b}, {c}", o = lateout(reg) out, a = in(reg) a, b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack))
    };
    out
}

/// `acc + a.hi * b.hi` (signed 16-bit), wrapping.
#[inline(always)]
pub(crate) fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
    let out: i32;
    // SAFETY: as for `smlad`.
    unsafe {
        asm!("smlatt {o}, {a}, {b}, {c}", o = lateout(reg) out, a = in(reg) a, b = in(reg) b, c = in(reg) acc, options(pure, nomem, nostack))
    };
    out
}

/// Four bytes starting at `bytes[i]` as a little-endian word.
#[inline(always)]
pub(crate) fn word_i8(bytes: &[i8], i: usize) -> u32 {
    let b = &bytes[i..i + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

/// Two 16-bit values starting at `v[i]` as one word, `v[i]` in the low lane.
#[inline(always)]
pub(crate) fn word_i16(v: &[i16], i: usize) -> u32 {
    let p = &v[i..i + 2];
    (p[0] as u16 as u32) | ((p[1] as u16 as u32) << 16)
}

/// `-zero_point` in both 16-bit lanes, to subtract with `sxtab16`.
#[inline(always)]
pub(crate) fn offset_pair(zero_point: i32) -> u32 {
    let lane = (zero_point.wrapping_neg() as u32) & 0xffff;
    lane | (lane << 16)
}
