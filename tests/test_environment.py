"""environment.yml (Binder / conda) and pyproject.toml must list the same packages at the same versions."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = meta["dependencies"] + meta["optional-dependencies"]["dev"]
    return {_norm(re.split(r"[=<>!~ ]", r, maxsplit=1)[0]): r[len(re.split(r"[=<>!~ ]", r, maxsplit=1)[0]):].strip()
            for r in reqs}


def environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.\-]+)==([^\s#]+)\s*$", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def makefile_torch() -> str:
    m = re.search(r"^TORCH \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile must pin TORCH ?= torch==X"
    return m.group(1)


def test_same_packages():
    py, env = pyproject_pins(), environment_pins()
    assert set(py) == set(env), (
        f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"
    )


def test_same_versions():
    py, env = pyproject_pins(), environment_pins()
    for name, spec in py.items():
        if name == "torch":
            continue
        assert spec == f"=={env[name]}", f"{name}: pyproject {spec} vs environment.yml =={env[name]}"


def test_torch_pin_agrees_everywhere():
    env = environment_pins()["torch"]
    assert env == makefile_torch()
    lower = pyproject_pins()["torch"]
    assert lower.startswith(">="), "pyproject keeps torch a range so GPU users keep their build"
    as_tuple = lambda v: tuple(int(x) for x in v.split("+")[0].split(".")[:2])  # noqa: E731
    assert as_tuple(env) >= as_tuple(lower[2:])
