#!/usr/bin/python3
"""Runs AUTOMATIC1111's own prompt code on a corpus of hard prompts and writes a1111_prompts.json.

What runs is A1111's code, unchanged: modules/prompt_parser.py (parse_prompt_attention,
get_learned_conditioning_prompt_schedules, get_multicond_prompt_list) and the chunker
FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line from modules/sd_hijack_clip.py. Only its imports are shimmed
(devices, sd_hijack, sd_emphasis, shared.opts with A1111's defaults: emphasis "Original", comma_padding_backtrack 20),
and its tokenizer is OpenAI CLIP's own clip/simple_tokenizer.py on the published BPE file (ftfy is shimmed to the
identity: the corpus is ASCII and has no HTML entities, so ftfy and HF-vs-OpenAI cleaning cannot differ).
Textual inversion: "embeddingChunks" runs the same tokenize_line with an embedding database of four stub embeddings
(names and vector counts; the lookup is EmbeddingDatabase's register_embedding/find_embedding_at_position rule), so
A1111 places each embedding's vectors as it does for real files (tokens 0 and a fix [offset, name, vectors]).
The emphasis fixtures apply the two lines of sd_emphasis.EmphasisOriginal / EmphasisOriginalNoNorm in torch float32.

Usage (Debian bookworm: python3, python3-lark, python3-torch, python3-numpy, python3-regex):
  /usr/bin/python3 make_a1111_fixtures.py --a1111 DIR --clip DIR --bpe bpe_simple_vocab_16e6.txt.gz --out a1111_prompts.json
where --a1111 holds modules/prompt_parser.py and modules/sd_hijack_clip.py of AUTOMATIC1111/stable-diffusion-webui
and --clip holds simple_tokenizer.py of openai/CLIP. The commits used are written into the JSON ("meta").

How a1111_prompts.json was made (2026-12-05, Debian bookworm python 3.11, lark 1.1.5, torch 1.13): the A1111
repository snapshot was too large to bring to the build machine, so the two files were copied by hand from the
commits above, keeping every function this script calls verbatim — prompt_parser.py without its torch-using tail
(get_learned_conditioning, reconstruct_*, stack_conds), with SdConditioning(prompts) written as list(prompts) in
get_multicond_prompt_list; sd_hijack_clip.py from its top to process_texts. The script runs unchanged on the full files.
A1111's own doctests pass on those copies except `a [{b|d{:.5] c`, whose expected value needs lark 1.1.2 (A1111's pin).
The "embeddings"/"embeddingChunks" sections were added later the same day by the same command on the same copies
(sd_hijack_clip.py's tokenize_line, embedding branch included, checked against the commit above); every other section
came out identical to the earlier file.
"""
import argparse
import json
import random
import sys
import types

ap = argparse.ArgumentParser()
ap.add_argument("--a1111", required=True)
ap.add_argument("--clip", required=True)
ap.add_argument("--bpe", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--a1111-parser-commit", default="28bd8e142d5f77b71ae8d7d7140b5da1b3a49906")
ap.add_argument("--a1111-clip-commit", default="00e09382cd85c77ac35545c7264855823dfc2eb1")
ap.add_argument("--clip-commit", default="d05afc436d78f1c48dc0dbf8e5980a9d471f35f6")
args = ap.parse_args()

# --- shims for A1111's imports -------------------------------------------------------------------------------
pkg = types.ModuleType("modules")
pkg.__path__ = [args.a1111 + "/modules"]
sys.modules["modules"] = pkg
for name in ("devices", "sd_hijack", "sd_emphasis"):
    m = types.ModuleType("modules." + name)
    sys.modules["modules." + name] = m
    setattr(pkg, name, m)
shared = types.ModuleType("modules.shared")
shared.opts = types.SimpleNamespace(emphasis="Original", comma_padding_backtrack=20)
sys.modules["modules.shared"] = shared
pkg.shared = shared
ftfy = types.ModuleType("ftfy")
ftfy.fix_text = lambda text: text
sys.modules["ftfy"] = ftfy
sys.path.insert(0, args.clip)

import lark  # noqa: E402
import torch  # noqa: E402
from modules import prompt_parser, sd_hijack_clip  # noqa: E402
from simple_tokenizer import SimpleTokenizer  # noqa: E402

clip = SimpleTokenizer(args.bpe)


class NoEmbeddings:
    def find_embedding_at_position(self, tokens, offset):
        return None, None


class StubEmbedding:
    """What tokenize_line reads of an A1111 Embedding: its name and its vector count (Embedding.vectors)."""

    def __init__(self, name, vectors):
        self.name = name
        self.vectors = vectors


class EmbeddingStubs:
    """The lookup half of A1111's EmbeddingDatabase (modules/textual_inversion/textual_inversion.py): register_embedding
    keys each embedding by the first id of its name's BPE ids, longest names first, and find_embedding_at_position
    returns the embedding whose name's ids start at the offset and how many ids the name took. Re-stated here because
    the real class needs a loaded model and its files; the two methods are the same rule."""

    def __init__(self, embeddings):
        self.ids_lookup = {}
        for embedding in embeddings:
            ids = clip.encode(embedding.name)
            first = ids[0]
            self.ids_lookup[first] = sorted(self.ids_lookup.get(first, []) + [(ids, embedding)],
                                            key=lambda x: len(x[0]), reverse=True)

    def find_embedding_at_position(self, tokens, offset):
        for ids, embedding in self.ids_lookup.get(tokens[offset], []):
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None


class Chunker(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    """A1111's chunker with the SD 1.x CLIP ids (FrozenCLIPEmbedderWithCustomWords.__init__ reads them from the
    HF tokenizer: bos 49406, eos = pad 49407, comma = vocab[',</w>'])."""

    def __init__(self, embedding_db=None):
        super().__init__(types.SimpleNamespace(), types.SimpleNamespace(embedding_db=embedding_db or NoEmbeddings()))
        self.comma_token = clip.encoder[",</w>"]
        self.id_start = clip.encoder["<|startoftext|>"]
        self.id_end = clip.encoder["<|endoftext|>"]
        self.id_pad = self.id_end

    def tokenize(self, texts):
        # = HF CLIPTokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]
        return [clip.encode(t) for t in texts]


chunker = Chunker()

# Textual inversion stubs: letters-only names (CLIP splits them from punctuation, so A1111's id matching and
# MLNet.Diffusion's text matching find the same occurrences), 1, 2, 3 and 5 vectors.
embedding_stubs = [StubEmbedding("onevec", 1), StubEmbedding("twovec", 2), StubEmbedding("threevec", 3),
                   StubEmbedding("fivevec", 5)]
embedding_chunker = Chunker(EmbeddingStubs(embedding_stubs))

# --- corpus --------------------------------------------------------------------------------------------------
attention_prompts = [
    "normal text", "an (important) word", "(unbalanced", "\\(literal\\]", "(unnecessary)(parens)",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "", "   ", "a (b:1.5) c", "((a))", "[[a]]", "(a:0.5) (b)", "a \\\\ b", "a \\ b", "trailing \\",
    "(a BREAK b)", "[a BREAK b]", "BREAK a", "a BREAK", "BREAK", "a BREAK BREAK b", "aBREAK b", "a BREAKfast",
    "a\nBREAK\nb", "(a:1.2.3)", "(a: 1.5 )", "a:1.5)", "(a:-1)", "(a:.5)", "(a:5.)", "[a:1.5]", "(a]", "a)b",
    "]a[", "((a) b", "(a:1.1)(b:1.1)", "(a)(b:1.1)", "\\(x\\)", "(x\\))", ":", "(:1.2)", "(a:1.2:3)",
    "cafe (creme:1.2)", "a ( b : 1.2 ) c", "(a:1e3)", "(a:+2)", "((a:2):3)", "[(a:2)]", "(a [b] c)",
    "[a (b) c]", "(a:0)", "(a:1.)", "a, (b, c:1.3), d", "((((a))))", "[[[[a]]]]", "(a:1.5", "(a:1.5 BREAK b)",
    "a (b BREAK) c", "(BREAK)", "x (BREAK:2) y", "a (b) BREAK (c)", "\\\\(a)", "(a\\:1.2)", "(a:.)",
]

schedule_prompts = [
    "test", "a [b:3]", "a [b: 3]", "a [[[b]]:2]", "[(a:2):3]", "a [b : c : 1] d", "a[b:[c:d:2]:1]e",
    "a [unbalanced", "a [b:.5] c", "a [{b|d{:.5] c", "((a][:b:c [d:3]", "[a|(b:1.1)]", "[fe|]male", "[fe|||]male",
    "[a:b:5.0]", "[a:b:0.25]", "[a:b:5]", "[a|b]", "[a|b|c] [d:e:3]", "[[a:b:2]|c]", "[a:[b|c]:3]",
    "[a:b:-1]", "[a:b:0]", "[a:b:1e1]", "a | b [c:d:5]", "[a:b:c]", "[a:b:1.0]", "[a:b: 0.5 ]", "[:b:2]",
    "[a::2]", "[a:b:2", "a [b:c:3] \\[d:e:4\\]", "trailing \\", "(a [b:c:2]:1.2)", "[a BREAK b:c:2]", "",
    "[a:b:0.999]", "[a:b:1]", "[a:b:10]", "[a:b:11]", "[a:b:+3]", "[a:b:3 ]", "[a:b:0.3]", "[a:b:0.7]",
    "[a:b:.1]", "[a:b:1.5]", "[[a|b]:c:0.5]", "[a|[b|c]]", "([a|b])", "[a|b](c:1.2)[d:e:2]", "[|a]", "[a|]",
    "a: b [c:d:2]", "(a:b) [c:2]", "[a:(b:1.2):2]", "[a:[b]:2]", "[a:(b:2]", "x [a:b:2] y [c:d:0.5] z",
    "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
    "[ in background:0.25] [shoddy:masterful:0.5]",
    "[a:b:1e999]",
]
schedule_steps = [1, 2, 10, 20, 100]

multicond_prompts = [
    "a AND b", "a:1.2 AND b :0.5", "a AND b:-1", "aANDb", "a AND", "AND a", "a AND a", "a : 1.", "a:.5",
    "a: 1.5 ", "a\n:2", "[a AND b:c:0.5]", "a AND b AND c:2", "a:1:2", "a :1.5x", "", "x ANDy AND z", "a AND  b ",
    "(a:1.2) AND [b:c:0.5]:0.7", "a:+2 AND b:-.5",
]

words = ["cat", "dog", "red", "blue", "circle", "square", "forest", "night", "sky", "painting", "detailed",
         "masterpiece", "a", "of", "the", "with"]


def random_prompt(rng):
    parts = []
    for _ in range(rng.randint(5, 140)):
        r = rng.random()
        w = rng.choice(words)
        if r < 0.12:
            parts.append(",")
        elif r < 0.20:
            parts.append("(" + w + ":" + str(round(rng.uniform(0.3, 1.8), 2)) + ")")
        elif r < 0.26:
            parts.append("((" + w + "))")
        elif r < 0.30:
            parts.append("[" + w + "]")
        elif r < 0.315:
            parts.append("BREAK")
        else:
            parts.append(w)
    return " ".join(parts).replace(" ,", ",")


rng = random.Random(15)
chunk_prompts = [
    "", "a photo of a cat", "BREAK", "a BREAK b", "BREAK a", "a BREAK", "(a BREAK b)", "a BREAK BREAK b",
    "cat " * 75, "cat " * 76, "cat " * 75 + ", dog", "cat " * 74 + ", dog", "cat " * 60 + ", " + "dog " * 20,
    "cat " * 54 + ", " + "dog " * 30, "cat " * 55 + ", " + "dog " * 30, "cat " * 56 + ", " + "dog " * 30,
    "cat " * 150, "cat " * 151, "cat " * 75 + "BREAK dog", "cat " * 75 + "BREAK BREAK dog", "cat, " * 80,
    "(cat:1.3) " * 40 + "[dog] " * 40, "cat " * 70 + ", dog, bird, " + "fish " * 80,
    "cat " * 73 + ", , , dog " * 3, "a (red:1.2) circle, [blurry], (masterpiece)",
    "a BREAK " * 3 + "cat " * 80,
] + [random_prompt(rng) for _ in range(40)]

embedding_words = words + ["onevec", "twovec", "threevec", "fivevec"]


def random_embedding_prompt(rng):
    parts = []
    for _ in range(rng.randint(20, 120)):
        r = rng.random()
        w = rng.choice(embedding_words)
        if r < 0.12:
            parts.append(",")
        elif r < 0.20:
            parts.append("(" + w + ":" + str(round(rng.uniform(0.3, 1.8), 2)) + ")")
        elif r < 0.24:
            parts.append("[" + w + "]")
        elif r < 0.25:
            parts.append("BREAK")
        else:
            parts.append(w)
    return " ".join(parts).replace(" ,", ",")


embedding_prompts = [
    "threevec", "a photo of threevec", "cat " * 72 + "threevec", "cat " * 73 + "threevec dog",
    "cat " * 74 + "threevec", "cat " * 75 + "threevec", "cat " * 74 + "twovec", "cat " * 73 + "twovec",
    "cat " * 74 + "onevec dog", "cat " * 75 + "onevec", "fivevec " * 16, "cat " * 71 + "fivevec",
    "cat " * 60 + ", " + "dog " * 14 + "threevec", "cat " * 60 + ", " + "dog " * 12 + "threevec",
    "cat " * 60 + ", " + "dog " * 13 + "threevec, bird", "cat " * 50 + ", " + "dog " * 24 + "threevec",
    "cat " * 72 + ", threevec", "cat " * 73 + ", threevec", "cat " * 74 + ", threevec", "cat " * 71 + ", threevec dog",
    "cat " * 73 + "(threevec:1.3) dog", "cat " * 70 + "[twovec] (fivevec) dog", "threevec BREAK threevec",
    "BREAK threevec", "cat " * 74 + "threevec BREAK dog", "threevec, " * 30, "twovec " * 40, "onevec " * 80,
    "(cat, threevec:1.2) " * 12,
] + [random_embedding_prompt(rng) for _ in range(30)]

# --- run -----------------------------------------------------------------------------------------------------


def attention(prompt):
    try:
        return {"prompt": prompt, "result": prompt_parser.parse_prompt_attention(prompt)}
    except Exception as e:  # A1111 raises here; the fixture records which exception
        return {"prompt": prompt, "error": type(e).__name__ + ": " + str(e)}


def schedule(prompt, steps):
    try:
        return {"prompt": prompt, "steps": steps,
                "schedule": prompt_parser.get_learned_conditioning_prompt_schedules([prompt], steps)[0]}
    except Exception as e:
        return {"prompt": prompt, "steps": steps, "error": type(e).__name__ + ": " + str(e)}


def multicond(prompt):
    indexes, flat, _ = prompt_parser.get_multicond_prompt_list([prompt])
    return {"prompt": prompt, "indexes": [[i, w] for i, w in indexes[0]], "texts": list(flat)}


def chunks(prompt, emphasis):
    shared.opts.emphasis = emphasis
    try:
        parsed = prompt_parser.parse_prompt_attention(prompt) if emphasis != "None" else [[prompt, 1.0]]
        result, count = chunker.tokenize_line(prompt)
        return {"prompt": prompt, "emphasis": emphasis,
                "fragments": [[t, w, clip.encode(t)] for t, w in parsed],
                "tokenCount": count,
                "chunks": [{"tokens": c.tokens, "multipliers": c.multipliers} for c in result]}
    finally:
        shared.opts.emphasis = "Original"


def embedding_chunks(prompt, emphasis):
    shared.opts.emphasis = emphasis
    try:
        result, count = embedding_chunker.tokenize_line(prompt)
        return {"prompt": prompt, "emphasis": emphasis, "tokenCount": count,
                "chunks": [{"tokens": c.tokens, "multipliers": c.multipliers,
                            "fixes": [[f.offset, f.embedding.name, f.embedding.vectors] for f in c.fixes]}
                           for c in result]}
    finally:
        shared.opts.emphasis = "Original"


def emphasis_case(seed, prompt, batch):
    # sd_emphasis.EmphasisOriginal.after_transformers / EmphasisOriginalNoNorm.after_transformers, on a float32
    # z of shape [batch, 77, 8] and the prompt's first chunk's multipliers repeated over the batch
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((batch, 77, 8), generator=g, dtype=torch.float32) + 0.25
    m = chunker.tokenize_line(prompt)[0][0].multipliers
    multipliers = torch.asarray([m] * batch)
    original_mean = z.mean()
    weighted = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    new_mean = weighted.mean()
    original = weighted * (original_mean / new_mean)
    return {"prompt": prompt, "shape": list(z.shape), "z": z.flatten().tolist(),
            "multipliers": multipliers.flatten().tolist(), "original": original.flatten().tolist(),
            "noNorm": weighted.flatten().tolist()}


out = {
    "meta": {
        "a1111": "AUTOMATIC1111/stable-diffusion-webui modules/prompt_parser.py @ " + args.a1111_parser_commit
                 + ", modules/sd_hijack_clip.py @ " + args.a1111_clip_commit,
        "clip": "openai/CLIP clip/simple_tokenizer.py @ " + args.clip_commit,
        "python": sys.version.split()[0], "lark": lark.__version__, "torch": torch.__version__,
        "opts": {"emphasis": "Original", "comma_padding_backtrack": 20},
    },
    "attention": [attention(p) for p in attention_prompts],
    "schedules": [schedule(p, s) for p in schedule_prompts for s in schedule_steps],
    "multicond": [multicond(p) for p in multicond_prompts],
    "chunks": [chunks(p, "Original") for p in chunk_prompts]
              + [chunks(p, "None") for p in ["a (b:1.2) BREAK c", "cat " * 80 + "(dog)"]],
    "embeddings": {e.name: e.vectors for e in embedding_stubs},
    "embeddingChunks": [embedding_chunks(p, "Original") for p in embedding_prompts]
                       + [embedding_chunks(p, "None") for p in ["cat " * 73 + "(threevec) dog", "twovec " * 40]],
    "emphasis": [emphasis_case(1, "a (red:1.4) circle, [[blurry]]", 1),
                 emphasis_case(2, "(cat:0.5) and (dog:1.6)", 2)],
}
with open(args.out, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
    f.write("\n")
print("wrote", args.out, {k: len(v) for k, v in out.items() if isinstance(v, list)})
