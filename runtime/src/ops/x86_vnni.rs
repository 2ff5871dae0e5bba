//! The AVX-512 VNNI micro-kernels the int8 convolution and fully-connected fast paths share:
//! [`gemm_tile`], eight activation rows against sixteen packed output channels (channels in
//! lanes, one `vpdpbusd` per row and four inputs), [`dot4x2`], two activation rows dotted
//! with four weight rows 64 bytes per step, for a few rows and layers too large to pack, and
//! [`dot8`], one row against eight weight rows, for a batch of one.
//!
//! Written as inline assembly because the AVX-512 intrinsics and target features are stable
//! only from Rust 1.89, while the crate supports 1.85; the assembler takes the instructions
//! regardless, and [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) asks the CPU (and OS) for
//! every extension used here before a kernel may run it.
//!
//! `vpdpbusd` multiplies unsigned bytes by signed bytes. Both kernels read an activation `x`
//! as `u = x ^ 0x80 = x + 128` (0..=255), so with `z = 128 + input_zero_point`
//! `sum((x - zp) * w) = sum(u * w) - z * sum(w)`. [`dot4x2`] returns both sums and the caller
//! forms the difference; for [`gemm_tile`] the packing folds `z * sum(w)` into each
//! channel's bias once, so its sums go straight to the requantization. Every step is exact
//! modulo 2^32 (`vpdpbusd` wraps, it does not saturate), like the reference's wrapping i32
//! accumulator, so the result is bit-exact. Taps in a convolution's padding hold `zp`
//! itself, so they contribute `(z - z) * w = 0`, exactly the reference's skipped taps.

use core::arch::asm;
use core::marker::PhantomData;
use core::mem::MaybeUninit;

use crate::ops::RequantizeParams;
use crate::ops::requantize::x86_avx512::{ChannelTable, requantize_row, requantize_table_rows};

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

/// Dot products of one activation row (read as `x + 128`, see the module comment) with eight
/// weight rows over their first `k` elements, `k` being the shortest of the nine: the
/// single-row counterpart of [`dot4x2`], for a batch of one. Each 64-byte step loads the
/// activations once and multiplies the weights straight from memory. A tail shorter than
/// 64 bytes uses masked loads, which never touch the bytes past the end.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) must be available.
#[inline]
pub(crate) unsafe fn dot8(x: &[i8], w: &[&[i8]; 8]) -> [i32; 8] {
    let k = w.iter().map(|s| s.len()).fold(x.len(), usize::min);
    let mut dots = [0i32; 8];
    // SAFETY: the caller guarantees AVX-512 F/BW/VNNI and BMI2. The loop reads the 64 bytes
    // at offset `rax` of each row while `rax + 64 <= k`, then one masked step over the rest
    // (masked-out bytes are neither read nor faulted on), and writes 32 bytes to `dots`.
    // Every vector register and k1 are clobbered through `clobber_abi("C")`; r12-r14 are
    // operands, so the compiler saves them; the stack is untouched.
    unsafe {
        asm!(
            // rdi: the activations; rdx, rcx, r8, r9, rsi, r12, r13, r14: the weight rows;
            // rax: the offset; r10: bytes in all; r11: whole steps left; r15: `dots`.
            // zmm0-7: the eight dot products; zmm15: bytes of 0x80 (x -> x + 128).
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "mov eax, 0x80808080",
            "vpbroadcastd zmm15, eax",
            "xor eax, eax",
            "mov r11, r10",
            "shr r11, 6",
            "jz 3f",
            "2:",
            "vpxord zmm14, zmm15, zmmword ptr [rdi + rax]",
            "vpdpbusd zmm0, zmm14, zmmword ptr [rdx + rax]",
            "vpdpbusd zmm1, zmm14, zmmword ptr [rcx + rax]",
            "vpdpbusd zmm2, zmm14, zmmword ptr [r8 + rax]",
            "vpdpbusd zmm3, zmm14, zmmword ptr [r9 + rax]",
            "vpdpbusd zmm4, zmm14, zmmword ptr [rsi + rax]",
            "vpdpbusd zmm5, zmm14, zmmword ptr [r12 + rax]",
            "vpdpbusd zmm6, zmm14, zmmword ptr [r13 + rax]",
            "vpdpbusd zmm7, zmm14, zmmword ptr [r14 + rax]",
            "add rax, 64",
            "dec r11",
            "jnz 2b",
            "3:",
            "and r10, 63",
            "jz 4f",
            // The last 1..=63 bytes: k1 selects them; the zeroed weight bytes past them
            // contribute nothing.
            "mov r11, -1",
            "bzhi r11, r11, r10",
            "kmovq k1, r11",
            "vmovdqu8 zmm14 {{k1}}{{z}}, zmmword ptr [rdi + rax]",
            "vpxord zmm14, zmm14, zmm15",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [rdx + rax]",
            "vpdpbusd zmm0, zmm14, zmm13",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [rcx + rax]",
            "vpdpbusd zmm1, zmm14, zmm13",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [r8 + rax]",
            "vpdpbusd zmm2, zmm14, zmm13",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [r9 + rax]",
            "vpdpbusd zmm3, zmm14, zmm13",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [rsi + rax]",
            "vpdpbusd zmm4, zmm14, zmm13",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [r12 + rax]",
            "vpdpbusd zmm5, zmm14, zmm13",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [r13 + rax]",
            "vpdpbusd zmm6, zmm14, zmm13",
            "vmovdqu8 zmm13 {{k1}}{{z}}, zmmword ptr [r14 + rax]",
            "vpdpbusd zmm7, zmm14, zmm13",
            "4:",
            // Fold each accumulator's 512 bits into 256...
            "vextracti64x4 ymm8, zmm0, 1",
            "vpaddd ymm0, ymm0, ymm8",
            "vextracti64x4 ymm8, zmm1, 1",
            "vpaddd ymm1, ymm1, ymm8",
            "vextracti64x4 ymm8, zmm2, 1",
            "vpaddd ymm2, ymm2, ymm8",
            "vextracti64x4 ymm8, zmm3, 1",
            "vpaddd ymm3, ymm3, ymm8",
            "vextracti64x4 ymm8, zmm4, 1",
            "vpaddd ymm4, ymm4, ymm8",
            "vextracti64x4 ymm8, zmm5, 1",
            "vpaddd ymm5, ymm5, ymm8",
            "vextracti64x4 ymm8, zmm6, 1",
            "vpaddd ymm6, ymm6, ymm8",
            "vextracti64x4 ymm8, zmm7, 1",
            "vpaddd ymm7, ymm7, ymm8",
            // ...then a `vphaddd` tree leaves rows 0-3 and 4-7 in ymm0 and ymm4, each
            // 128-bit half holding the sums of its own lanes; adding the halves gives the
            // eight totals in order.
            "vphaddd ymm0, ymm0, ymm1",
            "vphaddd ymm2, ymm2, ymm3",
            "vphaddd ymm4, ymm4, ymm5",
            "vphaddd ymm6, ymm6, ymm7",
            "vphaddd ymm0, ymm0, ymm2",
            "vphaddd ymm4, ymm4, ymm6",
            "vperm2i128 ymm1, ymm0, ymm4, 0x20",
            "vperm2i128 ymm2, ymm0, ymm4, 0x31",
            "vpaddd ymm0, ymm1, ymm2",
            "vmovdqu ymmword ptr [r15], ymm0",
            // Clean upper halves: no transition penalty for SSE code that follows.
            "vzeroupper",
            in("rdi") x.as_ptr(),
            in("rdx") w[0].as_ptr(),
            in("rcx") w[1].as_ptr(),
            in("r8") w[2].as_ptr(),
            in("r9") w[3].as_ptr(),
            in("rsi") w[4].as_ptr(),
            in("r12") w[5].as_ptr(),
            in("r13") w[6].as_ptr(),
            in("r14") w[7].as_ptr(),
            inout("r10") k => _,
            in("r15") dots.as_mut_ptr(),
            out("rax") _,
            out("r11") _,
            clobber_abi("C"),
            options(nostack),
        );
    }
    dots
}

/// Bytes of 0x81, read by [`dot8`] as ones (`0x81 ^ 0x80 = 1`), so that its dot products
/// are weight-row sums.
static ONES: [i8; 1024] = [0x81u8 as i8; 1024];

/// The sums of eight weight rows, with [`dot8`] over [`ONES`] a chunk at a time.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) must be available.
#[inline]
unsafe fn row_sums(w: &[&[i8]; 8]) -> [i32; 8] {
    let k = w.iter().map(|s| s.len()).min().unwrap_or(0);
    let mut totals = [0i32; 8];
    let mut start = 0;
    while start < k {
        let len = (k - start).min(ONES.len());
        let mut chunk: [&[i8]; 8] = [&[]; 8];
        for (c, row) in chunk.iter_mut().zip(w) {
            *c = &row[start..start + len];
        }
        // SAFETY: as this function's.
        let sums = unsafe { dot8(&ONES[..len], &chunk) };
        for (t, s) in totals.iter_mut().zip(sums) {
            *t = t.wrapping_add(s);
        }
        start += len;
    }
    totals
}

/// Activation rows per GEMM tile.
pub(crate) const TILE_ROWS: usize = 8;
/// Output channels per packed weight panel (one zmm of i32 lanes).
pub(crate) const PANEL: usize = 16;
/// The longest row the GEMM takes (a tile keeps `TILE_ROWS * MAX_GEMM_DEPTH` bytes on the
/// stack); longer rows take [`dot4x2`].
pub(crate) const MAX_GEMM_DEPTH: usize = 1024;
/// Bytes of packed weights the GEMM keeps on the stack; larger layers take [`dot4x2`].
const MAX_PACKED_WEIGHTS: usize = 32 * 1024;
/// Output channels the GEMM packs at most.
const MAX_PACKED_CHANNELS: usize = 1024;
/// Channels a tile's accumulators hold between requantizations (four panels).
const GEMM_BLOCK: usize = 64;

/// A layer's weights packed for [`gemm_tile`] once per call: panels of sixteen channels,
/// each holding, for every group of four inputs, the sixteen channels' four signed bytes
/// (zero past the row's end); plus each channel's bias less `(128 + zp) * sum(w)`, which
/// turns the kernel's sums over `x + 128` into the layer's (see [`gemm_tile`]). Lives on
/// the stack because the runtime has no heap and a file's scratch sizes cannot grow
/// (FORMAT.md).
pub(crate) struct PackedWeights {
    /// Only the first `panels() * groups * 4 * PANEL` bytes are written (by `pack`) and
    /// read; leaving the rest uninitialized saves clearing 32 KiB per call.
    bytes: [MaybeUninit<i8>; MAX_PACKED_WEIGHTS],
    groups: usize,
    channels: usize,
    /// The first `channels` are written by `pack` (left uninitialized until then: clearing
    /// 4 KiB cost every call, the interpreter's prepared packings included, a memset).
    offsets: [MaybeUninit<i32>; MAX_PACKED_CHANNELS],
}

impl PackedWeights {
    /// Whether `channels` rows of `k` inputs fit.
    pub(crate) fn fits(k: usize, channels: usize) -> bool {
        (1..=MAX_GEMM_DEPTH).contains(&k)
            && channels <= MAX_PACKED_CHANNELS
            && channels.div_ceil(PANEL) * PANEL * k.div_ceil(4) * 4 <= MAX_PACKED_WEIGHTS
    }

    /// The most output channels of `k` inputs that fit, a whole number of panels (0 when
    /// not even one panel does).
    pub(crate) fn channels_that_fit(k: usize) -> usize {
        Self::channels_that_fit_aligned(k, 4)
    }

    /// [`PackedWeights::channels_that_fit`] with the depth padded to a multiple of `align`
    /// bytes (64 for the AMX tiles).
    pub(crate) fn channels_that_fit_aligned(k: usize, align: usize) -> usize {
        if !(1..=MAX_GEMM_DEPTH).contains(&k.div_ceil(align).saturating_mul(align)) {
            return 0;
        }
        let panel_bytes = PANEL * k.div_ceil(align) * align;
        (MAX_PACKED_WEIGHTS / panel_bytes * PANEL).min(MAX_PACKED_CHANNELS)
    }

    /// An empty packing.
    pub(crate) const fn new() -> Self {
        PackedWeights {
            bytes: [MaybeUninit::uninit(); MAX_PACKED_WEIGHTS],
            groups: 0,
            channels: 0,
            offsets: [MaybeUninit::uninit(); MAX_PACKED_CHANNELS],
        }
    }

    /// Packs `weights`, `channels` rows of `k` inputs that [fit](Self::fits), for inputs
    /// with zero point `zp` and those channels' `bias`.
    ///
    /// # Safety
    /// AVX2 must be available (every caller runs on the VNNI family, which implies it).
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn pack(
        &mut self,
        weights: &[i8],
        (k, channels): (usize, usize),
        zp: i32,
        bias: Option<&[i32]>,
    ) {
        // SAFETY: AVX2 is available (caller).
        unsafe { self.pack_aligned(weights, (k, channels, 4), zp, bias) }
    }

    /// [`PackedWeights::pack`] with each panel's depth padded with zeros to a multiple of
    /// `align` bytes (a multiple of four; 64 for the AMX tiles), which must
    /// [fit](Self::channels_that_fit_aligned).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn pack_aligned(
        &mut self,
        weights: &[i8],
        (k, channels, align): (usize, usize, usize),
        zp: i32,
        bias: Option<&[i32]>,
    ) {
        // SAFETY: AVX2 is available (caller).
        self.groups = unsafe {
            pack_panels(
                &mut self.bytes,
                &mut self.offsets[..channels],
                weights,
                (k, align),
                zp,
                bias,
            )
        };
        self.channels = channels;
    }

    /// [`PackedWeights::pack`] for rows of `runs` runs of `run` bytes each (`run` a
    /// multiple of four), each run's depth padded with zeros to `padded_run` bytes
    /// ([`spread_runs`]); the padded depth must [fit](Self::channels_that_fit).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn pack_runs(
        &mut self,
        weights: &[i8],
        channels: usize,
        (runs, run, padded_run): (usize, usize, usize),
        zp: i32,
        bias: Option<&[i32]>,
    ) {
        // SAFETY: AVX2 is available (caller).
        unsafe { self.pack(weights, (runs * run, channels), zp, bias) };
        spread_runs(&mut self.bytes, channels, (runs, run, padded_run));
        self.groups = runs * padded_run / 4;
    }

    /// The packed panels, for the GEMMs.
    pub(crate) fn view(&self) -> Panels<'_> {
        Panels {
            bytes: self.bytes.as_ptr().cast(),
            groups: self.groups,
            channels: self.channels,
            _packing: PhantomData,
        }
    }

    /// The channels' offsets (bias less `(128 + zp) * sum(w)`).
    pub(crate) fn offsets(&self) -> &[i32] {
        let written = &self.offsets[..self.channels];
        // SAFETY: `pack` wrote the first `channels` offsets.
        unsafe { core::slice::from_raw_parts(written.as_ptr().cast(), written.len()) }
    }
}

/// Spreads panels that [`pack_panels`] wrote for `channels` rows of `runs * run` bytes
/// (`run` a multiple of four, no padding) so that each run's groups of four start
/// `padded_run` bytes of depth after the last run's, zeros between: the panels of the same
/// weights with every run padded. A panel's group of four is one 64-byte row, so whole
/// rows move, the last first (every row moves to a later place, or stays).
///
/// # Panics
/// If `bytes` cannot hold the spread panels, or a run is not whole groups.
pub(crate) fn spread_runs(
    bytes: &mut [MaybeUninit<i8>],
    channels: usize,
    (runs, run, padded_run): (usize, usize, usize),
) {
    assert!(
        run % 4 == 0 && padded_run % 4 == 0 && run <= padded_run,
        "runs of whole groups"
    );
    const ROW: usize = 4 * PANEL;
    let (dense, spread) = (runs * run / 4 * ROW, runs * padded_run / 4 * ROW);
    let panels = channels.div_ceil(PANEL);
    assert!(bytes.len() >= panels * spread, "room for the spread panels");
    let (run_rows, padded_rows) = (run / 4 * ROW, padded_run / 4 * ROW);
    for p in (0..panels).rev() {
        for r in (0..runs).rev() {
            let (from, to) = (p * dense + r * run_rows, p * spread + r * padded_rows);
            bytes.copy_within(from..from + run_rows, to);
            bytes[to + run_rows..to + padded_rows].fill(MaybeUninit::new(0));
        }
    }
}

/// Bytes of panels that `channels` rows of `k` inputs pack into, the depth padded to a
/// multiple of `align` bytes.
pub(crate) fn panel_bytes(k: usize, channels: usize, align: usize) -> usize {
    channels.div_ceil(PANEL) * PANEL * k.div_ceil(align) * align
}

/// Packs `offsets.len()` rows of `k` inputs of `weights` into panels in `bytes` (which must
/// hold [`panel_bytes`]), each panel's depth padded with zeros to a multiple of `align`
/// bytes (a multiple of four; 64 for the AMX tiles), and writes each channel's `bias` less
/// `(128 + zp) * sum(w)` into `offsets`. Returns the groups of four inputs per panel.
///
/// # Safety
/// AVX2 must be available.
///
/// # Panics
/// If `bytes` is too short, or `weights` or `bias` do not cover the channels.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pack_panels(
    bytes: &mut [MaybeUninit<i8>],
    offsets: &mut [MaybeUninit<i32>],
    weights: &[i8],
    (k, align): (usize, usize),
    zp: i32,
    bias: Option<&[i32]>,
) -> usize {
    let channels = offsets.len();
    let groups = k.div_ceil(align) * align / 4;
    let panel_len = groups * 4 * PANEL;
    let used = channels.div_ceil(PANEL) * panel_len;
    assert!(bytes.len() >= used, "room for the panels");
    // Whole panels' first `k / 32 * 32` bytes are transposed eight quads at a time; the
    // rest (a partial panel, the last quads of every row) a quad at a time.
    let chunks = k / 32;
    // Zeros meet the padding and the channels past the last; where there are none (whole
    // panels of rows that are whole 32-byte chunks) the transposes write every byte.
    if channels % PANEL != 0 || chunks * 32 != groups * 4 {
        bytes[..used].fill(MaybeUninit::new(0));
    }
    let full_panels = channels / PANEL;
    for p in 0..full_panels {
        let rows: [&[i8]; PANEL] = core::array::from_fn(|r| &weights[(p * PANEL + r) * k..][..k]);
        let panel = &mut bytes[p * panel_len..][..panel_len];
        // SAFETY: AVX2 is available (caller); the panel holds `groups >= 8 * chunks` groups
        // of 64 bytes, and every row `8 * chunks * 4 <= k` bytes.
        unsafe { transpose_quads(&rows, chunks, panel) };
    }
    for (c, row) in weights.chunks_exact(k).take(channels).enumerate() {
        let panel = &mut bytes[(c / PANEL) * panel_len..][..panel_len];
        let lane = (c % PANEL) * 4;
        let done = if c < full_panels * PANEL {
            chunks * 8
        } else {
            0
        };
        let quads = row[done * 4..].chunks_exact(4);
        let tail = quads.remainder();
        if quads.len() > 0 {
            let slots = panel[done * 4 * PANEL + lane..].chunks_mut(4 * PANEL);
            for (quad, slot) in quads.zip(slots) {
                for (slot, &w) in slot[..4].iter_mut().zip(quad) {
                    *slot = MaybeUninit::new(w);
                }
            }
        }
        if !tail.is_empty() {
            let last = (k / 4) * 4 * PANEL + lane;
            for (slot, &w) in panel[last..].iter_mut().zip(tail) {
                *slot = MaybeUninit::new(w);
            }
        }
        // SAFETY: AVX2 is available (caller).
        let sum = unsafe { byte_sum(row) };
        let bias = bias.map_or(0, |bias| bias[c]);
        offsets[c] = MaybeUninit::new(bias.wrapping_sub(sum.wrapping_mul(128 + zp)));
    }
    groups
}

/// Packed panels wherever they are kept: a [`PackedWeights`] on the stack, or the words an
/// interpreter prepared when it was made
/// ([`crate::ops::fully_connected::x86_prepared`]).
#[derive(Clone, Copy)]
pub(crate) struct Panels<'a> {
    bytes: *const i8,
    groups: usize,
    channels: usize,
    _packing: PhantomData<&'a [i8]>,
}

impl<'a> Panels<'a> {
    /// Panels that [`pack_panels`] wrote into `bytes` for `channels` channels, `groups`
    /// groups of four inputs deep.
    ///
    /// # Panics
    /// If `bytes` is shorter than those panels.
    pub(crate) fn new(bytes: &'a [i8], groups: usize, channels: usize) -> Self {
        assert!(bytes.len() >= channels.div_ceil(PANEL) * groups * 4 * PANEL);
        Panels {
            bytes: bytes.as_ptr(),
            groups,
            channels,
            _packing: PhantomData,
        }
    }

    /// Groups of four inputs in each panel (the padded depth over four).
    pub(crate) fn groups(&self) -> usize {
        self.groups
    }

    /// Channels packed.
    pub(crate) fn channels(&self) -> usize {
        self.channels
    }

    /// The packed panels' bytes.
    pub(crate) fn panel_bytes(&self) -> *const i8 {
        self.bytes
    }

    /// Panels packed.
    pub(crate) fn panels(&self) -> usize {
        self.channels.div_ceil(PANEL)
    }
}

/// The sum of `row`'s signed bytes: `vpsadbw` adds 32 bytes per step (flipped to unsigned,
/// `x + 128`, then 128 per byte taken back), where the compiler widened every byte to 32
/// bits, eight per step (those instructions held about an eighth of the packing's samples
/// in `perf annotate` of MobileNet).
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2")]
unsafe fn byte_sum(row: &[i8]) -> i32 {
    use core::arch::x86_64::*;
    let chunks = row.chunks_exact(32);
    let tail: i32 = chunks.remainder().iter().map(|&w| i32::from(w)).sum();
    let whole = (row.len() - chunks.remainder().len()) as i32;
    // SAFETY: AVX2 is available (caller); each load reads one 32-byte chunk of `row`.
    let total = unsafe {
        let flip = _mm256_set1_epi8(i8::MIN);
        let zero = _mm256_setzero_si256();
        let mut acc = zero;
        for chunk in chunks {
            let x = _mm256_loadu_si256(chunk.as_ptr().cast());
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_xor_si256(x, flip), zero));
        }
        let half = _mm_add_epi64(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        _mm_cvtsi128_si64(half) + _mm_extract_epi64::<1>(half)
    };
    // At most 1,024 bytes of 255 each: no overflow.
    total as i32 - 128 * whole + tail
}

/// Writes quads `0..8 * chunks` of sixteen weight rows into their panel: for each group of
/// four inputs `g`, the sixteen rows' quads `g` side by side at `64 * g`. Eight rows' 32
/// bytes at a time go through an 8x8 dword transpose (unpack by dwords, by qwords, then
/// swap 128-bit halves), where writing quad by quad took an eighth of a pointwise
/// convolution's time.
///
/// # Safety
/// AVX2 must be available; every row must hold `32 * chunks` bytes and `panel` at least
/// `512 * chunks`.
#[target_feature(enable = "avx2")]
unsafe fn transpose_quads(rows: &[&[i8]; PANEL], chunks: usize, panel: &mut [MaybeUninit<i8>]) {
    use core::arch::x86_64::*;
    assert!(panel.len() >= chunks * 8 * 4 * PANEL);
    // SAFETY: AVX2 is available (caller); each load reads bytes `32 * j..32 * j + 32` of a
    // row holding `32 * chunks` (caller), each store writes 32 bytes at
    // `(8 * j + g) * 64 + 32 * half`, inside the panel (asserted above).
    unsafe {
        for j in 0..chunks {
            for half in 0..2 {
                // Plain loops rather than `array::from_fn`, whose closures would not
                // inherit AVX2 and would call each intrinsic.
                let mut r = [_mm256_setzero_si256(); 8];
                for (i, r) in r.iter_mut().enumerate() {
                    *r = _mm256_loadu_si256(rows[8 * half + i][32 * j..][..32].as_ptr().cast());
                }
                let mut t = [_mm256_setzero_si256(); 8];
                for i in 0..4 {
                    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
                    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
                }
                // u[0..4]: rows 0..4, quads (0|4), (1|5), (2|6), (3|7); u[4..8]: rows 4..8.
                let mut u = [_mm256_setzero_si256(); 8];
                for base in [0, 4] {
                    u[base] = _mm256_unpacklo_epi64(t[base], t[base + 2]);
                    u[base + 1] = _mm256_unpackhi_epi64(t[base], t[base + 2]);
                    u[base + 2] = _mm256_unpacklo_epi64(t[base + 1], t[base + 3]);
                    u[base + 3] = _mm256_unpackhi_epi64(t[base + 1], t[base + 3]);
                }
                for g in 0..4 {
                    let low = _mm256_permute2x128_si256::<0x20>(u[g], u[4 + g]);
                    let high = _mm256_permute2x128_si256::<0x31>(u[g], u[4 + g]);
                    for (quad, v) in [(g, low), (g + 4, high)] {
                        let at = (8 * j + quad) * 4 * PANEL + 32 * half;
                        _mm256_storeu_si256(panel[at..at + 32].as_mut_ptr().cast(), v);
                    }
                }
            }
        }
    }
}

/// Most rows a tile holds: the AMX kernel's two tiles of sixteen ([`crate::ops::x86_amx`]).
pub(crate) const MAX_TILE_ROWS: usize = 32;

/// Up to [`TILE_ROWS`] (or, for the AMX kernel, [`MAX_TILE_ROWS`]) activation rows of `k`
/// bytes for [`gemm_tile`], copied as `x + 128` (unsigned, the operand `vpdpbusd` reads that
/// way) into rows padded to a multiple of four (or 64) bytes; the padding meets the
/// packing's zero weights.
pub(crate) struct TileRows<'s> {
    /// The caller's room for the longest rows (a local array sized for its kernel, so that
    /// a VNNI layer's frame does not carry the AMX kernel's 32 KiB and the rows are never
    /// moved by value); only the first `capacity * stride` bytes, which `new` zeroes, are
    /// ever used. Zeroing all of it on every layer call cost 2% of MobileNet.
    storage: &'s mut [MaybeUninit<u8>],
    k: usize,
    pub(crate) stride: usize,
    pub(crate) capacity: usize,
    pub(crate) count: usize,
}

/// Room for a VNNI tile's rows ([`TileRows::new`]).
pub(crate) type TileStorage = [MaybeUninit<u8>; TILE_ROWS * MAX_GEMM_DEPTH];

impl<'s> TileRows<'s> {
    /// Empty rows of `k` inputs, at most [`MAX_GEMM_DEPTH`], for [`gemm_tile`], in
    /// `storage`.
    pub(crate) fn new(storage: &'s mut TileStorage, k: usize) -> Self {
        Self::with_layout(storage, k, TILE_ROWS, 4)
    }

    /// Empty rows: `capacity` (at most [`MAX_TILE_ROWS`]) of `k` inputs, at most
    /// [`MAX_GEMM_DEPTH`] once padded to a multiple of `align` bytes, in `storage`.
    ///
    /// # Panics
    /// If `storage` cannot hold them.
    pub(crate) fn with_layout(
        storage: &'s mut [MaybeUninit<u8>],
        k: usize,
        capacity: usize,
        align: usize,
    ) -> Self {
        let rows = TileRows {
            storage,
            k,
            stride: k.div_ceil(align) * align,
            capacity: capacity.min(MAX_TILE_ROWS),
            count: 0,
        };
        let used = rows.capacity * rows.stride;
        rows.storage[..used].fill(MaybeUninit::new(0));
        rows
    }

    /// The rows' bytes: the part of the storage `new` initialised.
    #[inline(always)]
    pub(crate) fn bytes(&self) -> &[u8] {
        let used = self.capacity * self.stride;
        // SAFETY: `new` initialised the first `used` bytes (its slicing checked they lie in
        // the storage), and nothing de-initialises them.
        unsafe { core::slice::from_raw_parts(self.storage[..used].as_ptr().cast::<u8>(), used) }
    }

    /// [`TileRows::bytes`] for writing.
    #[inline(always)]
    fn bytes_mut(&mut self) -> &mut [u8] {
        let used = self.capacity * self.stride;
        // SAFETY: as in `bytes`; writes of `u8` keep them initialised.
        unsafe {
            core::slice::from_raw_parts_mut(self.storage[..used].as_mut_ptr().cast::<u8>(), used)
        }
    }

    /// Loads the consecutive rows of `k` int8 activations in `tile` (at most
    /// [`TILE_ROWS`]; a partial last row is ignored), flipped to `x + 128` as they are
    /// copied.
    #[inline(always)]
    pub(crate) fn copy(&mut self, tile: &[i8]) {
        let (k, stride) = (self.k, self.stride);
        self.count = (tile.len() / k).min(self.capacity);
        for (src, dst) in tile
            .chunks_exact(k)
            .zip(self.bytes_mut().chunks_exact_mut(stride))
        {
            flip_copy(src, dst);
        }
    }

    /// Loads `count` rows (at most the capacity): `fill(r, row)` writes row `r`'s `k` int8
    /// activations (a plain copy, which `memcpy` does fastest), and the whole tile is then
    /// flipped to `x + 128` in one pass over its contiguous rows (faster than flipping run
    /// by run as they are gathered: ResNet-8's 3x3 layers took 15-26% longer that way).
    #[inline(always)]
    pub(crate) fn load(&mut self, count: usize, mut fill: impl FnMut(usize, &mut [i8])) {
        self.count = count.min(self.capacity);
        let (k, stride) = (self.k, self.stride);
        for r in 0..self.count {
            fill(
                r,
                bytemuck::cast_slice_mut(&mut self.bytes_mut()[r * stride..][..k]),
            );
        }
        // The padding between rows flips too; it meets zero weights either way.
        let count = self.count;
        let mut tile = self.bytes_mut()[..count * stride].chunks_exact_mut(32);
        for chunk in &mut tile {
            for b in chunk {
                *b ^= 0x80;
            }
        }
        for b in tile.into_remainder() {
            *b ^= 0x80;
        }
    }
}

/// Copies int8 activations `src` into `dst` as `x + 128`, the form [`TileRows`] keeps (and
/// the depthwise kernel's padded rows).
#[inline(always)]
pub(crate) fn flip_copy(src: &[i8], dst: &mut [u8]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = x as u8 ^ 0x80;
    }
}

/// `out[r][column + j] = sum((x[r] + 128) * w[j])` over the packed depth for the sixteen
/// channels `j` of panel `panel`, from which `sum((x - zp) * w) + bias` is that plus the
/// panel's [offsets](PackedWeights): eight rows by sixteen channels, one `vpdpbusd` per
/// row and group of four inputs, each row's four bytes broadcast. Rows and weights must be
/// for the same `k`; rows past `rows.count()` repeat row 0.
///
/// # Safety
/// [`Isa::Avx512Vnni`](crate::isa::Isa::Avx512Vnni) must be available, and `panel` must be
/// below `weights.panels()`, `column` at most `GEMM_BLOCK - PANEL`, and `out` valid for
/// writes (it may be uninitialized).
#[inline]
unsafe fn gemm_tile(
    rows: &TileRows<'_>,
    weights: &Panels<'_>,
    panel: usize,
    out: *mut [[i32; GEMM_BLOCK]; TILE_ROWS],
    column: usize,
) {
    let panel_len = weights.groups * 4 * PANEL;
    let depth = weights.groups * 4;
    debug_assert!(panel < weights.panels() && column + PANEL <= GEMM_BLOCK);
    debug_assert_eq!(depth, rows.stride);
    let bytes = rows.bytes();
    let row = |r: usize| bytes[if r < rows.count { r * rows.stride } else { 0 }..].as_ptr();
    // SAFETY: the caller guarantees AVX-512 F/BW/VNNI and a packed `panel`, whose
    // `panel_len` bytes `pack` wrote. Each step reads 64 bytes of the panel and four bytes
    // at offset `rax < depth` of each row, inside `rows.bytes()` (rows of `stride == depth`
    // bytes, at most `TILE_ROWS` of them); the stores write sixteen i32 at `column` of each
    // of the eight rows of `out` (256 bytes apart). Vector registers are clobbered through
    // `clobber_abi("C")`, and the callee-saved r12-r15 are declared; the stack is
    // untouched.
    unsafe {
        let panel = weights.bytes.add(panel * panel_len);
        asm!(
            // rdi, rsi, rdx, rcx, r8-r11: the rows; rax: byte offset in them; r12: the
            // panel; r13: the depth in bytes; r15: `out` at the column.
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
            "vpbroadcastd zmm9, dword ptr [rdi + rax]",
            "vpbroadcastd zmm10, dword ptr [rsi + rax]",
            "vpbroadcastd zmm11, dword ptr [rdx + rax]",
            "vpbroadcastd zmm12, dword ptr [rcx + rax]",
            "vpdpbusd zmm0, zmm9, zmm8",
            "vpdpbusd zmm1, zmm10, zmm8",
            "vpdpbusd zmm2, zmm11, zmm8",
            "vpdpbusd zmm3, zmm12, zmm8",
            "vpbroadcastd zmm13, dword ptr [r8 + rax]",
            "vpbroadcastd zmm14, dword ptr [r9 + rax]",
            "vpbroadcastd zmm15, dword ptr [r10 + rax]",
            "vpbroadcastd zmm16, dword ptr [r11 + rax]",
            "vpdpbusd zmm4, zmm13, zmm8",
            "vpdpbusd zmm5, zmm14, zmm8",
            "vpdpbusd zmm6, zmm15, zmm8",
            "vpdpbusd zmm7, zmm16, zmm8",
            "add r12, 64",
            "add rax, 4",
            "cmp rax, r13",
            "jb 2b",
            "3:",
            "vmovdqu32 zmmword ptr [r15], zmm0",
            "vmovdqu32 zmmword ptr [r15 + 256], zmm1",
            "vmovdqu32 zmmword ptr [r15 + 512], zmm2",
            "vmovdqu32 zmmword ptr [r15 + 768], zmm3",
            "vmovdqu32 zmmword ptr [r15 + 1024], zmm4",
            "vmovdqu32 zmmword ptr [r15 + 1280], zmm5",
            "vmovdqu32 zmmword ptr [r15 + 1536], zmm6",
            "vmovdqu32 zmmword ptr [r15 + 1792], zmm7",
            "vzeroupper",
            in("rdi") row(0),
            in("rsi") row(1),
            in("rdx") row(2),
            in("rcx") row(3),
            in("r8") row(4),
            in("r9") row(5),
            in("r10") row(6),
            in("r11") row(7),
            out("rax") _,
            inout("r12") panel => _,
            in("r13") depth,
            in("r15") out.cast::<i32>().add(column),
            clobber_abi("C"),
            options(nostack),
        );
    }
}

/// Where a tile's outputs go: its row `r`, channel `c` of the packed weights, is
/// `output[(first_row + r) * row_stride + first_channel + c]`, and `first_channel + c` is
/// the channel whose multiplier applies.
pub(crate) struct TileOutput {
    pub first_row: usize,
    pub row_stride: usize,
    pub first_channel: usize,
}

/// Runs `rows` against every panel of `weights` ([`gemm_tile`]) and requantizes the sums
/// through `table`, prepared for the packed channels with the packing's offsets as their
/// bias, into `output` 64 channels at a time.
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `output` must be a validated layer's,
/// with `at` inside it and its channels.
///
/// # Panics
/// If the table was not prepared for the packed channels.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm_requantize(
    rows: &TileRows<'_>,
    weights: &Panels<'_>,
    table: &ChannelTable,
    output: &mut [i8],
    at: TileOutput,
) {
    assert_eq!(table.channels(), weights.channels, "a table of the packing");
    // Written by `gemm_tile` before it is read: every row, sixteen channels per panel, and
    // only the channels of the panels written are read. Clearing 2 KiB per tile cost more
    // than the requantization of a small tile.
    let mut acc = MaybeUninit::<[[i32; GEMM_BLOCK]; TILE_ROWS]>::uninit();
    let panels_per_block = GEMM_BLOCK / PANEL;
    let mut first_panel = 0;
    while first_panel < weights.panels() {
        let panels = (weights.panels() - first_panel).min(panels_per_block);
        for panel in first_panel..first_panel + panels {
            // SAFETY: AVX-512 VNNI is available (caller); the panel is packed and its
            // column inside the block.
            unsafe {
                gemm_tile(
                    rows,
                    weights,
                    panel,
                    acc.as_mut_ptr(),
                    (panel - first_panel) * PANEL,
                )
            };
        }
        let first = first_panel * PANEL;
        let len = (weights.channels - first).min(GEMM_BLOCK);
        let channel = at.first_channel + first;
        // Plain loops: `array::from_fn`'s closures were not inlined here (seen in `perf`).
        let mut sums: [&[i32]; TILE_ROWS] = [&[]; TILE_ROWS];
        let mut starts = [0usize; TILE_ROWS];
        for r in 0..rows.count {
            // SAFETY: `gemm_tile` wrote channels `0..panels * PANEL` (at least `len`) of
            // every row of `acc` just above.
            sums[r] = unsafe {
                core::slice::from_raw_parts(acc.as_ptr().cast::<i32>().add(r * GEMM_BLOCK), len)
            };
            starts[r] = (at.first_row + r) * at.row_stride + channel;
        }
        // SAFETY: AVX-512 F/BW and BMI2 are available (caller); `len` accumulators of the
        // table's channels `first..first + len`, the layer's `channel..channel + len`.
        unsafe {
            requantize_table_rows(
                table,
                (first, len),
                &sums[..rows.count],
                0,
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
        // SAFETY: AVX-512 F/BW and BMI2 are available (caller); `len` accumulators for
        // channels `channel..channel + len`, inside the validated bias and multipliers.
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

/// One activation row against the weight rows `first..first + out.len()` of `weights` (rows
/// as long as `x`) with [`dot8`], eight rows at a time, requantized 64 channels at a time.
/// Where the input zero point is -128 (every input that a ReLU produced), `x + 128` is
/// `x - zp` and the dot products need no correction; otherwise `z * sum(w)` comes off them
/// as in [`centered`], the sums from [`row_sums`].
///
/// # Safety
/// AVX-512 VNNI (and so AVX2) must be available; `params`, `bias` and `weights` must be a
/// validated layer's, covering those channels.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_row_requantize(
    x: &[i8],
    weights: &[i8],
    first: usize,
    params: &RequantizeParams<'_>,
    bias: Option<&[i32]>,
    out: &mut [i8],
) {
    const BLOCK: usize = 64;
    let k = x.len();
    let z = 128 + params.input_zero_point;
    let count = out.len();
    // Eight spare entries: every group writes all eight of its sums, the unused ones
    // (repeats of the last row) past the group's end, where the next group or nothing reads.
    let mut acc = [0i32; BLOCK + 8];
    let mut block = 0;
    while block < count {
        let len = (count - block).min(BLOCK);
        let mut o = block;
        while o < block + len {
            let rows = (block + len - o).min(8);
            let mut w: [&[i8]; 8] = [&[]; 8];
            for (r, row) in w.iter_mut().enumerate() {
                *row = &weights[(first + o + r.min(rows - 1)) * k..][..k];
            }
            // SAFETY: AVX-512 VNNI is available (caller).
            let mut sums = unsafe { dot8(x, &w) };
            if z != 0 {
                // SAFETY: as above.
                let totals = unsafe { row_sums(&w) };
                for (s, t) in sums.iter_mut().zip(totals) {
                    *s = s.wrapping_sub(z.wrapping_mul(t));
                }
            }
            acc[o - block..o - block + 8].copy_from_slice(&sums);
            o += rows;
        }
        // SAFETY: AVX-512 F/BW and BMI2 are available (caller); `len` accumulators for
        // channels `first + block..first + block + len`, inside the validated bias and
        // multipliers.
        unsafe {
            requantize_row(
                params,
                &acc[..len],
                bias,
                first + block,
                &mut out[block..][..len],
            )
        };
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
            let mut byte = crate::ops::testing::xorshift_bytes(seed | 1);
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

    proptest! {
        /// Every length from empty to past two full steps, any bytes: `dot8` gives the eight
        /// plain dot products of `x + 128`, and `row_sums` the weight rows' sums.
        #[test]
        fn dot8_gives_the_plain_dot_products(k in 0usize..200, seed in any::<u64>()) {
            if !Isa::Avx512Vnni.available() {
                return Ok(());
            }
            let mut byte = crate::ops::testing::xorshift_bytes(seed | 1);
            let x: Vec<i8> = (0..k).map(|_| byte()).collect();
            let w: [Vec<i8>; 8] = core::array::from_fn(|_| (0..k).map(|_| byte()).collect());
            let rows: [&[i8]; 8] = core::array::from_fn(|r| &w[r][..]);
            // SAFETY: checked available above.
            let (dots, sums) = unsafe { (dot8(&x, &rows), row_sums(&rows)) };
            for r in 0..8 {
                prop_assert_eq!(dots[r], exact(&x, &w[r], -128));
                prop_assert_eq!(sums[r], w[r].iter().map(|&v| i32::from(v)).sum::<i32>());
            }
        }
    }

    /// Rows longer than the table of ones, at the extremes, with every zero point's kind of
    /// correction and a channel count that leaves a partial group: the single-row kernel
    /// requantizes what the reference does.
    #[test]
    fn dot_row_requantize_matches_the_reference_on_long_rows() {
        if !Isa::Avx512Vnni.available() {
            return;
        }
        use crate::fixed_point::QuantizedMultiplier;
        use crate::ops::fully_connected::{FullyConnectedI8, FullyConnectedShape, reference};
        let k = 2 * ONES.len() + 77;
        let channels = 13;
        let mut byte = crate::ops::testing::xorshift_bytes(0x9e37_79b9_7f4a_7c15u64);
        let x: Vec<i8> = (0..k).map(|_| byte()).collect();
        let weights: Vec<i8> = (0..channels * k).map(|_| byte()).collect();
        let bias: Vec<i32> = (0..channels as i32).map(|o| o * 7919 - 40_000).collect();
        let m = [QuantizedMultiplier::from_real(2e-4).unwrap()];
        for input_zero_point in [-128, -127, 0, 127] {
            let params = RequantizeParams {
                input_zero_point,
                output_zero_point: 3,
                multipliers: &m,
                activation_min: -128,
                activation_max: 127,
            };
            let op = FullyConnectedI8 {
                shape: FullyConnectedShape {
                    batch: 1,
                    in_features: k,
                    out_features: channels,
                },
                params,
                input: &x,
                weights: &weights,
                bias: Some(&bias),
            };
            let mut expected = vec![0i8; channels];
            reference::fully_connected_i8(&op, &mut expected);
            let mut got = vec![0i8; channels];
            // SAFETY: checked available above; the layer is the reference's.
            unsafe { dot_row_requantize(&x, &weights, 0, &params, Some(&bias), &mut got) };
            assert_eq!(got, expected, "input zero point {input_zero_point}");
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
