"""Makes vae_tiling_diffusers.safetensors: diffusers' own VAE tiling over tiny-sd's ONNX tile outputs.

Step 1 (C#): MLNET_DIFFUSION_WRITE_FIXTURES=1 MLNET_DIFFUSION_SHARED=/work/shared \
    dotnet test tests/MLNet.Diffusion.Tests --filter "FullyQualifiedName~VaeTilingTests.WriteTheTileDump"
  runs tiny-sd's vae_decoder/vae_encoder (ONNX) on every tile of a 64x64 image (tile 32 pixels, VAE factor 2) and writes
  /tmp/vae_tiles_onnx.safetensors: the tile inputs and outputs, the whole latents / z / pixels.
Step 2 (this script): /usr/bin/python3 make_vae_tiling.py /tmp/vae_tiles_onnx.safetensors
  runs AutoencoderKL.blend_v, blend_h, _tiled_encode and tiled_decode, copied verbatim below from diffusers
  (src/diffusers/models/autoencoders/autoencoder_kl.py at commit 58eb52c0803ea9af3abec60841c2a093bdf1f951, lines
  133-140, 242-300 and 364-412), with self.decoder / self.encoder replaced by a lookup of the dumped tile outputs that
  asserts the tile diffusers cuts is bit for bit the dumped tile input. No safetensors package is needed.

Ran with Debian python3-torch (torch 1.13.0a0) and python3-numpy.
"""

import json
import os
import struct
import sys

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        begin, end = info["data_offsets"]
        values = np.frombuffer(data[base + begin : base + end], dtype="<f4").reshape(info["shape"])
        tensors[name] = torch.from_numpy(values.copy())
    return tensors, metadata


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


class DecoderOutput:
    def __init__(self, sample):
        self.sample = sample


def deprecate(*args, **kwargs):
    pass


class Config:
    def __init__(self, sample_size, block_out_channels):
        self.sample_size = sample_size
        self.block_out_channels = block_out_channels
        self.use_quant_conv = False  # the ONNX encoder includes quant_conv
        self.use_post_quant_conv = False  # the ONNX decoder includes post_quant_conv


class TileLookup:
    """Stands in for the encoder / decoder: returns the ONNX output dumped for the tile with these exact values."""

    def __init__(self, tensors, prefix):
        self.tiles = [(tensors[k], tensors[k[: -len("/input")] + "/output"]) for k in sorted(tensors)
                      if k.startswith(prefix + "/tile_") and k.endswith("/input")]
        self.used = 0

    def __call__(self, tile):
        for inp, out in self.tiles:
            if inp.shape == tile.shape and torch.equal(inp, tile):
                self.used += 1
                return out.clone()
        raise AssertionError(f"no dumped tile has the values of the {list(tile.shape)} tile diffusers cut")


class AutoencoderKLShim:
    def __init__(self, config, encoder, decoder):
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        # --- verbatim: AutoencoderKL.__init__, lines 133-140 ---
        self.tile_sample_min_size = self.config.sample_size
        sample_size = (
            self.config.sample_size[0]
            if isinstance(self.config.sample_size, (list, tuple))
            else self.config.sample_size
        )
        self.tile_latent_min_size = int(sample_size / (2 ** (len(self.config.block_out_channels) - 1)))
        self.tile_overlap_factor = 0.25

    # --- verbatim: AutoencoderKL.blend_v, blend_h, _tiled_encode, lines 242-300 ---
    def blend_v(self, a: torch.Tensor, b: torch.Tensor, blend_extent: int) -> torch.Tensor:
        blend_extent = min(a.shape[2], b.shape[2], blend_extent)
        for y in range(blend_extent):
            b[:, :, y, :] = a[:, :, -blend_extent + y, :] * (1 - y / blend_extent) + b[:, :, y, :] * (y / blend_extent)
        return b

    def blend_h(self, a: torch.Tensor, b: torch.Tensor, blend_extent: int) -> torch.Tensor:
        blend_extent = min(a.shape[3], b.shape[3], blend_extent)
        for x in range(blend_extent):
            b[:, :, :, x] = a[:, :, :, -blend_extent + x] * (1 - x / blend_extent) + b[:, :, :, x] * (x / blend_extent)
        return b

    def _tiled_encode(self, x: torch.Tensor) -> torch.Tensor:
        r"""Encode a batch of images using a tiled encoder.

        When this option is enabled, the VAE will split the input tensor into tiles to compute encoding in several
        steps. This is useful to keep memory use constant regardless of image size. The end result of tiled encoding is
        different from non-tiled encoding because each tile uses a different encoder. To avoid tiling artifacts, the
        tiles overlap and are blended together to form a smooth output. You may still see tile-sized changes in the
        output, but they should be much less noticeable.

        Args:
            x (`torch.Tensor`): Input batch of images.

        Returns:
            `torch.Tensor`:
                The latent representation of the encoded videos.
        """

        overlap_size = int(self.tile_sample_min_size * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_latent_min_size * self.tile_overlap_factor)
        row_limit = self.tile_latent_min_size - blend_extent

        # Split the image into 512x512 tiles and encode them separately.
        rows = []
        for i in range(0, x.shape[2], overlap_size):
            row = []
            for j in range(0, x.shape[3], overlap_size):
                tile = x[:, :, i : i + self.tile_sample_min_size, j : j + self.tile_sample_min_size]
                tile = self.encoder(tile)
                if self.config.use_quant_conv:
                    tile = self.quant_conv(tile)
                row.append(tile)
            rows.append(row)
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j, tile in enumerate(row):
                # blend the above tile and the left tile
                # to the current tile and add the current tile to the result row
                if i > 0:
                    tile = self.blend_v(rows[i - 1][j], tile, blend_extent)
                if j > 0:
                    tile = self.blend_h(row[j - 1], tile, blend_extent)
                result_row.append(tile[:, :, :row_limit, :row_limit])
            result_rows.append(torch.cat(result_row, dim=3))

        enc = torch.cat(result_rows, dim=2)
        return enc

    # --- verbatim: AutoencoderKL.tiled_decode, lines 364-412 ---
    def tiled_decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | torch.Tensor:
        r"""
        Decode a batch of images using a tiled decoder.

        Args:
            z (`torch.Tensor`): Input batch of latent vectors.
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether or not to return a [`~models.vae.DecoderOutput`] instead of a plain tuple.

        Returns:
            [`~models.vae.DecoderOutput`] or `tuple`:
                If return_dict is True, a [`~models.vae.DecoderOutput`] is returned, otherwise a plain `tuple` is
                returned.
        """
        overlap_size = int(self.tile_latent_min_size * (1 - self.tile_overlap_factor))
        blend_extent = int(self.tile_sample_min_size * self.tile_overlap_factor)
        row_limit = self.tile_sample_min_size - blend_extent

        # Split z into overlapping 64x64 tiles and decode them separately.
        # The tiles have an overlap to avoid seams between tiles.
        rows = []
        for i in range(0, z.shape[2], overlap_size):
            row = []
            for j in range(0, z.shape[3], overlap_size):
                tile = z[:, :, i : i + self.tile_latent_min_size, j : j + self.tile_latent_min_size]
                if self.config.use_post_quant_conv:
                    tile = self.post_quant_conv(tile)
                decoded = self.decoder(tile)
                row.append(decoded)
            rows.append(row)
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j, tile in enumerate(row):
                # blend the above tile and the left tile
                # to the current tile and add the current tile to the result row
                if i > 0:
                    tile = self.blend_v(rows[i - 1][j], tile, blend_extent)
                if j > 0:
                    tile = self.blend_h(row[j - 1], tile, blend_extent)
                result_row.append(tile[:, :, :row_limit, :row_limit])
            result_rows.append(torch.cat(result_row, dim=3))

        dec = torch.cat(result_rows, dim=2)
        if not return_dict:
            return (dec,)

        return DecoderOutput(sample=dec)



def main():
    source = sys.argv[1] if len(sys.argv) > 1 else "/tmp/vae_tiles_onnx.safetensors"
    tensors, metadata = read_safetensors(source)
    factor = int(metadata["vae_factor"])
    tile = int(metadata["tile_sample_min_size"])
    # 2 ** (len(block_out_channels) - 1) is the VAE factor in diffusers.
    config = Config(tile, [0] * (factor.bit_length()))
    decoder, encoder = TileLookup(tensors, "decode"), TileLookup(tensors, "encode")
    vae = AutoencoderKLShim(config, encoder, decoder)
    assert vae.tile_latent_min_size * factor == vae.tile_sample_min_size

    with torch.no_grad():
        decoded = vae.tiled_decode(tensors["decode/z"], return_dict=False)[0]
        encoded = vae._tiled_encode(tensors["encode/pixels"])
    assert decoder.used == len(decoder.tiles) and encoder.used == len(encoder.tiles), (decoder.used, encoder.used)
    assert decoded.shape[2] == tensors["decode/z"].shape[2] * factor, decoded.shape
    assert encoded.shape[2] * factor == tensors["encode/pixels"].shape[2], encoded.shape

    out = {"decode/latents": tensors["decode/latents"], "decode/expected": decoded,
           "encode/pixels": tensors["encode/pixels"], "encode/expected": encoded}
    for k in tensors:
        if k.startswith("encode/tile_"):
            out[k] = tensors[k]
    metadata = dict(metadata, torch=torch.__version__, numpy=np.__version__,
                    diffusers="58eb52c0803ea9af3abec60841c2a093bdf1f951", tile_overlap_factor=str(vae.tile_overlap_factor))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vae_tiling_diffusers.safetensors")
    write_safetensors(path, out, metadata)
    print(f"wrote {path}: decode {list(decoded.shape)} from {decoder.used} tiles, encode {list(encoded.shape)} from {encoder.used} tiles")


if __name__ == "__main__":
    main()
