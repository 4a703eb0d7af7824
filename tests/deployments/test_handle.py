"""The same calls through a Ray Python handle, with the same request models as HTTP."""

from dalleflow_client.schemas import GenerateRequest, GenerateResponse, UpscaleRequest
from ray import serve


def test_generate_and_upscale_through_the_app_handle(serve_app):
    handle = serve.get_app_handle("dalleflow")
    answer = handle.generate.remote(
        GenerateRequest(prompt="a blue square above a red circle on a gray background", num_images=2, num_inference_steps=4, seed=5)
    ).result(timeout_s=300)
    assert isinstance(answer, GenerateResponse)
    assert [c.rank for c in answer.candidates] == [0, 1, 2, 3] and answer.seed == 5
    assert sorted(c.generator for c in answer.candidates) == ["dalle", "dalle", "diffusion", "diffusion"]
    upscaled = handle.upscale.remote(UpscaleRequest(image_id=answer.candidates[0].id)).result(timeout_s=300)
    assert (upscaled.width, upscaled.height) == (128, 128)
