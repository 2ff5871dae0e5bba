//! NumPy `.npy` arrays in and out of loam's element types.

use std::path::Path;

use anyhow::{Context, Result, bail};
use loam::DType;

/// An n-dimensional array of one of the element types loam tensors use.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in row-major order.
    pub data: Data,
}

/// The elements of an [`Array`].
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 8-bit integers.
    I8(Vec<i8>),
    /// 16-bit integers.
    I16(Vec<i16>),
    /// 32-bit integers.
    I32(Vec<i32>),
}

impl Data {
    /// The loam element type.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::I8(_) => DType::I8,
            Data::I16(_) => DType::I16,
            Data::I32(_) => DType::I32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::I16(v) => v.len(),
            Data::I32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' little-endian bytes (the layout of a loam tensor).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Data::F32(v) => bytemuck::cast_slice(v),
            Data::I8(v) => bytemuck::cast_slice(v),
            Data::I16(v) => bytemuck::cast_slice(v),
            Data::I32(v) => bytemuck::cast_slice(v),
        }
    }

    /// Elements from a loam tensor's bytes.
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> Result<Data> {
        Ok(match dtype {
            DType::F32 => Data::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::I8 => Data::I8(bytemuck::pod_collect_to_vec(bytes)),
            DType::I16 => Data::I16(bytemuck::pod_collect_to_vec(bytes)),
            DType::I32 => Data::I32(bytemuck::pod_collect_to_vec(bytes)),
            other => bail!("tensors of {other} cannot be read out as arrays"),
        })
    }

    /// Every element as f64 (for statistics and printing).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }
}

/// Reads an `.npy` file of f32, f64 (converted to f32), int8, int16, int32 or int64
/// (converted to int32 when in range).
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{} is not a valid .npy file", path.display()))?;
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    if file.order() != npyz::Order::C {
        bail!(
            "{}: Fortran-ordered arrays are not supported; save it in C order",
            path.display()
        );
    }
    let descr = file.dtype().descr();
    let context = || format!("reading the elements of {}", path.display());
    let data = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
        "f4" => Data::F32(file.into_vec::<f32>().with_context(context)?),
        "f8" => Data::F32(
            file.into_vec::<f64>()
                .with_context(context)?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        "i1" => Data::I8(file.into_vec::<i8>().with_context(context)?),
        "i2" => Data::I16(file.into_vec::<i16>().with_context(context)?),
        "i4" => Data::I32(file.into_vec::<i32>().with_context(context)?),
        "i8" => {
            let wide = file.into_vec::<i64>().with_context(context)?;
            let narrow: Result<Vec<i32>, _> = wide.iter().map(|&x| i32::try_from(x)).collect();
            Data::I32(narrow.map_err(|_| {
                anyhow::anyhow!("{}: an int64 value does not fit in int32", path.display())
            })?)
        }
        other => bail!(
            "{}: element type `{other}` is not supported (use float32, int8, int16 or int32)",
            path.display()
        ),
    };
    Ok(Array { shape, data })
}

/// Writes `array` as an `.npy` file, atomically.
pub fn write(path: &Path, array: &Array) -> Result<()> {
    let shape: Vec<u64> = array.shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::new();
    {
        use npyz::WriterBuilder;
        macro_rules! emit {
            ($t:ty, $v:expr) => {{
                let mut w = npyz::WriteOptions::<$t>::new()
                    .default_dtype()
                    .shape(&shape)
                    .writer(&mut out)
                    .begin_nd()?;
                w.extend($v.iter().copied())?;
                w.finish()?;
            }};
        }
        match &array.data {
            Data::F32(v) => emit!(f32, v),
            Data::I8(v) => emit!(i8, v),
            Data::I16(v) => emit!(i16, v),
            Data::I32(v) => emit!(i32, v),
        }
    }
    crate::model_file::write_atomically(path, &out)
}
