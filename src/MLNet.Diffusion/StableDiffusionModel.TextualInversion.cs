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
    /// encoder sessions with the taller table are cached per embedding set. Dispose it when done (in any order with this
    /// model).
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
    /// <exception cref="NotSupportedException">This model's LoRAs change a text encoder (the two cannot be combined yet).</exception>
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
        if (list.Count > 0)
            RefuseTextEncoderLorasWithInversions(_loras);
        var set = list.Count == 0 ? null : BuildInversions(list);
        LoraSessionSet? loras = _loras is null ? null : _shared.Loras.Acquire(_loras.Set);
        try
        {
            return new StableDiffusionModel(this, loras, set);
        }
        catch
        {
            if (loras is not null)
                _shared.Loras.Release(loras);
            throw;
        }
    }

    /// <summary>A LoRA on a text encoder replaces its weights by name in the file's graph; the rewritten graph is another one.</summary>
    private static void RefuseTextEncoderLorasWithInversions(LoraSessionSet? loras)
    {
        if (loras is not null && (loras.TextEncoder is not null || loras.TextEncoder2 is not null))
            throw new NotSupportedException($"LoRAs that change a text encoder ({loras.Set.Entries[0].Path}, …) cannot be combined with textual inversions yet; "
                + "use LoRAs that change only the UNet, or no textual inversion.");
    }

    private TextEncoderBinding[] BindInversions(TextEncoderBinding[] bindings, TextualInversionSet? inversions, LoraSessionSet? loras)
    {
        if (inversions is null || (loras is not null && (loras.TextEncoder is not null || loras.TextEncoder2 is not null)))
            return bindings;
        var bound = new TextEncoderBinding[bindings.Length];
        for (int i = 0; i < bound.Length; i++)
            bound[i] = bindings[i] with { Encoder = inversions.Encoders[i], Tokenizer = inversions.Tokenizers[i] };
        return bound;
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

    /// <summary>Per text encoder (in binding order): the vectors for it, the tokenizer with the tokens, the session with the rows.</summary>
    private TextualInversionSet BuildInversions(List<TextualInversion> embeddings)
    {
        bool xl = Info.Kind is ModelKind.StableDiffusionXL or ModelKind.StableDiffusionXLRefiner;
        var bindings = _shared.TextEncoderBindings;
        var encoders = new OnnxComponent[bindings.Length];
        var tokenizers = new ClipTokenizer[bindings.Length];
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
            tokenizers[e] = bindings[e].Tokenizer.WithAddedTokens(names);
            encoders[e] = OpenWithInversions(component, bindings[e].Tokenizer.VocabularySize, embeddings, tensors, vectors);
        }
        return new TextualInversionSet(embeddings.ToArray(), encoders, tokenizers);
    }

    /// <summary>The text encoder <paramref name="component"/> with the vectors at ids <paramref name="firstId"/>…, cached per set.</summary>
    private OnnxComponent OpenWithInversions(string component, int firstId, List<TextualInversion> embeddings, EmbeddingTensor[] tensors, int vectors)
    {
        string id = "ti-" + HashInversions(firstId, embeddings, tensors);
        lock (_shared.Variants)
        {
            ThrowIfDisposed();
            if (_shared.Variants.TryGetValue((component, id), out var cached))
                return cached;
            string path = ModelFolder.ModelPath(Directory, component);
            var graph = TokenEmbeddingGraph.Find(OnnxModelReader.Open(path));
            if (graph.Rows < firstId)
                throw new InvalidDataException($"Text encoder '{path}': its token-embedding table '{graph.Table.Name}' has {graph.Rows} rows, fewer than the tokenizer's {firstId} tokens.");
            var rows = new float[checked(vectors * graph.Width)];
            int row = 0;
            for (int k = 0; k < embeddings.Count; k++)
            {
                var tensor = tensors[k];
                if (tensor.Width != graph.Width)
                    throw new InvalidDataException($"Textual inversion '{embeddings[k].Path}': tensor '{tensor.Key}' has shape [{string.Join(",", tensor.Shape)}], vectors {tensor.Width} wide; "
                        + $"text encoder '{component}' embeds tokens in {graph.Width} ('{graph.Table.Name}' is [{string.Join(",", graph.Table.Dims)}] in '{path}').");
                var values = embeddings[k].ValuesOf(tensor);
                values.CopyTo(rows.AsSpan(row * graph.Width));
                row += embeddings[k].VectorCount;
            }
            byte[] model = graph.WithRows(firstId, vectors, rows);
            var opened = OpenSession(component, null, model, id);
            _shared.Variants.Add((component, id), opened);
            return opened;
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

    /// <summary>The embeddings of a model and, per text encoder in binding order, its session and tokenizer.</summary>
    private sealed record TextualInversionSet(TextualInversion[] Embeddings, OnnxComponent[] Encoders, ClipTokenizer[] Tokenizers);
}
