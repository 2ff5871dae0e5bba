//! Small constructors for the prost ONNX messages, so the exporter reads as a graph and not
//! as field assignments.

use loam::DType;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{AttributeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto};
use tract_onnx::pb::{NodeProto, type_proto};

/// The ONNX element type of a loam element type.
pub fn data_type(dtype: DType) -> DataType {
    match dtype {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::I8 => DataType::Int8,
        DType::I16 => DataType::Int16,
        DType::I32 => DataType::Int32,
        // Element types added to loam later have no ONNX mapping until they get one here.
        _ => DataType::Undefined,
    }
}

/// A tensor with raw little-endian contents.
pub fn tensor(name: &str, data_type: DataType, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        data_type: data_type as i32,
        dims: dims.iter().map(|&d| d as i64).collect(),
        raw_data: raw,
        ..TensorProto::default()
    }
}

/// The little-endian bytes of `values`.
pub fn raw<T: bytemuck::Pod>(values: &[T]) -> Vec<u8> {
    // Every host loam builds on is little-endian, as ONNX's raw_data is.
    bytemuck::cast_slice(values).to_vec()
}

/// A graph input or output of a fixed shape.
pub fn value_info(name: &str, data_type: DataType, dims: &[usize]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d as i64)),
            ..Dimension::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// A node attribute.
pub enum Attr {
    /// One integer.
    Int(i64),
    /// Integers.
    Ints(Vec<i64>),
    /// One float.
    Float(f32),
}

/// A node.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<(&str, Attr)>,
) -> NodeProto {
    NodeProto {
        op_type: op_type.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes
            .into_iter()
            .map(|(key, value)| {
                let mut a = AttributeProto {
                    name: key.to_string(),
                    ..AttributeProto::default()
                };
                match value {
                    Attr::Int(i) => {
                        a.r#type = AttributeType::Int as i32;
                        a.i = i;
                    }
                    Attr::Ints(v) => {
                        a.r#type = AttributeType::Ints as i32;
                        a.ints = v;
                    }
                    Attr::Float(f) => {
                        a.r#type = AttributeType::Float as i32;
                        a.f = f;
                    }
                }
                a
            })
            .collect(),
        ..NodeProto::default()
    }
}

/// `data` (row-major with dimensions `dims`) with its dimensions reordered: output dimension
/// `i` is input dimension `perm[i]`.
pub fn permute<T: Copy>(data: &[T], dims: &[usize], perm: &[usize]) -> (Vec<T>, Vec<usize>) {
    let rank = dims.len();
    let mut strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let out_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; rank];
    for _ in 0..data.len() {
        let offset: usize = index.iter().zip(&out_strides).map(|(i, s)| i * s).sum();
        out.push(data[offset]);
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < out_dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    (out, out_dims)
}

#[cfg(test)]
mod tests {
    use super::permute;

    #[test]
    fn permute_moves_channels_first() {
        // NHWC [1, 2, 2, 3] -> NCHW [1, 3, 2, 2].
        let data: Vec<u32> = (0..12).collect();
        let (out, dims) = permute(&data, &[1, 2, 2, 3], &[0, 3, 1, 2]);
        assert_eq!(dims, [1, 3, 2, 2]);
        assert_eq!(out, [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
    }

    #[test]
    fn permute_transposes_a_matrix() {
        let (out, dims) = permute(&[1, 2, 3, 4, 5, 6], &[2, 3], &[1, 0]);
        assert_eq!(dims, [3, 2]);
        assert_eq!(out, [1, 4, 2, 5, 3, 6]);
    }
}
