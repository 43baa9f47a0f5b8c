"""The worker on a CUDA device (issue 9): `--device cuda:N`.

- Without a usable device the worker refuses to start, non-zero, saying why: "CUDA support was
  not built" (the default, CPU-only build), "no CUDA device is visible" (a `make CUDA=1` build
  on a machine without a GPU) or "no such device" (an ordinal the machine lacks). An unknown
  device name is refused too.
- With a GPU and a `make CUDA=1` build (PARLEY_BUILD=build-cuda, as `make CUDA=1 test-cuda`
  runs it), a whole stack serves chat completions from a worker started with --device cuda:0
  (token-for-token agreement with the CPU backend is checked by tests/cuda/test_cuda.c, with
  the near-tie rule of issue 3). Elsewhere this test prints
  "skipped: no GPU" (or that CUDA support is not built) instead of passing silently.

This module starts its own stack for the GPU worker (the session stack runs on the CPU).
"""

import shutil
import subprocess

import pytest

import parley_stack as ps
from conftest import binary, run_binary
from test_conversations import api


def gpu_visible() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return r.returncode == 0 and "GPU" in r.stdout


def start_output(device: str) -> tuple[int, str]:
    r = run_binary([binary("worker"), "--device", device, "--models", ""], timeout=30)
    return r.returncode, r.stdout + r.stderr


def cuda_built() -> bool:
    # An ordinal no machine has: every build refuses it at once, saying why (a usable cuda:0
    # would start the worker for good).
    rc, out = start_output("cuda:99")
    return "CUDA support was not built" not in out


def test_worker_refuses_unusable_device():
    if gpu_visible() and cuda_built():
        rc, out = start_output("cuda:99")
        assert rc != 0 and "no such device" in out, out
        return
    rc, out = start_output("cuda:0")
    assert rc != 0, out
    assert "CUDA support was not built" in out or "no CUDA device is visible" in out, out
    rc, out = start_output("tpu")
    assert rc != 0 and "unknown device 'tpu'" in out, out


def complete(st, content, max_tokens=16):
    r = api(st, "/v1/chat/completions", "POST",
            {"model": ps.MODEL_NAME, "messages": [{"role": "user", "content": content}],
             "max_tokens": max_tokens, "temperature": 0},
            token=st.api_key(), timeout=60)
    assert r.status == 200, r.text
    return r.json()


@pytest.mark.timeout(240)
def test_stack_serves_from_gpu_worker(workdir, model_file):
    if not gpu_visible():
        pytest.skip("skipped: no GPU")
    if not cuda_built():
        pytest.skip("skipped: CUDA support not built (make CUDA=1 test-cuda)")
    st = ps.Stack(var_dir=workdir / "cuda-worker", ports=ps.Ports.pick_free(),
                  model_path=model_file, drain_timeout="5s", worker_timeout="3s", durable=False,
                  die_with_parent=True, extra_args={"worker": ["--device", "cuda:0"]})
    try:
        st.start(timeout=120)
        for prompt in ("Name a colour.", "What is 2 + 2?", "Say hello in French."):
            j = complete(st, prompt)
            assert j["choices"][0]["message"]["content"].strip(), j
            assert j["usage"]["completion_tokens"] > 0
            assert j["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        st.stop(timeout=20)
