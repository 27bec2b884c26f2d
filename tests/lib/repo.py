# SPDX-License-Identifier: Apache-2.0
"""Model repositories for tests: a folder per model, a folder per version.

    root = repo.with_model(tmp, files={"val.npz": HELD})

with_model() copies the MLP fixture (or onnx=PATH) as version 1 of model
name, copies extra files into the model folder and writes its config.json
when config is given.  It returns the repository root.
"""

import json
import os
import shutil

TOP_SRCDIR = os.environ.get("top_srcdir", ".")
FIXTURES = os.path.join(TOP_SRCDIR, "tests", "fixtures")
MLP = os.path.join(FIXTURES, "mlp_op13", "model.onnx")


def with_model(root, name="mlp", onnx=MLP, files=None, config=None):
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "1"))
    shutil.copy(onnx, os.path.join(d, "1", "model.onnx"))
    for dst, src in (files or {}).items():
        shutil.copy(src, os.path.join(d, dst))
    if config is not None:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f)
    return root


def token_file(folder, token):
    """Writes an admin token file (mode 0600, as the daemon wants) in
    folder; returns its path."""
    path = os.path.join(folder, "token")
    with open(path, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def versions_on_disk(root, name="mlp"):
    """The version numbers of model name's folders, ascending."""
    return sorted(int(n) for n in os.listdir(os.path.join(root, name))
                  if n.isdigit())
