//! Weights packed once, when an interpreter is made, for the x86 GEMMs of int8
//! fully-connected layers, pointwise convolutions (which run as fully-connected layers) and
//! the other convolutions' im2col GEMMs.
//!
//! The VNNI and AMX kernels multiply weights packed into panels of sixteen channels
//! ([`crate::ops::x86_vnni::pack_panels`]). Packing on every call cost 9% of MobileNet's
//! time (`perf`), most of it in the pointwise layers, and 4% of ResNet-8's, in its 3x3
//! layers; ONNX Runtime packs once, at session creation. An interpreter whose arena has
//! room for its records ([`crate::Interpreter::arena_size_with_records`]) keeps these
//! panels among the ops' prepared words, so each call only prepares its requantization
//! table. Measured with `loam bench --per-op`, both builds alternated: MobileNet 165.8 ->
//! 147.5 us (its late pointwise layers 0.31-0.69x), ResNet-8 144.5 -> 130.4 us.
//!
//! What is kept depends on the CPU: the panels are those of the kernel that this CPU runs
//! for the layer's shape ([`Plan::of`]); another CPU, or a shape no GEMM takes, keeps
//! nothing, and the kernels pack per call as before. The words start with a tag naming the
//! kernel, and a kernel given another's words packs for itself.

use core::mem::MaybeUninit;

use super::{FullyConnectedI8, FullyConnectedShape, x86_amx, x86_vnni};
use crate::isa::Isa;
use crate::ops::conv2d::ConvGeometry;
use crate::ops::requantize::x86_avx512::TABLE_CHANNELS;
use crate::ops::x86_vnni::{PANEL, PackedWeights, Panels, pack_panels, panel_bytes, spread_runs};

/// The kernel a packing is for (the words' first word).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kernel {
    /// [`x86_vnni`]'s GEMM: slices of up to [`TABLE_CHANNELS`], offsets for the layer's
    /// zero point.
    Vnni = 1,
    /// [`x86_amx`]'s tiles: its equal slices, offsets for the zero point less 128.
    Amx = 2,
    /// The VNNI convolution GEMM (`conv2d::x86_vnni`): each group's equal slices, depth
    /// padded to four bytes.
    ConvVnni = 3,
    /// The AMX convolution GEMM: each group's equal slices, depth padded to 64 bytes.
    ConvAmx = 4,
    /// The AMX implicit-GEMM convolution (`conv2d::x86_amx_implicit`): the fully-connected
    /// tiles' packing of the filter as it is.
    ConvImplicit = 5,
}

/// Words before the slices: the tag, then room to start the panels on a 64-byte line.
const HEADER_WORDS: usize = 1 + 15;

/// How a layer's weights are packed on this CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    kernel: Kernel,
    k: usize,
    /// Channels per group.
    channels: usize,
    groups: usize,
    slice_len: usize,
    /// Bytes each panel's depth is padded to a multiple of.
    align: usize,
    /// Where each weight row is runs padded apart ([`spread_runs`]): the runs, their
    /// bytes, and their padded bytes (`k` is then the padded depth).
    runs: Option<(usize, usize, usize)>,
}

impl Plan {
    /// The packing the kernel this CPU runs for `shape` uses, or `None` where it packs
    /// nothing (a batch of one, a layer too large for the packing, a CPU without VNNI).
    pub(crate) fn of(shape: &FullyConnectedShape) -> Option<Plan> {
        let (k, channels) = (shape.in_features, shape.out_features);
        let (kernel, slice_len) = if Isa::Amx.available()
            && x86_amx::depth_chunk(k).is_some()
            && x86_amx::amx_takes(shape)
        {
            (Kernel::Amx, x86_amx::slice_len(k, channels))
        } else if Isa::Avx512Vnni.available() && x86_vnni::packs(shape) {
            (Kernel::Vnni, TABLE_CHANNELS)
        } else {
            return None;
        };
        (slice_len > 0 && channels > 0).then_some(Plan {
            kernel,
            k,
            channels,
            groups: 1,
            slice_len,
            align: 4,
            runs: None,
        })
    }

    /// The packing the convolution kernel this CPU runs for `g` uses in its im2col GEMM, or
    /// `None` where it packs nothing (pointwise layers run as fully-connected ones, see
    /// [`Plan::of`]; deeper patches than the packing holds dot rows instead).
    pub(crate) fn conv(g: &ConvGeometry) -> Option<Plan> {
        use crate::ops::conv2d::{x86_amx_implicit as implicit, x86_vnni as conv};
        if let Some((runs, run, padded_run)) = implicit::runs(g) {
            let slice_len = implicit::packing_slice_len(g);
            return (slice_len > 0).then_some(Plan {
                kernel: Kernel::ConvImplicit,
                k: runs * padded_run,
                channels: g.out_channels,
                groups: 1,
                slice_len,
                align: 4,
                runs: Some((runs, run, padded_run)),
            });
        }
        // Pointwise layers run as fully-connected ones; the first-layer kernel packs
        // nothing.
        if g.is_pointwise()
            || !Isa::Avx512Vnni.available()
            || crate::ops::conv2d::x86_vbmi::takes(g)
        {
            return None;
        }
        let k = g.patch_len();
        let (kernel, align) = if Isa::Amx.available() && conv::amx_takes(g) {
            (Kernel::ConvAmx, conv::AMX_ALIGN)
        } else if PackedWeights::channels_that_fit(k) > 0 {
            (Kernel::ConvVnni, 4)
        } else {
            return None;
        };
        let channels = g.group_out_channels();
        let slice_len = conv::slice_len(k, channels, align);
        (slice_len > 0 && channels > 0 && g.groups > 0).then_some(Plan {
            kernel,
            k,
            channels,
            groups: g.groups,
            slice_len,
            align,
            runs: None,
        })
    }

    /// The kernel the packing is for.
    pub(crate) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Slices per group.
    fn slices(&self) -> usize {
        self.channels.div_ceil(self.slice_len)
    }

    /// Channels of a group's slice `i`.
    fn slice_channels(&self, i: usize) -> usize {
        (self.channels - i * self.slice_len).min(self.slice_len)
    }

    /// Words of a group's slice `i`: its offsets (a whole number of 64-byte lines) then its
    /// panels.
    fn slice_words(&self, i: usize) -> (usize, usize) {
        let len = self.slice_channels(i);
        (
            len.div_ceil(PANEL) * PANEL,
            panel_bytes(self.k, len, self.align) / 4,
        )
    }

    /// Words of one group's slices.
    fn group_words(&self) -> usize {
        let whole = self.slice_words(0);
        let last = self.slice_words(self.slices() - 1);
        (self.slices() - 1) * (whole.0 + whole.1) + last.0 + last.1
    }

    /// Every word the packing keeps.
    fn words(&self) -> usize {
        HEADER_WORDS + self.groups * self.group_words()
    }

    /// Bytes of each weight row (less than the packed depth where runs are padded).
    fn row_len(&self) -> usize {
        self.runs.map_or(self.k, |(runs, run, _)| runs * run)
    }

    /// The zero point the packing's offsets are for, given the layer's.
    fn packing_zero_point(&self, zp: i32) -> i32 {
        match self.kernel {
            Kernel::Vnni | Kernel::ConvVnni | Kernel::ConvAmx => zp,
            // The tiles multiply the signed input as it is (see `x86_amx`).
            Kernel::Amx | Kernel::ConvImplicit => zp - 128,
        }
    }
}

/// Words [`prepare`] keeps for an int8 layer of `shape` on this CPU (0 where nothing is
/// packed).
pub(crate) fn words(shape: &FullyConnectedShape) -> usize {
    Plan::of(shape).map_or(0, |p| p.words())
}

/// Words [`prepare_plan`] keeps for an int8 convolution of `g` on this CPU (0 where nothing
/// is packed).
pub(crate) fn conv_words(g: &ConvGeometry) -> usize {
    Plan::conv(g).map_or(0, |p| p.words())
}

/// Where the slices start in `words`: past the tag, on the first 64-byte line.
fn data_start(words: &[i32]) -> usize {
    let misaligned = (words.as_ptr() as usize / 4 + 1) % 16;
    1 + (16 - misaligned) % 16
}

/// Packs `weights` (`[channels][k]`) with `bias` and the input zero point `zp` into
/// `words`, which must hold [`words`] for `shape`. `None` where the words do not match.
pub(crate) fn prepare(
    shape: &FullyConnectedShape,
    weights: &[i8],
    bias: Option<&[i32]>,
    zp: i32,
    words: &mut [i32],
) -> Option<()> {
    prepare_plan(&Plan::of(shape)?, weights, bias, zp, words)
}

/// Packs `weights` (`[groups * channels][k]`, the groups' channels one after the other) as
/// `plan` lays them out into `words`, which must hold its words.
pub(crate) fn prepare_plan(
    plan: &Plan,
    weights: &[i8],
    bias: Option<&[i32]>,
    zp: i32,
    words: &mut [i32],
) -> Option<()> {
    let total = plan.groups * plan.channels;
    let row_len = plan.row_len();
    if words.len() != plan.words()
        || weights.len() != row_len * total
        || bias.is_some_and(|b| b.len() != total)
    {
        return None;
    }
    words[0] = plan.kernel as i32;
    let mut at = data_start(words);
    let zp = plan.packing_zero_point(zp);
    for (group, i) in (0..plan.groups).flat_map(|g| (0..plan.slices()).map(move |i| (g, i))) {
        let from = group * plan.channels + i * plan.slice_len;
        let len = plan.slice_channels(i);
        let (offset_words, panel_words) = plan.slice_words(i);
        let (offsets, rest) = words[at..].split_at_mut(offset_words);
        let panels: &mut [MaybeUninit<i8>] = {
            let panels = &mut rest[..panel_words];
            // SAFETY: `i32` words reinterpreted as the bytes they hold; every byte pattern
            // is a valid `i8`, and the slice covers exactly those words.
            unsafe { core::slice::from_raw_parts_mut(panels.as_mut_ptr().cast(), panel_words * 4) }
        };
        let bias = bias.map(|b| &b[from..from + len]);
        let offsets = &mut offsets[..len];
        // SAFETY: initialized `i32` words viewed as possibly uninitialized ones, which
        // `pack_panels` only writes (with initialized values).
        let offsets: &mut [MaybeUninit<i32>] =
            unsafe { core::slice::from_raw_parts_mut(offsets.as_mut_ptr().cast(), offsets.len()) };
        // SAFETY: AVX2 is available (the plan's kernel needs AVX-512 VNNI, which implies
        // it); the panels hold `panel_bytes(k, len, align)` bytes, at least those of the
        // rows as they are.
        unsafe {
            pack_panels(
                panels,
                offsets,
                &weights[from * row_len..(from + len) * row_len],
                (row_len, plan.align),
                zp,
                bias,
            )
        };
        if let Some(runs) = plan.runs {
            spread_runs(panels, len, runs);
        }
        at += offset_words + panel_words;
    }
    Some(())
}

/// A layer's packing as [`prepare`] left it, checked against the kernel that reads it.
pub(crate) struct Prepared<'a> {
    plan: Plan,
    words: &'a [i32],
}

impl<'a> Prepared<'a> {
    /// The packing in `words` for a layer of `shape`, if they hold one for `kernel` (the
    /// kernel asking) on this CPU.
    pub(crate) fn of(
        words: &'a [i32],
        shape: &FullyConnectedShape,
        kernel: Kernel,
    ) -> Option<Self> {
        Self::of_plan(words, Plan::of(shape)?, kernel)
    }

    /// The packing in `words` for a convolution of `g`, if they hold one for `kernel`.
    pub(crate) fn conv(words: &'a [i32], g: &ConvGeometry, kernel: Kernel) -> Option<Self> {
        Self::of_plan(words, Plan::conv(g)?, kernel)
    }

    fn of_plan(words: &'a [i32], plan: Plan, kernel: Kernel) -> Option<Self> {
        (plan.kernel == kernel && words.len() == plan.words() && words[0] == kernel as i32)
            .then_some(Prepared { plan, words })
    }

    /// Channels per slice (the last may have fewer).
    pub(crate) fn slice_len(&self) -> usize {
        self.plan.slice_len
    }

    /// Slice `i`'s offsets (bias less `(128 + zp) * sum(w)` for the packing's zero point)
    /// and panels, of the first group.
    ///
    /// # Panics
    /// If there is no slice `i`.
    pub(crate) fn slice(&self, i: usize) -> (&'a [i32], Panels<'a>) {
        self.group_slice(0, i)
    }

    /// Slice `i` of group `group`, as [`Prepared::slice`].
    ///
    /// # Panics
    /// If there is no such slice.
    pub(crate) fn group_slice(&self, group: usize, i: usize) -> (&'a [i32], Panels<'a>) {
        let plan = &self.plan;
        assert!(
            i < plan.slices() && group < plan.groups,
            "a slice of the packing"
        );
        let whole = plan.slice_words(0);
        let at = data_start(self.words) + group * plan.group_words() + i * (whole.0 + whole.1);
        let len = plan.slice_channels(i);
        let (offset_words, panel_words) = plan.slice_words(i);
        let offsets = &self.words[at..at + len];
        let panels = &self.words[at + offset_words..][..panel_words];
        let bytes: &'a [i8] = bytemuck::cast_slice(panels);
        let groups = plan.k.div_ceil(plan.align) * plan.align / 4;
        (offsets, Panels::new(bytes, groups, len))
    }
}

/// Runs `op` (validated for `output`) through the packing in `words`, if they hold one
/// for the kernel this CPU runs for it; `false` (nothing written) where they do not.
pub(crate) fn fully_connected_i8(
    op: &FullyConnectedI8<'_>,
    words: &[i32],
    output: &mut [i8],
) -> bool {
    let Some(plan) = Plan::of(&op.shape) else {
        return false;
    };
    let Some(prepared) = Prepared::of(words, &op.shape, plan.kernel()) else {
        return false;
    };
    match plan.kernel() {
        // SAFETY: the plan's kernel ran its checks: AMX available and a shape the tiles
        // take; `op` is validated (caller).
        Kernel::Amx => unsafe { x86_amx::fully_connected_i8_prepared(op, output, &prepared) },
        // SAFETY: AVX-512 VNNI is available and the GEMM takes the shape (the plan's
        // checks); `op` is validated (caller).
        Kernel::Vnni => unsafe { x86_vnni::gemm_i8(op, output, Some(&prepared)) },
        Kernel::ConvVnni | Kernel::ConvAmx | Kernel::ConvImplicit => return false,
    }
    true
}
