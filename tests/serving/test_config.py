"""The server config: YAML, flag overrides, A/B bucket validation."""

from __future__ import annotations

import pytest

from infnet.config import ConfigError
from infnet.serving.config import load_server_config


def write(tmp_path, text: str):
    path = tmp_path / "server.yaml"
    path.write_text(text)
    return path


def test_arms_from_yaml_and_flags_on_top(tmp_path, monkeypatch):
    path = write(
        tmp_path,
        "store: redis://127.0.0.1:6379/0\narms:\n"
        "  - {name: control, model: a, buckets: [0, 90]}\n"
        "  - {name: treatment, model: b, buckets: [90, 100], eager: true}\n",
    )
    config = load_server_config(path, max_candidates=50)
    assert [a.name for a in config.arm_list()] == [
        "control",
        "treatment",
    ] and config.max_candidates == 50
    buckets = [config.bucket(str(u)) for u in range(2000)]
    assert min(buckets) == 0 and max(buckets) == 99
    assert buckets == [load_server_config(path).bucket(str(u)) for u in range(2000)]  # stable
    assert 150 < sum(b >= 90 for b in buckets) < 250  # ~10% of users
    single = load_server_config(path, model="m")  # --model replaces the file's arms
    assert [(a.name, a.model, a.buckets) for a in single.arm_list()] == [("default", "m", (0, 100))]
    monkeypatch.setenv("INFNET_ADMIN_TOKEN", "from-env")
    assert config.token() == "from-env"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "arms:\n  - {name: a, model: x, buckets: [0, 50]}\n  - {name: b, model: y, buckets: [60, 100]}\n",
            "arm 'b': buckets \\[60, 100\\) must start at 50",
        ),
        (
            "arms:\n  - {name: a, model: x, buckets: [0, 50]}\n",
            "cover \\[0, 50\\), not \\[0, num_buckets=100\\)",
        ),
        ("arms:\n  - {name: a, model: x, buckets: [0, 100]}\nmodel: z\n", "either `model`"),
        (
            "model: x\nmax_candidate: 5\n",
            "unknown key 'max_candidate'; did you mean 'max_candidates'",
        ),
        ("model: x\nranking: {formla: click}\n", "unknown key 'ranking.formla'"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_server_config(write(tmp_path, text))
