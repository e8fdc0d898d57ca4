"""Reference LoRA deltas for LoraReferenceTests, computed with PyTorch from ../shared/models/tiny-sd-lora.

For a few modules of the kohya LoRA and of the float16 LoCon file, writes
    dW = multiplier * (alpha / rank) * (up @ down)
in PyTorch's weight layout [out, in] / [out, in, kh, kw] (float32), computed as kohya sd-scripts merges
(networks/lora.py LoRAModule.merge_to, networks/merge_lora.py): Linear `up @ down`; 1x1 conv on the squeezed
matrices; 3x3 conv `conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)`; float16 weights widened to float32
first. Before writing, each delta is checked against the unmerged LoRA forward pass that training uses
(`org(x) + up(down(x)) * multiplier * scale`): a layer with weight W + dW must give the same output.

Run with Debian's python3-torch:  /usr/bin/python3 make_lora_deltas.py /work/shared/models/tiny-sd-lora
Writes lora_deltas_torch.safetensors next to this script (no safetensors package needed: the format is written
by hand, as the reader under test expects it).
"""
import hashlib
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

MULTIPLIER = 0.8
MODULES = {
    "tiny_lora_kohya.safetensors": [
        ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", None),   # Linear (MatMul with W^T)
        ("mid_block.attentions.0.proj_in", (0, 1)),                             # 1x1 conv (stride 1, padding 0)
    ],
    "tiny_locon_kohya_fp16.safetensors": [
        ("down_blocks.0.resnets.0.conv1", (1, 1)),                              # 3x3 conv (padding 1)
        ("down_blocks.0.resnets.0.time_emb_proj", None),                        # Linear (Gemm, transB=1)
        ("down_blocks.0.downsamplers.0.conv", (1, 2)),                          # 3x3 conv, stride 2
    ],
}
DTYPES = {"F32": np.float32, "F16": np.float16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.astype(np.float32))
    return tensors


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        raw = tensors[name].contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def delta(up, down, scale):
    if down.dim() == 2:
        return MULTIPLIER * (up @ down) * scale
    if down.shape[2:] == (1, 1):
        return MULTIPLIER * (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3) * scale
    return MULTIPLIER * F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3) * scale


def check_forward(dw, up, down, scale, conv):
    torch.manual_seed(0)
    w = torch.randn_like(dw)
    if conv is None:
        x = torch.randn(3, dw.shape[1])
        merged = F.linear(x, w + dw)
        unmerged = F.linear(x, w) + F.linear(F.linear(x, down), up) * MULTIPLIER * scale
    else:
        padding, stride = conv
        x = torch.randn(1, dw.shape[1], 8, 8)
        merged = F.conv2d(x, w + dw, stride=stride, padding=padding)
        unmerged = F.conv2d(x, w, stride=stride, padding=padding) + \
            F.conv2d(F.conv2d(x, down, stride=stride, padding=padding), up) * MULTIPLIER * scale
    assert torch.allclose(merged, unmerged, atol=1e-5), (merged - unmerged).abs().max()


def main(folder):
    out, sources = {}, {}
    for file, modules in MODULES.items():
        path = os.path.join(folder, file)
        sources[file] = hashlib.sha256(open(path, "rb").read()).hexdigest()
        tensors = read_safetensors(path)
        for module, conv in modules:
            key = "lora_unet_" + module.replace(".", "_")
            up, down = tensors[key + ".lora_up.weight"], tensors[key + ".lora_down.weight"]
            scale = float(tensors[key + ".alpha"]) / down.shape[0]
            dw = delta(up, down, scale)
            check_forward(dw, up, down, scale, conv)
            out[file + "/" + module] = dw
    metadata = {
        "multiplier": str(MULTIPLIER),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sources_sha256": json.dumps(sources, sort_keys=True),
    }
    write_safetensors(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lora_deltas_torch.safetensors"), out, metadata)


if __name__ == "__main__":
    main(sys.argv[1])
