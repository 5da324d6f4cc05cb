import pathlib

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent
requirements = [
  line.split("#")[0].strip()
  for line in (here / "requirements.txt").read_text().splitlines()
  if line.split("#")[0].strip() and not line.startswith("pytest")
]

setup(
  name="hyperlora-jax",
  version="0.1.0",
  description="Text-to-LoRA and Doc-to-LoRA hypernetworks in JAX/Flax",
  long_description=(here / "README.md").read_text(),
  long_description_content_type="text/markdown",
  python_requires=">=3.10",
  packages=find_packages(
    include=["hyperlora", "hyperlora.*", "t2l_jax", "t2l_jax.*", "d2l_jax", "d2l_jax.*"]
  ),
  install_requires=requirements + ["torch==2.13.0"],
  # `hyperlora plan` compiles for TPU slices from any machine; libtpu is what jax[tpu] pins.
  extras_require={"tpu": ["libtpu==0.0.42.1"], "eval": ["lm-eval==0.4.13"]},
  entry_points={
    "console_scripts": [
      "hyperlora=hyperlora.cli:main",
      "t2l=t2l_jax.cli:main",
      "d2l=d2l_jax.cli:main",
    ]
  },
)
