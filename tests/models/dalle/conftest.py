from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def golden():
    """What dalle-mini 0.1.5 computed on the tiny checkpoints (scripts/make_dalle_fixtures.py)."""
    return dict(np.load(FIXTURES / "golden.npz"))


@pytest.fixture(scope="session")
def tiny_dalle():
    from dalleflow.models.dalle import DalleBart

    return DalleBart.from_pretrained(FIXTURES / "dalle-tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from dalleflow.models.dalle import DalleBartTokenizer

    return DalleBartTokenizer.from_pretrained(FIXTURES / "dalle-tiny", FIXTURES / "hashtag-words.txt")
