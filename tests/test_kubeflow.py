"""Kubeflow Pipelines: the compiled YAML, submission, and whole runs with kfp.local.

No cluster here: the YAML is checked as KFP would read it, submission goes to a real HTTP server
that answers like the KFP API, and the pipeline runs with kfp.local's SubprocessRunner (each
component a subprocess of this interpreter, no Docker, no Kubernetes).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from cifar10_kfp.compile import OUTPUT, compile_pipeline
from cifar10_kfp.pipeline import DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, Settings, build_pipeline
from cifar10_kfp.runtime import stage_params
from cifar10_kfp.sections import SECTIONS, stage_entries, to_arguments
from pipeline.core.params import Params, load_params
from tests.cifar_archive import CLASSES, build_archive
from tests.conftest import QUIET_ENV, REPO_ROOT, configured_param_count, free_port, run_stage

# kfp.local warns that our image names do not look like Python images; it runs this interpreter.
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")

STAGES = ["download", "preprocess", "train", "evaluate"]
EXPECTED_ARTIFACTS = {
    ("download", "archive"): "system.Dataset",
    ("preprocess", "prepared"): "system.Dataset",
    ("train", "keras_model"): "system.Model",
    ("train", "train_metrics"): "system.Metrics",
    ("evaluate", "test_metrics"): "system.Metrics",
    ("evaluate", "confusion"): "system.ClassificationMetrics",
    ("evaluate", "report"): "system.HTML",
}
# Tiny run: 5 batches x 50 = 250 training images, 50 carved for validation, 50 test images.
PER_BATCH, N_TEST, VAL_SIZE = 50, 50, 50


@pytest.mark.e2e
def test_no_package_of_ours_is_named_kubeflow_and_ours_is_the_one_imported() -> None:
    # `kubeflow` is the namespace Kubeflow's own SDKs (kubeflow, kubeflow-training, katib)
    # install: a top-level package of that name would break them, or be broken by them.
    code = (
        "import importlib.util, kfp, kfp.kubernetes, kfp.local, kfp.client, kfp.compiler;"
        "spec = importlib.util.find_spec('kubeflow');"
        "print(spec.origin if spec else None);"
        "import cifar10_kfp; print(cifar10_kfp.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    kubeflow_origin, ours = result.stdout.splitlines()
    assert not (REPO_ROOT / "kubeflow").exists()
    assert kubeflow_origin == "None" or not kubeflow_origin.startswith(str(REPO_ROOT))
    assert Path(ours) == REPO_ROOT / "cifar10_kfp" / "__init__.py"


def compiled(tmp_path: Path, settings: Settings | None = None) -> tuple[dict, dict]:
    """Compile to ``tmp_path``; return (pipeline spec, kubernetes platform spec)."""
    path = compile_pipeline(tmp_path / "pipeline.yaml", settings or Settings())
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def executor(spec: dict, stage: str) -> dict:
    return spec["deploymentSpec"]["executors"][f"exec-{stage}"]["container"]


@pytest.fixture(scope="module")
def spec_and_platform(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return compiled(tmp_path_factory.mktemp("kfp"))


def test_four_tasks_in_dependency_order(spec_and_platform: tuple[dict, dict]) -> None:
    tasks = spec_and_platform[0]["root"]["dag"]["tasks"]
    depends = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert depends == {
        "download": set(),
        "preprocess": {"download"},
        "train": {"download", "preprocess"},
        "evaluate": {"preprocess", "train"},
    }
    order: list[str] = []
    while len(order) < len(depends):
        order += sorted(n for n, d in depends.items() if n not in order and d <= set(order))
    assert order == STAGES


def test_only_train_asks_for_one_nvidia_gpu_in_the_gpu_image(
    spec_and_platform: tuple[dict, dict],
) -> None:
    spec = spec_and_platform[0]
    for stage in STAGES:
        container = executor(spec, stage)
        resources = container["resources"]
        assert resources["cpuRequest"] > 0 and resources["memoryRequest"] > 0, stage
        if stage == "train":
            accelerator = resources["accelerator"]
            assert accelerator["resourceType"] == "nvidia.com/gpu"
            assert accelerator["resourceCount"] == "1"
            assert container["image"] == DEFAULT_GPU_IMAGE
        else:
            assert "accelerator" not in resources, stage
            assert container["image"] == DEFAULT_IMAGE, stage
        # The image holds the locked environment: nothing is pip-installed at run time.
        assert "pip install" not in " ".join(container["command"]), stage
    train_inputs = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train_inputs["device"] == {"runtimeValue": {"constant": "gpu"}}


def test_cpu_only_build_asks_for_no_gpu(tmp_path: Path) -> None:
    spec, _ = compiled(tmp_path, Settings(gpu=False, image="registry.example/cifar:1"))
    for stage in STAGES:
        assert "accelerator" not in executor(spec, stage)["resources"]
        assert executor(spec, stage)["image"] == "registry.example/cifar:1"
    train_inputs = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train_inputs["device"] == {"runtimeValue": {"constant": "cpu"}}


def test_artifact_types(spec_and_platform: tuple[dict, dict]) -> None:
    components = spec_and_platform[0]["components"]
    for (stage, name), schema in EXPECTED_ARTIFACTS.items():
        artifact = components[f"comp-{stage}"]["outputDefinitions"]["artifacts"][name]
        assert artifact["artifactType"]["schemaTitle"] == schema, (stage, name)
    # Downstream tasks take the upstream artifacts, not copies or paths in parameters.
    evaluate_inputs = components["comp-evaluate"]["inputDefinitions"]["artifacts"]
    assert evaluate_inputs["keras_model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert evaluate_inputs["prepared"]["artifactType"]["schemaTitle"] == "system.Dataset"


def test_every_parameter_default_is_the_params_yaml_section(
    spec_and_platform: tuple[dict, dict],
) -> None:
    parameters = spec_and_platform[0]["root"]["inputDefinitions"]["parameters"]
    sections = load_params(REPO_ROOT / "params.yaml").model_dump(by_alias=True)
    assert list(parameters) == sorted(SECTIONS)
    # Every section but batch prediction's, which no pipeline stage reads.
    assert set(sections) - set(SECTIONS) == {"predict"}
    for name in SECTIONS:
        assert parameters[name]["parameterType"] == "STRING", name
        assert json.loads(parameters[name]["defaultValue"]) == sections[name], name
    # null travels as JSON null, not as a stand-in value.
    assert sections["preprocess"]["max_train_images"] is None
    assert '"max_train_images": null' in parameters["preprocess"]["defaultValue"]


def typed_leaves(params: Params) -> dict[str, tuple[type, object]]:
    """Every value of ``params`` (nested sections included) by dotted key, with its type."""
    leaves: dict[str, tuple[type, object]] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            leaves[prefix] = (type(value), value)

    walk("", params.model_dump(by_alias=True))
    return leaves


def test_every_schema_field_round_trips_through_the_pipeline_parameters(tmp_path: Path) -> None:
    # params.yaml's values, and the same with every nullable key null and the rest changed:
    # each goes into a compiled pipeline's parameters and comes back, in the pod's reading,
    # with the same value of the same type (an int stays an int, null stays null).
    committed = load_params(REPO_ROOT / "params.yaml")
    nulled = load_params(
        REPO_ROOT / "params.yaml",
        ["data.md5=", "mlflow.sweep=", "train.epochs=3", "train.learning_rate=2",
         "preprocess.max_train_images=500", "model.reference.conv_filters=[8, 16]"],
    )  # fmt: skip
    assert {key for key, (kind, _) in typed_leaves(nulled).items() if kind is type(None)} >= {
        "data.md5", "mlflow.sweep"
    }  # fmt: skip
    for params in (committed, nulled):
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(by_alias=True)))
        spec, _ = compiled(tmp_path, Settings(params_file=params_file))
        defaults = spec["root"]["inputDefinitions"]["parameters"]
        arguments = {name: defaults[name]["defaultValue"] for name in SECTIONS}
        assert arguments == to_arguments(params)
        back, _ = stage_params(arguments)
        assert typed_leaves(back) == typed_leaves(params)
        assert len(typed_leaves(params)) > 40  # every key, nested sections' included


def test_evaluate_never_comes_from_the_cache(spec_and_platform: tuple[dict, dict]) -> None:
    tasks = spec_and_platform[0]["root"]["dag"]["tasks"]
    caching = {
        name: task["cachingOptions"].get("enableCache", False) for name, task in tasks.items()
    }
    assert caching == {"download": True, "preprocess": True, "train": True, "evaluate": False}


def test_mlflow_address_and_credentials_come_from_the_secret(
    spec_and_platform: tuple[dict, dict],
) -> None:
    platform = spec_and_platform[1]
    assert set(platform) == {"exec-train", "exec-evaluate"}
    for name in ("exec-train", "exec-evaluate"):
        secrets = platform[name]["secretAsEnv"]
        required = [s for s in secrets if not s.get("optional")]
        assert len(required) == 1 and required[0]["secretName"] == "mlflow-tracking"
        assert required[0]["keyToEnv"] == [
            {"secretKey": "MLFLOW_TRACKING_URI", "envVar": "MLFLOW_TRACKING_URI"}
        ]
        optional_envs = {m["envVar"] for s in secrets if s.get("optional") for m in s["keyToEnv"]}
        assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= optional_envs


def committed_params(folder: Path) -> Path:
    """params.yaml as HEAD holds it: the working copy may carry `dvc exp run -S` edits."""
    text = git(REPO_ROOT, "show", "HEAD:./params.yaml").stdout
    path = folder / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_committed_yaml_is_what_make_kfp_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("KFP_IMAGE", "KFP_GPU_IMAGE", "KFP_MLFLOW_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env(params_file=committed_params(tmp_path))
    fresh = compile_pipeline(tmp_path / "fresh.yaml", settings)
    assert OUTPUT.read_text() == fresh.read_text(), "stale: run `make kfp` and commit the YAML"


def test_committed_components_take_the_sections_dvc_yaml_lists() -> None:
    # dvc.yaml says what each stage reads; each component takes exactly those sections (train
    # also the device the pipeline fixes with its GPU request), and the pipeline all of them.
    spec = next(yaml.safe_load_all(OUTPUT.read_text()))
    for stage in STAGES:
        sections = {entry.split(".")[0] for entry in stage_entries(stage)}
        inputs = spec["components"][f"comp-{stage}"]["inputDefinitions"]["parameters"]
        extra = {"device"} if stage == "train" else set()
        assert set(inputs) == sections | extra, stage
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == set(SECTIONS)
    listed = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert list(listed) == STAGES


def git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``git ARGS`` in ``folder``, checked; no global config, a fixed identity for commits."""
    import os

    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, check=True, timeout=60
    )


# What `python -m cifar10_kfp.compile` reads: the code, the params, dvc.yaml, the version.
CHECKOUT_PATHS = ("cifar10_kfp", "pipeline", "stages", "params.yaml", "dvc.yaml", "pyproject.toml")


def scratch_checkout(folder: Path) -> Path:
    """A git repository holding this tree's compile inputs (as they are now), all committed."""
    import shutil

    listed = git(
        REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--",
        *CHECKOUT_PATHS,
    ).stdout  # fmt: skip
    for relative in filter(None, listed.split("\0")):
        source = REPO_ROOT / relative
        if source.is_file():  # a tracked file someone deleted is left out
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / relative)
    git(folder, "init", "--quiet")
    git(folder, "add", "--all")
    git(folder, "commit", "--quiet", "--no-gpg-sign", "--message", "scratch")
    return folder


def compile_in(checkout: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m cifar10_kfp.compile ARGS`` with ``checkout`` as the project (cwd first)."""
    import os

    env = {**os.environ, **QUIET_ENV}
    for name in ("KFP_IMAGE", "KFP_GPU_IMAGE", "KFP_MLFLOW_SECRET", "PYTHONPATH"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "cifar10_kfp.compile", *map(str, args)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.e2e
def test_a_new_train_key_reaches_kfp_from_params_yaml_and_the_schema_alone(
    tmp_path: Path,
) -> None:
    checkout = scratch_checkout(tmp_path / "checkout")
    params_yaml = checkout / "params.yaml"
    params_yaml.write_text(
        params_yaml.read_text().replace("train:\n", "train:\n  warmup_epochs: 3\n", 1)
    )
    schema = checkout / "pipeline" / "core" / "params.py"
    anchor = "class TrainParams(Section):\n"
    assert anchor in schema.read_text()
    schema.write_text(
        schema.read_text().replace(anchor, anchor + "    warmup_epochs: int = Field(ge=0)\n", 1)
    )
    git(checkout, "commit", "--quiet", "--no-gpg-sign", "--all", "--message", "train.warmup_epochs")
    changed = git(checkout, "diff", "--name-only", "HEAD~1").stdout.split()
    assert changed == ["params.yaml", "pipeline/core/params.py"]

    result = compile_in(checkout, "--output", tmp_path / "pipeline.yaml")
    assert result.returncode == 0, result.stderr
    spec = next(yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(parameters["train"]["defaultValue"])["warmup_epochs"] == 3
    # The components are the committed ones, code and inputs alike: the key rides in the
    # train section, which the pod validates with the (edited) schema.
    committed = next(yaml.safe_load_all(OUTPUT.read_text()))
    assert spec["components"] == committed["components"]
    assert spec["deploymentSpec"] == committed["deploymentSpec"]


@pytest.mark.e2e
def test_compile_refuses_params_yaml_edited_since_the_last_commit(tmp_path: Path) -> None:
    checkout = scratch_checkout(tmp_path / "checkout")
    params_yaml = checkout / "params.yaml"
    # What `dvc exp run -S train.epochs=2 -S data.url=...` leaves in the workspace.
    params_yaml.write_text(
        params_yaml.read_text()
        .replace("epochs: 50", "epochs: 2", 1)
        .replace("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "/home/me/c.tar.gz")
    )
    output = checkout / "cifar10_kfp" / "cifar10_pipeline.yaml"
    before = output.read_bytes()
    result = compile_in(checkout)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: params.yaml differs from HEAD"), lines
    assert output.read_bytes() == before
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(".")] == []
    # Committed, the same values compile: the refusal is about uncommitted edits only.
    git(checkout, "commit", "--quiet", "--no-gpg-sign", "--all", "--message", "two epochs")
    result = compile_in(checkout)
    assert result.returncode == 0, result.stderr
    parameters = next(yaml.safe_load_all(output.read_text()))["root"]["inputDefinitions"]
    assert json.loads(parameters["parameters"]["train"]["defaultValue"])["epochs"] == 2


@pytest.mark.e2e
def test_compile_needs_no_installed_distribution_metadata(tmp_path: Path) -> None:
    # The Docker images sync with --no-install-project: the environment has every dependency
    # but no cifar10-pipeline distribution. Same here: this venv's site-packages, less ours, and
    # a copy of the tracked files (the checkout's cifar10_pipeline.egg-info would be found).
    import site
    import tomllib

    checkout = scratch_checkout(tmp_path / "checkout")
    (site_packages,) = (Path(p) for p in site.getsitepackages() if Path(p, "kfp").is_dir())
    farm = tmp_path / "site-packages"
    farm.mkdir()
    for entry in site_packages.iterdir():
        if "cifar10_pipeline" not in entry.name:
            (farm / entry.name).symlink_to(entry)
    output = tmp_path / "pipeline.yaml"
    code = (
        "import importlib.metadata, runpy, site, sys\n"
        f"site.addsitedir({str(farm)!r})\n"
        "try:\n"
        "    importlib.metadata.version('cifar10-pipeline')\n"
        "    sys.exit('the project distribution is still installed')\n"
        "except importlib.metadata.PackageNotFoundError:\n"
        "    pass\n"
        f"sys.argv = ['compile', '--output', {str(output)!r}]\n"
        "runpy.run_module('cifar10_kfp.compile', run_name='__main__', alter_sys=True)\n"
    )
    import os

    env = {**os.environ, **QUIET_ENV}
    for name in ("KFP_IMAGE", "KFP_GPU_IMAGE", "PYTHONPATH"):
        env.pop(name, None)
    # -S: no site-packages but the farm; -c puts the working directory (the copy) on sys.path.
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    version = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]["version"]
    spec = next(yaml.safe_load_all(output.read_text()))
    assert executor(spec, "download")["image"] == f"ghcr.io/OWNER/cifar10-pipeline:{version}"
    assert executor(spec, "train")["image"] == f"ghcr.io/OWNER/cifar10-pipeline:{version}-gpu"


@pytest.mark.e2e
def test_images_and_secret_from_the_environment_or_options(tmp_path: Path) -> None:
    env = {
        "KFP_IMAGE": "registry.example/team/cifar:2",
        "KFP_GPU_IMAGE": "registry.example/team/cifar:2-gpu",
        "KFP_MLFLOW_SECRET": "from-env",
    }
    output = tmp_path / "p.yaml"
    result = run_module(
        "cifar10_kfp.compile", "--output", output, "--mlflow-secret", "from-option", env=env
    )
    assert result.returncode == 0, result.stderr
    spec, platform = yaml.safe_load_all(output.read_text())
    assert executor(spec, "download")["image"] == env["KFP_IMAGE"]
    assert executor(spec, "train")["image"] == env["KFP_GPU_IMAGE"]
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert {s["secretName"] for s in secrets["secretAsEnv"]} == {"from-option"}


def run_module(
    module: str, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the repo root."""
    import os

    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO_ROOT,
        env={**os.environ, **QUIET_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


class FakeKfpApi(BaseHTTPRequestHandler):
    """Answers the KFP v2beta1 calls that `kfp.Client.create_run_from_pipeline_package` makes."""

    requests: ClassVar[list[tuple[str, str, Any]]] = []

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._answer({"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._answer({"experiments": [{"experiment_id": "exp-1", "display_name": "x"}]})
        else:
            self._answer({"error": "not found"}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        if self.path.startswith("/apis/v2beta1/runs"):
            self._answer({"run_id": "run-1", "display_name": body.get("display_name")})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self._answer({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        else:
            self._answer({"error": "not found"}, 404)

    def _answer(self, payload: Any, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@contextlib.contextmanager
def fake_kfp_api() -> Iterator[tuple[str, list]]:
    """A real HTTP server on 127.0.0.1 speaking the bits of the KFP API the client uses."""
    FakeKfpApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", FakeKfpApi.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.e2e
def test_submit_sends_the_compiled_pipeline_with_typed_overrides() -> None:
    with fake_kfp_api() as (host, requests):
        result = run_module(
            "cifar10_kfp.submit", "--host", host, "--run-name", "smoke",
            "--set", "train.epochs=2", "--set", "preprocess.max_train_images=500",
            "--set", "data.md5=null", "--set", "train.learning_rate=1",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"run run-1: {host}/#/runs/details/run-1" in result.stdout
    runs = [body for method, path, body in requests if method == "POST" and "/runs" in path]
    assert len(runs) == 1
    run = runs[0]
    assert run["display_name"] == "smoke"
    assert run["experiment_id"] == "exp-1"
    sent = run["pipeline_spec"]
    assert sent["pipeline_spec"]["pipelineInfo"]["name"] == "cifar10-pipeline"
    # The secret mounts travel in the platform spec beside the pipeline spec.
    assert (
        "exec-train"
        in sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    )
    # Only the sections changed travel, whole; learning_rate became a float, md5 JSON null.
    sent = {k: json.loads(v) for k, v in run["runtime_config"]["parameters"].items()}
    sections = load_params(REPO_ROOT / "params.yaml").model_dump(by_alias=True)
    assert sent == {
        "data": sections["data"] | {"md5": None},
        "preprocess": sections["preprocess"] | {"max_train_images": 500},
        "train": sections["train"] | {"epochs": 2, "learning_rate": 1.0},
    }
    assert isinstance(sent["train"]["learning_rate"], float)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=2", "pipeline parameters: train.epoch: unknown key (got 2)"),
        (
            "trian.epochs=2",
            "trian is not a params.yaml section (data, preprocess, model, train, "
            "mlflow, evaluate, register, checks); did you mean train?",
        ),
        ("train_epochs=2", "train_epochs is not a params.yaml section"),
        ("train.device=cpu", "train.device is set by the compiled pipeline"),
        ("train.epochs=0", "train.epochs: must be between 1 and 10000 (got 0)"),
    ],
)
def test_submit_refuses_a_bad_parameter_in_one_line_before_any_request(
    override: str, message: str
) -> None:
    with fake_kfp_api() as (host, requests):
        result = run_module("cifar10_kfp.submit", "--host", host, "--set", override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert requests == []


@pytest.mark.e2e
def test_submit_to_an_unreachable_api_is_one_line() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    result = run_module("cifar10_kfp.submit", "--host", host, "--set", "train.epochs=2")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: cannot submit to Kubeflow Pipelines at {host}: "), lines


# --- Whole runs with kfp.local -------------------------------------------------------------


@contextlib.contextmanager
def local_session(
    root: Path, tracking_uri: str, caching: bool = False, cache_root: Path | None = None
) -> Iterator[pytest.MonkeyPatch]:
    """kfp.local with subprocesses of this interpreter; components import the repo's packages."""
    from kfp import local

    with pytest.MonkeyPatch.context() as patch:
        # kfp.local swaps builtins.print for an indenting one per task and puts back what it
        # found; tasks of a ParallelFor run in threads, so the last to finish can put back an
        # indenting print for good (every later print in this process began with 4 spaces).
        patch.setattr(builtins, "print", builtins.print)
        for name, value in QUIET_ENV.items():
            patch.setenv(name, value)
        # Component code runs in a fresh interpreter elsewhere: `cifar10_kfp` comes from here.
        patch.setenv("PYTHONPATH", str(REPO_ROOT))
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        local.init(
            local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root / "outputs"),
            raise_on_error=True,
            enable_caching=caching,
            cache_root=str(cache_root or root / "cache"),
        )
        yield patch


def tiny_run_arguments(folder: Path, *overrides: str) -> dict[str, str]:
    """Pipeline arguments for a run on a tiny archive: 1 epoch, 200 training images."""
    archive = folder / "cifar-10-binary.tar.gz"
    build_archive(archive, per_batch=PER_BATCH, n_test=N_TEST)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    changed = [f"data.url={archive}", f"data.md5={md5}", f"preprocess.val_size={VAL_SIZE}"]
    changed += ["train.epochs=1", "train.batch_size=64", *overrides]
    params = load_params(REPO_ROOT / "params.yaml", changed)
    return {name: to_arguments(params)[name] for name in ("data", "preprocess", "train")}


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CPU build of the pipeline run twice with kfp.local caching on, into one MLflow store.

    The second run has the same arguments: download, preprocess and train come from the cache,
    evaluate runs again.
    """
    root = tmp_path_factory.mktemp("kfp-local")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    arguments = tiny_run_arguments(root)
    pipeline = build_pipeline(Settings(gpu=False))
    with local_session(root, tracking_uri, caching=True):
        first = pipeline(**arguments)
        second = pipeline(**arguments)
    return {
        "first": first.outputs,
        "second": second.outputs,
        "tracking_uri": tracking_uri,
        "root": root,
        "arguments": arguments,
    }


@pytest.mark.e2e
def test_local_run_model_artifact_is_the_configured_net(local_runs: dict[str, Any]) -> None:
    import keras

    model = local_runs["first"]["model"]
    path = Path(model.path) / model.metadata["file"]
    assert path.suffix == ".keras"
    network = keras.saving.load_model(path, compile=False)
    assert network.count_params() == configured_param_count()
    run_info = json.loads((Path(model.path) / "run.json").read_text())
    assert model.metadata["mlflow_run_id"] == run_info["run_id"]


@pytest.mark.e2e
def test_local_run_classification_metrics_cover_the_test_set(local_runs: dict[str, Any]) -> None:
    matrix = local_runs["first"]["confusion"].metadata["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == CLASSES
    rows = [row["row"] for row in matrix["rows"]]
    assert len(rows) == 10 and all(len(row) == 10 for row in rows)
    assert sum(map(sum, rows)) == N_TEST
    metrics = local_runs["first"]["test_metrics"].metadata
    assert metrics["test_images"] == N_TEST
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    html = Path(local_runs["first"]["report"].path).read_text()
    assert html.startswith("<!DOCTYPE html>") and "CIFAR-10 evaluation report" in html


@pytest.mark.e2e
def test_local_run_train_and_evaluate_share_one_finished_mlflow_run(
    local_runs: dict[str, Any],
) -> None:
    import mlflow

    client = mlflow.MlflowClient(local_runs["tracking_uri"])
    experiment = client.get_experiment_by_name("cifar10-cnn")
    runs = client.search_runs([experiment.experiment_id])
    # Two pipeline runs, one training: the second train came from the cache.
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_id == local_runs["first"]["model"].metadata["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy/val")] == [1]
    expected = {"loss/train", "accuracy/train", "loss/val", "speed/epoch_seconds"}
    assert expected | {"test/accuracy", "test/loss"} <= set(run.data.metrics)
    # The params logged are the pipeline's, upstream ones included, not the schema defaults.
    assert run.data.params["preprocess.val_size"] == str(VAL_SIZE)
    assert run.data.params["train.epochs"] == "1"
    assert run.data.params["data.url"].endswith("cifar-10-binary.tar.gz")


@pytest.mark.e2e
def test_local_run_registers_a_version_and_evaluate_is_never_cached(
    local_runs: dict[str, Any],
) -> None:
    import mlflow

    client = mlflow.MlflowClient(local_runs["tracking_uri"])
    run_id = local_runs["first"]["model"].metadata["mlflow_run_id"]
    (version,) = client.search_model_versions("name='cifar10-cnn'")
    assert version.run_id == run_id
    # The tiny model is below register.min_accuracy (0.70): registered, but no alias at all.
    assert client.get_registered_model("cifar10-cnn").aliases == {}
    assert version.tags["registry.decision"] == "rejected"
    # The second pipeline run took train from the cache (same model artifact) but evaluated
    # again: a second test/accuracy in the same run, and the same version (one per run).
    assert local_runs["second"]["model"].path == local_runs["first"]["model"].path
    assert local_runs["second"]["report"].path != local_runs["first"]["report"].path
    assert len(client.get_metric_history(run_id, "test/accuracy")) == 2


@pytest.mark.e2e
def test_unreachable_mlflow_fails_train_with_the_dvc_stage_line(
    tmp_path: Path, local_runs: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    tracking_uri = f"http://127.0.0.1:{free_port()}"
    pipeline = build_pipeline(Settings(gpu=False))
    # Download and preprocess come from local_runs' cache; another seed makes train run.
    arguments = dict(local_runs["arguments"])
    arguments["train"] = json.dumps(json.loads(arguments["train"]) | {"seed": 7})
    cache = local_runs["root"] / "cache"
    with (
        local_session(tmp_path, tracking_uri, caching=True, cache_root=cache),
        pytest.raises(RuntimeError, match="'train'"),
    ):
        pipeline(**arguments)
    out = capfd.readouterr().out
    prepared = next((local_runs["root"] / "outputs").glob("*/preprocess/prepared"))
    dvc = run_stage(
        "train", "--prepared-dir", prepared, "--models-dir", tmp_path / "dvc-models",
        "--reports-dir", tmp_path / "dvc-reports", "--checkpoints-dir", tmp_path / "ckpt",
        env={"MLFLOW_TRACKING_URI": tracking_uri},
    )  # fmt: skip
    assert dvc.returncode == 1
    (line,) = dvc.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error: MLflow tracking server {tracking_uri} is unreachable")
    assert line in out
    # It failed before training: no epoch line (Keras logs "... - val_loss: ..."), no model.
    assert "val_loss:" not in out
    assert "Traceback" not in out
    assert not any((tmp_path / "outputs").glob("*/train/model/model.keras"))
    assert "evaluate" not in {p.name for p in (tmp_path / "outputs").glob("*/*")}


@pytest.mark.e2e
def test_gpu_train_component_without_a_gpu_fails_at_once(
    tmp_path: Path, prepared_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from kfp import dsl

    from cifar10_kfp.pipeline import build_components

    # The compiled one: GPU image, GPU request.
    train_op = build_components(Settings(), "train")["train"]
    sections = to_arguments(load_params(REPO_ROOT / "params.yaml", ["train.epochs=1"]))
    arguments = {name: sections[name] for name in ("model", "train", "mlflow")}
    arguments["device"] = "gpu"  # what the compiled pipeline passes

    @dsl.pipeline(name="train-only")
    def train_only():  # no annotations: KFP would read "None" (a string here) as a type
        prepared = dsl.importer(artifact_uri=str(prepared_dir), artifact_class=dsl.Dataset)
        archive = dsl.importer(
            artifact_uri=str(tmp_path / "none.tar.gz"), artifact_class=dsl.Dataset
        )
        train_op(prepared=prepared.output, archive=archive.output, **arguments)

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with local_session(tmp_path, tracking_uri), pytest.raises(RuntimeError, match="'train'"):
        train_only()
    out = capfd.readouterr().out
    assert "error: train.device=gpu but" in out and "sees no GPU" in out
    assert "Traceback" not in out and "val_loss:" not in out
    # Before any run or store: the tracking store was never created.
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--image", "Team/CIFAR:1"], "error: image 'Team/CIFAR:1' is not an image reference"),
        (["--gpu-image", "img:a:b"], "error: gpu image 'img:a:b' is not an image reference"),
        (["--mlflow-secret", "MLflow_Creds"],
         "error: MLflow secret 'MLflow_Creds' is not a Kubernetes secret name"),
        (["--output", "/sys/cifar10_pipeline.yaml"],
         "error: cannot write /sys/.cifar10_pipeline.partial.yaml: Permission denied"),
    ],
    ids=["image", "gpu image", "secret name", "unwritable output"],
)  # fmt: skip
def test_compile_refuses_what_kubernetes_or_the_disk_would_in_one_line(
    args: list[str], shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Kubernetes refused such names only when a run started; an unwritable path was a traceback.
    from cifar10_kfp.compile import main

    output = tmp_path / "pipeline.yaml"
    args = args if "--output" in args else [*args, "--output", str(output)]
    handler = signal.getsignal(signal.SIGTERM)  # main() routes SIGTERM for a stage process
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["--params", str(REPO_ROOT / "params.yaml"), *args])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert exit_.value.code in (1, 2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(shown), lines
    assert not output.exists()
