"""Fixture for UnconditionalSchedulerFixtureTests: diffusers' DDIM and DDPM loops on the scheduler configs of the shared
tiny-ldm-vq (DDIMScheduler: scaled_linear 0.0015..0.0195, steps_offset 0, set_alpha_to_one false, clip_sample true)
and tiny-ddpm-pixel (DDPMScheduler: linear 1e-4..0.02, fixed_small, clip_sample true) folders, as LDMPipeline and
DDPMPipeline run them (no steps_offset/clip_sample correction), over a stand-in noise model eps(x, t) = -x * t/(t+1)
whose predicted x0 lies far outside [-1, 1], so clip_sample acts at every step.

The scheduler arithmetic below is transcribed from diffusers' src/diffusers/schedulers/scheduling_ddim.py and
scheduling_ddpm.py (DDIMScheduler/DDPMScheduler: __init__ betas and alphas_cumprod, set_timesteps with
timestep_spacing "leading", step with prediction_type "epsilon", eta 0, clip_sample, variance_type "fixed_small"),
in float32 torch as diffusers computes it. diffusers itself cannot be installed here.

Run: MLNET_DIFFUSION_SHARED=/work/shared /usr/bin/python3 make_unconditional_scheduler_fixture.py
Versions: Debian python3-torch 1.13, python3-numpy 1.24.
"""
import json
import os

import numpy as np
import torch

shared = os.environ.get("MLNET_DIFFUSION_SHARED", "../shared")


def load(name):
    with open(os.path.join(shared, "models", name, "scheduler", "scheduler_config.json")) as f:
        return json.load(f)


def betas_of(c):
    n = c["num_train_timesteps"]
    if c["beta_schedule"] == "linear":
        return torch.linspace(c["beta_start"], c["beta_end"], n, dtype=torch.float32)
    if c["beta_schedule"] == "scaled_linear":
        return torch.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, n, dtype=torch.float32) ** 2
    raise ValueError(c["beta_schedule"])


def leading_timesteps(c, steps):
    step_ratio = c["num_train_timesteps"] // steps
    timesteps = (np.arange(0, steps) * step_ratio).round()[::-1].copy().astype(np.int64)
    return timesteps + c["steps_offset"]


def model(sample, t):
    tf = torch.tensor(float(t), dtype=torch.float32)
    return -(sample * (tf / (tf + 1)))


def ddim(c, steps, sample):
    alphas_cumprod = torch.cumprod(1.0 - betas_of(c), dim=0)
    final_alpha_cumprod = torch.tensor(1.0) if c["set_alpha_to_one"] else alphas_cumprod[0]
    for t in leading_timesteps(c, steps):
        t = int(t)
        model_output = model(sample, t)
        prev_timestep = t - c["num_train_timesteps"] // steps
        alpha_prod_t = alphas_cumprod[t]
        alpha_prod_t_prev = alphas_cumprod[prev_timestep] if prev_timestep >= 0 else final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        pred_epsilon = model_output
        if c["clip_sample"]:
            pred_original_sample = pred_original_sample.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        std_dev_t = 0.0  # eta 0
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t ** 2) ** (0.5) * pred_epsilon
        sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    return sample


def ddpm(c, steps, sample, noises):
    alphas_cumprod = torch.cumprod(1.0 - betas_of(c), dim=0)
    one = torch.tensor(1.0)
    for i, t in enumerate(leading_timesteps(c, steps)):
        t = int(t)
        model_output = model(sample, t)
        prev_t = t - c["num_train_timesteps"] // steps
        alpha_prod_t = alphas_cumprod[t]
        alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        if c["clip_sample"]:
            pred_original_sample = pred_original_sample.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
        current_sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
        pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample
        variance = 0
        if t > 0:
            # _get_variance, variance_type "fixed_small"
            v = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t
            v = torch.clamp(v, min=1e-20)
            variance = (v ** 0.5) * noises[i]
        sample = pred_prev_sample + variance
    return sample


def floats(t):
    return [float(v) for v in t.flatten().numpy().astype(np.float32)]


g = torch.Generator().manual_seed(0)
ldm_config = load("tiny-ldm-vq")
ldm_initial = torch.randn((1, 3, 4, 4), generator=g, dtype=torch.float32)
ldm_steps = 10
ddpm_config = load("tiny-ddpm-pixel")
ddpm_steps = 5
ddpm_initial = torch.randn((1, 3, 4, 4), generator=g, dtype=torch.float32)
ddpm_noises = [torch.randn((1, 3, 4, 4), generator=g, dtype=torch.float32) for _ in range(ddpm_steps)]

fixture = {
    "source": "make_unconditional_scheduler_fixture.py (diffusers DDIMScheduler/DDPMScheduler step, transcribed; torch "
    + torch.__version__ + ", numpy " + np.__version__ + ")",
    "ldm": {"steps": ldm_steps, "initial": floats(ldm_initial), "expected": floats(ddim(ldm_config, ldm_steps, ldm_initial))},
    "ddpm": {
        "steps": ddpm_steps,
        "initial": floats(ddpm_initial),
        "noise": [floats(n) for n in ddpm_noises],
        "expected": floats(ddpm(ddpm_config, ddpm_steps, ddpm_initial, ddpm_noises)),
    },
}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "unconditional_schedulers.json"), "w") as f:
    json.dump(fixture, f, indent=1)
print("ldm", fixture["ldm"]["expected"][:4], "ddpm", fixture["ddpm"]["expected"][:4])
