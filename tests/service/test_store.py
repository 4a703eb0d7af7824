import pytest

from dalleflow.service.errors import NotFound
from dalleflow.service.images import encode_png
from dalleflow.service.store import ImageStore
from dalleflow.shapes import render_caption


def test_a_stored_png_comes_back_byte_for_byte_with_its_metadata(tmp_path):
    store = ImageStore(tmp_path)
    image = render_caption("a red circle on the left on a white background")
    png = encode_png(image, {"prompt": "a red circle", "seed": 3, "generator": "diffusion"}).png
    image_id = store.save_png(png)
    assert store.png_bytes(image_id) == png
    assert store.metadata(image_id) == {"id": image_id, "prompt": "a red circle", "seed": 3, "generator": "diffusion"}


@pytest.mark.parametrize("image_id", ["../../etc/passwd", "0" * 31, "G" * 32, "/" + "a" * 31])
def test_only_ids_reach_the_filesystem(tmp_path, image_id):
    with pytest.raises(NotFound, match="not an image id"):
        ImageStore(tmp_path).png_bytes(image_id)


def test_an_unknown_id_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="no such image"):
        ImageStore(tmp_path).png_bytes("0" * 32)


def test_job_records_are_json_next_to_the_images_under_the_same_id_check(tmp_path):
    store = ImageStore(tmp_path)
    job_id = "ab" + "0" * 30
    store.save_job(job_id, '{"status": "queued"}')
    assert store.job_record(job_id) == '{"status": "queued"}'
    assert (tmp_path / "ab" / f"{job_id}.json").is_file()
    with pytest.raises(NotFound, match="not a job id"):
        store.job_record("../" + job_id[3:])
    with pytest.raises(NotFound, match="no such job"):
        store.job_record("0" * 32)
    assert not store.is_job_cancel_requested(job_id)
    store.request_job_cancel(job_id)
    assert store.is_job_cancel_requested(job_id)
