"""diffusers' LDMPipeline and DDPMPipeline loops replayed over the shared tiny exports' UNet answers.

Inputs (written by UnconditionalLoopFixtureTests with MLNET_DIFFUSION_WRITE_FIXTURES=1; commit them with the outputs),
for each route R in ("ldm": ../shared/models/tiny-ldm-vq, "ddpm": ../shared/models/tiny-ddpm-pixel, "sr": the Shapes
super-resolution folder, ShapesModel.Build with ShapesVariant.SuperResolution, built by the test):
  R_config.json      seeds (one CPU generator per row; sr: the first seeds the batch), steps, the UNet sample side
  R_unet_in.npy      float32 [steps, rows, C_in, h, w]: the sample the library fed its UNet (ONNX Runtime) at every step
  R_unet_out.npy     float32 [steps, rows, C, h, w]: what the UNet answered
  R_timesteps.npy    float32 [steps]: the timesteps the library fed it
  R_final.npy        float32 [rows, C, h, w]: the library's final latents (ldm, sr) / image tensor (ddpm)
  R_decoded.npy      float32 [rows, 3, H, W]: the library's decoder output for them (ldm, sr: vqvae_decoder with
                     quantisation; ddpm: the final sample itself, DDPMPipeline has no decoder); sr: its 32x32 pixels from (128, 112) only
  sr_lowres_{0,1}.png  the 32x32 pictures the super-resolution rows upscale
Outputs:
  R_expected_inputs.npy   float32 [steps, rows, C_in, h, w]: diffusers' UNet input at every step
  R_expected_final.npy    float32 [rows, C, h, w]: diffusers' final latents / image tensor
  R_expected_image.npy    float32 [rows, H, W, 3]: the uint8 values of diffusers' output image (post-processing of R_decoded)
  unconditional_loop_versions.txt

The UNet (and LDM's VQ decoder) is a stand-in that returns the dumped answers; at every call it checks that diffusers'
own sample equals the dumped input to float32 rounding and that the timestep is the dumped one. Everything else is
diffusers v0.35.2 (tag v0.35.2, commit b71269675ec1b85193107a691dd35c308e46f0a5), copied verbatim with docstrings and
branches for other configs left out: LDMPipeline.__call__ (pipelines/deprecated/latent_diffusion_uncond/
pipeline_latent_diffusion_uncond.py), DDPMPipeline.__call__ (pipelines/ddpm/pipeline_ddpm.py),
LDMSuperResolutionPipeline.__call__ and preprocess (pipelines/latent_diffusion/pipeline_latent_diffusion_superresolution.py), randn_tensor
(utils/torch_utils.py), numpy_to_pil's rounding (utils/pil_utils.py), DDIMScheduler and DDPMScheduler __init__,
set_timesteps, step, _get_variance, previous_timestep (schedulers/scheduling_ddim.py, scheduling_ddpm.py). The initial
noise and DDPM's per-step noise come from torch.Generator().manual_seed(seed) per row, as diffusers draws them.
LDMSuperResolutionPipeline gets one generator for the batch (seed 42) and, as it does not pass the generator to
scheduler.step, its eta noise comes from torch's global generator, seeded here with torch.manual_seed(42 + 1000).

Run with Debian's python3-torch and python3-numpy:
  MLNET_DIFFUSION_SHARED=/work/shared /usr/bin/python3 make_unconditional_loop_fixture.py
"""
import json
import os
import sys
from types import SimpleNamespace
from typing import List, Optional, Tuple, Union

import numpy as np
import PIL
import PIL.Image
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("MLNET_DIFFUSION_SHARED", os.path.join(HERE, "..", "..", "..", "..", "..", "shared"))
# float32 rounding: torch's step arithmetic against the library's (same formulas, operations ordered/fused differently).
ATOL, RTOL = 1e-5, 1e-5


# ---- utils/torch_utils.py v0.35.2, randn_tensor (verbatim; logging and the mps/cuda branches left out) ----
def randn_tensor(
    shape: Union[Tuple, List],
    generator: Optional[Union[List["torch.Generator"], "torch.Generator"]] = None,
    device: Optional[Union[str, "torch.device"]] = None,
    dtype: Optional["torch.dtype"] = None,
    layout: Optional["torch.layout"] = None,
):
    # device on which tensor is created defaults to device
    if isinstance(device, str):
        device = torch.device(device)
    rand_device = device
    batch_size = shape[0]

    layout = layout or torch.strided
    device = device or torch.device("cpu")

    # make sure generator list of length 1 is treated like a non-list
    if isinstance(generator, list) and len(generator) == 1:
        generator = generator[0]

    if isinstance(generator, list):
        shape = (1,) + shape[1:]
        latents = [
            torch.randn(shape, generator=generator[i], device=rand_device, dtype=dtype, layout=layout)
            for i in range(batch_size)
        ]
        latents = torch.cat(latents, dim=0).to(device)
    else:
        latents = torch.randn(shape, generator=generator, device=rand_device, dtype=dtype, layout=layout).to(device)

    return latents


class Output(SimpleNamespace):
    pass


# ---- schedulers/scheduling_ddim.py v0.35.2, DDIMScheduler (verbatim methods; config held in self.config) ----
class DDIMScheduler:
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
    ):
        self.config = SimpleNamespace(**{k: v for k, v in locals().items() if k != "self"})
        assert not thresholding and not rescale_betas_zero_snr and trained_betas is None
        if trained_betas is not None:
            self.betas = torch.tensor(trained_betas, dtype=torch.float32)
        elif beta_schedule == "linear":
            self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            # this schedule is very specific to the latent diffusion model.
            self.betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        else:
            raise NotImplementedError(f"{beta_schedule} is not implemented for {self.__class__}")

        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

        # standard deviation of the initial noise distribution
        self.init_noise_sigma = 1.0

        # setable values
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy().astype(np.int64))

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        return sample

    def _get_variance(self, timestep, prev_timestep):
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev

        variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)

        return variance

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device] = None):
        if num_inference_steps > self.config.num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps`: {num_inference_steps} cannot be larger than `self.config.train_timesteps`:"
                f" {self.config.num_train_timesteps} as the unet model trained with this scheduler can only handle"
                f" maximal {self.config.num_train_timesteps} timesteps."
            )

        self.num_inference_steps = num_inference_steps

        # "linspace", "leading", "trailing" corresponds to annotation of Table 2. of https://huggingface.co/papers/2305.08891
        if self.config.timestep_spacing == "linspace":
            timesteps = (
                np.linspace(0, self.config.num_train_timesteps - 1, num_inference_steps)
                .round()[::-1]
                .copy()
                .astype(np.int64)
            )
        elif self.config.timestep_spacing == "leading":
            step_ratio = self.config.num_train_timesteps // self.num_inference_steps
            # creates integer timesteps by multiplying by ratio
            # casting to int to avoid issues when num_inference_step is power of 3
            timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
            timesteps += self.config.steps_offset
        elif self.config.timestep_spacing == "trailing":
            step_ratio = self.config.num_train_timesteps / self.num_inference_steps
            # creates integer timesteps by multiplying by ratio
            # casting to int to avoid issues when num_inference_step is power of 3
            timesteps = np.round(np.arange(self.config.num_train_timesteps, 0, -step_ratio)).astype(np.int64)
            timesteps -= 1
        else:
            raise ValueError(
                f"{self.config.timestep_spacing} is not supported. Please make sure to choose one of 'leading' or 'trailing'."
            )

        self.timesteps = torch.from_numpy(timesteps).to(device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator=None,
        variance_noise: Optional[torch.Tensor] = None,
        return_dict: bool = True,
    ):
        if self.num_inference_steps is None:
            raise ValueError(
                "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the scheduler"
            )

        # 1. get previous step value (=t-1)
        prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps

        # 2. compute alphas, betas
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod

        beta_prod_t = 1 - alpha_prod_t

        # 3. compute predicted original sample from predicted noise also called
        # "predicted x_0" of formula (12) from https://huggingface.co/papers/2010.02502
        if self.config.prediction_type == "epsilon":
            pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            pred_epsilon = model_output
        elif self.config.prediction_type == "sample":
            pred_original_sample = model_output
            pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
        elif self.config.prediction_type == "v_prediction":
            pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
        else:
            raise ValueError(
                f"prediction_type given as {self.config.prediction_type} must be one of `epsilon`, `sample`, or"
                " `v_prediction`"
            )

        # 4. Clip or threshold "predicted x_0"
        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            CLIPPED.append(int((pred_original_sample.abs() > self.config.clip_sample_range).sum()))  # (fixture statistic)
            pred_original_sample = pred_original_sample.clamp(
                -self.config.clip_sample_range, self.config.clip_sample_range
            )

        # 5. compute variance: "sigma_t(η)" -> see formula (16)
        # σ_t = sqrt((1 − α_t−1)/(1 − α_t)) * sqrt(1 − α_t/α_t−1)
        variance = self._get_variance(timestep, prev_timestep)
        std_dev_t = eta * variance ** (0.5)

        if use_clipped_model_output:
            # the pred_epsilon is always re-derived from the clipped x_0 in Glide
            pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)

        # 6. compute "direction pointing to x_t" of formula (12) from https://huggingface.co/papers/2010.02502
        pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon

        # 7. compute x_t without "random noise" of formula (12) from https://huggingface.co/papers/2010.02502
        prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction

        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError(
                    "Cannot pass both generator and variance_noise. Please make sure that either `generator` or"
                    " `variance_noise` stays `None`."
                )

            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
            variance = std_dev_t * variance_noise

            prev_sample = prev_sample + variance

        if not return_dict:
            return (
                prev_sample,
                pred_original_sample,
            )

        return Output(prev_sample=prev_sample, pred_original_sample=pred_original_sample)


# ---- schedulers/scheduling_ddpm.py v0.35.2, DDPMScheduler (verbatim methods; config held in self.config) ----
class DDPMScheduler:
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Union[np.ndarray, List[float]]] = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        self.config = SimpleNamespace(**{k: v for k, v in locals().items() if k != "self"})
        assert not thresholding and not rescale_betas_zero_snr and trained_betas is None
        if trained_betas is not None:
            self.betas = torch.tensor(trained_betas, dtype=torch.float32)
        elif beta_schedule == "linear":
            self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            # this schedule is very specific to the latent diffusion model.
            self.betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        else:
            raise NotImplementedError(f"{beta_schedule} is not implemented for {self.__class__}")

        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.one = torch.tensor(1.0)

        # standard deviation of the initial noise distribution
        self.init_noise_sigma = 1.0

        # setable values
        self.custom_timesteps = False
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())

        self.variance_type = variance_type

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        return sample

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device: Union[str, torch.device] = None,
        timesteps: Optional[List[int]] = None,
    ):
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")

        if timesteps is not None:
            raise NotImplementedError("custom timesteps: not used by DDPMPipeline")
        else:
            if num_inference_steps > self.config.num_train_timesteps:
                raise ValueError(
                    f"`num_inference_steps`: {num_inference_steps} cannot be larger than `self.config.train_timesteps`:"
                    f" {self.config.num_train_timesteps} as the unet model trained with this scheduler can only handle"
                    f" maximal {self.config.num_train_timesteps} timesteps."
                )

            self.num_inference_steps = num_inference_steps
            self.custom_timesteps = False

            # "linspace", "leading", "trailing" corresponds to annotation of Table 2. of https://huggingface.co/papers/2305.08891
            if self.config.timestep_spacing == "linspace":
                timesteps = (
                    np.linspace(0, self.config.num_train_timesteps - 1, num_inference_steps)
                    .round()[::-1]
                    .copy()
                    .astype(np.int64)
                )
            elif self.config.timestep_spacing == "leading":
                step_ratio = self.config.num_train_timesteps // self.num_inference_steps
                # creates integer timesteps by multiplying by ratio
                # casting to int to avoid issues when num_inference_step is power of 3
                timesteps = (np.arange(0, num_inference_steps) * step_ratio).round()[::-1].copy().astype(np.int64)
                timesteps += self.config.steps_offset
            elif self.config.timestep_spacing == "trailing":
                step_ratio = self.config.num_train_timesteps / self.num_inference_steps
                # creates integer timesteps by multiplying by ratio
                # casting to int to avoid issues when num_inference_step is power of 3
                timesteps = np.round(np.arange(self.config.num_train_timesteps, 0, -step_ratio)).astype(np.int64)
                timesteps -= 1
            else:
                raise ValueError(
                    f"{self.config.timestep_spacing} is not supported. Please make sure to choose one of 'linspace', 'leading' or 'trailing'."
                )

        self.timesteps = torch.from_numpy(timesteps).to(device)

    def _get_variance(self, t, predicted_variance=None, variance_type=None):
        prev_t = self.previous_timestep(t)

        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        current_beta_t = 1 - alpha_prod_t / alpha_prod_t_prev

        # For t > 0, compute predicted variance βt (see formula (6) and (7) from https://huggingface.co/papers/2006.11239)
        # and sample from it to get previous sample
        # x_{t-1} ~ N(pred_prev_sample, variance) == add variance to pred_sample
        variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t

        # we always take the log of variance, so clamp it to ensure it's not 0
        variance = torch.clamp(variance, min=1e-20)

        if variance_type is None:
            variance_type = self.config.variance_type

        # hacks - were probably added for training stability
        if variance_type == "fixed_small":
            variance = variance
        # for rl-diffuser https://huggingface.co/papers/2205.09991
        elif variance_type == "fixed_small_log":
            variance = torch.log(variance)
            variance = torch.exp(0.5 * variance)
        elif variance_type == "fixed_large":
            variance = current_beta_t
        elif variance_type == "fixed_large_log":
            # Glide max_log
            variance = torch.log(current_beta_t)
        elif variance_type == "learned":
            return predicted_variance
        elif variance_type == "learned_range":
            min_log = torch.log(variance)
            max_log = torch.log(current_beta_t)
            frac = (predicted_variance + 1) / 2
            variance = frac * max_log + (1 - frac) * min_log

        return variance

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator=None,
        return_dict: bool = True,
    ):
        t = timestep

        prev_t = self.previous_timestep(t)

        if model_output.shape[1] == sample.shape[1] * 2 and self.variance_type in ["learned", "learned_range"]:
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        else:
            predicted_variance = None

        # 1. compute alphas, betas
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t

        # 2. compute predicted original sample from predicted noise also called
        # "predicted x_0" of formula (15) from https://huggingface.co/papers/2006.11239
        if self.config.prediction_type == "epsilon":
            pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        elif self.config.prediction_type == "sample":
            pred_original_sample = model_output
        elif self.config.prediction_type == "v_prediction":
            pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
        else:
            raise ValueError(
                f"prediction_type given as {self.config.prediction_type} must be one of `epsilon`, `sample` or"
                " `v_prediction`  for the DDPMScheduler."
            )

        # 3. Clip or threshold "predicted x_0"
        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            CLIPPED.append(int((pred_original_sample.abs() > self.config.clip_sample_range).sum()))  # (fixture statistic)
            pred_original_sample = pred_original_sample.clamp(
                -self.config.clip_sample_range, self.config.clip_sample_range
            )

        # 4. Compute coefficients for pred_original_sample x_0 and current sample x_t
        # See formula (7) from https://huggingface.co/papers/2006.11239
        pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
        current_sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t

        # 5. Compute predicted previous sample µ_t
        # See formula (7) from https://huggingface.co/papers/2006.11239
        pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample

        # 6. Add noise
        variance = 0
        if t > 0:
            device = model_output.device
            variance_noise = randn_tensor(
                model_output.shape, generator=generator, device=device, dtype=model_output.dtype
            )
            if self.variance_type == "fixed_small_log":
                variance = self._get_variance(t, predicted_variance=predicted_variance) * variance_noise
            elif self.variance_type == "learned_range":
                variance = self._get_variance(t, predicted_variance=predicted_variance)
                variance = torch.exp(0.5 * variance) * variance_noise
            else:
                variance = (self._get_variance(t, predicted_variance=predicted_variance) ** 0.5) * variance_noise

        pred_prev_sample = pred_prev_sample + variance

        if not return_dict:
            return (
                pred_prev_sample,
                pred_original_sample,
            )

        return Output(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)

    def previous_timestep(self, timestep):
        if self.custom_timesteps or self.num_inference_steps:
            index = (self.timesteps == timestep).nonzero(as_tuple=True)[0][0]
            if index == self.timesteps.shape[0] - 1:
                prev_t = torch.tensor(-1)
            else:
                prev_t = self.timesteps[index + 1]
        else:
            prev_t = timestep - 1
        return prev_t


CLIPPED = []  # elements of x0 that clip_sample clamped, per step (to show the clamp is exercised)


def check(name, ours, dumped):
    diff = float((ours - dumped).abs().max())
    ok = torch.allclose(ours, dumped, rtol=RTOL, atol=ATOL)
    print(f"  {name}: max |diffusers - library| = {diff:.3g}")
    assert ok, f"{name}: diffusers' sample differs from the library's UNet input by {diff}"
    return diff


class StandInUNet:
    """UNet2DModel whose network is the answers dumped from the library; checks each input against the dumped one."""

    def __init__(self, route, channels, sample_size):
        self.inputs = torch.from_numpy(np.load(os.path.join(HERE, f"{route}_unet_in.npy")))
        self.outputs = torch.from_numpy(np.load(os.path.join(HERE, f"{route}_unet_out.npy")))
        self.timesteps = np.load(os.path.join(HERE, f"{route}_timesteps.npy"))
        self.config = SimpleNamespace(in_channels=channels, sample_size=sample_size)
        self.dtype = torch.float32
        self.seen = []
        self.max_diff = 0.0

    def __call__(self, sample, t):
        k = len(self.seen)
        assert float(t) == float(self.timesteps[k]), f"step {k}: timestep {int(t)} vs the library's {self.timesteps[k]}"
        self.max_diff = max(self.max_diff, check(f"step {k} (t={int(t)}) UNet input", sample, self.inputs[k]))
        self.seen.append(sample.clone())
        return Output(sample=self.outputs[k].clone())


class StandInVQModel:
    """VQModel.decode: the dumped vqvae_decoder output, after checking the latents it is given (already ÷ scaling_factor)."""

    def __init__(self, route, scaling_factor):
        self.config = SimpleNamespace(scaling_factor=scaling_factor)
        self.final = torch.from_numpy(np.load(os.path.join(HERE, f"{route}_final.npy")))
        self.decoded = torch.from_numpy(np.load(os.path.join(HERE, f"{route}_decoded.npy")))

    def decode(self, latents):
        check("decoder input", latents, self.final / self.config.scaling_factor)
        return Output(sample=self.decoded.clone())


def progress_bar(iterable):
    return iterable


def scheduler_config(folder):
    with open(os.path.join(SHARED, "models", folder, "scheduler", "scheduler_config.json")) as f:
        c = json.load(f)
    return {k: v for k, v in c.items() if not k.startswith("_")}


def ldm(config):
    """LDMPipeline.__call__ (pipelines/deprecated/latent_diffusion_uncond/pipeline_latent_diffusion_uncond.py v0.35.2)."""
    with open(os.path.join(SHARED, "models", "tiny-ldm-vq", "vqvae_decoder", "config.json")) as f:
        scaling = json.load(f)["scaling_factor"]
    self = SimpleNamespace(
        unet=StandInUNet("ldm", 3, config["size"]),
        vqvae=StandInVQModel("ldm", scaling),
        scheduler=DDIMScheduler(**scheduler_config("tiny-ldm-vq")),
        device=torch.device("cpu"),
        progress_bar=progress_bar,
    )
    batch_size = len(config["seeds"])
    generator = [torch.Generator().manual_seed(s) for s in config["seeds"]]
    num_inference_steps = config["steps"]
    eta = 0.0  # __call__'s default
    output_type = "np"

    # ---- verbatim from here (the eta check through inspect replaced by its answer: DDIMScheduler.step takes eta) ----
    latents = randn_tensor(
        (batch_size, self.unet.config.in_channels, self.unet.config.sample_size, self.unet.config.sample_size),
        generator=generator,
    )
    latents = latents.to(self.device)

    # scale the initial noise by the standard deviation required by the scheduler
    latents = latents * self.scheduler.init_noise_sigma

    self.scheduler.set_timesteps(num_inference_steps)

    extra_kwargs = {}
    extra_kwargs["eta"] = eta

    for t in self.progress_bar(self.scheduler.timesteps):
        latent_model_input = self.scheduler.scale_model_input(latents, t)
        # predict the noise residual
        noise_prediction = self.unet(latent_model_input, t).sample
        # compute the previous noisy sample x_t -> x_t-1
        latents = self.scheduler.step(noise_prediction, t, latents, **extra_kwargs).prev_sample

    final = latents.clone()
    # adjust latents with inverse of vae scale
    latents = latents / self.vqvae.config.scaling_factor
    # decode the image latents with the VAE
    image = self.vqvae.decode(latents).sample

    image = (image / 2 + 0.5).clamp(0, 1)
    image = image.cpu().permute(0, 2, 3, 1).numpy()
    # ---- end verbatim; output_type "pil" would now run numpy_to_pil, whose rounding is below ----
    assert output_type == "np"
    return self.unet.seen, final, image


def ddpm(config):
    """DDPMPipeline.__call__ (pipelines/ddpm/pipeline_ddpm.py v0.35.2)."""
    self = SimpleNamespace(
        unet=StandInUNet("ddpm", 3, config["size"]),
        scheduler=DDPMScheduler(**scheduler_config("tiny-ddpm-pixel")),
        device=torch.device("cpu"),
        progress_bar=progress_bar,
    )
    batch_size = len(config["seeds"])
    generator = [torch.Generator().manual_seed(s) for s in config["seeds"]]
    num_inference_steps = config["steps"]

    # ---- verbatim from here (the mps branch left out) ----
    # Sample gaussian noise to begin loop
    if isinstance(self.unet.config.sample_size, int):
        image_shape = (
            batch_size,
            self.unet.config.in_channels,
            self.unet.config.sample_size,
            self.unet.config.sample_size,
        )
    else:
        image_shape = (batch_size, self.unet.config.in_channels, *self.unet.config.sample_size)

    image = randn_tensor(image_shape, generator=generator, device=self.device, dtype=self.unet.dtype)

    # set step values
    self.scheduler.set_timesteps(num_inference_steps)

    for t in self.progress_bar(self.scheduler.timesteps):
        # 1. predict noise model_output
        model_output = self.unet(image, t).sample

        # 2. compute previous image: x_t -> x_t-1
        image = self.scheduler.step(model_output, t, image, generator=generator).prev_sample

    final = image.clone()
    check("final image tensor", final, torch.from_numpy(np.load(os.path.join(HERE, "ddpm_final.npy"))))
    # DDPMPipeline post-processes the denoised tensor itself; the library's copy of it was dumped (ddpm_decoded.npy) so
    # that the byte comparison covers the post-processing alone.
    image = torch.from_numpy(np.load(os.path.join(HERE, "ddpm_decoded.npy")))
    assert torch.equal(image, torch.from_numpy(np.load(os.path.join(HERE, "ddpm_final.npy"))))
    image = (image / 2 + 0.5).clamp(0, 1)
    image = image.cpu().permute(0, 2, 3, 1).numpy()
    # ---- end verbatim ----
    return self.unet.seen, final, image


# ---- pipeline_latent_diffusion_superresolution.py v0.35.2, preprocess (verbatim; PIL_INTERPOLATION["lanczos"] is
#      PIL.Image.LANCZOS in diffusers' utils/pil_utils.py) ----
PIL_INTERPOLATION = {"lanczos": PIL.Image.LANCZOS}


def preprocess(image):
    w, h = image.size
    w, h = (x - x % 32 for x in (w, h))  # resize to integer multiple of 32
    image = image.resize((w, h), resample=PIL_INTERPOLATION["lanczos"])
    image = np.array(image).astype(np.float32) / 255.0
    image = image[None].transpose(0, 3, 1, 2)
    image = torch.from_numpy(image)
    return 2.0 * image - 1.0


def sr(config):
    """LDMSuperResolutionPipeline.__call__ (pipeline_latent_diffusion_superresolution.py v0.35.2), with eta = 1."""
    folder = os.path.join(HERE, "sr_scheduler_config.json")
    with open(folder) as f:
        scheduler = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    self = SimpleNamespace(
        # The Shapes UNet takes 7 channels: 4 latents + 3 image. The pipeline sizes the latents as in_channels // 2, which
        # assumes as many latent channels as image channels (CompVis/ldm-super-resolution-4x-openimages: 3 + 3 = 6); for
        # the Shapes VQ autoencoder's 4 channels the stand-in's config says 8 so that the verbatim line gives 4.
        unet=StandInUNet("sr", 8, config["size"]),
        vqvae=StandInVQModel("sr", 1.0),
        scheduler=DDIMScheduler(**scheduler),
        device=torch.device("cpu"),
        progress_bar=progress_bar,
    )
    # A batch of two pictures: the pipeline preprocesses a single PIL image, or takes a tensor batch as it is; so each
    # (RGB) picture goes through preprocess and the batch is their concatenation.
    image = torch.cat([preprocess(PIL.Image.open(os.path.join(HERE, f"sr_lowres_{r}.png")).convert("RGB")) for r in range(2)])
    generator = torch.Generator().manual_seed(config["seeds"][0])
    torch.manual_seed(config["seeds"][0] + 1000)  # the global generator scheduler.step draws eta's noise from
    num_inference_steps = config["steps"]
    eta = 1.0
    self.unet.parameters = lambda: iter([torch.zeros(1, dtype=torch.float32)])

    # ---- verbatim from here (the PIL branch does not apply: image is a tensor; eta check answered) ----
    if isinstance(image, PIL.Image.Image):
        batch_size = 1
    elif isinstance(image, torch.Tensor):
        batch_size = image.shape[0]
    else:
        raise ValueError(f"`image` has to be of type `PIL.Image.Image` or `torch.Tensor` but is {type(image)}")

    if isinstance(image, PIL.Image.Image):
        image = preprocess(image)

    height, width = image.shape[-2:]

    # in_channels should be 6: 3 for latents, 3 for low resolution image
    latents_shape = (batch_size, self.unet.config.in_channels // 2, height, width)
    latents_dtype = next(self.unet.parameters()).dtype

    latents = randn_tensor(latents_shape, generator=generator, device=self.device, dtype=latents_dtype)

    image = image.to(device=self.device, dtype=latents_dtype)

    # set timesteps and move to the correct device
    self.scheduler.set_timesteps(num_inference_steps, device=self.device)
    timesteps_tensor = self.scheduler.timesteps

    # scale the initial noise by the standard deviation required by the scheduler
    latents = latents * self.scheduler.init_noise_sigma

    extra_kwargs = {}
    extra_kwargs["eta"] = eta

    for t in self.progress_bar(timesteps_tensor):
        # concat latents and low resolution image in the channel dimension.
        latents_input = torch.cat([latents, image], dim=1)
        latents_input = self.scheduler.scale_model_input(latents_input, t)
        # predict the noise residual
        noise_pred = self.unet(latents_input, t).sample
        # compute the previous noisy sample x_t -> x_t-1
        latents = self.scheduler.step(noise_pred, t, latents, **extra_kwargs).prev_sample

    final = latents.clone()
    # decode the image latents with the VQVAE
    image = self.vqvae.decode(latents).sample
    image = torch.clamp(image, -1.0, 1.0)
    image = image / 2 + 0.5
    image = image.cpu().permute(0, 2, 3, 1).numpy()
    # ---- end verbatim ----
    return self.unet.seen, final, image


def main():
    for route, run in (("ldm", ldm), ("ddpm", ddpm), ("sr", sr)):
        with open(os.path.join(HERE, f"{route}_config.json")) as f:
            config = json.load(f)
        CLIPPED.clear()
        print(f"{route}: seeds {config['seeds']}, {config['steps']} steps")
        seen, final, image = run(config)
        np.save(os.path.join(HERE, f"{route}_expected_inputs.npy"), torch.stack(seen).numpy().astype("<f4"))
        np.save(os.path.join(HERE, f"{route}_expected_final.npy"), final.numpy().astype("<f4"))
        # utils/pil_utils.py v0.35.2, numpy_to_pil (verbatim rounding line)
        images = (image * 255).round().astype("uint8")
        np.save(os.path.join(HERE, f"{route}_expected_image.npy"), images.astype("<f4"))
        print(f"  x0 elements clamped by clip_sample per step: {CLIPPED}")
    with open(os.path.join(HERE, "unconditional_loop_versions.txt"), "w") as f:
        f.write(f"python {sys.version.split()[0]}\ntorch {torch.__version__}\nnumpy {np.__version__}\n"
                f"torch {[l.strip() for l in torch.__config__.show().splitlines() if 'CPU capability' in l][0]}\n"
                "diffusers v0.35.2 (b71269675ec1b85193107a691dd35c308e46f0a5) copied: pipeline_latent_diffusion_uncond.py, "
                "pipeline_ddpm.py, pipeline_latent_diffusion_superresolution.py, scheduling_ddim.py, scheduling_ddpm.py, utils/torch_utils.py, utils/pil_utils.py\n")


if __name__ == "__main__":
    main()
