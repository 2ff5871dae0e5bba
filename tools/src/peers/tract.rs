//! tract, optimized for the exported graph's fixed shapes, single-threaded.

use anyhow::{Result, anyhow, bail};
use tract_onnx::prelude::*;

use super::{Peer, PeerModel};
use crate::npy::{Array, Data};

/// A model loaded into tract.
pub struct TractModel {
    state: TypedSimpleState,
    inputs: TVec<TValue>,
}

impl TractModel {
    /// Loads and optimizes `onnx`.
    pub fn load(onnx: &[u8]) -> Result<TractModel> {
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &onnx[..])
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("tract refused the model: {e:#}"))?;
        let state = plan.spawn().map_err(|e| anyhow!("tract: {e:?}"))?;
        Ok(TractModel {
            state,
            inputs: tvec!(),
        })
    }
}

fn tensor(array: &Array) -> Result<Tensor> {
    let t = match &array.data {
        Data::F32(v) => Tensor::from_shape(&array.shape, v),
        Data::I8(v) => Tensor::from_shape(&array.shape, v),
        Data::I16(v) => Tensor::from_shape(&array.shape, v),
        Data::I32(v) => Tensor::from_shape(&array.shape, v),
    };
    t.map_err(|e| anyhow!("{e:?}"))
}

fn array(t: &Tensor) -> Result<Array> {
    let shape = t.shape().to_vec();
    // Quantized int8 values come back as tract's QI8 type: the same bytes with the scale
    // attached, which the caller already knows.
    let data = match t.datum_type().unquantized() {
        DatumType::F32 => Data::F32(plain(t)?),
        DatumType::I8 if t.datum_type() == DatumType::I8 => Data::I8(plain(t)?),
        DatumType::I8 => {
            let mut bytes = t.clone();
            // SAFETY: QI8 is i8 storage with a scale attached; relabelling it I8 keeps the
            // exact bytes (a cast would dequantize them instead).
            unsafe { bytes.set_datum_type(DatumType::I8) };
            Data::I8(plain(&bytes)?)
        }
        DatumType::I16 => Data::I16(plain(t)?),
        DatumType::I32 => Data::I32(plain(t)?),
        other => bail!("output element type {other:?} has no loam equivalent"),
    };
    Ok(Array { shape, data })
}

fn plain<D: Datum + Copy>(t: &Tensor) -> Result<Vec<D>> {
    Ok(t.to_plain_array_view::<D>()
        .map_err(|e| anyhow!("{e:?}"))?
        .iter()
        .copied()
        .collect())
}

impl PeerModel for TractModel {
    fn peer(&self) -> Peer {
        Peer::Tract
    }

    fn set_inputs(&mut self, inputs: &[Array]) -> Result<()> {
        self.inputs = inputs
            .iter()
            .map(|a| tensor(a).map(TValue::from))
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn invoke(&mut self) -> Result<()> {
        self.state
            .run(self.inputs.clone())
            .map_err(|e| anyhow!("tract: {e:?}"))?;
        Ok(())
    }

    fn outputs(&mut self) -> Result<Vec<Array>> {
        let out = self
            .state
            .run(self.inputs.clone())
            .map_err(|e| anyhow!("tract: {e:?}"))?;
        out.iter().map(|t| array(t)).collect()
    }
}
