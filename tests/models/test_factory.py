import pytest

from dalleflow.models.factory import WEIGHTS_FOLDER, create_model, resolve_weights
from dalleflow.models.ranker import ClipRanker


def test_embedded_and_local_dir_sources_name_the_same_folder():
    embedded = resolve_weights("embedded:shapes-clip")
    assert embedded == str(WEIGHTS_FOLDER / "shapes-clip")
    assert resolve_weights(f"local-dir:{embedded}") == embedded


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        resolve_weights(f"local-dir:{tmp_path / 'nothing'}")


def test_the_family_picks_the_loader():
    assert isinstance(create_model({"family": "open-clip", "weights": "embedded:shapes-clip"}), ClipRanker)
    with pytest.raises(ValueError, match="unknown model family"):
        create_model({"family": "nope"})
    with pytest.raises(ValueError):
        create_model({"family": "open-clip", "weigths": "typo"})
