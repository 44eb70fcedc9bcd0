"""docker-compose.yml as Docker Compose itself reads it.

Renders the file with Debian's `docker-compose config` (apt package docker-compose;
CI installs it) against a temporary .env made from .env.example, and checks what
the stack promises: the three services, a loopback-only dashboard, a healthy-db
gate with a named volume, read-only data, and credentials only from .env.
No container is started, so no engine is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
GPU = REPO / "docker-compose.gpu.yml"
ENV_EXAMPLE = REPO / ".env.example"
PASSWORD = "Tst-pw_9f3c1e7b"  # stands in for the user's real one


def _docker_compose() -> str:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not found: apt-get install docker-compose"
    return exe


def _env_file(tmp_path: Path, **overrides: str) -> Path:
    """.env.example with a password filled in, plus any overrides."""
    text = ENV_EXAMPLE.read_text()
    values = {"POSTGRES_PASSWORD": PASSWORD, **overrides}
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", text)
        if n == 0:
            text += f"\n{key}={value}\n"
    env = tmp_path / ".env"
    env.write_text(text)
    return env


def _config(env: Path, *files: Path) -> dict:
    args = [_docker_compose(), "--env-file", str(env)]
    for f in files or (COMPOSE,):
        args += ["-f", str(f)]
    out = subprocess.run(args + ["config"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _config(_env_file(tmp_path_factory.mktemp("env")))


def test_services_exist(config: dict) -> None:
    assert {"db", "worker", "dashboard"} <= set(config["services"])


def test_dashboard_published_on_loopback_only(tmp_path: Path) -> None:
    config = _config(_env_file(tmp_path, HPO_DASHBOARD_PORT="18080"))
    services = config["services"]
    ports = services["dashboard"]["ports"]
    assert ports, "dashboard publishes no port"
    for port in ports:
        spec = port if isinstance(port, str) else f"{port.get('host_ip')}:{port.get('published')}"
        assert spec.startswith("127.0.0.1:18080:8080"), spec
    for name, svc in services.items():
        if name not in ("dashboard", "mlflow"):  # mlflow: test_mlflow_profile_...
            assert not svc.get("ports"), f"{name} publishes ports: {svc['ports']}"
    assert "--host 0.0.0.0 --port 8080" in services["dashboard"]["command"]


def test_db_healthcheck_and_named_volume(config: dict) -> None:
    db = config["services"]["db"]
    test = db["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test if isinstance(test, list) else [test])
    named = [v for v in db["volumes"] if v.split(":")[0] in config["volumes"]]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in named), db["volumes"]


def test_workers_wait_for_healthy_db(config: dict) -> None:
    for name in ("worker", "dashboard"):
        assert config["services"][name]["depends_on"]["db"]["condition"] == "service_healthy"


def test_worker_data_read_only_and_shared_volumes(config: dict, tmp_path: Path) -> None:
    worker = config["services"]["worker"]
    data = [v for v in worker["volumes"] if v.split(":")[1] == "/data"]
    assert len(data) == 1 and data[0].endswith(":ro"), worker["volumes"]
    assert data[0].split(":")[0] == str(REPO / "data")
    sources = {v.split(":")[0] for v in worker["volumes"]}
    assert {"hpo-cache", "hpo-artifacts", "hpo-exports"} <= sources
    assert {"hpo-cache", "hpo-artifacts", "hpo-exports", "db-data"} <= set(config["volumes"])
    # The host folder comes from HPO_DATA_DIR_HOST.
    other = _config(_env_file(tmp_path, HPO_DATA_DIR_HOST=str(tmp_path / "imgs")))
    assert f"{tmp_path / 'imgs'}:/data:ro" in other["services"]["worker"]["volumes"]


def test_worker_command_and_storage(config: dict) -> None:
    worker = config["services"]["worker"]
    assert worker["command"].split()[:4] == ["hpo", "worker", "demo", "--trials"]
    url = f"postgresql+psycopg://hpo:{PASSWORD}@db:5432/hpo"
    for name in ("worker", "dashboard"):
        assert config["services"][name]["environment"]["HPO_STORAGE"] == url
    assert config["services"]["db"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD


def test_no_password_literal_in_compose_files() -> None:
    raw = COMPOSE.read_text() + GPU.read_text()
    assert PASSWORD not in raw
    # Every mention of a password is the ${POSTGRES_PASSWORD...} variable.
    for line in raw.splitlines():
        code = line.split("#", 1)[0]
        if re.search(r"(?i)passw(or)?d", code):
            assert "${POSTGRES_PASSWORD" in code, line
        # ... and never with a default value to fall back on.
        assert not re.search(r"\$\{POSTGRES_PASSWORD:?-", code), line
        # URLs with credentials take both parts from variables.
        for m in re.finditer(r"://([^@\s]*)@", code):
            user, _, pw = m.group(1).partition(":")
            assert user.startswith("${") and pw.startswith("${"), line
    assert re.search(r"(?m)^POSTGRES_PASSWORD=$", ENV_EXAMPLE.read_text()), (
        ".env.example holds a password"
    )


def test_missing_password_is_an_error(tmp_path: Path) -> None:
    env = _env_file(tmp_path, POSTGRES_PASSWORD="")
    out = subprocess.run(
        [_docker_compose(), "--env-file", str(env), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode != 0
    assert "POSTGRES_PASSWORD" in out.stderr


def test_env_file_is_git_ignored() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, timeout=30)
    assert ignored.returncode == 0, ".env is not git-ignored"


def test_gpu_override_reserves_nvidia_gpu(tmp_path: Path) -> None:
    base = _config(_env_file(tmp_path))
    assert "resources" not in base["services"]["worker"].get("deploy", {})
    gpu = _config(_env_file(tmp_path), COMPOSE, GPU)
    devices = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["services"]["worker"]["build"]["args"]["TF_PACKAGE"] == "tensorflow[and-cuda]"


def test_mlflow_profile_service_on_loopback_with_postgres_store_and_named_volume(
    tmp_path: Path,
) -> None:
    config = _config(_env_file(tmp_path, HPO_MLFLOW_PORT="15000"))
    mlflow = config["services"]["mlflow"]
    assert mlflow["profiles"] == ["mlflow"]  # off unless the profile is on
    assert [
        p if isinstance(p, str) else f"{p['host_ip']}:{p['published']}:{p['target']}"
        for p in mlflow["ports"]
    ] in (["127.0.0.1:15000:5000/tcp"], ["127.0.0.1:15000:5000"])
    assert mlflow["depends_on"]["db"]["condition"] == "service_healthy"
    env = mlflow["environment"]
    assert env["POSTGRES_PASSWORD"] == PASSWORD and env["MLFLOW_DB"] == "mlflow"
    assert "sh /app/docker/mlflow/serve.sh" == mlflow["command"]
    serve = (REPO / "docker/mlflow/serve.sh").read_text()
    assert (
        '--backend-store-uri "postgresql+psycopg://$POSTGRES_USER:$POSTGRES_PASSWORD@$MLFLOW_DB_HOST:5432/$MLFLOW_DB"'
        in serve
    )
    assert ': "${MLFLOW_DB_HOST:=db}"' in serve
    assert "mlflow-artifacts:/var/lib/mlflow/artifacts:rw" in mlflow["volumes"]
    assert "mlflow-artifacts" in config["volumes"]
    # Workers mirror to it when HPO_MLFLOW_URI says so, and not otherwise.
    assert config["services"]["worker"]["environment"]["HPO_MLFLOW_URI"] == ""
    on = _config(
        _env_file(tmp_path, COMPOSE_PROFILES="mlflow", HPO_MLFLOW_URI="http://mlflow:5000")
    )
    assert on["services"]["worker"]["environment"]["HPO_MLFLOW_URI"] == "http://mlflow:5000"
