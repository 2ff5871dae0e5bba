//! The AMX int8 GEMM of the AMX kernels: 32 activation rows (two tiles of sixteen) against
//! two panels of sixteen output channels per pass, one tile multiply per row tile, panel
//! and chunk of up to 64 bytes of depth (16 x 16 x 64 multiply-adds), where AVX-512 VNNI's
//! `vpdpbusd` does 16 x 4 per instruction.
//!
//! Weights are [`crate::ops::x86_vnni::PackedWeights`]' panels, whose rows of sixteen channels' four bytes are
//! exactly the layout of a B tile. Activations come two ways ([`TileActivations`]): the
//! convolution's gathered [`TileRows`], flipped to `x + 128` and padded to 64 bytes of
//! depth like its panels (`tdpbusd`, like `vpdpbusd`, multiplies unsigned bytes by signed
//! ones); or, for a fully-connected layer or a pointwise convolution, the input rows in
//! place, multiplied as they are by `tdpbssd` (signed by signed), in chunks that divide
//! the depth. The sums are exact modulo 2^32, as the reference's wrapping accumulator, so
//! the results are the reference's bytes.
//!
//! Inline assembly: Rust has no stable AMX intrinsics. [`Isa::Amx`](crate::isa::Isa::Amx)
//! asks the CPU and the OS (Linux grants the tile state per process) before any kernel runs
//! this; a [`TileSession`] configures the tiles for a layer and releases them when the
//! layer is done, so no tile state outlives it.

use core::arch::asm;
use core::mem::MaybeUninit;

use crate::ops::requantize::x86_avx512::{ChannelTable, requantize_table_rows};
use crate::ops::x86_vnni::{MAX_TILE_ROWS, PANEL, Panels, TileOutput, TileRows};

const _: () = assert!(AMX_ROWS <= MAX_TILE_ROWS, "tile rows hold both row tiles");

/// Rows per tile: two row tiles of sixteen, so that each step of depth has at least two
/// independent tile multiplies (one chain of `tdpbusd` waits on its own latency).
pub(crate) const AMX_ROWS: usize = 2 * 16;
/// Bytes of depth per tile load, to which rows and panels are padded.
pub(crate) const AMX_DEPTH: usize = 64;
/// Panels (of sixteen channels) accumulated per pass: with two row tiles, four C tiles.
const PANELS_PER_PASS: usize = 2;

/// The tile configuration `ldtilecfg` reads (palette 1): tiles 0-3 accumulate (row tile
/// `r`, panel `p` in tile `2r + p`; sixteen rows of sixteen i32), 4 and 5 hold the two row
/// tiles' activations (sixteen rows of one chunk of depth), 6 and 7 two panels' rows for
/// that chunk (a row per four bytes of depth, sixteen channels' four bytes each).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// The configuration for steps of `chunk` bytes of depth.
    const fn new(chunk: usize) -> TileConfig {
        let mut bytes_per_row = [0u16; 16];
        let mut rows = [0u8; 16];
        let mut t = 0;
        while t < 8 {
            let (r, b) = match t {
                0..=3 => (16, 64),
                4 | 5 => (16, chunk),
                _ => (chunk / 4, 64),
            };
            bytes_per_row[t] = b as u16;
            rows[t] = r as u8;
            t += 1;
        }
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row,
            rows,
        }
    }
}

/// Sums of one pass: 32 rows of two panels' sixteen i32.
type PassSums = [[i32; PANELS_PER_PASS * PANEL]; AMX_ROWS];

/// Every row of a pass, in order.
const ALL_ROWS: [u8; AMX_ROWS] = {
    let mut rows = [0u8; AMX_ROWS];
    let mut r = 0;
    while r < AMX_ROWS {
        rows[r] = r as u8;
        r += 1;
    }
    rows
};

/// The tile registers configured for a layer while it lives, released when it is dropped
/// (configured once per layer, not once per tile: per tile, the kernels bench's 288-byte
/// layer took 18.4 us against 15.2 us, in consecutive runs); and the passes' sums.
///
/// A pass's sums are requantized only after the next pass has been issued
/// ([`TileSession::gemm_requantize`]), so that its tile stores have left the core before
/// they are read back: a load waits for an earlier `tilestored` to reach the cache, where
/// vector stores forward their data to the loads that follow.
pub(crate) struct TileSession {
    /// Bytes of depth each tile multiply takes.
    chunk: usize,
    /// Two passes' sums: the pass issued last, and the one before, still to requantize.
    /// Written by the tile stores before they are read, and only the rows and channels
    /// those wrote are read.
    sums: [MaybeUninit<PassSums>; 2],
    /// The pass whose sums wait in `sums[pending.slot]`, if one is waiting; written in
    /// place (as an `Option` each pass copied it whole).
    pending: Pending,
}

/// Where a pass's sums go once requantized.
struct Pending {
    waiting: bool,
    slot: usize,
    /// Rows to requantize: `sum_rows[..rows]` of the pass's sums, to `starts[..rows]`.
    rows: usize,
    sum_rows: [u8; AMX_ROWS],
    starts: [usize; AMX_ROWS],
    /// The first channel (of the packing and the table), and the channels.
    first: usize,
    len: usize,
}

impl TileSession {
    /// Configures the tiles for steps of `chunk` bytes of depth ([`AMX_DEPTH`] for rows
    /// and panels padded to it; less for a shallower layer's whole depth).
    ///
    /// # Safety
    /// [`Isa::Amx`](crate::isa::Isa::Amx) must be available.
    ///
    /// # Panics
    /// If `chunk` is not a multiple of four in `4..=64`.
    pub(crate) unsafe fn start(chunk: usize) -> TileSession {
        assert!(
            chunk % 4 == 0 && (4..=AMX_DEPTH).contains(&chunk),
            "a tile chunk of whole quads"
        );
        let config = TileConfig::new(chunk);
        // SAFETY: AMX is available (caller); `ldtilecfg` reads the 64-byte configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly)) };
        TileSession {
            chunk,
            sums: [MaybeUninit::uninit(), MaybeUninit::uninit()],
            pending: Pending {
                waiting: false,
                slot: 0,
                rows: 0,
                sum_rows: ALL_ROWS,
                starts: [0; AMX_ROWS],
                first: 0,
                len: 0,
            },
        }
    }
}

impl Drop for TileSession {
    fn drop(&mut self) {
        // SAFETY: a session exists only where AMX is available (`start`); `tilerelease`
        // returns the tiles to their initial state and touches no memory.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// The activation rows (the A tiles) of one pass of [`TileSession::gemm_requantize`]: up to 32
/// rows, `stride` bytes apart, either flipped to `x + 128` (a gathered [`TileRows`],
/// multiplied by `tdpbusd`) or the layer's int8 input as it is (`tdpbssd`, signed by
/// signed, which needs neither a copy nor the flip).
pub(crate) struct TileActivations<'a> {
    bytes: &'a [u8],
    stride: usize,
    count: usize,
    signed: bool,
}

impl<'a> TileActivations<'a> {
    /// Gathered rows laid out for the tiles ([`AMX_ROWS`] rows, depth padded to
    /// [`AMX_DEPTH`]).
    ///
    /// # Panics
    /// If the rows were laid out otherwise.
    pub(crate) fn flipped(rows: &'a TileRows<'_>) -> Self {
        assert!(
            rows.capacity == AMX_ROWS && rows.stride % AMX_DEPTH == 0,
            "rows laid out for the AMX tiles"
        );
        TileActivations {
            bytes: rows.bytes(),
            stride: rows.stride,
            count: rows.count,
            signed: false,
        }
    }

    /// `count` (1..=32) int8 rows of `stride` bytes at the start of `rows`, read in place.
    ///
    /// # Panics
    /// If `rows` does not hold every row of the row tiles used (16 or 32 rows; rows past
    /// `count` may hold anything, their sums are dropped).
    pub(crate) fn signed(rows: &'a [i8], stride: usize, count: usize) -> Self {
        assert!((1..=AMX_ROWS).contains(&count), "one or two row tiles");
        assert!(
            rows.len() >= count.div_ceil(16) * 16 * stride,
            "whole row tiles of input"
        );
        TileActivations {
            bytes: bytemuck::cast_slice(rows),
            stride,
            count,
            signed: true,
        }
    }
}

impl TileSession {
    /// Runs `rows` against every panel of `weights` and requantizes the sums through
    /// `table`, prepared for the packed channels with the packing's offsets as their bias,
    /// into `output`: two panels (32 channels) per pass,
    /// each pass's sums requantized after the next pass is issued; [`TileSession::finish`]
    /// requantizes the last. The weights must be packed with their depth a whole number of
    /// the session's chunks, for rows of that depth: flipped rows with the offsets of
    /// [`crate::ops::x86_vnni::PackedWeights::pack_aligned`] for the layer's zero point, signed rows with those
    /// for the zero point less 128 (the sums are then over `x`, not `x + 128`).
    ///
    /// # Safety
    /// [`Isa::Amx`](crate::isa::Isa::Amx) (and so AVX-512 VNNI) must be available; `output`
    /// must be a validated layer's, with `at` inside it and its channels, and the same in
    /// every call until `finish`, as must `weights` and `table` (repack only after
    /// `finish`).
    ///
    /// # Panics
    /// If the rows and weights were not laid out for the session's chunk and the same
    /// depth, or the table was not prepared for the packed channels.
    pub(crate) unsafe fn gemm_requantize(
        &mut self,
        rows: &TileActivations<'_>,
        weights: &Panels<'_>,
        table: &ChannelTable,
        output: &mut [i8],
        at: TileOutput,
    ) {
        let depth = weights.groups() * 4;
        assert!(
            depth % self.chunk == 0 && rows.stride >= depth,
            "rows and weights laid out for the session's chunk"
        );
        assert_eq!(
            table.channels(),
            weights.channels(),
            "a table of the packing"
        );
        let panel_len = depth * PANEL;
        let row_tiles = rows.count.div_ceil(16);
        let chunk = self.chunk;
        let pass = |first_panel: usize, panels: usize, sums: *mut i32| {
            // SAFETY: the session configured the tiles for `chunk` (caller). The A loads read
            // 16 or 32 rows of `stride` bytes, `chunk` at a time over `depth`, inside
            // `rows.bytes` (checked by its constructors); the B loads read `panels` panels
            // of `panel_len` bytes from `first_panel` on, inside the packing; the stores
            // write `panels * 16` i32 of the used rows of the slot's sums.
            unsafe {
                tile_pass(
                    (rows.bytes.as_ptr(), rows.stride, row_tiles, rows.signed),
                    weights.panel_bytes().add(first_panel * panel_len),
                    (panel_len, depth / chunk, chunk, panels),
                    sums,
                )
            }
        };
        let pass_rows = |p: &mut Pending, first: usize| {
            let channel = at.first_channel + first;
            for (r, start) in p.starts[..rows.count].iter_mut().enumerate() {
                *start = (at.first_row + r) * at.row_stride + channel;
            }
            p.sum_rows = ALL_ROWS;
            p.rows = rows.count;
        };
        // SAFETY: as this function's; each pass stores every row it names.
        unsafe { self.each_pass(weights, (table, output), pass, pass_rows) }
    }

    /// The passes of [`TileSession::gemm_requantize`] and
    /// [`TileSession::patches_requantize`]: for each two panels of `weights` from the
    /// first, `pass(first_panel, panels, sums)` multiplies and stores the sums into a free
    /// slot, the pass before is requantized, and `rows(pending, first_channel)` names the
    /// new pass's rows and their starts in `output` (`rows`, `sum_rows`, `starts`).
    ///
    /// # Safety
    /// As the callers': `pass` must write only its slot's sums, `rows` name rows it stored
    /// and starts inside `output`.
    unsafe fn each_pass(
        &mut self,
        weights: &Panels<'_>,
        (table, output): (&ChannelTable, &mut [i8]),
        mut pass: impl FnMut(usize, usize, *mut i32),
        mut rows: impl FnMut(&mut Pending, usize),
    ) {
        let mut first_panel = 0;
        while first_panel < weights.panels() {
            let panels = (weights.panels() - first_panel).min(PANELS_PER_PASS);
            let slot = if self.pending.waiting {
                1 - self.pending.slot
            } else {
                0
            };
            pass(first_panel, panels, self.sums[slot].as_mut_ptr().cast());
            // SAFETY: as this function's.
            unsafe { self.finish(table, output) };
            let first = first_panel * PANEL;
            rows(&mut self.pending, first);
            let p = &mut self.pending;
            (p.waiting, p.slot, p.first) = (true, slot, first);
            p.len = (weights.channels() - first).min(panels * PANEL);
            first_panel += panels;
        }
    }

    /// Requantizes the last pass's sums, if any are waiting.
    ///
    /// # Safety
    /// As [`TileSession::gemm_requantize`]'s: the table and output of the calls before.
    pub(crate) unsafe fn finish(&mut self, table: &ChannelTable, output: &mut [i8]) {
        if !self.pending.waiting {
            return;
        }
        self.pending.waiting = false;
        let p = &self.pending;
        let base = self.sums[p.slot].as_ptr().cast::<i32>();
        let mut sums: [&[i32]; AMX_ROWS] = [&[]; AMX_ROWS];
        for (sum, &r) in sums[..p.rows].iter_mut().zip(&p.sum_rows) {
            // SAFETY: the pass that filled this slot stored channels `0..panels * PANEL`
            // (at least `len`) of each of its rows, and `sum_rows` names rows of it
            // (`r < AMX_ROWS`).
            *sum = unsafe {
                core::slice::from_raw_parts(
                    base.add(usize::from(r) * PANELS_PER_PASS * PANEL),
                    p.len,
                )
            };
        }
        // SAFETY: AVX-512 F/BW and BMI2 are available (AMX implies VNNI, caller); `len`
        // accumulators of the table's channels `first..first + len`, the layer's channels
        // `channel..channel + len` (`starts`).
        unsafe {
            requantize_table_rows(
                table,
                (p.first, p.len),
                &sums[..p.rows],
                0,
                output,
                &p.starts[..p.rows],
            )
        };
    }
}

/// One or two row tiles (sixteen rows each, the second `16 * stride` bytes after the
/// first) against one or two panels over `chunks` steps of `chunk` bytes of depth, the
/// sums stored as rows of 32 i32 (128 bytes apart) at `acc`, panel `p` at column `16 * p`;
/// `tdpbssd` for signed rows, `tdpbusd` for flipped ones.
///
/// # Safety
/// The tiles must be configured for `chunk` (a [`TileSession`]); `rows` must hold
/// `16 * row_tiles` rows `stride` bytes apart of at least `chunk * chunks` bytes, `panels`
/// the given panels of `panel_len` bytes each, and `acc` room for 32 rows of 32 i32.
#[inline]
unsafe fn tile_pass(
    (rows, stride, row_tiles, signed): (*const u8, usize, usize, bool),
    panels: *const i8,
    (panel_len, chunks, chunk, count): (usize, usize, usize, usize),
    acc: *mut i32,
) {
    debug_assert!((1..=PANELS_PER_PASS).contains(&count) && (1..=2).contains(&row_tiles));
    debug_assert!(chunks > 0);
    // The same pass with either multiply: `asm!` takes a literal template.
    macro_rules! pass {
        ($dp:literal) => {
            asm!(
                // rdi: row tile 0 at this chunk; rsi: the rows' stride; r13: 16 rows' bytes
                // (row tile 1 is there); r12: two row tiles (else one); rdx: panel 0 at
                // this chunk; r8: the panel length; r9: panels; rcx: chunks left; r10:
                // `acc`; r11: 64; r14, r15: a chunk's bytes in the rows and in a panel;
                // rax: scratch.
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [rdi + rsi * 1]",
                "tileloadd tmm6, [rdx + r11 * 1]",
                concat!($dp, " tmm0, tmm4, tmm6"),
                "test r12, r12",
                "jz 3f",
                "lea rax, [rdi + r13]",
                "tileloadd tmm5, [rax + rsi * 1]",
                concat!($dp, " tmm2, tmm5, tmm6"),
                "3:",
                "cmp r9, 2",
                "jb 4f",
                "lea rax, [rdx + r8]",
                "tileloadd tmm7, [rax + r11 * 1]",
                concat!($dp, " tmm1, tmm4, tmm7"),
                "test r12, r12",
                "jz 4f",
                concat!($dp, " tmm3, tmm5, tmm7"),
                "4:",
                "add rdi, r14",
                "add rdx, r15",
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
                in("r14") chunk,
                in("r15") chunk * 16,
                out("rax") _,
                options(nostack),
            )
        };
    }
    // SAFETY: the caller's contract. The tile registers are the session's; Rust code never
    // uses them. General registers used are declared; the stack is untouched.
    unsafe {
        if signed {
            pass!("tdpbssd")
        } else {
            pass!("tdpbusd")
        }
    }
}

/// Most steps of depth a [`PatchTiles`] pass takes.
pub(crate) const MAX_PATCH_STEPS: usize = 64;

/// The activation rows of one pass of [`TileSession::patches_requantize`], read in place
/// from an image (an implicit GEMM: no patch is gathered). Two row tiles of sixteen rows,
/// `stride` bytes apart, the first row of tile `t` at `bytes[bases[t]..]`; step `j` of the
/// depth reads each row's `chunk` bytes at `steps[j]` past its start. The rows overlap
/// where the stride is shorter than a patch, as a convolution's patches do.
pub(crate) struct PatchTiles<'a> {
    bytes: &'a [i8],
    bases: [usize; 2],
    stride: usize,
    steps: &'a [usize],
}

impl<'a> PatchTiles<'a> {
    /// Two row tiles of `bytes` for steps of `chunk` bytes.
    ///
    /// # Panics
    /// If a step, more than [`MAX_PATCH_STEPS`] of them, or no step, would read past
    /// `bytes`.
    pub(crate) fn new(
        bytes: &'a [i8],
        bases: [usize; 2],
        stride: usize,
        (steps, chunk): (&'a [usize], usize),
    ) -> Self {
        assert!(
            (1..=MAX_PATCH_STEPS).contains(&steps.len()),
            "one to MAX_PATCH_STEPS steps"
        );
        let last_row = bases[0].max(bases[1]) + 15 * stride;
        let furthest = steps.iter().max().copied().unwrap_or(0);
        assert!(
            last_row + furthest + chunk <= bytes.len(),
            "every step of every row inside the bytes"
        );
        PatchTiles {
            bytes,
            bases,
            stride,
            steps,
        }
    }
}

impl TileSession {
    /// Runs `rows` against every panel of `weights`, packed for the signed rows (offsets
    /// for the zero point less 128, as the fully-connected kernel's) with their depth in
    /// the steps' order, `steps.len()` chunks of the session's; then requantizes, as
    /// [`TileSession::gemm_requantize`] does, the pass's sum rows `outs[i].0` (0-15 the
    /// first row tile's, 16-31 the second's) into `output[outs[i].1 + c]` for the packed
    /// channels `c`, the table's channel `c` applying.
    ///
    /// # Safety
    /// As [`TileSession::gemm_requantize`]'s, with every start in `outs` plus the packed
    /// channels inside `output`.
    ///
    /// # Panics
    /// If the weights are not `steps.len()` chunks deep, the table is not the packing's, or
    /// a sum row is not one of the pass's 32.
    pub(crate) unsafe fn patches_requantize(
        &mut self,
        rows: &PatchTiles<'_>,
        weights: &Panels<'_>,
        table: &ChannelTable,
        output: &mut [i8],
        outs: &[(u8, usize)],
    ) {
        let depth = weights.groups() * 4;
        assert_eq!(
            depth,
            rows.steps.len() * self.chunk,
            "weights as deep as the steps"
        );
        assert_eq!(
            table.channels(),
            weights.channels(),
            "a table of the packing"
        );
        assert!(
            outs.len() <= AMX_ROWS && outs.iter().all(|&(r, _)| usize::from(r) < AMX_ROWS),
            "rows of the pass"
        );
        let panel_len = depth * PANEL;
        let pass = |first_panel: usize, panels: usize, sums: *mut i32| {
            // SAFETY: the session configured the tiles for `chunk` (caller). The A loads read
            // sixteen rows `stride` bytes apart from each base, `chunk` bytes at each step's
            // offset, inside `rows.bytes` (checked by `PatchTiles::new`); the B loads read
            // `panels` panels of `panel_len` bytes from `first_panel` on, inside the packing;
            // the stores write `panels * 16` i32 of every row of the slot.
            unsafe {
                patch_pass(
                    rows,
                    weights.panel_bytes().add(first_panel * panel_len),
                    (panel_len, panels),
                    sums,
                )
            }
        };
        let pass_rows = |p: &mut Pending, first: usize| {
            let slots = p.sum_rows.iter_mut().zip(&mut p.starts);
            for ((row, start), &(r, at)) in slots.zip(outs) {
                (*row, *start) = (r, at + first);
            }
            p.rows = outs.len();
        };
        // SAFETY: as this function's; every pass stores all 32 rows, `outs` names rows of it.
        unsafe { self.each_pass(weights, (table, output), pass, pass_rows) }
    }
}

/// Two row tiles read in place ([`PatchTiles`]) against one or two panels, `tdpbssd`, the
/// sums stored as [`tile_pass`] stores them.
///
/// # Safety
/// The tiles must be configured for the rows' chunk (a [`TileSession`]); the rows' steps
/// must lie inside their bytes, `panels` hold `count` panels of `panel_len` bytes (a
/// chunk's rows per step), and `acc` room for 32 rows of 32 i32.
#[inline]
unsafe fn patch_pass(
    rows: &PatchTiles<'_>,
    panels: *const i8,
    (panel_len, count): (usize, usize),
    acc: *mut i32,
) {
    debug_assert!((1..=PANELS_PER_PASS).contains(&count));
    let image = rows.bytes.as_ptr();
    let chunk_rows = panel_len / rows.steps.len();
    // SAFETY: the caller's contract. The tile registers are the session's; Rust code never
    // uses them. General registers used are declared; the stack is untouched.
    unsafe {
        asm!(
            // rdi, r13: the two row tiles' first rows; rsi: the rows' stride; r10: the
            // steps' offsets; rcx: steps left; rdx: panel 0 at this step; r8: the panel
            // length; r9: panels; r11: 64; r14: a step's bytes in a panel; r12: `acc`;
            // rax, r15: scratch.
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "mov rax, [r10]",
            "lea r15, [rdi + rax]",
            "tileloadd tmm4, [r15 + rsi * 1]",
            "tileloadd tmm6, [rdx + r11 * 1]",
            "tdpbssd tmm0, tmm4, tmm6",
            "lea r15, [r13 + rax]",
            "tileloadd tmm5, [r15 + rsi * 1]",
            "tdpbssd tmm2, tmm5, tmm6",
            "cmp r9, 2",
            "jb 3f",
            "lea r15, [rdx + r8]",
            "tileloadd tmm7, [r15 + r11 * 1]",
            "tdpbssd tmm1, tmm4, tmm7",
            "tdpbssd tmm3, tmm5, tmm7",
            "3:",
            "add r10, 8",
            "add rdx, r14",
            "dec rcx",
            "jnz 2b",
            // Stores: rows of 128 bytes; row tile 1 starts 2,048 bytes in, panel 1 64.
            "mov rax, 128",
            "tilestored [r12 + rax * 1], tmm0",
            "lea r15, [r12 + 2048]",
            "tilestored [r15 + rax * 1], tmm2",
            "cmp r9, 2",
            "jb 4f",
            "lea r15, [r12 + 64]",
            "tilestored [r15 + rax * 1], tmm1",
            "lea r15, [r12 + 2112]",
            "tilestored [r15 + rax * 1], tmm3",
            "4:",
            in("rdi") image.add(rows.bases[0]),
            in("r13") image.add(rows.bases[1]),
            in("rsi") rows.stride,
            inout("r10") rows.steps.as_ptr() => _,
            inout("rcx") rows.steps.len() => _,
            inout("rdx") panels => _,
            in("r8") panel_len,
            in("r9") count,
            in("r11") 64usize,
            in("r14") chunk_rows,
            in("r12") acc,
            out("rax") _,
            out("r15") _,
            options(nostack),
        )
    };
}
