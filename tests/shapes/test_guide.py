"""What GET /v1/models tells a user of the shapes world is the world itself."""

import itertools
import re

from dalleflow.models.diffusion import shapes_vocab
from dalleflow.shapes import all_caption_specs, caption_of, guide, parse_caption


def test_every_caption_form_filled_with_the_worlds_words_is_a_caption():
    slots = {"colour": guide.WORDS["colours"], "shape": guide.WORDS["shapes"],
             "position": guide.WORDS["positions"], "background": guide.WORDS["backgrounds"]}  # fmt: skip
    for form in guide.CAPTION_FORMS:
        names = re.findall(r"\{(\w+)\}", form)
        # Two objects differ in colour, as the world's captions do.
        values = next(v for v in itertools.product(*(slots[n] for n in names)) if len(set(v)) == len(v))
        filled = re.sub(r"\{(\w+)\}", lambda _, it=iter(values): next(it), form)
        assert caption_of(parse_caption(filled)) == filled


def test_the_caption_forms_cover_every_caption_the_world_says():
    patterns = [re.escape(form).replace(r"\{", "{").replace(r"\}", "}") for form in guide.CAPTION_FORMS]
    patterns = [re.sub(r"\{\w+\}", r"[a-z]+", pattern) for pattern in patterns]
    assert all(any(re.fullmatch(p, caption_of(spec)) for p in patterns) for spec in all_caption_specs())


def test_known_words_are_the_embedded_text_encoders_words():
    assert guide.known_words() == frozenset(shapes_vocab()) - {"<pad>", "<unk>"}


def test_examples_are_captions_of_the_training_split_and_the_same_every_time():
    examples = guide.example_prompts()
    assert len(set(examples)) == guide.EXAMPLE_COUNT and examples == guide.example_prompts()
    assert not any(parse_caption(prompt).is_held_out for prompt in examples)
