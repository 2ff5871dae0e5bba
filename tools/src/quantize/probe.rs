//! Intermediate values of a float (or QDQ) ONNX model, read by running it in tract with those
//! values made graph outputs: what calibration and the per-layer error report observe.

use anyhow::{Context, Result, anyhow};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// An ONNX model in tract that returns the chosen values for one input sample.
pub struct Probe {
    state: TypedSimpleState,
    input_dims: Vec<usize>,
}

impl Probe {
    /// Loads `onnx` with its input `input` fixed to `dims`, returning `values` (ONNX value
    /// names) from each run, in that order.
    pub fn load(onnx: &[u8], input: &str, dims: &[usize], values: &[String]) -> Result<Probe> {
        let proto = pb::ModelProto::decode(onnx).context("decoding the ONNX model")?;
        let parsed = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .parse(&proto, None)
            .map_err(|e| anyhow!("tract: {e:?}"))?;
        let mut model = parsed.model;
        let source = *parsed
            .outlets_by_name
            .get(input)
            .with_context(|| format!("the model has no input `{input}`"))?;
        model
            .set_outlet_fact(source, InferenceFact::dt_shape(f32::datum_type(), dims))
            .map_err(|e| anyhow!("tract: {e:?}"))?;
        let outlets = values
            .iter()
            .map(|v| {
                parsed
                    .outlets_by_name
                    .get(v)
                    .copied()
                    .with_context(|| format!("the model has no value `{v}`"))
            })
            .collect::<Result<Vec<_>>>()?;
        model
            .select_output_outlets(&outlets)
            .map_err(|e| anyhow!("tract: {e:?}"))?;
        // Typed, not decluttered: tract 0.23.9's declutter fuses a QDQ softmax into an int8
        // kernel that ignores the output zero point, and a probe wants the graph's own
        // arithmetic.
        let plan = model
            .into_typed()
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("tract refused the model: {e:?}"))?;
        let state = plan.spawn().map_err(|e| anyhow!("tract: {e:?}"))?;
        Ok(Probe {
            state,
            input_dims: dims.to_vec(),
        })
    }

    /// The chosen values for one sample (exactly the input's elements), each flattened.
    pub fn run(&mut self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        let input =
            Tensor::from_shape(&self.input_dims, sample).map_err(|e| anyhow!("tract: {e:?}"))?;
        let outputs = self
            .state
            .run(tvec!(input.into()))
            .map_err(|e| anyhow!("tract: {e:?}"))?;
        outputs
            .iter()
            .map(|t| crate::onnx::import::tensor_f32(t).map_err(|e| anyhow!("tract: {e}")))
            .collect()
    }
}
