//! Silero VAD ONNX graph to safetensors, without `protoc`: hand-written `prost` messages
//! for the few ONNX fields needed (field numbers from `onnx.proto`).
//!
//! The graph is `If(sr == 16000, then: 16 kHz network, else: 8 kHz network)`; each branch
//! (with its nested `If` subgraphs) holds its weights as `Constant` nodes named after the
//! torch parameters (`If_0_then_branch__Inline_0__encoder.0.reparam_conv.weight`). Every
//! float initializer and every `Constant` whose output names a parameter is read, and
//! named as listed in [`SILERO_TENSORS`].

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;

use super::tensor::{OutTensor, TensorSet, dtype_size, numel};
use super::{ConvertError, read_file};

/// Tensor names of the converted Silero VAD, each present once per sample rate under the
/// prefix `16k.` and `8k.` (the 16 kHz names are those of silero's own
/// `silero_vad_16k.safetensors`). `F` is `n_fft / 2 + 1`: 129 at 16 kHz, 65 at 8 kHz.
///
/// The network per rate, for a chunk of 512 (16 kHz) / 256 (8 kHz) samples with the
/// previous 64 / 32 samples prepended as context, state `[2, 1, 128]` (h, c):
/// 1. reflect-pad the right side by 64 / 32 samples;
/// 2. `stft_conv.weight` `[2F, 1, n_fft]` (n_fft 256 / 128): conv1d, stride 128 / 64, no
///    bias; rows `0..F` are the real part, `F..2F` the imaginary part; magnitude
///    `sqrt(re^2 + im^2)` gives `[F, frames]`;
/// 3. `conv1` `[128, F, 3]` stride 1, `conv2` `[64, 128, 3]` stride 2, `conv3`
///    `[64, 64, 3]` stride 2, `conv4` `[128, 64, 3]` stride 1, each padding 1, with bias,
///    followed by ReLU;
/// 4. `lstm_cell.{weight_ih,weight_hh}` `[512, 128]`, `lstm_cell.{bias_ih,bias_hh}`
///    `[512]`: a PyTorch `LSTMCell` (gates i, f, g, o) over the single frame, from and to
///    the state;
/// 5. ReLU on h, `final_conv.weight` `[1, 128, 1]` + `final_conv.bias` `[1]` (1x1 conv),
///    sigmoid, mean over frames: the speech probability.
pub const SILERO_TENSORS: [&str; 15] = [
    "stft_conv.weight",
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "conv3.weight",
    "conv3.bias",
    "conv4.weight",
    "conv4.bias",
    "lstm_cell.weight_ih",
    "lstm_cell.weight_hh",
    "lstm_cell.bias_ih",
    "lstm_cell.bias_hh",
    "final_conv.weight",
    "final_conv.bias",
];

/// Parameter names in the ONNX export, in the order of [`SILERO_TENSORS`].
const ONNX_NAMES: [&str; 15] = [
    "stft.forward_basis_buffer",
    "encoder.0.reparam_conv.weight",
    "encoder.0.reparam_conv.bias",
    "encoder.1.reparam_conv.weight",
    "encoder.1.reparam_conv.bias",
    "encoder.2.reparam_conv.weight",
    "encoder.2.reparam_conv.bias",
    "encoder.3.reparam_conv.weight",
    "encoder.3.reparam_conv.bias",
    "decoder.rnn.weight_ih",
    "decoder.rnn.weight_hh",
    "decoder.rnn.bias_ih",
    "decoder.rnn.bias_hh",
    "decoder.decoder.2.weight",
    "decoder.decoder.2.bias",
];

/// `ModelProto`: only the graph.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

/// `GraphProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

/// `AttributeProto`: tensors and subgraphs.
#[derive(Clone, PartialEq, prost::Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    g: Option<GraphProto>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphProto>,
    #[prost(int32, tag = "20")]
    r#type: i32,
}

/// `TensorProto`.
#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

// TensorProto.DataType values.
const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;
const BFLOAT16: i32 = 16;
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

impl TensorProto {
    fn shape(&self) -> Option<Vec<usize>> {
        self.dims.iter().map(|&d| usize::try_from(d).ok()).collect()
    }

    /// The tensor as float bytes; `Ok(None)` for non-float tensors (shape constants).
    fn float_tensor(&self, path: &Path, name: &str) -> Result<Option<OutTensor>, ConvertError> {
        let dtype = match self.data_type {
            FLOAT => Dtype::F32,
            FLOAT16 => Dtype::F16,
            BFLOAT16 => Dtype::BF16,
            DOUBLE => Dtype::F64,
            _ => return Ok(None),
        };
        if self.data_location == EXTERNAL {
            return Err(ConvertError::malformed(
                path,
                format!("{name}: weights in external data files are not supported"),
            ));
        }
        let bad = |reason: String| ConvertError::malformed(path, format!("{name}: {reason}"));
        let shape = self
            .shape()
            .ok_or_else(|| bad(format!("negative dims {:?}", self.dims)))?;
        let count = numel(&shape).ok_or_else(|| bad(format!("dims {shape:?} overflow")))?;
        let data: Vec<u8> = if !self.raw_data.is_empty() {
            self.raw_data.clone()
        } else {
            match self.data_type {
                FLOAT => self
                    .float_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                DOUBLE => self
                    .double_data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                // 16-bit floats travel as the low half of int32_data.
                _ => self
                    .int32_data
                    .iter()
                    .flat_map(|v| (*v as u16).to_le_bytes())
                    .collect(),
            }
        };
        if Some(data.len()) != count.checked_mul(dtype_size(dtype)) {
            return Err(bad(format!(
                "{} bytes do not hold shape {shape:?} of {dtype:?}",
                data.len()
            )));
        }
        Ok(Some(OutTensor { dtype, shape, data }))
    }

    fn int_scalar(&self) -> Option<i64> {
        match self.data_type {
            INT64 => self
                .int64_data
                .first()
                .copied()
                .or_else(|| Some(i64::from_le_bytes(self.raw_data.get(..8)?.try_into().ok()?))),
            INT32 => self.int32_data.first().map(|v| i64::from(*v)).or_else(|| {
                Some(i64::from(i32::from_le_bytes(
                    self.raw_data.get(..4)?.try_into().ok()?,
                )))
            }),
            _ => None,
        }
    }
}

/// The torch parameter name inside an inlined-branch value name: the text after the last
/// `__` (`If_0_then_branch__Inline_0__decoder.rnn.weight_ih` -> `decoder.rnn.weight_ih`).
fn clean_name(name: &str) -> &str {
    name.rsplit("__").next().unwrap_or(name)
}

/// Whether a cleaned value name is a parameter rather than an operator's constant: the
/// exporter names operator constants by their node path (`/stft/Constant_22_output_0`).
fn is_parameter(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('/') && !name.starts_with("self.")
}

/// Collects the float parameters of `graph` and all its subgraphs into `out`.
fn collect(
    path: &Path,
    graph: &GraphProto,
    out: &mut BTreeMap<String, OutTensor>,
) -> Result<(), ConvertError> {
    let mut add = |name: &str, tensor: OutTensor| -> Result<(), ConvertError> {
        let clean = clean_name(name);
        if !is_parameter(clean) || tensor.shape.is_empty() {
            return Ok(());
        }
        match out.get(clean) {
            Some(existing) if existing.data != tensor.data || existing.shape != tensor.shape => {
                Err(ConvertError::Mapping {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    reason: format!("two different tensors named {clean} in one branch"),
                })
            }
            Some(_) => Ok(()),
            None => {
                out.insert(clean.to_string(), tensor);
                Ok(())
            }
        }
    };
    for init in &graph.initializer {
        if let Some(t) = init.float_tensor(path, &init.name)? {
            add(&init.name, t)?;
        }
    }
    for node in &graph.node {
        if node.op_type == "Constant"
            && let (Some(value), Some(output)) = (
                node.attribute.iter().find(|a| a.name == "value"),
                node.output.first(),
            )
            && let Some(t) = value.t.as_ref()
            && let Some(t) = t.float_tensor(path, output)?
        {
            add(output, t)?;
        }
    }
    for node in &graph.node {
        for attr in &node.attribute {
            for sub in attr.g.iter().chain(&attr.graphs) {
                collect(path, sub, out)?;
            }
        }
    }
    Ok(())
}

/// The integer a `Constant` node of `graph` gives `value`, if any.
fn constant_int(graph: &GraphProto, value: &str) -> Option<i64> {
    let node = graph
        .node
        .iter()
        .find(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == value))?;
    node.attribute
        .iter()
        .find(|a| a.name == "value")?
        .t
        .as_ref()?
        .int_scalar()
}

/// The top-level `If` that switches on the sample rate, and the rate its then-branch runs.
fn rate_switch<'g>(
    path: &Path,
    graph: &'g GraphProto,
) -> Result<(&'g NodeProto, u32), ConvertError> {
    for node in graph.node.iter().filter(|n| n.op_type == "If") {
        let Some(cond) = node.input.first() else {
            continue;
        };
        let Some(equal) = graph
            .node
            .iter()
            .find(|n| n.op_type == "Equal" && n.output.iter().any(|o| o == cond))
        else {
            continue;
        };
        let rate = equal
            .input
            .iter()
            .find_map(|i| constant_int(graph, i))
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| *r > 0);
        if let Some(rate) = rate {
            return Ok((node, rate));
        }
    }
    Err(ConvertError::malformed(
        path,
        "no top-level If on the sample rate (If(Equal(sr, constant))); not a Silero VAD v5/v6 graph",
    ))
}

fn branch<'g>(
    path: &Path,
    node: &'g NodeProto,
    name: &str,
) -> Result<&'g GraphProto, ConvertError> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| {
            ConvertError::malformed(path, format!("If node {} has no {name}", node.name))
        })
}

/// Renames one branch's parameters to [`SILERO_TENSORS`] under `prefix`.
fn rename(
    path: &Path,
    prefix: &str,
    mut params: BTreeMap<String, OutTensor>,
    out: &mut TensorSet,
) -> Result<(), ConvertError> {
    for (onnx, ours) in ONNX_NAMES.iter().zip(SILERO_TENSORS) {
        let tensor = params.remove(*onnx).ok_or_else(|| ConvertError::Mapping {
            path: path.to_path_buf(),
            name: (*onnx).to_string(),
            reason: format!("missing from the {prefix} branch"),
        })?;
        out.insert(path, format!("{prefix}.{ours}"), tensor)?;
    }
    for (name, tensor) in params {
        // Kept rather than dropped: a newer export may need it, and the name says where.
        tracing::warn!(
            name,
            prefix,
            "unexpected Silero parameter kept under its ONNX name"
        );
        out.insert(path, format!("{prefix}.{name}"), tensor)?;
    }
    Ok(())
}

/// FFT size of a branch: the kernel width of its STFT basis.
fn n_fft(params: &BTreeMap<String, OutTensor>) -> Option<usize> {
    params.get(ONNX_NAMES[0])?.shape.get(2).copied()
}

/// Converts a Silero VAD ONNX model (16 kHz and 8 kHz branches) into
/// `output/model.safetensors`.
pub(super) fn convert_silero(path: &Path, output: &Path) -> Result<(), ConvertError> {
    let bytes = read_file(path)?;
    let model = <ModelProto as prost::Message>::decode(bytes.as_slice()).map_err(|source| {
        ConvertError::Protobuf {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ConvertError::malformed(path, "no graph (not an ONNX model?)"))?;
    let (switch, then_rate) = rate_switch(path, graph)?;

    let mut then_params = BTreeMap::new();
    collect(path, branch(path, switch, "then_branch")?, &mut then_params)?;
    let mut else_params = BTreeMap::new();
    collect(path, branch(path, switch, "else_branch")?, &mut else_params)?;

    // The else-branch rate is implicit; Silero keeps the STFT window at the same duration
    // for both rates, so the rates scale like the FFT sizes.
    let else_rate = match (n_fft(&then_params), n_fft(&else_params)) {
        (Some(t), Some(e)) if t > 0 && (then_rate as usize * e).is_multiple_of(t) => {
            (then_rate as usize * e / t) as u32
        }
        _ => {
            return Err(ConvertError::malformed(
                path,
                "cannot tell the else-branch sample rate from the STFT basis shapes",
            ));
        }
    };
    let prefix = |rate: u32| format!("{}k", rate / 1000);
    if !then_rate.is_multiple_of(1000) || !else_rate.is_multiple_of(1000) || then_rate == else_rate
    {
        return Err(ConvertError::malformed(
            path,
            format!("unexpected sample rates {then_rate} and {else_rate}"),
        ));
    }

    let mut tensors = TensorSet::default();
    rename(path, &prefix(then_rate), then_params, &mut tensors)?;
    rename(path, &prefix(else_rate), else_params, &mut tensors)?;

    // Weights outside the rate switch would be shared by both rates; Silero has none.
    let mut shared = BTreeMap::new();
    let top = GraphProto {
        node: graph
            .node
            .iter()
            .filter(|n| !std::ptr::eq(*n, switch))
            .cloned()
            .collect(),
        name: graph.name.clone(),
        initializer: graph.initializer.clone(),
    };
    collect(path, &top, &mut shared)?;
    for (name, tensor) in shared {
        tracing::warn!(
            name,
            "Silero parameter outside the rate branches kept as is"
        );
        tensors.insert(path, name, tensor)?;
    }

    tensors.write(
        output,
        path,
        "onnx-silero",
        &[("mica.sample_rates", format!("{then_rate},{else_rate}"))],
    )?;
    tracing::info!(then_rate, else_rate, "converted Silero VAD");
    Ok(())
}
