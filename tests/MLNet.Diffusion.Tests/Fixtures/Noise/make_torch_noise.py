"""Writes torch_cpu_<kernel>.json: torch.randn on the CPU with torch.Generator("cpu").manual_seed(seed), float32.

Run twice (the fixtures in this folder were made that way, with Debian 12's python3-torch 1.13.1):
    /usr/bin/python3 make_torch_noise.py                                # PyTorch's AVX2 kernel (normal_fill_AVX2)
    ATEN_CPU_CAPABILITY=default /usr/bin/python3 make_torch_noise.py    # the portable kernel (normal_fill, libm)
Values are stored as float32 bit patterns (uint32), so the tests compare bits, not decimals. Large draws keep their
first 64 values and the SHA-256 of all their little-endian float32 bytes.
"""
import hashlib
import json
import os
import platform

import torch

capability = os.environ.get("ATEN_CPU_CAPABILITY", "")
kernel = "default" if capability == "default" else "avx2"
config = torch.__config__.show()
used = [line.strip() for line in config.splitlines() if "CPU capability usage" in line]
assert used, config
if kernel == "avx2":
    assert "AVX2" in used[0], used[0]
else:
    assert "NO AVX" in used[0], used[0]


def bits(t):
    return t.contiguous().view(torch.int32).flatten().tolist()


def u32(values):
    return [v & 0xFFFFFFFF for v in values]


def sha256(t):
    return hashlib.sha256(t.contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def single(seed, shape):
    g = torch.Generator("cpu").manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=torch.float32)
    n = t.numel()
    case = {"seed": seed, "shape": list(shape), "count": n}
    if n <= 1024:
        case["bits"] = u32(bits(t))
    else:
        case["first_bits"] = u32(bits(t.flatten()[:64]))
        case["sha256"] = sha256(t)
    return case


def sequence(seed, sizes):
    g = torch.Generator("cpu").manual_seed(seed)
    draws = [u32(bits(torch.randn(n, generator=g))) for n in sizes]
    return {"seed": seed, "sizes": sizes, "draws": draws}


seeds = [0, 1, 42, -1, 2**32, 2**32 + 42, 123456789012345, 2**63 - 1, 4294967295]
shapes = [(1,), (2,), (7,), (8,), (15,), (16,), (17,), (31,), (32,), (33,), (100,), (1, 4, 8, 8), (2, 4, 8, 9)]
cases = [single(s, shape) for s in seeds for shape in shapes]
# Latent-sized draws: SD 1.x at 512², the tiny-sd export's (1, 4, 32, 32), and a 2²⁰-value stress draw.
cases += [single(s, (1, 4, 64, 64)) for s in (0, 42, 2**32 + 7)]
cases += [single(42, (1, 4, 32, 32)), single(1, (1 << 20,))]

sequences = [
    # The scalar path's cached second sample survives the block draws in between.
    sequence(7, [1, 16, 1, 3, 40, 2, 5, 17, 1, 1]),
    sequence(0, [3, 3, 3, 20, 7]),
    sequence(42, [1, 256, 1, 15, 16, 1]),
    # Step noise the way diffusers draws it: one randn of the latent shape per step after the initial latents.
    sequence(42, [256, 256, 256, 256]),
]

document = {
    "generator": "torch.randn(shape, generator=torch.Generator('cpu').manual_seed(seed), dtype=torch.float32)",
    "torch": torch.__version__,
    "cpu_capability": used[0],
    "kernel": kernel,
    "machine": platform.machine(),
    "cases": cases,
    "sequences": sequences,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"torch_cpu_{kernel}.json")
with open(path, "w") as f:
    json.dump(document, f, separators=(",", ":"))
    f.write("\n")
print(path, os.path.getsize(path))
