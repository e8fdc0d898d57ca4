#!/usr/bin/python3
"""Which conditioning each UNet call reads in AUTOMATIC1111, per sampler, step count and img2img strength: a1111_calls.json.

What runs is A1111's and k-diffusion's own code:
- modules/prompt_parser.py (get_multicond_learned_conditioning, reconstruct_multicond_batch) of AUTOMATIC1111 at
  28bd8e142d5f77b71ae8d7d7140b5da1b3a49906, with a text "model" whose get_learned_conditioning returns each text's index, so
  that the tensor reconstruct_multicond_batch picks names the text;
- k_diffusion/sampling.py (sample_euler, sample_heun, get_sigmas_karras) of crowsonkb/k-diffusion (commit in "meta"), whose
  loops decide how many times the denoiser is called per step. Its imports that the samplers here never use are shimmed
  (scipy, torchdiffeq, torchsde, tqdm → range) and k_diffusion.utils is reduced to its append_dims (five lines, verbatim).
The parts of A1111 around them are plain counters and are written out below with their source lines:
- modules/sd_samplers_common.py SamplerData.total_steps: `if self.options.get("second_order", False): steps = steps * 2`;
  the options are those of modules/sd_samplers_kdiffusion.py samplers_k_diffusion ('Euler': {}, 'Heun': second_order);
- modules/processing.py setup_conds: the schedules are computed with `total_steps = sampler_config.total_steps(self.steps)`;
- modules/sd_samplers_common.py setup_img2img_steps with opts.img2img_fix_steps = False (its default in shared_options.py):
  `steps = p.steps; t_enc = int(min(p.denoising_strength, 0.999) * steps)`; sample_img2img then samples
  `sigma_sched = sigmas[steps - t_enc - 1:]` (modules/sd_samplers_kdiffusion.py);
- modules/sd_samplers_cfg_denoiser.py CFGDenoiser.forward: `conds_list, tensor = prompt_parser.reconstruct_multicond_batch(
  cond, self.step)` first and `self.step += 1` last; Sampler.initialize sets `self.model_wrap_cfg.step = 0` before sampling.

Usage (Debian bookworm: python3, python3-lark, python3-torch):
  /usr/bin/python3 make_a1111_call_fixtures.py --a1111 DIR --k-diffusion DIR --out a1111_calls.json
where --a1111 holds modules/prompt_parser.py (the full file; the copy used for a1111_prompts.json lacked the torch tail,
which was added by hand, verbatim, from the same commit) and --k-diffusion holds k_diffusion/sampling.py.
Made 2026-12-05 with Debian python 3.11, lark 1.1.5, torch 1.13.
"""
import argparse
import json
import sys
import types

ap = argparse.ArgumentParser()
ap.add_argument("--a1111", required=True)
ap.add_argument("--k-diffusion", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--a1111-commit", default="28bd8e142d5f77b71ae8d7d7140b5da1b3a49906")
ap.add_argument("--k-diffusion-commit", default="4601bf085320592473f681a62808ed873d17fad5")
args = ap.parse_args()

# --- shims for imports the samplers used here never touch ------------------------------------------------------
for name in ("scipy", "scipy.integrate", "torchdiffeq", "torchsde", "tqdm", "tqdm.auto"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["scipy"].integrate = sys.modules["scipy.integrate"]
sys.modules["torchdiffeq"].odeint = None
sys.modules["tqdm.auto"].trange = lambda n, disable=None: range(n)
sys.modules["tqdm.auto"].tqdm = None
kd = types.ModuleType("k_diffusion")
kd.__path__ = [args.k_diffusion + "/k_diffusion"]
sys.modules["k_diffusion"] = kd
utils = types.ModuleType("k_diffusion.utils")


def append_dims(x, target_dims):
    """k_diffusion/utils.py append_dims, verbatim."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f'input has {x.ndim} dims but target_dims is {target_dims}, which is less')
    return x[(...,) + (None,) * dims_to_append]


utils.append_dims = append_dims
sys.modules["k_diffusion.utils"] = utils
kd.utils = utils
pkg = types.ModuleType("modules")
pkg.__path__ = [args.a1111 + "/modules"]
sys.modules["modules"] = pkg

import lark  # noqa: E402
import torch  # noqa: E402
from k_diffusion import sampling  # noqa: E402
from modules import prompt_parser  # noqa: E402

SAMPLERS = {"Euler": (sampling.sample_euler, {}), "Heun": (sampling.sample_heun, {"second_order": True})}


def total_steps(options, steps):
    # sd_samplers_common.SamplerData.total_steps
    if options.get("second_order", False):
        steps = steps * 2
    return steps


class TextModel:
    """get_learned_conditioning: one [1, 1] tensor per text holding the text's index in `texts`."""

    def __init__(self):
        self.texts = []

    def get_learned_conditioning(self, texts):
        out = []
        for t in texts:
            if t not in self.texts:
                self.texts.append(t)
            out.append([[float(self.texts.index(t))]])
        return torch.tensor(out)


class CountingDenoiser:
    """The step bookkeeping of CFGDenoiser.forward: look up the conditioning with self.step, then self.step += 1."""

    def __init__(self, model):
        self.model = model
        self.step = 0
        self.calls = []

    def __call__(self, x, sigma, cond):
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        self.calls.append({"step": self.step, "parts": [self.model.texts[int(tensor[i, 0, 0])] for i, _ in conds_list[0]]})
        self.step += 1
        return torch.zeros_like(x)


def run(prompt, sampler, steps, strength):
    func, options = SAMPLERS[sampler]
    total = total_steps(options, steps)
    model = TextModel()
    cond = prompt_parser.get_multicond_learned_conditioning(model, [prompt], total)
    # The sigmas only need their count and the final 0 here (sample_heun's Euler step at sigmas[i + 1] == 0).
    sigmas = sampling.get_sigmas_karras(steps, 0.0292, 14.6146)
    if strength >= 1:
        sched = sigmas
    else:
        t_enc = int(min(strength, 0.999) * steps)  # setup_img2img_steps, img2img_fix_steps off
        sched = sigmas[steps - t_enc - 1:]
    denoiser = CountingDenoiser(model)  # Sampler.initialize: step = 0
    func(denoiser, torch.ones([1, 1, 1, 1]), sched, extra_args={"cond": cond})
    return {"prompt": prompt, "sampler": sampler, "steps": steps, "strength": strength, "total_steps": total,
            "weights": [c.weight for c in cond.batch[0]], "calls": denoiser.calls}


PROMPTS = [
    "a [red:blue:0.5] circle",
    "a [red:blue:7] circle",
    "a [red:blue:19] circle",
    "a [red|blue] circle",
    "[a:b:0.25] [c:d:0.75] e",
    "a [red:blue:0.3] circle AND a [square:triangle:12] :0.5",
    "[[a|b]:c:0.6]",
]
cases = []
for prompt in PROMPTS:
    for sampler in SAMPLERS:
        for steps in (10, 20):
            for strength in (1.0, 0.75, 0.5, 0.3):
                cases.append(run(prompt, sampler, steps, strength))

meta = {"a1111_commit": args.a1111_commit, "k_diffusion_commit": args.k_diffusion_commit, "python": sys.version.split()[0],
        "torch": torch.__version__, "lark": lark.__version__}
with open(args.out, "w") as f:
    json.dump({"meta": meta, "cases": cases}, f, indent=1)
print(f"{len(cases)} cases → {args.out}")
