"""The CPU thread regime of a program (compiler/cpu_threads.py): timed on the first
warm calls, the faster kept, torch's thread count restored after every call."""
from __future__ import annotations

import time

import pytest
import torch

import braze
from braze.compiler import cpu_threads
from braze.compiler.cpu_threads import ThreadRegime


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("faster", ["tvm", "shared"])
def test_the_faster_regime_is_kept_and_threads_are_restored(faster, two_threads):
    seen = []

    def program(x):
        single = torch.get_num_threads() == 1
        seen.append(single)
        time.sleep(0.002 if single == (faster == "tvm") else 0.02)
        return x + 1

    notes: list = []
    regime = ThreadRegime("g", notes.append)
    trials = 2 * ThreadRegime.TRIALS
    for i in range(trials + 3):
        assert regime.run(program, i) == i + 1
        assert torch.get_num_threads() == 2          # restored after every call
    assert regime.choice == faster
    assert seen[:trials] == [False, True] * ThreadRegime.TRIALS      # alternated while timing
    assert all(s == (faster == "tvm") for s in seen[trials:])
    assert len(notes) == 1 and f"{faster} regime" in notes[0]


def test_tvm_must_win_by_the_margin(two_threads):
    regime = ThreadRegime("g")
    for _ in range(2 * ThreadRegime.TRIALS):
        regime.run(lambda: time.sleep(0.01))           # the same either way: shared stays
    assert regime.choice == "shared"


def test_only_multi_threaded_cpu_programs_with_spinning_openmp(two_threads, monkeypatch):
    x = torch.zeros(2)
    assert cpu_threads.applies([x])
    assert not cpu_threads.applies([])
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert not cpu_threads.applies([x])
    monkeypatch.delenv("OMP_WAIT_POLICY")
    torch.set_num_threads(1)
    assert not cpu_threads.applies([x])


def test_a_compiled_model_records_its_choice_and_stays_correct(two_threads):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64)).eval()
    reports: list = []
    from braze.compiler.backend import make_backend
    from braze.config import Options

    fast = torch.compile(model, backend=make_backend(Options(strict=True), reports), dynamic=True)
    xs = [torch.randn(8, 64), torch.randn(5, 64)]
    with torch.inference_mode():
        for i in range(16):                 # two shapes of one program, alternating: timed apart
            x = xs[i % 2]
            torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
            assert torch.get_num_threads() == 2
    assert len(reports) == 1
    notes = [n for n in reports[0].notes if n.startswith("CPU threads:")]
    assert len(notes) == 2, reports[0].notes
