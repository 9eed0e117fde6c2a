"""docs/tutorial.ipynb runs top to bottom with the project's kernel (slow)."""

import os

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_tutorial_notebook_executes_top_to_bottom(tmp_path):
  import nbformat
  from nbclient import NotebookClient

  notebook = nbformat.read(os.path.join(ROOT, "docs", "tutorial.ipynb"), as_version=4)
  env = dict(os.environ, JAX_PLATFORMS="cpu")  # matplotlib: the kernel's inline backend
  client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}})
  old = dict(os.environ)
  os.environ.update(env)  # the kernel inherits this process's environment
  try:
    client.execute()
  finally:
    os.environ.clear()
    os.environ.update(old)
  errors = [o for cell in notebook.cells if cell.cell_type == "code"
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors
  images = [o for cell in notebook.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= 4  # the energy curve, the gap, the DAE rows, the VAE samples
