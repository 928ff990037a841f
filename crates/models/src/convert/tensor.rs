//! Tensors on their way to safetensors: raw little-endian bytes, strided gathers, the
//! writer, and a bounds-checked byte reader for the binary formats.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::Dtype;

use super::{ConvertError, WEIGHTS_FILE};

/// A tensor ready to be written: row-major little-endian bytes.
#[derive(Debug, Clone)]
pub(super) struct OutTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl OutTensor {
    /// A tensor of `f32` values.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            dtype: Dtype::F32,
            shape,
            data,
        }
    }
}

impl safetensors::View for &OutTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The tensors of one output file, by name; refuses duplicates so no weight is silently
/// overwritten.
#[derive(Debug, Default)]
pub(super) struct TensorSet {
    tensors: BTreeMap<String, OutTensor>,
}

impl TensorSet {
    pub fn insert(
        &mut self,
        source: &Path,
        name: String,
        tensor: OutTensor,
    ) -> Result<(), ConvertError> {
        if self.tensors.contains_key(&name) {
            return Err(ConvertError::Mapping {
                path: source.to_path_buf(),
                name,
                reason: "two source tensors map to this name".into(),
            });
        }
        self.tensors.insert(name, tensor);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Writes `dir/model.safetensors`, tagged so that Hugging Face loaders accept it.
    pub fn write(
        &self,
        dir: &Path,
        source: &Path,
        converter: &str,
        extra: &[(&str, String)],
    ) -> Result<(), ConvertError> {
        let path = dir.join(WEIGHTS_FILE);
        let mut metadata = HashMap::new();
        // transformers refuses safetensors files without format=pt.
        metadata.insert("format".to_string(), "pt".to_string());
        metadata.insert("mica.converter".to_string(), converter.to_string());
        metadata.insert("mica.source".to_string(), super::file_name(source));
        for (k, v) in extra {
            metadata.insert((*k).to_string(), v.clone());
        }
        safetensors::serialize_to_file(
            self.tensors.iter().map(|(k, v)| (k.as_str(), v)),
            Some(metadata),
            &path,
        )
        .map_err(|source| ConvertError::Write {
            path: path.clone(),
            source,
        })?;
        tracing::info!(
            path = %path.display(),
            tensors = self.tensors.len(),
            "wrote safetensors"
        );
        Ok(())
    }
}

/// Element size in bytes of the dtypes the converters produce.
pub(super) fn dtype_size(dtype: Dtype) -> usize {
    match dtype {
        Dtype::BOOL | Dtype::U8 | Dtype::I8 => 1,
        Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        _ => 0,
    }
}

/// Product of `dims`, or `None` on overflow.
pub(super) fn numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Copies the view `(offset, shape, strides)` (in elements) of `storage` into row-major
/// order. `None` when the view reaches outside the storage or its size overflows.
pub(super) fn gather_strided(
    storage: &[u8],
    elem: usize,
    offset: usize,
    shape: &[usize],
    strides: &[usize],
) -> Option<Vec<u8>> {
    if shape.len() != strides.len() || elem == 0 {
        return None;
    }
    let count = numel(shape)?;
    if count == 0 {
        return Some(Vec::new());
    }
    // The furthest element the view touches must lie inside the storage.
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(strides) {
        last = last.checked_add((d - 1).checked_mul(s)?)?;
    }
    let end = last.checked_add(1)?.checked_mul(elem)?;
    if end > storage.len() {
        return None;
    }
    let contiguous = {
        let mut expected = 1usize;
        let mut ok = true;
        for (&d, &s) in shape.iter().zip(strides).rev() {
            if d != 1 && s != expected {
                ok = false;
                break;
            }
            expected = expected.saturating_mul(d);
        }
        ok
    };
    let start = offset.checked_mul(elem)?;
    if contiguous {
        return Some(storage[start..start + count * elem].to_vec());
    }
    let mut out = Vec::with_capacity(count * elem);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..count {
        let pos: usize = offset + index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[pos * elem..(pos + 1) * elem]);
        // Odometer increment, last dimension fastest.
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Some(out)
}

/// A little-endian reader over a byte slice that reports truncation with the file name,
/// offset and what was being read.
pub(super) struct ByteReader<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(path: &'a Path, data: &'a [u8]) -> Self {
        Self { path, data, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], ConvertError> {
        if n > self.remaining() {
            return Err(ConvertError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ConvertError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, ConvertError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, ConvertError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, ConvertError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, ConvertError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

/// Decodes little-endian `f16`/`bf16`/`f32`/`f64` bytes to `f32` values.
pub(super) fn float_values(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect(),
        _ => return None,
    })
}

/// Widens element types candle cannot load (`i8`, `bool`) to ones it can, so the output
/// always opens with `candle_core::safetensors::load`.
pub(super) fn candle_loadable(tensor: OutTensor) -> OutTensor {
    match tensor.dtype {
        Dtype::BOOL => OutTensor {
            dtype: Dtype::U8,
            ..tensor
        },
        Dtype::I8 => OutTensor {
            dtype: Dtype::I16,
            data: tensor
                .data
                .iter()
                .flat_map(|&b| i16::from(b as i8).to_le_bytes())
                .collect(),
            shape: tensor.shape,
        },
        _ => tensor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_transposed_view() {
        // storage 0..6 as a 2x3 matrix, viewed transposed (3x2, strides [1, 3]).
        let storage: Vec<u8> = (0u8..6).collect();
        let out = gather_strided(&storage, 1, 0, &[3, 2], &[1, 3]);
        assert_eq!(out, Some(vec![0, 3, 1, 4, 2, 5]));
    }

    #[test]
    fn gather_offset_and_bounds() {
        let storage: Vec<u8> = (0u8..8).collect();
        assert_eq!(
            gather_strided(&storage, 2, 1, &[3], &[1]),
            Some(vec![2, 3, 4, 5, 6, 7])
        );
        assert_eq!(gather_strided(&storage, 2, 2, &[3], &[1]), None);
        assert_eq!(
            gather_strided(&storage, 1, 0, &[usize::MAX, 2], &[1, 1]),
            None
        );
        assert_eq!(
            gather_strided(&storage, 1, 0, &[0, 5], &[5, 1]),
            Some(vec![])
        );
    }
}
