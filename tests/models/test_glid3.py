"""GLID-3 XL from its original files equals GLID-3 XL's own code (jina-ai/glid-3-xl, run by
scripts/make_glid3_fixtures.py on tiny random weights saved as the published files): the
BERT's embeddings, the UNet's eps at two timesteps with context and CLIP embedding, and
complete DDIM runs from fixed noise, text to image and from an init latent at skip 50%.
The kl-f8 autoencoder read from a pickled module object without running it equals latent
diffusion's own Encoder and Decoder (scripts/make_kl_f8_fixture.py)."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from dalleflow.models.contract import Sampling
from dalleflow.models.factory import create_model
from dalleflow.models.glid3.convert import convert_bert, convert_unet, load_state_dict, unet_config
from dalleflow.models.glid3.vae import load_kl_f8
from tests.tiny_checkpoints import GLID3_FIXTURES, save_tiny_glid3

EXPECTED = load_file(GLID3_FIXTURES / "expected.safetensors")
SETTINGS = json.loads((GLID3_FIXTURES / "settings.json").read_text())
NETWORK_TOLERANCE = 1e-4
LATENT_TOLERANCE = 1e-3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return save_tiny_glid3(tmp_path_factory.mktemp("glid3"))


@pytest.fixture(scope="module")
def model(files, tiny_clip_folder):
    folder, tokenizer = files
    return create_model({"family": "glid3", "weights": f"local-dir:{folder}", "options": {
        "tokenizer": f"local-dir:{tokenizer}", "clip": f"local-dir:{tiny_clip_folder[1]}",
        "scheduler": "ddim", "image_size": 64}})  # fmt: skip


def test_the_bert_gives_the_original_embeddings():
    bert = convert_bert(load_state_dict(GLID3_FIXTURES / "bert.pt"))
    with torch.no_grad():
        embeddings = bert(EXPECTED["tokens"])[0]
    assert (embeddings - EXPECTED["bert"]).abs().max() <= NETWORK_TOLERANCE


@pytest.mark.parametrize("file, expected, with_clip", [("diffusion.pt", "eps_plain", False), ("finetune.pt", "eps_finetune", True)])
def test_the_unet_gives_the_original_eps_at_two_timesteps(file, expected, with_clip):
    state = load_state_dict(GLID3_FIXTURES / file)
    unet = convert_unet(state)
    assert (unet.config.class_embed_type == "simple_projection") == with_clip == ("clip_proj.weight" in state)
    labels = {"class_labels": EXPECTED["clip"]} if with_clip else {}
    with torch.no_grad():
        eps = unet(EXPECTED["latents"], EXPECTED["timesteps"], encoder_hidden_states=EXPECTED["bert"], **labels).sample
    assert (eps - EXPECTED[expected]).abs().max() <= NETWORK_TOLERANCE


def original_conditions():
    """Row 0 of the fixtures conditions, row 1 is the unconditional half (as the original ran)."""
    return (EXPECTED["bert"][:1], EXPECTED["clip"][:1]), (EXPECTED["bert"][1:], EXPECTED["clip"][1:])


def test_a_ddim_run_from_fixed_noise_ends_at_the_original_latents(model):
    scheduler, timesteps = model._timesteps(SETTINGS["ddim_steps"])
    latents = model.denoise(EXPECTED["noise"][:1], *original_conditions(), scheduler, timesteps, SETTINGS["guidance_scale"])
    assert (latents - EXPECTED["ddim_text_to_image"]).abs().max() <= LATENT_TOLERANCE


def test_a_ddim_run_from_an_init_latent_at_skip_half_ends_at_the_original_latents(model):
    steps = SETTINGS["ddim_steps"]
    scheduler, timesteps = model._timesteps(steps, kept=steps - int(steps * SETTINGS["skip_rate"]))
    assert len(timesteps) == steps // 2
    start = scheduler.add_noise(EXPECTED["init"][:1], EXPECTED["noise"][:1], timesteps[:1])
    latents = model.denoise(start, *original_conditions(), scheduler, timesteps, SETTINGS["guidance_scale"])
    assert (latents - EXPECTED["ddim_from_init"]).abs().max() <= LATENT_TOLERANCE


def test_the_prompt_is_tokenized_as_bert_base_uncased_pads_it(model, files):
    from transformers import BertTokenizerFast

    tokens = BertTokenizerFast.from_pretrained(str(files[1]))(["A red circle"], padding="max_length", max_length=77,
                                                              return_tensors="pt").input_ids  # fmt: skip
    context, embedding = model.conditions(["A red circle"])
    with torch.no_grad():
        assert torch.equal(context, model.bert(tokens)[0])
    assert context.shape == (1, 77, 32) and embedding.shape == (1, 16)


def test_a_model_makes_images_and_variations_at_its_size(model):
    sampling = Sampling(num_inference_steps=4, guidance_scale=3.0)
    (image,) = model.generate(["a red circle on the left"], [1], sampling)
    assert image.size == (64, 64)
    variations = model.refine([image, image], ["a red circle"] * 2, [2, 3], skip_rate=0.5, sampling=sampling)
    assert [v.size for v in variations] == [(64, 64)] * 2 and variations[0].tobytes() != variations[1].tobytes()


# Loading: variants, refusals, the autoencoder.


def test_finetune_is_taken_where_the_folder_has_it_and_diffusion_otherwise(files):
    from dalleflow.models.glid3 import Glid3

    folder, tokenizer = files
    plain = Glid3.from_pretrained(folder, tokenizer=tokenizer, unet="diffusion.pt", image_size=64)
    assert not plain.takes_clip and plain.clip is None
    with pytest.raises(ValueError, match="clip: this UNet .finetune.pt. adds a CLIP ViT-L/14 text embedding"):
        Glid3.from_pretrained(folder, tokenizer=tokenizer, image_size=64)


def test_an_inpainting_unet_is_refused_by_name():
    state = load_state_dict(GLID3_FIXTURES / "diffusion.pt")
    state["input_blocks.0.0.weight"] = torch.zeros(32, 8, 3, 3)
    with pytest.raises(ValueError, match="8 input channels: GLID-3 XL's inpaint.pt"):
        unet_config(state)


def test_a_state_dict_file_that_runs_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"clip_proj.weight": Payload()}, tmp_path / "finetune.pt")
    with pytest.raises(ValueError, match="finetune.pt: not a plain state dict"):
        load_state_dict(tmp_path / "finetune.pt")


def test_kl_f8_read_from_its_pickled_module_equals_latent_diffusions_autoencoder():
    expected = load_file(GLID3_FIXTURES / "kl-f8-tiny-io.safetensors")
    vae = load_kl_f8(GLID3_FIXTURES / "kl-f8-tiny.pt")
    with torch.no_grad():
        decoded = vae.decode(expected["latent"]).sample
        mean = vae.encode(expected["image"]).latent_dist.mean
    assert (decoded - expected["decoded"]).abs().max() <= NETWORK_TOLERANCE
    assert (mean - expected["mean"]).abs().max() <= NETWORK_TOLERANCE


def test_reading_a_pickled_module_runs_none_of_its_code(tmp_path, capfd):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    with open(tmp_path / "kl-f8.pt", "wb") as file:  # a torch.save zip with a code-running object beside the modules
        torch.save({"payload": Payload(), "module": torch.nn.Conv2d(1, 1, 1)}, file)
    with pytest.raises(Exception):
        load_kl_f8(tmp_path / "kl-f8.pt")
    assert "this ran" not in capfd.readouterr().out
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "kl-f8.pt", weights_only=True)
