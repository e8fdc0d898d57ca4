"""Writes img2img_diffusers_order.json: the initial latents of diffusers' StableDiffusionImg2ImgPipeline over the
library's own VAE encoder outputs, drawing from one CPU generator in diffusers' order.

Input: img2img_encoder_outputs.json, the raw `latent_parameters` [1, 8, 8, 8] (mean, then log-variance) of the Shapes
test model's latent-parameters variant for two 64×64 images (a red circle, a blue square), as float32 bit patterns,
its VAE scaling factor and its scheduler config — dumped from C# (ImageEncoder.RunEncoder); the test
Img2ImgDiffusersOrderTests checks that the encoder still outputs exactly these values.

What diffusers does, reproduced here with PyTorch only (no diffusers import; the code paths cited):
  pipeline_stable_diffusion_img2img.py, prepare_latents:
    init_latents = retrieve_latents(vae.encode(image[i:i+1]), generator=generator[i])   # a list of generators
                   (or retrieve_latents(vae.encode(image), generator=generator) with one generator for the batch)
    init_latents = scaling_factor * init_latents
    noise = randn_tensor(init_latents.shape, generator=generator)
    init_latents = scheduler.add_noise(init_latents, noise, timesteps[:1])
  autoencoders/vae.py, DiagonalGaussianDistribution: mean, logvar = chunk(parameters, 2, dim=1);
    logvar = clamp(logvar, -30, 20); std = exp(0.5 * logvar); sample = mean + std * randn_tensor(mean.shape, generator)
  scheduling_ddim.py: betas = linspace(beta_start**0.5, beta_end**0.5, T, float32)**2 ("scaled_linear");
    alphas_cumprod = cumprod(1 - betas); leading spacing: timesteps = arange(0, N) * (T // N), reversed, + steps_offset;
    add_noise: alphas_cumprod[t]**0.5 * x + (1 - alphas_cumprod[t])**0.5 * noise.
add_noise here takes ᾱ_901 from the library (library_alphas_cumprod_901_bits, NoiseSchedule.AlphasCumprod[901]): this
PyTorch 1.13's float32 linspace differs from the library's port of ATen's linspace in 272 of the 1000 scaled_linear
betas, which puts its ᾱ_901 2 ulps away (both are stored: alphas_cumprod_bits is PyTorch's). The fixture checks the
order of the draws and the arithmetic after them, not the β schedule.
Each case also keeps the generator's next draws (the stochastic steps' noise, and in the inpainting order the masked
image's encoder draw), so the tests can check every place the stream continues.

Run: /usr/bin/python3 make_img2img_order.py   (Debian 12's python3-torch 1.13.1, CPU capability AVX2)
"""
import json
import os

import torch

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "img2img_encoder_outputs.json")) as f:
    inputs = json.load(f)

config = json.loads(inputs["scheduler_config"])
assert config["_class_name"] == "DDIMScheduler" and config["beta_schedule"] == "scaled_linear"
assert config["timestep_spacing"] == "leading"
steps = 10


def floats(bits):
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


def bits(t):
    return [v & 0xFFFFFFFF for v in t.contiguous().view(torch.int32).flatten().tolist()]


scale = floats([inputs["scaling_factor"]])[0]
parameters = torch.stack([floats(p).reshape(8, 8, 8) for p in inputs["parameters"]])  # [2, 8, 8, 8]

T = config["num_train_timesteps"]
betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, T, dtype=torch.float32) ** 2
alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
timesteps = [int(t) for t in (torch.arange(0, steps) * (T // steps)).flip(0) + config["steps_offset"]]
t0 = timesteps[0]


def distribution(p):
    mean, logvar = torch.chunk(p, 2, dim=1)
    logvar = torch.clamp(logvar, -30.0, 20.0)
    return mean, torch.exp(0.5 * logvar)


library_alpha = floats([inputs["library_alphas_cumprod_901_bits"]])


def add_noise(x, noise, t):
    assert t == 901
    a = library_alpha[0]
    sqrt_alpha_prod = (a ** 0.5).flatten()
    sqrt_one_minus = ((1 - a) ** 0.5).flatten()
    return sqrt_alpha_prod * x + sqrt_one_minus * noise


def run(seeds, one_generator):
    """diffusers' order for a batch of the two images: encoder sample, initial noise, then two more draws."""
    if one_generator:
        g = torch.Generator("cpu").manual_seed(seeds[0])
        mean, std = distribution(parameters)
        x0 = scale * (mean + std * torch.randn(mean.shape, generator=g))
        noise = torch.randn(x0.shape, generator=g)
        after = [torch.randn(x0.shape, generator=g) for _ in range(2)]
        rows = None
    else:
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        x0, noise, after = [], [], [[], []]
        for i, g in enumerate(gens):
            mean, std = distribution(parameters[i:i + 1])
            x0.append(scale * (mean + std * torch.randn(mean.shape, generator=g)))
            noise.append(torch.randn(mean.shape, generator=g))
            for k in range(2):
                after[k].append(torch.randn(mean.shape, generator=g))
        x0, noise = torch.cat(x0), torch.cat(noise)
        after = [torch.cat(a) for a in after]
    initial = add_noise(x0, noise, t0)
    return {
        "seeds": seeds,
        "one_generator": one_generator,
        "x0_bits": bits(x0),
        "noise_bits": bits(noise),
        "initial_latents_bits": bits(initial),
        "next_draws_bits": [bits(a) for a in after],
    }


fixture = {
    "made_by": "make_img2img_order.py",
    "torch": torch.__version__,
    "cpu_capability": [l.strip() for l in torch.__config__.show().splitlines() if "CPU capability usage" in l][0],
    "scheduler": "DDIMScheduler (the Shapes model's config)",
    "steps": steps,
    "timestep": t0,
    "alphas_cumprod_bits": bits(alphas_cumprod[t0:t0 + 1]),
    "library_alphas_cumprod_bits": bits(library_alpha),
    "shape": [2, 4, 8, 8],
    "cases": [run([7, 8], False), run([7, 8], True)],
}
with open(os.path.join(here, "img2img_diffusers_order.json"), "w") as f:
    json.dump(fixture, f, indent=1)
    f.write("\n")
print("timestep", t0, "written", len(fixture["cases"]), "cases")
