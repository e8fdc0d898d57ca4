using System;
using System.Collections.Generic;
using System.IO;
using System.Numerics.Tensors;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion
{
    /// <summary>
    /// Whether the VAE runs over the whole image at once or over overlapping tiles whose seams are blended, as diffusers'
    /// <c>AutoencoderKL.enable_vae_tiling()</c> does: memory stays that of one tile whatever the image size, at the cost of
    /// small differences near the seams (each tile sees only its own neighbourhood).
    /// </summary>
    public enum VaeTiling
    {
        /// <summary>
        /// Tile images with at least four times the pixels of a tile (a tile is the VAE's <c>sample_size</c>: 1024×1024 and
        /// up for Stable Diffusion 1.x, 2048×2048 and up for SDXL); smaller images run whole, as with <see cref="Off"/>.
        /// </summary>
        Auto,

        /// <summary>Tile every image larger than one tile on either side (diffusers' <c>enable_vae_tiling()</c>).</summary>
        On,

        /// <summary>Never tile: the whole image in one VAE call.</summary>
        Off,
    }
}

namespace MLNet.Diffusion.Pipeline
{
    /// <summary>
    /// The tiling of diffusers' <c>AutoencoderKL.tiled_decode</c> / <c>_tiled_encode</c>
    /// (src/diffusers/models/autoencoders/autoencoder_kl.py, commit 58eb52c): tiles of <c>tile_sample_min_size</c> pixels
    /// (<c>tile_latent_min_size</c> latents) start every <c>int(tile · (1 − 0.25))</c> input positions; each tile's output is
    /// blended in place with the tile above (<c>blend_v</c>) and then with the tile to its left (<c>blend_h</c>) over
    /// <c>int(output tile · 0.25)</c> rows/columns with weights y/extent, and its top-left <c>output tile − extent</c> square
    /// is the tile's part of the result. Tiles are run and blended row by row, so only two rows of tile outputs are held.
    /// </summary>
    internal static class VaeTiler
    {
        /// <summary>diffusers' <c>tile_overlap_factor</c>.</summary>
        private const double OverlapFactor = 0.25;

        /// <summary>Stable Diffusion 1.x's VAE <c>sample_size</c>, for folders with neither a VAE nor a UNet config.</summary>
        private const int DefaultSampleSize = 512;

        /// <summary>
        /// The tile side in pixels: the VAE's <c>sample_size</c> (<c>vae_decoder/config.json</c>, then <c>vae_encoder/</c>), else the
        /// UNet's <c>sample_size</c> times the VAE factor (the two agree in every Stable Diffusion release), else 512.
        /// </summary>
        public static int TileSampleSize(string directory, int vaeFactor)
        {
            foreach (string folder in new[] { ModelFolder.VaeDecoder, ModelFolder.VaeEncoder })
            {
                if (ModelFolder.ReadNumber(Path.Combine(directory, folder, "config.json"), "sample_size") is double s && s >= 1)
                    return (int)s;
            }
            if (ModelFolder.ReadNumber(Path.Combine(directory, "unet", "config.json"), "sample_size") is double u && u >= 1)
                return (int)u * vaeFactor;
            return DefaultSampleSize;
        }

        /// <summary>
        /// The tile side in pixels when an image of <paramref name="height"/>×<paramref name="width"/> is tiled, or null when it
        /// runs whole. <paramref name="tileSize"/> overrides the model's (<see cref="TileSampleSize"/>).
        /// </summary>
        /// <exception cref="ArgumentException">The tile size does not give whole latent crops (with <see cref="VaeTiling.On"/>).</exception>
        public static int? Plan(VaeTiling mode, int? tileSize, Func<int> modelTileSize, int vaeFactor, int height, int width)
        {
            if (mode == VaeTiling.Off)
                return null;
            int tile = tileSize ?? modelTileSize();
            // A latent tile that is a multiple of 4 makes the overlap (¾ tile) and the crop (tile − ¼ tile) whole numbers of
            // latents in both spaces, so the crops add up to the image exactly; diffusers' own arithmetic otherwise yields
            // an image of another size.
            bool valid = tile % (4 * vaeFactor) == 0 && tile > 0;
            if (!valid)
            {
                if (mode == VaeTiling.On || tileSize is not null)
                    throw new ArgumentException($"The VAE tile size {tile} must be a positive multiple of {4 * vaeFactor} (4 × the VAE factor {vaeFactor}) to tile.");
                return null;
            }
            if (height <= tile && width <= tile)
                return null;
            if (mode == VaeTiling.Auto && (long)height * width < 4L * tile * tile)
                return null;
            return tile;
        }

        /// <summary>Checks a stage's tiling options: a defined mode, a tile size that is a positive multiple of 4 × the VAE factor.</summary>
        public static void Validate(VaeTiling tiling, int? tileSize, int vaeFactor)
        {
            if (!Enum.IsDefined(tiling))
                throw new ArgumentOutOfRangeException("Tiling", tiling, "Tiling must be Auto, On or Off.");
            if (tileSize is int t && (t < 4 * vaeFactor || t > 16384 || t % (4 * vaeFactor) != 0))
                throw new ArgumentOutOfRangeException("TileSize", t, $"TileSize must be a multiple of {4 * vaeFactor} (4 × the VAE factor {vaeFactor}) in [{4 * vaeFactor}, 16384].");
        }

        /// <summary>Runs one tile [count, inChannels, h, w] and returns its output [count, outChannels, h·s, w·s].</summary>
        public delegate ReadOnlyMemory<float> TileRunner(ReadOnlySpan<float> tile, int height, int width);

        /// <summary>
        /// Runs <paramref name="run"/> over the tiles of <paramref name="input"/> [count, inChannels, height, width] and blends the
        /// results into <paramref name="output"/> [count, outChannels, height·s, width·s], where s = outTile / inTile.
        /// </summary>
        /// <param name="input">The whole input.</param>
        /// <param name="count">Batch rows.</param>
        /// <param name="inChannels">Input channels.</param>
        /// <param name="height">Input height.</param>
        /// <param name="width">Input width.</param>
        /// <param name="inTile">The tile side in input positions (latents for decode, pixels for encode).</param>
        /// <param name="outTile">The tile side in output positions.</param>
        /// <param name="outChannels">Output channels (checked against every tile's output).</param>
        /// <param name="run">Runs the VAE on one tile.</param>
        /// <param name="output">The blended result.</param>
        public static void Run(ReadOnlySpan<float> input, int count, int inChannels, int height, int width, int inTile, int outTile, int outChannels,
            TileRunner run, Span<float> output)
        {
            int outHeight = Scale(height, inTile, outTile), outWidth = Scale(width, inTile, outTile);
            if (input.Length != count * inChannels * height * width)
                throw new ArgumentException($"Expected {count}×{inChannels}×{height}×{width} input values, got {input.Length}.", nameof(input));
            if (output.Length != count * outChannels * outHeight * outWidth)
                throw new ArgumentException($"Expected room for {count}×{outChannels}×{outHeight}×{outWidth} output values.", nameof(output));

            // tiled_decode: overlap_size = int(tile_latent_min_size * (1 - f)); blend_extent = int(tile_sample_min_size * f);
            // row_limit = tile_sample_min_size - blend_extent (and the same with the spaces swapped in _tiled_encode).
            int overlap = (int)(inTile * (1 - OverlapFactor));
            int blend = (int)(outTile * OverlapFactor);
            int rowLimit = outTile - blend;
            int planes = count * outChannels;

            var above = new List<Tile>();
            var current = new List<Tile>();
            float[] inTileBuffer = new float[count * inChannels * Math.Min(inTile, height) * Math.Min(inTile, width)];
            float[] weighted = new float[outTile];
            int oy = 0;
            for (int i = 0; i < height; i += overlap)
            {
                int th = Math.Min(inTile, height - i);
                int ox = 0, cropHeight = 0;
                for (int jIndex = 0, j = 0; j < width; jIndex++, j += overlap)
                {
                    int tw = Math.Min(inTile, width - j);
                    var slice = inTileBuffer.AsSpan(0, count * inChannels * th * tw);
                    CopyWindow(input, count * inChannels, height, width, i, j, th, tw, slice);
                    ReadOnlySpan<float> result = run(slice, th, tw).Span;
                    int oh = Scale(th, inTile, outTile), ow = Scale(tw, inTile, outTile);
                    if (result.Length != planes * oh * ow)
                        throw new InvalidOperationException($"The VAE returned {result.Length} values for a tile of {th}×{tw}; expected {count}×{outChannels}×{oh}×{ow}.");
                    // Reuse the buffer of the tile this one replaces two rows up (same column, so the same width).
                    float[] data = jIndex < current.Count && current[jIndex].Data.Length >= result.Length ? current[jIndex].Data : new float[result.Length];
                    result.CopyTo(data);
                    var tile = new Tile(data, oh, ow);
                    if (i > 0)
                        BlendVertical(above[jIndex], tile, planes, blend, weighted);
                    if (jIndex > 0)
                        BlendHorizontal(current[jIndex - 1], tile, planes, blend);
                    int ch = Math.Min(rowLimit, oh), cw = Math.Min(rowLimit, ow);
                    for (int p = 0; p < planes; p++)
                    {
                        for (int y = 0; y < ch; y++)
                            data.AsSpan((p * oh + y) * ow, cw).CopyTo(output.Slice((p * outHeight + oy + y) * outWidth + ox, cw));
                    }
                    ox += cw;
                    cropHeight = ch;
                    if (jIndex < current.Count)
                        current[jIndex] = tile;
                    else
                        current.Add(tile);
                }
                if (ox != outWidth)
                    throw new InvalidOperationException($"VAE tiling covered {ox} of {outWidth} output columns (tile {inTile}).");
                oy += cropHeight;
                (above, current) = (current, above);
            }
            if (oy != outHeight)
                throw new InvalidOperationException($"VAE tiling covered {oy} of {outHeight} output rows (tile {inTile}).");
        }

        private static int Scale(int size, int inTile, int outTile) => (int)((long)size * outTile / inTile);

        private static void CopyWindow(ReadOnlySpan<float> source, int planes, int height, int width, int top, int left, int h, int w, Span<float> destination)
        {
            for (int p = 0; p < planes; p++)
            {
                for (int y = 0; y < h; y++)
                    source.Slice((p * height + top + y) * width + left, w).CopyTo(destination.Slice((p * h + y) * w, w));
            }
        }

        /// <summary>
        /// diffusers' <c>blend_v(a, b, extent)</c>: extent = min(a.h, b.h, extent);
        /// b[y] = a[−extent + y]·(1 − y/extent) + b[y]·(y/extent). The weights are computed in double and used as float32, as
        /// PyTorch does with a Python scalar times a float32 tensor.
        /// </summary>
        private static void BlendVertical(Tile a, Tile b, int planes, int extent, float[] weighted)
        {
            extent = Math.Min(Math.Min(a.Height, b.Height), extent);
            int w = b.Width;
            for (int y = 0; y < extent; y++)
            {
                float keep = (float)(1 - (double)y / extent), take = (float)((double)y / extent);
                for (int p = 0; p < planes; p++)
                {
                    var from = a.Data.AsSpan((p * a.Height + a.Height - extent + y) * a.Width, w);
                    var row = b.Data.AsSpan((p * b.Height + y) * w, w);
                    var tmp = weighted.AsSpan(0, w);
                    TensorPrimitives.Multiply(from, keep, tmp);
                    // MultiplyAdd is (x·y) + addend, not fused: the same two roundings as PyTorch's a·w1 + b·w2.
                    TensorPrimitives.MultiplyAdd(row, take, tmp, row);
                }
            }
        }

        /// <summary>diffusers' <c>blend_h(a, b, extent)</c>: the same along the columns.</summary>
        private static void BlendHorizontal(Tile a, Tile b, int planes, int extent)
        {
            extent = Math.Min(Math.Min(a.Width, b.Width), extent);
            int h = b.Height;
            for (int x = 0; x < extent; x++)
            {
                float keep = (float)(1 - (double)x / extent), take = (float)((double)x / extent);
                for (int p = 0; p < planes; p++)
                {
                    for (int y = 0; y < h; y++)
                    {
                        int bi = (p * h + y) * b.Width + x;
                        b.Data[bi] = (a.Data[(p * a.Height + y) * a.Width + a.Width - extent + x] * keep) + (b.Data[bi] * take);
                    }
                }
            }
        }

        private readonly record struct Tile(float[] Data, int Height, int Width);
    }
}
