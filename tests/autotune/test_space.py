"""Search spaces: conditional knobs, normalisation, buckets, Optuna encoding."""
import optuna
import pytest

from braze.autotune.space import (Constraint, DeviceInfo, Knob, Space, bucket_distance, problem_key,
                                  problem_signature)
from braze.autotune.tuner import config_params, suggest_config

CPU = DeviceInfo("cpu", "test", cores=2)


def space():
    return Space((Knob("block", (16, 32, 64)), Knob("vectorize", (False, True)),
                  Knob("width", (2, 4, 8), when=("vectorize", (True,))), Knob("layout", ((1, 0), (0, 1)))),
                 (Constraint("width_le_block", lambda c, p, d: c["width"] <= c["block"] // 4),),
                 default=lambda p, d: {"block": 32, "vectorize": False, "layout": (1, 0)})


def test_quick_configs_are_the_default_then_each_valid_alternate_once():
    import dataclasses

    s = dataclasses.replace(space(), alternates=lambda p, d: (
        {"block": 64}, {"block": 64}, {"vectorize": True, "width": 8, "block": 16}, {"vectorize": True, "width": 4}))
    default = s.default_config({}, CPU)
    assert s.quick_configs({}, CPU) == [default, dict(default, block=64), dict(default, vectorize=True, width=4)]
    assert space().quick_configs({}, CPU) == [default]


def test_conditional_knob_is_optional_when_inactive_and_normalised():
    s = space()
    assert s.valid({"block": 16, "vectorize": False, "layout": (1, 0)}, {}, CPU)
    assert "missing knob width" in s.violations({"block": 16, "vectorize": True, "layout": (1, 0)}, {}, CPU)
    assert s.normalize({"block": 16, "vectorize": False, "width": 8, "layout": (0, 1)}) == \
        {"block": 16, "vectorize": False, "width": 2, "layout": (0, 1)}
    # configs differing only in an inactive knob are one config; the constraint removes width 8 at block 16
    cfgs = list(s.configs({}, CPU))
    assert len(cfgs) == len({tuple(c.items()) for c in cfgs})
    assert len(cfgs) == 3 * 2 + (2 + 3 + 3) * 2
    assert s.default_config({}, CPU) == {"block": 32, "vectorize": False, "width": 2, "layout": (1, 0)}
    assert s.knob("width").when == ("vectorize", (True,))


def test_coerce_restores_tuples_from_json():
    s = space()
    assert s.coerce({"layout": [0, 1], "block": 16}) == {"layout": (0, 1), "block": 16}
    assert s.describe()["knobs"][2] == {"name": "width", "choices": [2, 4, 8], "when": ["vectorize", [True]]}


def test_bucket_distance_compares_sizes_of_the_same_kind_only():
    a = {"shapes": "128x32;32x48", "dtypes": "f32,f32"}
    assert bucket_distance(a, {"shapes": "256x32;32x48", "dtypes": "f32,f32"}) == pytest.approx(1.0)
    assert bucket_distance(a, {"shapes": "128x32;32x48", "dtypes": "bf16,f32"}) is None  # dtype is not a size
    assert bucket_distance(a, {"shapes": "128x32x2;32x48", "dtypes": "f32,f32"}) is None
    assert bucket_distance({"M": 64, "dtype": "bf16"}, {"M": 1024, "dtype": "bf16"}) == pytest.approx(4.0)
    assert problem_signature({"M": 64, "dtype": "bf16"}) == ('{"M":"#","dtype":"bf16"}', (64,))
    assert problem_key({"b": 1, "a": [2, 3]}) == '{"a":[2,3],"b":1}'


def test_optuna_encoding_round_trips_every_config():
    s = space()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    cfgs = list(s.configs({}, CPU))
    for c in cfgs:
        study.enqueue_trial(config_params(c, s))
    for c in cfgs:
        t = study.ask()
        assert suggest_config(t, s) == c
        study.tell(t, 1.0)
    t = study.ask()  # sampled, not enqueued: still a complete config of the space
    c = suggest_config(t, s)
    assert set(c) == set(s.names) and all(c[k.name] in k.choices for k in s.knobs)


def test_a_cpu_key_names_the_cpu_model_and_how_it_was_timed():
    """CPU records are shared only between CPUs of one model and core count, and only when
    timed the way the selection times now (records timed alone are misses, not hits)."""
    from braze.autotune.space import CPU_TIMING, device_info

    here = device_info("cpu")
    assert here.kind == "cpu" and here.key == f"{here.name}|{here.cores}cores|{CPU_TIMING}"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.lower().startswith("model name")), None)
    except OSError:
        model = None
    if model:   # Linux: the model name, not the architecture
        assert here.name == " ".join(model.split()), (here.name, model)
    assert DeviceInfo("cpu", here.name + " v2", cores=here.cores).key != here.key
