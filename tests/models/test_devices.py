import pytest
import torch

from dalleflow.models.devices import default_device, resolve_dtype


def test_half_precision_on_a_gpu_and_float32_on_a_cpu_unless_the_config_says():
    assert resolve_dtype(None, "cuda") == torch.float16
    assert resolve_dtype(None, "cuda:1") == torch.float16
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cuda") == torch.bfloat16
    assert resolve_dtype(torch.float32, "cuda") == torch.float32


def test_an_unknown_dtype_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown torch dtype"):
        resolve_dtype("float17", "cpu")
    with pytest.raises(ValueError, match="unknown torch dtype"):
        resolve_dtype("nn", "cpu")  # an attribute of torch, but no dtype


def test_the_default_device_is_the_gpu_when_there_is_one():
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
