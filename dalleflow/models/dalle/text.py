"""The text side of DalleBart: dalle-mini's text normaliser and the BART tokenizer.

The normaliser is dalle-mini's (src/dalle_mini/model/text.py, Apache-2.0), step for
step and regex for regex, with two changes that keep it offline and deterministic:
- the hashtag splitter's word list is a file you may pass (one word per line, most
  frequent first, as dalle-mini's enwiki-words-frequency.txt); without one, a
  hashtag keeps its text as a single word (dalle-mini downloads the list instead);
- "<person>" (a CC12M caption artefact) becomes "a person" rather than a random
  weighted pick, so a prompt always gives the same tokens.

The tokenizer is the checkpoint's tokenizer.json read by `tokenizers` (the file
transformers' BartTokenizerFast reads), padded and truncated to max_text_length.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import emoji
import ftfy
import numpy as np
from unidecode import unidecode

_TEMP = "xtokx"  # avoid repeating chars


class HashtagSplitter:
    """Splits "#redcircle" into "red circle" by word frequency (wordninja's method)."""

    def __init__(self, word_list: str | Path):
        words = (line.split()[0] for line in Path(word_list).read_text(encoding="utf8").splitlines())
        self._word_cost = {str(w): math.log(float(i + 1)) for i, w in enumerate(words)}
        self._max_word = max(len(x) for x in self._word_cost)
        self._split_re = re.compile("[^a-zA-Z0-9']+")

    def __call__(self, s: str) -> str:
        parts = [self._split(x) for x in self._split_re.split(s)]
        return " ".join(item for part in parts for item in part)

    def _split(self, s: str):
        def best_match(i):
            candidates = enumerate(reversed(cost[max(0, i - self._max_word) : i]))
            return min((c + self._word_cost.get(s[i - k - 1 : i].lower(), 9e999), k + 1) for k, c in candidates)

        cost = [0]
        for i in range(1, len(s) + 1):
            cost.append(best_match(i)[0])
        out = []
        i = len(s)
        while i > 0:
            c, k = best_match(i)
            new_token = True
            if not s[i - k : i] == "'":  # ignore a lone apostrophe
                if out and (out[-1] == "'s" or (s[i - 1].isdigit() and out[-1][0].isdigit())):
                    out[-1] = s[i - k : i] + out[-1]  # re-attach split 's and digits
                    new_token = False
            if new_token:
                out.append(s[i - k : i])
            i -= k
        return reversed(out)


def _sub(pattern, replacement, t):
    return re.sub(pattern, replacement, t)


def _remove_comma_numbers(t):
    return _sub(r"(\d),(\d{3})", r"\1\2", _sub(r"(\d),(\d{3})", r"\1\2", t))


def _remove_wiki_ref(t):
    t = _sub(r"\A\s*\[\d+\]", "", t)
    return _sub(r"\[\d+\]\s*\Z", "", t)


def _remove_first_last_commas(t):
    t = t.strip()
    t = t[:-1] if t and t[-1] == "," else t
    t = t[1:] if t and t[0] == "," else t
    return t.strip()


class TextNormalizer:
    """dalle-mini's TextNormalizer, offline (see the module docstring)."""

    def __init__(self, hashtag_word_list: str | Path | None = None):
        self._hashtags = HashtagSplitter(hashtag_word_list) if hashtag_word_list else None

    def _expand_hashtags(self, t: str) -> str:
        split = self._hashtags or (lambda word: word)
        return _sub(r"#(\w+)", lambda m: split(m.group(1)), t)

    def __call__(self, t: str) -> str:
        t = ftfy.fix_text(t)
        t = html.unescape(html.unescape(t))
        t = emoji.demojize(t)  # before unidecode, which would drop emojis
        t = unidecode(t)
        t = t.lower()
        t = _sub(r"<person>([,\s]*(and)*[,\s]*<person>)+", " people ", t)
        t = t.replace("<person>", " a person ")
        t = _remove_wiki_ref(t)
        t = _sub(r"<[^<]+?>", " ", t)  # html tags
        t = _sub(r"http\S+", "", t)  # urls
        t = _remove_comma_numbers(t)
        t = _sub(r"(\w)\.(\w)", rf"\1{_TEMP}dot{_TEMP}\2", t)
        t = _sub(r"'(?=([stdm]|(ll)|(re)|(ve)|(ll))\b)", rf"{_TEMP}quote{_TEMP}", t)
        t = _sub(r"(\d)/(\d)", rf"\1{_TEMP}slash{_TEMP}\2", t)
        t = _sub(r"(\w)-(\w)", r"\1 \2", t)
        t = _sub(r"([%&\/$*])", r" \1 ", t)
        t = self._expand_hashtags(t)
        t = _sub(r"[_#\\]", " ", t)
        t = _sub(r"""['"`]""", ' " ', t)
        t = _sub(r"[()[\].,|:;?!=+~\-\/{}]", ",", t)
        t = _sub(f"{_TEMP}dot{_TEMP}", ".", t)
        t = _sub(f"{_TEMP}quote{_TEMP}", "'", t)
        t = _sub(f"{_TEMP}slash{_TEMP}", "/", t)
        t = _sub(r"(\D)(\1{3,})", r"\1", t)  # 4+ repeats -> one (3 kept for "viii")
        t = _sub(r'(\s*"+\s*)+', ' " ', t)
        t = _sub(r"(\s*,+\s*)+", ", ", t)
        t = _sub(r"\s+", " ", t)
        t = _remove_first_last_commas(t)
        return f" {t}"


class DalleBartTokenizer:
    """Prompts -> (input_ids, attention_mask), int32 [n, max_text_length], as
    dalle-mini's DalleBartProcessor makes them (normalised first when the model's
    config says normalize_text)."""

    def __init__(self, tokenizer_file: str | Path, max_text_length: int = 64, normalizer: TextNormalizer | None = None):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        pad_id = self.tokenizer.token_to_id("<pad>")
        if pad_id is None:
            raise ValueError(f"{tokenizer_file}: no <pad> token; not a BART tokenizer")
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token="<pad>", length=max_text_length)
        self.tokenizer.enable_truncation(max_text_length)
        self.max_text_length = max_text_length
        self.normalizer = normalizer

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, hashtag_word_list: str | Path | None = None
    ) -> DalleBartTokenizer:
        """tokenizer.json (and config.json for max_text_length, normalize_text) in folder."""
        import json

        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder}: no tokenizer.json")
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        normalizer = TextNormalizer(hashtag_word_list) if config.get("normalize_text") else None
        return cls(folder / "tokenizer.json", config.get("max_text_length", 64), normalizer)

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(prompts, str):
            raise TypeError("prompts: a list of strings, not a string")
        if self.normalizer is not None:
            prompts = [self.normalizer(p) for p in prompts]
        return self._encode(prompts)

    @property
    def known_words(self) -> frozenset[str] | None:
        """The words of a word-level vocabulary (the shapes DALL·E's), its special tokens left out;
        None for dalle-mini's BPE, which spells any word from pieces."""
        from tokenizers.models import WordLevel

        if not isinstance(self.tokenizer.model, WordLevel):
            return None
        return frozenset(token for token in self.tokenizer.get_vocab() if re.fullmatch(r"\w+", token))

    def uncond(self) -> tuple[np.ndarray, np.ndarray]:
        """Super-conditioning's unconditional prompt: "" tokenized as it is (dalle-mini
        does not normalise it, which would make it " "), [1, max_text_length]."""
        return self._encode([""])

    def _encode(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(prompts))
        ids = np.array([e.ids for e in encodings], np.int32)
        mask = np.array([e.attention_mask for e in encodings], np.int32)
        return ids, mask
