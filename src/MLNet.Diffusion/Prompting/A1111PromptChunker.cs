using System;
using System.Collections.Generic;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Prompting;

/// <summary>One text-encoder window: <c>[BOS] + 75 tokens + [EOS]</c> and one multiplier per token.</summary>
internal sealed class PromptChunk
{
    internal PromptChunk(int[] tokens, float[] multipliers)
    {
        Tokens = tokens;
        Multipliers = multipliers;
    }

    /// <summary>The ids, <see cref="ClipTokenizer.ModelMaxLength"/> of them (77).</summary>
    public int[] Tokens { get; }

    /// <summary>The weight of each token (1 for BOS, EOS and padding), as float32 like A1111's <c>torch.asarray</c>.</summary>
    public float[] Multipliers { get; }
}

/// <summary>A prompt cut into chunks, and A1111's token count (what its UI shows as "n/75").</summary>
/// <param name="Chunks">At least one chunk.</param>
/// <param name="TokenCount">75 per closed chunk plus the tokens of the last one.</param>
internal sealed record ChunkedPrompt(IReadOnlyList<PromptChunk> Chunks, int TokenCount);

/// <summary>
/// Cuts a prompt into CLIP windows exactly as A1111's <c>FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line</c>
/// (modules/sd_hijack_clip.py): the attention syntax is parsed (<see cref="A1111Attention"/>), each piece is
/// tokenized on its own, and tokens are laid out 75 to a chunk, each chunk then framed as
/// <c>[BOS] + tokens + [EOS]</c> and padded with EOS to 77.
/// </summary>
/// <remarks>
/// <para>
/// Rules, all A1111's: when a chunk is full (75) and the next token is not a comma, and a comma sits within the last
/// <c>comma_padding_backtrack</c> (20) tokens, the tokens after that comma move to the next chunk; a comma that
/// arrives as the 76th token starts the next chunk; a <c>BREAK</c> closes the chunk (a leading <c>BREAK</c> makes an
/// all-padding first chunk, <c>BREAK BREAK</c> an all-padding chunk between; a <c>BREAK</c> right after 75 tokens
/// adds none); an empty prompt is one all-padding chunk.
/// </para>
/// <para>
/// Each chunk is encoded separately and the states are concatenated along the token axis; the weights are
/// applied per chunk by <see cref="PromptWeighting.Apply"/>.
/// </para>
/// <para>
/// Textual inversion embeddings (the tokenizer's added tokens, <see cref="ClipTokenizer.WithAddedTokens"/>) are placed
/// as A1111 places them: an embedding's vectors are one unit that is never split across chunks. When a multi-vector
/// embedding does not fit in what is left of the chunk, the chunk is closed with padding and the embedding starts the
/// next one; the comma rule is checked first, as for any non-comma token, and only when the chunk is exactly full.
/// An embedding of more than 75 vectors is refused (A1111 would build a window the encoder cannot take).
/// </para>
/// </remarks>
internal sealed class A1111PromptChunker
{
    /// <summary>A1111's default <c>comma_padding_backtrack</c>.</summary>
    public const int DefaultCommaPaddingBacktrack = 20;

    private readonly ClipTokenizer _tokenizer;
    private readonly int _chunkLength;
    private readonly int _commaToken;
    private readonly int _commaPaddingBacktrack;

    /// <summary>Creates a chunker over <paramref name="tokenizer"/>'s vocabulary.</summary>
    /// <param name="tokenizer">The CLIP tokenizer (its comma token <c>,&lt;/w&gt;</c>, BOS and EOS are used).</param>
    /// <param name="commaPaddingBacktrack">A1111's <c>comma_padding_backtrack</c>; 0 turns the comma rule off.</param>
    public A1111PromptChunker(ClipTokenizer tokenizer, int commaPaddingBacktrack = DefaultCommaPaddingBacktrack)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfNegative(commaPaddingBacktrack);
        _tokenizer = tokenizer;
        _chunkLength = tokenizer.MaxContentLength;
        _commaToken = tokenizer.GetTokenId(",</w>");
        _commaPaddingBacktrack = commaPaddingBacktrack;
    }

    /// <summary>Tokens per chunk between BOS and EOS (75 for CLIP).</summary>
    public int ChunkLength => _chunkLength;

    /// <summary>A1111's <c>empty_chunk()</c>: <c>[BOS] + [EOS] × 76</c>, all weights 1 — what pads a shorter text of a batch.</summary>
    /// <returns>A new chunk.</returns>
    public PromptChunk EmptyChunk()
    {
        var tokens = new int[_chunkLength + 2];
        var multipliers = new float[_chunkLength + 2];
        Array.Fill(tokens, _tokenizer.EndTokenId);
        Array.Fill(multipliers, 1f);
        tokens[0] = _tokenizer.StartTokenId;
        return new PromptChunk(tokens, multipliers);
    }

    /// <summary>Cuts <paramref name="line"/> into chunks as A1111's <c>tokenize_line</c>.</summary>
    /// <param name="line">One prompt text (after AND splitting and prompt editing).</param>
    /// <param name="emphasis">With <see cref="PromptEmphasis.None"/> the text is not parsed at all (A1111 too).</param>
    /// <returns>The chunks and the token count.</returns>
    /// <exception cref="ArgumentException">An attention weight is not a number (see <see cref="A1111Attention"/>), or a
    /// textual inversion token stands for more vectors than one chunk holds.</exception>
    public ChunkedPrompt TokenizeLine(string line, PromptEmphasis emphasis)
    {
        ArgumentNullException.ThrowIfNull(line);
        List<WeightedText> parsed = emphasis == PromptEmphasis.None
            ? new List<WeightedText> { new(line, 1.0) }
            : A1111Attention.Parse(line);

        var state = new ChunkState(this);
        var runs = new List<(int Start, int Length)>();
        foreach (WeightedText piece in parsed)
        {
            if (piece.IsBreak)
            {
                state.NextChunk(isLast: false);
                continue;
            }

            runs.Clear();
            IReadOnlyList<int> tokens = _tokenizer.EncodeToIds(piece.Text, runs);
            float weight = (float)piece.Weight;
            int nextRun = 0;
            int position = 0;
            while (position < tokens.Count)
            {
                int token = tokens[position];
                if (token == _commaToken)
                {
                    state.LastComma = state.Tokens.Count;
                }
                else if (_commaPaddingBacktrack != 0 && state.Tokens.Count == _chunkLength && state.LastComma != -1
                    && state.Tokens.Count - state.LastComma <= _commaPaddingBacktrack)
                {
                    // The text after the last comma moves to the next chunk rather than being cut mid-phrase.
                    int breakLocation = state.LastComma + 1;
                    List<int> relocatedTokens = state.Tokens.GetRange(breakLocation, state.Tokens.Count - breakLocation);
                    List<float> relocatedMultipliers = state.Multipliers.GetRange(breakLocation, state.Multipliers.Count - breakLocation);
                    state.Tokens.RemoveRange(breakLocation, state.Tokens.Count - breakLocation);
                    state.Multipliers.RemoveRange(breakLocation, state.Multipliers.Count - breakLocation);
                    state.NextChunk(isLast: false);
                    state.Tokens.AddRange(relocatedTokens);
                    state.Multipliers.AddRange(relocatedMultipliers);
                }

                if (state.Tokens.Count == _chunkLength)
                {
                    state.NextChunk(isLast: false);
                }

                if (nextRun < runs.Count && runs[nextRun].Start == position)
                {
                    // A textual inversion embedding's vectors stay in one chunk: when they do not fit in what is left
                    // of this one, it is closed (padded) and they open the next (A1111's emb_len rule; the comma rule
                    // above has already run, and it acts only when the chunk is exactly full).
                    int length = runs[nextRun++].Length;
                    if (length > _chunkLength)
                    {
                        throw new ArgumentException(
                            $"Textual inversion token '{_tokenizer.GetToken(token)}' stands for {length} vectors, more than the {_chunkLength} tokens "
                            + "of one text-encoder window; it cannot be placed in a prompt.", nameof(line));
                    }

                    if (state.Tokens.Count + length > _chunkLength)
                    {
                        state.NextChunk(isLast: false);
                    }

                    for (int i = 0; i < length; i++)
                    {
                        state.Tokens.Add(tokens[position + i]);
                        state.Multipliers.Add(weight);
                    }

                    position += length;
                    continue;
                }

                state.Tokens.Add(token);
                state.Multipliers.Add(weight);
                position++;
            }
        }

        if (state.Tokens.Count > 0 || state.Chunks.Count == 0)
        {
            state.NextChunk(isLast: true);
        }

        return new ChunkedPrompt(state.Chunks, state.TokenCount);
    }

    /// <summary>
    /// A1111's <c>process_tokens</c> rule for encoders whose pad token differs from EOS (SD 2.x, SDXL's second
    /// encoder): every id after the chunk's first EOS becomes <paramref name="padTokenId"/>.
    /// </summary>
    /// <param name="chunkTokens">One chunk's ids, changed in place.</param>
    /// <param name="endTokenId">The EOS id.</param>
    /// <param name="padTokenId">The pad id; nothing changes when it equals <paramref name="endTokenId"/>.</param>
    public static void ApplyPadToken(Span<int> chunkTokens, int endTokenId, int padTokenId)
    {
        if (endTokenId == padTokenId)
        {
            return;
        }

        int end = chunkTokens.IndexOf(endTokenId);
        if (end >= 0)
        {
            chunkTokens.Slice(end + 1).Fill(padTokenId);
        }
    }

    private sealed class ChunkState(A1111PromptChunker owner)
    {
        public List<PromptChunk> Chunks { get; } = new();

        public List<int> Tokens { get; } = new();

        public List<float> Multipliers { get; } = new();

        public int TokenCount { get; private set; }

        public int LastComma { get; set; } = -1;

        // next_chunk(is_last): pad to 75 with EOS, frame with BOS/EOS, start an empty chunk.
        public void NextChunk(bool isLast)
        {
            int length = owner._chunkLength;
            TokenCount += isLast ? Tokens.Count : length;

            var tokens = new int[length + 2];
            var multipliers = new float[length + 2];
            tokens[0] = owner._tokenizer.StartTokenId;
            multipliers[0] = 1f;
            for (int i = 0; i < length + 1; i++)
            {
                bool content = i < Tokens.Count;
                tokens[i + 1] = content ? Tokens[i] : owner._tokenizer.EndTokenId;
                multipliers[i + 1] = content ? Multipliers[i] : 1f;
            }

            LastComma = -1;
            Chunks.Add(new PromptChunk(tokens, multipliers));
            Tokens.Clear();
            Multipliers.Clear();
        }
    }
}
