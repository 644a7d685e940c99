import pytest
import torch

from lessons_lib import device as D


def test_cpu_always_available():
    assert D.available_devices()[0] == "cpu"
    assert D.pick_device("cpu") == torch.device("cpu")
    assert D.pick_device("CPU") == torch.device("cpu")


def test_auto_picks_gpu_if_any_else_cpu():
    dev = D.pick_device("auto")
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif "mps" in D.available_devices():
        assert dev.type == "mps"
    else:
        assert dev.type == "cpu"


def test_gpu_request_without_gpu_says_what_is_missing_and_how():
    if len(D.available_devices()) > 1:
        assert D.pick_device("gpu").type in ("cuda", "mps")
        return
    with pytest.raises(D.DeviceUnavailableError) as e:
        D.pick_device("gpu")
    msg = str(e.value)
    assert "No GPU" in msg and "README" in msg and "device='cpu'" in msg
    assert D.gpu_unavailable_reason() in msg
    for kind in ("cuda", "cuda:0", "mps"):
        if kind.split(":")[0] not in D.available_devices():
            with pytest.raises(D.DeviceUnavailableError):
                D.pick_device(kind)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown device kind 'tpu'"):
        D.pick_device("tpu")


def test_hardware_report_has_the_facts():
    r = D.hardware_report()
    text = str(r)
    assert r.logical_cores >= 1 and r.memory_gb > 0 and r.torch_threads >= 1
    assert r.devices == D.available_devices()
    assert "CPU" in text and torch.__version__ in text
    if not torch.cuda.is_available() and "mps" not in r.devices:
        assert r.gpu_reason and "GPU" in text


def test_synchronize_every_present_device():
    for dev in D.available_devices():
        x = torch.ones(8, device=dev) * 2
        D.synchronize(dev)
        assert x.sum().item() == 16
