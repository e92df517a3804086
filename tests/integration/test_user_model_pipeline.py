"""``tbpipe run --model my_net.py:build``: the file's text reaches the train step."""

import json
import subprocess

import pytest

from tests.helpers import TBPIPE, read_tags
from tests.unit.test_user_model import USER_MODEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_trains_a_user_model_file(tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "user_model.py").write_text(USER_MODEL)
    logs, root = tmp_path / "logs", tmp_path / "root"
    proc = subprocess.run([*TBPIPE, "run", "--model", "nets/user_model.py:tiny", "--epochs", "1",
                           "--finetune", "never", "--precision", "float32",
                           "--run-name", "mine", "--log-root", str(logs),
                           "--pipeline-root", str(root)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (meta_file,) = root.glob("*/train/model/model.json")
    assert json.loads(meta_file.read_text())["model"] == "nets/user_model.py:tiny"
    tags = read_tags(str(logs / "default" / "mine" / "train"))
    assert "weights/hidden_user/kernel" in tags["histograms"]
    assert "model/summary/text_summary" in tags["tensors"]
