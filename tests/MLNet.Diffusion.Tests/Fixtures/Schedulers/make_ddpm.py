"""Writes ddpm_diffusers.json: diffusers' DDPMScheduler (previous timesteps, variances, a seeded denoising loop).

    /usr/bin/python3 make_ddpm.py /path/to/shim

diffusers does not import without its dependencies here, so src/diffusers/schedulers/scheduling_ddpm.py (diffusers
commit 58eb52c080) is loaded under a shim package that supplies only what it imports: ConfigMixin/register_to_config
(storing the constructor arguments as .config), BaseOutput, SchedulerMixin, KarrasDiffusionSchedulers, and
randn_tensor as diffusers runs it for a CPU generator, torch.randn(shape, generator=generator, dtype=dtype).
Debian 12's python3-torch 1.13.1. Samples are float32 bit patterns.
"""
import json
import os
import sys

sys.path.insert(0, sys.argv[1])
import torch  # noqa: E402
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # noqa: E402


def u32(t):
    return [v & 0xFFFFFFFF for v in t.contiguous().view(torch.int32).flatten().tolist()]


cases = []
for spacing, steps, clip in (("linspace", 4, True), ("trailing", 7, True), ("leading", 10, False), ("linspace", 25, False)):
    s = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      timestep_spacing=spacing, clip_sample=clip)
    s.set_timesteps(steps)
    timesteps = [int(t) for t in s.timesteps]
    sample = torch.linspace(-1.2, 1.2, 256, dtype=torch.float32).reshape(1, 4, 8, 8)
    generator = torch.Generator("cpu").manual_seed(0)
    after_first = None
    for t in s.timesteps:
        # diffusers' scheduler tests' dummy model: x · t / (t + 1)
        model_output = sample * t / (t + 1)
        sample = s.step(model_output, t, sample, generator=generator).prev_sample
        if after_first is None:
            after_first = sample
    cases.append({
        "timestep_spacing": spacing,
        "steps": steps,
        "clip_sample": clip,
        "timesteps": timesteps,
        "previous_timesteps": [int(s.previous_timestep(t)) for t in s.timesteps],
        "variances": [float(s._get_variance(t)) for t in s.timesteps],
        "after_first_step_bits": u32(after_first),
        "final_bits": u32(sample),
    })

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddpm_diffusers.json")
with open(path, "w") as f:
    json.dump({"scheduler": "diffusers DDPMScheduler", "torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
    f.write("\n")
print(path, os.path.getsize(path))
