//! The AVX-512 VNNI micro-kernels the int8 convolution and fully-connected fast paths share:
//! [`gemm_tile`], eight activation rows against sixteen packed output channels (channels in
//! lanes, one `vpdpbusd` per row and four inputs), and [`dot4x2`], two activation rows
//! dotted with four weight rows 64 bytes per step, for single rows and layers too large to
//! pack.
//!
//! Written as inline assembly because the AVX-512 intrinsics and target features are stable
//! only from Rust 1.89, while the crate supports 1.85; the assembler takes the instructions
//! regardless, and [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) asks the CPU (and OS) for
//! every extension used here before a kernel may run it.
//!
//! `vpdpbusd` multiplies unsigned bytes by signed bytes. [`dot4x2`] reads an activation `x`
//! as `u = x ^ 0x80 = x + 128` (0..=255), so with `z = 128 + input_zero_point`
//! `sum((x - zp) * w) = sum(u * w) - z * sum(w)`; it returns both sums and the caller forms
//! the difference. [`gemm_tile`] reads the weights as `w + 128` instead, and the caller
//! subtracts `128 * sum(x) + zp * sum(w)`. Every step is exact modulo 2^32 (`vpdpbusd` wraps, it does not
//! saturate), like the reference's wrapping i32 accumulator, so the result is bit-exact.
//! Taps in a convolution's padding hold `zp` itself, so they contribute `(z - z) * w = 0`,
//! exactly the reference's skipped taps.

use core::arch::asm;

use crate::ops::RequantizeParams;
use crate::ops::requantize::x86::{requantize_row, requantize_rows};

/// `dots[r]` and `dots[4 + r]`: weight row `r` dotted with activation rows 0 and 1 (read as
/// `x + 128`); `dots[8 + r]`: the sum of weight row `r`.
pub(crate) type Dots = [i32; 12];

/// Dot products of two activation rows with four weight rows over their first `k` elements,
/// `k` being the shortest of the six. Tails shorter than 64 bytes use masked loads, which
/// never touch the bytes past the end.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) must be available.
#[inline]
pub(crate) unsafe fn dot4x2(x: [&[i8]; 2], w: [&[i8]; 4]) -> Dots {
    let k = x.iter().chain(&w).map(|s| s.len()).min().unwrap_or(0);
    let mut dots = [0i32; 12];
    // SAFETY: the caller guarantees AVX-512 F/BW/VNNI and BMI2. The loop reads 64 bytes per
    // step while at least 64 remain of the `k` every slice holds, then one masked step over
    // the rest (masked-out bytes are neither read nor faulted on), and writes 48 bytes to
    // `dots`. Every vector register and k1 are clobbered through `clobber_abi("C")`, which
    // covers zmm16-31 and the mask registers; the stack is untouched.
    unsafe {
        asm!(
            // rdi, rsi: the activation rows; rdx, rcx, r8, r9: the weight rows; r10: bytes
            // left; r11: `dots`.
            // zmm0-3: row r times activation row 0; zmm4-7: times row 1; zmm8-11: sum of row r.
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            // zmm15: bytes of 1 (for the weight sums); zmm14: bytes of 0x80 (x -> x + 128).
            "vpternlogd zmm15, zmm15, zmm15, 0xff",
            "vpabsb zmm15, zmm15",
            "mov eax, 0x80808080",
            "vpbroadcastd zmm14, eax",
            "2:",
            "cmp r10, 64",
            "jb 3f",
            "vpxord zmm12, zmm14, zmmword ptr [rdi]",
            "vpxord zmm13, zmm14, zmmword ptr [rsi]",
            "vmovdqu8 zmm16, zmmword ptr [rdx]",
            "vmovdqu8 zmm17, zmmword ptr [rcx]",
            "vmovdqu8 zmm18, zmmword ptr [r8]",
            "vmovdqu8 zmm19, zmmword ptr [r9]",
            "vpdpbusd zmm0, zmm12, zmm16",
            "vpdpbusd zmm4, zmm13, zmm16",
            "vpdpbusd zmm8, zmm15, zmm16",
            "vpdpbusd zmm1, zmm12, zmm17",
            "vpdpbusd zmm5, zmm13, zmm17",
            "vpdpbusd zmm9, zmm15, zmm17",
            "vpdpbusd zmm2, zmm12, zmm18",
            "vpdpbusd zmm6, zmm13, zmm18",
            "vpdpbusd zmm10, zmm15, zmm18",
            "vpdpbusd zmm3, zmm12, zmm19",
            "vpdpbusd zmm7, zmm13, zmm19",
            "vpdpbusd zmm11, zmm15, zmm19",
            "add rdi, 64",
            "add rsi, 64",
            "add rdx, 64",
            "add rcx, 64",
            "add r8, 64",
            "add r9, 64",
            "sub r10, 64",
            "jmp 2b",
            "3:",
            "test r10, r10",
            "jz 4f",
            // The last 1..=63 bytes: k1 selects them; the zeroed weight bytes past them
            // contribute nothing to either sum.
            "mov rax, -1",
            "bzhi rax, rax, r10",
            "kmovq k1, rax",
            "vmovdqu8 zmm12 {{k1}}{{z}}, zmmword ptr [rdi]",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [rsi]",
            "vpxord zmm12, zmm12, zmm14",
            "vpxord zmm13, zmm13, zmm14",
            "vmovdqu8 zmm16 {{k1}}{{z}}, zmmword ptr [rdx]",
            "vmovdqu8 zmm17 {{k1}}{{z}}, zmmword ptr [rcx]",
            "vmovdqu8 zmm18 {{k1}}{{z}}, zmmword ptr [r8]",
            "vmovdqu8 zmm19 {{k1}}{{z}}, zmmword ptr [r9]",
            "vpdpbusd zmm0, zmm12, zmm16",
            "vpdpbusd zmm4, zmm13, zmm16",
            "vpdpbusd zmm8, zmm15, zmm16",
            "vpdpbusd zmm1, zmm12, zmm17",
            "vpdpbusd zmm5, zmm13, zmm17",
            "vpdpbusd zmm9, zmm15, zmm17",
            "vpdpbusd zmm2, zmm12, zmm18",
            "vpdpbusd zmm6, zmm13, zmm18",
            "vpdpbusd zmm10, zmm15, zmm18",
            "vpdpbusd zmm3, zmm12, zmm19",
            "vpdpbusd zmm7, zmm13, zmm19",
            "vpdpbusd zmm11, zmm15, zmm19",
            "4:",
            // Fold each accumulator's 512 bits into 256...
            "vextracti64x4 ymm12, zmm0, 1",
            "vpaddd ymm0, ymm0, ymm12",
            "vextracti64x4 ymm12, zmm1, 1",
            "vpaddd ymm1, ymm1, ymm12",
            "vextracti64x4 ymm12, zmm2, 1",
            "vpaddd ymm2, ymm2, ymm12",
            "vextracti64x4 ymm12, zmm3, 1",
            "vpaddd ymm3, ymm3, ymm12",
            "vextracti64x4 ymm12, zmm4, 1",
            "vpaddd ymm4, ymm4, ymm12",
            "vextracti64x4 ymm12, zmm5, 1",
            "vpaddd ymm5, ymm5, ymm12",
            "vextracti64x4 ymm12, zmm6, 1",
            "vpaddd ymm6, ymm6, ymm12",
            "vextracti64x4 ymm12, zmm7, 1",
            "vpaddd ymm7, ymm7, ymm12",
            "vextracti64x4 ymm12, zmm8, 1",
            "vpaddd ymm8, ymm8, ymm12",
            "vextracti64x4 ymm12, zmm9, 1",
            "vpaddd ymm9, ymm9, ymm12",
            "vextracti64x4 ymm12, zmm10, 1",
            "vpaddd ymm10, ymm10, ymm12",
            "vextracti64x4 ymm12, zmm11, 1",
            "vpaddd ymm11, ymm11, ymm12",
            // ...then each group of four into one xmm of four totals (a `vphaddd` tree).
            "vphaddd ymm0, ymm0, ymm1",
            "vphaddd ymm2, ymm2, ymm3",
            "vphaddd ymm0, ymm0, ymm2",
            "vextracti128 xmm1, ymm0, 1",
            "vpaddd xmm0, xmm0, xmm1",
            "vmovdqu xmmword ptr [r11], xmm0",
            "vphaddd ymm4, ymm4, ymm5",
            "vphaddd ymm6, ymm6, ymm7",
            "vphaddd ymm4, ymm4, ymm6",
            "vextracti128 xmm5, ymm4, 1",
            "vpaddd xmm4, xmm4, xmm5",
            "vmovdqu xmmword ptr [r11 + 16], xmm4",
            "vphaddd ymm8, ymm8, ymm9",
            "vphaddd ymm10, ymm10, ymm11",
            "vphaddd ymm8, ymm8, ymm10",
            "vextracti128 xmm9, ymm8, 1",
            "vpaddd xmm8, xmm8, xmm9",
            "vmovdqu xmmword ptr [r11 + 32], xmm8",
            // Clean upper halves: no transition penalty for SSE code that follows.
            "vzeroupper",
            // Explicit registers, all caller-saved (`clobber_abi` requires them).
            inout("rdi") x[0].as_ptr() => _,
            inout("rsi") x[1].as_ptr() => _,
            inout("rdx") w[0].as_ptr() => _,
            inout("rcx") w[1].as_ptr() => _,
            inout("r8") w[2].as_ptr() => _,
            inout("r9") w[3].as_ptr() => _,
            inout("r10") k => _,
            in("r11") dots.as_mut_ptr(),
            clobber_abi("C"),
            options(nostack),
        );
    }
    dots
}

/// Activation rows per GEMM tile.
pub(crate) const TILE_ROWS: usize = 8;
/// Output channels per packed weight panel (one zmm of i32 lanes).
pub(crate) const PANEL: usize = 16;
/// The longest row the GEMM takes (a convolution gathers `TILE_ROWS * MAX_GEMM_DEPTH` bytes
/// of patches on the stack); longer rows take [`dot4x2`].
pub(crate) const MAX_GEMM_DEPTH: usize = 1024;
/// Bytes of packed weights the GEMM keeps on the stack; larger layers take [`dot4x2`].
const MAX_PACKED_WEIGHTS: usize = 32 * 1024;
/// Output channels the GEMM packs at most.
const MAX_PACKED_CHANNELS: usize = 1024;

/// A layer's weights packed for [`gemm_tile`] once per call: panels of sixteen channels,
/// each holding, for every group of four inputs, the sixteen channels' four bytes as
/// `w + 128` (unsigned); plus each channel's `zp * sum(w)`. Lives on the stack because the
/// runtime has no heap and a file's scratch sizes cannot grow (FORMAT.md).
pub(crate) struct PackedWeights {
    bytes: [u8; MAX_PACKED_WEIGHTS],
    groups: usize,
    channels: usize,
    sums: [i32; MAX_PACKED_CHANNELS],
}

impl PackedWeights {
    /// Whether `channels` rows of `k` inputs fit.
    pub(crate) fn fits(k: usize, channels: usize) -> bool {
        (1..=MAX_GEMM_DEPTH).contains(&k)
            && channels <= MAX_PACKED_CHANNELS
            && channels.div_ceil(PANEL) * PANEL * k.div_ceil(4) * 4 <= MAX_PACKED_WEIGHTS
    }

    /// An empty packing.
    pub(crate) const fn new() -> Self {
        PackedWeights {
            bytes: [0; MAX_PACKED_WEIGHTS],
            groups: 0,
            channels: 0,
            sums: [0; MAX_PACKED_CHANNELS],
        }
    }

    /// Packs `weights`, `channels` rows of `k` inputs that [fit](Self::fits), for inputs
    /// with zero point `zp`.
    pub(crate) fn pack(&mut self, weights: &[i8], k: usize, channels: usize, zp: i32) {
        self.groups = k.div_ceil(4);
        self.channels = channels;
        let panel_len = self.groups * 4 * PANEL;
        let used = channels.div_ceil(PANEL) * panel_len;
        self.bytes[..used].fill(0x80);
        for (c, row) in weights.chunks_exact(k).take(channels).enumerate() {
            let panel = &mut self.bytes[(c / PANEL) * panel_len..][..panel_len];
            let lane = (c % PANEL) * 4;
            let (whole, tail) = row.split_at(k / 4 * 4);
            for (g, quad) in whole.chunks_exact(4).enumerate() {
                let word =
                    u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]].map(|w| w as u8));
                let at = g * 4 * PANEL + lane;
                panel[at..at + 4].copy_from_slice(&(word ^ 0x8080_8080).to_le_bytes());
            }
            let at = (k / 4) * 4 * PANEL + lane;
            for (b, &w) in tail.iter().enumerate() {
                panel[at + b] = (w as u8) ^ 0x80;
            }
            let sum: i32 = row.iter().map(|&w| i32::from(w)).sum();
            self.sums[c] = sum.wrapping_mul(zp);
        }
    }

    /// Panels packed.
    pub(crate) fn panels(&self) -> usize {
        self.channels.div_ceil(PANEL)
    }

    /// `zp * sum(w)` of the channels of panel `p`: what the input zero point takes from
    /// each channel's sum.
    pub(crate) fn weight_terms(&self, p: usize) -> &[i32] {
        &self.sums[p * PANEL..self.channels.min((p + 1) * PANEL)]
    }
}

/// Up to [`TILE_ROWS`] activation rows of `k` bytes for [`gemm_tile`], read in place: each
/// row's last `k % 4` bytes (zero-extended to four) and its `sum(x)` are kept aside, so the
/// kernel never reads past a row.
pub(crate) struct TileRows<'a> {
    rows: [&'a [i8]; TILE_ROWS],
    count: usize,
    whole: usize,
    tails: [u32; TILE_ROWS],
    /// `128 * sum(x)` of each row: what reading `w` as `w + 128` adds to its sums.
    pub terms: [i32; TILE_ROWS],
}

impl<'a> TileRows<'a> {
    /// The rows of `tile`, consecutive rows of `k` bytes (at most [`TILE_ROWS`] of them are
    /// taken, a partial last row is ignored); missing rows repeat the first, and their sums
    /// are not used.
    pub(crate) fn new(tile: &'a [i8], k: usize) -> Self {
        // No rows, no depth: the kernel then reads nothing.
        let count = tile.len().checked_div(k).unwrap_or(0).min(TILE_ROWS);
        let k = if count == 0 { 0 } else { k };
        let whole = k / 4 * 4;
        let mut tile_rows = TileRows {
            rows: [&tile[..k]; TILE_ROWS],
            count,
            whole,
            tails: [0; TILE_ROWS],
            terms: [0; TILE_ROWS],
        };
        for r in 0..count {
            let row = &tile[r * k..(r + 1) * k];
            let mut tail = [0u8; 4];
            for (t, &x) in tail.iter_mut().zip(&row[whole..]) {
                *t = x as u8;
            }
            tile_rows.rows[r] = row;
            tile_rows.tails[r] = u32::from_le_bytes(tail);
            let sum: i32 = row.iter().map(|&x| i32::from(x)).sum();
            tile_rows.terms[r] = sum.wrapping_mul(128);
        }
        tile_rows
    }
}

/// `out[r][j] = sum(x[r] * (w[j] + 128))` over the packed depth, from which
/// `sum((x - zp) * w) = out - 128 * sum(x) - zp * sum(w)` (wrapping, exact modulo 2^32):
/// eight rows by sixteen channels, one `vpdpbusd` per row and group of four inputs with the
/// row's four bytes broadcast from memory, against panel `panel` of `weights`. Rows and
/// weights must be for the same `k`.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) must be available.
#[inline]
pub(crate) unsafe fn gemm_tile(
    rows: &TileRows<'_>,
    weights: &PackedWeights,
    panel: usize,
) -> [[i32; PANEL]; TILE_ROWS] {
    let mut out = [[0i32; PANEL]; TILE_ROWS];
    let panel_len = weights.groups * 4 * PANEL;
    let panel = &weights.bytes[(panel * panel_len).min(MAX_PACKED_WEIGHTS)..];
    // Whole groups read from the rows, then the tail group from `tails`, both bounded by
    // what the panel holds.
    let whole_groups = (rows.whole / 4).min(panel.len() / (4 * PANEL));
    let has_tail = rows.whole < weights.groups * 4 && whole_groups < panel.len() / (4 * PANEL);
    let tails = if has_tail {
        rows.tails.as_ptr()
    } else {
        core::ptr::null()
    };
    // SAFETY: the caller guarantees AVX-512 F/BW/VNNI. Each of the `whole_groups` steps
    // reads 64 bytes of the panel and four bytes at offset `4g < rows.whole` of each row,
    // which holds at least `rows.whole` bytes; the tail step reads the panel's next 64
    // bytes (checked above) and the 32 bytes of `tails`; the stores write the 512 bytes of
    // `out`. Vector registers are clobbered through `clobber_abi("C")`, and the callee-saved
    // r12-r15 are declared; the stack is untouched.
    unsafe {
        asm!(
            // rdi, rsi, rdx, rcx, r8-r11: the rows; rax: byte offset in them; r12: the
            // panel; r13: bytes of whole groups; r14: the tails or null; r15: `out`.
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "xor eax, eax",
            "test r13, r13",
            "jz 3f",
            "2:",
            "vmovdqu32 zmm8, zmmword ptr [r12]",
            "vpdpbusd zmm0, zmm8, dword ptr [rdi + rax]{{1to16}}",
            "vpdpbusd zmm1, zmm8, dword ptr [rsi + rax]{{1to16}}",
            "vpdpbusd zmm2, zmm8, dword ptr [rdx + rax]{{1to16}}",
            "vpdpbusd zmm3, zmm8, dword ptr [rcx + rax]{{1to16}}",
            "vpdpbusd zmm4, zmm8, dword ptr [r8 + rax]{{1to16}}",
            "vpdpbusd zmm5, zmm8, dword ptr [r9 + rax]{{1to16}}",
            "vpdpbusd zmm6, zmm8, dword ptr [r10 + rax]{{1to16}}",
            "vpdpbusd zmm7, zmm8, dword ptr [r11 + rax]{{1to16}}",
            "add r12, 64",
            "add rax, 4",
            "cmp rax, r13",
            "jb 2b",
            "3:",
            "test r14, r14",
            "jz 4f",
            "vmovdqu32 zmm8, zmmword ptr [r12]",
            "vpdpbusd zmm0, zmm8, dword ptr [r14]{{1to16}}",
            "vpdpbusd zmm1, zmm8, dword ptr [r14 + 4]{{1to16}}",
            "vpdpbusd zmm2, zmm8, dword ptr [r14 + 8]{{1to16}}",
            "vpdpbusd zmm3, zmm8, dword ptr [r14 + 12]{{1to16}}",
            "vpdpbusd zmm4, zmm8, dword ptr [r14 + 16]{{1to16}}",
            "vpdpbusd zmm5, zmm8, dword ptr [r14 + 20]{{1to16}}",
            "vpdpbusd zmm6, zmm8, dword ptr [r14 + 24]{{1to16}}",
            "vpdpbusd zmm7, zmm8, dword ptr [r14 + 28]{{1to16}}",
            "4:",
            "vmovdqu32 zmmword ptr [r15], zmm0",
            "vmovdqu32 zmmword ptr [r15 + 64], zmm1",
            "vmovdqu32 zmmword ptr [r15 + 128], zmm2",
            "vmovdqu32 zmmword ptr [r15 + 192], zmm3",
            "vmovdqu32 zmmword ptr [r15 + 256], zmm4",
            "vmovdqu32 zmmword ptr [r15 + 320], zmm5",
            "vmovdqu32 zmmword ptr [r15 + 384], zmm6",
            "vmovdqu32 zmmword ptr [r15 + 448], zmm7",
            "vzeroupper",
            in("rdi") rows.rows[0].as_ptr(),
            in("rsi") rows.rows[1].as_ptr(),
            in("rdx") rows.rows[2].as_ptr(),
            in("rcx") rows.rows[3].as_ptr(),
            in("r8") rows.rows[4].as_ptr(),
            in("r9") rows.rows[5].as_ptr(),
            in("r10") rows.rows[6].as_ptr(),
            in("r11") rows.rows[7].as_ptr(),
            out("rax") _,
            inout("r12") panel.as_ptr() => _,
            in("r13") whole_groups * 4,
            in("r14") tails,
            in("r15") out.as_mut_ptr(),
            clobber_abi("C"),
            options(nostack),
        );
    }
    out
}

/// Where a tile's outputs go: its row `r`, channel `c` of the packed weights, is
/// `output[(first_row + r) * row_stride + first_channel + c]`, and `first_channel + c` is
/// the channel whose bias and multiplier apply.
pub(crate) struct TileOutput {
    pub first_row: usize,
    pub row_stride: usize,
    pub first_channel: usize,
}

/// Runs `rows` against every panel of `weights` ([`gemm_tile`]), centers the sums and
/// requantizes them into `output` 64 channels at a time.
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `params`, `bias` and `output` must be a
/// validated layer's, with `at` inside its output and channels.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm_requantize(
    rows: &TileRows<'_>,
    weights: &PackedWeights,
    params: &RequantizeParams<'_>,
    bias: Option<&[i32]>,
    output: &mut [i8],
    at: TileOutput,
) {
    const BLOCK: usize = 64;
    let mut acc = [[0i32; BLOCK]; TILE_ROWS];
    let mut first_panel = 0;
    while first_panel < weights.panels() {
        let panels = (weights.panels() - first_panel).min(BLOCK / PANEL);
        let mut len = 0;
        for panel in first_panel..first_panel + panels {
            // SAFETY: AVX-512 VNNI is available (caller).
            let raw = unsafe { gemm_tile(rows, weights, panel) };
            let weight_terms = weights.weight_terms(panel);
            let offset = (panel - first_panel) * PANEL;
            for (r, raw) in raw.iter().enumerate().take(rows.count) {
                let acc = &mut acc[r][offset..offset + weight_terms.len()];
                for ((a, &raw), &w) in acc.iter_mut().zip(raw).zip(weight_terms) {
                    *a = raw.wrapping_sub(rows.terms[r]).wrapping_sub(w);
                }
            }
            len = offset + weight_terms.len();
        }
        let channel = at.first_channel + first_panel * PANEL;
        let sums: [&[i32]; TILE_ROWS] = core::array::from_fn(|r| &acc[r][..len]);
        let starts: [usize; TILE_ROWS] =
            core::array::from_fn(|r| (at.first_row + r) * at.row_stride + channel);
        // SAFETY: AVX2 is available (caller); `len` accumulators for channels
        // `channel..channel + len`, inside the validated bias and multipliers.
        unsafe {
            requantize_rows(
                params,
                &sums[..rows.count],
                bias,
                channel,
                output,
                &starts[..rows.count],
            )
        };
        first_panel += panels;
    }
}

/// Two activation rows against the weight rows `first..first + out.0.len()` of `weights`
/// (rows as long as `x`'s) with [`dot4x2`], centered and requantized 64 channels at a time
/// into `out.0` and, when there is a second row, `out.1`; without one, `x[1]` repeats
/// `x[0]` and its sums go unused.
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `params`, `bias` and `weights` must be a
/// validated layer's, covering those channels.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_pair_requantize(
    x: [&[i8]; 2],
    weights: &[i8],
    first: usize,
    params: &RequantizeParams<'_>,
    bias: Option<&[i32]>,
    out: (&mut [i8], Option<&mut [i8]>),
) {
    const BLOCK: usize = 64;
    let k = x[0].len();
    let (out0, mut out1) = out;
    let count = out0.len();
    let mut acc0 = [0i32; BLOCK];
    let mut acc1 = [0i32; BLOCK];
    let mut block = 0;
    while block < count {
        let len = (count - block).min(BLOCK);
        let mut o = block;
        while o < block + len {
            let rows = (block + len - o).min(4);
            let w: [&[i8]; 4] =
                core::array::from_fn(|r| &weights[(first + o + r.min(rows - 1)) * k..][..k]);
            // SAFETY: AVX-512 VNNI is available (caller).
            let sums = centered(&unsafe { dot4x2(x, w) }, params.input_zero_point);
            acc0[o - block..o - block + rows].copy_from_slice(&sums[..rows]);
            acc1[o - block..o - block + rows].copy_from_slice(&sums[4..4 + rows]);
            o += rows;
        }
        let channel = first + block;
        // SAFETY: AVX2 is available (caller); `len` accumulators for channels
        // `channel..channel + len`, inside the validated bias and multipliers.
        unsafe {
            requantize_row(
                params,
                &acc0[..len],
                bias,
                channel,
                &mut out0[block..][..len],
            );
            if let Some(out1) = out1.as_deref_mut() {
                requantize_row(
                    params,
                    &acc1[..len],
                    bias,
                    channel,
                    &mut out1[block..][..len],
                );
            }
        }
        block += len;
    }
}

/// `sum((x - zp) * w)` for each of the eight dot products in `dots`, from the `x + 128` form
/// (see the module comment); wrapping like the reference's accumulator.
#[inline]
pub(crate) fn centered(dots: &Dots, input_zero_point: i32) -> [i32; 8] {
    let z = 128 + input_zero_point;
    core::array::from_fn(|i| dots[i].wrapping_sub(z.wrapping_mul(dots[8 + i % 4])))
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::isa::Isa;
    use proptest::prelude::*;

    fn exact(x: &[i8], w: &[i8], zp: i32) -> i32 {
        x.iter().zip(w).fold(0i32, |a, (&x, &w)| {
            a.wrapping_add((i32::from(x) - zp) * i32::from(w))
        })
    }

    proptest! {
        /// Every length from empty to past two full steps, any bytes and zero point: the
        /// centered dot products are the plain ones.
        #[test]
        fn dot4x2_gives_the_plain_dot_products(
            k in 0usize..200,
            seed in any::<u64>(),
            zp in -128i32..=127,
        ) {
            if !Isa::Avx512Vnni.available() {
                return Ok(());
            }
            let mut state = seed | 1;
            let mut byte = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as i8
            };
            let x: [Vec<i8>; 2] = core::array::from_fn(|_| (0..k).map(|_| byte()).collect());
            let w: [Vec<i8>; 4] = core::array::from_fn(|_| (0..k).map(|_| byte()).collect());
            // SAFETY: checked available above.
            let dots = unsafe {
                dot4x2([&x[0], &x[1]], [&w[0], &w[1], &w[2], &w[3]])
            };
            let got = centered(&dots, zp);
            for r in 0..4 {
                prop_assert_eq!(got[r], exact(&x[0], &w[r], zp));
                prop_assert_eq!(got[4 + r], exact(&x[1], &w[r], zp));
            }
        }
    }

    /// The extremes: every activation at -128 or 127 against weights at -128, over a length
    /// whose products would overflow an i16 pair sum.
    #[test]
    fn dot4x2_is_exact_at_the_extremes() {
        if !Isa::Avx512Vnni.available() {
            return;
        }
        let k = 1000;
        let lo = vec![-128i8; k];
        let hi = vec![127i8; k];
        let w = vec![-128i8; k];
        for zp in [-128, 0, 127] {
            // SAFETY: checked available above.
            let dots = unsafe { dot4x2([&lo, &hi], [&w, &w, &w, &w]) };
            let got = centered(&dots, zp);
            assert_eq!(got[0], exact(&lo, &w, zp));
            assert_eq!(got[4], exact(&hi, &w, zp));
        }
    }
}
