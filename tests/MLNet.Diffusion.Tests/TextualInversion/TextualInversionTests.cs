using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Google.Protobuf;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Onnx.Protobuf;
using MLNet.Diffusion.Tests.SafeTensors;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.TextualInversion;

/// <summary>
/// Textual inversion on the shared tiny-sd export (random weights, the real 49408-token CLIP vocabulary): an embedding
/// whose vectors are rows of the text encoder's own token-embedding table must give exactly the states of the tokens
/// those rows belong to — the strongest check that the token reaches the right id and the id the right row, without a
/// reference run (the equality is what diffusers' load_textual_inversion gives by construction: the vector is written
/// into the row the new id indexes).
/// </summary>
[TestClass]
public sealed class TextualInversionTests
{
    internal sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;
    }

    private static readonly List<string> s_files = new();

    [ClassCleanup]
    public static void DeleteFiles()
    {
        foreach (string file in s_files)
        {
            if (File.Exists(file))
                File.Delete(file);
        }
    }

    internal static string Write(string name, Dictionary<string, SafeTensorsWriter.Entry> tensors)
    {
        string folder = PersistenceRoundTrip.TempFile("ti");
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, name);
        File.WriteAllBytes(path, SafeTensorsWriter.Build(tensors));
        s_files.Add(path);
        return path;
    }

    /// <summary>Rows of a text encoder's token-embedding table, found the way the library finds it (traced from input_ids).</summary>
    internal static float[] Rows(string modelFolder, string component, params int[] ids)
    {
        var reader = OnnxModelReader.Open(ModelFolder.ModelPath(modelFolder, component));
        var graph = TokenEmbeddingGraph.Find(reader);
        float[] table = reader.ReadSingles(graph.Table.Name);
        var rows = new float[ids.Length * graph.Width];
        for (int i = 0; i < ids.Length; i++)
            table.AsSpan(ids[i] * graph.Width, graph.Width).CopyTo(rows.AsSpan(i * graph.Width));
        return rows;
    }

    internal static float[][] Encode(StableDiffusionModel model, string column, params string[] prompts)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(prompts.Select(p => new Row { Prompt = p }).ToArray());
        var result = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt").Fit(data).Transform(data);
        return result.GetColumn<VBuffer<float>>(column).Select(v => v.DenseValues().ToArray()).ToArray();
    }

    private static StableDiffusionModel LoadTinySd() => StableDiffusionModel.Load(new MLContext(seed: 1), SharedModels.Require("tiny-sd"));

    [TestMethod]
    public void AnEmbeddingEqualToATokensRowGivesThatTokensStates()
    {
        using var model = LoadTinySd();
        int cat = model.Tokenizer.GetTokenId("cat</w>");
        string path = Write("learned_embeds.safetensors", new() { ["<my-cat>"] = SafeTensorsWriter.F32([32], Rows(model.Directory, ModelFolder.TextEncoder, cat)) });
        var embedding = MLNet.Diffusion.TextualInversion.Load(path);
        Assert.AreEqual("<my-cat>", embedding.Token);
        Assert.AreEqual(TextualInversionLayout.Diffusers, embedding.Layout);
        Assert.AreEqual(1, embedding.VectorCount);

        using var withCat = model.WithTextualInversions(embedding);
        CollectionAssert.AreEqual(new[] { model.Tokenizer.VocabularySize }, withCat.Tokenizer.EncodeToIds("<my-cat>").ToArray(), "the new token gets the first id after the vocabulary");
        var expected = Encode(model, "Embeddings", "a photo of cat")[0];
        var actual = Encode(withCat, "Embeddings", "a photo of <my-cat>")[0];
        CollectionAssert.AreEqual(expected, actual, "the embedding's states equal the token whose row it holds");
        Assert.IsFalse(expected.SequenceEqual(Encode(model, "Embeddings", "a photo of <my-cat>")[0]), "without the embedding the text is BPE'd into other tokens");
        Assert.IsFalse(expected.SequenceEqual(Encode(withCat, "Embeddings", "a photo of dog")[0]), "another token gives other states");
        Assert.AreEqual(0, model.TextualInversions.Count, "the parent model is unchanged");
        Assert.AreEqual(1, withCat.TextualInversions.Count);
    }

    [TestMethod]
    public void ATwoVectorEmbeddingBehavesAsTwoTokens()
    {
        using var model = LoadTinySd();
        int red = model.Tokenizer.GetTokenId("red</w>"), circle = model.Tokenizer.GetTokenId("circle</w>");
        // A1111's layout: the token is the file name.
        string path = Write("redcircle.safetensors", new() { ["emb_params"] = SafeTensorsWriter.F32([2, 32], Rows(model.Directory, ModelFolder.TextEncoder, red, circle)) });
        var embedding = MLNet.Diffusion.TextualInversion.Load(path);
        Assert.AreEqual(TextualInversionLayout.A1111, embedding.Layout);
        CollectionAssert.AreEqual(new[] { "redcircle", "redcircle_1" }, embedding.Tokens.ToArray(), "diffusers' multi-vector naming");

        using var withEmbedding = model.WithTextualInversions(embedding);
        int first = model.Tokenizer.VocabularySize;
        CollectionAssert.AreEqual(new[] { first, first + 1 }, withEmbedding.Tokenizer.EncodeToIds("redcircle").ToArray(), "the token stands for both vectors");
        var expected = Encode(model, "Embeddings", "a red circle on white")[0];
        CollectionAssert.AreEqual(expected, Encode(withEmbedding, "Embeddings", "a redcircle on white")[0]);
        CollectionAssert.AreEqual(new[] { first + 1 }, withEmbedding.Tokenizer.EncodeToIds("redcircle_1").ToArray(), "a companion token written alone is itself (longest match first)");
    }

    [TestMethod]
    public void TheFlattenedStringToParamLayoutAndATokenOverrideAreRead()
    {
        string path = Write("style.safetensors", new() { ["string_to_param.*"] = SafeTensorsWriter.F16([3, 4], new float[12]) });
        var embedding = MLNet.Diffusion.TextualInversion.Load(path);
        Assert.AreEqual(TextualInversionLayout.A1111, embedding.Layout);
        Assert.AreEqual("style", embedding.Token);
        Assert.AreEqual(3, embedding.VectorCount);
        Assert.AreEqual(4, embedding.Width);
        Assert.AreEqual("<s>", MLNet.Diffusion.TextualInversion.Load(path, "<s>").Token);
    }

    [TestMethod]
    public void AVectorOfTheWrongWidthIsRefusedNamingFileKeyShapeAndTheEncodersWidth()
    {
        using var model = LoadTinySd();
        string path = Write("too-wide-emb.safetensors", new() { ["emb_params"] = SafeTensorsWriter.F32([2, 33], new float[66]) });
        var error = Assert.ThrowsExactly<InvalidDataException>(() => model.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(path)));
        foreach (string part in new[] { "too-wide-emb.safetensors", "'emb_params'", "[2,33]", "32" })
            StringAssert.Contains(error.Message, part);
    }

    [TestMethod]
    public void BadFilesAreRefusedWithClearMessages()
    {
        string pickle = Write("learned_embeds.bin", new() { ["<x>"] = SafeTensorsWriter.F32([4], new float[4]) });
        StringAssert.Contains(Assert.ThrowsExactly<NotSupportedException>(() => MLNet.Diffusion.TextualInversion.Load(pickle)).Message, "pickle");

        string three = Write("three.safetensors", new()
        {
            ["a"] = SafeTensorsWriter.F32([4], new float[4]),
            ["b"] = SafeTensorsWriter.F32([4], new float[4]),
            ["c"] = SafeTensorsWriter.F32([4], new float[4]),
        });
        var layout = Assert.ThrowsExactly<InvalidDataException>(() => MLNet.Diffusion.TextualInversion.Load(three));
        foreach (string part in new[] { "three.safetensors", "a, b, c", "clip_l" })
            StringAssert.Contains(layout.Message, part);

        string cube = Write("cube.safetensors", new() { ["<x>"] = SafeTensorsWriter.F32([1, 2, 4], new float[8]) });
        var shape = Assert.ThrowsExactly<InvalidDataException>(() => MLNet.Diffusion.TextualInversion.Load(cube));
        foreach (string part in new[] { "cube.safetensors", "'<x>'", "[1,2,4]" })
            StringAssert.Contains(shape.Message, part);

        string uneven = Write("uneven.safetensors", new() { ["clip_l"] = SafeTensorsWriter.F32([1, 4], new float[4]), ["clip_g"] = SafeTensorsWriter.F32([2, 4], new float[8]) });
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => MLNet.Diffusion.TextualInversion.Load(uneven)).Message, "as many vectors");

        Assert.ThrowsExactly<FileNotFoundException>(() => MLNet.Diffusion.TextualInversion.Load(Path.Combine(Path.GetTempPath(), "no-such-embedding.safetensors")));
    }

    [TestMethod]
    public void TokensThatClashOrLayoutsThatDoNotFitTheModelAreRefused()
    {
        using var model = LoadTinySd();
        string known = Write("known.safetensors", new() { ["<|endoftext|>"] = SafeTensorsWriter.F32([32], new float[32]) });
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => model.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(known))).Message, "already in the tokenizer's vocabulary");

        string one = Write("one.safetensors", new() { ["<t>"] = SafeTensorsWriter.F32([32], new float[32]) });
        string two = Write("two.safetensors", new() { ["<t>"] = SafeTensorsWriter.F32([32], new float[32]) });
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => model.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(one), MLNet.Diffusion.TextualInversion.Load(two))).Message, "'<t>'");

        string xl = Write("xl.safetensors", new() { ["clip_l"] = SafeTensorsWriter.F32([1, 32], new float[32]), ["clip_g"] = SafeTensorsWriter.F32([1, 32], new float[32]) });
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => model.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(xl))).Message, "SDXL embedding");
    }

    [TestMethod]
    public void SavingAPipelineWithTextualInversionsIsRefused()
    {
        using var model = LoadTinySd();
        string path = Write("saved.safetensors", new() { ["<s>"] = SafeTensorsWriter.F32([32], new float[32]) });
        using var withEmbedding = model.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(path));
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "<s>" } });
        var transformer = ml.Transforms.EncodePrompt(withEmbedding, "Embeddings", "Prompt").Fit(data);
        var error = Assert.ThrowsExactly<NotSupportedException>(() => ml.Model.Save(transformer, data.Schema, new MemoryStream()));
        StringAssert.Contains(error.Message, "textual inversions");
    }

    [TestMethod]
    public void ATextEncoderWithExternalDataWorksFromTheRewrittenGraph()
    {
        // The rewritten graph is loaded from bytes: its other weights must still be found in the model's folder. A copy
        // of tiny-sd whose text encoder keeps every weight over 1 KB in text_encoder/weights.pb (the exporter's form for
        // big models) must give the same states as the original.
        string source = SharedModels.Require("tiny-sd");
        string folder = PersistenceRoundTrip.TempFile("tiny-sd-external");
        CopyFolder(source, folder);
        try
        {
            MoveWeightsToExternalData(Path.Combine(folder, ModelFolder.TextEncoder));
            using var original = StableDiffusionModel.Load(new MLContext(seed: 1), source);
            using var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder);
            int cat = model.Tokenizer.GetTokenId("cat</w>");
            Assert.IsTrue(OnnxModelReader.Open(ModelFolder.ModelPath(folder, ModelFolder.TextEncoder)).Initializers.Any(i => i.IsExternal), "the copy keeps its weights outside the graph");
            string path = Write("learned_embeds.safetensors", new() { ["<my-cat>"] = SafeTensorsWriter.F32([32], Rows(folder, ModelFolder.TextEncoder, cat)) });
            using var withCat = model.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(path));
            CollectionAssert.AreEqual(Encode(original, "Embeddings", "a photo of cat")[0], Encode(withCat, "Embeddings", "a photo of <my-cat>")[0]);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [TestMethod]
    public void UnetLorasAndTextualInversionsCombineInEitherOrder()
    {
        using var model = LoadTinySd();
        int cat = model.Tokenizer.GetTokenId("cat</w>");
        string path = Write("learned_embeds.safetensors", new() { ["<my-cat>"] = SafeTensorsWriter.F32([32], Rows(model.Directory, ModelFolder.TextEncoder, cat)) });
        var embedding = MLNet.Diffusion.TextualInversion.Load(path);
        var lora = new LoraReference(Path.Combine(SharedModels.Require("tiny-sd-lora", "tiny_lora_kohya.safetensors"), "tiny_lora_kohya.safetensors"));
        using var withCat = model.WithTextualInversions(embedding);
        using var thenLora = withCat.WithLoras(lora);
        using var loraFirst = model.WithLoras(lora);
        using var thenCat = loraFirst.WithTextualInversions(embedding);
        float[] expected = Encode(model, "Embeddings", "a photo of cat")[0];
        foreach (var (name, m) in new[] { ("TI then LoRA", thenLora), ("LoRA then TI", thenCat) })
        {
            Assert.AreEqual(1, m.TextualInversions.Count, name);
            Assert.AreEqual(1, m.Loras.Count, name);
            CollectionAssert.AreEqual(expected, Encode(m, "Embeddings", "a photo of <my-cat>")[0], name);
        }
        using var none = thenCat.WithTextualInversions();
        Assert.AreEqual(0, none.TextualInversions.Count);
        Assert.AreEqual(-1, none.Tokenizer.GetTokenId("<my-cat>"), "no inversions: the folder's tokenizer again");
        Assert.AreEqual(1, none.Loras.Count);
    }

    /// <summary>
    /// A LoRA on the MLP of the text encoder's first block, in diffusers' key form over the module path this export's node
    /// names give (/transformer/resblocks/resblocks.0/mlp/c_fc/MatMul). Attention LoRAs are refused on this export (packed
    /// in_proj), so the MLP is the text-encoder LoRA tiny-sd supports.
    /// </summary>
    private static LoraReference TextEncoderMlpLora()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        const string module = "text_encoder.transformer.resblocks.resblocks.0.mlp.c_fc";
        Lora.LoraFiles.AddPair(tensors, module + ".lora.down.weight", module + ".lora.up.weight", [4, 32], [128, 4], 1);
        return new LoraReference(Write("te_lora.safetensors", tensors));
    }

    [TestMethod]
    public void TextEncoderLorasAndTextualInversionsCombineInEitherOrder()
    {
        using var model = LoadTinySd();
        var lora = TextEncoderMlpLora();
        int cat = model.Tokenizer.GetTokenId("cat</w>");
        var embedding = MLNet.Diffusion.TextualInversion.Load(
            Write("learned_embeds.safetensors", new() { ["<my-cat>"] = SafeTensorsWriter.F32([32], Rows(model.Directory, ModelFolder.TextEncoder, cat)) }));

        using var withLora = model.WithLoras(lora);
        Assert.AreEqual(0, withLora.UnmatchedLoraKeys.Count, string.Join("\n", withLora.UnmatchedLoraKeys));
        Assert.AreNotSame(model.TextEncoders[0].Encoder, withLora.TextEncoders[0].Encoder, "the LoRA changes the text encoder");
        float[][] loraOnly = Encode(withLora, "Embeddings", "a photo of cat", "a red circle, blurry");
        CollectionAssert.AreNotEqual(Encode(model, "Embeddings", "a photo of cat")[0], loraOnly[0], "the LoRA changes the states");

        using var loraThenTi = withLora.WithTextualInversions(embedding);
        using var withTi = model.WithTextualInversions(embedding);
        using var tiThenLora = withTi.WithLoras(lora);
        foreach (var (name, m) in new[] { ("LoRA then TI", loraThenTi), ("TI then LoRA", tiThenLora) })
        {
            Assert.AreEqual(1, m.Loras.Count, name);
            Assert.AreEqual(1, m.TextualInversions.Count, name);
            float[][] states = Encode(m, "Embeddings", "a photo of cat", "a red circle, blurry", "a photo of <my-cat>");
            // Without the token: the LoRA's states, bit for bit (the rewritten graph differs only in the token table).
            CollectionAssert.AreEqual(loraOnly[0], states[0], $"{name}: a prompt without the token");
            CollectionAssert.AreEqual(loraOnly[1], states[1], $"{name}: another prompt without the token");
            // With it: the states of the token whose row the embedding holds, through the LoRA'd encoder.
            CollectionAssert.AreEqual(loraOnly[0], states[2], $"{name}: the embedding equals cat's row");
        }
        Assert.AreSame(loraThenTi.TextEncoders[0].Encoder, tiThenLora.TextEncoders[0].Encoder, "one session per (LoRA set, embedding set), whichever came first");

        // Dropping either gives back the other's own session.
        using var noTi = loraThenTi.WithTextualInversions();
        Assert.AreSame(withLora.TextEncoders[0].Encoder, noTi.TextEncoders[0].Encoder);
        using var noLora = tiThenLora.WithLoras();
        Assert.AreSame(withTi.TextEncoders[0].Encoder, noLora.TextEncoders[0].Encoder);
        CollectionAssert.AreEqual(Encode(model, "Embeddings", "a photo of cat")[0], Encode(noLora, "Embeddings", "a photo of <my-cat>")[0]);
    }

    [TestMethod]
    public void OnSdxlATextEncoder2LoraCombinesWithEmbeddingsOnBothEncoders()
    {
        // The LoRA changes text_encoder_2 only (its first block's MLP, width 48 -> 192): encoder 1 takes the embedding's
        // clip_l row in a session without LoRA, encoder 2 its clip_g row in the session with the LoRA's weights. The key is
        // diffusers' form over this export's node names (/resblocks.0/mlp/c_fc/MatMul).
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), SharedModels.Require("tiny-sdxl"));
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        const string module = "text_encoder_2.resblocks.0.mlp.c_fc";
        Lora.LoraFiles.AddPair(tensors, module + ".lora.down.weight", module + ".lora.up.weight", [4, 48], [192, 4], 3);
        var lora = new LoraReference(Write("te2_lora.safetensors", tensors));
        int cat = model.Tokenizer.GetTokenId("cat</w>");
        int cat2 = model.Tokenizer2!.GetTokenId("cat</w>");
        float[] l = Rows(model.Directory, ModelFolder.TextEncoder, cat), g = Rows(model.Directory, ModelFolder.TextEncoder2, cat2);
        var embedding = MLNet.Diffusion.TextualInversion.Load(Write("xlcat.safetensors", new()
        {
            ["clip_l"] = SafeTensorsWriter.F32([1, l.Length], l),
            ["clip_g"] = SafeTensorsWriter.F32([1, g.Length], g),
        }), "<xl-cat>");

        using var withLora = model.WithLoras(lora);
        Assert.AreEqual(0, withLora.UnmatchedLoraKeys.Count, string.Join("\n", withLora.UnmatchedLoraKeys));
        Assert.AreSame(model.TextEncoders[0].Encoder, withLora.TextEncoders[0].Encoder, "the LoRA leaves text_encoder alone");
        float[][] loraOnly = Encode(withLora, "Embeddings", "a photo of cat", "a red circle");
        CollectionAssert.AreNotEqual(Encode(model, "Embeddings", "a photo of cat")[0], loraOnly[0], "the LoRA changes the states");
        using var withTi = model.WithTextualInversions(embedding);
        using var tiThenLora = withTi.WithLoras(lora);
        using var loraThenTi = withLora.WithTextualInversions(embedding);
        foreach (var (name, m) in new[] { ("LoRA then TI", loraThenTi), ("TI then LoRA", tiThenLora) })
        {
            float[][] states = Encode(m, "Embeddings", "a photo of cat", "a red circle", "a photo of <xl-cat>");
            CollectionAssert.AreEqual(loraOnly[0], states[0], name);
            CollectionAssert.AreEqual(loraOnly[1], states[1], name);
            CollectionAssert.AreEqual(loraOnly[0], states[2], name);
            Assert.AreSame(withTi.TextEncoders[0].Encoder, m.TextEncoders[0].Encoder, $"{name}: text_encoder is the embeddings-only session");
        }
        Assert.AreSame(loraThenTi.TextEncoders[1].Encoder, tiThenLora.TextEncoders[1].Encoder);
    }

    [TestMethod]
    public void ATextEncoderLoraCombinesWithTextualInversionOverExternalData()
    {
        // The LoRA's weight (c_fc, 16 KB) lives in weights.pb in this copy: the session from the rewritten graph's bytes
        // must take the replaced initializer and still read every other weight from the folder.
        string source = SharedModels.Require("tiny-sd");
        string folder = PersistenceRoundTrip.TempFile("tiny-sd-external-lora");
        CopyFolder(source, folder);
        try
        {
            MoveWeightsToExternalData(Path.Combine(folder, ModelFolder.TextEncoder));
            var lora = TextEncoderMlpLora();
            using var original = StableDiffusionModel.Load(new MLContext(seed: 1), source);
            using var originalLora = original.WithLoras(lora);
            using var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder);
            int cat = model.Tokenizer.GetTokenId("cat</w>");
            string path = Write("learned_embeds.safetensors", new() { ["<my-cat>"] = SafeTensorsWriter.F32([32], Rows(folder, ModelFolder.TextEncoder, cat)) });
            using var withLora = model.WithLoras(lora);
            using var both = withLora.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(path));
            float[] expected = Encode(originalLora, "Embeddings", "a photo of cat")[0];
            float[][] states = Encode(both, "Embeddings", "a photo of cat", "a photo of <my-cat>");
            CollectionAssert.AreEqual(expected, states[0]);
            CollectionAssert.AreEqual(expected, states[1]);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
        {
            // The shared exports are read-only; the copy must be writable (and deletable on Windows).
            string copy = Path.Combine(to, Path.GetFileName(file));
            File.Copy(file, copy);
            File.SetAttributes(copy, FileAttributes.Normal);
        }
        foreach (string sub in Directory.GetDirectories(from))
            CopyFolder(sub, Path.Combine(to, Path.GetFileName(sub)));
    }

    private static void MoveWeightsToExternalData(string componentFolder)
    {
        string modelPath = Path.Combine(componentFolder, "model.onnx");
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(modelPath));
        using var weights = new MemoryStream();
        foreach (var tensor in model.Graph.Initializer)
        {
            if (tensor.RawData.Length <= 1024)
                continue;
            long offset = weights.Position;
            tensor.RawData.WriteTo(weights);
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.pb" });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = tensor.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.RawData = ByteString.Empty;
        }
        File.WriteAllBytes(Path.Combine(componentFolder, "weights.pb"), weights.ToArray());
        File.WriteAllBytes(modelPath, model.ToByteArray());
    }

    [TestMethod]
    public void TheSdxlLayoutGoesToBothEncoders()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), SharedModels.Require("tiny-sdxl"));
        int cat = model.Tokenizer.GetTokenId("cat</w>");
        int cat2 = model.Tokenizer2!.GetTokenId("cat</w>");
        float[] l = Rows(model.Directory, ModelFolder.TextEncoder, cat), g = Rows(model.Directory, ModelFolder.TextEncoder2, cat2);
        string path = Write("xlcat.safetensors", new()
        {
            ["clip_l"] = SafeTensorsWriter.F32([1, l.Length], l),
            ["clip_g"] = SafeTensorsWriter.F32([1, g.Length], g),
        });
        var embedding = MLNet.Diffusion.TextualInversion.Load(path, "<xl-cat>");
        Assert.AreEqual(TextualInversionLayout.StableDiffusionXL, embedding.Layout);
        using var withCat = model.WithTextualInversions(embedding);
        CollectionAssert.AreEqual(Encode(model, "Embeddings", "a photo of cat")[0], Encode(withCat, "Embeddings", "a photo of <xl-cat>")[0]);

        string sd = Write("sd.safetensors", new() { ["<t>"] = SafeTensorsWriter.F32([l.Length], l) });
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => model.WithTextualInversions(MLNet.Diffusion.TextualInversion.Load(sd))).Message, "clip_g");
    }
}
