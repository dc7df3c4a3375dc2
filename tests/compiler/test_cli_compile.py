"""The offline path: ``braze compile`` / ``braze tune`` / ``braze db`` /
``braze bench`` and ``braze.load``: artifacts match eager, reuse the tuning
database, and refuse tampered or foreign files with a clear message.

Kernels come from the autotuner tests' real TVM generator (2-D float32
matmuls), registered in place of the project's generators.
"""
import json
import os
import sys
import textwrap
import zipfile

import pytest
import torch

import braze
from braze.autotune import contract
from braze.compiler.artifact import ArtifactError, _manifest_digest
from braze.compiler.cli import FACTORY_HELP, main

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "autotune"))
import tvm_testgen  # noqa: E402

FACTORY = textwrap.dedent('''
    import torch
    from tools import hf_models

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def llama(seq=16):
        return Logits(hf_models.build("llama", num_hidden_layers=1)), hf_models.inputs(2, seq)

    def llama_model():   # the README's form: the model alone (its config returns a KV cache)
        return hf_models.build("llama", num_hidden_layers=1)

    def mlp():
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(32, 48, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(48, 16, bias=False))
        return m, (torch.randn(24, 32),)
''')


def _env(tmp_path, monkeypatch, tvm: bool):
    from braze.autotune import db as dbmod
    from braze.compiler import kernels

    (tmp_path / "factories.py").write_text(FACTORY)
    if tvm:
        monkeypatch.setattr(contract, "GENERATORS", [("tvm", tvm_testgen.gen_tvm)])
        monkeypatch.setattr(kernels, "_load_generators", lambda: None)
    else:  # the project's own generators; Triton runs interpreted on the CPU
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setenv("BRAZE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BRAZE_TUNING_DB", str(tmp_path / "tuning.db"))
    monkeypatch.setenv("BRAZE_PROGRESS", "0")
    dbmod.forget_open()
    return tmp_path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Kernels from the autotuner tests' TVM generator (static 2-D matmuls)."""
    from braze.autotune import db as dbmod

    pytest.importorskip("tvm", reason="these tests tune real TVM/LLVM kernels")

    yield _env(tmp_path, monkeypatch, tvm=True)
    dbmod.forget_open()


@pytest.fixture
def project_env(tmp_path, monkeypatch):
    """Kernels from the project's generators (Triton, interpreted on the CPU)."""
    from braze.autotune import db as dbmod

    yield _env(tmp_path, monkeypatch, tvm=False)
    dbmod.forget_open()


def test_compile_a_llama_factory_load_it_and_compare_with_eager(project_env, capsys):
    env = project_env
    out = str(env / "llama.braze")
    assert main(["compile", f"{env}/factories.py:llama", "-o", out]) == 0
    assert "checked against eager" in capsys.readouterr().out
    manifest = json.loads((env / "llama.braze" / "manifest.json").read_text())
    assert manifest["device"]["kind"] == "cpu" and manifest["versions"]["braze"] == braze.__version__
    assert set(manifest["files"]) >= {"graph.ir", "input.ir", "constants.safetensors"}
    backends = {k["backend"] for k in manifest["kernels"]}
    if not backends:
        pytest.skip("no code generator produced kernels for the Llama graph here (no Triton?)")
    assert backends <= {"triton", "tvm", "library"}
    for k in manifest["kernels"]:
        if k["backend"] != "library":
            src = (env / "llama.braze" / k["source_file"]).read_text()
            assert src and manifest["files"][k["source_file"]]

    art = braze.load(out)
    sys.path.insert(0, str(env))
    import factories
    model, _ = factories.llama()
    from tools import hf_models
    inp = hf_models.inputs(2, 16, seed=7)  # fresh inputs, same shapes
    with torch.no_grad():
        torch.testing.assert_close(art(**inp), model(**inp), rtol=1e-4, atol=1e-4)
    recs = [launcher.record() for launcher in art.program.launchers.values()]
    assert recs and all(r.config_source == "artifact" for r in recs)

    # a model alone plus --example-shapes, to a zip; the HF output structure survives
    zout = str(env / "raw.zip")
    assert main(["compile", f"{env}/factories.py:llama_model", "-o", zout, "--example-shapes",
                 "input_ids=2x16:int64:0-127", "attention_mask=2x16:int64:1-1"]) == 0
    art2 = braze.load(zout)
    raw = factories.llama_model()
    with torch.no_grad():
        got = art2(**inp)
        torch.testing.assert_close(got.logits, raw(**inp).logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="input_ids"):
        art2(input_ids=inp["input_ids"][:, :8], attention_mask=inp["attention_mask"][:, :8])


def test_tune_then_compile_reuses_the_database(env, capsys):
    from braze.autotune.db import open_db

    db = str(env / "tuning.db")
    out = str(env / "mlp.braze")
    args = ["compile", f"{env}/factories.py:mlp", "-o", out, "--tune", "--trials", "4", "--patience", "3",
            "--trial-timeout", "60", "--seed", "0"]
    assert main(args) == 0
    n = open_db(db).count()
    assert n >= 2 * (4 + 1)  # two matmuls: the TVM search and the library measurement each
    assert {k["source"] for k in json.loads((env / "mlp.braze" / "manifest.json").read_text())["kernels"]} == \
        {"database"}
    capsys.readouterr()
    assert main(args) == 0  # everything is known: no config is measured again
    assert "tuning: 0 configs measured" in capsys.readouterr().out
    assert open_db(db).count() == n

    assert main(["bench", out, "--reps", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["median_ms"] > 0 and res["kernels"] == 2

    assert main(["db", "--db", db, "ls"]) == 0
    assert "tvm_test_matmul" in capsys.readouterr().out
    assert main(["db", "--db", db, "show", "tvm_test_matmul"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["db", "--db", db, "export", str(env / "dump.json")]) == 0
    other = str(env / "other.db")
    assert main(["db", "--db", other, "import", str(env / "dump.json")]) == 0
    assert open_db(other).count() == n
    assert main(["db", "--db", other, "merge", db]) == 0
    assert open_db(other).count() == n
    assert main(["db", "--db", other, "prune", "--failed"]) == 0
    capsys.readouterr()


def _rewrite_manifest(path, **changes):
    mpath = os.path.join(path, "manifest.json")
    with open(mpath) as f:
        m = json.load(f)
    for k, v in changes.items():
        m[k] = v
    m["manifest_sha256"] = _manifest_digest(m)
    with open(mpath, "w") as f:
        json.dump(m, f)


def test_tampered_and_foreign_artifacts_are_refused(env, capsys, caplog):
    import shutil

    out = str(env / "mlp.braze")
    assert main(["compile", f"{env}/factories.py:mlp", "-o", out]) == 0
    braze.load(out)

    def copy(name):
        dst = str(env / name)
        shutil.copytree(out, dst)
        return dst

    t = copy("t1")
    with open(os.path.join(t, "graph.ir"), "a") as f:
        f.write("\n# an innocent comment\n")
    with pytest.raises(ArtifactError, match="tampered .*graph.ir changed"):
        braze.load(t)
    assert main(["bench", t]) == 2
    assert "tampered" in capsys.readouterr().err

    t = copy("t2")
    with open(os.path.join(t, "constants.safetensors"), "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.raises(ArtifactError, match="constants.safetensors changed"):
        braze.load(t)

    t = copy("t3")
    with open(os.path.join(t, "manifest.json")) as f:
        m = json.load(f)
    m["kernels"][0]["config"] = {"tile_m": 1}
    with open(os.path.join(t, "manifest.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(ArtifactError, match="manifest.json changed"):
        braze.load(t)

    t = copy("t4")
    _rewrite_manifest(t, versions={**m["versions"], "braze": "9.9.0"})
    with pytest.raises(ArtifactError, match="compiled by braze 9.9.0.*recompile"):
        braze.load(t)

    t = copy("t5")
    _rewrite_manifest(t, format_version=99)
    with pytest.raises(ArtifactError, match="format version 99"):
        braze.load(t)

    os.makedirs(env / "foreign")
    (env / "foreign" / "model.pt").write_bytes(b"not ours")
    with pytest.raises(ArtifactError, match="not a braze artifact"):
        braze.load(str(env / "foreign"))
    with zipfile.ZipFile(env / "foreign.zip", "w") as z:
        z.writestr("manifest.json", json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError, match="not a braze artifact"):
        braze.load(str(env / "foreign.zip"))
    (env / "plain.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="neither a directory nor a zip"):
        braze.load(str(env / "plain.bin"))

    # tuned on another device: loaded, its choices re-selected here (and said so)
    t = copy("t6")
    _rewrite_manifest(t, device={**m["device"], "name": "Other CPU", "key": "Other CPU|64cores"})
    caplog.set_level("WARNING")
    art = braze.load(t)
    assert any("was tuned on Other CPU|64cores" in r.getMessage() for r in caplog.records)
    x = torch.randn(24, 32)
    art(x)
    assert all(launcher.record().config_source != "artifact" for launcher in art.program.launchers.values())


def test_cli_mistakes_are_one_line_messages(tmp_path, monkeypatch, capsys):
    """A missing import file and a factory keyword the factory does not take: exit status 2
    and a message naming the problem, no traceback."""
    (tmp_path / "factories.py").write_text(FACTORY)
    monkeypatch.setenv("BRAZE_TUNING_DB", str(tmp_path / "t.db"))
    assert main(["db", "import", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["compile", f"{tmp_path}/factories.py:mlp", "--arg", "x=1", "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--arg" in err and "'x'" in err and "Traceback" not in err


def test_help_documents_the_factory_convention(capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    text = capsys.readouterr().out
    assert "MODULE:FACTORY" in text and "(model, example_inputs)" in text and "--example-shapes" in text
    assert "MODULE:FACTORY names a Python callable" in FACTORY_HELP
    assert main(["compile", "nonexistent_module_xyz:f", "-o", "/tmp/x"]) == 2
    assert "cannot import nonexistent_module_xyz" in capsys.readouterr().err


def test_a_compiled_artifact_serialises_its_weights_only_when_saved(tmp_path):
    """Compiling and running never copies the weights to the host; saving writes
    them, seals the manifest, and the saved artifact loads and matches."""
    from tools import hf_models

    model = hf_models.build("llama", num_hidden_layers=1)
    model.config.use_cache = False
    inp = hf_models.inputs(2, 8)
    art = braze.compile(model, (), inp, backend="torch")
    assert "constants.safetensors" not in art.files and "manifest_sha256" not in art.manifest
    with torch.no_grad():
        want = model(**inp).logits
        torch.testing.assert_close(art(**inp).logits, want)
        model.lm_head.weight.mul_(2.0)          # the artifact shares the model's weights
        want = model(**inp).logits
    out = art.save(str(tmp_path / "a"))
    assert "constants.safetensors" in art.files and art.manifest["manifest_sha256"]
    with torch.no_grad():
        torch.testing.assert_close(braze.load(out)(**inp).logits, want)


@pytest.mark.parametrize("family,padding", [("llama", "left"), ("bert", "right"), ("bert", "left"),
                                            ("bloom", "left")])
def test_compiling_on_a_padded_example_checks_the_valid_tokens(family, padding, tmp_path):
    """braze equals eager on valid tokens (``compiler/eager_check.py``): the compile check
    compares an unpacked output there (it must be zero at padding), and compares a padded
    program (BLOOM: ALiBi keeps it padded) on the valid tokens where its left-padding rows,
    which see no key, differ. BERT's pooler reads token 0, which only some paddings keep
    valid: a loaded artifact has no fallback, so it holds the graph without padding
    elimination, equal to eager everywhere, and runs any padding (checked below with
    the other padding side)."""
    from tools import hf_models

    model = hf_models.build(family)
    model.config.use_cache = False
    inp = hf_models.inputs(3, 10, padding=padding, lengths=[10, 1, 6], seed=4)
    art = braze.compile(model, (), inp)
    check = art.manifest["check"]
    assert check["max_rel_err"] <= 1e-3
    assert check.get("unchecked_outputs", []) == []
    packed = any(n.op == "padding_index" for n in art.program.graph.compute_nodes)
    assert packed == (family == "llama")   # BERT's pooler reads token 0: the artifact runs it unpacked
    assert check.get("valid_tokens_only", []) == ([0] if family == "bloom" else [])
    valid = inp["attention_mask"].bool()
    with torch.no_grad():
        want = model(**inp)[0]
        got = braze.load(art.save(str(tmp_path / "a")))(**inp)[0]
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-4, atol=1e-4)
    if packed:
        assert torch.count_nonzero(got[~valid]) == 0
    elif family == "bert":   # unpacked: eager's values at padding positions too, for either padding
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        other = hf_models.inputs(3, 10, padding="left" if padding == "right" else "right", lengths=[10, 1, 6],
                                 seed=5)
        with torch.no_grad():
            torch.testing.assert_close(braze.load(str(tmp_path / "a"))(**other).pooler_output,
                                       model(**other).pooler_output, rtol=1e-4, atol=1e-4)


def test_the_check_compares_valid_positions_and_requires_zeros_at_padding():
    from braze.compiler.eager_check import LENIENT, PADDED, UNPACKED, compare_outputs

    want = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    got = torch.where(mask[..., None], want, torch.zeros(()))
    res = compare_outputs((got,), (want,), {0: (UNPACKED, mask)})
    assert (res.max_rel_err, res.problem, res.unchecked) == (0.0, None, [])
    assert compare_outputs((got,), (want,)).problem.startswith("output 0: max relative error")
    bad = got.clone()
    bad[1, 2, 0] = 1.0
    assert compare_outputs((bad,), (want,), {0: (UNPACKED, mask)}).problem == "output 0: nonzero at padding positions"
    bad = got.clone()
    bad[0, 1, 3] += 1.0
    assert "max relative error" in compare_outputs((bad,), (want,), {0: (UNPACKED, mask)}).problem
    # a padded program: compared everywhere, on valid tokens only if that is where it differs
    res = compare_outputs((got,), (want,), {0: (PADDED, mask)})
    assert res.problem is None and res.valid_tokens_only == [0]
    assert compare_outputs((bad,), (want,), {0: (PADDED, mask)}).problem is not None
    assert compare_outputs((want,), (want,), {0: (PADDED, mask)}).valid_tokens_only == []
    # a lenient leaf (computed from padding positions) that differs is reported unchecked, not failed
    pooled = torch.randn(2, 4)
    res = compare_outputs((got, pooled + 1), (want, pooled), {0: (UNPACKED, mask), 1: (LENIENT, None)})
    assert res.problem is None and res.unchecked == [1]
    assert compare_outputs((bad, pooled), (want, pooled), {0: (UNPACKED, mask), 1: (LENIENT, None)}).problem
