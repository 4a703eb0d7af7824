import numpy as np

from dalleflow.models.dalle import DalleBart, msgpack_io

from .conftest import FIXTURES


def test_a_read_and_written_checkpoint_is_byte_identical_to_flax_s(tmp_path):
    # dalle-mini (flax.serialization.to_bytes) wrote the fixture
    source = FIXTURES / "dalle-tiny" / "flax_model.msgpack"
    msgpack_io.save_tree(tmp_path / "copy.msgpack", msgpack_io.load_tree(source))
    assert (tmp_path / "copy.msgpack").read_bytes() == source.read_bytes()


def test_unwanted_arrays_are_skipped_and_big_ones_chunked(tmp_path, monkeypatch):
    tree = {"keep": {"a": np.arange(10, dtype=np.float32)}, "skip": {"b": np.ones((3, 3), np.int32)}}
    monkeypatch.setattr(msgpack_io, "_MAX_CHUNK_BYTES", 16)  # 4 floats a chunk
    msgpack_io.save_tree(tmp_path / "t.msgpack", tree)
    loaded = msgpack_io.load_tree(tmp_path / "t.msgpack", want=lambda path: path[0] == "keep")
    assert list(loaded) == ["keep"]
    assert np.array_equal(loaded["keep"]["a"], tree["keep"]["a"])


def test_save_and_load_give_the_same_logits_scanned_or_not(tiny_dalle, golden, tmp_path):
    args = golden["input_ids"][:1], golden["attention_mask"][:1], golden["image_tokens"][:1]
    expected = np.asarray(tiny_dalle.decode_logits(*args))
    for scanned in (True, False):
        tiny_dalle.save_pretrained(tmp_path / str(scanned), scanned=scanned)
        loaded = DalleBart.from_pretrained(tmp_path / str(scanned))
        assert np.array_equal(np.asarray(loaded.decode_logits(*args)), expected)
