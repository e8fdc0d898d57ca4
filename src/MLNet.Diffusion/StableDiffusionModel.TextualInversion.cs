using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion;

// Textual inversion: the embeddings' tokens added to each tokenizer (ids from the vocabulary size on, as
// transformers' add_tokens) and their vectors appended to each text encoder's token-embedding table, in a session
// opened from the rewritten graph (TokenEmbeddingGraph) and cached per (encoder, embedding set) beside the weight
// variants; WithTextualInversions chooses the set (diffusers' load_textual_inversion, without changing this model).
public sealed partial class StableDiffusionModel
{
    // This model's textual inversions (their sessions live in _shared.Variants); null: none.
    private readonly TextualInversionSet? _inversions;

    /// <summary>The textual inversion embeddings this model's tokenizers and text encoders carry; empty when none.</summary>
    public IReadOnlyList<TextualInversion> TextualInversions => _inversions?.Embeddings ?? Array.Empty<TextualInversion>();

    /// <summary>
    /// A model whose tokenizer(s) know the tokens of <paramref name="embeddings"/> and whose text encoder(s) map them to the
    /// embeddings' vectors (replacing this model's textual inversions, if any; none gives the model without them), as
    /// diffusers' <c>load_textual_inversion</c> does: the tokens get the ids after the vocabulary in the order given (a
    /// multi-vector embedding <c>tok</c> adds <c>tok</c>, <c>tok_1</c>, …), are found in a prompt before CLIP's BPE, and
    /// <c>tok</c> stands for all its vectors. The new model shares every other session and this model's LoRAs; the text
    /// encoder sessions with the taller table are cached per embedding set (and, for an encoder this model's LoRAs change,
    /// opened with the LoRAs' merged weights too, so LoRAs and embeddings combine in either order). Dispose it when done
    /// (in any order with this model).
    /// </summary>
    /// <remarks>
    /// SD 1.x/2.x models take one-encoder files (diffusers, A1111); SDXL models take <c>clip_l</c>/<c>clip_g</c> files (the
    /// refiner, whose only encoder is <c>text_encoder_2</c>, uses <c>clip_g</c>). A pipeline that uses textual inversions
    /// cannot be saved yet (<c>mlContext.Model.Save</c> refuses it: a loaded pipeline would run without them).
    /// </remarks>
    /// <param name="embeddings">The embeddings, from <see cref="TextualInversion.Load"/>.</param>
    /// <exception cref="ArgumentException">Two embeddings add the same token, or a token is already in the vocabulary.</exception>
    /// <exception cref="InvalidDataException">An embedding's width differs from its text encoder's (the message names the file,
    /// the tensor, its shape and the encoder's width), its layout does not fit the model (an SDXL file on SD 1.x, or the other
    /// way round), or the text encoder's token-embedding table cannot be found.</exception>
    /// <exception cref="InvalidOperationException">The model has no text encoder (unconditional).</exception>
    /// <exception cref="NotSupportedException">This model's LoRAs change a text encoder's token-embedding table (no LoRA format
    /// targets it; LoRAs of the encoder's attention and MLP weights combine with embeddings).</exception>
    public StableDiffusionModel WithTextualInversions(params TextualInversion[] embeddings) => WithTextualInversions((IEnumerable<TextualInversion>)embeddings);

    /// <inheritdoc cref="WithTextualInversions(TextualInversion[])"/>
    public StableDiffusionModel WithTextualInversions(IEnumerable<TextualInversion> embeddings)
    {
        ArgumentNullException.ThrowIfNull(embeddings);
        ThrowIfDisposed();
        var list = new List<TextualInversion>();
        var tokens = new HashSet<string>(StringComparer.Ordinal);
        foreach (var embedding in embeddings)
        {
            if (embedding is null)
                throw new ArgumentException("The textual inversions contain null.", nameof(embeddings));
            foreach (string token in embedding.Tokens)
            {
                if (!tokens.Add(token))
                    throw new ArgumentException($"Two textual inversions add token '{token}' ('{embedding.Path}' and an earlier one); pass a token to TextualInversion.Load to rename one.", nameof(embeddings));
            }
            list.Add(embedding);
        }
        if (!Info.IsConditional)
            throw NotConditional("text encoder to add textual inversions to");
        var set = list.Count == 0 ? null : BuildInversions(list);
        LoraSessionSet? loras = _loras is null ? null : _shared.Loras.Acquire(_loras.Set);
        try
        {
            if (set is not null)
                OpenInversionEncoders(set, loras);
            return new StableDiffusionModel(this, loras, set);
        }
        catch
        {
            if (loras is not null)
                _shared.Loras.Release(loras);
            throw;
        }
    }

    /// <summary>
    /// Opens (or finds cached) every text encoder session <paramref name="inversions"/> needs beside <paramref name="loras"/>,
    /// before a model is built on them: the constructor then only looks them up, and a bad embedding or LoRA fails here.
    /// </summary>
    private void OpenInversionEncoders(TextualInversionSet inversions, LoraSessionSet? loras)
    {
        foreach (var encoder in inversions.Encoders)
            InversionSession(encoder, loras);
    }

    private TextEncoderBinding[] BindInversions(TextEncoderBinding[] bindings, TextualInversionSet? inversions, LoraSessionSet? loras)
    {
        if (inversions is null)
            return bindings;
        var bound = new TextEncoderBinding[bindings.Length];
        for (int i = 0; i < bound.Length; i++)
            bound[i] = bindings[i] with { Encoder = InversionSession(inversions.Encoders[i], loras), Tokenizer = inversions.Tokenizers[i] };
        return bound;
    }

    /// <summary>
    /// The session of one text encoder with the embeddings' rows, and with the LoRA set's merged weights when the set changes
    /// that encoder. Without such a LoRA it is cached per embedding set beside the weight variants; with one, it is cached in
    /// the LoRA set's entry of the LoRA cache (closed when that set is evicted, its bytes counted in the cache's budget), since
    /// a row's LoRA tags may name many sets.
    /// </summary>
    private OnnxComponent InversionSession(InversionEncoder encoder, LoraSessionSet? loras)
    {
        var loraComponent = encoder.Component == ModelFolder.TextEncoder2 ? LoraComponent.TextEncoder2 : LoraComponent.TextEncoder;
        bool loraChangesIt = loras is not null && (loraComponent == LoraComponent.TextEncoder ? loras.TextEncoder : loras.TextEncoder2) is not null;
        if (loraChangesIt)
        {
            ThrowIfDisposed();
            return loras!.GetOrAddWithInversions(encoder.Component, encoder.Id, () =>
            {
                string id = encoder.Id + "+lora-" + loras.Set.Id;
                var session = OpenWithInversions(encoder, loras.Set, loraComponent, id, out long bytes);
                return (session, bytes);
            });
        }

        lock (_shared.Variants)
        {
            ThrowIfDisposed();
            if (_shared.Variants.TryGetValue((encoder.Component, encoder.Id), out var cached))
                return cached;
            var opened = OpenWithInversions(encoder, null, loraComponent, encoder.Id, out _);
            _shared.Variants.Add((encoder.Component, encoder.Id), opened);
            return opened;
        }
    }

    /// <summary>
    /// The tokenizer of <paramref name="component"/> for a model with <paramref name="inversions"/>: the set's, else the
    /// folder's (a model without textual inversions derived from one with them gets the folder's back).
    /// </summary>
    private ClipTokenizer InversionTokenizer(string component, TextualInversionSet? inversions, ClipTokenizer fallback)
    {
        var bindings = _shared.TextEncoderBindings;
        for (int i = 0; i < bindings.Length; i++)
        {
            if (bindings[i].Encoder.Name == component)
                return inversions?.Tokenizers[i] ?? bindings[i].Tokenizer;
        }
        return fallback;
    }

    /// <summary>Per text encoder (in binding order): the vectors for it and the tokenizer with the tokens (sessions open later).</summary>
    private TextualInversionSet BuildInversions(List<TextualInversion> embeddings)
    {
        bool xl = Info.Kind is ModelKind.StableDiffusionXL or ModelKind.StableDiffusionXLRefiner;
        var bindings = _shared.TextEncoderBindings;
        var encoders = new InversionEncoder[bindings.Length];
        var tokenizers = new ClipTokenizer[bindings.Length];
        var all = embeddings.ToArray();
        for (int e = 0; e < bindings.Length; e++)
        {
            string component = bindings[e].Encoder.Name;
            var tensors = new EmbeddingTensor[embeddings.Count];
            var names = new List<string>();
            int vectors = 0;
            for (int k = 0; k < embeddings.Count; k++)
            {
                var embedding = embeddings[k];
                bool xlFile = embedding.Layout == TextualInversionLayout.StableDiffusionXL;
                if (xl != xlFile)
                    throw new InvalidDataException(xl
                        ? $"Textual inversion '{embedding.Path}' has one set of vectors ('{embedding.First.Key}' [{string.Join(",", embedding.First.Shape)}], an SD 1.x/2.x embedding); "
                            + "an SDXL model needs 'clip_l' and 'clip_g' vectors for its two text encoders."
                        : $"Textual inversion '{embedding.Path}' is an SDXL embedding ('clip_l' and 'clip_g'); model '{Directory}' is {ModelFolder.Describe(Info.Kind)} with one text encoder.");
                tensors[k] = !xl || component == ModelFolder.TextEncoder ? embedding.First : embedding.Second!;
                names.AddRange(embedding.Tokens);
                vectors += embedding.VectorCount;
            }
            int firstId = bindings[e].Tokenizer.VocabularySize;
            tokenizers[e] = bindings[e].Tokenizer.WithAddedTokens(names);
            encoders[e] = new InversionEncoder(component, firstId, all, tensors, vectors, "ti-" + HashInversions(firstId, embeddings, tensors));
        }
        return new TextualInversionSet(all, encoders, tokenizers);
    }

    /// <summary>
    /// Opens <paramref name="encoder"/>'s text encoder from its rewritten graph (the token table with the embeddings' rows)
    /// and, when <paramref name="lora"/> is given, with the LoRA set merged into that encoder as replaced initializers: the
    /// rewrite keeps every other initializer's name and its external data, so the LoRA's names still apply.
    /// </summary>
    private OnnxComponent OpenWithInversions(InversionEncoder encoder, LoraSet? lora, LoraComponent loraComponent, string id, out long bytes)
    {
        string component = encoder.Component;
        string path = ModelFolder.ModelPath(Directory, component);
        var reader = OnnxModelReader.Open(path);
        var graph = TokenEmbeddingGraph.Find(reader);
        if (graph.Rows < encoder.FirstId)
            throw new InvalidDataException($"Text encoder '{path}': its token-embedding table '{graph.Table.Name}' has {graph.Rows} rows, fewer than the tokenizer's {encoder.FirstId} tokens.");
        var rows = new float[checked(encoder.Vectors * graph.Width)];
        int row = 0;
        for (int k = 0; k < encoder.Embeddings.Length; k++)
        {
            var tensor = encoder.Tensors[k];
            if (tensor.Width != graph.Width)
                throw new InvalidDataException($"Textual inversion '{encoder.Embeddings[k].Path}': tensor '{tensor.Key}' has shape [{string.Join(",", tensor.Shape)}], vectors {tensor.Width} wide; "
                    + $"text encoder '{component}' embeds tokens in {graph.Width} ('{graph.Table.Name}' is [{string.Join(",", graph.Table.Dims)}] in '{path}').");
            var values = encoder.Embeddings[k].ValuesOf(tensor);
            values.CopyTo(rows.AsSpan(row * graph.Width));
            row += encoder.Embeddings[k].VectorCount;
        }

        WeightVariant? variant = lora is null ? null : MergeTextEncoderLora(lora, loraComponent, id);
        try
        {
            if (variant is not null)
            {
                CheckVariant(component, variant);
                foreach (var (name, _, _) in variant.Describe())
                {
                    if (name == graph.Table.Name)
                        throw new NotSupportedException($"LoRA set {lora!.Entries[0].Path}, … changes '{name}', the token-embedding table of '{path}', which textual inversion replaces by a taller one; "
                            + "a LoRA of the token embeddings cannot be combined with textual inversions.");
                }
            }
            byte[] model = graph.WithRows(encoder.FirstId, encoder.Vectors, rows);
            bytes = LoraGraphReader.WeightBytes(reader);
            return OpenSession(component, variant, model, id);
        }
        finally
        {
            // The session's lease keeps the merged weights alive.
            variant?.Dispose();
        }
    }

    /// <summary>The set's key: the first id and every token and vector (two files with the same vectors share a session).</summary>
    private static string HashInversions(int firstId, List<TextualInversion> embeddings, EmbeddingTensor[] tensors)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(BitConverter.GetBytes(firstId));
        for (int k = 0; k < embeddings.Count; k++)
        {
            foreach (string token in embeddings[k].Tokens)
            {
                sha.AppendData(Encoding.UTF8.GetBytes(token));
                sha.AppendData([0]);
            }
            sha.AppendData(MemoryMarshal.AsBytes(embeddings[k].ValuesOf(tensors[k])));
        }
        return Convert.ToHexString(sha.GetHashAndReset(), 0, 12).ToLowerInvariant();
    }

    /// <summary>The embeddings of a model and, per text encoder in binding order, what its session is built from and its tokenizer.</summary>
    private sealed record TextualInversionSet(TextualInversion[] Embeddings, InversionEncoder[] Encoders, ClipTokenizer[] Tokenizers);

    /// <summary>
    /// One text encoder's share of a textual inversion set: the rows to append from id <paramref name="FirstId"/> on (each
    /// embedding's tensor for this encoder, <paramref name="Vectors"/> in all) and the set's key <paramref name="Id"/>.
    /// </summary>
    private sealed record InversionEncoder(string Component, int FirstId, TextualInversion[] Embeddings, EmbeddingTensor[] Tensors, int Vectors, string Id);
}
