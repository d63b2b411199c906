"""The numba threading layer lowbit picks survives fork, Python threads and torch's thread pool.

Each check runs in a fresh interpreter with the numba variables removed from its environment,
so it sees lowbit's own choice, not the one of this pytest worker.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest


def _run(code: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    env.pop("NUMBA_NUM_THREADS", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _has_tbb_wheel() -> bool:
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return sys.platform.startswith("linux")


def test_default_layer_is_tbb_when_the_wheel_is_installed_and_never_omp() -> None:
    r = _run(
        """
        import numpy as np, numba, lowbit as lb
        lb.round(np.linspace(-3, 3, 1 << 20, dtype=np.float32), "bf16")
        print(numba.threading_layer())
        """
    )
    assert r.returncode == 0, r.stderr
    layer = r.stdout.split()[-1]
    assert layer != "omp"
    if _has_tbb_wheel():
        assert layer == "tbb"


def test_forked_child_rounds_after_the_parent_used_the_parallel_kernels() -> None:
    # numba's GNU-OpenMP layer kills such a child on its first parallel call.
    r = _run(
        """
        import os, numpy as np, lowbit as lb
        x = np.random.default_rng(0).standard_normal(1 << 21).astype(np.float32)
        ref = lb.round(x, "e4m3", mode="sr", seed=3)
        pid = os.fork()
        if pid == 0:
            y = lb.round(x, "e4m3", mode="sr", seed=3)
            os._exit(0 if np.array_equal(y.view(np.uint32), ref.view(np.uint32)) else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "0", r.stdout + r.stderr


def test_dataloader_fork_workers_can_round() -> None:
    pytest.importorskip("torch")
    r = _run(
        """
        import numpy as np, torch, lowbit as lb
        from torch.utils.data import DataLoader, Dataset
        x = torch.linspace(-5, 5, 1 << 20)
        parent = lb.round(x, "bf16")

        class Rounded(Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                return lb.round(x, "bf16")

        loader = DataLoader(Rounded(), batch_size=1, num_workers=2,
                            multiprocessing_context="fork")
        ok = all(torch.equal(b[0], parent) for b in loader)
        print("equal", ok)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "True", r.stdout + r.stderr


def test_concurrent_calls_from_python_threads_agree_with_serial_calls() -> None:
    # the workqueue layer refuses concurrent launches; the default layer must not.
    r = _run(
        """
        import numpy as np, lowbit as lb
        from concurrent.futures import ThreadPoolExecutor
        rng = np.random.default_rng(1)
        xs = [rng.standard_normal(1 << 19).astype(np.float32) for _ in range(8)]
        serial = [lb.round(x, "fp16", mode="sr", seed=i) for i, x in enumerate(xs)]
        with ThreadPoolExecutor(4) as ex:
            par = list(ex.map(lambda a: lb.round(a[1], "fp16", mode="sr", seed=a[0]),
                              enumerate(xs)))
        print("equal", all(np.array_equal(a, b) for a, b in zip(serial, par)))
        """
    )
    if not _has_tbb_wheel():
        pytest.skip("workqueue fallback is documented as not thread-safe")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "True", r.stdout + r.stderr


def test_torch_thread_setting_survives_a_parallel_kernel() -> None:
    pytest.importorskip("torch")
    r = _run(
        """
        import numpy as np, torch, lowbit as lb
        torch.set_num_threads(1)
        lb.round(np.linspace(-3, 3, 1 << 21, dtype=np.float32), "bf16")
        a = torch.randn(256, 256)
        (a @ a).sum()
        print(torch.get_num_threads())
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "1"
