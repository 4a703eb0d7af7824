"""DALL·E mini / Mega (dalle-mini's DalleBart + VQGAN f16 16384) in JAX, no Ray.

    from dalleflow.models.dalle import DallePipeline
    pipe = DallePipeline.from_pretrained("dalle-mega/", "vqgan_imagenet_f16_16384/")
    images = pipe.generate(["a red circle"], num_images=4, seed=0)

The checkpoints are read as published (config.json + flax_model.msgpack, plus
tokenizer.json for the text side) by a streaming reader; see bart.py, vqgan.py,
text.py. Proven equal to dalle-mini 0.1.5 and to min-dalle on tiny random weights
by tests/models/dalle (fixtures made by scripts/make_dalle_fixtures.py).

GPU: install a CUDA jaxlib beside torch (`pip install "jax[cuda13]"` at the same
jax version: CUDA 13, as torch's wheels; cluster/Dockerfile) and run with
XLA_PYTHON_CLIENT_PREALLOCATE=false: by default XLA
grabs 75% of the GPU's memory at its first call, which starves torch deployments
(diffusion, ranker) sharing the card; with it off, JAX allocates what it uses.
XLA_PYTHON_CLIENT_MEM_FRACTION=0.3 caps it instead where a hard share is wanted.
Under Ray, CUDA_VISIBLE_DEVICES already holds only the replica's GPUs. On a GPU,
pass dtype="bfloat16" (Mega: ~5 GB of weights instead of ~10 GB); float32 matmuls
there may use TF32 unless jax.default_matmul_precision("highest") is set.
"""

from dalleflow.models.dalle.bart import DalleBart
from dalleflow.models.dalle.config import DalleBartConfig, VQGANConfig
from dalleflow.models.dalle.pipeline import DallePipeline
from dalleflow.models.dalle.text import DalleBartTokenizer, TextNormalizer
from dalleflow.models.dalle.vqgan import VQGANDecoder

__all__ = [
    "DalleBart",
    "DalleBartConfig",
    "DalleBartTokenizer",
    "DallePipeline",
    "TextNormalizer",
    "VQGANConfig",
    "VQGANDecoder",
]
