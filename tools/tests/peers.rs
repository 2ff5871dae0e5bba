//! loam against ONNX Runtime and tract on the bundled architectures: each `.loam` is exported
//! to ONNX, run by both peers on the same seeded inputs, and the outputs compared. Float
//! models agree to rounding; int8 models (QDQ on the peers' side) within one quantization
//! step, since each runtime rounds its requantization its own way.
//!
//! These need ONNX Runtime's shared library (`cargo xtask setup` installs the `onnxruntime`
//! wheel); without it they fail and say how to get it, rather than pass unchecked.

use loam_tools::graph::Layer;
use loam_tools::model_file::ModelFile;
use loam_tools::peers::Peer;
use loam_tools::run::random_inputs;
use loam_tools::verify::{Difference, Tolerance, verify};
use loam_tools::zoo;

fn check(name: &str, int8: bool, peer: Peer) {
    let mut graph = zoo::graph(name).unwrap();
    // tract 0.23.9 fuses DequantizeLinear -> Softmax -> QuantizeLinear into its int8 softmax,
    // which ignores the output zero point (`softmax_quant_inner` clips `p / scale` to
    // [-128, 127]), so with TFLite's softmax output (scale 1/256, zero point -128) every value
    // saturates at 127. Against tract, int8 models are compared up to the logits; ONNX
    // Runtime checks the softmax.
    if int8 && peer == Peer::Tract && matches!(graph.layers.last(), Some(Layer::Softmax { .. })) {
        graph.layers.pop();
    }
    let built = zoo::build_graph(&graph, int8).expect("the architecture builds");
    let file = ModelFile::from_bytes(name, &built.bytes).expect("the model loads");
    let model = file.model().unwrap();
    let samples: Vec<_> = (0..10)
        .map(|s| random_inputs(&model, 100 + s).unwrap())
        .collect();
    let report = verify(&file, peer, &samples).unwrap_or_else(|e| {
        panic!(
            "{name} ({}) on {peer}: {e:#}",
            if int8 { "int8" } else { "f32" }
        )
    });
    println!("{name} int8={int8}: {}", report.to_text());
    // Runtimes round requantization differently by one step, and a one-step difference in
    // an early layer moves later ones: at the softmax (which compresses) loam and ONNX
    // Runtime agree within 1 LSB on at least 99% of elements and never differ by more than 2.
    // Logits (what tract is compared on) are not compressed: over MobileNet's 28
    // requantizations the differences compound to up to 10 LSB, against ONNX Runtime's
    // logits as much as tract's, so 12 LSB (under 5% of the int8 range) bounds them; a
    // wrong zero point, scale or layout is off by far more.
    let compares_logits = int8 && peer == Peer::Tract;
    let tolerance = Tolerance {
        atol: 1e-4,
        rtol: 1e-4,
        max_lsb: if compares_logits { 12 } else { 2 },
    };
    let failures = report.failures(tolerance);
    assert!(failures.is_empty(), "{name} on {peer}: {failures:?}");
    for o in &report.outputs {
        if int8 {
            assert!(matches!(o.difference, Difference::Quantized { .. }));
            let near = o.within_lsb(1).unwrap();
            assert!(
                compares_logits || near >= 0.99,
                "{name} on {peer}: only {near} within 1 LSB"
            );
        } else {
            assert!(matches!(o.difference, Difference::Float { .. }));
        }
    }
}

macro_rules! peer_tests {
    ($($test:ident: $model:literal, $int8:literal;)*) => {$(
        #[test]
        fn $test() {
            for peer in Peer::ALL {
                check($model, $int8, peer);
            }
        }
    )*};
}

peer_tests! {
    digits_mlp_f32: "digits-mlp", false;
    digits_mlp_int8: "digits-mlp", true;
    ds_cnn_f32: "ds-cnn", false;
    ds_cnn_int8: "ds-cnn", true;
    resnet8_f32: "resnet-8", false;
    resnet8_int8: "resnet-8", true;
    autoencoder_f32: "autoencoder", false;
    autoencoder_int8: "autoencoder", true;
    mobilenet_f32: "mobilenet-v1-0.25", false;
    mobilenet_int8: "mobilenet-v1-0.25", true;
}

/// Every op kind, f32 and int8: the runtime's compatibility fixture holds them all, as two
/// chains of ops (one float, outputs named `f.*`, one int8). Float outputs agree to float
/// rounding (and the float chain's Quantize within one step); int8 ones are only required to be there, since a chain of a dozen requantizing
/// ops drifts by several steps between any two runtimes.
#[test]
fn every_op_of_the_format_fixture_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../runtime/tests/data/format-1.0.loam"
    );
    let file = ModelFile::open(std::path::Path::new(path)).unwrap();
    let model = file.model().unwrap();
    let samples: Vec<_> = (0..5).map(|s| random_inputs(&model, s).unwrap()).collect();
    for peer in Peer::ALL {
        let report = verify(&file, peer, &samples).unwrap_or_else(|e| panic!("{peer}: {e:#}"));
        println!("{}", report.to_text());
        assert_eq!(report.outputs.len(), model.outputs().len());
        for o in report.outputs.iter().filter(|o| o.name.starts_with("f.")) {
            match o.difference {
                Difference::Float { max_rel, .. } => {
                    assert!(max_rel < 1e-5, "{peer}: `{}` max rel {max_rel}", o.name)
                }
                // The float chain's Quantize: one rounding, so one step at most.
                Difference::Quantized { .. } => {
                    assert!(o.max_lsb() <= Some(1), "{peer}: `{}` {o:?}", o.name)
                }
            }
        }
    }
}
