"""Expected UNet residual inputs of a ControlNet loop, by diffusers' own host-side ControlNet code.

Inputs (written by ControlNetLoopFixtureTests with MLNET_DIFFUSION_WRITE_FIXTURES=1; commit them with the outputs):
  loop_control_{n}_{r}.png   the control image of ControlNet n for prompt row r (64x64 RGB silhouettes)
  loop_raw.npy               float32 [images, values]: the Shapes ControlNet ONNX graph's residuals for each control
                             image at conditioning_scale 1 (run by ONNX Runtime from C#), residuals concatenated in order
  loop_config.json           steps, rows, guidance windows, scales, the residual shapes [C, h, w]
Output:
  loop_expected_guess{0,1}.npy  float32 [steps, residuals, values of all UNet rows]: what the UNet gets every step

The ControlNet graph is replaced by a stand-in that returns the dumped ONNX outputs for the images it is given; everything
around it is diffusers v0.35.2, copied verbatim where it is host-side logic (marked "verbatim" with its file):
VaeImageProcessor.preprocess's PIL branch (convert RGB, PIL -> numpy -> torch), prepare_image's repeat and CFG
duplication, __call__'s controlnet_keep (7.2), cond_scale and guess-mode zeros (8), MultiControlNetModel.forward's sum,
and the scaling tail of ControlNetModel.forward (logspace in guess mode).

Run with Debian's python3-torch and python3-pil: /usr/bin/python3 make_controlnet_loop_fixture.py
"""
import json
import os
import sys

import numpy as np
import PIL
import PIL.Image
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- diffusers/image_processor.py v0.35.2, VaeImageProcessor (verbatim static methods) ----
def pil_to_numpy(images):
    if not isinstance(images, list):
        images = [images]
    images = [np.array(image).astype(np.float32) / 255.0 for image in images]
    images = np.stack(images, axis=0)

    return images


def numpy_to_pt(images):
    if images.ndim == 3:
        images = images[..., None]

    images = torch.from_numpy(images.transpose(0, 3, 1, 2))
    return images


def control_preprocess(image, height, width):
    # preprocess() for a list of PIL images with the ControlNet processor's config (do_resize, do_convert_rgb,
    # do_normalize=False, resample "lanczos"); the images are already height x width, so resize keeps them as they are.
    image = [i.resize((width, height), resample=PIL.Image.LANCZOS) for i in image]
    image = [i.convert("RGB") for i in image]
    image = pil_to_numpy(image)  # to np
    image = numpy_to_pt(image)  # to pt
    return image


# ---- pipeline_controlnet.py v0.35.2, StableDiffusionControlNetPipeline.prepare_image (verbatim below the preprocess) ----
def prepare_image(image, width, height, batch_size, num_images_per_prompt, dtype, do_classifier_free_guidance=False, guess_mode=False):
    image = control_preprocess(image, height=height, width=width).to(dtype=torch.float32)
    image_batch_size = image.shape[0]

    if image_batch_size == 1:
        repeat_by = batch_size
    else:
        # image batch size is the same as prompt batch size
        repeat_by = num_images_per_prompt

    image = image.repeat_interleave(repeat_by, dim=0)

    image = image.to(dtype=dtype)

    if do_classifier_free_guidance and not guess_mode:
        image = torch.cat([image] * 2)

    return image


class StandInControlNet:
    """ControlNetModel whose network is the dumped ONNX outputs; forward's scaling tail is controlnet.py v0.35.2's."""

    def __init__(self, prepared_images, raw, shapes):
        self.prepared = prepared_images  # [(tensor [3,H,W], raw row index)]
        self.raw = raw
        self.shapes = shapes
        self.config = type("Config", (), {"global_pool_conditions": False})()

    def network(self, controlnet_cond):
        rows = []
        for img in controlnet_cond:
            match = [k for (p, k) in self.prepared if torch.equal(p, img)]
            assert match, "an image the ControlNet was not dumped for"
            rows.append(torch.from_numpy(self.raw[match[0]]))
        flat = torch.stack(rows)  # [B, values]
        out, offset = [], 0
        for c, h, w in self.shapes:
            n = c * h * w
            out.append(flat[:, offset:offset + n].reshape(-1, c, h, w))
            offset += n
        return out[:-1], out[-1]

    def __call__(self, sample, t, encoder_hidden_states, controlnet_cond, conditioning_scale, guess_mode, return_dict=False):
        down_block_res_samples, mid_block_res_sample = self.network(controlnet_cond)
        # controlnet.py v0.35.2, ControlNetModel.forward, step 6 (verbatim; global_pool_conditions False)
        if guess_mode and not self.config.global_pool_conditions:
            scales = torch.logspace(-1, 0, len(down_block_res_samples) + 1, device=sample.device)  # 0.1 to 1.0
            scales = scales * conditioning_scale
            down_block_res_samples = [sample * scale for sample, scale in zip(down_block_res_samples, scales)]
            mid_block_res_sample = mid_block_res_sample * scales[-1]  # last one
        else:
            down_block_res_samples = [sample * conditioning_scale for sample in down_block_res_samples]
            mid_block_res_sample = mid_block_res_sample * conditioning_scale
        return (down_block_res_samples, mid_block_res_sample)


class MultiControlNetModel:
    def __init__(self, nets):
        self.nets = nets

    # multicontrolnet.py v0.35.2, MultiControlNetModel.forward (verbatim loop)
    def __call__(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale, guess_mode=False, return_dict=False):
        for i, (image, scale, controlnet) in enumerate(zip(controlnet_cond, conditioning_scale, self.nets)):
            down_samples, mid_sample = controlnet(
                sample,
                timestep,
                encoder_hidden_states=encoder_hidden_states,
                controlnet_cond=image,
                conditioning_scale=scale,
                guess_mode=guess_mode,
                return_dict=return_dict,
            )

            # merge samples
            if i == 0:
                down_block_res_samples, mid_block_res_sample = down_samples, mid_sample
            else:
                down_block_res_samples = [
                    samples_prev + samples_curr
                    for samples_prev, samples_curr in zip(down_block_res_samples, down_samples)
                ]
                mid_block_res_sample += mid_sample

        return down_block_res_samples, mid_block_res_sample


def run(config, raw, guess_mode):
    rows, size = config["rows"], config["size"]
    nets = len(config["scales"])
    do_classifier_free_guidance = True
    images, prepared_sources = [], []
    for n in range(nets):
        pil = [PIL.Image.open(os.path.join(HERE, f"loop_control_{n}_{r}.png")) for r in range(rows)]
        image = prepare_image(pil, size, size, rows, 1, torch.float32, do_classifier_free_guidance, guess_mode)
        images.append(image)
        single = control_preprocess(pil, size, size)
        prepared_sources += [(single[r], n * rows + r) for r in range(rows)]
    controlnet = MultiControlNetModel([StandInControlNet(prepared_sources, raw, config["shapes"]) for _ in range(nets)])
    controlnet_conditioning_scale = config["scales"]
    control_guidance_start, control_guidance_end = config["starts"], config["ends"]
    timesteps = list(range(config["steps"]))  # only len(timesteps) matters to the host logic
    latents = torch.zeros(rows, 4, size // 8, size // 8)

    # pipeline_controlnet.py v0.35.2, __call__ 7.2 (verbatim; controlnet is a MultiControlNetModel)
    controlnet_keep = []
    for i in range(len(timesteps)):
        keeps = [
            1.0 - float(i / len(timesteps) < s or (i + 1) / len(timesteps) > e)
            for s, e in zip(control_guidance_start, control_guidance_end)
        ]
        controlnet_keep.append(keeps)

    out = []
    for i, t in enumerate(timesteps):
        latent_model_input = torch.cat([latents] * 2) if do_classifier_free_guidance else latents
        # __call__ 8 (verbatim, scheduler scaling left out: the stand-in does not read the sample)
        if guess_mode and do_classifier_free_guidance:
            control_model_input = latents
        else:
            control_model_input = latent_model_input

        if isinstance(controlnet_keep[i], list):
            cond_scale = [c * s for c, s in zip(controlnet_conditioning_scale, controlnet_keep[i])]
        else:
            controlnet_cond_scale = controlnet_conditioning_scale
            if isinstance(controlnet_cond_scale, list):
                controlnet_cond_scale = controlnet_cond_scale[0]
            cond_scale = controlnet_cond_scale * controlnet_keep[i]

        down_block_res_samples, mid_block_res_sample = controlnet(
            control_model_input,
            t,
            encoder_hidden_states=None,
            controlnet_cond=images,
            conditioning_scale=cond_scale,
            guess_mode=guess_mode,
            return_dict=False,
        )

        if guess_mode and do_classifier_free_guidance:
            down_block_res_samples = [torch.cat([torch.zeros_like(d), d]) for d in down_block_res_samples]
            mid_block_res_sample = torch.cat([torch.zeros_like(mid_block_res_sample), mid_block_res_sample])

        residuals = list(down_block_res_samples) + [mid_block_res_sample]
        out.append(torch.cat([r.reshape(-1) for r in residuals]).to(torch.float32).numpy())
    return np.stack(out)


def main():
    with open(os.path.join(HERE, "loop_config.json")) as f:
        config = json.load(f)
    raw = np.load(os.path.join(HERE, "loop_raw.npy"))
    for guess in (0, 1):
        expected = run(config, raw, bool(guess))
        np.save(os.path.join(HERE, f"loop_expected_guess{guess}.npy"), expected.astype("<f4"))
        print(f"guess_mode={bool(guess)}: {expected.shape}")
    with open(os.path.join(HERE, "loop_versions.txt"), "w") as f:
        f.write(f"python {sys.version.split()[0]}\ntorch {torch.__version__}\nnumpy {np.__version__}\nPIL {PIL.__version__}\n"
                "diffusers v0.35.2 host logic copied (pipeline_controlnet.py, multicontrolnet.py, controlnet.py, image_processor.py)\n")


if __name__ == "__main__":
    main()
