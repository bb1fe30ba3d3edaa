"""Writes ``fid_inception_reference.npz``: the pool3 features of pytorch-fid's FID Inception on the
weights and inputs of ``tests/test_feature_extractors.py`` (``working_network_state_dict``,
``reference_inputs``).

Run from the repository root with the project's Python; ``--torch_python`` names a Python with
torch, torchvision and pytorch-fid (not project dependencies):

  python -m tests.data.make_fid_inception_reference --torch_python=FID_PYTHON
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

from gan_jax.metrics import inception
from tests import test_feature_extractors

# Runs under --torch_python: pytorch-fid's network with the given weights instead of a download.
_TORCH_SIDE = """
import sys, numpy as np, torch
from pytorch_fid import inception as fid
weights, inputs, output = sys.argv[1:]
state_dict = {name: torch.from_numpy(value) for name, value in np.load(weights).items()}
fid.load_state_dict_from_url = lambda *args, **kwargs: state_dict
network = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=False,
                          normalize_input=False, use_fid_inception=True).eval()
with torch.no_grad():
  images = torch.from_numpy(np.load(inputs)).permute(0, 3, 1, 2)
  features = network(images)[0][:, :, 0, 0].numpy()
np.savez(output, features=features, torch_version=torch.__version__)
"""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--torch_python", required=True)
  args = parser.parse_args()
  state_dict = test_feature_extractors.working_network_state_dict(inception.variables_template())
  output = os.path.join(os.path.dirname(__file__), "fid_inception_reference.npz")
  with tempfile.TemporaryDirectory() as tmp:
    weights, inputs = os.path.join(tmp, "weights.npz"), os.path.join(tmp, "inputs.npy")
    np.savez(weights, **state_dict)
    np.save(inputs, test_feature_extractors.reference_inputs())
    subprocess.run([args.torch_python, "-c", _TORCH_SIDE, weights, inputs, output], check=True)
  print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
  main()
