"""config: finding the workspace, reading invoicesync.toml / [tool.invoicesync], environments, overrides."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from invoicesync.client import CampfireClient
from invoicesync.config import DEFAULT_BASE_URL, BackendConfig, load_all_settings, load_settings
from invoicesync.errors import ConfigError
from tests.spec_tree import build_file_tree

TWO_ENVS = """\
specs = "invoices"
state = "recorded"
default_environment = "sandbox"

[environments.sandbox]
endpoint = "sandbox"
vars = { entity = 54, rate = 0.1 }
var_files = ["vars/sandbox.yaml"]

[environments.staging]
base_url = "https://staging.example.com/"
api_key_env = "STAGING_CAMPFIRE_KEY"
"""


def test_no_config_gives_default_http_environment(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    assert settings.root == tmp_path
    assert settings.specs_dir == tmp_path / "specs"
    assert settings.state_dir == tmp_path / "state"
    assert settings.config_file is None
    env = settings.environment
    assert (env.name, env.endpoint, env.base_url, env.api_key_env) == ("default", "http", DEFAULT_BASE_URL, "CAMPFIRE_API_KEY")
    assert settings.api_key is None


def test_no_config_reads_base_url_and_key_from_environment(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"CAMPFIRE_BASE_URL": "http://127.0.0.1:8080/", "CAMPFIRE_API_KEY": "k-123"})
    assert settings.environment.base_url == "http://127.0.0.1:8080"
    assert settings.api_key == "k-123"


def test_invoicesync_toml_environments_and_paths(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS})
    settings = load_settings(tmp_path, environ={})
    assert settings.config_file == tmp_path / "invoicesync.toml"
    assert settings.specs_dir == tmp_path / "invoices"
    assert settings.state_dir == tmp_path / "recorded"
    assert settings.environment_names == ("sandbox", "staging")
    env = settings.environment
    assert env.name == "sandbox" and env.endpoint == "sandbox"
    assert env.vars == {"entity": 54, "rate": Decimal("0.1")}
    assert env.var_files == (tmp_path / "vars" / "sandbox.yaml",)
    with pytest.raises(TypeError):
        env.vars["entity"] = 1  # type: ignore[index]


def test_pyproject_tool_table(tmp_path: Path) -> None:
    build_file_tree(
        tmp_path,
        {
            "pyproject.toml": """\
                [project]
                name = "x"
                [tool.invoicesync]
                default_environment = "sandbox"
                [tool.invoicesync.environments.sandbox]
                endpoint = "sandbox"
            """
        },
    )
    settings = load_settings(tmp_path, environ={})
    assert settings.config_file == tmp_path / "pyproject.toml"
    assert settings.environment.endpoint == "sandbox"


def test_cli_environment_beats_env_var_beats_default(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS})
    assert load_settings(tmp_path, environ={"INVOICESYNC_ENV": "staging"}).environment.name == "staging"
    settings = load_settings(tmp_path, environment="sandbox", environ={"INVOICESYNC_ENV": "staging"})
    assert settings.environment.name == "sandbox"


def test_api_key_read_from_the_variable_the_environment_names(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS})
    environ = {"STAGING_CAMPFIRE_KEY": "staging-secret", "CAMPFIRE_API_KEY": "other"}
    settings = load_settings(tmp_path, environment="staging", environ=environ)
    assert settings.environment.base_url == "https://staging.example.com"
    assert settings.environment.endpoint == "http"
    assert settings.api_key == "staging-secret"


def test_base_url_override_turns_sandbox_environment_into_http(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS})
    settings = load_settings(tmp_path, environ={"CAMPFIRE_BASE_URL": "http://127.0.0.1:9999"})
    assert settings.environment.name == "sandbox"
    assert settings.environment.endpoint == "http"
    assert settings.environment.base_url == "http://127.0.0.1:9999"
    assert settings.environment.vars["entity"] == 54


def test_api_key_never_in_repr_or_str(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"CAMPFIRE_API_KEY": "sk-very-secret"})
    assert settings.api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings)


def test_unknown_environment_is_named_with_the_defined_ones(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS})
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path, environment="prod", environ={})
    message = str(exc.value)
    assert "'prod'" in message and "sandbox, staging" in message and "invoicesync.toml" in message


def test_unknown_environment_from_env_var(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS})
    with pytest.raises(ConfigError, match="INVOICESYNC_ENV"):
        load_settings(tmp_path, environ={"INVOICESYNC_ENV": "nope"})


def test_unknown_top_level_key_suggests_the_right_one(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": 'spec = "specs"\n'})
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path, environ={})
    assert str(exc.value).startswith("invoicesync.toml: unknown key 'spec' (did you mean 'specs'?)")


def test_unknown_environment_key_is_named_with_its_table(tmp_path: Path) -> None:
    build_file_tree(
        tmp_path,
        {"pyproject.toml": '[tool.invoicesync.environments.prod]\nbase_ulr = "https://x.example"\n'},
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path, environ={})
    message = str(exc.value)
    assert "pyproject.toml" in message
    assert "'tool.invoicesync.environments.prod.base_ulr'" in message
    assert "did you mean 'base_url'" in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": "specs = \n"})
    with pytest.raises(ConfigError, match=r"invoicesync.toml: not valid TOML.*line 1"):
        load_settings(tmp_path, environ={})


def test_bad_values_are_config_errors(tmp_path: Path) -> None:
    cases = {
        '[environments.a]\nendpoint = "grpc"\n': "endpoint must be one of",
        '[environments.a]\nendpoint = "sandbox"\nbase_url = "http://x"\n': "both endpoint",
        '[environments.a]\nbase_url = "ftp://x"\n': "http:// or https://",
        '[environments.a]\napi_key_env = "sk_live_123 456"\n': "name of an environment variable",
        'default_environment = "b"\n[environments.a]\n': "'b', which is not defined",
        "[environments.a]\n[environments.b]\n": "several environments are defined",
    }
    for text, expected in cases.items():
        build_file_tree(tmp_path, {"invoicesync.toml": text})
        with pytest.raises(ConfigError, match=expected):
            load_settings(tmp_path, environ={})


def test_both_config_files_is_an_error(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": "", "pyproject.toml": "[tool.invoicesync]\n"})
    with pytest.raises(ConfigError, match="keep one of them"):
        load_settings(tmp_path, environ={})


def test_missing_workspace_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope", environ={})


def test_discovers_workspace_in_a_parent_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS, "invoices/sub/x.yaml": ""})
    monkeypatch.chdir(tmp_path / "invoices" / "sub")
    settings = load_settings(environ={})
    assert settings.root == tmp_path
    assert settings.relative(tmp_path / "invoices" / "sub" / "x.yaml") == "invoices/sub/x.yaml"


def test_without_any_config_the_current_folder_is_the_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert load_settings(environ={}).root == tmp_path / "a"


def test_relative_outside_root_is_kept_as_given(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / ".", environ={})
    assert settings.relative(Path("/elsewhere/file.yaml")) == "/elsewhere/file.yaml"


# --- base URLs: refused here, naming the variable or key, rather than inside the client ---------------

BAD_URLS = [
    "api.meetcampfire.com",  # no scheme
    "ftp://x",
    "http://",
    "http://exa mple.com",
    "http://[::1",
    "https://host:99999",
    "https://host:0",
    "https://host:8o",
    "https://user:s3cret-pw@host:99999",  # a password in a URL that is refused anyway: never echoed
    "user:s3cret-pw@api.meetcampfire.com",
    "https://exämple.com",
    "http://\u200b",
    "https://host\x00.com",
    "https://" + "a" * 5000 + ".com",
    "https://api.meetcampfire.com/?page=1",
    "https://api.meetcampfire.com/#top",
    "http://-bad-.com",
    "http://a..b",
    "http://999.1.1.1",
    "https://host/p%zz",
]
GOOD_URLS = {
    "https://api.meetcampfire.com": "https://api.meetcampfire.com",
    "https://api.meetcampfire.com/": "https://api.meetcampfire.com",
    " http://127.0.0.1:8080/ \n": "http://127.0.0.1:8080",
    "http://[::1]:8000/campfire/": "http://[::1]:8000/campfire",
    "HTTPS://Api.Example.com:443/v1": "https://Api.Example.com:443/v1",
    "https://proxyuser:s3cret-pw@proxy.example.com/cf": "https://proxy.example.com/cf",
    "https://xn--bcher-kva.example": "https://xn--bcher-kva.example",
    "http://campfire_mock:8000": "http://campfire_mock:8000",
}


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_base_url_variable_is_a_config_error_naming_it(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={"CAMPFIRE_BASE_URL": url, "CAMPFIRE_API_KEY": "k-123"})
    message = str(info.value)
    assert message.startswith("CAMPFIRE_BASE_URL ")
    assert "s3cret-pw" not in message and len(message) < 400


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_base_url_key_is_a_config_error_naming_it(tmp_path: Path, url: str) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": f"[environments.prod]\nbase_url = {json.dumps(url)}\n"})
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    message = str(info.value)
    assert message.startswith("invoicesync.toml: environments.prod.base_url ")
    assert "s3cret-pw" not in message and len(message) < 450


@pytest.mark.parametrize("url, kept", list(GOOD_URLS.items()))
def test_a_good_base_url_is_kept_as_the_client_takes_it(tmp_path: Path, url: str, kept: str) -> None:
    settings = load_settings(tmp_path, environ={"CAMPFIRE_BASE_URL": url})
    assert settings.environment.base_url == kept
    assert CampfireClient(kept, "k-123").base_url == CampfireClient(url, "k-123").base_url


@pytest.mark.parametrize("url", BAD_URLS + list(GOOD_URLS))
def test_config_refuses_exactly_the_base_urls_the_client_refuses(url: str) -> None:
    def verdict(check: Callable[[], object]) -> bool:
        try:
            check()
        except ConfigError:
            return False
        return True

    assert verdict(lambda: load_settings(None, environ={"CAMPFIRE_BASE_URL": url})) == verdict(
        lambda: CampfireClient(url, "k-123")
    )


@pytest.mark.parametrize("where", ["variable", "config"])
@pytest.mark.parametrize("url", ["http://[::1", "https://user:s3cret-pw@host:99999", "api.meetcampfire.com"])
def test_cli_reports_a_bad_base_url_as_a_config_error_not_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, where: str
) -> None:
    from invoicesync.cli import main

    toml = f"[environments.prod]\nbase_url = {json.dumps(url)}\n" if where == "config" else ""
    build_file_tree(tmp_path, {"invoicesync.toml": toml, "specs/.keep": ""})
    monkeypatch.setenv("CAMPFIRE_API_KEY", "k-123")
    monkeypatch.delenv("INVOICESYNC_ENV", raising=False)
    if where == "variable":
        monkeypatch.setenv("CAMPFIRE_BASE_URL", url)
    else:
        monkeypatch.delenv("CAMPFIRE_BASE_URL", raising=False)
    for command in (["plan"], ["refresh"]):
        assert main(["-C", str(tmp_path), *command]) == 1
        err = capsys.readouterr().err
        named = "CAMPFIRE_BASE_URL" if where == "variable" else "invoicesync.toml: environments.prod.base_url"
        assert err.startswith(f"Error: {named} ")
        assert "internal error" not in err and "s3cret-pw" not in err


# --- where the state is kept: [backend] ------------------------------------------------------------

TEAM = """\
default_environment = "production"

[backend]
type = "postgres"
schema = "billing"

[environments.production]
base_url = "https://api.meetcampfire.com"

[environments.staging]
base_url = "https://staging.example.com"
backend = { dsn_env = "STAGING_PG_DSN", schema = "billing_staging" }

[environments.demo]
endpoint = "sandbox"
backend = { type = "local" }
"""
DSN = "postgresql://billing:s3cret-pw@db.internal:5432/invoices"


def test_without_a_backend_table_the_state_is_local_files(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TWO_ENVS})
    settings = load_settings(tmp_path, environ={"INVOICESYNC_PG_DSN": DSN})
    assert settings.environment.backend == BackendConfig(type="local", dsn_env="INVOICESYNC_PG_DSN", schema="invoicesync")
    assert settings.dsn is None  # a local backend never reads the variable


def test_backend_table_applies_to_every_environment_and_each_may_override_it(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TEAM})
    environ = {"INVOICESYNC_PG_DSN": DSN, "STAGING_PG_DSN": "postgresql://db.staging/invoices"}
    production = load_settings(tmp_path, environ=environ)
    assert production.environment.backend == BackendConfig("postgres", "INVOICESYNC_PG_DSN", "billing")
    assert production.dsn == DSN
    staging = load_settings(tmp_path, environment="staging", environ=environ)
    assert staging.environment.backend == BackendConfig("postgres", "STAGING_PG_DSN", "billing_staging")
    assert staging.dsn == "postgresql://db.staging/invoices"
    demo = load_settings(tmp_path, environment="demo", environ=environ)
    assert demo.environment.backend.type == "local" and demo.dsn is None


def test_backend_in_pyproject_tool_table(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"pyproject.toml": """\
        [tool.invoicesync]
        default_environment = "ci"
        [tool.invoicesync.backend]
        type = "postgres"
        [tool.invoicesync.environments.ci]
        base_url = "https://api.meetcampfire.com"
        [tool.invoicesync.environments.ci.backend]
        schema = "ci_runs"
    """})
    settings = load_settings(tmp_path, environ={"INVOICESYNC_PG_DSN": DSN})
    assert settings.environment.backend == BackendConfig("postgres", "INVOICESYNC_PG_DSN", "ci_runs")


def test_the_connection_string_is_never_in_repr_or_str(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TEAM})
    settings = load_settings(tmp_path, environ={"INVOICESYNC_PG_DSN": DSN})
    assert settings.dsn == DSN
    for text in (repr(settings), str(settings), repr(settings.environment)):
        assert "s3cret-pw" not in text and DSN not in text


def test_an_unset_connection_string_variable_is_left_for_the_command_to_name(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TEAM})
    settings = load_settings(tmp_path, environ={"INVOICESYNC_PG_DSN": "  "})
    assert settings.environment.backend.type == "postgres" and settings.dsn is None


def test_base_url_override_keeps_the_backend(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TEAM})
    settings = load_settings(tmp_path, environ={"CAMPFIRE_BASE_URL": "http://127.0.0.1:9999", "INVOICESYNC_PG_DSN": DSN})
    assert settings.environment.base_url == "http://127.0.0.1:9999"
    assert settings.environment.backend.schema == "billing" and settings.dsn == DSN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[backend]\ntype = "postgresql"\n', r"invoicesync.toml: backend.type must be one of 'local', 'postgres', got 'postgresql' \(did you mean 'postgres'\?\)"),
        ('[backend]\ntype = 1\n', r"backend.type must be one of 'local', 'postgres', got 1$"),
        ('[backend]\nshema = "x"\n', r"invoicesync.toml: unknown key 'backend.shema' \(did you mean 'schema'\?\); allowed keys: type, dsn_env, schema"),
        ('[backend]\ndsn = "postgresql://u:pw@h/db"\n', r"unknown key 'backend.dsn' \(did you mean 'dsn_env'\?\)"),
        ('[backend]\ndsn_env = "postgresql://u:pw@h/db"\n', r"backend.dsn_env must be the name of an environment variable"),
        ('[backend]\nschema = "my schema"\n', r"backend.schema must be a PostgreSQL schema name"),
        ('[backend]\nschema = 3\n', r"backend.schema must be a PostgreSQL schema name"),
        ('backend = "postgres"\n', r"invoicesync.toml: backend must be a table"),
        ('[environments.a.backend]\ntyp = "local"\n', r"unknown key 'environments.a.backend.typ' \(did you mean 'type'\?\)"),
        ('[environments.a]\nbackend = "postgres"\n', r"environments.a.backend must be a table"),
    ],
)
def test_bad_backend_settings_are_located_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": text})
    with pytest.raises(ConfigError, match=expected) as caught:
        load_settings(tmp_path, environ={})
    assert "pw" not in str(caught.value)


def test_a_bad_backend_key_in_pyproject_is_named_with_its_prefix(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"pyproject.toml": '[tool.invoicesync.environments.ci.backend]\nschem = "x"\n'})
    with pytest.raises(ConfigError, match=r"pyproject.toml: unknown key 'tool.invoicesync.environments.ci.backend.schem'"):
        load_settings(tmp_path, environ={})


def test_load_all_settings_gives_every_environment_in_config_order(tmp_path: Path) -> None:
    build_file_tree(tmp_path, {"invoicesync.toml": TEAM})
    names = [s.environment.name for s in load_all_settings(tmp_path, environ={"INVOICESYNC_ENV": "staging"})]
    assert names == ["production", "staging", "demo"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [s.environment.name for s in load_all_settings(empty, environ={})] == ["default"]
