//! The reference firmware for size budgets (`cargo xtask size`): one int8 fully-connected
//! layer with weights in flash, run once, its result logged. It links exactly the runtime code
//! a model of that layer needs, so its flash and RAM show what loam costs on a board.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use loam::fixed_point::QuantizedMultiplier;
use loam::ops::fully_connected::{
    FullyConnectedI8, FullyConnectedI8Params, FullyConnectedShape, fully_connected_i8,
};
use loam_firmware::exit;

const IN: usize = 64;
const OUT: usize = 10;

/// Weights as a model would hold them: constant data in flash.
static WEIGHTS: [i8; IN * OUT] = {
    let mut w = [0i8; IN * OUT];
    let mut i = 0;
    while i < w.len() {
        w[i] = ((i * 37) % 255) as u8 as i8;
        i += 1;
    }
    w
};
static BIAS: [i32; OUT] = [100, -200, 300, -400, 500, -600, 700, -800, 900, -1000];

#[entry]
fn main() -> ! {
    let multipliers = match QuantizedMultiplier::new(1_518_500_250, -9) {
        Ok(m) => [m],
        Err(e) => {
            defmt::error!("bad multiplier: {}", e);
            exit(1)
        }
    };
    let mut input = [0i8; IN];
    for (i, x) in input.iter_mut().enumerate() {
        *x = (i as i8).wrapping_mul(3);
    }
    let op = FullyConnectedI8 {
        shape: FullyConnectedShape {
            batch: 1,
            in_features: IN,
            out_features: OUT,
        },
        params: FullyConnectedI8Params {
            input_zero_point: -1,
            output_zero_point: 0,
            multipliers: &multipliers,
            activation_min: -128,
            activation_max: 127,
        },
        input: &input,
        weights: &WEIGHTS,
        bias: Some(&BIAS),
    };
    let mut output = [0i8; OUT];
    match fully_connected_i8(&op, &mut output) {
        Ok(()) => {
            defmt::info!("output {=[?]}", output);
            exit(0)
        }
        Err(e) => {
            defmt::error!("fully_connected_i8: {}", e);
            exit(1)
        }
    }
}
