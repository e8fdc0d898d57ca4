using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.SafeTensors;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Persistence;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Pipeline;

/// <summary>
/// VAE tiling against diffusers' <c>AutoencoderKL.tiled_decode</c> / <c>_tiled_encode</c>. The fixture
/// Pipeline/Fixtures/vae_tiling_diffusers.safetensors was made in two steps (Pipeline/Fixtures/make_vae_tiling.py says
/// how): <see cref="WriteTheTileDump"/> ran tiny-sd's ONNX VAE on every tile of a 64×64 image, and the script ran
/// diffusers' own tiling code (copied verbatim) over those tile outputs, asserting that its tile windows are the
/// dumped tile inputs.
/// </summary>
[TestClass]
public sealed class VaeTilingTests
{
    /// <summary>The image side and the tile side of the fixture (pixels): 3×3 tiles, the last row and column short.</summary>
    private const int ImageSide = 64, TileSide = 32;

    private static string FixturePath => Path.Combine(AppContext.BaseDirectory, "Pipeline", "Fixtures", "vae_tiling_diffusers.safetensors");

    [TestMethod]
    public void TiledDecodeOfTinySdMatchesDiffusersTiledDecode()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), SharedModels.RequireTinySd());
        using var fixture = SafeTensorsFile.Open(FixturePath);
        float[] latents = fixture.ReadFloat32("decode/latents");
        float[] expected = fixture.ReadFloat32("decode/expected");
        int f = model.Info.VaeSpatialFactor, side = ImageSide / f;
        using var decoder = new LatentDecoder(model, VaeTiling.On, TileSide);
        Assert.AreEqual(TileSide, decoder.TileSize(side, side));
        float[] actual = decoder.Decode(latents, 1, side, side).ToArray();
        // Bit for bit on the machine that made the fixture; the margin is for ONNX Runtime's CPU kernels on other
        // instruction sets, which may round the tiles' decoder outputs differently.
        AssertClose(expected, actual, 1e-6f, "tiled decode");

        // The untiled decode differs near the seams: the tiles really were blended, not run whole.
        using var whole = new LatentDecoder(model, VaeTiling.Off);
        Assert.IsNull(whole.TileSize(side, side));
        float[] untiled = whole.Decode(latents, 1, side, side).ToArray();
        Assert.IsTrue(MaxDifference(untiled, actual) > 1e-3f, "tiled and untiled decodes of tiny-sd should differ at the seams");
    }

    [TestMethod]
    public void TiledEncodeBlendsTileOutputsAsDiffusersTiledEncode()
    {
        // tiny-sd's encoder samples inside its graph (RandomNormalLike), so its outputs change from run to run: the
        // blending is checked on the dumped tile outputs, looked up by their inputs.
        using var fixture = SafeTensorsFile.Open(FixturePath);
        float[] pixels = fixture.ReadFloat32("encode/pixels");
        float[] expected = fixture.ReadFloat32("encode/expected");
        var outputShape = fixture.Tensors["encode/expected"].Shape;
        int channels = (int)outputShape[1], latentSide = (int)outputShape[2];
        int tiles = 0;
        float[] actual = new float[expected.Length];
        VaeTiler.Run(pixels, 1, 3, ImageSide, ImageSide, TileSide, TileSide * latentSide / ImageSide, channels, (tile, h, w) =>
        {
            float[] input = tile.ToArray();
            string name = Tiles(fixture, "encode").Single(n => fixture.ReadFloat32(n + "/input").AsSpan().SequenceEqual(input));
            tiles++;
            return fixture.ReadFloat32(name + "/output");
        }, actual);
        Assert.AreEqual(9, tiles);
        // The same tile outputs and the same float32 arithmetic as PyTorch: bit for bit.
        AssertClose(expected, actual, 0f, "tiled encode");
    }

    [TestMethod]
    public void TilingOffAndSmallImagesUnderAutoKeepTheUntiledBits()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesModel.EnsureBuilt());
        int side = 56; // 448×448 pixels: under Auto's four tiles of 256×256 (the Shapes VAE's sample_size)
        float[] latents = Noise(4 * side * side, 3);
        using var raw = new LatentDecoder(model, VaeTiling.Off);
        float[] reference = raw.Run(latents, 1, side, side).ToArray();
        foreach (var mode in new[] { VaeTiling.Off, VaeTiling.Auto })
        {
            using var decoder = new LatentDecoder(model, mode);
            Assert.IsNull(decoder.TileSize(side, side), mode.ToString());
            CollectionAssert.AreEqual(reference, decoder.Decode(latents, 1, side, side).ToArray(), mode.ToString());
        }
        using var big = new LatentDecoder(model, VaeTiling.Off);
        Assert.IsNull(big.TileSize(256, 256), "Off never tiles");
    }

    [TestMethod]
    public void TiledDecodeOfABigShapesImageIsCloseToTheUntiledOne()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesModel.EnsureBuilt());
        int side = 128; // 1024×1024: Auto tiles it with the Shapes VAE's 256-pixel tiles
        float[] latents = Noise(2 * 4 * side * side, 5);
        using var tiled = new LatentDecoder(model, VaeTiling.Auto);
        Assert.AreEqual(256, tiled.TileSize(side, side));
        float[] a = tiled.Decode(latents, 2, side, side).ToArray();
        using var whole = new LatentDecoder(model, VaeTiling.Off);
        float[] b = whole.Decode(latents, 2, side, side).ToArray();
        Assert.AreEqual(b.Length, a.Length);
        // The Shapes VAE decodes each 8×8 patch from its own latent alone, so tiles agree where they overlap and the
        // blend only adds float rounding.
        Assert.IsTrue(MaxDifference(a, b) < 1e-5f, $"max difference {MaxDifference(a, b)}");
    }

    [TestMethod]
    public void TiledEncodeOfAShapesImageIsCloseToTheUntiledOne()
    {
        // Mean needs the distribution's parameters: the default Shapes encoder outputs an already sampled latent, which
        // ImageEncoder refuses for Mean since the noise-options change.
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), MLNet.Diffusion.Tests.ImageToImage.ShapesVariantModels.LatentParameters);
        int side = 640;
        float[] pixels = Noise(3 * side * side, 7);
        TensorPrimitives.Tanh(pixels, pixels);
        using var tiled = new ImageEncoder(model, LatentSampling.Mean, VaeTiling.On, 128);
        Assert.AreEqual(128, tiled.TileSize(side, side));
        using var whole = new ImageEncoder(model, LatentSampling.Mean, VaeTiling.Off);
        float[] a = new float[tiled.LatentLength(side, side)], b = new float[a.Length];
        tiled.Encode(pixels, 1, side, side, new long[] { 1 }, new long[] { 0 }, a);
        whole.Encode(pixels, 1, side, side, new long[] { 1 }, new long[] { 0 }, b);
        Assert.IsTrue(MaxDifference(a, b) < 1e-4f, $"max difference {MaxDifference(a, b)}");
    }

    [TestMethod]
    public void PlanFollowsTheModeAndTheTileSize()
    {
        Func<int> sd = () => 512;
        Assert.IsNull(VaeTiler.Plan(VaeTiling.On, null, sd, 8, 512, 512), "one tile");
        Assert.AreEqual(512, VaeTiler.Plan(VaeTiling.On, null, sd, 8, 512, 520));
        Assert.IsNull(VaeTiler.Plan(VaeTiling.Auto, null, sd, 8, 768, 768), "under four tiles");
        Assert.AreEqual(512, VaeTiler.Plan(VaeTiling.Auto, null, sd, 8, 1024, 1024));
        Assert.AreEqual(512, VaeTiler.Plan(VaeTiling.Auto, null, sd, 8, 512, 2048));
        Assert.IsNull(VaeTiler.Plan(VaeTiling.Off, 64, sd, 8, 4096, 4096));
        Assert.AreEqual(64, VaeTiler.Plan(VaeTiling.On, 64, sd, 8, 128, 128));
        Assert.IsNull(VaeTiler.Plan(VaeTiling.Auto, null, () => 40, 8, 4096, 4096), "a model tile that does not crop whole latents runs whole under Auto");
        var e = Assert.ThrowsExactly<ArgumentException>(() => VaeTiler.Plan(VaeTiling.On, null, () => 40, 8, 4096, 4096));
        StringAssert.Contains(e.Message, "40");
        var o = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => VaeTiler.Validate(VaeTiling.On, 48, 8));
        StringAssert.Contains(o.Message, "TileSize");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => VaeTiler.Validate((VaeTiling)7, null, 8));
    }

    [TestMethod]
    public void TileSizeComesFromTheVaeConfigThenTheUnetConfig()
    {
        string dir = Path.Combine(Path.GetTempPath(), "vae-tiling-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(Path.Combine(dir, "unet"));
            Directory.CreateDirectory(Path.Combine(dir, "vae_decoder"));
            Assert.AreEqual(512, VaeTiler.TileSampleSize(dir, 8));
            File.WriteAllText(Path.Combine(dir, "unet", "config.json"), "{\"sample_size\": 128}");
            Assert.AreEqual(1024, VaeTiler.TileSampleSize(dir, 8));
            File.WriteAllText(Path.Combine(dir, "vae_decoder", "config.json"), "{\"sample_size\": 768}");
            Assert.AreEqual(768, VaeTiler.TileSampleSize(dir, 8));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void StagesValidateAndPersistTheTilingOptions()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesModel.EnsureBuilt());
        var bad = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => model.MLContext.Transforms.DecodeLatents(model, options: new DecodeLatentsOptions { TileSize = 100 }));
        StringAssert.Contains(bad.Message, "TileSize");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => model.MLContext.Transforms.EncodeImage(model, options: new EncodeImageOptions { Tiling = (VaeTiling)9 }));

        var decode = DecodeLatentsStageDefinition.From(new LatentDecodingTransformer(model, "Image", "Latents", new DecodeLatentsOptions { Tiling = VaeTiling.On, TileSize = 64 }));
        Assert.AreEqual(VaeTiling.On, decode.Tiling);
        Assert.AreEqual(64, decode.TileSize);
        var encode = EncodeImageStageDefinition.From(new ImageEncodingTransformer(model, "Latents", "Image", new EncodeImageOptions { Tiling = VaeTiling.Off, TileSize = 128 }));
        Assert.AreEqual(VaeTiling.Off, encode.Tiling);
        Assert.AreEqual(128, encode.TileSize);
        // A record saved before the option existed has no field: it loads as Off, the behaviour it was saved with.
        Assert.AreEqual(VaeTiling.Off, new DecodeLatentsStageDefinition().Tiling);
        Assert.AreEqual(VaeTiling.Off, new EncodeImageStageDefinition().Tiling);
        Assert.AreEqual(VaeTiling.Auto, new DecodeLatentsOptions().Tiling);
    }

    /// <summary>
    /// Writes /tmp/vae_tiles_onnx.safetensors: tiny-sd's ONNX VAE outputs for every tile of a 64×64 decode and encode
    /// (the first step of the fixture; make_vae_tiling.py is the second).
    /// </summary>
    [TestMethod]
    [TestCategory("VaeTilingFixtureGeneration")]
    [WhenEnvironmentVariableIsOne(PersistenceFixtureGenerator.Switch)]
    public void WriteTheTileDump()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), SharedModels.RequireTinySd());
        int f = model.Info.VaeSpatialFactor, c = model.Info.LatentChannels, side = ImageSide / f, latentTile = TileSide / f;
        var tensors = new SortedDictionary<string, (long[] Shape, float[] Values)>(StringComparer.Ordinal);

        float[] latents = Noise(c * side * side, 21);
        float[] z = new float[latents.Length];
        TensorPrimitives.Divide(latents, model.Info.VaeScalingFactor, z);
        tensors["decode/latents"] = (new long[] { 1, c, side, side }, latents);
        tensors["decode/z"] = (new long[] { 1, c, side, side }, z);
        using (var decoder = new LatentDecoder(model, VaeTiling.Off))
        {
            foreach (var (i, j, h, w) in Windows(side, latentTile))
            {
                float[] tile = Window(latents, c, side, i, j, h, w);
                float[] zt = new float[tile.Length];
                TensorPrimitives.Divide(tile, model.Info.VaeScalingFactor, zt);
                tensors[$"decode/tile_{i}_{j}/input"] = (new long[] { 1, c, h, w }, zt);
                tensors[$"decode/tile_{i}_{j}/output"] = (new long[] { 1, 3, h * f, w * f }, decoder.Decode(tile, 1, h, w).ToArray());
            }
        }

        float[] pixels = Noise(3 * ImageSide * ImageSide, 22);
        TensorPrimitives.Tanh(pixels, pixels);
        tensors["encode/pixels"] = (new long[] { 1, 3, ImageSide, ImageSide }, pixels);
        using (var encoder = new ImageEncoder(model, LatentSampling.Mean, VaeTiling.Off))
        {
            foreach (var (i, j, h, w) in Windows(ImageSide, TileSide))
            {
                float[] tile = Window(pixels, 3, ImageSide, i, j, h, w);
                float[] output = encoder.RunEncoder(tile, 1, h, w).ToArray();
                tensors[$"encode/tile_{i}_{j}/input"] = (new long[] { 1, 3, h, w }, tile);
                tensors[$"encode/tile_{i}_{j}/output"] = (new long[] { 1, output.Length / (h / f * (w / f)), h / f, w / f }, output);
            }
        }
        WriteSafeTensors("/tmp/vae_tiles_onnx.safetensors", tensors, new Dictionary<string, string>
        {
            ["vae_factor"] = f.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["tile_sample_min_size"] = TileSide.ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
    }

    /// <summary>diffusers' windows: <c>for i in range(0, size, int(tile * 0.75))</c>, clipped at the edge.</summary>
    private static IEnumerable<(int I, int J, int H, int W)> Windows(int size, int tile)
    {
        int step = (int)(tile * 0.75);
        for (int i = 0; i < size; i += step)
        {
            for (int j = 0; j < size; j += step)
                yield return (i, j, Math.Min(tile, size - i), Math.Min(tile, size - j));
        }
    }

    private static float[] Window(float[] source, int channels, int side, int top, int left, int h, int w)
    {
        float[] result = new float[channels * h * w];
        for (int p = 0; p < channels; p++)
        {
            for (int y = 0; y < h; y++)
                source.AsSpan((p * side + top + y) * side + left, w).CopyTo(result.AsSpan((p * h + y) * w, w));
        }
        return result;
    }

    private static IEnumerable<string> Tiles(SafeTensorsFile file, string prefix) =>
        file.Tensors.Keys.Where(k => k.StartsWith(prefix + "/tile_", StringComparison.Ordinal) && k.EndsWith("/input", StringComparison.Ordinal))
            .Select(k => k[..^"/input".Length]);

    private static float[] Noise(int length, long seed)
    {
        float[] values = new float[length];
        new GaussianNoise(seed).NextGaussian(values);
        return values;
    }

    private static float MaxDifference(float[] a, float[] b)
    {
        float[] d = new float[a.Length];
        TensorPrimitives.Subtract(a, b, d);
        return TensorPrimitives.MaxMagnitude(d) is var m ? Math.Abs(m) : 0;
    }

    private static void AssertClose(float[] expected, float[] actual, float tolerance, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        for (int k = 0; k < expected.Length; k++)
        {
            if (Math.Abs(expected[k] - actual[k]) > tolerance)
                Assert.Fail($"{what}: value {k} is {actual[k]:R}, diffusers gives {expected[k]:R}.");
        }
    }

    private static void WriteSafeTensors(string path, SortedDictionary<string, (long[] Shape, float[] Values)> tensors, Dictionary<string, string> metadata)
    {
        var header = new Dictionary<string, object> { ["__metadata__"] = metadata };
        long offset = 0;
        foreach (var (name, (shape, values)) in tensors)
        {
            header[name] = new Dictionary<string, object> { ["dtype"] = "F32", ["shape"] = shape, ["data_offsets"] = new[] { offset, offset + (4L * values.Length) } };
            offset += 4L * values.Length;
        }
        byte[] text = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padded = (text.Length + 7) / 8 * 8;
        using var stream = File.Create(path);
        using var writer = new BinaryWriter(stream);
        writer.Write((ulong)padded);
        writer.Write(text);
        for (int k = text.Length; k < padded; k++)
            writer.Write((byte)' ');
        foreach (var (_, (_, values)) in tensors)
        {
            foreach (float v in values)
                writer.Write(v);
        }
    }
}
