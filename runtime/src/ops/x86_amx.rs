//! The AMX int8 GEMM of the convolution's AMX kernel: 32 activation rows (two tiles of
//! sixteen) against two panels of sixteen output channels per pass, one `tdpbusd` per row
//! tile, panel and 64 bytes of depth (16 x 16 x 64 multiply-adds), where AVX-512 VNNI's
//! `vpdpbusd` does 16 x 4 per instruction.
//!
//! It reuses the VNNI kernels' forms unchanged ([`crate::ops::x86_vnni`]): activations
//! flipped to `x + 128` in [`TileRows`] (`tdpbusd`, like `vpdpbusd`, multiplies unsigned
//! bytes by signed ones), and weights in [`PackedWeights`]' panels, whose rows of sixteen
//! channels' four bytes are exactly the layout of a `tdpbusd` B tile. Both are padded to a
//! multiple of 64 bytes of depth, zeros meeting zeros. The sums are exact modulo 2^32, as
//! the reference's wrapping accumulator, so the results are the reference's bytes.
//!
//! Inline assembly: Rust has no stable AMX intrinsics. [`Isa::Amx`](crate::isa::Isa::Amx)
//! asks the CPU and the OS (Linux grants the tile state per process) before any kernel runs
//! this; a [`TileSession`] configures the tiles for a layer and releases them when the
//! layer is done, so no tile state outlives it.

use core::arch::asm;
use core::mem::MaybeUninit;

use crate::ops::RequantizeParams;
use crate::ops::requantize::x86_avx512::requantize_rows;
use crate::ops::x86_vnni::{MAX_TILE_ROWS, PANEL, PackedWeights, TileOutput, TileRows};

const _: () = assert!(AMX_ROWS <= MAX_TILE_ROWS, "tile rows hold both row tiles");

/// Rows per tile: two row tiles of sixteen, so that each step of depth has at least two
/// independent tile multiplies (one chain of `tdpbusd` waits on its own latency).
pub(crate) const AMX_ROWS: usize = 2 * 16;
/// Bytes of depth per tile load, to which rows and panels are padded.
pub(crate) const AMX_DEPTH: usize = 64;
/// Panels (of sixteen channels) accumulated per pass: with two row tiles, four C tiles.
const PANELS_PER_PASS: usize = 2;

/// The tile configuration `ldtilecfg` reads (palette 1), every tile sixteen rows of 64
/// bytes: tiles 0-3 accumulate (row tile `r`, panel `p` in tile `2r + p`; sixteen i32 a
/// row), 4 and 5 hold the two row tiles' activations, 6 and 7 two panels' 64 bytes of
/// depth (sixteen rows of sixteen channels' four bytes).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = {
    let mut bytes_per_row = [0u16; 16];
    let mut rows = [0u8; 16];
    let mut t = 0;
    while t < 8 {
        bytes_per_row[t] = 64;
        rows[t] = 16;
        t += 1;
    }
    TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row,
        rows,
    }
};

/// The tile registers configured for [`gemm_requantize_amx`] while it lives, released when
/// it is dropped: configured once per layer, not once per tile (per tile, the kernels
/// bench's 288-byte layer took 18.4 us against 15.2 us, in consecutive runs).
pub(crate) struct TileSession(());

impl TileSession {
    /// Configures the tiles.
    ///
    /// # Safety
    /// [`Isa::Amx`](crate::isa::Isa::Amx) must be available.
    pub(crate) unsafe fn start() -> TileSession {
        // SAFETY: AMX is available (caller); `ldtilecfg` reads the 64-byte configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
        TileSession(())
    }
}

impl Drop for TileSession {
    fn drop(&mut self) {
        // SAFETY: a session exists only where AMX is available (`start`); `tilerelease`
        // returns the tiles to their initial state and touches no memory.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Runs `rows` (laid out with [`AMX_ROWS`] rows padded to [`AMX_DEPTH`]) against every
/// panel of `weights` (packed with the same padding) and requantizes the sums, with the
/// packing's offsets as their bias, into `output` 64 channels at a time.
///
/// # Safety
/// [`Isa::Amx`](crate::isa::Isa::Amx) (and so AVX-512 VNNI) must be available; `params`
/// and `output` must be a validated layer's, with `at` inside its output and channels.
///
/// # Panics
/// If the rows and weights were not laid out for the AMX tiles and the same depth.
pub(crate) unsafe fn gemm_requantize_amx(
    _tiles: &TileSession,
    rows: &TileRows<'_>,
    weights: &PackedWeights,
    params: &RequantizeParams<'_>,
    output: &mut [i8],
    at: TileOutput,
) {
    let depth = weights.groups() * 4;
    assert!(
        rows.capacity == AMX_ROWS && rows.stride == depth && depth % AMX_DEPTH == 0,
        "rows and weights laid out for the AMX tiles"
    );
    let panel_len = depth * PANEL;
    // Written by the tile stores before it is read: the rows of the row tiles used, sixteen
    // channels per panel of the pass, and only those are read.
    let mut acc = MaybeUninit::<[[i32; PANELS_PER_PASS * PANEL]; AMX_ROWS]>::uninit();
    let row_tiles = if rows.count > 16 { 2 } else { 1 };
    let mut first_panel = 0;
    while first_panel < weights.panels() {
        let panels = (weights.panels() - first_panel).min(PANELS_PER_PASS);
        // SAFETY: the session configured the tiles (caller). The A loads read 16 or 32
        // rows of `stride` bytes, 64 at a time over `depth`, inside `rows.bytes()`
        // (`capacity == 32` rows); the B loads read `panels` panels of `panel_len` bytes
        // from `first_panel` on, inside the packing; the stores write `panels * 16` i32 of
        // the used rows of `acc`.
        unsafe {
            tile_pass(
                (rows.bytes().as_ptr(), rows.stride, row_tiles),
                weights.panel_bytes().add(first_panel * panel_len),
                (panel_len, depth / AMX_DEPTH, panels),
                acc.as_mut_ptr().cast(),
            )
        };
        let first = first_panel * PANEL;
        let len = (weights.channels() - first).min(panels * PANEL);
        let channel = at.first_channel + first;
        let mut sums: [&[i32]; AMX_ROWS] = [&[]; AMX_ROWS];
        let mut starts = [0usize; AMX_ROWS];
        for r in 0..rows.count {
            // SAFETY: `tile_pass` wrote channels `0..panels * PANEL` (at least `len`) of
            // every row of the used row tiles of `acc` just above.
            sums[r] = unsafe {
                core::slice::from_raw_parts(
                    acc.as_ptr().cast::<i32>().add(r * PANELS_PER_PASS * PANEL),
                    len,
                )
            };
            starts[r] = (at.first_row + r) * at.row_stride + channel;
        }
        // SAFETY: AVX-512 F/BW and BMI2 are available (AMX implies VNNI, caller); `len`
        // accumulators for channels `channel..channel + len`, inside the validated
        // multipliers.
        unsafe {
            requantize_rows(
                params,
                &sums[..rows.count],
                Some(&weights.offsets()[first..first + len]),
                channel,
                output,
                &starts[..rows.count],
            )
        };
        first_panel += panels;
    }
}

/// One or two row tiles (sixteen rows each, the second `16 * stride` bytes after the
/// first) against one or two panels over `chunks` steps of 64 bytes of depth, the sums
/// stored as rows of 32 i32 (128 bytes apart) at `acc`, panel `p` at column `16 * p`.
///
/// # Safety
/// The tiles must be configured (a [`TileSession`]); `rows` must hold `16 * row_tiles`
/// rows `stride` bytes apart of at least `64 * chunks` bytes, `panels` the given panels of
/// `panel_len` bytes each, and `acc` room for 32 rows of 32 i32.
#[inline]
unsafe fn tile_pass(
    (rows, stride, row_tiles): (*const u8, usize, usize),
    panels: *const i8,
    (panel_len, chunks, count): (usize, usize, usize),
    acc: *mut i32,
) {
    debug_assert!((1..=PANELS_PER_PASS).contains(&count) && (1..=2).contains(&row_tiles));
    debug_assert!(chunks > 0);
    // SAFETY: the caller's contract. The tile registers are the session's; Rust code never
    // uses them. General registers used are declared; the stack is untouched.
    unsafe {
        asm!(
            // rdi: row tile 0 at this chunk; rsi: the rows' stride; r13: 16 rows' bytes
            // (row tile 1 is there); r12: two row tiles (else one); rdx: panel 0 at this
            // chunk; r8: the panel length; r9: panels; rcx: chunks left; r10: `acc`;
            // r11: 64; rax: scratch.
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [rdi + rsi * 1]",
            "tileloadd tmm6, [rdx + r11 * 1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "test r12, r12",
            "jz 3f",
            "lea rax, [rdi + r13]",
            "tileloadd tmm5, [rax + rsi * 1]",
            "tdpbusd tmm2, tmm5, tmm6",
            "3:",
            "cmp r9, 2",
            "jb 4f",
            "lea rax, [rdx + r8]",
            "tileloadd tmm7, [rax + r11 * 1]",
            "tdpbusd tmm1, tmm4, tmm7",
            "test r12, r12",
            "jz 4f",
            "tdpbusd tmm3, tmm5, tmm7",
            "4:",
            // The next 64 bytes of depth: 64 bytes into the rows, sixteen groups (1,024
            // bytes) into the panels.
            "add rdi, 64",
            "add rdx, 1024",
            "dec rcx",
            "jnz 2b",
            // Stores: rows of 128 bytes; row tile 1 starts 2,048 bytes in, panel 1 64.
            "mov rax, 128",
            "tilestored [r10 + rax * 1], tmm0",
            "cmp r9, 2",
            "jb 5f",
            "lea rdx, [r10 + 64]",
            "tilestored [rdx + rax * 1], tmm1",
            "5:",
            "test r12, r12",
            "jz 6f",
            "lea rdx, [r10 + 2048]",
            "tilestored [rdx + rax * 1], tmm2",
            "cmp r9, 2",
            "jb 6f",
            "lea rdx, [r10 + 2112]",
            "tilestored [rdx + rax * 1], tmm3",
            "6:",
            inout("rdi") rows => _,
            in("rsi") stride,
            in("r13") 16 * stride,
            in("r12") usize::from(row_tiles == 2),
            inout("rdx") panels => _,
            in("r8") panel_len,
            in("r9") count,
            inout("rcx") chunks => _,
            in("r10") acc,
            in("r11") 64usize,
            out("rax") _,
            options(nostack),
        );
    }
}
