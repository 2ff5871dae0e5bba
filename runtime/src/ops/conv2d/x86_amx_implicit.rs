//! x86_64 AMX int8 convolution as an implicit GEMM: each input row is copied once as its
//! kernel-row runs, and the tiles read every patch from those copies in place, where the
//! im2col kernel ([`super::x86_vnni`]) gathers each whole patch into rows first.
//!
//! In NHWC, one kernel row of a patch, `kernel_width * in_channels` bytes, is one run of
//! the padded input row. Each input row is expanded into its output columns' runs, each
//! padded to whole 64-byte lines (the tiles load a misaligned row as two lines: in a probe,
//! a tile load of sixteen misaligned rows took 2-4 times as long as of aligned ones, and
//! this kernel reading overlapping runs in place, 16 bytes apart, ran ResNet-8's 16 -> 16
//! layers at 0.92x the VBMI kernel's time where expanded runs ran them at 0.79x).
//! A row tile is then sixteen pixels' runs, 64-byte aligned rows at one stride, and a patch
//! is `kernel_height` such runs: step `j` of the depth reads kernel row `j / lines` at line
//! `j % lines` of the run. The weights are the fully-connected tiles' packing of the
//! `[out][kh][kw][in]` filter with each run padded alike (zeros meet the padding), and
//! `tdpbssd` multiplies the signed input as it is (the zero point is in the packing's
//! offsets and, as the padding's value, in the copies).
//!
//! With stride one, a tile covers sixteen consecutive output pixels in raster order across
//! rows: pixel `(y, x)` reads expanded row `y + ky` at column `x`, one stride for all. With
//! a larger stride, each output row has its own tiles where rows are whole tiles; else
//! each kernel row's input rows are expanded into a plane of their own, where tiles again
//! run across rows. The input is expanded in bands of output rows that fit
//! [`BAND_BYTES`].

use core::mem::MaybeUninit;

use super::{Conv2dI8, ConvGeometry};
use crate::isa::Isa;
use crate::ops::fully_connected::x86_amx::slice_len;
use crate::ops::fully_connected::x86_prepared::Prepared;
use crate::ops::requantize::x86_avx512::ChannelTable;
use crate::ops::x86_amx::{AMX_DEPTH, AMX_ROWS, MAX_PATCH_STEPS, PatchTiles, TileSession};
use crate::ops::x86_vnni::{PackedWeights, Panels};

/// Bytes of the expanded rows of a band, with the slack that the last tiles read past it
/// (their dropped rows).
const BAND_BYTES: usize = 48 * 1024;

/// Bytes of one padded input row, with a line of slack for the last run's copy.
const ROW_BYTES: usize = 8 * 1024;

/// Fewest output channels taken: one panel. ResNet-8's 16 -> 16 3x3 layers took 0.79x the
/// time of the VBMI kernel's quad planes where the tiles ran at full speed, and as long
/// where they ran a third as fast (on this project's VM they do for minutes at a time,
/// likely while the core's other thread, which shares them, runs its own tile work;
/// `loam bench --per-op`, both builds alternated).
const MIN_CHANNELS: usize = 16;

/// Shortest run of a kernel row taken: shorter ones would be mostly padding (a first
/// layer's few channels, which the VBMI kernel takes, [`super::x86_vbmi`]).
const MIN_RUN: usize = 32;

/// The expanded rows, on whole lines.
#[repr(C, align(64))]
struct Band([MaybeUninit<i8>; BAND_BYTES]);

/// One padded input row.
#[repr(C, align(64))]
struct PaddedRow([MaybeUninit<i8>; ROW_BYTES]);

/// How the kernel walks a layer.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// A kernel row's run of bytes, and the whole lines it is padded to.
    run: usize,
    padded_run: usize,
    /// Output rows per band.
    band_rows: usize,
    /// Whether tiles run across output rows (stride one).
    raster: bool,
    /// Whether each kernel row reads its own plane of expanded rows (see [`expand_band`]).
    planes: bool,
}

impl Layout {
    fn of(g: &ConvGeometry) -> Option<Layout> {
        // One kernel tap: a strided pointwise layer, whose runs would be mostly padding.
        // Fewer outputs than a panel leave most of each step's multiplies undone.
        if g.groups != 1
            || g.dilation_width != 1
            || g.kernel_height * g.kernel_width == 1
            || g.out_channels < MIN_CHANNELS
        {
            return None;
        }
        let run = g.kernel_width.checked_mul(g.in_channels)?;
        let padded_run = run.div_ceil(AMX_DEPTH).checked_mul(AMX_DEPTH)?;
        let depth = g.kernel_height.checked_mul(padded_run)?;
        if run % 4 != 0
            || run < MIN_RUN
            || depth / AMX_DEPTH > MAX_PATCH_STEPS
            || PackedWeights::channels_that_fit(depth) == 0
        {
            return None;
        }
        // The padded row a run is copied from, a line past its last run.
        let padded_width = (g.out_width - 1)
            .checked_mul(g.stride_width)?
            .checked_add(g.kernel_width)?;
        if padded_width
            .checked_mul(g.in_channels)?
            .checked_add(AMX_DEPTH)?
            > ROW_BYTES
        {
            return None;
        }
        let row_bytes = g.out_width.checked_mul(padded_run)?;
        let room = BAND_BYTES.checked_sub(16 * padded_run)? / row_bytes;
        let raster = g.stride_height == 1 && g.stride_width == 1;
        // Strided rows that are not whole tiles: planes, so that tiles run across rows.
        let planes = !raster && g.out_width % 16 != 0;
        let band_rows = if planes {
            room / g.kernel_height
        } else {
            let reach = (g.kernel_height - 1).checked_mul(g.dilation_height)? + 1;
            room.checked_sub(reach)? / g.stride_height + 1
        }
        .min(g.out_height);
        (band_rows > 0).then_some(Layout {
            run,
            padded_run,
            band_rows,
            raster,
            planes,
        })
    }

    /// Input rows a band of `rows` output rows reads.
    fn band_input_rows(&self, g: &ConvGeometry, rows: usize) -> usize {
        (rows - 1) * g.stride_height + (g.kernel_height - 1) * g.dilation_height + 1
    }
}

/// The runs of the layer's patches if the kernel takes it on this CPU (AMX): kernel rows,
/// their bytes, and the bytes they are padded to. It takes layers of one group, no
/// horizontal dilation, more than one tap, at least [`MIN_CHANNELS`] outputs, runs of
/// whole groups of four and at least [`MIN_RUN`] bytes, and a padded patch the packing
/// holds.
pub(crate) fn runs(g: &ConvGeometry) -> Option<(usize, usize, usize)> {
    let layout = Layout::of(g).filter(|_| Isa::Amx.available())?;
    Some((g.kernel_height, layout.run, layout.padded_run))
}

/// Whether the kernel takes the layer on this CPU ([`runs`]).
pub(crate) fn takes(g: &ConvGeometry) -> bool {
    runs(g).is_some()
}

/// Channels per slice of the packing: the fully-connected tiles' slices for the padded
/// depth (0 where the kernel does not take the layer).
pub(crate) fn packing_slice_len(g: &ConvGeometry) -> usize {
    Layout::of(g).map_or(0, |l| {
        slice_len(g.kernel_height * l.padded_run, g.out_channels)
    })
}

/// Runs `op` if the kernel takes it, with the interpreter's packing if there is one
/// (`false`, nothing written, where it does not take the layer).
///
/// # Safety
/// `op` must have passed validation for `output`; `prepared`, if any, must be the
/// packing of `op`'s weights for this kernel.
pub(crate) unsafe fn conv2d_i8(
    op: &Conv2dI8<'_>,
    output: &mut [i8],
    prepared: Option<&Prepared<'_>>,
) -> bool {
    let Some(layout) = Layout::of(&op.geometry) else {
        return false;
    };
    if !Isa::Amx.available() {
        return false;
    }
    // SAFETY: AMX, and with it AVX-512 VNNI and AVX2, are available (checked above); `op`
    // is validated and `prepared` its packing (caller).
    unsafe { conv2d_i8_amx(op, &layout, output, prepared) };
    true
}

/// One row tile: the run of the band its first row reads, and its rows' output pixels:
/// row `r` of `rows` writes pixel `first + r`, the other rows are dropped.
#[derive(Clone, Copy)]
struct RowTile {
    run: usize,
    first: usize,
    rows: (u8, u8),
}

/// # Safety
/// AMX (and so AVX-512 VNNI and AVX2) must be available; `op` validated for `output`, its
/// layout `layout`, and `prepared` its packing.
#[target_feature(enable = "avx2,fma")]
unsafe fn conv2d_i8_amx(
    op: &Conv2dI8<'_>,
    layout: &Layout,
    output: &mut [i8],
    prepared: Option<&Prepared<'_>>,
) {
    let g = &op.geometry;
    let channels = g.out_channels;
    let zp = op.params.input_zero_point;
    let slice_len = packing_slice_len(g);
    debug_assert!(prepared.is_none_or(|p| p.slice_len() == slice_len));
    let slices = channels.div_ceil(slice_len);
    // Each step's offset in a pixel's patch: kernel row, then the run's lines.
    let mut step_offsets = [0usize; MAX_PATCH_STEPS];
    let lines = layout.padded_run / AMX_DEPTH;
    let steps = g.kernel_height * lines;
    let expanded_row = g.out_width * layout.padded_run;
    // Kernel row `ky` reads `ky * dilation` rows further, or its own plane.
    let kernel_row_bytes = if layout.planes {
        layout.band_rows * expanded_row
    } else {
        g.dilation_height * expanded_row
    };
    for (j, offset) in step_offsets[..steps].iter_mut().enumerate() {
        let (ky, line) = (j / lines, j % lines);
        *offset = ky * kernel_row_bytes + line * AMX_DEPTH;
    }
    let steps = &step_offsets[..steps];
    let mut band = Band([MaybeUninit::uninit(); BAND_BYTES]);
    let mut padded = PaddedRow([MaybeUninit::uninit(); ROW_BYTES]);
    let mut packed = PackedWeights::new();
    let mut table = ChannelTable::new();
    // SAFETY: AMX is available (caller); 64 is a chunk of whole quads.
    let mut session = unsafe { TileSession::start(AMX_DEPTH) };
    // Packs slice `i` and prepares its table, unless it is the one prepared last.
    let mut prepared_slice = None;
    let mut prepare_slice = |i: usize, packed: &mut PackedWeights, table: &mut ChannelTable| {
        if prepared_slice == Some(i) {
            return;
        }
        let from = i * slice_len;
        let len = (channels - from).min(slice_len);
        let offsets = match prepared {
            Some(prepared) => prepared.slice(i).0,
            None => {
                let k = g.patch_len();
                let bias = op.bias.map(|bias| &bias[from..from + len]);
                let runs = (g.kernel_height, layout.run, layout.padded_run);
                // SAFETY: AVX2 is available (caller); `len` channels of the padded depth
                // fit the packing (`Layout::of`, `slice_len`). Signed rows: offsets for
                // `zp - 128`.
                unsafe {
                    packed.pack_runs(
                        &op.filter[from * k..(from + len) * k],
                        len,
                        runs,
                        zp - 128,
                        bias,
                    )
                };
                packed.offsets()
            }
        };
        // SAFETY: AVX-512 VNNI is available (caller); `len <= TABLE_CHANNELS` (the slices
        // are at most that), inside the validated multipliers.
        unsafe { table.prepare(&op.params, Some(offsets), from, len) };
        prepared_slice = Some(i);
    };
    for b in 0..g.batch {
        let mut y0 = 0;
        while y0 < g.out_height {
            let rows = layout.band_rows.min(g.out_height - y0);
            let used = expand_band(op, layout, (b, y0, rows), &mut band.0, &mut padded.0);
            // SAFETY: `expand_band` wrote the first `used` bytes.
            let image = unsafe { core::slice::from_raw_parts(band.0.as_ptr().cast::<i8>(), used) };
            for i in 0..slices {
                prepare_slice(i, &mut packed, &mut table);
                let from = i * slice_len;
                let panels = match prepared {
                    Some(prepared) => prepared.slice(i).1,
                    None => packed.view(),
                };
                let mut pending: Option<RowTile> = None;
                let mut issue = |pair: [Option<RowTile>; 2]| {
                    // SAFETY: AMX is available; the tiles' outputs are pixels of the
                    // validated layer, and the slice's channels its channels.
                    unsafe {
                        issue_pair(
                            &mut session,
                            (image, layout, steps),
                            pair,
                            (&panels, &table),
                            (output, from, channels),
                        )
                    };
                };
                for_each_tile(g, layout, (b, y0, rows), |tile| match pending.take() {
                    None => pending = Some(tile),
                    Some(before) => issue([Some(before), Some(tile)]),
                });
                if pending.is_some() {
                    issue([pending, None]);
                }
                // SAFETY: AMX is available; the table and output of the passes above.
                unsafe { session.finish(&table, output) };
            }
            y0 += rows;
        }
    }
}

/// Expands the input rows that output rows `y0..y0 + rows` of image `b` read into `band`,
/// each once in order, or, for [planes](Layout::planes), those of each kernel row in a
/// plane of its own (`band_rows` rows apart; a strided layer's kernel rows read different
/// input rows, and its output pixels then lie one run apart in each plane); zeros for the
/// slack after each. The bytes written.
fn expand_band(
    op: &Conv2dI8<'_>,
    layout: &Layout,
    (b, y0, rows): (usize, usize, usize),
    band: &mut [MaybeUninit<i8>; BAND_BYTES],
    padded: &mut [MaybeUninit<i8>; ROW_BYTES],
) -> usize {
    let g = &op.geometry;
    let expanded_row = g.out_width * layout.padded_run;
    let slack = 16 * layout.padded_run;
    let width = (g.out_width - 1) * g.stride_width + g.kernel_width;
    // The line past the last run, which the last run's copy reads (into its padding).
    padded[width * g.in_channels..][..AMX_DEPTH].fill(MaybeUninit::new(0));
    let zero = MaybeUninit::new(0);
    if !layout.planes {
        let first = y0 * g.stride_height;
        let count = layout.band_input_rows(g, rows);
        for (v, dst) in (first..first + count).zip(band.chunks_exact_mut(expanded_row)) {
            expand_row(op, layout, (b, v), dst, padded);
        }
        let used = count * expanded_row + slack;
        band[count * expanded_row..used].fill(zero);
        return used;
    }
    let plane = layout.band_rows * expanded_row;
    for ky in 0..g.kernel_height {
        let dst = &mut band[ky * plane..];
        for (y, dst) in dst.chunks_exact_mut(expanded_row).take(rows).enumerate() {
            let v = (y0 + y) * g.stride_height + ky * g.dilation_height;
            expand_row(op, layout, (b, v), dst, padded);
        }
        // The slack, up to the next plane (written next).
        let end = if ky + 1 < g.kernel_height {
            plane
        } else {
            usize::MAX
        };
        let slack = rows * expanded_row..(rows * expanded_row + slack).min(end);
        dst[slack].fill(zero);
    }
    (g.kernel_height - 1) * plane + rows * expanded_row + slack
}

/// Expands padded input row `v` of image `b` into `dst`: its output columns' runs from the
/// row padded with the input zero point (in `padded`), each run on its own lines.
fn expand_row(
    op: &Conv2dI8<'_>,
    layout: &Layout,
    (b, v): (usize, usize),
    dst: &mut [MaybeUninit<i8>],
    padded: &mut [MaybeUninit<i8>; ROW_BYTES],
) {
    let g = &op.geometry;
    let c = g.in_channels;
    // Validated zero points are int8.
    let fill = MaybeUninit::new(op.params.input_zero_point as i8);
    let Some(iy) = g.image_row(v) else {
        dst.fill(fill);
        return;
    };
    let width = (g.out_width - 1) * g.stride_width + g.kernel_width;
    let left = g.pad_left.min(width);
    let inside = g.in_width.min(width - left);
    let src = &op.input[((b * g.in_height + iy) * g.in_width) * c..][..inside * c];
    padded[..left * c].fill(fill);
    for (d, &s) in padded[left * c..][..inside * c].iter_mut().zip(src) {
        *d = MaybeUninit::new(s);
    }
    padded[(left + inside) * c..width * c].fill(fill);
    let step = g.stride_width * c;
    for (x, run) in dst.chunks_exact_mut(layout.padded_run).enumerate() {
        // Whole lines: the bytes past the run (the next pixels, or the zeros past the
        // row) meet zero weights.
        for (line, to) in run.chunks_exact_mut(AMX_DEPTH).enumerate() {
            let from = &padded[x * step + line * AMX_DEPTH..][..AMX_DEPTH];
            to.copy_from_slice(from);
        }
    }
}

/// Calls `f` with each row tile of output rows `y0..y0 + rows` of image `b`.
fn for_each_tile(
    g: &ConvGeometry,
    layout: &Layout,
    (b, y0, rows): (usize, usize, usize),
    mut f: impl FnMut(RowTile),
) {
    let first = (b * g.out_height + y0) * g.out_width;
    if layout.raster || layout.planes {
        // Sixteen consecutive output pixels, across rows.
        let total = rows * g.out_width;
        for run in (0..total).step_by(16) {
            f(RowTile {
                run,
                first: first + run,
                rows: (0, (total - run).min(16) as u8),
            });
        }
    } else {
        for y in 0..rows {
            let row = y * g.stride_height * g.out_width;
            let mut x0 = 0;
            while x0 < g.out_width {
                // The last tile of a row at least sixteen wide ends at its end.
                let start = if g.out_width >= 16 {
                    x0.min(g.out_width - 16)
                } else {
                    0
                };
                f(RowTile {
                    run: row + start,
                    first: first + y * g.out_width + start,
                    rows: ((x0 - start) as u8, (g.out_width - start).min(16) as u8),
                });
                x0 += 16;
            }
        }
    }
}

/// Issues one pass of up to two row tiles over the slice's panels.
///
/// # Safety
/// AMX must be available and the session configured for 64-byte steps; the outputs are
/// pixels of the validated layer whose output is `output`, with `channels` channels, the
/// slice's channels starting at `from`.
unsafe fn issue_pair(
    session: &mut TileSession,
    (image, layout, steps): (&[i8], &Layout, &[usize]),
    pair: [Option<RowTile>; 2],
    (panels, table): (&Panels<'_>, &ChannelTable),
    (output, from, channels): (&mut [i8], usize, usize),
) {
    let [Some(first), second] = pair else {
        return;
    };
    let mut outs = [(0u8, 0usize); AMX_ROWS];
    let mut n = 0;
    for (t, tile) in [Some(first), second].into_iter().enumerate() {
        let Some(tile) = tile else { continue };
        for r in tile.rows.0..tile.rows.1 {
            outs[n] = (
                16 * t as u8 + r,
                (tile.first + usize::from(r)) * channels + from,
            );
            n += 1;
        }
    }
    let base = |t: RowTile| t.run * layout.padded_run;
    let bases = [base(first), base(second.unwrap_or(first))];
    let rows = PatchTiles::new(image, bases, layout.padded_run, (steps, AMX_DEPTH));
    // SAFETY: the caller's contract; the rows are checked to lie inside the band.
    unsafe { session.patches_requantize(&rows, panels, table, output, &outs[..n]) };
}
