using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// The tokenizer of CLIP text encoders (Stable Diffusion 1.x and 2.x), reproducing OpenAI CLIP's
/// <c>simple_tokenizer.py</c> id for id: the reference clean-up (<c>whitespace_clean(basic_clean(text)).lower()</c>: ftfy's fixes, HTML unescaping, whitespace), CLIP's word
/// split, and byte-level BPE with the <c>&lt;/w&gt;</c> end-of-word suffix done by Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/>; then start, end and padding tokens to a fixed length.
/// </summary>
/// <remarks>
/// <para>
/// Why a wrapper rather than a configured <see cref="BpeTokenizer"/> alone (Microsoft.ML.Tokenizers 2.0.1):
/// its file-path factory cannot turn on <see cref="BpeOptions.ByteLevel"/>; <see cref="BpeOptions.Merges"/>
/// rejects the <c>#version</c> header and the loaders reject a stray trailing line, so merges are read here;
/// it has no ftfy/HTML/lower-case clean-up; no pre-tokenizer of its own follows CLIP's pattern over code points
/// (<see cref="ClipPreTokenizer"/>); its decoder drops <c>&lt;/w&gt;</c> instead of turning it into a space; and
/// it neither pads to a fixed length nor splits long prompts into windows.
/// </para>
/// <para>
/// Thread safety: instances are immutable after creation and every method may be called concurrently. The
/// only mutable state is <see cref="BpeTokenizer"/>'s word cache, which the library guards with a lock
/// (its internal <c>Cache&lt;TKey, TValue&gt;</c> takes a monitor on every read and write).
/// </para>
/// <para>Only load tokenizer files from trusted sources.</para>
/// </remarks>
public sealed class ClipTokenizer
{
    /// <summary>CLIP's start-of-text token.</summary>
    public const string DefaultStartToken = "<|startoftext|>";

    /// <summary>CLIP's end-of-text token (also SD 1.x's padding token).</summary>
    public const string DefaultEndToken = "<|endoftext|>";

    /// <summary>CLIP's context length: 75 prompt tokens between the start and end tokens.</summary>
    public const int DefaultModelMaxLength = 77;

    private const string EndOfWordSuffix = "</w>";

    private static readonly char[] s_byteToUnicode = BuildByteToUnicode();
    private static readonly Dictionary<char, byte> s_unicodeToByte = BuildUnicodeToByte();

    private readonly BpeTokenizer _bpe;
    private readonly string[] _idToToken;
    // Tokens added after the vocabulary (textual inversion), matched in the raw text before clean-up and BPE; null: none.
    private readonly AddedTokenTable? _added;

    private ClipTokenizer(BpeTokenizer bpe, string[] idToToken, int startId, int endId, int padId, int modelMaxLength, AddedTokenTable? added = null)
    {
        _bpe = bpe;
        _idToToken = idToToken;
        _added = added;
        StartTokenId = startId;
        EndTokenId = endId;
        PadTokenId = padId;
        ModelMaxLength = modelMaxLength;
    }

    /// <summary>The id of the start token (49406 for CLIP).</summary>
    public int StartTokenId { get; }

    /// <summary>The id of the end token (49407 for CLIP).</summary>
    public int EndTokenId { get; }

    /// <summary>The id written after the end token up to <see cref="ModelMaxLength"/> (49407 for SD 1.x, 0 for SD 2.x).</summary>
    public int PadTokenId { get; }

    /// <summary>The fixed sequence length, start and end tokens included (77 for CLIP).</summary>
    public int ModelMaxLength { get; }

    /// <summary>The number of prompt tokens that fit in one sequence: <see cref="ModelMaxLength"/> − 2.</summary>
    public int MaxContentLength => ModelMaxLength - 2;

    /// <summary>The number of entries in the vocabulary, added tokens included.</summary>
    public int VocabularySize => _idToToken.Length;

    /// <summary>The tokens added after the BPE vocabulary (<see cref="WithAddedTokens"/>), in id order; empty when none.</summary>
    public IReadOnlyList<string> AddedTokens => _added?.Tokens ?? Array.Empty<string>();

    /// <summary>
    /// A tokenizer that also knows <paramref name="tokens"/>, with ids from <see cref="VocabularySize"/> on in the order
    /// given, as Hugging Face's <c>tokenizer.add_tokens</c> does for textual inversion: an added token is found in the
    /// raw prompt (case-sensitive, leftmost and longest first) before CLIP's clean-up and BPE, which then run on the text
    /// between added tokens. A token <c>t</c> that has companions <c>t_1</c>, <c>t_2</c>, … among the added tokens stands
    /// for all of them (<c>t t_1 t_2 …</c>), as diffusers' <c>maybe_convert_prompt</c> expands a multi-vector embedding.
    /// This tokenizer is unchanged.
    /// </summary>
    /// <param name="tokens">The new tokens: not empty, not in the vocabulary, not already added, no duplicates.</param>
    /// <returns>The tokenizer with the added tokens.</returns>
    /// <exception cref="ArgumentException">A token is empty, already known, or given twice.</exception>
    public ClipTokenizer WithAddedTokens(IEnumerable<string> tokens)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        var all = new List<string>(AddedTokens);
        foreach (string token in tokens)
        {
            if (string.IsNullOrWhiteSpace(token))
                throw new ArgumentException("An added token must have a non-blank text.", nameof(tokens));
            if (_bpe.Vocabulary.ContainsKey(token))
                throw new ArgumentException($"Token '{token}' is already in the tokenizer's vocabulary; choose another token name.", nameof(tokens));
            if (all.Contains(token))
                throw new ArgumentException($"Token '{token}' is already added to the tokenizer; choose another token name.", nameof(tokens));
            all.Add(token);
        }

        int baseSize = _idToToken.Length - (_added?.Tokens.Count ?? 0);
        var idToToken = new string[baseSize + all.Count];
        Array.Copy(_idToToken, idToToken, baseSize);
        for (int i = 0; i < all.Count; i++)
            idToToken[baseSize + i] = all[i];
        return new ClipTokenizer(_bpe, idToToken, StartTokenId, EndTokenId, PadTokenId, ModelMaxLength, new AddedTokenTable(all, baseSize));
    }

    /// <summary>
    /// Create a <see cref="ClipTokenizer"/> from a Hugging Face tokenizer folder (the <c>tokenizer</c> folder of a
    /// Stable Diffusion model): <c>vocab.json</c> and <c>merges.txt</c>, and, when present,
    /// <c>special_tokens_map.json</c> / <c>tokenizer_config.json</c> for the start, end and padding tokens and
    /// <c>model_max_length</c>.
    /// </summary>
    /// <param name="tokenizerDirectory">The folder that holds the tokenizer files.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="ArgumentException"><paramref name="tokenizerDirectory"/> is null or empty.</exception>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException"><c>vocab.json</c> or <c>merges.txt</c> is missing.</exception>
    /// <exception cref="InvalidDataException">A file is malformed; the message names the file and the problem.</exception>
    /// <remarks>
    /// While a tokenizer built from the same vocabulary and merges bytes and the same options is alive in the process,
    /// it is returned again instead of being parsed anew (a model folder loaded twice, or folders sharing CLIP's files).
    /// </remarks>
    public static ClipTokenizer FromFolder(string tokenizerDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(tokenizerDirectory);
        if (!Directory.Exists(tokenizerDirectory))
        {
            throw new DirectoryNotFoundException($"Tokenizer folder '{tokenizerDirectory}' does not exist.");
        }

        string vocabPath = ClipTokenizerFiles.RequireFile(tokenizerDirectory, ClipTokenizerFiles.Vocabulary);
        string mergesPath = ClipTokenizerFiles.RequireFile(tokenizerDirectory, ClipTokenizerFiles.Merges);
        var options = ClipTokenizerFiles.ReadOptions(tokenizerDirectory);

        // A tokenizer built from the same bytes and options earlier in this process is reused (ClipTokenizerCache).
        byte[] vocabBytes = File.ReadAllBytes(vocabPath);
        byte[] mergesBytes = File.ReadAllBytes(mergesPath);
        string key = ClipTokenizerCache.Key(vocabBytes, mergesBytes, options);
        if (ClipTokenizerCache.TryGet(key, out ClipTokenizer cached))
        {
            return cached;
        }

        using var vocab = new MemoryStream(vocabBytes, writable: false);
        using var merges = new MemoryStream(mergesBytes, writable: false);
        ClipTokenizer tokenizer = Create(vocab, merges, options, vocabPath, mergesPath);
        ClipTokenizerCache.Add(key, tokenizer);
        return tokenizer;
    }

    /// <summary>
    /// Create a <see cref="ClipTokenizer"/> from the contents of <c>vocab.json</c> (token → id) and
    /// <c>merges.txt</c> (one "a b" pair per line, optional <c>#version</c> header).
    /// </summary>
    /// <param name="vocabJson">The vocabulary JSON; read to its end, not disposed.</param>
    /// <param name="merges">The merges text (UTF-8); read to its end, not disposed.</param>
    /// <param name="options">Special tokens and length; <see langword="null"/> for SD 1.x defaults.</param>
    /// <returns>The tokenizer.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="vocabJson"/> or <paramref name="merges"/> is null.</exception>
    /// <exception cref="ArgumentException">An option names a token absent from the vocabulary, or the length is below 3.</exception>
    /// <exception cref="InvalidDataException">The vocabulary or merges are malformed.</exception>
    public static ClipTokenizer Create(Stream vocabJson, Stream merges, ClipTokenizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(vocabJson);
        ArgumentNullException.ThrowIfNull(merges);
        return Create(vocabJson, merges, options ?? new ClipTokenizerOptions(), "vocab.json", "merges.txt");
    }

    private static ClipTokenizer Create(Stream vocabJson, Stream merges, ClipTokenizerOptions options, string vocabName, string mergesName)
    {
        if (options.ModelMaxLength < 3)
        {
            throw new ArgumentException(
                $"ModelMaxLength must be at least 3 (start, one token, end); got {options.ModelMaxLength}.", nameof(options));
        }

        Dictionary<string, int> vocab = ClipTokenizerFiles.ReadVocabulary(vocabJson, vocabName);
        string[] idToToken = ClipTokenizerFiles.BuildReverseVocabulary(vocab, vocabName);
        List<string> mergeList = ClipTokenizerFiles.ReadMerges(merges, mergesName, vocab);

        int startId = RequireToken(vocab, options.StartToken, nameof(options.StartToken), vocabName);
        int endId = RequireToken(vocab, options.EndToken, nameof(options.EndToken), vocabName);
        int padId = options.PadToken is null ? endId : RequireToken(vocab, options.PadToken, nameof(options.PadToken), vocabName);

        // Only start and end are special (split out whole, never BPE'd) — as in the reference, whose
        // pattern and cache know exactly these two; the pad token ("!" in SD 2.x) is ordinary text.
        var specialTokens = new Dictionary<string, int>(StringComparer.Ordinal)
        {
            [options.StartToken] = startId,
            [options.EndToken] = endId,
        };
        var bpeOptions = new BpeOptions(ToPairs(vocab))
        {
            Merges = mergeList,
            SpecialTokens = specialTokens,
            PreTokenizer = new ClipPreTokenizer([options.StartToken, options.EndToken]),
            ByteLevel = true,
            EndOfWordSuffix = EndOfWordSuffix,
        };

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(bpeOptions);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{vocabName}/{mergesName}: the BPE model rejected the files: {ex.Message}", ex);
        }

        return new ClipTokenizer(bpe, idToToken, startId, endId, padId, options.ModelMaxLength);
    }

    /// <summary>
    /// Encodes <paramref name="text"/> to BPE ids the way CLIP does — clean-up, lower case, word split, BPE —
    /// without start or end token and without truncation.
    /// </summary>
    /// <param name="text">The prompt; <see langword="null"/> or empty gives no ids.</param>
    /// <returns>The ids.</returns>
    public IReadOnlyList<int> EncodeToIds(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return Array.Empty<int>();
        }

        if (_added is not null)
        {
            return EncodeWithAddedTokens(text, _added, null);
        }

        return EncodeText(text);
    }

    /// <summary>
    /// <see cref="EncodeToIds(string?)"/>, also recording each added token found as one run of ids (its start in the
    /// result and its length: the expansion of a multi-vector embedding, <c>tok tok_1 …</c>, is one run), for chunkers
    /// that keep an embedding's vectors together as A1111 does.
    /// </summary>
    /// <param name="text">The prompt; <see langword="null"/> or empty gives no ids.</param>
    /// <param name="addedRuns">Receives the runs in order (it is not cleared).</param>
    /// <returns>The ids.</returns>
    internal IReadOnlyList<int> EncodeToIds(string? text, List<(int Start, int Length)> addedRuns)
    {
        if (string.IsNullOrEmpty(text))
        {
            return Array.Empty<int>();
        }

        return _added is null ? EncodeText(text) : EncodeWithAddedTokens(text, _added, addedRuns);
    }

    private IReadOnlyList<int> EncodeText(string text)
    {
        string cleaned = ClipTextCleaner.Clean(text);
        if (cleaned.Length == 0)
        {
            return Array.Empty<int>();
        }

        return _bpe.EncodeToIds(cleaned, considerPreTokenization: true, considerNormalization: false);
    }

    /// <summary>
    /// Splits the raw text on added tokens (as transformers' slow tokenizers split on their added-tokens trie) and encodes
    /// the text between them as usual; each added token contributes its id, or its expansion's ids.
    /// </summary>
    private List<int> EncodeWithAddedTokens(string text, AddedTokenTable added, List<(int Start, int Length)>? addedRuns)
    {
        var ids = new List<int>();
        int start = 0;
        int position = 0;
        while (position < text.Length)
        {
            int match = added.MatchAt(text, position);
            if (match < 0)
            {
                position++;
                continue;
            }

            if (position > start)
            {
                ids.AddRange(EncodeText(text.Substring(start, position - start)));
            }

            addedRuns?.Add((ids.Count, added.Expansions[match].Length));
            ids.AddRange(added.Expansions[match]);
            position += added.Tokens[match].Length;
            start = position;
        }

        if (start < text.Length)
        {
            ids.AddRange(EncodeText(text.Substring(start)));
        }

        return ids;
    }

    /// <summary>
    /// Writes <c>[start, ids…, end, pad…]</c>, exactly <see cref="ModelMaxLength"/> ids, to
    /// <paramref name="destination"/>, keeping the first <see cref="MaxContentLength"/> prompt tokens (the end
    /// token is always written).
    /// </summary>
    /// <param name="text">The prompt; <see langword="null"/> or empty gives <c>[start, end, pad…]</c>.</param>
    /// <param name="destination">Where to write; its length must equal <see cref="ModelMaxLength"/>.</param>
    /// <returns>The number of prompt tokens dropped (0 when the prompt fit), for the caller to warn about.</returns>
    /// <exception cref="ArgumentException">The length of <paramref name="destination"/> differs from <see cref="ModelMaxLength"/>.</exception>
    public int EncodeToFixedLength(string? text, Span<int> destination)
    {
        if (destination.Length != ModelMaxLength)
        {
            throw new ArgumentException(
                $"The destination holds {destination.Length} ids but ModelMaxLength is {ModelMaxLength}; they must be equal.",
                nameof(destination));
        }

        IReadOnlyList<int> ids = EncodeToIds(text);
        int kept = Math.Min(ids.Count, MaxContentLength);
        WriteBlock(ids, 0, kept, destination);
        return ids.Count - kept;
    }

    /// <summary>
    /// The number of <see cref="ModelMaxLength"/>-long windows that hold the whole prompt in chunks of
    /// <see cref="MaxContentLength"/> tokens (the "long prompt" scheme of popular SD front ends): ⌈tokens / 75⌉,
    /// at least 1.
    /// </summary>
    /// <param name="text">The prompt.</param>
    /// <returns>The window count, at least 1.</returns>
    public int CountWindows(string? text) => WindowsFor(EncodeToIds(text).Count);

    /// <summary>
    /// Writes <paramref name="windowCount"/> blocks of <c>[start, up to 75 tokens, end, pad…]</c>, each
    /// <see cref="ModelMaxLength"/> long, splitting the prompt into consecutive chunks of
    /// <see cref="MaxContentLength"/> tokens; windows past the end of the prompt are <c>[start, end, pad…]</c>
    /// (so prompts of different lengths in one batch can share a window count).
    /// </summary>
    /// <param name="text">The prompt.</param>
    /// <param name="windowCount">The number of windows to write, at least <see cref="CountWindows(string?)"/>.</param>
    /// <param name="destination">Where to write; its length must be <paramref name="windowCount"/> × <see cref="ModelMaxLength"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="windowCount"/> is below 1.</exception>
    /// <exception cref="ArgumentException">
    /// The destination length is wrong, or the prompt needs more than <paramref name="windowCount"/> windows.
    /// </exception>
    public void EncodeWindows(string? text, int windowCount, Span<int> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(windowCount, 1);
        long needed = (long)windowCount * ModelMaxLength;
        if (destination.Length != needed)
        {
            throw new ArgumentException(
                $"The destination holds {destination.Length} ids but {windowCount} windows of {ModelMaxLength} need {needed}.",
                nameof(destination));
        }

        IReadOnlyList<int> ids = EncodeToIds(text);
        int required = WindowsFor(ids.Count);
        if (required > windowCount)
        {
            throw new ArgumentException(
                $"The prompt has {ids.Count} tokens, which need {required} windows of {MaxContentLength}; only {windowCount} requested.",
                nameof(windowCount));
        }

        for (int w = 0; w < windowCount; w++)
        {
            int from = Math.Min(w * MaxContentLength, ids.Count);
            int count = Math.Min(MaxContentLength, ids.Count - from);
            WriteBlock(ids, from, count, destination.Slice(w * ModelMaxLength, ModelMaxLength));
        }
    }

    /// <summary>Decodes ids as CLIP does: tokens joined, bytes decoded as UTF-8, <c>&lt;/w&gt;</c> turned into a space, trimmed.</summary>
    /// <param name="ids">The ids, e.g. one row of <see cref="EncodeToFixedLength"/>.</param>
    /// <returns>The text, without start/end tokens and trailing padding.</returns>
    public string Decode(ReadOnlySpan<int> ids) => Decode(ids, skipSpecialTokens: true);

    /// <summary>Decodes ids as CLIP does: tokens joined, bytes decoded as UTF-8, <c>&lt;/w&gt;</c> turned into a space, trimmed.</summary>
    /// <param name="ids">The ids.</param>
    /// <param name="skipSpecialTokens">
    /// When true, start and end tokens are left out, as is the padding that follows an end token.
    /// </param>
    /// <returns>The text.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside the vocabulary.</exception>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens)
    {
        var bytes = new List<byte>(ids.Length * 6);
        bool afterEnd = false;
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_idToToken.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Id {id} is outside the vocabulary (0..{_idToToken.Length - 1}).");
            }

            if (skipSpecialTokens)
            {
                if (id == StartTokenId || id == EndTokenId)
                {
                    afterEnd = id == EndTokenId;
                    continue;
                }

                if (afterEnd && id == PadTokenId)
                {
                    continue;
                }

                afterEnd = false;
            }

            foreach (char c in _idToToken[id])
            {
                // Characters outside the byte alphabet only occur in special tokens; keep them as UTF-8.
                if (s_unicodeToByte.TryGetValue(c, out byte b))
                {
                    bytes.Add(b);
                }
                else
                {
                    bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString()));
                }
            }
        }

        string text = Encoding.UTF8.GetString(bytes.ToArray());
        return text.Replace(EndOfWordSuffix, " ", StringComparison.Ordinal).Trim();
    }

    /// <summary>Writes one block [start, ids[from..from+count), end, pad…] filling <paramref name="block"/>.</summary>
    private void WriteBlock(IReadOnlyList<int> ids, int from, int count, Span<int> block)
    {
        block[0] = StartTokenId;
        for (int k = 0; k < count; k++)
        {
            block[1 + k] = ids[from + k];
        }

        block[1 + count] = EndTokenId;
        block.Slice(2 + count).Fill(PadTokenId);
    }

    private int WindowsFor(int tokenCount) => Math.Max(1, (tokenCount + MaxContentLength - 1) / MaxContentLength);

    private static int RequireToken(Dictionary<string, int> vocab, string? token, string optionName, string vocabName)
    {
        if (string.IsNullOrEmpty(token))
        {
            throw new ArgumentException($"{optionName} must be a non-empty token.", optionName);
        }

        if (!vocab.TryGetValue(token, out int id))
        {
            throw new ArgumentException($"{optionName} '{token}' is not in the vocabulary ({vocabName}).", optionName);
        }

        return id;
    }

    private static IEnumerable<KeyValuePair<string, int>> ToPairs(Dictionary<string, int> vocab) => vocab;

    /// <summary>GPT-2/CLIP <c>bytes_to_unicode</c>: printable Latin-1 bytes map to themselves, the rest to U+0100 onward.</summary>
    private static char[] BuildByteToUnicode()
    {
        var map = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + next++);
        }

        return map;
    }

    private static Dictionary<char, byte> BuildUnicodeToByte()
    {
        var map = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++)
        {
            map[s_byteToUnicode[b]] = (byte)b;
        }

        return map;
    }

    /// <summary>The vocabulary token of <paramref name="id"/> (byte-level form, with <c>&lt;/w&gt;</c>), for diagnostics.</summary>
    /// <param name="id">A token id.</param>
    /// <returns>The token string.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="id"/> is outside the vocabulary.</exception>
    public string GetToken(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(id, _idToToken.Length);
        return _idToToken[id];
    }

    /// <summary>The id of a vocabulary token (byte-level form, e.g. <c>"cat&lt;/w&gt;"</c>) or of an added token, or −1 when absent.</summary>
    /// <param name="token">The token string.</param>
    /// <returns>The id or −1.</returns>
    public int GetTokenId(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (_bpe.Vocabulary.TryGetValue(token, out int id))
        {
            return id;
        }

        int added = _added is null ? -1 : _added.IndexOf(token);
        return added < 0 ? -1 : _added!.FirstId + added;
    }

    /// <summary>Added tokens with their ids and multi-vector expansions, and the leftmost-longest match over them.</summary>
    private sealed class AddedTokenTable
    {
        private readonly int[] _byLengthDescending;
        private readonly Dictionary<string, int> _index;

        public AddedTokenTable(List<string> tokens, int firstId)
        {
            Tokens = tokens.ToArray();
            FirstId = firstId;
            var index = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < Tokens.Count; i++)
            {
                index.Add(Tokens[i], i);
            }

            // diffusers' _maybe_convert_prompt: "t" becomes "t t_1 t_2 …" while "t_i" is an added token.
            Expansions = new int[Tokens.Count][];
            var expansion = new List<int>();
            for (int i = 0; i < Tokens.Count; i++)
            {
                expansion.Clear();
                expansion.Add(firstId + i);
                for (int k = 1; index.TryGetValue(Tokens[i] + "_" + k.ToString(System.Globalization.CultureInfo.InvariantCulture), out int companion); k++)
                {
                    expansion.Add(firstId + companion);
                }

                Expansions[i] = expansion.ToArray();
            }

            _byLengthDescending = new int[Tokens.Count];
            for (int i = 0; i < _byLengthDescending.Length; i++)
            {
                _byLengthDescending[i] = i;
            }

            Array.Sort(_byLengthDescending, (a, b) => Tokens[b].Length.CompareTo(Tokens[a].Length));
            _index = index;
        }

        public IReadOnlyList<string> Tokens { get; }

        public int FirstId { get; }

        public int[][] Expansions { get; }

        public int IndexOf(string token) => _index.TryGetValue(token, out int i) ? i : -1;

        /// <summary>The longest added token that starts at <paramref name="position"/>, or −1.</summary>
        public int MatchAt(string text, int position)
        {
            foreach (int i in _byLengthDescending)
            {
                string token = Tokens[i];
                if (position + token.Length <= text.Length && string.CompareOrdinal(text, position, token, 0, token.Length) == 0)
                {
                    return i;
                }
            }

            return -1;
        }
    }
}
